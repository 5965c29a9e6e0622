#!/usr/bin/env node
// The `local` cluster driver's sequencer: one small process per cluster directory that gives the
// sheep on this machine a total order. Every sheep connects to DIR/seq.sock; the sequencer stamps
// membership changes (a sheep's connection opening or closing, SIGKILL included) and broadcasts in
// one order to all. Started on demand by the first sheep, it exits once no sheep has been
// connected for a while. It holds no cluster state: the sheep do.

import net from 'node:net';
import fs from 'node:fs';
import path from 'node:path';
import { pack, unpack } from 'msgpackr';

export interface SeqHello { t: 'hello'; id: string }
export interface SeqMcast { t: 'mcast'; msg: Uint8Array }
export type ToSequencer = SeqHello | SeqMcast;
export interface SeqConfchg { t: 'confchg'; members: string[]; joined: string[]; left: string[] }
export interface SeqDeliver { t: 'deliver'; from: string; msg: Uint8Array }
export type FromSequencer = SeqConfchg | SeqDeliver;

const IDLE_EXIT_MS = 10_000;
const MAX_FRAME = 64 * 1024 * 1024;

/** u32 big-endian length + msgpack body. */
export function frame(m: unknown): Buffer {
  const body = pack(m);
  const h = Buffer.alloc(4);
  h.writeUInt32BE(body.length);
  return Buffer.concat([h, body]);
}

/** Splits a stream of frames; throws on an absurd length. */
export class FrameSplitter {
  private buf: Buffer = Buffer.alloc(0);
  push(chunk: Buffer): unknown[] {
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
    const out: unknown[] = [];
    while (this.buf.length >= 4) {
      const len = this.buf.readUInt32BE(0);
      if (len > MAX_FRAME) throw new Error(`frame of ${len} bytes`);
      if (this.buf.length < 4 + len) break;
      out.push(unpack(this.buf.subarray(4, 4 + len)));
      this.buf = this.buf.subarray(4 + len);
    }
    return out;
  }
}

export function sequencerPaths(dir: string): { sock: string; lock: string } {
  return { sock: path.join(dir, 'seq.sock'), lock: path.join(dir, 'seq.pid') };
}

/** Whether a pid names a live process (stale pid/lock files name dead ones). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Exactly one sequencer per directory: the pid file is created exclusively; a dead owner's is stale. */
function takeLock(lock: string): boolean {
  for (let i = 0; i < 2; i++) {
    try {
      fs.writeFileSync(lock, `${process.pid}\n`, { flag: 'wx' });
      return true;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      const pid = Number(fs.readFileSync(lock, 'utf8').trim());
      if (pid && processAlive(pid)) return false;
      fs.rmSync(lock, { force: true });
    }
  }
  return false;
}

function main(): void {
  const dir = process.argv[2];
  if (!dir) {
    process.stderr.write('usage: local-sequencer DIR\n');
    process.exit(64);
  }
  fs.mkdirSync(dir, { recursive: true });
  const { sock, lock } = sequencerPaths(dir);
  if (!takeLock(lock)) process.exit(0); // another sequencer serves this directory
  fs.rmSync(sock, { force: true });
  const members: Array<{ id: string; conn: net.Socket }> = [];
  let idleTimer: NodeJS.Timeout | null = null;
  const broadcast = (m: FromSequencer) => {
    const f = frame(m);
    for (const x of members) x.conn.write(f);
  };
  const armIdle = () => {
    if (members.length || idleTimer) return;
    idleTimer = setTimeout(() => {
      server.close();
      fs.rmSync(sock, { force: true });
      fs.rmSync(lock, { force: true });
      process.exit(0);
    }, IDLE_EXIT_MS);
  };
  const server = net.createServer((conn) => {
    let id: string | null = null;
    const split = new FrameSplitter();
    conn.on('data', (chunk: Buffer) => {
      let msgs: unknown[];
      try {
        msgs = split.push(chunk);
      } catch {
        conn.destroy();
        return;
      }
      for (const raw of msgs) {
        const m = raw as ToSequencer;
        if (m.t === 'hello' && id === null && typeof m.id === 'string') {
          id = m.id;
          if (idleTimer) { clearTimeout(idleTimer); idleTimer = null; }
          members.push({ id, conn });
          broadcast({ t: 'confchg', members: members.map((x) => x.id), joined: [id], left: [] });
        } else if (m.t === 'mcast' && id !== null) {
          broadcast({ t: 'deliver', from: id, msg: m.msg });
        }
      }
    });
    const gone = () => {
      const i = id === null ? -1 : members.findIndex((x) => x.conn === conn);
      if (i < 0) return;
      members.splice(i, 1);
      broadcast({ t: 'confchg', members: members.map((x) => x.id), joined: [], left: [id!] });
      armIdle();
    };
    conn.on('close', gone);
    conn.on('error', () => conn.destroy());
  });
  server.listen(sock, () => armIdle());
  const stop = () => {
    fs.rmSync(sock, { force: true });
    fs.rmSync(lock, { force: true });
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

if (process.argv[1] && path.resolve(process.argv[1]) === path.resolve(new URL(import.meta.url).pathname)) main();
