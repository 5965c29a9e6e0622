// `npm run sim`: simulated clusters of 10, 100 and 1,000 sheep running the real membership, epoch
// and placement code in one process (test/sim/), and one table of what a membership change costs.
// SIM_SIZES=10,100 picks the sizes; SIM_OBJECTS the object count for the placement rows (10^6);
// SIM_RECORDINGS=DIR keeps the recordings of the members measured alone (solo.ts), to profile them.

import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { SimCluster, simMemberId, simNodeInfo } from '../sim/sim-cluster.js';
import { measureChange, memoryInUse, placementFigures, type ChangeCost, type Placement } from '../sim/measure.js';
import { SoloRecorder, measureAlone, type Recording } from '../sim/solo.js';

/** CPU ms of one member measured in a process of its own: a change's events and the ring update after it */
interface Alone {
  join: number;
  leave: number;
}

interface Figures {
  n: number;
  bootS: number;
  memPerNode: number;
  join: ChangeCost;
  leave: ChangeCost;
  joinStorm: ChangeCost;
  leaveStorm: ChangeCost;
  welcomeAfterStorms: number;
  /** one member measured in a process of its own: a typical member, the master (oldest), the joiner */
  alone: { member: Alone; master: Alone; joiner: number };
  /** the same over replays WARM_FROM.. of SOLO_ROUNDS in the same process (the JIT warm) */
  warm: { member: Alone; master: Alone; joiner: number };
  place: Placement;
  agree: string;
}

const STORM = 50;
/**
 * Joins and leaves after the measured ones, for the figures of one member alone (see runSize): the
 * first SOLO_WARM of each kind run code the JIT has not compiled yet (in one process the other
 * members warm it; a member alone needs ~5 changes: 42 ms, 17 ms, 9 ms, then ~2 ms at 100 nodes)
 */
const SOLO_PAIRS = 10;
const SOLO_WARM = 5;
/**
 * Replays of each recording in the child: the last runs its changes with code the earlier ones
 * warmed up, as a sheep that has been through that many changes before (a long-running sheep of a
 * large cluster sees a change whenever a machine fails or is added; the JIT keeps what it compiled).
 */
const SOLO_ROUNDS = 6;
/** The replays whose changes make the warm figures (medians over all their changes of a kind). */
const WARM_FROM = 3;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? (s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2) : 0;
}

async function runSize(n: number, objects: number): Promise<Figures> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), `sheep-sim-${n}-`));
  try {
    const mem0 = memoryInUse();
    const c = new SimCluster(dir);
    // record the master (the oldest), a typical member (the second) and the node that joins, to
    // measure each of them again in a process of its own (solo.ts)
    const seed = Array.from({ length: n }, (_, i) => simNodeInfo(i));
    const rec = (info: (typeof seed)[0], booted: boolean): Pick<Recording, 'memberId' | 'info' | 'config' | 'seed'> =>
      ({ memberId: simMemberId(info), info, config: booted ? c.config : null, seed: booted ? seed : [] });
    const solo = new SoloRecorder(c.bus, [rec(seed[0], true), rec(seed[1], true), rec(simNodeInfo(n), false)]);
    const t0 = performance.now();
    await c.boot(n);
    c.placement();
    solo.booted();
    const bootS = (performance.now() - t0) / 1000;
    const memPerNode = (memoryInUse() - mem0) / n;
    const join = await solo.change('join', () => measureChange(c, () => c.join(1)));
    const leave = await solo.change('leave', () => measureChange(c, () => c.leave(1)));
    // a member alone goes through SOLO_PAIRS more of each: the figure is the median after SOLO_WARM
    for (let i = 0; i < SOLO_PAIRS; i++) {
      await solo.change('join', () => c.join(1));
      await solo.change('leave', () => c.leave(1));
    }
    c.bus.tap = null;
    c.bus.fetchTap = null;
    // one child at a time: two children measuring at once on two cores would share them with the parent
    const runs: Array<Awaited<ReturnType<typeof measureAlone>>> = [];
    for (const r of solo.recs.values()) runs.push(await measureAlone(r, dir, SOLO_ROUNDS));
    type Round = (typeof runs)[0][0];
    const alone = (rounds: Round[], skip: number): Alone => {
      const of = (name: string) => median(rounds.flatMap((f) => f.changes.filter((x) => x.name === name).slice(skip).map((x) => x.cpuMs + x.ringMs)));
      return { join: of('join'), leave: of('leave') };
    };
    const first = (rounds: Round[]) => median(rounds.map((f) => f.changes[0].cpuMs + f.changes[0].ringMs));
    // the joiner is a new sheep: its one change is its first (cold, as for a real new sheep)
    const aloneFigures = { master: alone(runs[0].slice(0, 1), SOLO_WARM), member: alone(runs[1].slice(0, 1), SOLO_WARM), joiner: first(runs[2].slice(0, 1)) };
    const warm = (r: Round[]) => r.slice(WARM_FROM);
    const warmFigures = { master: alone(warm(runs[0]), 0), member: alone(warm(runs[1]), 0), joiner: first(warm(runs[2])) };
    solo.recs.clear();
    const joinStorm = await measureChange(c, () => c.join(STORM));
    const leaveStorm = await measureChange(c, () => c.leave(STORM));
    // a welcome after ~100 more epochs: it must not have grown with the history
    const again = await measureChange(c, () => c.join(1));
    const agree = c.disagreement() ?? 'yes';
    process.stderr.write(`sim: ${n} nodes done (${((performance.now() - t0) / 1000).toFixed(1)} s)\n`);
    return { n, bootS, memPerNode, join, leave, joinStorm, leaveStorm, welcomeAfterStorms: again.fetchedBytes, alone: aloneFigures, warm: warmFigures, place: placementFigures(n, objects), agree };
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
}

const kb = (b: number) => (b >= 1 << 20 ? `${(b / (1 << 20)).toFixed(1)} MiB` : `${(b / 1024).toFixed(1)} KiB`);
const ms = (x: number) => (x >= 1000 ? `${(x / 1000).toFixed(2)} s` : `${x.toFixed(x < 10 ? 2 : 0)} ms`);
const pct = (x: number) => `${(x * 100).toFixed(2)}%`;

/** One row per figure, one column per cluster size. */
function table(rows: Figures[]): string {
  const lines: Array<[string, (f: Figures) => string]> = [
    ['one join: messages / bytes sent', (f) => `${f.join.messages} / ${kb(f.join.bytesSent)}`],
    ['one join: bytes delivered (size x receivers)', (f) => kb(f.join.bytesDelivered)],
    ['one join: largest message', (f) => kb(f.join.largest)],
    ['one join: state the joiner fetches from the master', (f) => kb(f.join.fetchedBytes)],
    ['one join: CPU, all members (max one member)', (f) => `${ms(f.join.cpuSumMs)} (${ms(f.join.cpuMaxMs)})`],
    ['one join: ring update, all members (max)', (f) => `${ms(f.join.ringSumMs)} (${ms(f.join.ringMaxMs)})`],
    ['one join: one member alone, CPU + ring (master; joiner)', (f) => `${ms(f.alone.member.join)} (${ms(f.alone.master.join)}; ${ms(f.alone.joiner)})`],
    ['one join: all members, each alone (from the three)', (f) => ms(f.alone.master.join + f.alone.joiner + (f.n - 1) * f.alone.member.join)],
    [`one join: one member alone, warm (replays ${WARM_FROM + 1}-${SOLO_ROUNDS}) (master; joiner)`, (f) => `${ms(f.warm.member.join)} (${ms(f.warm.master.join)}; ${ms(f.warm.joiner)})`],
    ['one join: all members, each alone and warm', (f) => ms(f.warm.master.join + f.warm.joiner + (f.n - 1) * f.warm.member.join)],
    ['one leave: messages / bytes delivered', (f) => `${f.leave.messages} / ${kb(f.leave.bytesDelivered)}`],
    ['one leave: CPU, all members (max one member)', (f) => `${ms(f.leave.cpuSumMs)} (${ms(f.leave.cpuMaxMs)})`],
    ['one leave: ring update, all members (max)', (f) => `${ms(f.leave.ringSumMs)} (${ms(f.leave.ringMaxMs)})`],
    ['one leave: one member alone, CPU + ring (master)', (f) => `${ms(f.alone.member.leave)} (${ms(f.alone.master.leave)})`],
    ['one leave: all members, each alone (from the two)', (f) => ms(f.alone.master.leave + (f.n - 1) * f.alone.member.leave)],
    [`one leave: one member alone, warm (replays ${WARM_FROM + 1}-${SOLO_ROUNDS}) (master)`, (f) => `${ms(f.warm.member.leave)} (${ms(f.warm.master.leave)})`],
    ['one leave: all members, each alone and warm', (f) => ms(f.warm.master.leave + (f.n - 1) * f.warm.member.leave)],
    [`join storm (${STORM} at once): epochs / messages`, (f) => `${f.joinStorm.epochs} / ${f.joinStorm.messages}`],
    [`join storm: bytes delivered (+ states fetched)`, (f) => `${kb(f.joinStorm.bytesDelivered)} (+ ${kb(f.joinStorm.fetchedBytes)})`],
    [`join storm: CPU, all members (max one member)`, (f) => `${ms(f.joinStorm.cpuSumMs)} (${ms(f.joinStorm.cpuMaxMs)})`],
    [`join storm: ring update, all members`, (f) => ms(f.joinStorm.ringSumMs)],
    [`leave storm (${STORM} at once): epochs / messages`, (f) => `${f.leaveStorm.epochs} / ${f.leaveStorm.messages}`],
    [`leave storm: CPU, all members (max one member)`, (f) => `${ms(f.leaveStorm.cpuSumMs)} (${ms(f.leaveStorm.cpuMaxMs)})`],
    ['state a joiner fetches after the storms (history grew)', (f) => kb(f.welcomeAfterStorms)],
    ['cluster state per node (heap + rings, after GC)', (f) => kb(f.memPerNode)],
    ['all members agree (members, epoch, running)', (f) => f.agree],
    ['ring balance: max/mean copies per node', (f) => f.place.maxOverMean.toFixed(3)],
    ['one join: copies moved (x ideal 1/N)', (f) => `${pct(f.place.joinCopies)} (${(f.place.joinCopies / f.place.joinIdeal).toFixed(2)}x)`],
    ['one join: objects whose replica set changed', (f) => pct(f.place.joinObjects)],
    ['one join: objects whose first replica moved (x 1/N)', (f) => `${pct(f.place.joinPrimaries)} (${(f.place.joinPrimaries / f.place.joinIdeal).toFixed(2)}x)`],
    ['one leave: copies moved (x ideal 1/N)', (f) => `${pct(f.place.leaveCopies)} (${(f.place.leaveCopies / f.place.leaveIdeal).toFixed(2)}x)`],
    ['bring-up (full-restart path), wall', (f) => `${f.bootS.toFixed(1)} s`],
  ];
  const head = ['', ...rows.map((f) => `${f.n.toLocaleString('en')} nodes`)];
  const body = lines.map(([name, get]) => [name, ...rows.map(get)]);
  const widths = head.map((_, i) => Math.max(...[head, ...body].map((r) => r[i].length)));
  const fmt = (r: string[]) => `| ${r.map((c, i) => (i ? c.padStart(widths[i]) : c.padEnd(widths[i]))).join(' | ')} |`;
  return [fmt(head), `|${widths.map((w, i) => (i ? '-'.repeat(w + 1) + ':' : '-'.repeat(w + 2))).join('|')}|`, ...body.map(fmt)].join('\n');
}

async function main(): Promise<void> {
  const sizes = (process.env.SIM_SIZES ?? '10,100,1000').split(',').map(Number);
  const objects = Number(process.env.SIM_OBJECTS ?? 1_000_000);
  if (!(globalThis as { gc?: unknown }).gc) process.stderr.write('sim: run with --expose-gc for the memory row\n');
  const rows: Figures[] = [];
  for (const n of sizes) rows.push(await runSize(n, objects));
  process.stdout.write(`Simulated clusters (${os.cpus()[0]?.model ?? 'cpu'}, ${os.cpus().length} CPUs; 64 vnodes, 3 copies, ${objects.toLocaleString('en')} objects; CPU per change measured member by member)\n\n`);
  process.stdout.write(table(rows) + '\n');
}

main().then(() => process.exit(0), (e) => {
  process.stderr.write(`sim: ${(e as Error).stack ?? e}\n`);
  process.exit(1);
});
