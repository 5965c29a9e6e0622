// The epoch log: DIR/epoch/%08u, one file per membership version (time and node list). This sheep
// is the log's only writer. Every record lists every node, so the whole history is O(epochs x nodes):
// only the newest records stay in memory (what membership reads), the full history is read from the
// files when asked for (cluster info). Operations run one at a time, so a reader never sees the
// directory in the middle of being rewritten.

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

  private async readRecord(epoch: number): Promise<EpochRecord | null> {
    try {
      return JSON.parse(await fs.readFile(this.file(epoch), 'utf8')) as EpochRecord;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw e;
    }
  }

  private async loadRecent(): Promise<void> {
    const out: EpochRecord[] = [];
    for (const e of (await this.epochs()).slice(-MEMORY_TAIL)) {
      const r = await this.readRecord(e);
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
      await writeFileDurable(this.file(rec.epoch), JSON.stringify(rec) + '\n');
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
        for (const e of await this.epochs()) {
          const r = await this.readRecord(e);
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
      for (const e of await this.epochs()) {
        if (e < epoch) continue;
        const r = await this.readRecord(e);
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
