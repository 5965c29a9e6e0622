// Open object files kept for reuse (the store's descriptor cache): small random I/O must not pay
// open+close each time, and a file replaced while it opens is never kept.

import fs from 'node:fs/promises';
import { constants as fsc } from 'node:fs';

interface CachedFd {
  fh: fs.FileHandle;
  refs: number;
  stale: boolean;
}

/** Keeps recently used object files open: small random I/O must not pay open+close each time. */
export class FdCache {
  private readonly fds = new Map<bigint, CachedFd>();
  /** opens in flight per object; a drop meanwhile marks them, as they may hold the replaced file */
  private readonly opening = new Map<bigint, Set<{ dropped: boolean }>>();
  constructor(private readonly limit: number) {}

  /** `file` names the object's file: a string, or a function asked only when the file must be opened */
  async use<T>(oid: bigint, file: string | (() => string), fn: (fh: fs.FileHandle) => Promise<T>): Promise<T> {
    let e = this.fds.get(oid);
    if (!e || e.stale) {
      for (;;) {
        // asked again after a replaced file: the object may have moved to another disk meanwhile
        const name = typeof file === 'string' ? file : file();
        const fh = await this.open(oid, name);
        if (!fh) continue; // the object was replaced while it opened: a write must reach the new file
        e = this.fds.get(oid);
        if (e && !e.stale) await fh.close(); // another caller opened it meanwhile
        else {
          e = { fh, refs: 0, stale: false };
          this.fds.set(oid, e);
          this.trim();
        }
        break;
      }
    } else {
      // refresh LRU position
      this.fds.delete(oid);
      this.fds.set(oid, e);
    }
    e.refs++;
    try {
      return await fn(e.fh);
    } finally {
      e.refs--;
      if (e.stale && e.refs === 0) await e.fh.close().catch(() => undefined);
    }
  }

  /** Opens the object's file; null when the object was replaced or removed during the open. */
  private async open(oid: bigint, file: string): Promise<fs.FileHandle | null> {
    const token = { dropped: false };
    let pending = this.opening.get(oid);
    if (!pending) this.opening.set(oid, (pending = new Set()));
    pending.add(token);
    let fh: fs.FileHandle;
    try {
      fh = await fs.open(file, fsc.O_RDWR);
    } finally {
      pending.delete(token);
      if (!pending.size) this.opening.delete(oid);
    }
    if (!token.dropped) return fh;
    await fh.close();
    return null;
  }

  /** Forgets the open file of an object that was replaced or removed. */
  async drop(oid: bigint): Promise<void> {
    for (const t of this.opening.get(oid) ?? []) t.dropped = true;
    const e = this.fds.get(oid);
    if (!e) return;
    this.fds.delete(oid);
    e.stale = true;
    if (e.refs === 0) await e.fh.close().catch(() => undefined);
  }

  private trim(): void {
    for (const [oid, e] of this.fds) {
      if (this.fds.size <= this.limit) break;
      if (e.refs > 0) continue;
      this.fds.delete(oid);
      e.stale = true;
      void e.fh.close().catch(() => undefined);
    }
  }

  async closeAll(): Promise<void> {
    for (const pending of this.opening.values()) for (const t of pending) t.dropped = true;
    const all = [...this.fds.values()];
    this.fds.clear();
    await Promise.all(all.map((e) => { e.stale = true; return e.refs === 0 ? e.fh.close().catch(() => undefined) : undefined; }));
  }
}
