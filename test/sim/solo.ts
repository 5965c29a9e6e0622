// One simulated member measured in a process of its own. In the simulation every member shares one
// heap with the other N-1 (at 1,000 nodes, GBs), so each member's figure also pays for collecting
// theirs; a real sheep's heap holds only itself. Here the bus records every event it hands one
// member (in order, with the group's members at the time), and a child process (solo-run.ts)
// replays them into a fresh System of that node, built as the simulation builds it, and measures
// the same changes. Its own messages are not sent: the recording has them where the group
// delivered them.

import { spawn } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { pack } from 'msgpackr';
import type { NodeInfo } from '../../lib/node.js';
import type { ClusterConfig } from '../../sheep/store/config.js';
import type { SimBus } from './sim-group.js';

/** An event as a member received it: a configuration change (with the members) or a message. */
export type RecordedEvent =
  | { t: 'confchg'; members: string[]; joined: string[]; left: string[] }
  | { t: 'deliver'; from: string; msg: Buffer };

/** What the child needs: the node, its store at the start, its events and which of them to measure. */
export interface Recording {
  memberId: string;
  info: NodeInfo;
  /** the store it started from: formatted at epoch 1 with `seed` (a booted node), or empty */
  config: ClusterConfig | null;
  seed: NodeInfo[];
  events: RecordedEvent[];
  /** the states it fetched from its master when welcomed, in order (a joiner's) */
  fetched: Uint8Array[];
  /** events [from, to) of each measured change; the ring is brought up to date after `boot` and each change */
  boot: number;
  changes: Array<{ name: string; from: number; to: number }>;
}

export interface SoloFigures {
  /** CPU ms of applying the change's events, and of bringing the ring up to date after it */
  changes: Array<{ name: string; cpuMs: number; ringMs: number }>;
  /** where the replayed member ended: its epoch and members (the simulation's, if it did the same work) */
  epoch: number;
  members: string[];
}

/** Records what the bus hands some members, from their first event on. */
export class SoloRecorder {
  readonly recs = new Map<string, Recording>();

  /** `members`: whom to record, with the store each starts from (see Recording) */
  constructor(bus: SimBus, members: Array<Pick<Recording, 'memberId' | 'info' | 'config' | 'seed'>>) {
    for (const m of members) this.recs.set(m.memberId, { ...m, events: [], fetched: [], boot: 0, changes: [] });
    bus.fetchTap = (m, bytes) => { this.recs.get(m)?.fetched.push(bytes); };
    bus.tap = (m, ev, group) => {
      this.recs.get(m)?.events.push(ev.t === 'confchg' ? { t: 'confchg', members: group, joined: ev.joined, left: ev.left } : ev);
    };
  }

  /** The events so far bring the members up (their rings are brought up to date after them). */
  booted(): void {
    for (const r of this.recs.values()) r.boot = r.events.length;
  }

  /** Runs `change`, remembering which events belong to it. */
  async change<T>(name: string, fn: () => Promise<T>): Promise<T> {
    const from = new Map([...this.recs].map(([id, r]) => [id, r.events.length]));
    const out = await fn();
    for (const [id, r] of this.recs) r.changes.push({ name, from: from.get(id)!, to: r.events.length });
    return out;
  }
}

/**
 * Replays a recording `rounds` times in a child process (node --expose-gc, like the simulation), each
 * into a fresh System, and returns each round's figures: the first runs cold, the later ones with the
 * JIT warmed by the earlier rounds (solo-run.ts).
 */
export async function measureAlone(rec: Recording, dir: string, rounds = 1): Promise<SoloFigures[]> {
  const file = path.join(dir, `solo-${rec.info.zone}.rec`);
  await fs.writeFile(file, pack(rec));
  const script = fileURLToPath(new URL('./solo-run.js', import.meta.url));
  try {
    const out = await new Promise<string>((resolve, reject) => {
      const child = spawn(process.execPath, ['--expose-gc', script, file, path.join(dir, `solo-${rec.info.zone}`), String(rounds)], { stdio: ['ignore', 'pipe', 'inherit'] });
      let text = '';
      child.stdout.on('data', (d: Buffer) => { text += d.toString(); });
      child.on('error', reject);
      child.on('exit', (code) => (code === 0 ? resolve(text) : reject(new Error(`solo member replay exited with ${code}`))));
    });
    return JSON.parse(out) as SoloFigures[];
  } finally {
    // SIM_RECORDINGS=DIR keeps each recording, to replay (and profile) one member again:
    // [SOLO_CPU_PROFILE=OUT] node dist/test/sim/solo-run.js FILE STOREDIR [ROUNDS]
    const keep = process.env.SIM_RECORDINGS;
    if (keep) await fs.mkdir(keep, { recursive: true }).then(() => fs.copyFile(file, path.join(keep, path.basename(file))));
    await fs.rm(file, { force: true });
  }
}
