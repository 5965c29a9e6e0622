// One object directory of the store (a "disk" of the original's multi-disk mode): its obj/,
// obj/.stale and obj/.tmp (on one filesystem, so a finished copy is renamed into place), its own
// free-space reading and reserve, and its own state: in service, draining (being unplugged) or failed.

import fs from 'node:fs/promises';
import path from 'node:path';
import { Res, SdError } from '../../lib/proto.js';
import { oidHex, oidKind } from '../../lib/oid.js';
import { storeFileName } from '../../lib/erasure-layout.js';
import { formatSize } from '../../lib/units.js';
import type { Logger } from '../util/log.js';

/** How long a free-space reading is trusted (creates ask on every call). */
const SPACE_TTL_MS = 250;

/** The store's filesystem as `node info` and placement see it. */
export interface SpaceInfo {
  /** bytes of the filesystem usable by the store (objects + what is free) */
  size: number;
  /** bytes free for this user */
  avail: number;
  /** bytes kept free for deletes, metadata and recovery bookkeeping (--reserved-space) */
  reserve: number;
  /** free space is under the reserve: new objects and recovery copies are refused */
  full: boolean;
}

export class Disk {
  readonly objDir: string;
  readonly staleDir: string;
  readonly tmpDir: string;
  /** why the disk was taken out of service (an I/O error), or null while it works */
  failed: string | null = null;
  /** being unplugged: no new object goes here, and I/O to its objects takes the per-object move lock */
  draining = false;
  /** object operations running on this disk without the move lock (an unplug waits for them first) */
  private inflight = 0;
  private idleWaiters: Array<() => void> = [];
  /** created or removed names since the directory was last synced */
  dirDirty = false;
  /** bytes of the filesystem when the disk was opened: its weight on the disk ring */
  fsSize = 0;
  private reserve = 0;
  private spaceRead = { at: 0, avail: Number.POSITIVE_INFINITY, total: 0 };
  private wasFull = false;
  private spaceRefresh: Promise<unknown> | null = null;

  /** `root`: the disk's path; objects live in root/obj. `label` names it in logs (md mode). */
  private constructor(readonly root: string, private readonly log: Logger, private readonly label: string | null) {
    this.objDir = path.join(root, 'obj');
    this.staleDir = path.join(this.objDir, '.stale');
    this.tmpDir = path.join(this.objDir, '.tmp');
  }

  static async open(root: string, log: Logger, label: string | null): Promise<Disk> {
    const d = new Disk(root, log, label);
    await fs.mkdir(d.staleDir, { recursive: true });
    await fs.rm(d.tmpDir, { recursive: true, force: true }); // half-written objects of a crash
    await fs.mkdir(d.tmpDir, { recursive: true });
    const st = await fs.statfs(d.objDir);
    d.fsSize = st.blocks * st.bsize;
    return d;
  }

  objPath(oid: bigint): string {
    return path.join(this.objDir, storeFileName(oid));
  }

  stalePath(oid: bigint): string {
    return path.join(this.staleDir, storeFileName(oid));
  }

  /** Counts an operation that runs without the move lock. */
  enter(): void {
    this.inflight++;
  }

  leave(): void {
    if (--this.inflight === 0 && this.idleWaiters.length) {
      const w = this.idleWaiters;
      this.idleWaiters = [];
      for (const f of w) f();
    }
  }

  /** Resolves once no operation that started without the move lock is still running here. */
  idle(): Promise<void> {
    if (this.inflight === 0) return Promise.resolve();
    return new Promise((r) => this.idleWaiters.push(r));
  }

  setReserve(bytes: number): void {
    this.reserve = bytes;
    this.spaceRead.at = 0;
  }

  get reserved(): number {
    return this.reserve;
  }

  /**
   * Free bytes as last read (at most about SPACE_TTL_MS old): a stale reading starts an asynchronous
   * statfs, so the I/O path never blocks on it. A create that slips past a reading a moment old still
   * meets the filesystem's own ENOSPC (NO_SPACE).
   */
  availNow(): number {
    if (Date.now() - this.spaceRead.at > SPACE_TTL_MS && !this.spaceRefresh) {
      this.spaceRefresh = this.refreshSpace().catch(() => undefined).finally(() => { this.spaceRefresh = null; });
    }
    return this.spaceRead.avail;
  }

  /** Reads the filesystem's free space now; logs when the disk becomes full or has room again. */
  async refreshSpace(): Promise<SpaceInfo> {
    if (this.failed) return { size: 0, avail: 0, reserve: this.reserve, full: false };
    try {
      const st = await fs.statfs(this.objDir);
      this.spaceRead = { at: Date.now(), avail: st.bavail * st.bsize, total: st.blocks * st.bsize };
    } catch {
      this.spaceRead.at = Date.now(); // keep the last reading; a later call asks again
    }
    const { avail } = this.spaceRead;
    const full = avail < this.reserve;
    if (full !== this.wasFull) {
      this.wasFull = full;
      const fields = { avail, reserve: this.reserve, ...(this.label ? { disk: this.label } : {}) };
      const what = this.label ? 'disk' : 'store';
      if (full) this.log.warn(fields, `${what} is full (free space under the reserve): new objects and recovery copies are refused until space is freed`);
      else this.log.info(fields, `${what} has room again`);
    }
    return { size: this.spaceRead.total, avail, reserve: this.reserve, full };
  }

  /** Whether `bytes` more fit above the reserve. */
  hasRoom(bytes: number): boolean {
    return this.availNow() - bytes >= this.reserve;
  }

  /** Refuses a new object (or a recovery copy) of `bytes` that would eat into the reserve. */
  ensureRoom(bytes: number): void {
    const avail = this.availNow();
    if (avail - bytes >= this.reserve) return;
    const where = this.label ? `disk ${this.label}` : 'store';
    throw new SdError(Res.NO_SPACE, `${where} full: ${formatSize(Math.max(0, avail))} free, ${formatSize(this.reserve)} reserved (--reserved-space)`);
  }

  /**
   * Writes into existing objects may use half the reserve (a write into a hole allocates); the rest
   * stays for deletes and metadata. Inode (and attribute) writes are metadata: a delete writes its
   * inode, and must work on a full disk.
   */
  ensureWriteRoom(oid: bigint, bytes: number): void {
    const kind = oidKind(oid);
    if (kind === 'inode' || kind === 'attr') return;
    const avail = this.availNow();
    if (avail - bytes >= this.reserve / 2) return;
    const where = this.label ? `disk ${this.label}` : 'store';
    throw new SdError(Res.NO_SPACE, `${where} full: ${formatSize(Math.max(0, avail))} free, under half the ${formatSize(this.reserve)} reserve`);
  }
}
