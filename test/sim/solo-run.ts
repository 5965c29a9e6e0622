// The child of measureAlone (solo.ts): one simulated member in a process of its own, fed the events
// it received in the simulation, one at a time as the bus hands them (each applied before the next),
// printing the CPU of each measured change as JSON. Arguments: the recording, the store directory,
// and how many times to replay it (default 1): each replay goes to a fresh System (its own store)
// in the same process, so the later ones run with the JIT warmed by the earlier ones, as a sheep
// that has been through as many changes before; every replay's figures are printed.
// SOLO_CPU_PROFILE=FILE writes a CPU profile (.cpuprofile, 50 µs samples) of the last replay's
// measured changes only.

import fs from 'node:fs/promises';
import { Session } from 'node:inspector/promises';
import pino from 'pino';
import { unpack } from 'msgpackr';
import type { GroupDriver, GroupEvents } from '../../sheep/cluster/driver.js';
import { simStore, simSystem } from './sim-cluster.js';
import { quiet } from './sim-group.js';
import type { Recording, SoloFigures } from './solo.js';

/** The member's group: events come from the recording; what it sends is already in there. */
class ReplayGroup implements GroupDriver {
  readonly name = 'sim';
  readonly canPartition = false;
  events: GroupEvents | null = null;
  onLost: (why: string) => void = () => undefined;
  constructor(private readonly id: string) {}
  async init(): Promise<string> { return this.id; }
  async start(events: GroupEvents): Promise<void> { this.events = events; }
  async mcast(): Promise<void> { /* delivered from the recording, in the group's order */ }
  async stop(): Promise<void> { /* nothing to leave */ }
}

const cpuMs = (since: NodeJS.CpuUsage): number => {
  const d = process.cpuUsage(since);
  return (d.user + d.system) / 1000;
};

/** One replay of `rec` into a fresh System stored in `dir`. */
async function replay(rec: Recording, dir: string, profileTo?: string): Promise<SoloFigures> {
  await simStore(dir, rec.config, rec.seed);
  // as in the simulation: an info-level logger writing to /dev/null
  const log = pino({ level: 'info' }, pino.destination({ dest: '/dev/null', sync: false, minLength: 8192 }));
  const group = new ReplayGroup(rec.memberId);
  const sys = simSystem(dir, rec.info, group, log);
  // the states it fetched from its master in the simulation, handed out in the same order
  let fetches = 0;
  sys.fetchSnapshot = async () => {
    const bytes = rec.fetched[fetches++];
    if (!bytes) throw new Error('the recording has no more fetched states');
    return bytes;
  };
  sys.start().catch(() => undefined);
  while (!group.events) await quiet();
  const ev = group.events;
  const deliver = async (i: number): Promise<void> => {
    const e = rec.events[i];
    if (e.t === 'confchg') ev.confchg(e.members, e.joined, e.left);
    else ev.deliver(e.from, e.msg);
    await sys.clusterEventsApplied();
  };
  for (let i = 0; i < rec.boot; i++) await deliver(i);
  await quiet();
  sys.gateway.targets(1n);
  const out: SoloFigures = { changes: [], epoch: 0, members: [] };
  const inspector = profileTo ? new Session() : null;
  if (inspector) {
    inspector.connect();
    await inspector.post('Profiler.enable');
    await inspector.post('Profiler.setSamplingInterval', { interval: 50 });
    await inspector.post('Profiler.start');
  }
  let next = rec.boot;
  for (const c of rec.changes) {
    for (; next < c.from; next++) await deliver(next);
    const t = process.cpuUsage();
    for (; next < c.to; next++) await deliver(next);
    const cpu = cpuMs(t);
    const r = process.cpuUsage();
    sys.gateway.targets(1n);
    out.changes.push({ name: c.name, cpuMs: cpu, ringMs: cpuMs(r) });
    await quiet();
  }
  if (inspector) {
    const { profile } = await inspector.post('Profiler.stop');
    await fs.writeFile(profileTo!, JSON.stringify(profile));
    inspector.disconnect();
  }
  out.epoch = sys.epoch;
  out.members = sys.members.map((n) => n.nid);
  await fs.rm(dir, { recursive: true, force: true });
  return out;
}

async function main(): Promise<void> {
  const [file, dir, times] = process.argv.slice(2);
  const rec = unpack(await fs.readFile(file)) as Recording;
  // messages as the Buffers the bus carried (before anything is measured)
  for (const e of rec.events) if (e.t === 'deliver' && !Buffer.isBuffer(e.msg)) e.msg = Buffer.from((e.msg as Uint8Array).buffer, (e.msg as Uint8Array).byteOffset, (e.msg as Uint8Array).length);
  const rounds = Math.max(1, Number(times ?? 1));
  const out: SoloFigures[] = [];
  for (let i = 0; i < rounds; i++) out.push(await replay(rec, `${dir}-${i}`, i === rounds - 1 ? process.env.SOLO_CPU_PROFILE : undefined));
  // a pipe is written asynchronously: exit only once the figures are out (at 1,000 nodes they are
  // past the pipe's 64 KiB)
  await new Promise<void>((resolve, reject) => process.stdout.write(JSON.stringify(out) + '\n', (e) => (e ? reject(e) : resolve())));
}

main().then(() => process.exit(0), (e) => {
  process.stderr.write(`solo-run: ${(e as Error).stack ?? e}\n`);
  process.exit(1);
});
