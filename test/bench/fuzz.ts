// npm run fuzz -- [N]: N random and mutated requests (default 100,000) against one real sheep with a
// cluster key, from 8 workers: random headers, real opcodes of every role with mutated fields, msgpack
// garbage, with and without authentication, plus connection floods. Prints requests/s, daemon
// deaths (must be 0), RSS before / max / after, and checks that every VDI written before the run is
// byte-identical after it (sha256). Exits 1 when the sheep died or a VDI changed.

import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import fsSync from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { pack } from 'msgpackr';
import { SheepClient } from '../../lib/client.js';
import { Op, SD_HEADER_SIZE } from '../../lib/proto.js';
import { SheepProcess, tempDir, freePort, run, collie, collieHash, stopSequencer, COLLIE } from '../helpers/sheep.js';

const N = Number(process.argv[2] ?? 100_000);
const WORKERS = 8;
const VDI_SIZE = 32 * 1024 * 1024;
const OPS = Object.values(Op) as number[];

function rss(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(fsSync.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

/** One request: a random header, or a real opcode with random fields, and a payload when it says so. */
function request(rnd: () => number): Buffer {
  const h = crypto.randomBytes(SD_HEADER_SIZE);
  const kind = rnd() % 4;
  if (kind > 0) h[1] = OPS[rnd() % OPS.length];
  h[0] = rnd() % 8 === 0 ? h[0] : 0;
  const write = rnd() % 2 === 1;
  h.writeUInt16LE(write ? 1 : 0, 2);
  const len = kind === 3 ? 0 : rnd() % 4096;
  h.writeUInt32LE(len, 12);
  if (!write) return h;
  const payload = rnd() % 3 === 0 ? pack([null, 42, 'x', { mode: 'explode' }][rnd() % 4]) : crypto.randomBytes(len);
  h.writeUInt32LE(payload.length, 12);
  return Buffer.concat([h, payload]);
}

interface Stats { sent: number; answered: number }

/** Counts the replies in a byte stream of 48-byte headers with their data. */
function replyCounter(stats: Stats): (d: Buffer) => void {
  let buf: Buffer = Buffer.alloc(0);
  return (d) => {
    buf = buf.length ? Buffer.concat([buf, d]) : d;
    while (buf.length >= SD_HEADER_SIZE && buf.length >= SD_HEADER_SIZE + buf.readUInt32LE(12)) {
      buf = buf.subarray(SD_HEADER_SIZE + buf.readUInt32LE(12));
      stats.answered++;
    }
  };
}

async function worker(port: number, key: Buffer, count: number, seed: number, stats: Stats): Promise<void> {
  let state = seed >>> 0;
  const rnd = () => { state = (state * 1103515245 + 12345) >>> 0; return state >>> 8; };
  while (count > 0) {
    const batch = Math.min(count, 200);
    count -= batch;
    const sock = net.connect({ port, host: '127.0.0.1' });
    sock.on('error', () => undefined);
    sock.on('data', replyCounter(stats));
    await new Promise((r) => { sock.once('connect', r); sock.once('error', r); });
    if (rnd() % 4 === 0 && !sock.destroyed) {
      // half of these authenticate first: the same garbage then reaches the admin and peer handlers
      const c = await SheepClient.connect({ port }).catch(() => null);
      if (c) {
        await c.authenticate(key, rnd() % 2 ? 'admin' : 'peer').catch(() => undefined);
        const reqs: Promise<unknown>[] = [];
        for (let i = 0; i < batch; i++) {
          const r = request(rnd);
          // never a format or shutdown with the key: those are allowed to wipe by design
          if (r[1] === Op.MAKE_FS || r[1] === Op.SHUTDOWN || r[1] === Op.KILL_NODE || r[1] === Op.REMOVE_PEER || r[1] === Op.WRITE_PEER || r[1] === Op.CREATE_AND_WRITE_PEER || r[1] === Op.DEL_VDI || r[1] === Op.WRITE_OBJ || r[1] === Op.CREATE_AND_WRITE_OBJ || r[1] === Op.DISCARD_OBJ || r[1] === Op.GET_VDI_ATTR || r[1] === Op.NEW_VDI) r[1] = Op.STAT_CLUSTER;
          const hdr = Buffer.from(r.subarray(0, SD_HEADER_SIZE));
          const payload = r.length > SD_HEADER_SIZE ? r.subarray(SD_HEADER_SIZE) : undefined;
          reqs.push(c.send(hdr, payload).then(() => { stats.answered++; }, () => undefined));
        }
        await Promise.race([Promise.all(reqs), new Promise((r) => setTimeout(r, 5000))]);
        c.close();
      }
      sock.destroy();
    } else {
      const bufs: Buffer[] = [];
      for (let i = 0; i < batch; i++) {
        const r = request(rnd);
        // unauthenticated: client-role writes are QEMU's right; keep them off the VDIs we check
        if (r[1] === Op.WRITE_OBJ || r[1] === Op.CREATE_AND_WRITE_OBJ || r[1] === Op.DISCARD_OBJ || r[1] === Op.DEL_VDI || r[1] === Op.REMOVE_OBJ) r[1] = Op.READ_OBJ;
        bufs.push(r);
      }
      sock.end(Buffer.concat(bufs));
      await new Promise((r) => { sock.once('close', r); setTimeout(r, 2000); });
      sock.destroy();
    }
    stats.sent += batch;
  }
}

async function flood(port: number, n: number): Promise<void> {
  const socks: net.Socket[] = [];
  for (let i = 0; i < n; i++) {
    const s = net.connect({ port, host: '127.0.0.1' });
    s.on('error', () => undefined);
    socks.push(s);
  }
  await new Promise((r) => setTimeout(r, 1000));
  for (const s of socks) s.destroy();
}

async function main(): Promise<void> {
  const root = await tempDir('fuzz-');
  const keyFile = path.join(root, 'cluster.key');
  await run(process.execPath, [COLLIE, 'cluster', 'keygen', keyFile]);
  const key = Buffer.from((await fs.readFile(keyFile, 'utf8')).trim(), 'hex');
  const s = await new SheepProcess(path.join(root, 'store'), await freePort(), ['--cluster-key', keyFile, '-c', `local:${root}/cluster`, '--max-connections', '2000']).start();
  const k = ['-k', keyFile];
  try {
    await collie(s.port, ['cluster', 'format', '-c', '1', '-f', ...k]);
    const names = ['a', 'b'];
    const before: string[] = [];
    for (const n of names) {
      await collie(s.port, ['vdi', 'create', n, String(VDI_SIZE), ...k]);
      await collie(s.port, ['vdi', 'write', n, ...k], crypto.randomBytes(VDI_SIZE));
      before.push((await collieHash(s.port, ['vdi', 'read', n, ...k])).sha256);
    }
    const rss0 = rss(s.pid);
    let rssMax = rss0;
    const stats: Stats = { sent: 0, answered: 0 };
    const sampler = setInterval(() => { rssMax = Math.max(rssMax, rss(s.pid)); }, 200);
    const t0 = Date.now();
    const per = Math.ceil(N / WORKERS);
    await Promise.all([
      ...Array.from({ length: WORKERS }, (_, i) => worker(s.port, key, per, 0x5eed + i * 7919, stats)),
      flood(s.port, 1500),
    ]);
    const secs = (Date.now() - t0) / 1000;
    clearInterval(sampler);
    const alive = s.alive;
    await new Promise((r) => setTimeout(r, 2000));
    const rss1 = rss(s.pid);
    const after: string[] = [];
    for (const n of names) after.push(alive ? (await collieHash(s.port, ['vdi', 'read', n, ...k])).sha256 : 'dead');
    const intact = after.every((h, i) => h === before[i]);
    const mb = (b: number) => (b / 1048576).toFixed(0);
    console.log(`requests: ${stats.sent} sent, ${stats.answered} answered, in ${secs.toFixed(1)} s (${Math.round(stats.sent / secs)} requests/s), ${WORKERS} workers + a 1,500-connection flood`);
    console.log(`daemon deaths: ${alive ? 0 : 1}`);
    console.log(`RSS: before ${mb(rss0)} MB, max ${mb(rssMax)} MB, after ${mb(rss1)} MB (after/before ${(rss1 / rss0).toFixed(2)}x)`);
    console.log(`VDIs byte-identical after the run: ${intact ? 'yes' : 'NO'} (${names.length} VDIs, sha256)`);
    const bounded = rss1 <= 2 * rss0;
    console.log(`fuzz: ${alive && intact && bounded ? 'PASS' : 'FAIL'} (daemon up, VDIs intact, RSS after <= 2x before)`);
    if (!alive || !intact || !bounded) process.exitCode = 1;
  } finally {
    await s.stop();
    await stopSequencer(`${root}/cluster`);
    await fs.rm(root, { recursive: true, force: true });
  }
}

void main();
