// npm run bench: throughput, IOPS and latency through the NBD export, against a baseline measured
// in the same run (qemu-nbd exporting a raw file on the same disk), plus collie vdi write/read timings.
// A script, not a test: it prints a table and exits 0 unless something could not run at all.

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { SheepProcess, freePort, collie, run, waitForPort, stopSequencer, ROOT } from '../helpers/sheep.js';
import { SheepClient } from '../../lib/client.js';
import { Op } from '../../lib/proto.js';

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

/** Targets from the original Sheepdog 1.0 (C) on this kind of machine: 3 nodes, 3 copies, one disk. */
const SHEEPDOG_1_0 = { newVdi: 105, overwrite: 170, read: 300 };

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

async function main(): Promise<void> {
  for (const tool of ['fio', 'qemu-nbd']) {
    if (spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0) throw new Error(`${tool} is missing (scripts/bench.sh installs it)`);
  }
  const work = await fs.mkdtemp(path.join(ROOT, 'run', 'bench-'));
  fioOut = path.join(work, 'fio.json');
  const procs: ChildProcess[] = [];
  const all: SheepProcess[] = [];
  try {
    const data = path.join(work, 'random256.raw');
    await fs.writeFile(data, crypto.randomBytes(256 * MB));

    // ---- baseline: qemu-nbd exporting a raw file on the same disk
    const rawFile = path.join(work, 'baseline.raw');
    await fs.writeFile(rawFile, '');
    await fs.truncate(rawFile, GIB);
    const qport = await freePort();
    const q = startQemuNbd(rawFile, qport);
    procs.push(q);
    await waitForPort(qport);
    const base = await workloads(`nbd://127.0.0.1:${qport}/bench`);
    q.kill('SIGTERM');

    const sec: Secrets = { keyFile: path.join(work, 'cluster.key'), pskFile: path.join(work, 'nbd.psk') };
    await run(process.execPath, [path.join(ROOT, 'dist/collie/main.js'), 'cluster', 'keygen', sec.keyFile]);
    await fs.writeFile(sec.pskFile, `bench:${crypto.randomBytes(32).toString('hex')}\n`, { mode: 0o600 });
    const results: Array<{ cfg: Config; nbd: Record<string, FioResult>; cli: { newVdi: number; overwrite: number; read: number } }> = [];
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
      const nbd = await workloads(`nbd://127.0.0.1:${nbdPort}/bench`);
      const cli = await collieTimes(sheep[0].port, data, cfg.peerTls ? sec.keyFile : undefined);
      results.push({ cfg, nbd, cli });
      for (const s of sheep) await s.stop();
    }

    const cpu = os.cpus()[0]?.model ?? 'unknown CPU';
    console.log(`# sheepdog-ts benchmark (${new Date().toISOString().slice(0, 10)}, ${os.cpus().length} cores ${cpu}, ${Math.round(os.totalmem() / GIB)} GiB, node ${process.version})`);
    console.log('');
    console.log('NBD export (fio, nbd engine) vs qemu-nbd on a raw file on the same disk, measured in this run:');
    console.log('');
    console.log('| cluster | workload | MB/s | IOPS | p50 µs | p99 µs | baseline MB/s | baseline IOPS | baseline p50 µs | baseline p99 µs | ratio |');
    console.log('|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
    for (const r of results) {
      for (const w of Object.keys(r.nbd)) {
        const o = r.nbd[w], b = base[w];
        console.log(`| ${r.cfg.label} | ${w} | ${f1(o.mbps)} | ${Math.round(o.iops)} | ${Math.round(o.p50us)} | ${Math.round(o.p99us)} | ` +
          `${f1(b.mbps)} | ${Math.round(b.iops)} | ${Math.round(b.p50us)} | ${Math.round(b.p99us)} | ${ratio(o.iops, b.iops)} |`);
      }
    }
    console.log('');
    console.log('collie vdi write / read of 256 MiB of random data (MB/s), against the original Sheepdog 1.0 on this kind of machine:');
    console.log('');
    console.log('| cluster | write into a new VDI | overwrite | read |');
    console.log('|---|---:|---:|---:|');
    for (const r of results) console.log(`| ${r.cfg.label} | ${f1(r.cli.newVdi)} | ${f1(r.cli.overwrite)} | ${f1(r.cli.read)} |`);
    console.log('');
    console.log('Cost of encryption, measured in this run (encrypted / plaintext, same cluster shape):');
    console.log('');
    console.log('| what | workload | plaintext MB/s | encrypted MB/s | plaintext IOPS | encrypted IOPS | ratio |');
    console.log('|---|---|---:|---:|---:|---:|---:|');
    if (tls) {
      const what = 'NBD TLS 1.3 PSK, 1 node (nbdcopy)';
      console.log(`| ${what} | write 256 MiB into the export | ${f1(tls.plainWrite)} | ${f1(tls.tlsWrite)} | | | ${ratio(tls.tlsWrite, tls.plainWrite)} |`);
      console.log(`| ${what} | read the 1 GiB export | ${f1(tls.plainRead)} | ${f1(tls.tlsRead)} | | | ${ratio(tls.tlsRead, tls.plainRead)} |`);
    }
    for (const r of results.filter((x) => x.cfg.peerTls)) {
      const plain = results.find((x) => x.cfg.nodes === r.cfg.nodes && !x.cfg.nbdTls && !x.cfg.peerTls)!;
      const what = 'peer TLS, 3 nodes / 3 copies';
      for (const w of Object.keys(r.nbd)) {
        const e = r.nbd[w], p = plain.nbd[w];
        console.log(`| ${what} | ${w} | ${f1(p.mbps)} | ${f1(e.mbps)} | ${Math.round(p.iops)} | ${Math.round(e.iops)} | ${ratio(e.iops, p.iops)} |`);
      }
      if (r.cfg.peerTls) {
        console.log(`| ${what} | collie vdi write, new VDI | ${f1(plain.cli.newVdi)} | ${f1(r.cli.newVdi)} | | | ${ratio(r.cli.newVdi, plain.cli.newVdi)} |`);
        console.log(`| ${what} | collie vdi read | ${f1(plain.cli.read)} | ${f1(r.cli.read)} | | | ${ratio(r.cli.read, plain.cli.read)} |`);
      }
    }
    const three = results.find((r) => r.cfg.nodes === 3 && !r.cfg.peerTls)!.cli;
    console.log(`| Sheepdog 1.0, 3 nodes / 3 copies | ${SHEEPDOG_1_0.newVdi} | ${SHEEPDOG_1_0.overwrite} | ${SHEEPDOG_1_0.read} |`);
    console.log(`| ratio (3 nodes) | ${ratio(three.newVdi, SHEEPDOG_1_0.newVdi)} | ${ratio(three.overwrite, SHEEPDOG_1_0.overwrite)} | ${ratio(three.read, SHEEPDOG_1_0.read)} |`);
  } finally {
    for (const p of procs) if (p.exitCode === null) p.kill('SIGKILL');
    for (const s of all) await s.stop();
    for (const cfg of CONFIGS) await stopSequencer(`${work}/cluster-${cfg.nodes}${cfg.nbdTls ? 't' : ''}${cfg.peerTls ? 'p' : ''}`);
    await fs.rm(work, { recursive: true, force: true });
  }
}

await main();
