// The NBD export (DESIGN.md §6, NetworkBlockDevice/nbd doc/proto.md): fixed newstyle handshake,
// structured replies with base:allocation, and the block commands, served from this sheep's gateway
// with the same copy-on-write and inode map updates QEMU's sheepdog driver does.

import net from 'node:net';
import { Res, SdError } from '../../lib/proto.js';
import { OpenVdi } from '../../lib/vdi-io.js';
import { ByteQueue } from '../../lib/byte-queue.js';
import { SocketServer, type Admission } from './net-listen.js';
import { metrics } from '../util/metrics.js';
import { listed, type ByteBudget } from './admission.js';
import { localTransport } from '../vdi/object-io.js';
import { loadNbdTls, upgradeToTls, type NbdTls, type NbdTlsOptions } from './nbd-tls.js';
import type { System } from '../cluster/system.js';
import type { Logger } from '../util/log.js';

const NBDMAGIC = Buffer.from('NBDMAGIC');
const IHAVEOPT = Buffer.from('IHAVEOPT');
const REPLY_MAGIC = 0x3e889045565a9n;
const REQUEST_MAGIC = 0x25609513;
const SIMPLE_REPLY_MAGIC = 0x67446698;
const STRUCTURED_REPLY_MAGIC = 0x668e33ef;

const FLAG_FIXED_NEWSTYLE = 1, FLAG_NO_ZEROES = 2;
const OPT = { EXPORT_NAME: 1, ABORT: 2, LIST: 3, STARTTLS: 5, INFO: 6, GO: 7, STRUCTURED_REPLY: 8, LIST_META_CONTEXT: 9, SET_META_CONTEXT: 10 } as const;
const REP = { ACK: 1, SERVER: 2, INFO: 3, META_CONTEXT: 4 } as const;
const ERR = 2 ** 31;
const REP_ERR = { UNSUP: ERR + 1, POLICY: ERR + 2, INVALID: ERR + 3, TLS_REQD: ERR + 5, UNKNOWN: ERR + 6, TOO_BIG: ERR + 9 } as const;
const INFO = { EXPORT: 0, NAME: 1, DESCRIPTION: 2, BLOCK_SIZE: 3 } as const;
const TF = { HAS_FLAGS: 1, READ_ONLY: 2, SEND_FLUSH: 4, SEND_FUA: 8, SEND_TRIM: 32, SEND_WRITE_ZEROES: 64, SEND_CACHE: 1024 } as const;
const CMD = { READ: 0, WRITE: 1, DISC: 2, FLUSH: 3, TRIM: 4, CACHE: 5, WRITE_ZEROES: 6, BLOCK_STATUS: 7 } as const;
/** How a command ended: answered with data or success, or with an error */
type Outcome = 'ok' | 'failed';
/** Command names for the metrics (a bounded set: anything else is "unknown"). */
const CMD_NAMES: Record<number, string> = Object.fromEntries(Object.entries(CMD).map(([k, v]) => [v, k]));
const CMD_FLAG = { FUA: 1, NO_HOLE: 2, DF: 4, REQ_ONE: 8 } as const;
const CHUNK = { NONE: 0, OFFSET_DATA: 1, BLOCK_STATUS: 5, ERROR: 2 ** 15 + 1 } as const;
const REPLY_FLAG_DONE = 1;
const E = { PERM: 1, IO: 5, NOMEM: 12, INVAL: 22, NOSPC: 28, OVERFLOW: 75, NOTSUP: 95, SHUTDOWN: 108 } as const;
const BASE_ALLOCATION = 'base:allocation';
const META_ID = 1;
const STATE_HOLE = 1, STATE_ZERO = 2;

/** Largest single request; announced as the maximum block size. */
export const NBD_MAX_REQUEST = 32 * 1024 * 1024;
const MAX_OPTION_LENGTH = 64 * 1024;
const MAX_INFLIGHT = 64;
/** Bytes read ahead of what the session asked for (a payload being read may be larger: it is budgeted). */
const READ_AHEAD = 1024 * 1024;
/** A payload that stops half way, or a client idle in transmission (or not reading), is dropped. */
const PAYLOAD_TIMEOUT_MS = 60_000;
const IDLE_TIMEOUT_MS = 120_000;
const EMPTY = Buffer.alloc(0);
/** Reply bytes a client has not read: past this no new request is read from it. */
const MAX_UNSENT_BYTES = 64 * 1024 * 1024;
/** A client that has not reached transmission by then (TLS handshake included) is dropped. */
const NEGOTIATION_TIMEOUT_MS = 60_000;

export interface NbdConfig {
  /** clients from these networks are refused (checked first) */
  deny: net.BlockList | null;
  /** when set, only clients from these networks are served */
  allow: net.BlockList | null;
  /** exports (VDI names) served read-only whatever the client asks */
  readonly: Set<string>;
  /** --nbd-tls*: NBD_OPT_STARTTLS offered ('on') or demanded ('require') */
  tls?: NbdTlsOptions;
}

class ConnectionClosed extends Error {}

/** Exact-length reads from a socket, with the socket paused while too much is buffered. */
class SocketReader {
  private readonly q = new ByteQueue();
  private waiter: (() => void) | null = null;
  private closed = false;
  private sock: net.Socket;
  private readonly onData = (d: Buffer): void => {
    this.q.push(d);
    if (this.q.length > READ_AHEAD) this.sock.pause();
    this.wake();
  };
  private readonly onEnd = (): void => { this.closed = true; this.wake(); };

  constructor(sock: net.Socket) {
    this.sock = sock;
    this.listen(sock, true);
  }

  private listen(sock: net.Socket, on: boolean): void {
    const m = on ? 'on' : 'off';
    sock[m]('data', this.onData);
    sock[m]('close', this.onEnd);
    sock[m]('error', this.onEnd);
  }

  /** Bytes received but not yet read. */
  get buffered(): number {
    return this.q.length;
  }

  /** STARTTLS: stops reading the plain socket (left paused for TLS to take over) and reads `next` instead. */
  swap(next: net.Socket | null): void {
    this.listen(this.sock, false);
    this.sock.pause();
    if (next) {
      this.sock = next;
      this.listen(next, true);
    }
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = null;
    w?.();
  }

  async read(n: number): Promise<Buffer> {
    while (this.q.length < n) {
      if (this.closed) throw new ConnectionClosed();
      this.sock.resume();
      await new Promise<void>((r) => { this.waiter = r; });
    }
    const out = this.q.take(n);
    if (this.q.length < READ_AHEAD) this.sock.resume();
    return out;
  }
}

interface Export {
  name: string;
  vdiName: string;
  readonly: boolean;
  vdi: OpenVdi;
  locked: boolean;
}

function errnoOf(e: unknown): number {
  if (e instanceof SdError) {
    switch (e.result) {
      case Res.READONLY: return E.PERM;
      case Res.NO_SPACE: return E.NOSPC;
      case Res.INVALID_PARMS: return E.INVAL;
      case Res.NO_MEM: return E.NOMEM;
      case Res.SHUTDOWN: return E.SHUTDOWN;
      default: return E.IO;
    }
  }
  return E.IO;
}

export class NbdServer extends SocketServer {
  private readonly tls: NbdTls | null;

  constructor(
    private readonly sys: System,
    private readonly cfg: NbdConfig,
    private readonly log: Logger,
    admission: Admission,
    /** request bytes held at once, shared with port 7000 */
    private readonly budget: ByteBudget,
  ) {
    // NBD clients never authenticate: they may not use the connections kept for collie and peers
    super({ ...admission, filter: null, useReserve: false }, 'nbd');
    // read here so that bad TLS files stop the start-up with a message
    this.tls = loadNbdTls(cfg.tls ?? {});
    if (this.tls) {
      this.log.info({ mode: this.tls.mode, psk: this.tls.psk !== null, clientCerts: this.tls.verifyClient }, 'NBD TLS enabled');
    }
  }

  async listenTcp(host: string | undefined, port: number): Promise<void> {
    await this.bindTcp(host, port);
    this.log.info({ host, port }, 'NBD export listening');
  }

  async listenUnix(path: string): Promise<void> {
    await this.bindUnix(path);
    this.log.info({ path }, 'NBD export listening on unix socket');
  }

  protected accept(sock: net.Socket): void {
    const addr = sock.remoteAddress?.replace(/^::ffff:/, '');
    const peer = addr ? `${addr}:${sock.remotePort}` : 'unix';
    const refused = this.refusal(sock.remoteAddress);
    if (refused) this.log.warn({ peer, why: refused }, 'NBD client refused by the access list');
    void new NbdSession(this.sys, this.cfg, this.tls, this.log, sock, peer, refused, this.budget).run();
  }

  /** Why this address may not use the export, or null when it may. Unix socket clients are local. */
  private refusal(address: string | undefined): string | null {
    if (!address) return null;
    if (this.cfg.deny && listed(this.cfg.deny, address)) return `${address} is in the deny list`;
    if (this.cfg.allow && !listed(this.cfg.allow, address)) return `${address} is not in the allow list`;
    return null;
  }
}

class NbdSession {
  private readonly r: SocketReader;
  private structured = false;
  private metaContext = false;
  private noZeroes = false;
  private exp: Export | null = null;
  private inflight = 0;
  private slot: (() => void) | null = null;
  /** the plain socket until STARTTLS, then the TLS socket over it */
  private sock: net.Socket;
  private tlsUp = false;

  constructor(
    private readonly sys: System,
    private readonly cfg: NbdConfig,
    private readonly tls: NbdTls | null,
    private readonly log: Logger,
    private readonly raw: net.Socket,
    private readonly peer: string,
    private readonly refused: string | null,
    private readonly budget: ByteBudget,
  ) {
    this.sock = raw;
    this.r = new SocketReader(raw);
  }

  async run(): Promise<void> {
    const timer = setTimeout(() => {
      this.log.warn({ peer: this.peer }, 'NBD client did not finish negotiating in time: closing');
      this.raw.destroy();
    }, NEGOTIATION_TIMEOUT_MS);
    try {
      const go = await this.handshake().finally(() => clearTimeout(timer));
      if (go) await this.transmission();
    } catch (e) {
      if (!(e instanceof ConnectionClosed)) this.log.warn({ peer: this.peer, err: (e as Error).message }, 'NBD connection dropped');
    } finally {
      await this.release();
      this.sock.end();
      setTimeout(() => { this.sock.destroy(); this.raw.destroy(); }, 1000).unref();
    }
  }

  private write(b: Buffer): void {
    if (!this.sock.destroyed) this.sock.write(b);
  }

  // ------------------------------------------------------------------ handshake

  /** Returns true when the client entered transmission with an export. */
  private async handshake(): Promise<boolean> {
    const greet = Buffer.alloc(18);
    NBDMAGIC.copy(greet, 0);
    IHAVEOPT.copy(greet, 8);
    greet.writeUInt16BE(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES, 16);
    this.write(greet);
    const cflags = (await this.r.read(4)).readUInt32BE(0);
    if (!(cflags & FLAG_FIXED_NEWSTYLE)) throw new Error('client does not speak fixed newstyle');
    if (cflags & ~(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES)) throw new Error(`unknown client flags 0x${cflags.toString(16)}`);
    this.noZeroes = (cflags & FLAG_NO_ZEROES) !== 0;
    for (;;) {
      const h = await this.r.read(16);
      if (!h.subarray(0, 8).equals(IHAVEOPT)) throw new Error('bad option magic');
      const opt = h.readUInt32BE(8);
      const len = h.readUInt32BE(12);
      if (len > MAX_OPTION_LENGTH) {
        if (opt === OPT.EXPORT_NAME) throw new Error('export name too long');
        await this.discard(len);
        this.optError(opt, REP_ERR.TOO_BIG, 'option data too long');
        continue;
      }
      const data = len ? await this.r.read(len) : Buffer.alloc(0);
      if (this.tls?.mode === 'require' && !this.tlsUp && opt !== OPT.STARTTLS && opt !== OPT.ABORT) {
        if (opt === OPT.EXPORT_NAME) {
          this.log.info({ peer: this.peer }, 'NBD client asked for an export without TLS: closing');
          return false; // no error reply exists for EXPORT_NAME
        }
        this.optError(opt, REP_ERR.TLS_REQD, 'TLS is required: send NBD_OPT_STARTTLS first');
        continue;
      }
      if (this.refused) {
        if (opt === OPT.ABORT) { this.optReply(opt, REP.ACK); return false; }
        if (opt === OPT.EXPORT_NAME) return false;
        this.optError(opt, REP_ERR.POLICY, `access denied: ${this.refused}`);
        continue;
      }
      switch (opt) {
        case OPT.ABORT:
          this.optReply(opt, REP.ACK);
          return false;
        case OPT.LIST:
          if (len) { this.optError(opt, REP_ERR.INVALID, 'NBD_OPT_LIST takes no data'); break; }
          for (const v of this.sys.vdis.all()) {
            if (v.deleted || v.snapCtime !== 0n) continue;
            const name = Buffer.from(v.name);
            const d = Buffer.alloc(4 + name.length);
            d.writeUInt32BE(name.length, 0);
            name.copy(d, 4);
            this.optReply(opt, REP.SERVER, d);
          }
          this.optReply(opt, REP.ACK);
          break;
        case OPT.STRUCTURED_REPLY:
          if (len) { this.optError(opt, REP_ERR.INVALID, 'NBD_OPT_STRUCTURED_REPLY takes no data'); break; }
          this.structured = true;
          this.optReply(opt, REP.ACK);
          break;
        case OPT.LIST_META_CONTEXT:
        case OPT.SET_META_CONTEXT:
          this.metaContextOption(opt, data);
          break;
        case OPT.INFO:
        case OPT.GO:
          if (await this.infoOrGo(opt, data)) return true;
          break;
        case OPT.EXPORT_NAME: {
          const exp = await this.openExport(data.toString('utf8')).catch((e: Error) => {
            this.log.info({ peer: this.peer, err: e.message }, 'NBD export refused');
            return null;
          });
          if (!exp) return false; // the protocol has no error reply here: close
          this.exp = exp;
          const b = Buffer.alloc(this.noZeroes ? 10 : 134);
          b.writeBigUInt64BE(BigInt(exp.vdi.size), 0);
          b.writeUInt16BE(this.transmissionFlags(exp), 8);
          this.write(b);
          return true;
        }
        case OPT.STARTTLS:
          await this.startTls(opt, len);
          break;
        default:
          this.optError(opt, REP_ERR.UNSUP, `option ${opt} is not supported`);
      }
    }
  }

  private async startTls(opt: number, len: number): Promise<void> {
    const cfg = this.tls;
    if (!cfg) { this.optError(opt, REP_ERR.POLICY, 'TLS is not offered by this server'); return; }
    if (this.tlsUp) { this.optError(opt, REP_ERR.INVALID, 'TLS is already active'); return; }
    if (len) { this.optError(opt, REP_ERR.INVALID, 'NBD_OPT_STARTTLS takes no data'); return; }
    this.optReply(opt, REP.ACK);
    // the client must wait for the ACK; bytes already here would be plaintext mixed into the TLS stream
    if (this.r.buffered) throw new Error('client sent data before the STARTTLS reply');
    this.r.swap(null);
    let peer;
    try {
      peer = await upgradeToTls(this.raw, cfg);
    } catch (e) {
      this.log.warn({ peer: this.peer, err: (e as Error).message }, 'NBD TLS handshake refused');
      throw new ConnectionClosed();
    }
    this.sock = peer.sock;
    this.tlsUp = true;
    this.r.swap(peer.sock);
    this.log.info({ peer: this.peer, identity: peer.identity, protocol: peer.protocol, cipher: peer.cipher }, 'NBD TLS session started');
  }

  private async discard(n: number): Promise<void> {
    while (n > 0) {
      const k = Math.min(n, 1 << 20);
      await this.r.read(k);
      n -= k;
    }
  }

  private optReply(opt: number, type: number, data: Buffer = Buffer.alloc(0)): void {
    const h = Buffer.alloc(20);
    h.writeBigUInt64BE(REPLY_MAGIC, 0);
    h.writeUInt32BE(opt, 8);
    h.writeUInt32BE(type, 12);
    h.writeUInt32BE(data.length, 16);
    this.write(data.length ? Buffer.concat([h, data]) : h);
  }

  private optError(opt: number, type: number, message: string): void {
    this.optReply(opt, type, Buffer.from(message));
  }

  private metaContextOption(opt: number, data: Buffer): void {
    if (opt === OPT.SET_META_CONTEXT && !this.structured) {
      this.optError(opt, REP_ERR.INVALID, 'negotiate structured replies first');
      return;
    }
    try {
      let o = 0;
      const nameLen = data.readUInt32BE(o); o += 4 + nameLen;
      const n = data.readUInt32BE(o); o += 4;
      const queries: string[] = [];
      for (let i = 0; i < n; i++) {
        const ql = data.readUInt32BE(o); o += 4;
        if (o + ql > data.length) throw new RangeError('query beyond the option data');
        queries.push(data.toString('utf8', o, o + ql)); o += ql;
      }
      if (o !== data.length) throw new RangeError('trailing option data');
      const wanted = opt === OPT.LIST_META_CONTEXT && n === 0
        ? [BASE_ALLOCATION]
        : queries.filter((q) => q === BASE_ALLOCATION || (opt === OPT.LIST_META_CONTEXT && q === 'base:'));
      const selected = wanted.length > 0; // base:allocation is the only context we have
      if (selected) {
        const name = Buffer.from(BASE_ALLOCATION);
        const d = Buffer.alloc(4 + name.length);
        d.writeUInt32BE(META_ID, 0);
        name.copy(d, 4);
        this.optReply(opt, REP.META_CONTEXT, d);
      }
      if (opt === OPT.SET_META_CONTEXT) this.metaContext = selected;
      this.optReply(opt, REP.ACK);
    } catch {
      this.optError(opt, REP_ERR.INVALID, 'malformed meta context request');
    }
  }

  private async infoOrGo(opt: number, data: Buffer): Promise<boolean> {
    let name: string;
    const requests: number[] = [];
    try {
      const nl = data.readUInt32BE(0);
      if (4 + nl + 2 > data.length) throw new RangeError('short');
      name = data.toString('utf8', 4, 4 + nl);
      const n = data.readUInt16BE(4 + nl);
      if (4 + nl + 2 + 2 * n !== data.length) throw new RangeError('bad request count');
      for (let i = 0; i < n; i++) requests.push(data.readUInt16BE(4 + nl + 2 + 2 * i));
    } catch {
      this.optError(opt, REP_ERR.INVALID, 'malformed NBD_OPT_INFO/GO request');
      return false;
    }
    let exp: Export;
    try {
      exp = await this.openExport(name);
    } catch (e) {
      this.optError(opt, REP_ERR.UNKNOWN, (e as Error).message);
      return false;
    }
    const info = Buffer.alloc(12);
    info.writeUInt16BE(INFO.EXPORT, 0);
    info.writeBigUInt64BE(BigInt(exp.vdi.size), 2);
    info.writeUInt16BE(this.transmissionFlags(exp), 10);
    this.optReply(opt, REP.INFO, info);
    if (requests.includes(INFO.NAME)) {
      const nb = Buffer.from(exp.name);
      const d = Buffer.alloc(2 + nb.length);
      d.writeUInt16BE(INFO.NAME, 0);
      nb.copy(d, 2);
      this.optReply(opt, REP.INFO, d);
    }
    if (requests.includes(INFO.BLOCK_SIZE)) {
      const bs = Buffer.alloc(14);
      bs.writeUInt16BE(INFO.BLOCK_SIZE, 0);
      bs.writeUInt32BE(1, 2);
      bs.writeUInt32BE(4096, 6);
      bs.writeUInt32BE(NBD_MAX_REQUEST, 10);
      this.optReply(opt, REP.INFO, bs);
    }
    this.optReply(opt, REP.ACK);
    if (opt === OPT.GO) {
      this.exp = exp;
      return true;
    }
    return false;
  }

  private transmissionFlags(exp: Export): number {
    let f = TF.HAS_FLAGS | TF.SEND_FLUSH | TF.SEND_FUA | TF.SEND_CACHE;
    if (exp.readonly) f |= TF.READ_ONLY;
    else f |= TF.SEND_TRIM | TF.SEND_WRITE_ZEROES;
    return f;
  }

  /**
   * "name" is the working VDI (writable), "name@tag" or "name@snapid" a snapshot (read-only).
   * NBD clients do not say whether they will write, so the VDI lock is taken at the first write:
   * readers (qemu-img compare/map, nbdinfo) never collide with the VM that writes.
   */
  private async openExport(name: string): Promise<Export> {
    if (this.sys.status === 'wait_format') throw new SdError(Res.WAIT_FOR_FORMAT, 'the cluster is not formatted');
    this.sys.ioAllowed(); // WAIT_FOR_JOIN or HALT
    if (this.sys.status !== 'running') throw new SdError(Res.SHUTDOWN, 'the cluster is shutting down');
    const at = name.lastIndexOf('@');
    const vdiName = at >= 0 ? name.slice(0, at) : name;
    const snap = at >= 0 ? name.slice(at + 1) : '';
    const snapid = /^\d+$/.test(snap) ? Number(snap) : 0;
    const tag = snapid ? '' : snap;
    const entry = this.sys.vdis.lookup(vdiName, tag, snapid);
    const readonly = entry.snapCtime !== 0n || this.cfg.readonly.has(vdiName);
    const vdi = await OpenVdi.open(localTransport(this.sys), entry.vdiId);
    this.log.info({ peer: this.peer, export: name, vid: entry.vdiId.toString(16), readonly }, 'NBD export opened');
    return { name, vdiName, readonly, vdi, locked: false };
  }

  private locking: Promise<void> | null = null;

  /** Takes the VDI lock for this connection before its first write; a second writer gets EPERM. */
  private writeLock(): Promise<void> | null {
    const exp = this.exp!;
    if (exp.locked) return Promise.resolve();
    // NBD writers always exclude each other, whatever the cluster's --lock setting
    this.locking ??= this.sys.decide({ kind: 'lock', name: exp.vdiName, tag: '', snapid: 0, shared: false, owner: `nbd:${this.peer}`, enforce: true })
      .then(() => { exp.locked = true; })
      .catch((e: unknown) => {
        this.locking = null;
        if (e instanceof SdError && e.result === Res.VDI_LOCKED) throw new SdError(Res.READONLY, `VDI '${exp.vdiName}' is in use by another writer`);
        throw e;
      });
    return this.locking;
  }

  private async release(): Promise<void> {
    const exp = this.exp;
    this.exp = null;
    if (!exp) return;
    if (exp.locked) await this.sys.gateway.flushVdi(exp.vdi.vid).catch(() => undefined);
    if (exp.locked) await this.sys.decide({ kind: 'release', vid: exp.vdi.vid }).catch(() => undefined);
  }

  // ------------------------------------------------------------------ transmission

  private async transmission(): Promise<void> {
    this.sock.setTimeout(IDLE_TIMEOUT_MS, () => {
      if (this.inflight === 0 || this.sock.writableLength > 0) {
        this.log.info({ peer: this.peer }, 'NBD client idle (or not reading its replies): closing');
        this.sock.destroy();
      }
    });
    for (;;) {
      while (this.inflight >= MAX_INFLIGHT) await new Promise<void>((r) => { this.slot = r; });
      // a client that does not read its replies gets no more requests read (its replies stay bounded)
      while (this.sock.writableLength > MAX_UNSENT_BYTES && !this.sock.destroyed) {
        await new Promise<void>((r) => {
          const done = () => { this.sock.off('drain', done); this.sock.off('close', done); r(); };
          this.sock.on('drain', done);
          this.sock.on('close', done);
        });
      }
      const h = await this.r.read(28);
      if (h.readUInt32BE(0) !== REQUEST_MAGIC) throw new Error('bad request magic');
      const flags = h.readUInt16BE(4);
      const type = h.readUInt16BE(6);
      const handle = h.subarray(8, 16);
      const offset = Number(h.readBigUInt64BE(16));
      const length = h.readUInt32BE(24);
      let payload: Buffer | null = null;
      if (type === CMD.WRITE && length > NBD_MAX_REQUEST) {
        // the payload cannot be skipped safely at this size: answer and hang up
        this.simpleReply(handle, E.OVERFLOW);
        return;
      }
      // the bytes this request holds (its payload, or the data it reads) wait for room in the budget
      const bytes = type === CMD.WRITE || type === CMD.READ ? Math.min(length, NBD_MAX_REQUEST) : 0;
      const wait = bytes ? this.budget.acquire(bytes, false) : null;
      if (wait) await wait;
      if (type === CMD.WRITE) {
        const timer = setTimeout(() => {
          this.log.warn({ peer: this.peer }, 'NBD write payload did not arrive in time: closing');
          this.sock.destroy();
        }, PAYLOAD_TIMEOUT_MS);
        try {
          payload = await this.r.read(length);
        } catch (e) {
          this.budget.release(bytes);
          throw e;
        } finally {
          clearTimeout(timer);
        }
      }
      if (type === CMD.DISC) {
        while (this.inflight) await new Promise<void>((r) => { this.slot = r; });
        return;
      }
      this.inflight++;
      void this.command(type, flags, handle, offset, length, payload).finally(() => {
        // the bytes stay charged until the reply left for the kernel: unread replies count too
        if (bytes) {
          if (this.sock.destroyed || !this.sock.writableLength) this.budget.release(bytes);
          else this.sock.write(EMPTY, () => this.budget.release(bytes));
        }
        this.inflight--;
        const s = this.slot;
        this.slot = null;
        s?.();
      });
    }
  }

  /** One command, timed and counted; `failed` is set by `fail`. */
  private async command(type: number, flags: number, handle: Buffer, offset: number, length: number, payload: Buffer | null): Promise<void> {
    const start = metrics.begin('nbd');
    let outcome: Outcome | undefined;
    try {
      outcome = await this.execute(type, flags, handle, offset, length, payload);
    } finally {
      const failed = outcome !== 'ok';
      const ok = !failed;
      metrics.done('nbd', CMD_NAMES[type] ?? 'unknown', start, failed,
        ok && type === CMD.READ ? length : 0, ok && type === CMD.WRITE ? length : 0);
    }
  }

  private async execute(type: number, flags: number, handle: Buffer, offset: number, length: number, payload: Buffer | null): Promise<Outcome> {
    const exp = this.exp!;
    const size = exp.vdi.size;
    try {
      const inRange = offset <= size && length <= size - offset;
      switch (type) {
        case CMD.READ: {
          if (length > NBD_MAX_REQUEST) return this.fail(handle, E.OVERFLOW, 'read too large');
          if (!inRange) return this.fail(handle, E.INVAL, 'read beyond the end of the export');
          const data = await exp.vdi.read(offset, length);
          this.readReply(handle, offset, data);
          return 'ok';
        }
        case CMD.WRITE:
          if (exp.readonly) return this.fail(handle, E.PERM, 'the export is read-only');
          if (!inRange) return this.fail(handle, E.NOSPC, 'write beyond the end of the export');
          await this.writeLock();
          await this.retryAfterSnapshot(() => exp.vdi.write(offset, payload!));
          if (flags & CMD_FLAG.FUA) await this.sys.gateway.flushVdi(exp.vdi.vid);
          this.simpleReply(handle, 0);
          return 'ok';
        case CMD.FLUSH:
          await this.sys.gateway.flushVdi(exp.vdi.vid);
          this.simpleReply(handle, 0);
          return 'ok';
        case CMD.TRIM:
        case CMD.WRITE_ZEROES:
          if (exp.readonly) return this.fail(handle, E.PERM, 'the export is read-only');
          if (!inRange) return this.fail(handle, E.NOSPC, 'range beyond the end of the export');
          await this.writeLock();
          await this.retryAfterSnapshot(() => this.zero(offset, length, type === CMD.WRITE_ZEROES && (flags & CMD_FLAG.NO_HOLE) !== 0));
          if (flags & CMD_FLAG.FUA) await this.sys.gateway.flushVdi(exp.vdi.vid);
          this.simpleReply(handle, 0);
          return 'ok';
        case CMD.CACHE:
          if (!inRange) return this.fail(handle, E.INVAL, 'range beyond the end of the export');
          this.simpleReply(handle, 0);
          return 'ok';
        case CMD.BLOCK_STATUS:
          if (!this.structured || !this.metaContext) return this.fail(handle, E.INVAL, 'no meta context negotiated');
          if (!inRange || length === 0) return this.fail(handle, E.INVAL, 'range beyond the end of the export');
          this.blockStatus(handle, offset, length, (flags & CMD_FLAG.REQ_ONE) !== 0);
          return 'ok';
        default:
          return this.fail(handle, E.INVAL, `unknown command ${type}`);
      }
    } catch (e) {
      const errno = errnoOf(e);
      // a client's own mistake is its business; an I/O error the cluster gave it is the operator's
      const fields = { peer: this.peer, type, offset: Number(offset), length, err: (e as Error).message, result: e instanceof SdError ? e.result : undefined };
      if (errno === E.IO) this.log.warn(fields, 'NBD command failed with EIO');
      else this.log.debug(fields, 'NBD command failed');
      return this.fail(handle, errno, (e as Error).message);
    }
  }

  /** A snapshot taken meanwhile (collie or QEMU) makes our vid read-only: follow the working VDI. */
  private async retryAfterSnapshot(fn: () => Promise<void>): Promise<void> {
    try {
      await fn();
    } catch (e) {
      if (!(e instanceof SdError && e.result === Res.READONLY)) throw e;
      const exp = this.exp!;
      const cur = this.sys.vdis.lookup(exp.vdiName, '', 0);
      if (cur.vdiId === exp.vdi.vid) throw e;
      exp.vdi = await OpenVdi.open(localTransport(this.sys), cur.vdiId);
      await fn();
    }
  }

  /** TRIM / WRITE_ZEROES: whole objects stop being mapped (freed when unshared), partial ranges get zeros. */
  private async zero(offset: number, length: number, noHole: boolean): Promise<void> {
    const v = this.exp!.vdi;
    await Promise.all([...v.pieces(offset, length)].map(async (p) => {
      const whole = p.off === 0 && (p.len === v.objectSize || offset + length >= v.size && p.idx === v.map.length - 1);
      if (!v.map[p.idx] && !noHole) return; // already reads as zeros
      if (whole && !noHole) {
        await this.sys.vdis.discard(v.vid, p.idx);
        v.map[p.idx] = 0;
        return;
      }
      await v.writePiece(p.idx, p.off, Buffer.alloc(p.len));
    }));
  }

  private blockStatus(handle: Buffer, offset: number, length: number, one: boolean): void {
    const v = this.exp!.vdi;
    const desc: Array<[number, number]> = [];
    for (const p of v.pieces(offset, length)) {
      const state = v.map[p.idx] ? 0 : STATE_HOLE | STATE_ZERO;
      const last = desc[desc.length - 1];
      if (last && last[1] === state) last[0] += p.len;
      else desc.push([p.len, state]);
    }
    const used = one ? desc.slice(0, 1) : desc;
    const body = Buffer.alloc(4 + 8 * used.length);
    body.writeUInt32BE(META_ID, 0);
    used.forEach(([len, st], i) => { body.writeUInt32BE(len, 4 + 8 * i); body.writeUInt32BE(st, 8 + 8 * i); });
    this.chunk(handle, REPLY_FLAG_DONE, CHUNK.BLOCK_STATUS, body);
  }

  // ------------------------------------------------------------------ replies

  private simpleReply(handle: Buffer, error: number, data?: Buffer): void {
    const h = Buffer.alloc(16);
    h.writeUInt32BE(SIMPLE_REPLY_MAGIC, 0);
    h.writeUInt32BE(error, 4);
    handle.copy(h, 8);
    if (data && data.length) {
      this.sock.cork();
      this.write(h);
      this.write(data);
      this.sock.uncork();
    } else {
      this.write(h);
    }
  }

  private chunk(handle: Buffer, flags: number, type: number, body: Buffer, data?: Buffer): void {
    const h = Buffer.alloc(20);
    h.writeUInt32BE(STRUCTURED_REPLY_MAGIC, 0);
    h.writeUInt16BE(flags, 4);
    h.writeUInt16BE(type, 6);
    handle.copy(h, 8);
    h.writeUInt32BE(body.length + (data?.length ?? 0), 16);
    this.sock.cork();
    this.write(h);
    if (body.length) this.write(body);
    if (data?.length) this.write(data);
    this.sock.uncork();
  }

  private readReply(handle: Buffer, offset: number, data: Buffer): void {
    if (!this.structured) return this.simpleReply(handle, 0, data);
    if (!data.length) return this.chunk(handle, REPLY_FLAG_DONE, CHUNK.NONE, Buffer.alloc(0));
    const off = Buffer.alloc(8);
    off.writeBigUInt64BE(BigInt(offset));
    this.chunk(handle, REPLY_FLAG_DONE, CHUNK.OFFSET_DATA, off, data);
  }

  private fail(handle: Buffer, errno: number, message: string): 'failed' {
    if (!this.structured) {
      this.simpleReply(handle, errno);
      return 'failed';
    }
    const msg = Buffer.from(message.slice(0, 200));
    const body = Buffer.alloc(6 + msg.length);
    body.writeUInt32BE(errno, 0);
    body.writeUInt16BE(msg.length, 4);
    msg.copy(body, 6);
    this.chunk(handle, REPLY_FLAG_DONE, CHUNK.ERROR, body);
    return 'failed';
  }
}
