// The store's cluster identity file DIR/config (DESIGN.md §5), written atomically.

import fs from 'node:fs/promises';
import path from 'node:path';

export const STORE_FORMAT_VERSION = 1;

export interface ClusterConfig {
  formatVersion: number;
  /** cluster creation time, ms since the epoch; identifies the cluster */
  ctime: number;
  copies: number;
  copyPolicy: number;
  blockSizeShift: number;
  /** VDI locks are enforced only on clusters formatted with --lock (as Sheepdog >= 0.9.2) */
  lock: boolean;
}

export async function readConfig(dir: string): Promise<ClusterConfig | null> {
  let text: string;
  try {
    text = await fs.readFile(path.join(dir, 'config'), 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw e;
  }
  const c = JSON.parse(text) as ClusterConfig;
  if (c.formatVersion !== STORE_FORMAT_VERSION) {
    throw new Error(`${dir}/config has store format version ${c.formatVersion}, this sheep understands ${STORE_FORMAT_VERSION}`);
  }
  return c;
}

export async function writeConfig(dir: string, c: ClusterConfig): Promise<void> {
  await writeFileDurable(path.join(dir, 'config'), JSON.stringify(c, null, 2) + '\n');
}

/** Write-to-temp, fsync, rename, fsync the directory: the file is either old or new after a crash. */
export async function writeFileDurable(file: string, content: string | Buffer): Promise<void> {
  const tmp = `${file}.tmp`;
  const fh = await fs.open(tmp, 'w');
  try {
    await fh.writeFile(content);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await fs.rename(tmp, file);
  const d = await fs.open(path.dirname(file), 'r');
  try {
    await d.sync();
  } finally {
    await d.close();
  }
}

