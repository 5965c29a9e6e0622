// The epoch log: DIR/epoch/%08u, one file per membership version (time and node list). This sheep
// is the log's only writer, so the records are also kept in memory: readers (cluster info, the
// state handed to joining nodes) never see a directory in the middle of being rewritten.

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

export class EpochLog {
  private readonly dir: string;
  /** oldest first */
  private records: EpochRecord[] = [];

  constructor(storeDir: string) {
    this.dir = path.join(storeDir, 'epoch');
  }

  async init(): Promise<void> {
    await fs.mkdir(this.dir, { recursive: true });
    const names = (await fs.readdir(this.dir)).filter((n) => /^\d{8}$/.test(n)).sort();
    const out: EpochRecord[] = [];
    for (const n of names) out.push(JSON.parse(await fs.readFile(path.join(this.dir, n), 'utf8')) as EpochRecord);
    this.records = out;
  }

  private file(epoch: number): string {
    return path.join(this.dir, String(epoch).padStart(8, '0'));
  }

  async append(rec: EpochRecord): Promise<void> {
    await writeFileDurable(this.file(rec.epoch), JSON.stringify(rec) + '\n');
    // a copy: the record must not change with the live node objects it was made from (a weight change)
    const kept: EpochRecord = { ...rec, nodes: rec.nodes.map((n) => ({ ...n })) };
    this.records = [...this.records.filter((r) => r.epoch !== rec.epoch), kept].sort((a, b) => a.epoch - b.epoch);
  }

  /** All records, oldest first. */
  async readAll(): Promise<EpochRecord[]> {
    return [...this.records];
  }

  async latest(): Promise<EpochRecord | null> {
    return this.records.length ? this.records[this.records.length - 1] : null;
  }

  /** Replaces the whole history (a format, or the cluster's history taken over at a join). */
  async replace(records: EpochRecord[]): Promise<void> {
    await fs.rm(this.dir, { recursive: true, force: true });
    await fs.mkdir(this.dir, { recursive: true });
    for (const r of records) await writeFileDurable(this.file(r.epoch), JSON.stringify(r) + '\n');
    this.records = [...records].sort((a, b) => a.epoch - b.epoch);
  }
}
