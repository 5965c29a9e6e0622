// The local store of `collie cluster snapshot` (what Sheepdog's dog keeps in its "farm"): objects
// stored once under the sha256 of their content, one manifest per tag naming the objects each VDI
// maps, and an index of the tags. Layout of PATH:
//
//   PATH/index.json                 {"format","version","snapshots":[{idx,tag,time,manifest,vdis,...}]}
//   PATH/manifests/<sha256>.json    one tag's manifest, named by the sha256 of its bytes
//   PATH/objects/<2 hex>/<62 hex>   an object's bytes, named by their sha256 (first two digits: subfolder)
//   PATH/lock                       pid of the save in progress (only while one runs)
//
// A save writes objects first, then the manifest, then a new index (temporary file, fsync, rename):
// until that rename the tag does not exist, so an interrupted save lists nothing half-written; the
// objects it did write are found again (same content, same name) by the next save. Every read
// checks the sha256 of what it read against the name it was read under.

import crypto from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';

export const STORE_FORMAT = 'collie-cluster-snapshot';
export const STORE_VERSION = 1;

/** Objects up to this size are hashed and checked in memory; larger ones stream through a file. */
const IN_MEMORY_MAX = 32 * 1024 * 1024;
/** Pieces larger objects are read and written in. */
export const STREAM_CHUNK = 4 * 1024 * 1024;

/** A problem with PATH (missing, not a store, corrupted, locked): collie prints the message. */
export class SnapshotStoreError extends Error {}

export interface SnapshotEntry {
  /** 1, 2, ... in the order the tags were saved (dog's Index column) */
  idx: number;
  tag: string;
  /** when the save finished, ms since 1970 */
  time: number;
  /** sha256 of the manifest file */
  manifest: string;
  vdis: number;
  /** distinct objects the tag refers to, and their bytes: what a load writes */
  objects: number;
  bytes: number;
  /** objects and bytes this save added to PATH (the rest was there already) */
  addedObjects: number;
  addedBytes: number;
}

interface StoreIndex {
  format: string;
  version: number;
  snapshots: SnapshotEntry[];
}

/** One mapped block of a VDI: [object index, owner vid (who wrote it: shared when a parent's), sha256]. */
export type ManifestObject = [idx: number, owner: number, sha256: string];

export interface ManifestAttr {
  key: string;
  /** sha256 of the value (an object of its own) */
  value: string;
  size: number;
}

export interface ManifestVdi {
  name: string;
  tag: string;
  snapId: number;
  /** the vid in the saved cluster; parent is the saved parent's vid (0: none) */
  vid: number;
  parent: number;
  snapshot: boolean;
  /**
   * A deleted snapshot that saved VDIs still descend from (and share blocks with): rebuilt so they
   * keep their parent and their shared blocks, then deleted again. Its name is the one it most
   * likely had (deleting clears it); it maps the blocks it owned that its descendants still map.
   */
  deleted?: boolean;
  /** u64 inode fields as decimal strings */
  createTime: string;
  snapCtime: string;
  vdiSize: string;
  vmStateSize: string;
  vmClockNsec: string;
  nrCopies: number;
  blockSizeShift: number;
  copyPolicy: number;
  storePolicy: number;
  /** sha256 of the inode header (4664 bytes) as it was read */
  inode: string;
  objects: ManifestObject[];
  /** VM state objects: [index, sha256] */
  vmstate: Array<[number, string]>;
  attrs: ManifestAttr[];
}

export interface Manifest {
  format: string;
  version: number;
  tag: string;
  time: number;
  /** the saved cluster's defaults: a load into an unformatted cluster formats it with them */
  cluster: { copies: number; blockSizeShift: number; lock: boolean };
  vdis: ManifestVdi[];
}

export const sha256 = (b: Buffer | string): string => crypto.createHash('sha256').update(b).digest('hex');

const HEX64 = /^[0-9a-f]{64}$/;

export class SnapshotStore {
  private readonly madeDirs = new Set<string>();

  private constructor(readonly dir: string) {}

  /** Opens PATH for a save: created when missing (its parent must exist, as dog's mkdir). */
  static async create(dir: string): Promise<SnapshotStore> {
    try {
      await fsp.mkdir(dir, { mode: 0o755 });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw new SnapshotStoreError(`cannot create ${dir}: ${(e as Error).message}`);
    }
    const st = await fsp.stat(dir);
    if (!st.isDirectory()) throw new SnapshotStoreError(`Path is not a directory: ${dir}`);
    const s = new SnapshotStore(dir);
    await s.readIndex(); // refuses a directory holding something else's index.json
    return s;
  }

  /** Opens an existing PATH for reading (list, show, load). */
  static async open(dir: string): Promise<SnapshotStore> {
    let st: fs.Stats;
    try {
      st = await fsp.stat(dir);
    } catch {
      throw new SnapshotStoreError(`${dir} does not exist`);
    }
    if (!st.isDirectory()) throw new SnapshotStoreError(`Path is not a directory: ${dir}`);
    return new SnapshotStore(dir);
  }

  private get indexPath(): string {
    return path.join(this.dir, 'index.json');
  }

  objectPath(hash: string): string {
    return path.join(this.dir, 'objects', hash.slice(0, 2), hash.slice(2));
  }

  private manifestPath(hash: string): string {
    return path.join(this.dir, 'manifests', `${hash}.json`);
  }

  // ------------------------------------------------------------------ index

  /** The tags saved so far (none for a directory no save has finished in yet). */
  async readIndex(): Promise<SnapshotEntry[]> {
    let text: string;
    try {
      text = await fsp.readFile(this.indexPath, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw new SnapshotStoreError(`cannot read ${this.indexPath}: ${(e as Error).message}`);
    }
    let idx: StoreIndex;
    try {
      idx = JSON.parse(text) as StoreIndex;
    } catch {
      throw new SnapshotStoreError(`${this.indexPath} is corrupted (not JSON)`);
    }
    if (idx?.format !== STORE_FORMAT || !Array.isArray(idx.snapshots)) {
      throw new SnapshotStoreError(`${this.dir} is not a collie cluster snapshot store (${this.indexPath} is something else)`);
    }
    if (idx.version > STORE_VERSION) throw new SnapshotStoreError(`${this.dir} is a store of format version ${idx.version}; this collie reads up to ${STORE_VERSION}`);
    return idx.snapshots;
  }

  /** Finds a tag, or an index when `spec` is all digits (as dog's load/show take <tag|idx>). */
  async find(spec: string): Promise<SnapshotEntry | undefined> {
    const all = await this.readIndex();
    return /^\d+$/.test(spec) ? all.find((s) => s.idx === Number(spec)) : all.find((s) => s.tag === spec);
  }

  /** Adds a tag: the new index replaces the old one in a single rename. */
  async appendIndex(entry: Omit<SnapshotEntry, 'idx'>): Promise<SnapshotEntry> {
    const snapshots = await this.readIndex();
    if (snapshots.some((s) => s.tag === entry.tag)) throw new SnapshotStoreError(`tag ${entry.tag} was saved meanwhile`);
    const full: SnapshotEntry = { idx: snapshots.reduce((m, s) => Math.max(m, s.idx), 0) + 1, ...entry };
    const idx: StoreIndex = { format: STORE_FORMAT, version: STORE_VERSION, snapshots: [...snapshots, full] };
    await this.atomicWrite(this.indexPath, Buffer.from(`${JSON.stringify(idx, null, 1)}\n`));
    return full;
  }

  // ------------------------------------------------------------------ manifests

  async writeManifest(m: Manifest): Promise<string> {
    const bytes = Buffer.from(JSON.stringify(m));
    const hash = sha256(bytes);
    await this.ensureDir(path.join(this.dir, 'manifests'));
    await this.atomicWrite(this.manifestPath(hash), bytes);
    return hash;
  }

  async readManifest(hash: string): Promise<Manifest> {
    const file = this.manifestPath(hash);
    let bytes: Buffer;
    try {
      bytes = await fsp.readFile(file);
    } catch {
      throw new SnapshotStoreError(`manifest ${file} is missing`);
    }
    if (sha256(bytes) !== hash) throw new SnapshotStoreError(`manifest ${file} is corrupted (its sha256 is not the one in its name)`);
    const m = JSON.parse(bytes.toString('utf8')) as Manifest;
    if (m.format !== STORE_FORMAT || !Array.isArray(m.vdis)) throw new SnapshotStoreError(`manifest ${file} is not a collie cluster snapshot manifest`);
    return m;
  }

  // ------------------------------------------------------------------ objects

  /**
   * Stores an object of `size` bytes read piece by piece through `read` (offset, length), unless an
   * object of the same content is there already. Returns its sha256 and whether it was new.
   */
  async putObject(size: number, read: (off: number, len: number) => Promise<Buffer>): Promise<{ hash: string; added: boolean }> {
    if (size <= IN_MEMORY_MAX) {
      const data = await read(0, size);
      const hash = sha256(data);
      if (await this.has(hash, size)) return { hash, added: false };
      await this.ensureDir(path.dirname(this.objectPath(hash)));
      await this.atomicWrite(this.objectPath(hash), data);
      return { hash, added: true };
    }
    // too large to hold: stream into a temporary file, hashing on the way, and name it at the end
    await this.ensureDir(path.join(this.dir, 'objects'));
    const tmp = path.join(this.dir, 'objects', `.tmp-${process.pid}-${crypto.randomBytes(6).toString('hex')}`);
    const h = crypto.createHash('sha256');
    const fh = await fsp.open(tmp, 'w', 0o644);
    try {
      for (let off = 0; off < size; off += STREAM_CHUNK) {
        const piece = await read(off, Math.min(STREAM_CHUNK, size - off));
        h.update(piece);
        await fh.write(piece);
      }
      await fh.datasync();
    } finally {
      await fh.close();
    }
    const hash = h.digest('hex');
    if (await this.has(hash, size)) {
      await fsp.rm(tmp, { force: true });
      return { hash, added: false };
    }
    await this.ensureDir(path.dirname(this.objectPath(hash)));
    await fsp.rename(tmp, this.objectPath(hash));
    return { hash, added: true };
  }

  /** Whether an object of this name (and size) is stored. */
  async has(hash: string, size: number): Promise<boolean> {
    try {
      return (await fsp.stat(this.objectPath(hash))).size === size;
    } catch {
      return false;
    }
  }

  /** An object's bytes, checked against its name (for objects up to 32 MiB). */
  async readObject(hash: string): Promise<Buffer> {
    const file = this.objectPath(hash);
    if (!HEX64.test(hash)) throw new SnapshotStoreError(`the manifest names an object '${hash}' that is no sha256`);
    let data: Buffer;
    try {
      data = await fsp.readFile(file);
    } catch {
      throw new SnapshotStoreError(`object ${file} is missing`);
    }
    const got = sha256(data);
    if (got !== hash) throw corrupted(file, got);
    return data;
  }

  /** Checks an object of any size against its name, reading it in pieces; returns its size. */
  async verifyObject(hash: string): Promise<number> {
    const file = this.objectPath(hash);
    if (!HEX64.test(hash)) throw new SnapshotStoreError(`the manifest names an object '${hash}' that is no sha256`);
    const h = crypto.createHash('sha256');
    let size = 0;
    try {
      for await (const chunk of fs.createReadStream(file, { highWaterMark: STREAM_CHUNK }) as AsyncIterable<Buffer>) {
        h.update(chunk);
        size += chunk.length;
      }
    } catch {
      throw new SnapshotStoreError(`object ${file} is missing`);
    }
    const got = h.digest('hex');
    if (got !== hash) throw corrupted(file, got);
    return size;
  }

  /** A piece of a (large) object, after verifyObject checked the whole of it. */
  async readRange(hash: string, off: number, len: number): Promise<Buffer> {
    const fh = await fsp.open(this.objectPath(hash), 'r');
    try {
      const b = Buffer.alloc(len);
      const { bytesRead } = await fh.read(b, 0, len, off);
      if (bytesRead !== len) throw new SnapshotStoreError(`object ${this.objectPath(hash)} is shorter than the manifest says`);
      return b;
    } finally {
      await fh.close();
    }
  }

  // ------------------------------------------------------------------ the save lock

  /**
   * Takes PATH's lock for a save: a second save into the same PATH at the same time is refused.
   * A lock left by a save that died (its pid is gone) is taken over.
   */
  async lock(): Promise<() => Promise<void>> {
    const file = path.join(this.dir, 'lock');
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        await fsp.writeFile(file, `${process.pid}\n`, { flag: 'wx' });
        return () => fsp.rm(file, { force: true });
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw new SnapshotStoreError(`cannot lock ${this.dir}: ${(e as Error).message}`);
      }
      const pid = Number((await fsp.readFile(file, 'utf8').catch(() => '')).trim());
      if (pid && pid !== process.pid && alive(pid)) throw new SnapshotStoreError(`another save into ${this.dir} is running (pid ${pid})`);
      await fsp.rm(file, { force: true }); // left by a save that died
    }
    throw new SnapshotStoreError(`cannot lock ${this.dir}`);
  }

  // ------------------------------------------------------------------ files

  private async ensureDir(dir: string): Promise<void> {
    if (this.madeDirs.has(dir)) return;
    await fsp.mkdir(dir, { recursive: true, mode: 0o755 });
    this.madeDirs.add(dir);
  }

  /** Writes a file under a temporary name, syncs it, and renames it into place (then syncs the folder). */
  private async atomicWrite(file: string, data: Buffer): Promise<void> {
    const tmp = `${file}.tmp-${process.pid}-${crypto.randomBytes(6).toString('hex')}`;
    const fh = await fsp.open(tmp, 'w', 0o644);
    try {
      await fh.writeFile(data);
      await fh.datasync();
    } finally {
      await fh.close();
    }
    await fsp.rename(tmp, file);
    await syncDir(path.dirname(file));
  }
}

function corrupted(file: string, got: string): SnapshotStoreError {
  return new SnapshotStoreError(`object ${file} is corrupted: its content's sha256 is ${got}, not the one in its name`);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

async function syncDir(dir: string): Promise<void> {
  const fh = await fsp.open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}
