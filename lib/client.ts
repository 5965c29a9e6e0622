// A promise-based Sheepdog protocol client with pipelined requests matched by id.
// Used by collie and the tests; speaks exactly what QEMU's driver speaks, plus our internal ops.

import net from 'node:net';
import tls from 'node:tls';
import { pack, unpack } from 'msgpackr';
import {
  Op, Flag, Res, SdError, SD_HEADER_SIZE, decodeRsp, encodeObjReq, encodeVdiReq, encodePlainReq,
  encodeNameTag, type Rsp, type ObjReq, type VdiReq,
} from './proto.js';
import { FrameReader, DirectFrameReader } from './frame.js';
import { batchWrites } from './batch-writes.js';
import { AUTH_NONCE_LEN, TLS_CIPHERS, authProof, encodeAuthStep, newNonce, proofMatches, type Role } from './auth.js';

export interface ClientAddress {
  host?: string;
  port?: number;
  socketPath?: string;
  /** TLS 1.3 with a pre-shared key (peer TLS, lib/auth.ts): the handshake proves the key */
  tls?: { psk: Buffer; identity: string };
}

export interface Reply {
  rsp: Rsp;
  data: Buffer;
}

/** The other end does not speak the sheepdog protocol (a wrong port, another service). */
export class NotASheepError extends Error {}

interface Pending {
  resolve: (r: Reply) => void;
  reject: (e: Error) => void;
  /** Date.now() when sent (for the request timeout) */
  at: number;
}

/** Largest reply we accept: a whole inode plus slack; protects the client from a broken server. */
const MAX_REPLY = 64 * 1024 * 1024;
/** The most data one request may carry: sheep refuses more (object-io.ts MAX_DATA_LENGTH, 32 MiB). */
export const MAX_REQUEST_DATA = 32 * 1024 * 1024;

export class SheepClient {
  private readonly sock: net.Socket;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private closedError: Error | null = null;
  private gotReply = false;
  private firstChecked = false;
  /** opcodes sent before the first reply (that reply must echo one of them) */
  private readonly sentOpcodes = new Set<number>();
  private firstReplyTimer: NodeJS.Timeout | undefined;
  readonly ready: Promise<void>;

  private constructor(addr: ClientAddress, timeoutMs: number, private readonly firstReplyTimeoutMs = 0) {
    const t = addr.tls;
    // plain sockets read into buffers the frame reader hands out (large payloads in place, no copy);
    // TLS decrypts into chunks of its own, framed by the chunk-list reader
    const frame = (hdr: Buffer): number => {
      const len = hdr.readUInt32LE(12);
      if (len > MAX_REPLY) throw new Error(`reply with absurd data_length ${len}`);
      return len;
    };
    const direct = t ? null : new DirectFrameReader(frame, (hdr, data) => this.onReply(hdr, data));
    const onread = direct
      ? { buffer: () => direct.buffer(), callback: (n: number, buf: Uint8Array) => { this.received(buf.subarray(0, n) as Buffer, n); return true; } }
      : undefined;
    this.sock = addr.socketPath
      ? net.connect({ path: addr.socketPath, onread })
      : t
        ? tls.connect({
          host: addr.host ?? '127.0.0.1', port: addr.port ?? 7000, minVersion: 'TLSv1.3', ciphers: TLS_CIPHERS,
          pskCallback: () => ({ psk: t.psk, identity: t.identity }),
          // the PSK authenticates the server: there is no certificate to check
          checkServerIdentity: () => undefined,
        })
        : net.connect({ host: addr.host ?? '127.0.0.1', port: addr.port ?? 7000, noDelay: true, onread });
    if (t) this.sock.setNoDelay(true);
    const connected = t ? 'secureConnect' : 'connect';
    this.ready = new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.sock.destroy();
        reject(new Error(`connect timed out after ${timeoutMs} ms`));
      }, timeoutMs);
      this.sock.once(connected, () => { clearTimeout(timer); resolve(); });
      this.sock.once('error', (e) => { clearTimeout(timer); reject(e); });
    });
    const chunked = direct ? null : new FrameReader(frame, (hdr, data) => this.onReply(hdr, data));
    const where = addr.socketPath ?? `${addr.host ?? '127.0.0.1'}:${addr.port ?? 7000}`;
    this.received = (chunk, n) => {
      // a sheep speaks only when asked: bytes before any request come from another kind of server
      if (!this.gotReply && this.pending.size === 0) {
        this.sock.destroy(new NotASheepError(`${where} is not a sheep (it spoke before being asked)`));
        return;
      }
      // a sheep's first answer begins with the header of a request we sent (byte 1: its opcode)
      if (!this.gotReply && !this.firstChecked && chunk.length >= 2) {
        this.firstChecked = true;
        if (!this.sentOpcodes.has(chunk[1])) {
          this.sock.destroy(new NotASheepError(`${where} is not a sheep (its answer is no sheepdog reply)`));
          return;
        }
      }
      try {
        if (direct) direct.read(n);
        else chunked!.push(chunk);
      } catch (e) {
        this.sock.destroy(this.gotReply ? e as Error : new NotASheepError(`${where} is not a sheep (${(e as Error).message})`));
      }
    };
    if (chunked) this.sock.on('data', (chunk: Buffer) => this.received(chunk, chunk.length));
    this.notASheep = (why) => this.sock.destroy(new NotASheepError(`${where} is not a sheep (${why})`));
    this.sock.on('error', (e) => this.failAll(e));
    this.sock.on('close', () => this.failAll(new Error('connection closed by server')));
  }

  /**
   * `firstReplyTimeoutMs`: when the first request gets no answer that soon, the other end is taken for
   * something else than a sheep (tools use it; peers, which may wait on a busy node, do not).
   */
  static async connect(addr: ClientAddress, timeoutMs = 5000, firstReplyTimeoutMs = 0): Promise<SheepClient> {
    const c = new SheepClient(addr, timeoutMs, firstReplyTimeoutMs);
    await c.ready;
    return c;
  }

  private notASheep: (why: string) => void = () => undefined;
  /** bytes from the socket: `chunk` (n bytes), already in the direct reader's buffer when it has one */
  private received: (chunk: Buffer, n: number) => void = () => undefined;

  private onReply(hdr: Buffer, data: Buffer): void {
    const rsp = decodeRsp(hdr);
    const p = this.pending.get(rsp.id);
    if (!this.gotReply) {
      // the first reply must answer a request we sent
      if (!p) return this.notASheep('its first answer matches no request');
      this.gotReply = true;
      clearTimeout(this.firstReplyTimer);
    }
    if (!p) return; // a reply nobody waits for (any more): ignore
    this.pending.delete(rsp.id);
    p.resolve({ rsp, data });
  }

  private failAll(e: Error): void {
    clearTimeout(this.firstReplyTimer);
    if (!this.closedError) this.closedError = e;
    for (const p of this.pending.values()) p.reject(this.closedError);
    this.pending.clear();
  }

  /** Sends a raw header (its id is overwritten) and optional payload; resolves with the reply. */
  send(header: Buffer, payload?: Buffer): Promise<Reply> {
    if (this.closedError) return Promise.reject(this.closedError);
    const id = this.nextId;
    this.nextId = (this.nextId + 1) >>> 0 || 1;
    header.writeUInt32LE(id, 8);
    if (!this.gotReply) this.sentOpcodes.add(header[1]);
    if (!this.gotReply && this.firstReplyTimeoutMs && !this.firstReplyTimer) {
      this.firstReplyTimer = setTimeout(() => this.notASheep(`no answer within ${this.firstReplyTimeoutMs / 1000} s`), this.firstReplyTimeoutMs);
      this.firstReplyTimer.unref?.();
    }
    return new Promise<Reply>((resolve, reject) => {
      this.pending.set(id, { resolve, reject, at: this.timeoutMs ? Date.now() : 0 });
      batchWrites(this.sock);
      this.sock.write(header);
      if (payload && payload.length) this.sock.write(payload);
    });
  }

  private timeoutMs = 0;

  /**
   * Requests unanswered after `ms` fail with "timed out" (checked a few times per period by one timer,
   * not a timer per request: a peer link carries thousands of requests a second).
   */
  setRequestTimeout(ms: number): void {
    this.timeoutMs = ms;
    const sweep = setInterval(() => {
      const old = Date.now() - ms;
      for (const [id, p] of this.pending) {
        if (p.at > old) continue;
        this.pending.delete(id);
        p.reject(new Error('timed out'));
      }
    }, Math.max(100, ms / 4));
    sweep.unref();
    this.sock.once('close', () => clearInterval(sweep));
  }

  /** Runs `fn` once the connection closed (either side). */
  onClose(fn: () => void): void {
    if (this.sock.closed) fn();
    else this.sock.once('close', fn);
  }

  close(): void {
    this.sock.end();
    this.sock.destroy();
  }

  // ------------------------------------------------------------ object I/O

  /** `strip`: a strip of an erasure-coded object (copy_policy and ec_index, as Sheepdog's peer requests carry them). */
  private objHeader(opcode: number, flags: number, oid: bigint, len: number, offset: number, cowOid = 0n, strip?: { copyPolicy: number; index: number }): Buffer {
    const r: ObjReq = {
      protoVer: 0, opcode, flags, epoch: 0, id: 0, dataLength: len,
      oid, cowOid, copies: 0, copyPolicy: strip?.copyPolicy ?? 0, ecIndex: strip?.index ?? 0, tgtEpoch: 0, offset: BigInt(offset),
    };
    return encodeObjReq(r);
  }

  async readObj(oid: bigint, offset: number, length: number): Promise<Buffer> {
    if (length > MAX_REQUEST_DATA) {
      // objects of 64 MiB and more (block_size_shift 26+): one request per slice the sheep accepts
      const parts: Array<Promise<Buffer>> = [];
      for (let off = 0; off < length; off += MAX_REQUEST_DATA) parts.push(this.readObj(oid, offset + off, Math.min(MAX_REQUEST_DATA, length - off)));
      return Buffer.concat(await Promise.all(parts), length);
    }
    const { rsp, data } = await this.send(this.objHeader(Op.READ_OBJ, 0, oid, length, offset));
    check(rsp);
    return data;
  }

  async writeObj(oid: bigint, offset: number, data: Buffer): Promise<void> {
    if (data.length > MAX_REQUEST_DATA) {
      const parts: Array<Promise<void>> = [];
      for (let off = 0; off < data.length; off += MAX_REQUEST_DATA) parts.push(this.writeObj(oid, offset + off, data.subarray(off, off + MAX_REQUEST_DATA)));
      await Promise.all(parts);
      return;
    }
    const { rsp } = await this.send(this.objHeader(Op.WRITE_OBJ, Flag.CMD_WRITE, oid, data.length, offset), data);
    check(rsp);
  }

  async createAndWriteObj(oid: bigint, offset: number, data: Buffer, cowOid = 0n): Promise<void> {
    // the create carries the first slice; the rest is written into the object it made
    const first = data.subarray(0, MAX_REQUEST_DATA);
    const flags = Flag.CMD_WRITE | (cowOid ? Flag.CMD_COW : 0);
    const { rsp } = await this.send(this.objHeader(Op.CREATE_AND_WRITE_OBJ, flags, oid, first.length, offset, cowOid), first);
    check(rsp);
    if (data.length > first.length) await this.writeObj(oid, offset + first.length, data.subarray(first.length));
  }

  async discardObj(oid: bigint): Promise<void> {
    const { rsp } = await this.send(this.objHeader(Op.DISCARD_OBJ, 0, oid, 0, 0));
    check(rsp);
  }

  /**
   * Whether this sheep's own store holds `oid` (not the cluster: a node-local probe for collie's
   * vdi object/check). Peer requests with epoch 0 come from tools and skip the epoch check.
   */
  async hasLocalObject(oid: bigint): Promise<boolean> {
    try {
      await this.peerRead(oid, 0, 0);
      return true;
    } catch (e) {
      if (e instanceof SdError && e.result === Res.NO_OBJ) return false;
      throw e;
    }
  }

  /** Reads from this sheep's own copy of an object (repair source). */
  async peerRead(oid: bigint, offset: number, length: number): Promise<Buffer> {
    const { rsp, data } = await this.send(this.objHeader(Op.READ_PEER, 0, oid, length, offset));
    check(rsp);
    return data;
  }

  /** Strip `index` of an erasure-coded object as this sheep's own store holds it (length 0: whether it does). */
  async peerReadStrip(oid: bigint, copyPolicy: number, index: number, offset: number, length: number): Promise<Buffer> {
    const { rsp, data } = await this.send(this.objHeader(Op.READ_PEER, 0, oid, length, offset, 0n, { copyPolicy, index }));
    check(rsp);
    return data;
  }

  /** Writes a whole strip into this sheep's own store (repair). */
  async peerCreateStrip(oid: bigint, copyPolicy: number, index: number, data: Buffer): Promise<void> {
    const { rsp } = await this.send(this.objHeader(Op.CREATE_AND_WRITE_PEER, Flag.CMD_WRITE, oid, data.length, 0, 0n, { copyPolicy, index }), data);
    check(rsp);
  }

  /** Writes a whole replica into this sheep's own store (repair). */
  async peerCreate(oid: bigint, data: Buffer): Promise<void> {
    const { rsp } = await this.send(this.objHeader(Op.CREATE_AND_WRITE_PEER, Flag.CMD_WRITE, oid, data.length, 0), data);
    check(rsp);
  }

  async flushVdi(vid: number): Promise<void> {
    const { rsp } = await this.send(this.objHeader(Op.FLUSH_VDI, 0, (1n << 63n) | (BigInt(vid) << 32n), 0, 0));
    check(rsp);
  }

  // ------------------------------------------------------------ VDI operations

  private vdiHeader(opcode: number, len: number, f: Partial<VdiReq>): Buffer {
    return encodeVdiReq({
      protoVer: f.protoVer ?? 0, opcode, flags: len ? Flag.CMD_WRITE : 0, epoch: 0, id: 0, dataLength: len,
      vdiSize: f.vdiSize ?? 0n, baseVdiId: f.baseVdiId ?? 0, copies: f.copies ?? 0, copyPolicy: f.copyPolicy ?? 0,
      storePolicy: f.storePolicy ?? 0, blockSizeShift: f.blockSizeShift ?? 0, snapid: f.snapid ?? 0, type: f.type ?? 0,
    });
  }

  /** NEW_VDI: create (base 0), snapshot (snapshot=true, base = current vid) or clone (base = snapshot vid). */
  async newVdi(name: string, size: bigint, opts: { baseVdiId?: number; snapshot?: boolean; copies?: number; copyPolicy?: number; blockSizeShift?: number } = {}): Promise<number> {
    const payload = encodeNameTag(name);
    const { rsp } = await this.send(this.vdiHeader(Op.NEW_VDI, payload.length, {
      vdiSize: size, baseVdiId: opts.baseVdiId ?? 0, snapid: opts.snapshot ? 1 : 0,
      copies: opts.copies ?? 0, copyPolicy: opts.copyPolicy ?? 0, blockSizeShift: opts.blockSizeShift ?? 0,
    }), payload);
    check(rsp);
    return rsp.vdiId;
  }

  async lockVdi(name: string, tag = '', snapid = 0, shared = false): Promise<number> {
    const payload = encodeNameTag(name, tag);
    const { rsp } = await this.send(this.vdiHeader(Op.LOCK_VDI, payload.length, { protoVer: 1, snapid, type: shared ? 1 : 0 }), payload);
    check(rsp);
    return rsp.vdiId;
  }

  async releaseVdi(name: string, vid: number): Promise<void> {
    const payload = Buffer.concat([Buffer.from(name, 'utf8'), Buffer.alloc(1)]);
    const { rsp } = await this.send(this.vdiHeader(Op.RELEASE_VDI, payload.length, { baseVdiId: vid }), payload);
    check(rsp);
  }

  async getVdiInfo(name: string, tag = '', snapid = 0): Promise<number> {
    const payload = encodeNameTag(name, tag);
    const { rsp } = await this.send(this.vdiHeader(Op.GET_VDI_INFO, payload.length, { protoVer: 1, snapid }), payload);
    check(rsp);
    return rsp.vdiId;
  }

  async delVdi(name: string, tag = '', snapid = 0): Promise<number> {
    const payload = encodeNameTag(name, tag);
    const { rsp } = await this.send(this.vdiHeader(Op.DEL_VDI, payload.length, { snapid }), payload);
    check(rsp);
    return rsp.vdiId;
  }

  async readVdis(): Promise<Buffer> {
    const h = encodePlainReq({ protoVer: 0, opcode: Op.READ_VDIS, flags: 0, epoch: 0, id: 0, dataLength: (1 << 24) / 8 });
    const { rsp, data } = await this.send(h);
    check(rsp);
    return data;
  }

  async getClusterDefault(): Promise<{ nrCopies: number; copyPolicy: number; blockSizeShift: number }> {
    const h = encodePlainReq({ protoVer: 1, opcode: Op.GET_CLUSTER_DEFAULT, flags: 0, epoch: 0, id: 0, dataLength: 0 });
    const { rsp } = await this.send(h);
    check(rsp);
    return { nrCopies: rsp.defNrCopies, copyPolicy: rsp.defCopyPolicy, blockSizeShift: rsp.defBlockSizeShift };
  }

  // ------------------------------------------------------------ authentication

  /**
   * Proves the cluster key to the sheep and checks that the sheep knows it too (lib/auth.ts); the
   * connection may then send the opcodes of `role`. A sheep that does not prove the key is an
   * impostor: the connection is closed and ACCESS_DENIED thrown.
   */
  async authenticate(key: Buffer, role: Exclude<Role, 'client'>): Promise<void> {
    const cnonce = newNonce();
    const one = await this.authStep(encodeAuthStep({ step: 1, role, bytes: cnonce }));
    const snonce = one.subarray(0, AUTH_NONCE_LEN);
    if (one.length !== 2 * AUTH_NONCE_LEN || !proofMatches(authProof(key, 'server', role, cnonce, snonce), one.subarray(AUTH_NONCE_LEN))) {
      this.close();
      throw new SdError(Res.ACCESS_DENIED, 'the sheep did not prove the cluster key (wrong key on one side?)');
    }
    await this.authStep(encodeAuthStep({ step: 2, role, bytes: authProof(key, 'client', role, cnonce, snonce) }));
  }

  private async authStep(payload: Buffer): Promise<Buffer> {
    const h = encodePlainReq({ protoVer: 0, opcode: Op.AUTH, flags: Flag.CMD_WRITE, epoch: 0, id: 0, dataLength: payload.length });
    const { rsp, data } = await this.send(h, payload);
    check(rsp);
    return data;
  }

  // ------------------------------------------------------------ internal ops (msgpack payloads)

  /** Sends an internal op with a msgpack argument; decodes a msgpack reply (if any). */
  async control<T>(opcode: number, arg?: unknown, replyLimit = 16 * 1024 * 1024): Promise<T> {
    const payload = arg === undefined ? undefined : pack(arg);
    const h = encodePlainReq({
      protoVer: 0, opcode, flags: payload ? Flag.CMD_WRITE : 0, epoch: 0, id: 0,
      dataLength: payload ? payload.length : replyLimit,
    });
    const { rsp, data } = await this.send(h, payload);
    check(rsp);
    return (data.length ? unpack(data) : undefined) as T;
  }
}

/** Throws an SdError carrying the result when a reply is not SUCCESS. */
export function check(rsp: Rsp): void {
  if (rsp.result !== Res.SUCCESS) throw new SdError(rsp.result);
}

export { SD_HEADER_SIZE };
