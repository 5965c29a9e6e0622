// VDI attributes (GET_VDI_ATTR): key/value pairs kept in attribute objects (1<<61 | vid<<32 | attr_id),
// laid out like Sheepdog's struct sheepdog_vdi_attr, found by linear probing from FNV-1a(key).

import { Res, SdError, readCString, writeCString } from '../../lib/proto.js';
import { vidToAttrOid } from '../../lib/oid.js';
import { fnv1a64 } from '../../lib/fnv.js';
import type { AttrRequest, AttrReply } from '../../lib/admin.js';
import type { VdiContext } from './context.js';
// the object's layout is shared with collie (cluster snapshot reads attributes back)
import {
  ATTR_NAME as A_NAME, ATTR_TAG as A_TAG, ATTR_CTIME as A_CTIME, ATTR_SNAPID as A_SNAPID, ATTR_VALUE_LEN as A_VALUE_LEN,
  ATTR_KEY as A_KEY, ATTR_VALUE as A_VALUE, SD_MAX_VDI_ATTR_KEY_LEN, SD_MAX_VDI_ATTR_VALUE_LEN, SD_ATTR_OBJ_SIZE,
} from '../../lib/vdi-attr-layout.js';
export { SD_MAX_VDI_ATTR_KEY_LEN, SD_MAX_VDI_ATTR_VALUE_LEN, SD_ATTR_OBJ_SIZE };
const MAX_PROBE = 4096;




export async function vdiAttr(sys: VdiContext, a: AttrRequest): Promise<AttrReply> {
  if (typeof a.key !== 'string' || !a.key || Buffer.byteLength(a.key) >= SD_MAX_VDI_ATTR_KEY_LEN) {
    throw new SdError(Res.INVALID_PARMS, `attribute key must be 1..${SD_MAX_VDI_ATTR_KEY_LEN - 1} bytes`);
  }
  const value = a.value ? Buffer.from(a.value) : Buffer.alloc(0);
  if (value.length > SD_MAX_VDI_ATTR_VALUE_LEN) throw new SdError(Res.INVALID_PARMS, `attribute value over ${SD_MAX_VDI_ATTR_VALUE_LEN} bytes`);
  const vdi = sys.vdis.lookup(a.name, a.tag ?? '', a.snapid ?? 0);
  const gw = sys.gateway;
  const start = Number(fnv1a64(a.key) & 0xffffffffn);
  let free: number | null = null;
  for (let i = 0; i < MAX_PROBE; i++) {
    const attrId = (start + i) >>> 0;
    const oid = vidToAttrOid(vdi.vdiId, attrId);
    if (!(await gw.exists(oid))) {
      if (a.mode === 'set' || a.mode === 'exclusive') {
        const id = free ?? attrId;
        await writeAttr(sys, vdi.vdiId, id, a, value);
        return { vid: vdi.vdiId, attrId: id };
      }
      throw new SdError(Res.NO_OBJ, `attribute '${a.key}' not found`);
    }
    const head = await gw.read(oid, 0, A_VALUE);
    const key = readCString(head, A_KEY, SD_MAX_VDI_ATTR_KEY_LEN);
    if (!key) {
      if (free === null) free = attrId; // a deleted slot: reuse it, but keep probing for the key
      continue;
    }
    if (key !== a.key) continue;
    switch (a.mode) {
      case 'get': {
        const len = Math.min(head.readUInt32LE(A_VALUE_LEN), SD_MAX_VDI_ATTR_VALUE_LEN);
        return { vid: vdi.vdiId, attrId, value: len ? await gw.read(oid, A_VALUE, len) : Buffer.alloc(0) };
      }
      case 'exclusive':
        throw new SdError(Res.VDI_EXIST, `attribute '${a.key}' exists already`);
      case 'set':
        await writeAttr(sys, vdi.vdiId, attrId, a, value);
        return { vid: vdi.vdiId, attrId };
      case 'delete': {
        // keep the slot (probing must pass it) but clear the key: a tombstone
        const tomb = Buffer.alloc(A_VALUE);
        head.copy(tomb, 0, 0, A_KEY);
        tomb.writeUInt32LE(0, A_VALUE_LEN);
        await gw.write(oid, 0, tomb);
        return { vid: vdi.vdiId, attrId };
      }
    }
  }
  throw new SdError(Res.NO_SPACE, `no free attribute slot for '${a.key}'`);
}

async function writeAttr(sys: VdiContext, vid: number, attrId: number, a: AttrRequest, value: Buffer): Promise<void> {
  const e = sys.vdis.get(vid)!;
  const b = Buffer.alloc(A_VALUE + value.length);
  writeCString(b, A_NAME, 256, e.name);
  writeCString(b, A_TAG, 256, e.tag);
  b.writeBigUInt64LE(e.createTime, A_CTIME);
  b.writeUInt32LE(e.snapId, A_SNAPID);
  b.writeUInt32LE(value.length, A_VALUE_LEN);
  writeCString(b, A_KEY, SD_MAX_VDI_ATTR_KEY_LEN, a.key);
  value.copy(b, A_VALUE);
  const oid = vidToAttrOid(vid, attrId);
  // create replaces the whole object, so an overwritten longer value leaves no tail behind
  await sys.gateway.create(oid, 0, b);
}
