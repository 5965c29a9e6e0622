// npm run bench: throughput, IOPS and latency of every client path (port 7000 with exactly the
// requests QEMU's sheepdog driver sends, the NBD export through fio, collie vdi write/read), each next
// to the limit this machine sets for it, measured in the same run: loopback TCP, the disk (dd, cp +
// sync, fio on a file), qemu-nbd exporting a raw file on the same disk. Then 4 KiB read latency while
// recovery runs in the background, against the same cluster idle.
// A script, not a test: it prints tables and exits 0 unless something could not run at all.

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import net from 'node:net';
import { SheepProcess, freePort, collie, run, waitForPort, stopSequencer, ROOT } from '../helpers/sheep.js';
import { SheepClient } from '../../lib/client.js';
import { Op } from '../../lib/proto.js';
import { qemuLoad, type LoadResult } from './qemu-load.js';
import type { RecoveryStatus } from '../../lib/admin.js';

const MB = 1 << 20;
const GIB = 1 << 30;
const RANDOM_SECONDS = Number(process.env.BENCH_SECONDS ?? 8);

interface FioResult { mbps: number; iops: number; p50us: number; p99us: number }

let fioOut = '';

/** Every timed phase starts with no dirty data from the previous one still being written back. */
function settle(): void {
  spawnSync('sync');
}

async function fio(uri: string, rw: string, bs: string, depth: number, opts: { size?: string; seconds?: number }): Promise<FioResult> {
  settle();
  // fio's nbd engine chats on stdout: the JSON goes to a file
  const args = ['--name=bench', '--ioengine=nbd', `--uri=${uri}`, `--rw=${rw}`, `--bs=${bs}`, `--iodepth=${depth}`,
    '--output-format=json', `--output=${fioOut}`, `--size=${opts.size ?? '1G'}`, '--randrepeat=0', '--norandommap'];
  if (opts.seconds) args.push('--time_based', `--runtime=${opts.seconds}`);
  const r = await run('fio', args, undefined, 600000);
  if (r.code !== 0) throw new Error(`fio ${rw} on ${uri} failed: ${r.stderr}`);
  const j = JSON.parse(await fs.readFile(fioOut, 'utf8')) as { jobs: Array<Record<'read' | 'write', { bw_bytes: number; iops: number; clat_ns: { percentile?: Record<string, number> } }>> };
  const side = rw.includes('write') ? j.jobs[0].write : j.jobs[0].read;
  const pct = side.clat_ns.percentile ?? {};
  return { mbps: side.bw_bytes / 1e6, iops: side.iops, p50us: (pct['50.000000'] ?? 0) / 1000, p99us: (pct['99.000000'] ?? 0) / 1000 };
}

async function workloads(uri: string): Promise<Record<string, FioResult>> {
  const out: Record<string, FioResult> = {};
  out['seq write 4 MiB, 1 GiB'] = await fio(uri, 'write', '4M', 4, {});
  out['seq read 4 MiB, 1 GiB'] = await fio(uri, 'read', '4M', 4, {});
  for (const depth of [1, 16]) {
    out[`rand read 4 KiB QD${depth}`] = await fio(uri, 'randread', '4k', depth, { seconds: RANDOM_SECONDS });
    out[`rand write 4 KiB QD${depth}`] = await fio(uri, 'randwrite', '4k', depth, { seconds: RANDOM_SECONDS });
  }
  return out;
}

function startQemuNbd(file: string, port: number): ChildProcess {
  return spawn('qemu-nbd', ['-f', 'raw', '-x', 'bench', '-p', String(port), '-b', '127.0.0.1', '--cache=writeback', '--persistent', file], { stdio: 'ignore' });
}

async function timeIt(fn: () => Promise<void>): Promise<number> {
  const t = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - t) / 1e9;
}

const f1 = (n: number) => n.toFixed(1);
const ratio = (a: number, b: number) => (b > 0 ? `${(a / b).toFixed(2)}x` : 'n/a');

interface Config {
  label: string;
  nodes: number;
  copies: number;
  /** NBD only over TLS (pre-shared key): its cost against the same cluster in plaintext */
  nbdTls?: boolean;
  /** a cluster key and encrypted sheep-to-sheep connections (--peer-tls) */
  peerTls?: boolean;
}

const CONFIGS: Config[] = [
  { label: '1 node / 1 copy', nodes: 1, copies: 1 },
  { label: '3 nodes / 3 copies', nodes: 3, copies: 3 },
  { label: '1 node / 1 copy, NBD over TLS (PSK)', nodes: 1, copies: 1, nbdTls: true },
  { label: '3 nodes / 3 copies, peer TLS', nodes: 3, copies: 3, peerTls: true },
];

/**
 * collie's counterpart in the original Sheepdog 1.0 (C): `dog vdi write/read` of 256 MiB, 3 nodes /
 * 3 copies on one disk, measured on this kind of machine by building it from source outside this
 * repository (issue 13's table, mean of two runs, each write synced as dog's sheep does by default).
 * Published figures, not measured by this script (it must run without the original). Port 7000 is
 * compared with the original through QEMU's own driver, which this script does not have either:
 * the load generator here sends the same requests but is not the same client.
 */
const DOG_1_0: Record<string, number> = {
  'collie vdi write, new VDI': 95.5, 'collie vdi write, overwrite': 194.5, 'collie vdi read': 1023.5,
};

// ------------------------------------------------------------------ this machine's limits

/** One TCP connection over loopback, 1 GiB in 1 MiB writes: what any client/server pair here can move. */
async function loopbackMBps(): Promise<number> {
  const total = GIB;
  const chunk = Buffer.alloc(MB, 1);
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  const port = (srv.address() as net.AddressInfo).port;
  const got = new Promise<number>((resolve) => {
    srv.once('connection', (s) => {
      let n = 0;
      const t0 = process.hrtime.bigint();
      s.on('data', (d: Buffer) => { n += d.length; if (n >= total) resolve(Number(process.hrtime.bigint() - t0) / 1e9); });
    });
  });
  const c = net.connect({ port, host: '127.0.0.1' });
  await new Promise<void>((r) => c.once('connect', () => r()));
  for (let sent = 0; sent < total; sent += MB) if (!c.write(chunk)) await new Promise((r) => c.once('drain', r));
  const secs = await got;
  c.destroy();
  srv.close();
  return total / 1e6 / secs;
}

interface DiskLimits { ddWrite: number; ddRead: number; cpSync: number; randRead16: FioResult; randWrite16: FioResult; randRead1: FioResult; randWrite1: FioResult }

/** The disk the stores live on: dd (synced write, direct read), cp + sync, fio 4 KiB on a file. */
async function diskLimits(work: string, data: string): Promise<DiskLimits> {
  const f = path.join(work, 'disk.raw');
  settle();
  const tw = await timeIt(async () => { await run('dd', ['if=/dev/zero', `of=${f}`, 'bs=4M', 'count=256', 'conv=fdatasync', 'status=none']); });
  spawnSync('sh', ['-c', 'echo 1 > /proc/sys/vm/drop_caches'], { stdio: 'ignore' });
  const tr = await timeIt(async () => { await run('dd', [`if=${f}`, 'of=/dev/null', 'bs=4M', 'iflag=direct', 'status=none']); });
  const copy = path.join(work, 'copy.raw');
  settle();
  const tc = await timeIt(async () => { await run('sh', ['-c', `cp "${data}" "${copy}" && sync`]); });
  await fs.rm(copy, { force: true });
  const file = async (rw: string, depth: number) => {
    settle();
    const r = await run('fio', ['--name=disk', `--filename=${f}`, '--ioengine=libaio', `--rw=${rw}`, '--bs=4k', `--iodepth=${depth}`,
      '--size=1G', '--time_based', `--runtime=${RANDOM_SECONDS}`, '--randrepeat=0', '--norandommap', '--output-format=json'], undefined, 600000);
    if (r.code !== 0) throw new Error(`fio on ${f}: ${r.stderr}`);
    const j = JSON.parse(r.stdout.toString()) as { jobs: Array<Record<'read' | 'write', { bw_bytes: number; iops: number; clat_ns: { percentile?: Record<string, number> } }>> };
    const side = rw.includes('write') ? j.jobs[0].write : j.jobs[0].read;
    const pct = side.clat_ns.percentile ?? {};
    return { mbps: side.bw_bytes / 1e6, iops: side.iops, p50us: (pct['50.000000'] ?? 0) / 1000, p99us: (pct['99.000000'] ?? 0) / 1000 };
  };
  const out = {
    ddWrite: GIB / 1e6 / tw, ddRead: GIB / 1e6 / tr, cpSync: (256 * MB) / 1e6 / tc,
    randRead16: await file('randread', 16), randWrite16: await file('randwrite', 16),
    randRead1: await file('randread', 1), randWrite1: await file('randwrite', 1),
  };
  await fs.rm(f, { force: true });
  return out;
}

// ------------------------------------------------------------------ port 7000, as QEMU's driver

async function port7000(port: number): Promise<Record<string, LoadResult>> {
  const out: Record<string, LoadResult> = {};
  for (const depth of [1, 16]) {
    for (const rw of ['read', 'write'] as const) {
      settle();
      out[`rand ${rw} 4 KiB QD${depth}`] = await qemuLoad(port, 'bench', rw, 4096, depth, RANDOM_SECONDS);
    }
  }
  return out;
}

/**
 * 4 KiB random reads at QD16 on port 7000 of a 4-node / 3-copy cluster holding 1 GiB: first idle,
 * then while the cluster re-replicates after one sheep was SIGKILLed.
 */
async function recoveryLatency(work: string): Promise<{ idle: LoadResult; busy: LoadResult; recoverySeconds: number; overlapSeconds: number }> {
  const sheep: SheepProcess[] = [];
  try {
    for (let i = 0; i < 4; i++) {
      sheep.push(await new SheepProcess(path.join(work, `rec-s${i}`), await freePort(), ['-c', `local:${work}/cluster-rec`, '-z', String(i), '-l', 'warn']).start());
    }
    const c = await SheepClient.connect({ port: sheep[0].port });
    await c.control(Op.MAKE_FS, { copies: 3 });
    c.close();
    const nbd = await collie(sheep[0].port, ['vdi', 'create', 'bench', '1G']);
    if (nbd.code !== 0) throw new Error(nbd.stderr);
    const fill = await collie(sheep[0].port, ['vdi', 'write', 'bench'], { file: path.join(work, 'random1g.raw') });
    if (fill.code !== 0) throw new Error(fill.stderr);
    settle();
    const idle = await qemuLoad(sheep[0].port, 'bench', 'read', 4096, 16, 5);
    // the victim is not the sheep the client talks to
    const t0 = Date.now();
    await sheep[3].kill9();
    let recoveryEnd = 0;
    const watch = (async () => {
      const ctl = await SheepClient.connect({ port: sheep[1].port });
      try {
        for (let seen = false; ;) {
          const r = await ctl.control<RecoveryStatus>(Op.STAT_RECOVERY);
          if (r.state === 'running') seen = true;
          if (seen && r.state === 'idle') { recoveryEnd = Date.now(); return; }
          if (Date.now() - t0 > 120_000) return;
          await new Promise((res) => setTimeout(res, 50));
        }
      } finally { ctl.close(); }
    })();
    // measured once the membership change is applied (the view change itself is not recovery)
    const ctl0 = await SheepClient.connect({ port: sheep[0].port });
    try {
      while ((await ctl0.control<{ nodes: unknown[] }>(Op.GET_NODE_LIST)).nodes.length !== 3) await new Promise((res) => setTimeout(res, 20));
    } finally { ctl0.close(); }
    const busyStart = Date.now();
    const busy = await qemuLoad(sheep[0].port, 'bench', 'read', 4096, 16, 3);
    const busyEnd = Date.now();
    await watch;
    const end = recoveryEnd || Date.now();
    return { idle, busy, recoverySeconds: (end - t0) / 1000, overlapSeconds: Math.max(0, (Math.min(end, busyEnd) - busyStart) / 1000) };
  } finally {
    for (const s of sheep) await s.stop();
    await stopSequencer(`${work}/cluster-rec`);
  }
}


// ------------------------------------------------------------------ erasure coding against copies

interface EcRow { label: string; nbd: Record<string, FioResult>; recovery: { seconds: number; bytes: number } }

/** Every sheep on one epoch with all `n` members, done recovering it. */
async function settledCluster(sheep: SheepProcess[], n: number, ms = 600_000): Promise<void> {
  const until = Date.now() + ms;
  for (;;) {
    const st = await Promise.all(sheep.map(async (s) => {
      const c = await SheepClient.connect({ port: s.port });
      try {
        const cl = await c.control<{ epoch: number; nodes: number }>(Op.STAT_CLUSTER);
        const r = await c.control<RecoveryStatus>(Op.STAT_RECOVERY);
        return cl.nodes === n && r.state === 'idle' && (r.epoch === cl.epoch || r.epoch === 0) ? cl.epoch : -1;
      } catch {
        return -1;
      } finally { c.close(); }
    }));
    if (st.every((e) => e >= 0 && e === st[0])) return;
    if (Date.now() > until) throw new Error('the cluster did not settle');
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * 6 sheep in 6 zones on this one disk, copies=3 against erasure coding 4:2 (both survive two lost
 * zones): fio through NBD (the same workloads as above), then recovery after a node loses its
 * store (stopped, its objects deleted, started again: everything it held is rebuilt, copied for
 * copies=3, decoded from 4 strips for 4:2), in MB/s of what the node got back.
 */
async function ecAgainstCopies(work: string): Promise<EcRow[]> {
  const rows: EcRow[] = [];
  for (const cfg of [{ label: '6 nodes / 3 copies', copies: 3, copyPolicy: 0 }, { label: '6 nodes / 4:2 erasure coded', copies: 6, copyPolicy: 0x22 }]) {
    const sheep: SheepProcess[] = [];
    const tag = `ec${cfg.copyPolicy}`;
    try {
      const nbdPort = await freePort();
      for (let i = 0; i < 6; i++) {
        const args = ['-c', `local:${work}/cluster-${tag}`, '-z', String(i), '-l', 'warn'];
        if (i === 0) args.push('--nbd', `127.0.0.1:${nbdPort}`);
        sheep.push(await new SheepProcess(path.join(work, `${tag}-s${i}`), await freePort(), args).start());
      }
      const c = await SheepClient.connect({ port: sheep[0].port });
      await c.control(Op.MAKE_FS, { copies: cfg.copies, copyPolicy: cfg.copyPolicy });
      await c.newVdi('bench', BigInt(GIB));
      c.close();
      await settledCluster(sheep, 6);
      const nbd = await workloads(`nbd://127.0.0.1:${nbdPort}/bench`);
      // the node that loses its store is not the one the client talks to
      const victim = sheep[5];
      await victim.stop();
      const obj = path.join(victim.dir, 'obj');
      for (const f of await fs.readdir(obj)) if (/^[0-9a-f]{16}(_\d+)?$/.test(f)) await fs.rm(path.join(obj, f));
      settle();
      const t0 = Date.now();
      await victim.start();
      await settledCluster(sheep, 6);
      const seconds = (Date.now() - t0) / 1000;
      let bytes = 0;
      for (const f of await fs.readdir(obj)) if (/^[0-9a-f]{16}(_\d+)?$/.test(f)) bytes += (await fs.stat(path.join(obj, f))).size;
      rows.push({ label: cfg.label, nbd, recovery: { seconds, bytes } });
    } finally {
      for (const s of sheep) await s.stop();
      await stopSequencer(`${work}/cluster-${tag}`);
    }
  }
  return rows;
}

function printEc(rows: EcRow[]): void {
  console.log('Erasure coding 4:2 against 3 copies, 6 sheep in 6 zones on one disk (fio through NBD; recovery: one sheep');
  console.log('restarted with an empty store, MB/s of what it got back, from its restart to the end of recovery):');
  console.log('');
  row(['cluster', 'workload', 'MB/s', 'IOPS', 'p50 µs', 'p99 µs']);
  row(['---', '---', '---:', '---:', '---:', '---:']);
  for (const r of rows) {
    for (const [w, o] of Object.entries(r.nbd)) row([r.label, w, f1(o.mbps), us(o.iops), us(o.p50us), us(o.p99us)]);
    row([r.label, `recovery of one node's store (${f1(r.recovery.bytes / MB)} MiB in ${r.recovery.seconds.toFixed(1)} s)`, f1(r.recovery.bytes / 1e6 / r.recovery.seconds), '', '', '']);
  }
  if (rows.length === 2) {
    console.log('');
    row(['workload', '4:2 / 3 copies']);
    row(['---', '---:']);
    for (const w of Object.keys(rows[0].nbd)) {
      const a = rows[0].nbd[w], b = rows[1].nbd[w];
      row([w, w.startsWith('seq') ? ratio(b.mbps, a.mbps) : ratio(b.iops, a.iops)]);
    }
    row(['recovery MB/s', ratio(rows[1].recovery.bytes / rows[1].recovery.seconds, rows[0].recovery.bytes / rows[0].recovery.seconds)]);
  }
  console.log('');
}

/** Credentials of the encrypted configurations, made once per run. */
interface Secrets { keyFile: string; pskFile: string }

async function startCluster(work: string, cfg: Config, nbdPort: number, sec: Secrets): Promise<SheepProcess[]> {
  const sheep: SheepProcess[] = [];
  const tag = `${cfg.nodes}${cfg.nbdTls ? 't' : ''}${cfg.peerTls ? 'p' : ''}`;
  for (let i = 0; i < cfg.nodes; i++) {
    const args = ['-c', `local:${work}/cluster-${tag}`, '-z', String(i), '-l', 'warn'];
    if (i === 0) args.push('--nbd', `127.0.0.1:${nbdPort}`);
    if (i === 0 && cfg.nbdTls) args.push('--nbd-tls', 'on', '--nbd-tls-psk', sec.pskFile);
    if (cfg.peerTls) args.push('--cluster-key', sec.keyFile, '--peer-tls');
    sheep.push(await new SheepProcess(path.join(work, `c${tag}-s${i}`), await freePort(), args).start());
  }
  const c = await SheepClient.connect({ port: sheep[0].port });
  if (cfg.peerTls) await c.authenticate(Buffer.from((await fs.readFile(sec.keyFile, 'utf8')).trim(), 'hex'), 'admin');
  await c.control(Op.MAKE_FS, { copies: cfg.copies });
  await c.newVdi('bench', BigInt(GIB));
  c.close();
  return sheep;
}

/**
 * NBD over TLS against plaintext on the same sheep (TLS offered, not required): nbdcopy of the 256 MiB
 * file into the export, and of the whole 1 GiB export out (extents off, so holes are read too). fio's
 * nbd engine cannot be given a PSK file (libnbd refuses local files in its URIs), nbdcopy can.
 */
async function nbdTlsTimes(port: number, data: string, pskFile: string): Promise<Record<'plainWrite' | 'tlsWrite' | 'plainRead' | 'tlsRead', number>> {
  const plain = `nbd://127.0.0.1:${port}/bench`;
  const secure = `nbds://bench@127.0.0.1:${port}/bench?tls-psk-file=${pskFile}`;
  const copy = async (from: string, to: string) => {
    settle();
    const r = await run('nbdcopy', ['--no-extents', from, to], undefined, 600000);
    if (r.code !== 0) throw new Error(`nbdcopy ${from} ${to}: ${r.stderr}`);
  };
  const w = (t: number) => (256 * MB) / 1e6 / t;
  const rd = (t: number) => GIB / 1e6 / t;
  const plainWrite = w(await timeIt(() => copy(data, plain)));
  const tlsWrite = w(await timeIt(() => copy(data, secure)));
  const plainRead = rd(await timeIt(() => copy(plain, 'null:')));
  const tlsRead = rd(await timeIt(() => copy(secure, 'null:')));
  return { plainWrite, tlsWrite, plainRead, tlsRead };
}

async function collieTimes(port: number, data: string, keyFile?: string): Promise<{ newVdi: number; overwrite: number; read: number }> {
  const k = keyFile ? ['-k', keyFile] : [];
  const ck = async (args: string[], input?: { file: string }) => {
    const r = await collie(port, [...args, ...k], input);
    if (r.code !== 0) throw new Error(`collie ${args.join(' ')}: ${r.stderr}`);
  };
  await ck(['vdi', 'create', 'cli', '256M']);
  settle();
  const tNew = await timeIt(() => ck(['vdi', 'write', 'cli'], { file: data }));
  settle();
  const tOver = await timeIt(() => ck(['vdi', 'write', 'cli'], { file: data }));
  settle();
  const tRead = await timeIt(async () => { await run('/bin/sh', ['-c', `node "${path.join(ROOT, 'dist/collie/main.js')}" vdi read cli -p ${port} ${k.join(' ')} > /dev/null`]); });
  const mbps = (t: number) => (256 * MB) / 1e6 / t;
  return { newVdi: mbps(tNew), overwrite: mbps(tOver), read: mbps(tRead) };
}

interface ClusterResult {
  cfg: Config;
  nbd: Record<string, FioResult>;
  p7000: Record<string, LoadResult>;
  cli: { newVdi: number; overwrite: number; read: number };
}

const us = (n: number) => String(Math.round(n));
const row = (cells: Array<string | number>) => console.log(`| ${cells.join(' | ')} |`);

/** WORK/random1g.raw: the 1 GiB of random data the 1 GiB workloads write. */
async function writeRandom1g(work: string): Promise<void> {
  const big = await fs.open(path.join(work, 'random1g.raw'), 'w');
  for (let i = 0; i < 4; i++) await big.write(crypto.randomBytes(256 * MB));
  await big.close();
}

function printRecoveryLatency(rec: Awaited<ReturnType<typeof recoveryLatency>>): void {
  console.log('4 KiB random reads at QD16 on port 7000 while recovery runs (4 nodes / 3 copies, 1 GiB, one sheep SIGKILLed):');
  console.log('');
  row(['state', 'IOPS', 'p50 µs', 'p99 µs', 'p99 / idle p99']);
  row(['---', '---:', '---:', '---:', '---:']);
  row(['idle', us(rec.idle.iops), us(rec.idle.p50us), us(rec.idle.p99us), '1.00x']);
  row([`recovering (0.5 s warm-up + 3 s measured, ${rec.overlapSeconds.toFixed(1)} s of it during the ${rec.recoverySeconds.toFixed(1)} s recovery)`, us(rec.busy.iops), us(rec.busy.p50us), us(rec.busy.p99us), ratio(rec.busy.p99us, rec.idle.p99us)]);
  console.log('');
}

async function main(): Promise<void> {
  for (const tool of ['fio', 'qemu-nbd', 'dd']) {
    if (spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0) throw new Error(`${tool} is missing (scripts/bench.sh installs it)`);
  }
  const work = await fs.mkdtemp(path.join(ROOT, 'run', 'bench-'));
  fioOut = path.join(work, 'fio.json');
  if (process.env.BENCH_ONLY === 'recovery-latency') {
    // npm run bench:recovery-latency: only 4 KiB reads idle and under recovery
    try {
      await writeRandom1g(work);
      printRecoveryLatency(await recoveryLatency(work));
    } finally {
      await fs.rm(work, { recursive: true, force: true });
    }
    return;
  }
  if (process.env.BENCH_ONLY === 'ec') {
    // npm run bench:ec-cluster: only the erasure-coding section
    try {
      printEc(await ecAgainstCopies(work));
    } finally {
      await fs.rm(work, { recursive: true, force: true });
    }
    return;
  }
  const procs: ChildProcess[] = [];
  const all: SheepProcess[] = [];
  try {
    const data = path.join(work, 'random256.raw');
    await fs.writeFile(data, crypto.randomBytes(256 * MB));
    await writeRandom1g(work);

    // ---- the limits of this machine, and qemu-nbd exporting a raw file on the same disk
    const loop = await loopbackMBps();
    const disk = await diskLimits(work, data);
    const rawFile = path.join(work, 'baseline.raw');
    await fs.writeFile(rawFile, '');
    await fs.truncate(rawFile, GIB);
    const qport = await freePort();
    const q = startQemuNbd(rawFile, qport);
    procs.push(q);
    await waitForPort(qport);
    const base = await workloads(`nbd://127.0.0.1:${qport}/bench`);
    q.kill('SIGTERM');
    await fs.rm(rawFile, { force: true });

    const sec: Secrets = { keyFile: path.join(work, 'cluster.key'), pskFile: path.join(work, 'nbd.psk') };
    await run(process.execPath, [path.join(ROOT, 'dist/collie/main.js'), 'cluster', 'keygen', sec.keyFile]);
    await fs.writeFile(sec.pskFile, `bench:${crypto.randomBytes(32).toString('hex')}\n`, { mode: 0o600 });
    const results: ClusterResult[] = [];
    let tls: Awaited<ReturnType<typeof nbdTlsTimes>> | null = null;
    for (const cfg of CONFIGS) {
      const nbdPort = await freePort();
      const sheep = await startCluster(work, cfg, nbdPort, sec);
      all.push(...sheep);
      if (cfg.nbdTls) {
        tls = await nbdTlsTimes(nbdPort, data, sec.pskFile);
        for (const s of sheep) await s.stop();
        continue;
      }
      // fio's sequential write fills the VDI first: port 7000's writes then overwrite, as QEMU's do
      const nbd = await workloads(`nbd://127.0.0.1:${nbdPort}/bench`);
      const p7000 = cfg.peerTls ? {} : await port7000(sheep[0].port);
      const cli = await collieTimes(sheep[0].port, data, cfg.peerTls ? sec.keyFile : undefined);
      results.push({ cfg, nbd, p7000, cli });
      for (const s of sheep) await s.stop();
    }
    const rec = await recoveryLatency(work);
    const ec = await ecAgainstCopies(work);

    const cpu = os.cpus()[0]?.model ?? 'unknown CPU';
    console.log(`# sheepdog-ts benchmark (${new Date().toISOString().slice(0, 10)}, ${os.cpus().length} cores ${cpu}, ${Math.round(os.totalmem() / GIB)} GiB, node ${process.version})`);
    console.log('');
    console.log('Limits of this machine, measured in this run:');
    console.log('');
    row(['limit', 'MB/s', 'IOPS', 'p50 µs', 'p99 µs']);
    row(['---', '---:', '---:', '---:', '---:']);
    row(['loopback TCP, one connection', f1(loop), '', '', '']);
    row(['disk: dd 1 GiB write, fdatasync', f1(disk.ddWrite), '', '', '']);
    row(['disk: dd 1 GiB read, O_DIRECT', f1(disk.ddRead), '', '', '']);
    row(['disk: cp 256 MiB + sync', f1(disk.cpSync), '', '', '']);
    for (const [k, v] of [['rand read 4 KiB QD1', disk.randRead1], ['rand write 4 KiB QD1', disk.randWrite1], ['rand read 4 KiB QD16', disk.randRead16], ['rand write 4 KiB QD16', disk.randWrite16]] as const) {
      row([`file on the disk (fio, libaio): ${k}`, f1(v.mbps), us(v.iops), us(v.p50us), us(v.p99us)]);
    }
    for (const [w, b] of Object.entries(base)) row([`qemu-nbd, raw file (fio, nbd): ${w}`, f1(b.mbps), us(b.iops), us(b.p50us), us(b.p99us)]);
    console.log('');
    console.log('Our clusters, every client path, with the ratio to its limit (port 7000 and NBD: qemu-nbd on a raw file doing');
    console.log('the same workload; collie: cp + sync for writes, loopback for reads):');
    console.log('');
    row(['cluster', 'client', 'workload', 'MB/s', 'IOPS', 'p50 µs', 'p99 µs', 'limit', 'ratio to limit']);
    row(['---', '---', '---', '---:', '---:', '---:', '---:', '---:', '---:']);
    for (const r of results.filter((x) => !x.cfg.peerTls)) {
      for (const [w, o] of Object.entries(r.p7000)) {
        const b = base[w];
        row([r.cfg.label, 'port 7000 (QEMU driver requests)', w, f1(o.mbps), us(o.iops), us(o.p50us), us(o.p99us), `${us(b.iops)} IOPS`, ratio(o.iops, b.iops)]);
      }
      for (const [w, o] of Object.entries(r.nbd)) {
        const b = base[w];
        const seq = w.startsWith('seq');
        row([r.cfg.label, 'NBD (fio)', w, f1(o.mbps), us(o.iops), us(o.p50us), us(o.p99us), seq ? `${f1(b.mbps)} MB/s` : `${us(b.iops)} IOPS`, seq ? ratio(o.mbps, b.mbps) : ratio(o.iops, b.iops)]);
      }
      row([r.cfg.label, 'collie', 'vdi write 256 MiB, new VDI', f1(r.cli.newVdi), '', '', '', `${f1(disk.cpSync)} MB/s`, ratio(r.cli.newVdi, disk.cpSync)]);
      row([r.cfg.label, 'collie', 'vdi write 256 MiB, overwrite', f1(r.cli.overwrite), '', '', '', `${f1(disk.cpSync)} MB/s`, ratio(r.cli.overwrite, disk.cpSync)]);
      row([r.cfg.label, 'collie', 'vdi read 256 MiB', f1(r.cli.read), '', '', '', `${f1(loop)} MB/s`, ratio(r.cli.read, loop)]);
    }
    console.log('');
    const three = results.find((r) => r.cfg.nodes === 3 && !r.cfg.peerTls)!;
    console.log('collie against dog of the original Sheepdog 1.0, 3 nodes / 3 copies: dog\'s figures were measured on this kind of');
    console.log('machine with the original built from source outside this repository (issue 13), not in this run:');
    console.log('');
    row(['workload', 'ours (this run) MB/s', 'Sheepdog 1.0 dog MB/s', 'ratio']);
    row(['---', '---:', '---:', '---:']);
    const ours: Record<string, number> = {
      'collie vdi write, new VDI': three.cli.newVdi, 'collie vdi write, overwrite': three.cli.overwrite, 'collie vdi read': three.cli.read,
    };
    for (const [k, v] of Object.entries(DOG_1_0)) row([k, f1(ours[k]), f1(v), ratio(ours[k], v)]);
    console.log('');
    printRecoveryLatency(rec);
    printEc(ec);
    console.log('Cost of encryption, measured in this run (encrypted / plaintext, same cluster shape):');
    console.log('');
    row(['what', 'workload', 'plaintext MB/s', 'encrypted MB/s', 'plaintext IOPS', 'encrypted IOPS', 'ratio']);
    row(['---', '---', '---:', '---:', '---:', '---:', '---:']);
    if (tls) {
      const what = 'NBD TLS 1.3 PSK, 1 node (nbdcopy)';
      row([what, 'write 256 MiB into the export', f1(tls.plainWrite), f1(tls.tlsWrite), '', '', ratio(tls.tlsWrite, tls.plainWrite)]);
      row([what, 'read the 1 GiB export', f1(tls.plainRead), f1(tls.tlsRead), '', '', ratio(tls.tlsRead, tls.plainRead)]);
    }
    for (const r of results.filter((x) => x.cfg.peerTls)) {
      const plain = results.find((x) => x.cfg.nodes === r.cfg.nodes && !x.cfg.nbdTls && !x.cfg.peerTls)!;
      const what = 'peer TLS, 3 nodes / 3 copies';
      for (const w of Object.keys(r.nbd)) {
        const e = r.nbd[w], p = plain.nbd[w];
        row([what, w, f1(p.mbps), f1(e.mbps), us(p.iops), us(e.iops), ratio(e.iops, p.iops)]);
      }
      row([what, 'collie vdi write, new VDI', f1(plain.cli.newVdi), f1(r.cli.newVdi), '', '', ratio(r.cli.newVdi, plain.cli.newVdi)]);
      row([what, 'collie vdi read', f1(plain.cli.read), f1(r.cli.read), '', '', ratio(r.cli.read, plain.cli.read)]);
    }
  } finally {
    for (const p of procs) if (p.exitCode === null) p.kill('SIGKILL');
    for (const s of all) await s.stop();
    for (const cfg of CONFIGS) await stopSequencer(`${work}/cluster-${cfg.nodes}${cfg.nbdTls ? 't' : ''}${cfg.peerTls ? 'p' : ''}`);
    await fs.rm(work, { recursive: true, force: true });
  }
}

await main();
