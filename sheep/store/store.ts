// The local object store (DESIGN.md §5): one sparse file per object under obj/, positional I/O,
// the epoch of each object's last write in the xattr user.sheepdog.epoch.

import fs from 'node:fs/promises';
import { constants as fsc } from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';
// fs-xattr's synchronous calls: its asynchronous ones leak their async work (~400 bytes and a handle per
// call) and do not keep the value buffer alive while a worker thread writes it. A sync get or set is
// 4-9 us on a cached inode (measured), cheaper than the thread-pool round trip the async one costs.
import { getAttributeSync, setAttributeSync } from 'fs-xattr';
import { Res, SdError } from '../../lib/proto.js';
import { oidHex, oidToVid, parseOidHex } from '../../lib/oid.js';
import type { Logger } from '../util/log.js';
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

  pathOf(oid: bigint): string {
    return path.join(this.objDir, oidHex(oid));
  }

  async exists(oid: bigint): Promise<boolean> {
    try {
      await fs.access(this.pathOf(oid));
      return true;
    } catch {
      return false;
    }
  }

  /** Reads `length` bytes at `offset`; ranges never written read as zeros. */
  async read(oid: bigint, offset: number, length: number): Promise<Buffer> {
    const buf = Buffer.allocUnsafe(length);
    try {
      return await this.fds.use(oid, this.pathOf(oid), async (fh) => {
        let done = 0;
        while (done < length) {
          const { bytesRead } = await fh.read(buf, done, length - done, offset + done);
          if (bytesRead === 0) break;
          done += bytesRead;
        }
        if (done < length) buf.fill(0, done);
        return buf;
      });
    } catch (e) {
      throw fsErrorResult(e);
    }
  }

  /** Positional write into an existing object. */
  async write(oid: bigint, offset: number, data: Buffer, epoch: number): Promise<void> {
    try {
      await this.fds.use(oid, this.pathOf(oid), async (fh) => {
        await writeAll(fh, data, offset);
      });
    } catch (e) {
      throw fsErrorResult(e);
    }
    this.markDirty(oid);
    if (this.lastEpoch.get(oid) !== epoch) {
      // recovery picks the copy with the newest last-write epoch: keep the xattr current
      try {
        setAttributeSync(this.pathOf(oid), XATTR_EPOCH, epochBytes(epoch));
      } catch (e) {
        throw fsErrorResult(e);
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
      throw fsErrorResult(e);
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
      throw fsErrorResult(e);
    }
    try {
      setAttributeSync(file, XATTR_EPOCH, epochBytes(epoch));
      if (data.length) await writeAll(fh, data, offset);
    } catch (e) {
      await fh.close().catch(() => undefined);
      await fs.rm(file, { force: true }).catch(() => undefined);
      throw fsErrorResult(e);
    }
    await fh.close();
    await this.fds.drop(oid);
    this.dirDirty = true;
    this.markDirty(oid);
    this.rememberEpoch(oid, epoch);
    return true;
  }

  async remove(oid: bigint): Promise<boolean> {
    await this.fds.drop(oid);
    try {
      await fs.unlink(this.pathOf(oid));
      this.dirDirty = true;
      for (const set of this.dirty.values()) set.delete(oid);
      return true;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false;
      throw fsErrorResult(e);
    } finally {
      await this.fds.drop(oid); // an open that raced the unlink must not keep the removed file
    }
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
    const names = await fs.readdir(this.objDir);
    const out: bigint[] = [];
    for (const n of names) {
      const oid = parseOidHex(n);
      if (oid !== null) out.push(oid);
    }
    return out;
  }

  /** Bytes the objects occupy on disk (allocated blocks, so sparse objects count what they use). */
  async usedBytes(): Promise<number> {
    let used = 0;
    for (const oid of await this.list()) {
      try {
        const st = await fs.stat(this.pathOf(oid));
        used += st.blocks * 512;
      } catch { /* removed meanwhile */ }
    }
    return used;
  }

  private markDirty(oid: bigint): void {
    const owner = oidToVid(oid);
    let s = this.dirty.get(owner);
    if (!s) this.dirty.set(owner, (s = new Set()));
    s.add(oid);
  }

  /** Makes every write to objects of VDI `owner` durable (fdatasync), plus created/removed names. */
  async flushVdi(owner: number): Promise<void> {
    const set = this.dirty.get(owner);
    this.dirty.delete(owner);
    if (set) {
      await Promise.all([...set].map((oid) => this.syncOne(oid)));
    }
    await this.syncDir();
  }

  /** Makes everything durable: used at shutdown and by FLUSH_NODES. */
  async flushAll(): Promise<void> {
    const owners = [...this.dirty.keys()];
    for (const o of owners) await this.flushVdi(o);
    await this.syncDir();
  }

  private async syncOne(oid: bigint): Promise<void> {
    try {
      await this.fds.use(oid, this.pathOf(oid), (fh) => fh.datasync());
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return; // removed since: nothing to keep
      throw fsErrorResult(e);
    }
  }

  private async syncDir(): Promise<void> {
    if (!this.dirDirty) return;
    this.dirDirty = false;
    const fh = await fs.open(this.objDir, fsc.O_RDONLY);
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
  }

  /**
   * A whole copy (recovery, or a new replica filled on demand), only when no copy exists: a client
   * write may have made one meanwhile, and writes applied to it must not be overwritten. The copy
   * is complete before it appears (temp file, then link, which fails on an existing name), so no
   * write or read ever meets it half-written.
   */
  async createIfAbsent(oid: bigint, data: Buffer, epoch: number): Promise<boolean> {
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
      throw fsErrorResult(e);
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
    try {
      // link, not rename: a copy a client write made meanwhile must win (link fails on it)
      await fs.link(this.stalePath(oid), this.pathOf(oid));
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'EEXIST') return false;
      throw fsErrorResult(e);
    }
    await fs.rm(this.stalePath(oid), { force: true });
    this.dirDirty = true;
    return true;
  }

  /** Takes a copy this node no longer owns out of service (kept in obj/.stale). */
  async setAside(oid: bigint): Promise<boolean> {
    await this.fds.drop(oid);
    try {
      await fs.rename(this.pathOf(oid), this.stalePath(oid));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false;
      throw fsErrorResult(e);
    } finally {
      await this.fds.drop(oid); // an open that raced the rename must not keep the set-aside file
    }
    this.dirDirty = true;
    for (const set of this.dirty.values()) set.delete(oid);
    return true;
  }

  async listStale(): Promise<bigint[]> {
    const out: bigint[] = [];
    for (const n of await fs.readdir(this.staleDir)) {
      const oid = parseOidHex(n);
      if (oid !== null) out.push(oid);
    }
    return out;
  }

  /** Reads a set-aside copy (recovery's source of last resort); holes and the range past its end read as zeros. */
  async readStale(oid: bigint, offset: number, length: number): Promise<Buffer> {
    const buf = Buffer.alloc(length);
    let fh: fs.FileHandle;
    try {
      fh = await fs.open(this.stalePath(oid), fsc.O_RDONLY);
    } catch (e) {
      throw fsErrorResult(e);
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
    const h = crypto.createHash('sha256');
    const buf = Buffer.alloc(Math.min(size, 1 << 20));
    let fh: fs.FileHandle;
    try {
      fh = await fs.open(stale ? this.stalePath(oid) : this.pathOf(oid), fsc.O_RDONLY);
    } catch (e) {
      throw fsErrorResult(e);
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
/** The probe value for checkXattrSupport. */
const PROBE_VALUE = Buffer.from([1]);
