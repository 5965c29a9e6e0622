// The local object store (DESIGN.md §5): one sparse file per object under obj/, positional I/O,
// the epoch of each object's last write in the xattr user.sheepdog.epoch.

import fs from 'node:fs/promises';
import fsCb, { constants as fsc } from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';
// fs-xattr's synchronous calls: its asynchronous ones leak their async work (~400 bytes and a handle per
// call) and do not keep the value buffer alive while a worker thread writes it. A sync get or set is
// 4-9 us on a cached inode (measured), cheaper than the thread-pool round trip the async one costs.
import { getAttributeSync, setAttributeSync } from 'fs-xattr';
import { Res, SdError } from '../../lib/proto.js';
import { oidHex, oidKind, oidToVid, parseOidHex } from '../../lib/oid.js';
import { formatSize } from '../../lib/units.js';
import type { Logger } from '../util/log.js';
import { KeyedMutex } from '../util/mutex.js';
import { FdCache } from './fd-cache.js';

export const XATTR_EPOCH = 'user.sheepdog.epoch';

/** Maps a failed fs call to the protocol result a client should see. */
export function fsErrorResult(e: unknown): SdError {
  if (e instanceof SdError) return e;
  const code = (e as NodeJS.ErrnoException)?.code;
  if (code === 'ENOENT') return new SdError(Res.NO_OBJ);
  if (code === 'ENOSPC' || code === 'EDQUOT') return new SdError(Res.NO_SPACE);
  return new SdError(Res.EIO, `I/O error: ${(e as Error)?.message ?? String(e)}`);
}

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

/** errno codes that mean the disk itself failed (not a missing object or a full disk). */
const DISK_FAILURE = new Set(['EIO', 'EROFS', 'EUCLEAN', 'ENODEV', 'ENXIO']);

/** How long a free-space reading is trusted (creates ask on every call). */
const SPACE_TTL_MS = 250;

export class ObjectStore {
  readonly objDir: string;
  readonly staleDir: string;
  private readonly tmpDir: string;
  private readonly fds = new FdCache(512);
  /** Objects written since their last fdatasync, grouped by owning vid; FLUSH_VDI drains them. */
  private readonly dirty = new Map<number, Set<bigint>>();
  private dirDirty = false;
  /** Epoch last recorded in each object's xattr, so writes in the same epoch skip the setxattr. */
  private readonly lastEpoch = new Map<bigint, number>();
  /** creates and orphan removals of one object exclude each other (a removal checks the age first) */
  private readonly createLocks = new KeyedMutex<bigint>();
  private reserve = 0;
  private spaceRead = { at: 0, avail: Number.POSITIVE_INFINITY, total: 0 };
  private wasFull = false;
  private spaceRefresh: Promise<unknown> | null = null;
  /** why the disk was taken out of service (an I/O error), or null while it works */
  failed: string | null = null;
  /** told once, when the disk fails: the cluster stops placing copies here and re-replicates them */
  onDiskFailure: (why: string) => void = () => undefined;

  private constructor(readonly dir: string, private readonly log: Logger) {
    this.objDir = path.join(dir, 'obj');
    this.staleDir = path.join(this.objDir, '.stale');
    this.tmpDir = path.join(this.objDir, '.tmp');
  }

  static async open(dir: string, log: Logger): Promise<ObjectStore> {
    const s = new ObjectStore(dir, log);
    await fs.mkdir(s.staleDir, { recursive: true });
    await fs.rm(s.tmpDir, { recursive: true, force: true }); // half-written objects of a crash
    await fs.mkdir(s.tmpDir, { recursive: true });
    return s;
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

  /**
   * Maps a failed fs call to a protocol result; an error of the disk itself takes the whole store
   * out of service at once (a disk that returned EIO once is not trusted with copies again).
   */
  fsError(e: unknown): SdError {
    const code = (e as NodeJS.ErrnoException)?.code;
    if (code && DISK_FAILURE.has(code) && !this.failed) {
      this.failed = `${code} ${(e as Error).message}`.slice(0, 200);
      this.log.error({ err: (e as Error).message, code }, 'disk failure: this store is out of service; the cluster serves and re-replicates its copies from other nodes');
      this.fds.closeAll().catch(() => undefined);
      this.onDiskFailure(this.failed);
    }
    return fsErrorResult(e);
  }

  /**
   * Writes, syncs and reads back a small file: a disk that fails while no client touches it is
   * found within one probe interval, not at the next request that needs a copy there.
   */
  async probe(): Promise<void> {
    if (this.failed) return;
    const file = path.join(this.tmpDir, '.probe');
    try {
      await fs.writeFile(file, PROBE_DATA, { flush: true });
      const back = await fs.readFile(file);
      if (!back.equals(PROBE_DATA)) throw Object.assign(new Error('probe read back differs'), { code: 'EIO' });
      await fs.rm(file, { force: true });
    } catch (e) {
      this.fsError(e);
    }
  }

  /** Every operation on a failed disk is refused: its copies cannot be trusted. */
  private checkDisk(): void {
    if (this.failed) throw new SdError(Res.EIO, `disk failed: ${this.failed}`);
  }

  /** Keeps `bytes` free on the filesystem: new objects stop there (deletes need no space). */
  setReserve(bytes: number): void {
    this.reserve = bytes;
    this.spaceRead.at = 0;
  }

  /**
   * Free bytes as last read (at most about SPACE_TTL_MS old): a stale reading starts an asynchronous
   * statfs, so the I/O path never blocks on it. A create that slips past a reading a moment old still
   * meets the filesystem's own ENOSPC (NO_SPACE).
   */
  private availNow(): number {
    if (Date.now() - this.spaceRead.at > SPACE_TTL_MS && !this.spaceRefresh) {
      this.spaceRefresh = this.refreshSpace().catch(() => undefined).finally(() => { this.spaceRefresh = null; });
    }
    return this.spaceRead.avail;
  }

  /** Reads the filesystem's free space now; logs when the store becomes full or has room again. */
  async refreshSpace(): Promise<SpaceInfo> {
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
      const fields = { avail, reserve: this.reserve };
      if (full) this.log.warn(fields, 'store is full (free space under the reserve): new objects and recovery copies are refused until space is freed');
      else this.log.info(fields, 'store has room again');
    }
    return { size: this.spaceRead.total, avail, reserve: this.reserve, full };
  }

  /** Whether `bytes` more fit above the reserve. */
  hasRoom(bytes: number): boolean {
    return this.availNow() - bytes >= this.reserve;
  }

  /** Refuses a new object (or a recovery copy) of `bytes` that would eat into the reserve. */
  private ensureRoom(bytes: number): void {
    const avail = this.availNow();
    if (avail - bytes >= this.reserve) return;
    throw new SdError(Res.NO_SPACE, `store full: ${formatSize(Math.max(0, avail))} free, ${formatSize(this.reserve)} reserved (--reserved-space)`);
  }

  /**
   * Writes into existing objects may use half the reserve (a write into a hole allocates); the rest
   * stays for deletes and metadata. Inode (and attribute) writes are metadata: a delete writes its
   * inode, and must work on a full disk.
   */
  private ensureWriteRoom(oid: bigint, bytes: number): void {
    const kind = oidKind(oid);
    if (kind === 'inode' || kind === 'attr') return;
    const avail = this.availNow();
    if (avail - bytes >= this.reserve / 2) return;
    throw new SdError(Res.NO_SPACE, `store full: ${formatSize(Math.max(0, avail))} free, under half the ${formatSize(this.reserve)} reserve`);
  }

  pathOf(oid: bigint): string {
    return path.join(this.objDir, oidHex(oid));
  }

  async exists(oid: bigint): Promise<boolean> {
    if (this.failed) return false;
    try {
      await fs.access(this.pathOf(oid));
      return true;
    } catch {
      return false;
    }
  }

  /** Reads `length` bytes at `offset`; ranges never written read as zeros. */
  async read(oid: bigint, offset: number, length: number): Promise<Buffer> {
    this.checkDisk();
    const buf = Buffer.allocUnsafe(length);
    try {
      return await this.fds.use(oid, () => this.pathOf(oid), async (fh) => {
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
      throw this.fsError(e);
    }
  }

  /** Positional write into an existing object. */
  async write(oid: bigint, offset: number, data: Buffer, epoch: number): Promise<void> {
    this.checkDisk();
    this.ensureWriteRoom(oid, data.length);
    try {
      await this.fds.use(oid, () => this.pathOf(oid), async (fh) => {
        await writeAll(fh, data, offset);
      });
    } catch (e) {
      throw this.fsError(e);
    }
    this.markDirty(oid);
    if (this.lastEpoch.get(oid) !== epoch) {
      // recovery picks the copy with the newest last-write epoch: keep the xattr current
      try {
        setAttributeSync(this.pathOf(oid), XATTR_EPOCH, epochBytes(epoch));
      } catch (e) {
        throw this.fsError(e);
      }
      this.rememberEpoch(oid, epoch);
    }
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
    this.ensureRoom(data.length);
    await this.createLocks.run(oid, () => this.createLocked(oid, offset, data, epoch, cowFrom));
  }

  private async createLocked(oid: bigint, offset: number, data: Buffer, epoch: number, cowFrom?: bigint): Promise<void> {
    if (cowFrom === undefined && (await this.createNew(oid, offset, data, epoch))) return;
    const tmp = path.join(this.tmpDir, `${oidHex(oid)}.${crypto.randomBytes(4).toString('hex')}`);
    try {
      if (cowFrom !== undefined) {
        try {
          await fs.copyFile(this.pathOf(cowFrom), tmp);
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
      await fs.rename(tmp, this.pathOf(oid));
    } catch (e) {
      await fs.rm(tmp, { force: true }).catch(() => undefined);
      throw this.fsError(e);
    }
    await this.fds.drop(oid);
    this.dirDirty = true;
    this.markDirty(oid);
    this.rememberEpoch(oid, epoch);
  }

  /**
   * The common case, an object that does not exist yet: written in place (no temp file, no rename;
   * the epoch xattr is set while the data is written). Returns false when the object exists (then
   * it is replaced atomically instead). A failed write removes the file: nothing maps an object
   * before its create has succeeded, so a partial one is never read.
   */
  private async createNew(oid: bigint, offset: number, data: Buffer, epoch: number): Promise<boolean> {
    const file = this.pathOf(oid);
    let fh: fs.FileHandle;
    try {
      fh = await fs.open(file, fsc.O_RDWR | fsc.O_CREAT | fsc.O_EXCL);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EEXIST') return false;
      throw this.fsError(e);
    }
    try {
      setAttributeSync(file, XATTR_EPOCH, epochBytes(epoch));
      if (data.length) await writeAll(fh, data, offset);
    } catch (e) {
      await fh.close().catch(() => undefined);
      await fs.rm(file, { force: true }).catch(() => undefined);
      throw this.fsError(e);
    }
    await fh.close();
    await this.fds.drop(oid);
    this.dirDirty = true;
    this.markDirty(oid);
    this.rememberEpoch(oid, epoch);
    return true;
  }

  async remove(oid: bigint): Promise<boolean> {
    this.checkDisk();
    await this.fds.drop(oid);
    try {
      await fs.unlink(this.pathOf(oid));
      this.dirDirty = true;
      for (const set of this.dirty.values()) set.delete(oid);
      return true;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false;
      throw this.fsError(e);
    } finally {
      await this.fds.drop(oid); // an open that raced the unlink must not keep the removed file
    }
  }

  /**
   * Removes an orphan (a copy nothing maps) unless it was written after `cutoff` (ms since the
   * epoch): a client that creates the object now, then maps it, must keep it. Creates of the same
   * object wait meanwhile. A set-aside copy (`stale`) is removed without the age check.
   */
  async removeOrphan(oid: bigint, cutoff: number, stale = false): Promise<boolean> {
    if (stale) {
      try {
        await fs.unlink(this.stalePath(oid));
        return true;
      } catch {
        return false;
      }
    }
    return this.createLocks.run(oid, async () => {
      try {
        const st = await fs.stat(this.pathOf(oid));
        if (st.mtimeMs > cutoff || st.ctimeMs > cutoff) return false;
      } catch {
        return false;
      }
      return this.remove(oid);
    });
  }

  async epochOf(oid: bigint, stale = false): Promise<number> {
    try {
      const b = getAttributeSync(stale ? this.stalePath(oid) : this.pathOf(oid), XATTR_EPOCH);
      return b.length >= 4 ? b.readUInt32LE(0) : 0;
    } catch {
      return 0;
    }
  }

  /** Every object id in the store (files with 16 hex digit names). */
  async list(): Promise<bigint[]> {
    if (this.failed) return []; // a failed disk serves no copies
    let names: string[];
    try {
      names = await fs.readdir(this.objDir);
    } catch (e) {
      throw this.fsError(e);
    }
    const out: bigint[] = [];
    for (const n of names) {
      const oid = parseOidHex(n);
      if (oid !== null) out.push(oid);
    }
    return out;
  }

  private lastUsage: { at: number; objects: number; bytes: number } | null = null;
  private counting: Promise<{ objects: number; bytes: number }> | null = null;

  /**
   * Objects in the store and the bytes they occupy on disk (allocated blocks, so sparse objects count
   * what they use). Counting stats every object: a count at most `maxAgeMs` old is reused, and callers
   * asking while one runs share it.
   */
  async usage(maxAgeMs = 0): Promise<{ objects: number; bytes: number }> {
    if (this.failed) return { objects: 0, bytes: 0 };
    // a fresh count asked for: one of its own (one already running may have missed a recent write)
    if (maxAgeMs <= 0) return this.countUsage();
    const last = this.lastUsage;
    if (last && Date.now() - last.at <= maxAgeMs) return last;
    this.counting ??= this.countUsage().finally(() => { this.counting = null; });
    return this.counting;
  }

  private async countUsage(): Promise<{ objects: number; bytes: number }> {
    const at = Date.now();
    let bytes = 0;
    let objects = 0;
    for (const oid of await this.list()) {
      try {
        const st = await fs.stat(this.pathOf(oid));
        bytes += st.blocks * 512;
        objects++;
      } catch { /* removed meanwhile */ }
    }
    if (!this.lastUsage || this.lastUsage.at <= at) this.lastUsage = { at, objects, bytes };
    return { objects, bytes };
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
    await this.syncDir();
  }

  /** Makes everything durable: used at shutdown and by FLUSH_NODES. */
  async flushAll(): Promise<void> {
    if (this.failed) return;
    const owners = [...this.dirty.keys()];
    for (const o of owners) await this.flushVdi(o);
    await this.syncDir();
  }

  private async syncOne(oid: bigint): Promise<void> {
    try {
      await this.fds.use(oid, this.pathOf(oid), (fh) => fh.datasync());
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return; // removed since: nothing to keep
      throw this.fsError(e);
    }
  }

  private async syncDir(): Promise<void> {
    if (!this.dirDirty) return;
    this.dirDirty = false;
    try {
      const fh = await fs.open(this.objDir, fsc.O_RDONLY);
      try {
        await fh.sync();
      } finally {
        await fh.close();
      }
    } catch (e) {
      throw this.fsError(e);
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
    this.ensureRoom(data.length);
    const tmp = path.join(this.tmpDir, `${oidHex(oid)}.${crypto.randomBytes(4).toString('hex')}`);
    try {
      const fh = await fs.open(tmp, fsc.O_RDWR | fsc.O_CREAT | fsc.O_EXCL);
      try {
        // holes stay holes: a whole copy takes only the space of the data it holds
        if (data.length) await writeSparse(fh, data);
      } finally {
        await fh.close();
      }
      setAttributeSync(tmp, XATTR_EPOCH, epochBytes(epoch));
      await fs.link(tmp, this.pathOf(oid));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EEXIST') return false;
      throw this.fsError(e);
    } finally {
      await fs.rm(tmp, { force: true }).catch(() => undefined);
    }
    await this.fds.drop(oid);
    this.dirDirty = true;
    this.markDirty(oid);
    this.rememberEpoch(oid, epoch);
    return true;
  }

  private stalePath(oid: bigint): string {
    return path.join(this.staleDir, oidHex(oid));
  }

  /** Moves a set-aside copy back into service, unless a copy exists. */
  async restoreStale(oid: bigint): Promise<boolean> {
    this.checkDisk();
    try {
      // link, not rename: a copy a client write made meanwhile must win (link fails on it)
      await fs.link(this.stalePath(oid), this.pathOf(oid));
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'EEXIST') return false;
      throw this.fsError(e);
    }
    await fs.rm(this.stalePath(oid), { force: true });
    this.dirDirty = true;
    return true;
  }

  /** Takes a copy this node no longer owns out of service (kept in obj/.stale). */
  async setAside(oid: bigint): Promise<boolean> {
    this.checkDisk();
    await this.fds.drop(oid);
    try {
      await fs.rename(this.pathOf(oid), this.stalePath(oid));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false;
      throw this.fsError(e);
    } finally {
      await this.fds.drop(oid); // an open that raced the rename must not keep the set-aside file
    }
    this.dirDirty = true;
    for (const set of this.dirty.values()) set.delete(oid);
    return true;
  }

  async listStale(): Promise<bigint[]> {
    if (this.failed) return [];
    const out: bigint[] = [];
    let names: string[];
    try {
      names = await fs.readdir(this.staleDir);
    } catch (e) {
      throw this.fsError(e);
    }
    for (const n of names) {
      const oid = parseOidHex(n);
      if (oid !== null) out.push(oid);
    }
    return out;
  }

  /** Reads a set-aside copy (recovery's source of last resort); holes and the range past its end read as zeros. */
  async readStale(oid: bigint, offset: number, length: number): Promise<Buffer> {
    this.checkDisk();
    const buf = Buffer.alloc(length);
    let fh: fs.FileHandle;
    try {
      fh = await fs.open(this.stalePath(oid), fsc.O_RDONLY);
    } catch (e) {
      throw this.fsError(e);
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
  }

  /** Drops one set-aside copy (a newer one was copied in its place). */
  async dropStale(oid: bigint): Promise<void> {
    await fs.rm(this.stalePath(oid), { force: true });
  }

  /**
   * sha256 of an object's first `size` bytes (holes and the range past the end of the file read as
   * zeros), of the copy in service or of the set-aside one: a returning node keeps a set-aside copy
   * whose content is the current one instead of copying it again.
   */
  async hashOf(oid: bigint, size: number, stale = false): Promise<Buffer> {
    this.checkDisk();
    const h = crypto.createHash('sha256');
    const buf = Buffer.alloc(Math.min(size, 1 << 20));
    let fh: fs.FileHandle;
    try {
      fh = await fs.open(stale ? this.stalePath(oid) : this.pathOf(oid), fsc.O_RDONLY);
    } catch (e) {
      throw this.fsError(e);
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
  }

  /** Removes every set-aside copy; returns how many there were. */
  async purgeStale(): Promise<number> {
    const stale = await this.listStale();
    for (const oid of stale) await fs.rm(this.stalePath(oid), { force: true });
    return stale.length;
  }

  /** Moves every object to obj/.stale (copies that may be out of date); returns how many. */
  async quarantine(): Promise<number> {
    await this.fds.closeAll();
    let n = 0;
    for (const oid of await this.list()) {
      await fs.rename(this.pathOf(oid), path.join(this.staleDir, oidHex(oid)));
      n++;
    }
    await this.fds.closeAll(); // nothing opened meanwhile may keep a copy now set aside
    this.dirty.clear();
    this.lastEpoch.clear();
    this.dirDirty = true;
    return n;
  }

  /** Removes every object (cluster format wipes the store). */
  async wipe(): Promise<void> {
    await this.fds.closeAll();
    for (const oid of await this.list()) await fs.rm(this.pathOf(oid), { force: true });
    await fs.rm(this.staleDir, { recursive: true, force: true });
    await fs.mkdir(this.staleDir, { recursive: true });
    this.dirty.clear();
    this.dirDirty = true;
    await this.syncDir();
    this.log.info('store wiped');
  }

  async close(): Promise<void> {
    await this.fds.closeAll();
  }
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
