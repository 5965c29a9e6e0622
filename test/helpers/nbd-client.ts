// A small NBD client for tests that need what Debian's tools do not expose: raw replies, errno
// values, a chosen source address, and malformed input.

import net from 'node:net';

export const NBD_CMD = { READ: 0, WRITE: 1, DISC: 2, FLUSH: 3, TRIM: 4, CACHE: 5, WRITE_ZEROES: 6, BLOCK_STATUS: 7 } as const;

export class RawSocket {
  private buf = Buffer.alloc(0);
  private waiter: (() => void) | null = null;
  closed = false;

  private constructor(readonly sock: net.Socket) {
    sock.on('data', (d: Buffer) => { this.buf = Buffer.concat([this.buf, d]); this.wake(); });
    sock.on('close', () => { this.closed = true; this.wake(); });
    sock.on('error', () => { this.closed = true; this.wake(); });
  }

  static connect(opts: net.NetConnectOpts): Promise<RawSocket> {
    return new Promise((resolve, reject) => {
      const s = net.connect(opts);
      s.once('connect', () => resolve(new RawSocket(s)));
      s.once('error', reject);
    });
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = null;
    w?.();
  }

  /** Exactly n bytes, or null when the server closed first / nothing came within the timeout. */
  async read(n: number, timeoutMs = 5000): Promise<Buffer | null> {
    const deadline = Date.now() + timeoutMs;
    while (this.buf.length < n) {
      if (this.closed || Date.now() > deadline) return null;
      await new Promise<void>((r) => {
        const t = setTimeout(r, Math.max(1, deadline - Date.now()));
        this.waiter = () => { clearTimeout(t); r(); };
      });
    }
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    return out;
  }

  write(b: Buffer): void {
    this.sock.write(b);
  }

  /** Resolves true once the server has closed the connection (within the timeout). */
  async closedByServer(timeoutMs = 5000): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (!this.closed && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    return this.closed;
  }

  destroy(): void {
    this.sock.destroy();
  }
}

export function option(opt: number, data: Buffer = Buffer.alloc(0)): Buffer {
  const h = Buffer.alloc(16);
  h.write('IHAVEOPT', 0, 'latin1');
  h.writeUInt32BE(opt, 8);
  h.writeUInt32BE(data.length, 12);
  return Buffer.concat([h, data]);
}

export interface OptionReply { opt: number; type: number; data: Buffer }

export async function readOptionReply(s: RawSocket): Promise<OptionReply | null> {
  const h = await s.read(20);
  if (!h) return null;
  const len = h.readUInt32BE(16);
  const data = len ? await s.read(len) : Buffer.alloc(0);
  return { opt: h.readUInt32BE(8), type: h.readUInt32BE(12), data: data ?? Buffer.alloc(0) };
}

/** Greeting + client flags (fixed newstyle, no zeroes). */
export async function greet(s: RawSocket): Promise<void> {
  const g = await s.read(18);
  if (!g || g.toString('latin1', 0, 16) !== 'NBDMAGICIHAVEOPT') throw new Error('no NBD greeting');
  const f = Buffer.alloc(4);
  f.writeUInt32BE(3);
  s.write(f);
}

export function goData(name: string): Buffer {
  const n = Buffer.from(name);
  const d = Buffer.alloc(4 + n.length + 2);
  d.writeUInt32BE(n.length, 0);
  n.copy(d, 4);
  return d;
}

/** A connection in transmission phase with simple replies. */
export class NbdConn {
  private next = 1n;
  /** how long a reply may take (a thrash waits out membership changes: real NBD clients wait too) */
  replyTimeoutMs = 5000;
  private constructor(readonly s: RawSocket, readonly size: bigint, readonly flags: number) {}

  static async open(opts: net.NetConnectOpts, name: string): Promise<NbdConn> {
    const s = await RawSocket.connect(opts);
    await greet(s);
    s.write(option(7, goData(name)));
    let size = 0n, flags = 0;
    for (;;) {
      const r = await readOptionReply(s);
      if (!r) throw new Error('connection closed during NBD_OPT_GO');
      if (r.type >= 2 ** 31) throw new Error(`NBD_OPT_GO refused (${r.type - 2 ** 31}): ${r.data.toString()}`);
      if (r.type === 3 && r.data.readUInt16BE(0) === 0) { size = r.data.readBigUInt64BE(2); flags = r.data.readUInt16BE(10); }
      if (r.type === 1) break;
    }
    return new NbdConn(s, size, flags);
  }

  /** Sends one command; resolves with the simple reply's errno and data (for reads). */
  async cmd(type: number, offset: bigint | number, length: number, data?: Buffer, flags = 0): Promise<{ error: number; data: Buffer }> {
    const h = Buffer.alloc(28);
    h.writeUInt32BE(0x25609513, 0);
    h.writeUInt16BE(flags, 4);
    h.writeUInt16BE(type, 6);
    h.writeBigUInt64BE(this.next++, 8);
    h.writeBigUInt64BE(BigInt(offset), 16);
    h.writeUInt32BE(length, 24);
    this.s.write(data ? Buffer.concat([h, data]) : h);
    const r = await this.s.read(16, this.replyTimeoutMs);
    if (!r) throw new Error('no reply');
    const error = r.readUInt32BE(4);
    const body = type === NBD_CMD.READ && error === 0 ? await this.s.read(length, this.replyTimeoutMs) : Buffer.alloc(0);
    return { error, data: body ?? Buffer.alloc(0) };
  }

  close(): void {
    const h = Buffer.alloc(28);
    h.writeUInt32BE(0x25609513, 0);
    h.writeUInt16BE(NBD_CMD.DISC, 6);
    this.s.write(h);
    this.s.sock.end();
  }
}
