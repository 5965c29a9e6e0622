// The local object store (DESIGN.md §5): one sparse file per object, positional I/O, the epoch of
// each object's last write in the xattr user.sheepdog.epoch.
//
// Objects live on one or more disks (disk.ts). With DIR alone the one disk is DIR itself (DIR/obj),
// and the filesystem says where an object is. With disks given (sheep DIR,DISK1,DISK2,..., the
// original's multi-disk mode) DIR keeps the metadata only, and an in-memory index (oid -> disk),
// built by listing every disk at start, says where each object is: lookups never touch the
// filesystem. New objects go to the disk a per-node consistent-hash ring of the disks picks
// (weighted by size); an object stays where it is until its disk is unplugged (then it is moved) or
// fails (then the node recovers it from other nodes onto its other disks).

import fs from 'node:fs/promises';
import fsCb, { constants as fsc } from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';
// fs-xattr's synchronous calls: its asynchronous ones leak their async work (~400 bytes and a handle per
// call) and do not keep the value buffer alive while a worker thread writes it. A sync get or set is
// 4-9 us on a cached inode (measured), cheaper than the thread-pool round trip the async one costs.
import { getAttributeSync, setAttributeSync } from 'fs-xattr';
import { Res, SdError } from '../../lib/proto.js';
import { oidHex, oidToVid, parseOidHex } from '../../lib/oid.js';
import { parseStoreFileName } from '../../lib/erasure-layout.js';
import { Ring } from '../../lib/ring.js';
import { formatSize } from '../../lib/units.js';
import type { MdDiskInfo } from '../../lib/admin.js';
import type { Logger } from '../util/log.js';
import { KeyedMutex } from '../util/mutex.js';
import { FdCache } from './fd-cache.js';
import { writeFileDurable } from './config.js';
import { Disk, type SpaceInfo } from './disk.js';

export type { SpaceInfo } from './disk.js';

export const XATTR_EPOCH = 'user.sheepdog.epoch';

/** Maps a failed fs call to the protocol result a client should see. */
export function fsErrorResult(e: unknown): SdError {
  if (e instanceof SdError) return e;
  const code = (e as NodeJS.ErrnoException)?.code;
  if (code === 'ENOENT') return new SdError(Res.NO_OBJ);
  if (code === 'ENOSPC' || code === 'EDQUOT') return new SdError(Res.NO_SPACE);
  return new SdError(Res.EIO, `I/O error: ${(e as Error)?.message ?? String(e)}`);
}

/** errno codes that mean the disk itself failed (not a missing object or a full disk). */
const DISK_FAILURE = new Set(['EIO', 'EROFS', 'EUCLEAN', 'ENODEV', 'ENXIO']);

/** DIR/disks: the disk list of a multi-disk sheep as last plugged and unplugged. */
const DISK_LIST_FILE = 'disks';
/** The largest disk's points on the disk ring; smaller disks get points in proportion to their size. */
const DISK_RING_POINTS = 256;
/** --reserved-space when not given: 256M, or a tenth of a smaller filesystem (per disk). */
const DEFAULT_RESERVE = 256 * 1024 * 1024;

/** A disk as a point owner on the disk ring. */
interface DiskNode {
  nid: string;
  host: string;
  port: number;
  zone: number;
  vnodes: number;
  disk: Disk;
}

/** Which side of a copy between two disks failed: the disk that gave the error is the one to take out. */
class CopyError extends Error {
  constructor(override readonly cause: unknown, readonly side: 'source' | 'target') {
    super((cause as Error)?.message ?? String(cause));
  }
}

export class ObjectStore {
  /** the disks in service order (md: as given, then as plugged); without md, DIR itself */
  private disksList: Disk[];
  /** md only: where each object in service is, and each set-aside copy */
  private readonly index: Map<bigint, Disk> | null;
  private readonly staleIndex: Map<bigint, Disk> | null;
  private ring: Ring<DiskNode> | null = null;
  private readonly fds = new FdCache(512);
  /** Objects written since their last fdatasync, grouped by owning vid; FLUSH_VDI drains them. */
  private readonly dirty = new Map<number, Set<bigint>>();
  /** Epoch last recorded in each object's xattr, so writes in the same epoch skip the setxattr. */
  private readonly lastEpoch = new Map<bigint, number>();
  /** creates and orphan removals of one object exclude each other (a removal checks the age first) */
  private readonly createLocks = new KeyedMutex<bigint>();
  /** I/O to an object of a draining disk and that object's move exclude each other */
  private readonly moveLocks = new KeyedMutex<bigint>();
  /** plugs and unplugs, one at a time */
  private readonly mdLock = new KeyedMutex<number>();
  /** --reserved-space as given (undefined: the per-disk default) */
  private reserveSetting: number | undefined;
  /** why the store was taken out of service (its last disk failed), or null while it works */
  failed: string | null = null;
  /** told once, when the store fails: the cluster stops placing copies here and re-replicates them */
  onDiskFailure: (why: string) => void = () => undefined;
  /** md: told when one disk fails while others work; the node then refills the lost copies */
  onDiskLost: (disk: string, why: string) => void = () => undefined;

  private constructor(readonly dir: string, private readonly log: Logger, disks: Disk[], md: boolean) {
    this.disksList = disks;
    this.index = md ? new Map() : null;
    this.staleIndex = md ? new Map() : null;
  }

  /**
   * Opens the store of DIR: objects in DIR/obj, or with `disks` (multi-disk mode) on those paths,
   * DIR keeping the metadata only.
   */
  static async open(dir: string, log: Logger, disks: string[] = []): Promise<ObjectStore> {
    if (!disks.length) {
      const d = await Disk.open(dir, log, null);
      d.setReserve(0);
      return new ObjectStore(dir, log, [d], false);
    }
    await refuseSingleDirObjects(dir, disks);
    const opened: Disk[] = [];
    for (const p of disks) {
      try {
        opened.push(await Disk.open(p, log, p));
      } catch (e) {
        // as the original does with a broken path: the sheep starts on the disks that work
        log.error({ disk: p, err: (e as Error).message }, 'disk cannot be used: left out (its objects are recovered from other nodes)');
      }
    }
    if (!opened.length) throw new Error(`none of the disks can be used (${disks.join(', ')}): see the log`);
    const s = new ObjectStore(dir, log, opened, true);
    await s.buildIndex();
    s.rebuildRing();
    await s.compareDiskList(disks);
    await s.saveDiskList();
    return s;
  }

  /** Multi-disk mode: objects on disks, DIR for metadata only. */
  get md(): boolean {
    return this.index !== null;
  }

  /** The object directory of the first disk (DIR/obj without md). */
  get objDir(): string {
    return this.disksList[0].objDir;
  }

  get staleDir(): string {
    return this.disksList[0].staleDir;
  }

  /** Refuses a store on a filesystem without user xattrs: object metadata lives there. */
  static async checkXattrSupport(dir: string): Promise<void> {
    const probe = path.join(dir, '.xattr-probe');
    await fs.writeFile(probe, '');
    try {
      setAttributeSync(probe, 'user.sheepdog.probe', PROBE_VALUE);
      const v = getAttributeSync(probe, 'user.sheepdog.probe');
      if (v.length !== 1 || v[0] !== 1) throw new Error('xattr read back differs');
    } catch (e) {
      throw new Error(`${dir} does not support user extended attributes (${(e as Error).message}); ` +
        'use a filesystem with user xattrs (ext4, xfs, btrfs, tmpfs) or mount it with -o user_xattr');
    } finally {
      await fs.rm(probe, { force: true });
    }
  }

  // ------------------------------------------------------------------ disks: placement, index, failure

  /** Lists every disk: objects found on two disks (a crash mid-move) keep the newest, the other is set aside. */
  private async buildIndex(): Promise<void> {
    const index = this.index!;
    const staleIndex = this.staleIndex!;
    for (const d of this.disksList) {
      for (const oid of await listOids(d.objDir)) {
        const other = index.get(oid);
        if (!other) { index.set(oid, d); continue; }
        const [keep, drop] = epochAt(d.objPath(oid)) > epochAt(other.objPath(oid)) ? [d, other] : [other, d];
        await fs.rename(drop.objPath(oid), drop.stalePath(oid));
        index.set(oid, keep);
        this.log.warn({ oid: oidHex(oid), kept: keep.root, setAside: drop.root }, 'an object was on two disks: the newest copy is kept, the other set aside');
      }
    }
    for (const d of this.disksList) {
      for (const oid of await listOids(d.staleDir)) {
        const other = staleIndex.get(oid);
        if (!other) { staleIndex.set(oid, d); continue; }
        const [keep, drop] = epochAt(d.stalePath(oid)) > epochAt(other.stalePath(oid)) ? [d, other] : [other, d];
        await fs.rm(drop.stalePath(oid), { force: true });
        staleIndex.set(oid, keep);
      }
    }
    this.log.info({ disks: this.disksList.map((d) => d.root), objects: index.size, setAside: staleIndex.size }, 'multi-disk store indexed');
  }

  /** The disks new objects may go to (in service, not draining), as points weighted by size. */
  private rebuildRing(): void {
    if (!this.index) return;
    const usable = this.disksList.filter((d) => !d.failed && !d.draining);
    const biggest = Math.max(1, ...usable.map((d) => d.fsSize));
    this.ring = new Ring(usable.map((d, i) => ({
      nid: d.root, host: d.root, port: 0, zone: i, disk: d,
      vnodes: Math.max(1, Math.round((DISK_RING_POINTS * d.fsSize) / biggest)),
    })));
  }

  /** Where an object in service is (null: nowhere). Without md the one disk (the filesystem decides). */
  private locate(oid: bigint): Disk | null {
    if (!this.index) return this.disksList[0];
    return this.index.get(oid) ?? null;
  }

  private locateStale(oid: bigint): Disk | null {
    if (!this.staleIndex) return this.disksList[0];
    return this.staleIndex.get(oid) ?? null;
  }

  /**
   * The disk a new object of `bytes` goes to: the ring's choice, or the next disk on the ring with
   * room when that one is full (none with room: the ring's choice, which refuses with NO_SPACE).
   */
  private pick(oid: bigint, bytes: number): Disk {
    if (!this.index) return this.disksList[0];
    const nodes = this.ring?.replicas(oid, this.ring.nodes.length) ?? [];
    if (!nodes.length) throw new SdError(Res.EIO, 'no disk in service');
    return (nodes.find((n) => n.disk.hasRoom(bytes)) ?? nodes[0]).disk;
  }

  /**
   * Runs `fn` on the disk `where` names for the object. While that disk drains, under the object's
   * move lock (asked again once held: the object may have moved); otherwise counted on the disk, so
   * an unplug that starts meanwhile waits for it. Other disks' I/O takes no lock.
   */
  private at<T>(oid: bigint, where: () => Disk | null, fn: (d: Disk | null) => Promise<T>): Promise<T> {
    const d = where();
    if (d?.draining) return this.moveLocks.run(oid, () => this.counted(where(), fn));
    return this.counted(d, fn);
  }

  private async counted<T>(d: Disk | null, fn: (d: Disk | null) => Promise<T>): Promise<T> {
    if (!d) return fn(null);
    d.enter();
    try {
      return await fn(d);
    } finally {
      d.leave();
    }
  }

  /**
   * Maps a failed fs call to a protocol result. An error of a disk itself takes that disk out of
   * service at once (a disk that returned EIO once is not trusted with copies again); without a disk
   * (the metadata directory), or on the last disk, the whole store.
   */
  fsError(e: unknown, d?: Disk): SdError {
    const code = (e as NodeJS.ErrnoException)?.code;
    if (code && DISK_FAILURE.has(code)) {
      const why = `${code} ${(e as Error).message}`.slice(0, 200);
      if (d && this.index) this.failDisk(d, why);
      else if (!this.failed) this.failStore(why, code);
    }
    return fsErrorResult(e);
  }

  private failStore(why: string, code?: string): void {
    this.failed = why;
    for (const d of this.disksList) d.failed ??= why;
    this.log.error({ err: why, code }, 'disk failure: this store is out of service; the cluster serves and re-replicates its copies from other nodes');
    this.fds.closeAll().catch(() => undefined);
    this.onDiskFailure(why);
  }

  /** md: one disk is out; its objects are forgotten here (the node recovers them from other nodes). */
  private failDisk(d: Disk, why: string): void {
    if (d.failed || this.failed) return;
    d.failed = why;
    let lost = 0;
    for (const [oid, at] of this.index!) if (at === d) { this.index!.delete(oid); lost++; }
    for (const [oid, at] of this.staleIndex!) if (at === d) this.staleIndex!.delete(oid);
    this.rebuildRing();
    this.fds.closeAll().catch(() => undefined);
    if (!this.disksList.some((x) => !x.failed)) {
      this.failStore(`every disk failed (last: ${d.root}: ${why})`);
      return;
    }
    this.log.error({ disk: d.root, err: why, objects: lost }, 'disk failure: this disk is out of service; its objects are recovered from other nodes onto the other disks');
    this.onDiskLost(d.root, why);
  }

  /**
   * Writes, syncs and reads back a small file on every disk: a disk that fails while no client
   * touches it is found within one probe interval, not at the next request that needs a copy there.
   */
  async probe(): Promise<void> {
    if (this.failed) return;
    await Promise.all(this.disksList.filter((d) => !d.failed).map(async (d) => {
      const file = path.join(d.tmpDir, '.probe');
      try {
        await fs.writeFile(file, PROBE_DATA, { flush: true });
        const back = await fs.readFile(file);
        if (!back.equals(PROBE_DATA)) throw Object.assign(new Error('probe read back differs'), { code: 'EIO' });
        await fs.rm(file, { force: true });
      } catch (e) {
        this.fsError(e, d);
      }
    }));
  }

  /** Every operation on a failed store is refused: its copies cannot be trusted. */
  private checkDisk(): void {
    if (this.failed) throw new SdError(Res.EIO, `disk failed: ${this.failed}`);
  }

  // ------------------------------------------------------------------ free space

  /**
   * Keeps `bytes` free on every disk: new objects stop there (deletes need no space). Undefined: the
   * default, 256M or a tenth of a smaller disk.
   */
  setReserve(bytes: number | undefined): void {
    this.reserveSetting = bytes;
    for (const d of this.disksList) d.setReserve(reserveFor(d, bytes));
  }

  /** Reads free space now (md: the disks in service together). */
  async refreshSpace(): Promise<SpaceInfo> {
    if (!this.index) return this.disksList[0].refreshSpace();
    const sum: SpaceInfo = { size: 0, avail: 0, reserve: 0, full: true };
    for (const d of this.disksList) {
      if (d.failed) continue;
      const s = await d.refreshSpace();
      sum.size += s.size;
      sum.avail += s.avail;
      sum.reserve += s.reserve;
      if (!s.full && !d.draining) sum.full = false;
    }
    return sum;
  }

  /** Whether `bytes` more fit above the reserve (md: on some disk new objects may go to). */
  hasRoom(bytes: number): boolean {
    if (!this.index) return this.disksList[0].hasRoom(bytes);
    return (this.ring?.nodes ?? []).some((n) => n.disk.hasRoom(bytes));
  }

  pathOf(oid: bigint): string {
    return (this.locate(oid) ?? this.pick(oid, 0)).objPath(oid);
  }

  // ------------------------------------------------------------------ object I/O

  async exists(oid: bigint): Promise<boolean> {
    if (this.failed) return false;
    if (this.index) return this.index.has(oid);
    try {
      await fs.access(this.disksList[0].objPath(oid));
      return true;
    } catch {
      return false;
    }
  }

  /** Reads `length` bytes at `offset`; ranges never written read as zeros. */
  async read(oid: bigint, offset: number, length: number): Promise<Buffer> {
    this.checkDisk();
    return this.at(oid, () => this.locate(oid), async (d) => {
      if (!d) throw new SdError(Res.NO_OBJ);
      const buf = Buffer.allocUnsafe(length);
      try {
        return await this.fds.use(oid, () => d.objPath(oid), async (fh) => {
          let done = 0;
          while (done < length) {
            const bytesRead = await preadInto(fh.fd, buf, done, length - done, offset + done);
            if (bytesRead === 0) break;
            done += bytesRead;
          }
          if (done < length) buf.fill(0, done);
          return buf;
        });
      } catch (e) {
        throw this.fsError(e, d);
      }
    });
  }

  /** Positional write into an existing object. */
  async write(oid: bigint, offset: number, data: Buffer, epoch: number): Promise<void> {
    this.checkDisk();
    return this.at(oid, () => this.locate(oid), async (d) => {
      if (!d) throw new SdError(Res.NO_OBJ);
      d.ensureWriteRoom(oid, data.length);
      try {
        await this.fds.use(oid, () => d.objPath(oid), async (fh) => {
          await writeAll(fh, data, offset);
        });
      } catch (e) {
        throw this.fsError(e, d);
      }
      this.markDirty(oid);
      if (this.lastEpoch.get(oid) !== epoch) {
        // recovery picks the copy with the newest last-write epoch: keep the xattr current
        try {
          setAttributeSync(d.objPath(oid), XATTR_EPOCH, epochBytes(epoch));
        } catch (e) {
          throw this.fsError(e, d);
        }
        this.rememberEpoch(oid, epoch);
      }
    });
  }

  private rememberEpoch(oid: bigint, epoch: number): void {
    if (this.lastEpoch.size >= 65536) this.lastEpoch.clear(); // a cache: forgetting only costs a setxattr
    this.lastEpoch.set(oid, epoch);
  }

  /**
   * Creates (or replaces) an object atomically: the new content is built in obj/.tmp (a copy of
   * `cowFrom` when given, else empty so unwritten ranges read as zeros), `data` is written at
   * `offset`, and the file is renamed into place. A failure leaves nothing half-written behind.
   */
  async create(oid: bigint, offset: number, data: Buffer, epoch: number, cowFrom?: bigint): Promise<void> {
    this.checkDisk();
    await this.createLocks.run(oid, () => this.at(oid, () => this.locate(oid) ?? this.pick(oid, data.length), async (d) => {
      d!.ensureRoom(data.length);
      await this.createLocked(d!, oid, offset, data, epoch, cowFrom);
    }));
  }

  private async createLocked(d: Disk, oid: bigint, offset: number, data: Buffer, epoch: number, cowFrom?: bigint): Promise<void> {
    if (cowFrom === undefined && (await this.createNew(d, oid, offset, data, epoch))) return;
    const tmp = path.join(d.tmpDir, `${oidHex(oid)}.${crypto.randomBytes(4).toString('hex')}`);
    try {
      if (cowFrom !== undefined) {
        try {
          const src = this.locate(cowFrom);
          if (!src) throw new SdError(Res.NO_OBJ, `copy-on-write source ${oidHex(cowFrom)} does not exist`);
          await fs.copyFile(src.objPath(cowFrom), tmp);
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code === 'ENOENT' && !(await this.exists(cowFrom))) {
            throw new SdError(Res.NO_OBJ, `copy-on-write source ${oidHex(cowFrom)} does not exist`);
          }
          throw e;
        }
      }
      const fh = await fs.open(tmp, fsc.O_RDWR | fsc.O_CREAT);
      try {
        if (data.length) await writeAll(fh, data, offset);
      } finally {
        await fh.close();
      }
      setAttributeSync(tmp, XATTR_EPOCH, epochBytes(epoch));
      await fs.rename(tmp, d.objPath(oid));
    } catch (e) {
      await fs.rm(tmp, { force: true }).catch(() => undefined);
      throw this.fsError(e, d);
    }
    this.index?.set(oid, d);
    await this.fds.drop(oid);
    d.dirDirty = true;
    this.markDirty(oid);
    this.rememberEpoch(oid, epoch);
  }

  /**
   * The common case, an object that does not exist yet: written in place (no temp file, no rename;
   * the epoch xattr is set while the data is written). Returns false when the object exists (then
   * it is replaced atomically instead). A failed write removes the file: nothing maps an object
   * before its create has succeeded, so a partial one is never read.
   */
  private async createNew(d: Disk, oid: bigint, offset: number, data: Buffer, epoch: number): Promise<boolean> {
    const file = d.objPath(oid);
    let fh: fs.FileHandle;
    try {
      fh = await fs.open(file, fsc.O_RDWR | fsc.O_CREAT | fsc.O_EXCL);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EEXIST') return false;
      throw this.fsError(e, d);
    }
    try {
      setAttributeSync(file, XATTR_EPOCH, epochBytes(epoch));
      if (data.length) await writeAll(fh, data, offset);
    } catch (e) {
      await fh.close().catch(() => undefined);
      await fs.rm(file, { force: true }).catch(() => undefined);
      throw this.fsError(e, d);
    }
    await fh.close();
    this.index?.set(oid, d);
    await this.fds.drop(oid);
    d.dirDirty = true;
    this.markDirty(oid);
    this.rememberEpoch(oid, epoch);
    return true;
  }

  async remove(oid: bigint): Promise<boolean> {
    this.checkDisk();
    return this.at(oid, () => this.locate(oid), async (d) => {
      if (!d) return false;
      await this.fds.drop(oid);
      try {
        await fs.unlink(d.objPath(oid));
        d.dirDirty = true;
        this.index?.delete(oid);
        for (const set of this.dirty.values()) set.delete(oid);
        return true;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ENOENT') { this.index?.delete(oid); return false; }
        throw this.fsError(e, d);
      } finally {
        await this.fds.drop(oid); // an open that raced the unlink must not keep the removed file
      }
    });
  }

  /**
   * Removes an orphan (a copy nothing maps) unless it was written after `cutoff` (ms since the
   * epoch): a client that creates the object now, then maps it, must keep it. Creates of the same
   * object wait meanwhile. A set-aside copy (`stale`) is removed without the age check.
   */
  async removeOrphan(oid: bigint, cutoff: number, stale = false): Promise<boolean> {
    if (stale) {
      return this.at(oid, () => this.locateStale(oid), async (d) => {
        if (!d) return false;
        try {
          await fs.unlink(d.stalePath(oid));
          this.staleIndex?.delete(oid);
          return true;
        } catch {
          return false;
        }
      });
    }
    return this.createLocks.run(oid, async () => {
      const d = this.locate(oid);
      if (!d) return false;
      try {
        const st = await fs.stat(d.objPath(oid));
        if (st.mtimeMs > cutoff || st.ctimeMs > cutoff) return false;
      } catch {
        return false;
      }
      return this.remove(oid);
    });
  }

  async epochOf(oid: bigint, stale = false): Promise<number> {
    const d = stale ? this.locateStale(oid) : this.locate(oid);
    return d ? epochAt(stale ? d.stalePath(oid) : d.objPath(oid)) : 0;
  }

  /** Every object id in the store (files with 16 hex digit names). */
  async list(): Promise<bigint[]> {
    if (this.failed) return []; // a failed disk serves no copies
    if (this.index) return [...this.index.keys()];
    try {
      return await listOids(this.disksList[0].objDir);
    } catch (e) {
      throw this.fsError(e, this.disksList[0]);
    }
  }

  private lastUsage: { at: number; perDisk: Map<Disk, { objects: number; bytes: number }> } | null = null;
  private counting: Promise<Map<Disk, { objects: number; bytes: number }>> | null = null;

  /**
   * Objects in the store and the bytes they occupy on disk (allocated blocks, so sparse objects count
   * what they use). Counting stats every object: a count at most `maxAgeMs` old is reused, and callers
   * asking while one runs share it.
   */
  async usage(maxAgeMs = 0): Promise<{ objects: number; bytes: number }> {
    if (this.failed) return { objects: 0, bytes: 0 };
    let objects = 0;
    let bytes = 0;
    for (const u of (await this.usageByDisk(maxAgeMs)).values()) { objects += u.objects; bytes += u.bytes; }
    return { objects, bytes };
  }

  private async usageByDisk(maxAgeMs: number): Promise<Map<Disk, { objects: number; bytes: number }>> {
    // a fresh count asked for: one of its own (one already running may have missed a recent write)
    if (maxAgeMs <= 0) return this.countUsage();
    const last = this.lastUsage;
    if (last && Date.now() - last.at <= maxAgeMs) return last.perDisk;
    this.counting ??= this.countUsage().finally(() => { this.counting = null; });
    return this.counting;
  }

  private async countUsage(): Promise<Map<Disk, { objects: number; bytes: number }>> {
    const at = Date.now();
    const perDisk = new Map<Disk, { objects: number; bytes: number }>(this.disksList.map((d) => [d, { objects: 0, bytes: 0 }]));
    for (const oid of await this.list()) {
      const d = this.locate(oid);
      const u = d && perDisk.get(d);
      if (!u) continue;
      try {
        const st = await fs.stat(d.objPath(oid));
        u.bytes += st.blocks * 512;
        u.objects++;
      } catch { /* removed or moved meanwhile */ }
    }
    if (!this.lastUsage || this.lastUsage.at <= at) this.lastUsage = { at, perDisk };
    return perDisk;
  }

  private markDirty(oid: bigint): void {
    const owner = oidToVid(oid);
    let s = this.dirty.get(owner);
    if (!s) this.dirty.set(owner, (s = new Set()));
    s.add(oid);
  }

  /** Makes every write to objects of VDI `owner` durable (fdatasync), plus created/removed names. */
  async flushVdi(owner: number): Promise<void> {
    if (this.failed) return; // nothing here is served any more
    const set = this.dirty.get(owner);
    this.dirty.delete(owner);
    if (set) {
      await Promise.all([...set].map((oid) => this.syncOne(oid)));
    }
    await this.syncDirs();
  }

  /** Makes everything durable: used at shutdown and by FLUSH_NODES. */
  async flushAll(): Promise<void> {
    if (this.failed) return;
    const owners = [...this.dirty.keys()];
    for (const o of owners) await this.flushVdi(o);
    await this.syncDirs();
  }

  private async syncOne(oid: bigint): Promise<void> {
    const d = this.locate(oid);
    if (!d) return; // removed, or on a disk that failed: nothing to keep here
    try {
      await this.fds.use(oid, d.objPath(oid), (fh) => fh.datasync());
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return; // removed (or moved: the move synced it)
      throw this.fsError(e, d);
    }
  }

  private async syncDirs(): Promise<void> {
    for (const d of this.disksList) {
      if (!d.dirDirty || d.failed) continue;
      d.dirDirty = false;
      try {
        const fh = await fs.open(d.objDir, fsc.O_RDONLY);
        try {
          await fh.sync();
        } finally {
          await fh.close();
        }
      } catch (e) {
        throw this.fsError(e, d);
      }
    }
  }

  /**
   * A whole copy (recovery, or a new replica filled on demand), only when no copy exists: a client
   * write may have made one meanwhile, and writes applied to it must not be overwritten. The copy
   * is complete before it appears (temp file, then link, which fails on an existing name), so no
   * write or read ever meets it half-written.
   */
  async createIfAbsent(oid: bigint, data: Buffer, epoch: number): Promise<boolean> {
    this.checkDisk();
    return this.createLocks.run(oid, () => {
      if (this.index?.has(oid)) return Promise.resolve(false);
      return this.at(oid, () => this.locate(oid) ?? this.pick(oid, data.length), (d) => this.createIfAbsentOn(d!, oid, data, epoch));
    });
  }

  private async createIfAbsentOn(d: Disk, oid: bigint, data: Buffer, epoch: number): Promise<boolean> {
    d.ensureRoom(data.length);
    const tmp = path.join(d.tmpDir, `${oidHex(oid)}.${crypto.randomBytes(4).toString('hex')}`);
    try {
      const fh = await fs.open(tmp, fsc.O_RDWR | fsc.O_CREAT | fsc.O_EXCL);
      try {
        // holes stay holes: a whole copy takes only the space of the data it holds
        if (data.length) await writeSparse(fh, data);
      } finally {
        await fh.close();
      }
      setAttributeSync(tmp, XATTR_EPOCH, epochBytes(epoch));
      await fs.link(tmp, d.objPath(oid));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EEXIST') return false;
      throw this.fsError(e, d);
    } finally {
      await fs.rm(tmp, { force: true }).catch(() => undefined);
    }
    this.index?.set(oid, d);
    await this.fds.drop(oid);
    d.dirDirty = true;
    this.markDirty(oid);
    this.rememberEpoch(oid, epoch);
    return true;
  }

  /** Moves a set-aside copy back into service, unless a copy exists. */
  async restoreStale(oid: bigint): Promise<boolean> {
    this.checkDisk();
    return this.createLocks.run(oid, () => {
      if (this.index?.has(oid)) return Promise.resolve(false);
      return this.at(oid, () => this.locateStale(oid), async (d) => {
        if (!d) return false;
        try {
          // link, not rename: a copy a client write made meanwhile must win (link fails on it)
          await fs.link(d.stalePath(oid), d.objPath(oid));
        } catch (e) {
          const code = (e as NodeJS.ErrnoException).code;
          if (code === 'ENOENT' || code === 'EEXIST') return false;
          throw this.fsError(e, d);
        }
        this.index?.set(oid, d);
        this.staleIndex?.delete(oid);
        await fs.rm(d.stalePath(oid), { force: true });
        d.dirDirty = true;
        return true;
      });
    });
  }

  /** Takes a copy this node no longer owns out of service (kept in obj/.stale). */
  async setAside(oid: bigint): Promise<boolean> {
    this.checkDisk();
    return this.at(oid, () => this.locate(oid), async (d) => {
      if (!d) return false;
      await this.fds.drop(oid);
      try {
        await fs.rename(d.objPath(oid), d.stalePath(oid));
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false;
        throw this.fsError(e, d);
      } finally {
        await this.fds.drop(oid); // an open that raced the rename must not keep the set-aside file
      }
      this.noteSetAside(oid, d);
      d.dirDirty = true;
      for (const set of this.dirty.values()) set.delete(oid);
      return true;
    });
  }

  /** md: the object's copy in service became the set-aside one on `d` (an older one elsewhere goes). */
  private noteSetAside(oid: bigint, d: Disk): void {
    if (!this.index) return;
    this.index.delete(oid);
    const older = this.staleIndex!.get(oid);
    if (older && older !== d) void fs.rm(older.stalePath(oid), { force: true }).catch(() => undefined);
    this.staleIndex!.set(oid, d);
  }

  async listStale(): Promise<bigint[]> {
    if (this.failed) return [];
    if (this.staleIndex) return [...this.staleIndex.keys()];
    try {
      return await listOids(this.disksList[0].staleDir);
    } catch (e) {
      throw this.fsError(e, this.disksList[0]);
    }
  }

  /** Reads a set-aside copy (recovery's source of last resort); holes and the range past its end read as zeros. */
  async readStale(oid: bigint, offset: number, length: number): Promise<Buffer> {
    this.checkDisk();
    return this.at(oid, () => this.locateStale(oid), async (d) => {
      if (!d) throw new SdError(Res.NO_OBJ);
      const buf = Buffer.alloc(length);
      let fh: fs.FileHandle;
      try {
        fh = await fs.open(d.stalePath(oid), fsc.O_RDONLY);
      } catch (e) {
        throw this.fsError(e, d);
      }
      try {
        for (let done = 0; done < length;) {
          const { bytesRead } = await fh.read(buf, done, length - done, offset + done);
          if (bytesRead === 0) break;
          done += bytesRead;
        }
      } finally {
        await fh.close();
      }
      return buf;
    });
  }

  /** Drops one set-aside copy (a newer one was copied in its place). */
  async dropStale(oid: bigint): Promise<void> {
    await this.at(oid, () => this.locateStale(oid), async (d) => {
      if (!d) return;
      this.staleIndex?.delete(oid);
      await fs.rm(d.stalePath(oid), { force: true });
    });
  }

  /**
   * sha256 of an object's first `size` bytes (holes and the range past the end of the file read as
   * zeros), of the copy in service or of the set-aside one: a returning node keeps a set-aside copy
   * whose content is the current one instead of copying it again.
   */
  async hashOf(oid: bigint, size: number, stale = false): Promise<Buffer> {
    this.checkDisk();
    return this.at(oid, () => (stale ? this.locateStale(oid) : this.locate(oid)), async (d) => {
      if (!d) throw new SdError(Res.NO_OBJ);
      const h = crypto.createHash('sha256');
      const buf = Buffer.alloc(Math.min(size, 1 << 20));
      let fh: fs.FileHandle;
      try {
        fh = await fs.open(stale ? d.stalePath(oid) : d.objPath(oid), fsc.O_RDONLY);
      } catch (e) {
        throw this.fsError(e, d);
      }
      try {
        for (let off = 0; off < size;) {
          const want = Math.min(buf.length, size - off);
          const { bytesRead } = await fh.read(buf, 0, want, off);
          if (bytesRead < want) buf.fill(0, bytesRead, want);
          h.update(buf.subarray(0, want));
          off += want;
        }
      } finally {
        await fh.close();
      }
      return h.digest();
    });
  }

  /** Removes every set-aside copy; returns how many there were. */
  async purgeStale(): Promise<number> {
    const stale = await this.listStale();
    for (const oid of stale) await this.dropStale(oid);
    return stale.length;
  }

  /** Moves every object to obj/.stale (copies that may be out of date); returns how many. */
  async quarantine(): Promise<number> {
    await this.fds.closeAll();
    let n = 0;
    for (const oid of await this.list()) {
      const d = this.locate(oid);
      if (!d) continue;
      await fs.rename(d.objPath(oid), d.stalePath(oid));
      this.noteSetAside(oid, d);
      d.dirDirty = true;
      n++;
    }
    await this.fds.closeAll(); // nothing opened meanwhile may keep a copy now set aside
    this.dirty.clear();
    this.lastEpoch.clear();
    return n;
  }

  /** Removes every object (cluster format wipes the store). */
  async wipe(): Promise<void> {
    await this.fds.closeAll();
    for (const oid of await this.list()) {
      const d = this.locate(oid);
      if (d) await fs.rm(d.objPath(oid), { force: true });
    }
    this.index?.clear();
    this.staleIndex?.clear();
    for (const d of this.disksList) {
      if (d.failed) continue;
      await fs.rm(d.staleDir, { recursive: true, force: true });
      await fs.mkdir(d.staleDir, { recursive: true });
      d.dirDirty = true;
    }
    this.dirty.clear();
    await this.syncDirs();
    this.log.info('store wiped');
  }

  async close(): Promise<void> {
    await this.fds.closeAll();
  }

  // ------------------------------------------------------------------ multi-disk administration

  /** Each disk with its figures and state (`node md info`); without md, DIR as the one disk. */
  async mdInfo(): Promise<MdDiskInfo[]> {
    const usage = this.failed ? new Map<Disk, { objects: number; bytes: number }>() : await this.usageByDisk(0);
    const out: MdDiskInfo[] = [];
    for (const [idx, d] of this.disksList.entries()) {
      const u = usage.get(d) ?? { objects: 0, bytes: 0 };
      const sp = d.failed ? { avail: 0 } : await d.refreshSpace();
      out.push({
        idx, path: d.root, used: u.bytes, avail: sp.avail, size: u.bytes + sp.avail, objects: u.objects,
        status: d.failed ? 'failed' : d.draining ? 'draining' : 'ok', ...(d.failed ? { failure: d.failed } : {}),
      });
    }
    return out;
  }

  private requireMd(): void {
    if (!this.index) {
      throw new SdError(Res.INVALID_PARMS, 'this sheep keeps its objects in its store directory alone; ' +
        'start it as `sheep DIR,DISK1,DISK2,...` to use, plug and unplug several disks');
    }
  }

  /**
   * Adds disks: new objects go to them by weight from now on; objects already stored stay where they
   * are. A path's obj/ is emptied first (the original purges a plugged directory).
   */
  async plug(paths: string[]): Promise<void> {
    this.requireMd();
    await this.mdLock.run(0, async () => {
      const roots = uniquePaths(paths);
      for (const p of roots) {
        if (this.disksList.some((d) => d.root === p)) throw new SdError(Res.INVALID_PARMS, `${p} is already a disk of this sheep`);
        if (p === this.dir || isInside(p, this.dir) || isInside(this.dir, p)) {
          throw new SdError(Res.INVALID_PARMS, `${p} overlaps the metadata directory ${this.dir}`);
        }
        const inUse = this.disksList.find((d) => isInside(p, d.root) || isInside(d.root, p));
        if (inUse) throw new SdError(Res.INVALID_PARMS, `${p} overlaps disk ${inUse.root}`);
        if (await fs.stat(path.join(p, 'config')).then(() => true, () => false)) {
          throw new SdError(Res.INVALID_PARMS, `${p} holds a sheep store (its config): not plugged`);
        }
        const holder = Number((await fs.readFile(path.join(p, 'lock'), 'utf8').catch(() => '')).trim());
        if (holder && holder !== process.pid && pidAlive(holder)) {
          throw new SdError(Res.INVALID_PARMS, `${p} is used by a running sheep (pid ${holder}): not plugged`);
        }
      }
      const added: Disk[] = [];
      try {
        for (const p of roots) {
          await fs.mkdir(p, { recursive: true, mode: 0o700 });
          await ObjectStore.checkXattrSupport(p);
          await fs.rm(path.join(p, 'obj'), { recursive: true, force: true });
          const d = await Disk.open(p, this.log, p);
          d.setReserve(reserveFor(d, this.reserveSetting));
          await d.refreshSpace();
          added.push(d);
        }
      } catch (e) {
        if (e instanceof SdError) throw e;
        throw new SdError(Res.INVALID_PARMS, `cannot plug: ${(e as Error).message}`);
      }
      this.disksList.push(...added);
      this.rebuildRing();
      await this.saveDiskList();
      this.log.info({ disks: roots, all: this.disksList.map((d) => d.root) }, 'disks plugged: new objects go to them by size');
    });
  }

  /**
   * Removes disks. Every object (and set-aside copy) of a disk in service is moved to the disks that
   * stay first: copied to the target's obj/.tmp, synced, renamed into place, under the object's move
   * lock, which client I/O to that disk's objects takes meanwhile. A failed disk is just dropped.
   * Refused when the disks that stay cannot take the objects, or no disk would stay.
   */
  async unplug(paths: string[]): Promise<{ moved: number }> {
    this.requireMd();
    return this.mdLock.run(0, async () => {
      const targets = uniquePaths(paths).map((p) => {
        const d = this.disksList.find((x) => x.root === p);
        if (!d) throw new SdError(Res.INVALID_PARMS, `${p} is not a disk of this sheep (see collie node md info)`);
        return d;
      });
      const staying = this.disksList.filter((d) => !targets.includes(d) && !d.failed);
      if (!staying.length) throw new SdError(Res.INVALID_PARMS, 'cannot unplug the last disk in service: the node would have nowhere to keep its objects');
      const usage = await this.countUsage();
      let need = 0;
      for (const d of targets) if (!d.failed) need += usage.get(d)?.bytes ?? 0;
      let room = 0;
      for (const d of staying) {
        const sp = await d.refreshSpace();
        room += Math.max(0, sp.avail - sp.reserve);
      }
      if (need > room) {
        throw new SdError(Res.NO_SPACE, `the disks that stay cannot take the objects: ${formatSize(need)} to move, ` +
          `${formatSize(room)} free above their reserve; not unplugged`);
      }
      let moved = 0;
      for (const d of targets) d.draining = true;
      this.rebuildRing();
      try {
        for (const d of targets) if (!d.failed) moved += await this.drain(d);
      } catch (e) {
        for (const d of targets) d.draining = false;
        this.rebuildRing();
        throw e;
      }
      this.disksList = this.disksList.filter((d) => !targets.includes(d));
      this.rebuildRing();
      await this.saveDiskList();
      this.log.info({ disks: targets.map((d) => d.root), moved }, 'disks unplugged');
      return { moved };
    });
  }

  /** Moves every object and set-aside copy off `d` (draining); returns how many were moved. */
  private async drain(d: Disk): Promise<number> {
    await d.idle(); // requests that started before the drain run to their end first
    let moved = 0;
    let errors = 0;
    for (;;) {
      if (d.failed) return moved; // its objects are the recovery's now
      const objs: Array<[bigint, boolean]> = [];
      for (const [oid, at] of this.index!) if (at === d) objs.push([oid, false]);
      for (const [oid, at] of this.staleIndex!) if (at === d) objs.push([oid, true]);
      if (!objs.length) return moved;
      for (const [oid, stale] of objs) {
        try {
          if (await this.moveLocks.run(oid, () => this.moveOne(oid, d, stale))) moved++;
          errors = 0;
        } catch (e) {
          if (d.failed) return moved;
          // an error reading the unplugged disk takes it out (recovery refills its objects); one of
          // the target disk was handled where it happened
          const sd = e instanceof CopyError && e.side === 'source' ? this.fsError(e.cause, d) : fsErrorResult(e instanceof CopyError ? e.cause : e);
          if (sd.result === Res.NO_SPACE || ++errors >= 3) {
            throw new SdError(sd.result, `unplug of ${d.root} stopped: moving ${oidHex(oid)} failed: ${sd.message}`);
          }
          this.log.warn({ disk: d.root, oid: oidHex(oid), err: sd.message }, 'moving an object off an unplugged disk failed: trying again');
        }
      }
    }
  }

  /** Moves one object (or set-aside copy) from `from` to the disk the ring picks. */
  private async moveOne(oid: bigint, from: Disk, stale: boolean): Promise<boolean> {
    if ((stale ? this.staleIndex! : this.index!).get(oid) !== from) return false; // gone or moved meanwhile
    const src = stale ? from.stalePath(oid) : from.objPath(oid);
    let size: number;
    try {
      size = (await fs.stat(src)).size;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') {
        (stale ? this.staleIndex! : this.index!).delete(oid);
        return false;
      }
      throw new CopyError(e, 'source');
    }
    const to = this.pick(oid, size);
    to.enter();
    try {
      to.ensureRoom(size);
      const tmp = path.join(to.tmpDir, `${oidHex(oid)}.${crypto.randomBytes(4).toString('hex')}`);
      try {
        await copySparse(src, tmp, size);
        await fs.rename(tmp, stale ? to.stalePath(oid) : to.objPath(oid)).catch((e: unknown) => { throw new CopyError(e, 'target'); });
      } catch (e) {
        await fs.rm(tmp, { force: true }).catch(() => undefined);
        if (e instanceof CopyError && e.side === 'target') this.fsError(e.cause, to);
        throw e;
      }
      (stale ? this.staleIndex! : this.index!).set(oid, to);
      to.dirDirty = true;
      if (!stale) await this.fds.drop(oid); // the next request opens the moved file
    } finally {
      to.leave();
    }
    await fs.unlink(src).catch(() => undefined);
    from.dirDirty = true;
    return true;
  }

  /** DIR/disks: the disk list, so a restart with other paths can say what changed. */
  private async saveDiskList(): Promise<void> {
    try {
      await writeFileDurable(path.join(this.dir, DISK_LIST_FILE), JSON.stringify(this.disksList.map((d) => d.root)) + '\n');
    } catch (e) {
      this.log.warn({ err: (e as Error).message }, 'could not record the disk list');
    }
  }

  /** Warns about disks of the last run missing now (not given, or unusable): recovery refills their objects. */
  private async compareDiskList(given: string[]): Promise<void> {
    const last = await readDiskList(this.dir);
    const missing = last.filter((p) => !given.includes(p));
    if (missing.length) {
      this.log.warn({ missing }, 'disks of the last run are not in service now: their objects are not served here (recovery copies them from other nodes)');
    }
  }
}

/** The default reserve of a disk, or the one given (--reserved-space applies to each disk). */
function reserveFor(d: Disk, setting: number | undefined): number {
  return setting ?? Math.min(DEFAULT_RESERVE, Math.floor(d.fsSize / 10));
}

/** The disk list DIR/disks records (none: []). */
export async function readDiskList(dir: string): Promise<string[]> {
  try {
    const v = JSON.parse(await fs.readFile(path.join(dir, DISK_LIST_FILE), 'utf8')) as unknown;
    return Array.isArray(v) ? v.filter((p): p is string => typeof p === 'string') : [];
  } catch {
    return [];
  }
}

/**
 * A store that kept objects in DIR/obj cannot become a multi-disk one by restarting with disks: its
 * objects would be hidden (and lost with one copy). Refused with what to do.
 */
async function refuseSingleDirObjects(dir: string, disks: string[]): Promise<void> {
  let n = 0;
  try {
    n = (await listOids(path.join(dir, 'obj'))).length;
  } catch { /* no DIR/obj */ }
  if (n) {
    throw new Error(`${dir}/obj holds ${n} objects of a single-directory store; with disks (${disks.join(',')}) ` +
      `objects live on the disks only: start without disks, or move ${dir}/obj into one of the disks first`);
  }
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function uniquePaths(paths: string[]): string[] {
  const out = [...new Set(paths.map((p) => p.trim()).filter(Boolean).map((p) => path.resolve(p)))];
  if (!out.length) throw new SdError(Res.INVALID_PARMS, 'no disk path given');
  return out;
}

function isInside(child: string, parent: string): boolean {
  const rel = path.relative(parent, child);
  return rel !== '' && !rel.startsWith('..') && !path.isAbsolute(rel);
}

/** Object ids named in a directory (16 hex digits). */
async function listOids(dir: string): Promise<bigint[]> {
  const out: bigint[] = [];
  for (const n of await fs.readdir(dir)) {
    const oid = parseStoreFileName(n);
    if (oid !== null) out.push(oid);
  }
  return out;
}

/** The last-write epoch an object file records (0: none or unreadable). */
function epochAt(file: string): number {
  try {
    const b = getAttributeSync(file, XATTR_EPOCH);
    return b.length >= 4 ? b.readUInt32LE(0) : 0;
  } catch {
    return 0;
  }
}

const COPY_CHUNK = 1 << 20;

/**
 * Copies an object file to another disk keeping its holes (all-zero 4 KiB blocks are not written),
 * its length and its epoch xattr, and syncs it: it is renamed into service right after.
 */
async function copySparse(src: string, dst: string, size: number): Promise<void> {
  let inFh: fs.FileHandle;
  try {
    inFh = await fs.open(src, fsc.O_RDONLY);
  } catch (e) {
    throw new CopyError(e, 'source');
  }
  try {
    let outFh: fs.FileHandle;
    try {
      outFh = await fs.open(dst, fsc.O_RDWR | fsc.O_CREAT | fsc.O_EXCL);
    } catch (e) {
      throw new CopyError(e, 'target');
    }
    try {
      const buf = Buffer.allocUnsafe(Math.min(COPY_CHUNK, Math.max(SPARSE_BLOCK, size)));
      for (let off = 0; off < size;) {
        let n: number;
        try {
          n = (await inFh.read(buf, 0, Math.min(buf.length, size - off), off)).bytesRead;
        } catch (e) {
          throw new CopyError(e, 'source');
        }
        if (n === 0) break;
        try {
          await writeNonZero(outFh, buf.subarray(0, n), off);
        } catch (e) {
          throw new CopyError(e, 'target');
        }
        off += n;
      }
      let epoch: Buffer;
      try {
        epoch = getAttributeSync(src, XATTR_EPOCH);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENODATA') throw new CopyError(e, 'source');
        epoch = epochBytes(0);
      }
      try {
        await outFh.truncate(size);
        setAttributeSync(dst, XATTR_EPOCH, epoch);
        await outFh.datasync();
      } catch (e) {
        throw new CopyError(e, 'target');
      }
    } finally {
      await outFh.close().catch(() => undefined);
    }
  } finally {
    await inFh.close().catch(() => undefined);
  }
}

/** Writes the blocks of `chunk` that are not all zeros at `at` (the others stay holes). */
async function writeNonZero(fh: fs.FileHandle, chunk: Buffer, at: number): Promise<void> {
  let run = -1;
  for (let off = 0; off < chunk.length; off += SPARSE_BLOCK) {
    const end = Math.min(off + SPARSE_BLOCK, chunk.length);
    const zero = chunk.subarray(off, end).equals(ZERO_BLOCK.subarray(0, end - off));
    if (!zero && run < 0) run = off;
    if (zero && run >= 0) {
      await writeAll(fh, chunk.subarray(run, off), at + run);
      run = -1;
    }
  }
  if (run >= 0) await writeAll(fh, chunk.subarray(run), at + run);
}

const SPARSE_BLOCK = 4096;
const ZERO_BLOCK = Buffer.alloc(SPARSE_BLOCK);

/** Writes `data` at 0 leaving all-zero 4 KiB blocks as holes; the file ends where the data does. */
async function writeSparse(fh: fs.FileHandle, data: Buffer): Promise<void> {
  let run = -1; // start of the current run of non-zero blocks
  for (let off = 0; off < data.length; off += SPARSE_BLOCK) {
    const end = Math.min(off + SPARSE_BLOCK, data.length);
    const zero = data.subarray(off, end).equals(ZERO_BLOCK.subarray(0, end - off));
    if (!zero && run < 0) run = off;
    if (zero && run >= 0) {
      await writeAll(fh, data.subarray(run, off), run);
      run = -1;
    }
  }
  if (run >= 0) await writeAll(fh, data.subarray(run), run);
  await fh.truncate(data.length);
}

async function writeAll(fh: fs.FileHandle, data: Buffer, offset: number): Promise<void> {
  let done = 0;
  // a small write into the page cache, like a small cached read, is cheaper on the loop than through
  // the pool; one that had to wait (dirty-page throttling, a slow disk) pauses this as reads do
  if (data.length <= SYNC_READ_MAX && Date.now() >= syncReadsFrom) {
    const t0 = process.hrtime.bigint();
    try {
      while (done < data.length) done += fsCb.writeSync(fh.fd, data, done, data.length - done, offset + done);
    } finally {
      if (process.hrtime.bigint() - t0 > SLOW_SYNC_READ_NS) syncReadsFrom = Date.now() + SYNC_PAUSE_MS;
    }
    return;
  }
  while (done < data.length) {
    const { bytesWritten } = await fh.write(data, done, data.length - done, offset + done);
    done += bytesWritten;
  }
}

/**
 * The xattr value for an epoch, one buffer per epoch for the life of the process. (fs-xattr's async
 * set once wrote a collected temporary's reused memory as an object's epoch; the sync calls used now
 * read the value during the call, and sharing the buffers costs nothing.)
 */
const epochValues = new Map<number, Buffer>();
function epochBytes(epoch: number): Buffer {
  let b = epochValues.get(epoch);
  if (!b) {
    b = Buffer.alloc(4);
    b.writeUInt32LE(epoch >>> 0);
    epochValues.set(epoch, b);
  }
  return b;
}
/** What the disk probe writes and reads back. */
const PROBE_DATA = Buffer.from('sheepdog disk probe\n');
/** The probe value for checkXattrSupport. */
const PROBE_VALUE = Buffer.from([1]);

/**
 * Small reads and writes are done on the event loop while they keep being served by the page cache:
 * a pread of a cached 4 KiB block takes a few microseconds, a round trip through libuv's I/O pool
 * (queue, worker wake-up, completion wake-up, promise) several times that, and QEMU's random I/O is
 * mostly cached. One that turns out slow (it went to the disk, or waited for writeback) stops this
 * for a while, so a cold or busy disk cannot hold the loop for more than one call per pause.
 */
const SYNC_READ_MAX = 64 * 1024;
const SLOW_SYNC_READ_NS = 500_000n;
const SYNC_PAUSE_MS = 2000;
let syncReadsFrom = 0;

/** One pread, without FileHandle's per-call objects (every client read does this). */
function preadInto(fd: number, buf: Buffer, at: number, len: number, pos: number): Promise<number> {
  if (len <= SYNC_READ_MAX && Date.now() >= syncReadsFrom) {
    const t0 = process.hrtime.bigint();
    try {
      return Promise.resolve(fsCb.readSync(fd, buf, at, len, pos));
    } catch (e) {
      return Promise.reject(e);
    } finally {
      if (process.hrtime.bigint() - t0 > SLOW_SYNC_READ_NS) syncReadsFrom = Date.now() + SYNC_PAUSE_MS;
    }
  }
  return new Promise((resolve, reject) => {
    fsCb.read(fd, buf, at, len, pos, (err, n) => (err ? reject(err) : resolve(n)));
  });
}
