// How cluster messages travel through the driver: msgpack, sealed with the cluster key when the
// sheep has one (AES-256-GCM under a key derived from it). A sheep with another key, or none, can
// neither read the cluster's state nor inject a message: what it sends is "foreign", and the only
// answer it gets is a refusal, sent in clear since it carries nothing but the reason.
//
// sealed: "SDG1" | key id (8 bytes) | iv (12) | tag (16) | ciphertext of the msgpack message

import crypto from 'node:crypto';
import { pack, unpack } from 'msgpackr';
import type { GroupMsg } from './messages.js';

const MAGIC = Buffer.from('SDG1');
const ID_LEN = 8, IV_LEN = 12, TAG_LEN = 16;
const HEAD = MAGIC.length + ID_LEN + IV_LEN + TAG_LEN;

/** sealed: the message proved the cluster key (always true for a sheep without a key) */
export type Decoded = { msg: GroupMsg; sealed: boolean } | { foreign: string; clear?: GroupMsg };

export class GroupCodec {
  private readonly encKey: Buffer | null;
  private readonly id: Buffer | null;

  constructor(clusterKey: Buffer | null) {
    this.encKey = clusterKey ? Buffer.from(crypto.hkdfSync('sha256', clusterKey, Buffer.alloc(0), 'sheepdog-group-messages', 32)) : null;
    this.id = clusterKey ? crypto.createHmac('sha256', clusterKey).update('sheepdog-group-key-id').digest().subarray(0, ID_LEN) : null;
  }

  /** Sealed when this sheep has a key. */
  encode(msg: GroupMsg): Buffer {
    const plain = pack(msg);
    if (!this.encKey || !this.id) return plain;
    const iv = crypto.randomBytes(IV_LEN);
    const c = crypto.createCipheriv('aes-256-gcm', this.encKey, iv);
    const body = Buffer.concat([c.update(plain), c.final()]);
    return Buffer.concat([MAGIC, this.id, iv, c.getAuthTag(), body]);
  }

  /** A refusal for a sheep that cannot read sealed messages. */
  encodeClear(msg: Extract<GroupMsg, { t: 'reject' }>): Buffer {
    return pack(msg);
  }

  decode(raw: Buffer): Decoded {
    if (raw.length >= MAGIC.length && raw.subarray(0, MAGIC.length).equals(MAGIC)) {
      if (!this.encKey || !this.id) return { foreign: 'the sender uses a cluster key and this cluster has none' };
      if (raw.length < HEAD || !raw.subarray(MAGIC.length, MAGIC.length + ID_LEN).equals(this.id)) {
        return { foreign: 'the sender uses a different cluster key' };
      }
      const iv = raw.subarray(MAGIC.length + ID_LEN, MAGIC.length + ID_LEN + IV_LEN);
      const tag = raw.subarray(MAGIC.length + ID_LEN + IV_LEN, HEAD);
      try {
        const d = crypto.createDecipheriv('aes-256-gcm', this.encKey, iv);
        d.setAuthTag(tag);
        return { msg: unpack(Buffer.concat([d.update(raw.subarray(HEAD)), d.final()])) as GroupMsg, sealed: true };
      } catch {
        return { foreign: 'a sealed message failed authentication' };
      }
    }
    let msg: GroupMsg;
    try {
      msg = unpack(raw) as GroupMsg;
    } catch {
      return { foreign: 'undecodable message' };
    }
    if (typeof msg !== 'object' || msg === null || typeof (msg as { t?: unknown }).t !== 'string') return { foreign: 'malformed message' };
    // with a key, the only message taken in clear is a refusal (it grants nothing)
    if (this.encKey && msg.t !== 'reject') return { foreign: 'the sender has no cluster key and this cluster requires one', clear: msg };
    return { msg, sealed: !this.encKey };
  }
}
