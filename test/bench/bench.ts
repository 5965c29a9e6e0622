// npm run bench: throughput, IOPS and latency through the NBD export, against a baseline measured
// in the same run (qemu-nbd exporting a raw file on the same disk), plus collie vdi write/read timings.
// A script, not a test: it prints a table and exits 0 unless something could not run at all.

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { SheepProcess, freePort, collie, run, waitForPort, ROOT } from '../helpers/sheep.js';
import { SheepClient } from '../../lib/client.js';
import { Op } from '../../lib/proto.js';

const MB = 1 << 20;
const GIB = 1 << 30;
const RANDOM_SECONDS = Number(process.env.BENCH_SECONDS ?? 8);

interface FioResult { mbps: number; iops: number; p50us: number; p99us: number }
interface Row { workload: string; ours: FioResult; base: FioResult }

let fioOut = '';

async function fio(uri: string, rw: string, bs: string, depth: number, opts: { size?: string; seconds?: number }): Promise<FioResult> {
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

async function main(): Promise<void> {
  for (const tool of ['fio', 'qemu-nbd']) {
    if (spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0) throw new Error(`${tool} is missing (scripts/bench.sh installs it)`);
  }
  const work = await fs.mkdtemp(path.join(ROOT, 'run', 'bench-'));
  fioOut = path.join(work, 'fio.json');
  const procs: ChildProcess[] = [];
  let sheep: SheepProcess | null = null;
  try {
    // ---- ours: one sheep, one copy, NBD export of a 1 GiB VDI
    const nbdPort = await freePort();
    sheep = await new SheepProcess(path.join(work, 'sheep0'), await freePort(), ['--nbd', `127.0.0.1:${nbdPort}`, '-l', 'warn']).start();
    const c = await SheepClient.connect({ port: sheep.port });
    await c.control(Op.MAKE_FS, { copies: 1 });
    await c.newVdi('bench', BigInt(GIB));
    c.close();
    const ours = await workloads(`nbd://127.0.0.1:${nbdPort}/bench`);

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

    // ---- collie vdi write/read of 256 MiB of random data
    const data = path.join(work, 'random256.raw');
    await fs.writeFile(data, crypto.randomBytes(256 * MB));
    const ck = async (args: string[], input?: { file: string }) => {
      const r = await collie(sheep!.port, args, input);
      if (r.code !== 0) throw new Error(`collie ${args.join(' ')}: ${r.stderr}`);
    };
    await ck(['vdi', 'create', 'cli', '256M']);
    const tNew = await timeIt(() => ck(['vdi', 'write', 'cli'], { file: data }));
    const tOver = await timeIt(() => ck(['vdi', 'write', 'cli'], { file: data }));
    const tRead = await timeIt(async () => { await run('/bin/sh', ['-c', `node "${path.join(ROOT, 'dist/collie/main.js')}" vdi read cli -p ${sheep!.port} > /dev/null`]); });
    const mbps = (t: number) => (256 * MB) / 1e6 / t;

    const rows: Row[] = Object.keys(ours).map((w) => ({ workload: w, ours: ours[w], base: base[w] }));
    const cpu = os.cpus()[0]?.model ?? 'unknown CPU';
    console.log(`# sheepdog-ts benchmark (${new Date().toISOString().slice(0, 10)}, ${os.cpus().length} cores ${cpu}, ${Math.round(os.totalmem() / GIB)} GiB, node ${process.version})`);
    console.log('');
    console.log('NBD export, 1 sheep / 1 copy, vs qemu-nbd on a raw file on the same disk (fio, nbd engine):');
    console.log('');
    console.log('| workload | MB/s | IOPS | p50 µs | p99 µs | baseline MB/s | baseline IOPS | baseline p50 µs | baseline p99 µs | ratio |');
    console.log('|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
    for (const r of rows) {
      console.log(`| ${r.workload} | ${f1(r.ours.mbps)} | ${Math.round(r.ours.iops)} | ${Math.round(r.ours.p50us)} | ${Math.round(r.ours.p99us)} | ` +
        `${f1(r.base.mbps)} | ${Math.round(r.base.iops)} | ${Math.round(r.base.p50us)} | ${Math.round(r.base.p99us)} | ${ratio(r.ours.iops, r.base.iops)} |`);
    }
    console.log('');
    console.log('collie vdi write / read of 256 MiB of random data, 1 sheep / 1 copy:');
    console.log('');
    console.log('| operation | seconds | MB/s |');
    console.log('|---|---:|---:|');
    console.log(`| write into a new VDI | ${tNew.toFixed(2)} | ${f1(mbps(tNew))} |`);
    console.log(`| overwrite | ${tOver.toFixed(2)} | ${f1(mbps(tOver))} |`);
    console.log(`| read | ${tRead.toFixed(2)} | ${f1(mbps(tRead))} |`);
  } finally {
    for (const p of procs) if (p.exitCode === null) p.kill('SIGKILL');
    if (sheep) await sheep.stop();
    await fs.rm(work, { recursive: true, force: true });
  }
}

await main();
