// An in-process group for simulated clusters: one bus orders every membership change and message
// for all its members (CPG semantics: one total order, the sender included), and counts what a
// real group would carry. Test code only: sheep never run it (it is no `-c` driver).

import type { GroupDriver, GroupEvents } from '../../sheep/cluster/driver.js';

/** What the bus carried: messages multicast, their bytes, and bytes delivered (size x receivers). */
export interface BusCounters {
  mcasts: number;
  bytesSent: number;
  bytesDelivered: number;
  confchgs: number;
  /** the largest message multicast */
  largest: number;
  /** joiners' state fetched from the master point to point (GET_SNAPSHOT): bytes, and how many */
  fetchedBytes: number;
  fetches: number;
  /** bytes of the last welcome-sized message by kind: filled by the caller's classifier */
  byKind: Map<string, { count: number; bytes: number }>;
}

export type BusEvent =
  | { t: 'confchg'; joined: string[]; left: string[] }
  | { t: 'deliver'; from: string; msg: Buffer };

/**
 * How events reach the members. `all`: each event is handed to every member at once (members work
 * concurrently). `each`: member by member, waiting until one has applied it (SimGroup.applied)
 * before the next gets it, so the CPU each member spends can be told apart (`onApplied`).
 */
export type DeliveryMode = 'all' | 'each';

export function newCounters(): BusCounters {
  return { mcasts: 0, bytesSent: 0, bytesDelivered: 0, confchgs: 0, largest: 0, fetchedBytes: 0, fetches: 0, byKind: new Map() };
}

export class SimBus {
  /** group members, oldest first */
  private members: SimGroup[] = [];
  private readonly queue: BusEvent[] = [];
  private draining: Promise<void> | null = null;
  counters = newCounters();
  mode: DeliveryMode = 'all';
  /** names a message for the per-kind counters (the bus itself does not read messages) */
  kindOf: (msg: Buffer) => string = () => 'msg';
  /** `each` mode: CPU microseconds a member spent applying one event */
  onApplied: (member: string, cpuMicros: number) => void = () => undefined;
  /** sees every event handed to a member, with the group's members then (solo.ts records one member's) */
  tap: ((member: string, ev: BusEvent, members: string[]) => void) | null = null;
  /** sees every state a joiner fetched from its master (solo.ts records the joiner's) */
  fetchTap: ((member: string, bytes: Uint8Array) => void) | null = null;

  /** Counts a state fetched point to point by joiner `member` (it travels outside the group). */
  fetched(member: string, bytes: Uint8Array): void {
    this.counters.fetches++;
    this.counters.fetchedBytes += bytes.length;
    this.fetchTap?.(member, bytes);
  }

  /** Joins members in one configuration change (a storm when there are many). */
  join(groups: SimGroup[]): void {
    this.members.push(...groups);
    this.push({ t: 'confchg', joined: groups.map((g) => g.id), left: [] });
  }

  /** Takes members out in one configuration change (they crashed or their links failed). */
  leave(ids: string[]): void {
    const gone = new Set(ids);
    for (const g of this.members) if (gone.has(g.id)) g.detached = true;
    this.members = this.members.filter((g) => !gone.has(g.id));
    this.push({ t: 'confchg', joined: [], left: ids });
  }

  mcast(from: SimGroup, msg: Buffer): void {
    if (from.detached) throw new Error('not a group member');
    this.counters.mcasts++;
    this.counters.bytesSent += msg.length;
    this.counters.largest = Math.max(this.counters.largest, msg.length);
    const kind = this.kindOf(msg);
    const k = this.counters.byKind.get(kind) ?? { count: 0, bytes: 0 };
    k.count++;
    k.bytes += msg.length;
    this.counters.byKind.set(kind, k);
    this.push({ t: 'deliver', from: from.id, msg });
  }

  private push(ev: BusEvent): void {
    this.queue.push(ev);
    this.pump();
  }

  private pump(): void {
    if (this.draining) return;
    this.draining = (async () => {
      try {
        await this.drain();
      } finally {
        this.draining = null;
        // events pushed after the drain's last look but before it ended
        if (this.queue.length) this.pump();
      }
    })();
  }

  /** events handed out so far (settle checks that none came while it waited) */
  private delivered = 0;

  /** Resolves when no event is queued and every member has applied what it was given. */
  async settle(): Promise<void> {
    for (;;) {
      while (this.draining) await this.draining;
      const seen = this.delivered;
      await Promise.all(this.members.map((g) => g.applied()));
      await quiet();
      // an event a member sent meanwhile may have been handed out and not applied yet
      if (!this.queue.length && !this.draining && this.delivered === seen) return;
    }
  }

  private async drain(): Promise<void> {
    await Promise.resolve();
    while (this.queue.length) {
      const ev = this.queue.shift()!;
      this.delivered++;
      // the members at the time of the event receive it (total order: the same sequence everywhere)
      const to = [...this.members];
      const ids = to.map((g) => g.id);
      if (ev.t === 'confchg') this.counters.confchgs++;
      else this.counters.bytesDelivered += ev.msg.length * to.length;
      for (const g of to) {
        this.tap?.(g.id, ev, ids);
        const start = this.mode === 'each' ? process.cpuUsage() : null;
        if (ev.t === 'confchg') g.events?.confchg(ids, ev.joined, ev.left);
        else g.events?.deliver(ev.from, ev.msg);
        if (start) {
          await g.applied();
          const d = process.cpuUsage(start);
          this.onApplied(g.id, d.user + d.system);
        }
      }
    }
  }
}

/**
 * Resolves once the process has nothing in flight: no file system request pending across a few
 * turns of the event loop (a member applying an event awaits only its files; timers are not work).
 */
export async function quiet(): Promise<void> {
  let calm = 0;
  while (calm < 2) {
    await new Promise<void>((r) => setImmediate(r));
    const busy = process.getActiveResourcesInfo().some((r) => r.startsWith('FSReq') || r === 'FileHandle' || r === 'FileHandleCloseReq');
    calm = busy ? 0 : calm + 1;
  }
}

/** One member's view of the bus, as the GroupDriver the real membership code talks to. */
export class SimGroup implements GroupDriver {
  readonly name = 'sim';
  readonly canPartition = false;
  events: GroupEvents | null = null;
  detached = false;
  id = '';
  onLost: (why: string) => void = () => undefined;
  /** set by the harness: resolves once the member applied every event it was given */
  applied: () => Promise<void> = async () => undefined;

  constructor(private readonly bus: SimBus, id: string) {
    this.id = id;
  }

  async init(): Promise<string> {
    return this.id;
  }

  /** Only records the handlers: the harness decides when the member enters the group (bus.join). */
  async start(events: GroupEvents): Promise<void> {
    this.events = events;
  }

  async mcast(msg: Buffer): Promise<void> {
    this.bus.mcast(this, msg);
  }

  async stop(): Promise<void> {
    this.detached = true;
  }
}
