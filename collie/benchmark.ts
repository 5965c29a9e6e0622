// `collie benchmark io VDI`: the original's I/O benchmark. It overwrites every object of a fully
// allocated VDI in turn with whole-object writes of zeros (what `dog benchmark io` does), TOTAL
// writes with THREADS of them in flight, and, unlike the original, says how it went.

import { InvalidArgumentError, type Command } from 'commander';
import { CliError, EXIT_USAGE, confirm, out, withClient, type ConnOpts } from './common.js';
import { OpenVdi } from '../lib/vdi-io.js';
import { vidToDataOid } from '../lib/oid.js';
import { formatSize } from '../lib/units.js';

/** writes when -t is not given (the original's DEFAULT_TOTAL) */
const DEFAULT_TOTAL = 1000;

/** The original's work queue types, as writes kept in flight (its fixed queue runs -n threads). */
const QUEUE_DEPTH: Record<string, (threads: number) => number> = {
  ordered: () => 1,
  fixed: (n) => n,
  dynamic: () => 16,
  unlimited: () => 64,
};

export interface BenchmarkIoOpts extends ConnOpts {
  total?: number;
  threads?: number;
  workqueue?: string;
  force: boolean;
  raw?: boolean;
}

export async function benchmarkIo(name: string, o: BenchmarkIoOpts): Promise<void> {
  const wq = o.workqueue ?? 'ordered';
  const depthOf = QUEUE_DEPTH[wq];
  if (!depthOf) throw new CliError(`unknown workqueue type: ${wq}\nassumed workqueue types: ordered, dynamic, unlimited, fixed`, EXIT_USAGE);
  const depth = depthOf(o.threads ?? 1);
  const total = o.total ?? DEFAULT_TOTAL;
  if (!o.force && !(await confirm('Caution! benchmark io command will erase all data of target VDI.\n Are you sure you want to continue?'))) {
    throw new CliError('benchmark not confirmed; nothing written (use -f to skip the question)');
  }
  await withClient(o, async (c) => {
    let vid: number;
    try {
      vid = await c.getVdiInfo(name);
    } catch (e) {
      throw new CliError(`failed to lookup VDI ${name}: ${(e as Error).message}`);
    }
    const v = await OpenVdi.open(c, vid);
    // whole-object overwrites only: a hole would make each write a create (allocate with -P first)
    if (v.map.some((owner) => owner !== vid)) throw new CliError(`VDI ${name} has unallocated data (create it with -P, or write it whole first)`);
    const zeros = Buffer.alloc(v.objectSize);
    const lat: number[] = [];
    let next = 0;
    const t0 = process.hrtime.bigint();
    const worker = async () => {
      while (next < total) {
        const idx = next++ % v.map.length;
        const s = process.hrtime.bigint();
        await c.writeObj(vidToDataOid(vid, idx), 0, zeros);
        lat.push(Number(process.hrtime.bigint() - s) / 1e6);
      }
    };
    await Promise.all(Array.from({ length: Math.min(depth, total) }, worker));
    const secs = Number(process.hrtime.bigint() - t0) / 1e9;
    lat.sort((a, b) => a - b);
    const pct = (p: number) => (lat.length ? lat[Math.min(lat.length - 1, Math.floor((p / 100) * lat.length))] : 0);
    const bytes = total * v.objectSize;
    if (o.raw) {
      out(`${total} ${bytes} ${secs.toFixed(3)} ${(bytes / secs).toFixed(0)} ${pct(50).toFixed(2)} ${pct(99).toFixed(2)}\n`);
      return;
    }
    out(`${total} writes of ${formatSize(v.objectSize)} (${formatSize(bytes)}) in ${secs.toFixed(2)} s with ${depth} in flight: ` +
      `${formatSize(bytes / secs)}/s, ${(total / secs).toFixed(1)} writes/s, latency p50 ${pct(50).toFixed(1)} ms, p99 ${pct(99).toFixed(1)} ms\n`);
  });
}

type Conn = (cmd: Command, raw?: boolean) => Command;
type Act = <A extends unknown[]>(fn: (...a: A) => Promise<void>) => (...a: A) => Promise<void>;

export function registerBenchmark(program: Command, conn: Conn, act: Act): void {
  const bench = program.command('benchmark').description('measure the cluster');
  conn(bench.command('io').description('benchmark I/O performance: overwrite the objects of a fully allocated VDI in turn with whole-object writes (erases its data)')
    .argument('<vdiname>'), true)
    .option('-t, --total <n>', `number of writes (default ${DEFAULT_TOTAL})`, (x) => positive(x, 'total'))
    .option('-n, --nr-threads <n>', 'writes in flight with the fixed work queue', (x) => positive(x, 'nr-threads'))
    .option('-w, --workqueue <type>', 'ordered (one write at a time, the default), fixed (-n at a time), dynamic (16), unlimited (64)')
    .option('-f, --force', 'do not ask for confirmation', false)
    .action(act(async (name: string, o: Record<string, unknown> & ConnOpts) => benchmarkIo(name, {
      ...o, total: o.total as number | undefined, threads: o.nrThreads as number | undefined, workqueue: o.workqueue as string | undefined,
      force: Boolean(o.force), raw: Boolean(o.raw),
    })));
}

function positive(x: string, what: string): number {
  const n = Number(x);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError(`${what} must be a positive integer`);
  return n;
}
