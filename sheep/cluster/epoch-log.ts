// The epoch log: DIR/epoch/%08u, one file per membership version (time and node list). This sheep
// is the log's only writer. A file holds either the whole node list or, mostly, what changed since an
// earlier record (nodes that left, joined, or changed weight): at 1,000 nodes every member writes a
// record on every change, and a full list made that O(N) per member, O(N^2) per change. Records stay
// whole in memory and on the wire; only the newest stay in memory (what membership reads), the full
// history is read from the files when asked for (cluster info). Stores written before deltas hold
// only whole records, which read as before. Operations run one at a time, so a reader never sees
// the directory in the middle of being rewritten.

import fs from 'node:fs/promises';
import path from 'node:path';
import { writeFileDurable } from '../store/config.js';
import type { NodeInfo } from '../../lib/node.js';

export interface EpochRecord {
  epoch: number;
  /** ms since the epoch */
  time: number;
  nodes: NodeInfo[];
}

/** Records kept in memory (the newest); older ones are read from their files. */
const MEMORY_TAIL = 4;

/**
 * A whole record at most every this many epochs, so that reading a record never follows more than
 * this many deltas. Each log starts counting at a random point: the members of a cluster then write
 * their whole records in different changes, not all N of them in the same one.
 */
const FULL_EVERY = 64;

/** A record as a file holds it: the whole node list, or the change since record `base`. */
type StoredRecord =
  | EpochRecord
  | { epoch: number; time: number; base: number; left: string[]; changed: NodeInfo[]; joined: NodeInfo[] };

type Delta = { left: string[]; changed: NodeInfo[]; joined: NodeInfo[] };

function sameNode(a: NodeInfo, b: NodeInfo): boolean {
  return a === b || (a.nid === b.nid && a.host === b.host && a.port === b.port && a.zone === b.zone && a.vnodes === b.vnodes);
}

/** `prev` with the nodes of `left` removed, those of `changed` replaced in place and `joined` appended. */
function applyDelta(prev: readonly NodeInfo[], d: Delta): NodeInfo[] {
  const left = new Set(d.left);
  const changed = new Map(d.changed.map((n) => [n.nid, n]));
  const out: NodeInfo[] = [];
  for (const n of prev) if (!left.has(n.nid)) out.push(changed.get(n.nid) ?? n);
  for (const n of d.joined) out.push(n);
  return out;
}

/**
 * `next` as a change of `prev` (membership removes nodes, replaces a node's info in place on a
 * weight change and appends joiners), or null when that does not describe it or is not smaller.
 * One pass comparing object identities first: O(N) steps of a pointer compare, no per-node work.
 * Both lists hold each nid once (membership refuses a second node with a member's address): then
 * the kept nodes match `next`'s head in order and the joiners are its tail, so applyDelta gives
 * `next` back by construction, without a second pass to check it on every change.
 */
export function diffNodes(prev: readonly NodeInfo[], next: readonly NodeInfo[]): Delta | null {
  const d: Delta = { left: [], changed: [], joined: [] };
  let j = 0;
  for (let i = 0; i < prev.length; i++) {
    const p = prev[i], n = next[j];
    if (p === n) j++;
    else if (n && p.nid === n.nid) {
      if (!sameNode(p, n)) d.changed.push(n);
      j++;
    } else d.left.push(p.nid);
  }
  for (; j < next.length; j++) d.joined.push(next[j]);
  if ((d.left.length + d.changed.length + d.joined.length) * 2 >= next.length) return null;
  return d;
}

/** Two records of the same epoch name the same nodes with the same weights (times differ per node). */
export function sameRecord(a: EpochRecord, b: EpochRecord): boolean {
  return a.epoch === b.epoch && a.nodes.length === b.nodes.length &&
    a.nodes.every((n, i) => n.nid === b.nodes[i].nid && n.vnodes === b.nodes[i].vnodes);
}

export class EpochLog {
  private readonly dir: string;
  /** the newest records, oldest first */
  private recent: EpochRecord[] = [];
  /** one operation at a time (a rewrite must not interleave with a read) */
  private queue: Promise<unknown> = Promise.resolve();
  /** deltas written since the last whole record (starts at random: see FULL_EVERY) */
  private sinceFull = Math.floor(Math.random() * FULL_EVERY);

  constructor(storeDir: string) {
    this.dir = path.join(storeDir, 'epoch');
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn);
    this.queue = run.catch(() => undefined);
    return run;
  }

  private file(epoch: number): string {
    return path.join(this.dir, String(epoch).padStart(8, '0'));
  }

  private async epochs(): Promise<number[]> {
    return (await fs.readdir(this.dir)).filter((n) => /^\d{8}$/.test(n)).map(Number).sort((a, b) => a - b);
  }

  private async readStored(epoch: number): Promise<StoredRecord | null> {
    try {
      return JSON.parse(await fs.readFile(this.file(epoch), 'utf8')) as StoredRecord;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw e;
    }
  }

  /**
   * The whole record of `epoch`, following deltas back to a whole record (`known`: records already
   * read, by epoch; filled on the way). null when the file, or one it builds on, is missing.
   */
  private async readRecord(epoch: number, known = new Map<number, EpochRecord>()): Promise<EpochRecord | null> {
    const chain: Array<Extract<StoredRecord, { base: number }>> = [];
    let rec: EpochRecord | null = null;
    for (let e = epoch; ;) {
      const k = known.get(e) ?? this.recent.find((r) => r.epoch === e);
      if (k) { rec = k; break; }
      const s = await this.readStored(e);
      if (!s) return null;
      if (!('base' in s)) { rec = s; break; }
      if (!(s.base < e) || chain.length > 100_000) return null;
      chain.push(s);
      e = s.base;
    }
    for (let i = chain.length - 1; i >= 0; i--) {
      const s = chain[i];
      rec = { epoch: s.epoch, time: s.time, nodes: applyDelta(rec.nodes, s) };
      known.set(rec.epoch, rec);
    }
    return rec;
  }

  /** What the file of `rec` holds: a delta against the newest earlier record we hold, or the whole. */
  private stored(rec: EpochRecord): StoredRecord {
    let base: EpochRecord | undefined;
    for (const r of this.recent) if (r.epoch < rec.epoch) base = r;
    const d = base && this.sinceFull < FULL_EVERY ? diffNodes(base.nodes, rec.nodes) : null;
    if (!base || !d) {
      this.sinceFull = 0;
      return rec;
    }
    this.sinceFull++;
    return { epoch: rec.epoch, time: rec.time, base: base.epoch, ...d };
  }

  private async loadRecent(): Promise<void> {
    const out: EpochRecord[] = [];
    const known = new Map<number, EpochRecord>();
    this.recent = [];
    for (const e of (await this.epochs()).slice(-MEMORY_TAIL)) {
      const r = await this.readRecord(e, known);
      if (r) out.push(r);
    }
    this.recent = out;
  }

  init(): Promise<void> {
    return this.serial(async () => {
      await fs.mkdir(this.dir, { recursive: true });
      await this.loadRecent();
    });
  }

  append(rec: EpochRecord): Promise<void> {
    return this.serial(async () => {
      await writeFileDurable(this.file(rec.epoch), JSON.stringify(this.stored(rec)) + '\n');
      // the caller gives records whose node objects never change (membership.ts newEpoch)
      this.recent = [...this.recent.filter((r) => r.epoch !== rec.epoch), rec].sort((a, b) => a.epoch - b.epoch).slice(-MEMORY_TAIL);
    });
  }

  /**
   * All records, oldest first (read from the files: cluster info asks, rarely). On a failed disk the
   * node still answers, with the records it has in memory.
   */
  readAll(): Promise<EpochRecord[]> {
    return this.serial(async () => {
      try {
        const out: EpochRecord[] = [];
        const known = new Map<number, EpochRecord>();
        for (const e of await this.epochs()) {
          const r = await this.readRecord(e, known);
          if (r) out.push(r);
        }
        return out;
      } catch {
        return [...this.recent];
      }
    });
  }

  async latest(): Promise<EpochRecord | null> {
    return this.recent.length ? this.recent[this.recent.length - 1] : null;
  }

  /**
   * What a node that has the history up to `epoch` needs to go on: our record of that epoch (so it
   * can check its history is ours) and the latest record. A join does not ship the whole history:
   * every record lists every node.
   */
  forNodeAt(epoch: number): Promise<EpochRecord[]> {
    return this.serial(async () => {
      const last = this.recent[this.recent.length - 1];
      if (!last) return [];
      const own = epoch > 0 && epoch < last.epoch ? (this.recent.find((r) => r.epoch === epoch) ?? await this.readRecord(epoch)) : null;
      return own ? [own, last] : [last];
    });
  }

  /** The records from `epoch` on (a resume hands them to every member: each lacks some of them). */
  since(epoch: number): Promise<EpochRecord[]> {
    return this.serial(async () => {
      const out: EpochRecord[] = [];
      const known = new Map<number, EpochRecord>();
      for (const e of await this.epochs()) {
        if (e < epoch) continue;
        const r = await this.readRecord(e, known);
        if (r) out.push(r);
      }
      return out;
    });
  }

  /** Replaces the whole history (a format). */
  replace(records: EpochRecord[]): Promise<void> {
    return this.serial(async () => {
      await fs.rm(this.dir, { recursive: true, force: true });
      await fs.mkdir(this.dir, { recursive: true });
      for (const r of records) await writeFileDurable(this.file(r.epoch), JSON.stringify(r) + '\n');
      this.recent = [...records].sort((a, b) => a.epoch - b.epoch).slice(-MEMORY_TAIL);
    });
  }

  /**
   * Takes over the cluster's history from `records` on (oldest first, contiguous or not): our older
   * records stay when our record of records[0]'s epoch is the same (our history is the cluster's
   * up to there); otherwise they are another history (a fork) and go. Records the cluster skipped
   * are missing here, as for a node that was away.
   */
  adopt(records: EpochRecord[]): Promise<void> {
    if (!records.length) return this.replace([]);
    return this.serial(async () => {
      const tail = [...records].sort((a, b) => a.epoch - b.epoch);
      const first = tail[0];
      const ours = await this.readRecord(first.epoch);
      const keepOlder = ours !== null && sameRecord(ours, first);
      await fs.mkdir(this.dir, { recursive: true });
      for (const e of await this.epochs()) {
        if (!keepOlder || e >= first.epoch) await fs.rm(this.file(e), { force: true });
      }
      for (const r of tail) await writeFileDurable(this.file(r.epoch), JSON.stringify(r) + '\n');
      await this.loadRecent();
    });
  }
}
