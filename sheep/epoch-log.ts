// The epoch log: DIR/epoch/%08u, one file per membership version (time and node list).

import fs from 'node:fs/promises';
import path from 'node:path';
import { writeFileDurable } from './config.js';
import type { NodeInfo } from './cluster/driver.js';

export interface EpochRecord {
  epoch: number;
  /** ms since the epoch */
  time: number;
  nodes: NodeInfo[];
}

export class EpochLog {
  private readonly dir: string;

  constructor(storeDir: string) {
    this.dir = path.join(storeDir, 'epoch');
  }

  async init(): Promise<void> {
    await fs.mkdir(this.dir, { recursive: true });
  }

  private file(epoch: number): string {
    return path.join(this.dir, String(epoch).padStart(8, '0'));
  }

  async append(rec: EpochRecord): Promise<void> {
    await writeFileDurable(this.file(rec.epoch), JSON.stringify(rec) + '\n');
  }

  /** All records, oldest first. */
  async readAll(): Promise<EpochRecord[]> {
    const names = (await fs.readdir(this.dir)).filter((n) => /^\d{8}$/.test(n)).sort();
    const out: EpochRecord[] = [];
    for (const n of names) out.push(JSON.parse(await fs.readFile(path.join(this.dir, n), 'utf8')) as EpochRecord);
    return out;
  }

  async latest(): Promise<EpochRecord | null> {
    const all = await this.readAll();
    return all.length ? all[all.length - 1] : null;
  }

  async clear(): Promise<void> {
    await fs.rm(this.dir, { recursive: true, force: true });
    await fs.mkdir(this.dir, { recursive: true });
  }
}
