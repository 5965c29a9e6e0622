// The VDI namespace: the in-use bitmap, name/tag/snapid lookup, create/snapshot/clone/delete with
// the exact semantics QEMU's sheepdog driver expects (DESIGN.md §3.1), locks, inode writes, and
// reclaim of data objects no live VDI references any more.

import { Res, SdError } from '../../lib/proto.js';
import { NR_VDIS, vidToVdiOid, vidToDataOid } from '../../lib/oid.js';
import { nameToVid } from '../../lib/fnv.js';
import {
  SD_INODE_HEADER_SIZE, SD_DATA_OBJ_MAX, InodeOff, decodeInodeHeader, encodeInodeHeader, makeCtime,
  objectCount, maxVdiSize, mapEntryOffset, SD_MIN_BLOCK_SIZE_SHIFT, SD_MAX_BLOCK_SIZE_SHIFT, type InodeHeader,
} from '../../lib/inode.js';
import { KeyedMutex } from '../util/mutex.js';
import { policyOf, ecPolicyProblem } from '../../lib/erasure-layout.js';
import type { ObjectIo } from '../replication/gateway.js';
import type { LockInfo } from '../../lib/admin.js';
import type { Logger } from '../util/log.js';

export interface VdiEntry extends InodeHeader {
  /** deleted VDIs keep their bitmap bit (QEMU's scan must not stop early) but match no name */
  deleted: boolean;
}

export interface NewVdiArgs {
  name: string;
  size: bigint;
  baseVid: number;
  /** NEW_VDI with snapid=1: turn `baseVid` into a snapshot and return a new working VDI */
  snapshot: boolean;
  copies: number;
  copyPolicy: number;
  blockSizeShift: number;
}

export interface NewVdiDecision {
  entry: VdiEntry;
  /** the clone's base, or for a snapshot the frozen (now read-only) former working VDI */
  base?: VdiEntry;
  snapshot?: boolean;
}

export interface BaseHeaderFields {
  tag: string;
  vmClockNsec: bigint;
  vmStateSize: bigint;
}

export interface HeaderUpdate {
  vid: number;
  tag: string;
  vdiSize: bigint;
  vmStateSize: bigint;
  vmClockNsec: bigint;
}

export interface VdiState {
  vdis: VdiEntry[];
  locks: Array<{ vid: number; exclusive: boolean; holders: number; owners: string[] }>;
}

export interface ClusterDefaults {
  copies: number;
  copyPolicy: number;
  blockSizeShift: number;
}

interface LockState {
  exclusive: boolean;
  holders: number;
  /** nids of the sheep the lockers came through; dropped when such a node leaves */
  owners: string[];
}


export class VdiTable {
  readonly bitmap = Buffer.alloc(NR_VDIS / 8);
  private readonly vdis = new Map<number, VdiEntry>();
  private readonly locks = new Map<number, LockState>();
  /** serialises read-modify-write of one inode (map updates, snapshot map copies, deletes) */
  private readonly inodeMutex = new KeyedMutex<number>();
  /** how a header change made through this node reaches every node's table (set by the cluster) */
  onHeaderChange: (u: HeaderUpdate) => Promise<void> = async (u) => this.applyHeader(u);
  /** told on every node when a VDI stops existing (the node then reclaims its own copies) */
  onDeleted: (e: VdiEntry) => void = () => undefined;

  constructor(private readonly gw: ObjectIo, private readonly log: Logger) {}

  // ------------------------------------------------------------------ state

  /** Rebuilds the table from the inode objects found in the store. */
  async load(oids: bigint[]): Promise<void> {
    this.vdis.clear();
    this.bitmap.fill(0);
    for (const oid of oids) {
      if (oid >> 63n !== 1n) continue;
      const hdr = decodeInodeHeader(await this.gw.read(oid, 0, SD_INODE_HEADER_SIZE));
      this.remember(hdr, hdr.name === '');
    }
    this.log.info({ vdis: this.vdis.size }, 'VDI table loaded');
  }

  clear(): void {
    this.vdis.clear();
    this.locks.clear();
    this.bitmap.fill(0);
  }

  private remember(h: InodeHeader, deleted: boolean): VdiEntry {
    const e: VdiEntry = { ...h, deleted };
    this.vdis.set(h.vdiId, e);
    this.bitmap[h.vdiId >>> 3] |= 1 << (h.vdiId & 7);
    return e;
  }

  get(vid: number): VdiEntry | undefined {
    return this.vdis.get(vid);
  }

  all(): VdiEntry[] {
    return [...this.vdis.values()];
  }

  private isSet(vid: number): boolean {
    return (this.bitmap[vid >>> 3] & (1 << (vid & 7))) !== 0;
  }

  /** The live VDIs of one name, in vid order (they sit in one run of set bits from the name's hash). */
  private family(name: string): VdiEntry[] {
    const out: VdiEntry[] = [];
    for (let vid = nameToVid(name); vid < NR_VDIS && this.isSet(vid); vid++) {
      const e = this.vdis.get(vid);
      if (e && !e.deleted && e.name === name) out.push(e);
    }
    return out;
  }

  /** The writable (non-snapshot) VDI of a name, if any. */
  working(name: string): VdiEntry | undefined {
    return this.family(name).find((e) => e.snapCtime === 0n);
  }

  /**
   * Resolves name + tag or snapid the way Sheepdog does: no tag and snapid 0 = the working VDI;
   * a missing name is NO_VDI, a missing tag/snapid of an existing name is NO_TAG.
   */
  lookup(name: string, tag: string, snapid: number): VdiEntry {
    const fam = this.family(name);
    if (!fam.length) throw new SdError(Res.NO_VDI, `VDI '${name}' not found`);
    let hit: VdiEntry | undefined;
    if (tag) hit = fam.find((e) => e.tag === tag && e.snapCtime !== 0n) ?? fam.find((e) => e.tag === tag);
    else if (snapid) hit = fam.find((e) => e.snapId === snapid);
    else hit = fam.find((e) => e.snapCtime === 0n);
    if (!hit) {
      if (tag || snapid) throw new SdError(Res.NO_TAG, `VDI '${name}' has no snapshot ${tag ? `tagged '${tag}'` : `with id ${snapid}`}`);
      throw new SdError(Res.NO_VDI, `VDI '${name}' has no working VDI (only snapshots)`);
    }
    return hit;
  }

  /** First free vid from the name's hash upward (linear probing, as QEMU's scan expects). */
  private allocateVid(name: string): number {
    for (let vid = nameToVid(name); vid < NR_VDIS; vid++) {
      if (vid !== 0 && !this.isSet(vid)) return vid;
    }
    throw new SdError(Res.FULL_VDI, `no free VDI id after the hash of '${name}'`);
  }

  // ------------------------------------------------------------------ NEW_VDI
  // A VDI operation is split in two: a decision that only reads and changes this table (applied in
  // the same order on every node, so every table agrees), and the object I/O that the node which
  // took the request does afterwards (finish*).

  /**
   * NEW_VDI decision: plain create, snapshot (a.snapshot) or clone/branch from a snapshot (baseVid).
   * `now` is the creation time the requesting node chose; `baseHdr` the working VDI's header fields
   * it read just before a snapshot (QEMU writes the tag there first).
   */
  applyNewVdi(a: NewVdiArgs, defaults: ClusterDefaults, now: bigint, baseHdr?: BaseHeaderFields): NewVdiDecision {
    if (!a.name) throw new SdError(Res.INVALID_PARMS, 'empty VDI name');
    if (a.snapshot) return this.applySnapshot(a, now, baseHdr);
    const bss = a.blockSizeShift || defaults.blockSizeShift;
    if (bss < SD_MIN_BLOCK_SIZE_SHIFT || bss > SD_MAX_BLOCK_SIZE_SHIFT) {
      throw new SdError(Res.INVALID_PARMS, `block_size_shift ${bss} outside ${SD_MIN_BLOCK_SIZE_SHIFT}..${SD_MAX_BLOCK_SIZE_SHIFT}`);
    }
    // no redundancy asked (copies 0): the cluster's, erasure code included, as Sheepdog does
    const copyPolicy = a.copies ? a.copyPolicy : defaults.copyPolicy;
    const ec = policyOf(copyPolicy);
    if (ec) {
      const why = ecPolicyProblem(ec.d, ec.p);
      if (why) throw new SdError(Res.INVALID_PARMS, `copy_policy ${copyPolicy}: ${why}`);
    }
    if (this.working(a.name)) throw new SdError(Res.VDI_EXIST, `VDI '${a.name}' exists already`);

    let base: VdiEntry | undefined;
    if (a.baseVid) {
      base = this.vdis.get(a.baseVid);
      if (!base || base.deleted) throw new SdError(Res.NO_BASE_VDI, `base VDI ${a.baseVid.toString(16)} not found`);
      if (base.snapCtime === 0n) throw new SdError(Res.INVALID_PARMS, 'only snapshots can be cloned');
    } else if (this.family(a.name).length) {
      // the name lives on only as snapshots: a new unrelated VDI under it would confuse their lineage
      throw new SdError(Res.VDI_EXIST, `VDI '${a.name}' exists already (as snapshots); clone or roll back instead`);
    }

    const blockSizeShift = base ? base.blockSizeShift : bss;
    const size = a.size === 0n && base ? base.vdiSize : a.size;
    if (size > maxVdiSize(blockSizeShift)) throw new SdError(Res.INVALID_PARMS, `VDI size ${size} exceeds the maximum ${maxVdiSize(blockSizeShift)}`);
    if (base && size < base.vdiSize) throw new SdError(Res.INVALID_PARMS, 'a clone cannot be smaller than its base');

    const vid = this.allocateVid(a.name);
    const hdr: InodeHeader = {
      name: a.name,
      tag: '',
      createTime: now,
      snapCtime: 0n,
      vmClockNsec: 0n,
      vdiSize: size,
      vmStateSize: 0n,
      copyPolicy: base ? base.copyPolicy : copyPolicy,
      storePolicy: 0,
      // an erasure-coded VDI's nr_copies is X+Y (its inode is kept as that many full copies)
      nrCopies: base ? base.nrCopies : ec ? ec.d + ec.p : a.copies || defaults.copies,
      blockSizeShift,
      snapId: this.family(a.name).reduce((m, e) => Math.max(m, e.snapId), 0) + 1,
      vdiId: vid,
      parentVdiId: base ? base.vdiId : 0,
    };
    return { entry: this.remember(hdr, false), base };
  }

  /** Snapshot decision: the working VDI becomes the snapshot; a new working VDI shares its objects. */
  private applySnapshot(a: NewVdiArgs, now: bigint, baseHdr?: BaseHeaderFields): NewVdiDecision {
    const base = this.vdis.get(a.baseVid);
    if (!base || base.deleted || base.name !== a.name) throw new SdError(Res.NO_BASE_VDI, `no VDI '${a.name}' with id ${hex(a.baseVid)}`);
    if (base.snapCtime !== 0n) throw new SdError(Res.INVALID_PARMS, `VDI ${hex(a.baseVid)} is already a snapshot`);
    const tag = baseHdr?.tag ?? base.tag;
    if (tag && this.family(a.name).some((f) => f.snapCtime !== 0n && f.tag === tag)) {
      throw new SdError(Res.VDI_EXIST, `VDI '${a.name}' already has a snapshot tagged '${tag}'`);
    }
    const vid = this.allocateVid(a.name);
    const hdr: InodeHeader = {
      ...base,
      tag: '',
      createTime: now,
      snapCtime: 0n,
      vmClockNsec: 0n,
      vmStateSize: 0n,
      snapId: this.family(a.name).reduce((m, e) => Math.max(m, e.snapId), 0) + 1,
      vdiId: vid,
      parentVdiId: base.vdiId,
    };
    const frozen = this.remember({ ...base, tag, vmClockNsec: baseHdr?.vmClockNsec ?? base.vmClockNsec,
      vmStateSize: baseHdr?.vmStateSize ?? base.vmStateSize, snapCtime: now }, false);
    const lock = this.locks.get(base.vdiId);
    if (lock) {
      // the client that holds the working VDI goes on writing the new one
      this.locks.delete(base.vdiId);
      this.locks.set(vid, lock);
    }
    return { entry: this.remember(hdr, false), base: frozen, snapshot: true };
  }

  /** Undoes a NEW_VDI decision whose object I/O failed (applied on every node like the decision). */
  applyUndoNewVdi(d: NewVdiDecision): void {
    this.vdis.delete(d.entry.vdiId);
    this.bitmap[d.entry.vdiId >>> 3] &= ~(1 << (d.entry.vdiId & 7));
    if (d.snapshot && d.base) {
      this.remember({ ...d.base, snapCtime: 0n }, false);
      const lock = this.locks.get(d.entry.vdiId);
      if (lock) {
        this.locks.delete(d.entry.vdiId);
        this.locks.set(d.base.vdiId, lock);
      }
    }
  }

  /** NEW_VDI I/O on the requesting node: the new inode (with the base's map), and the frozen base. */
  async finishNewVdi(d: NewVdiDecision): Promise<void> {
    const map = d.base ? await this.readMap(d.base) : null;
    await this.writeNewInode(d.entry, map);
    if (d.snapshot && d.base) {
      const snapField = Buffer.alloc(8);
      snapField.writeBigUInt64LE(d.base.snapCtime);
      await this.gw.write(vidToVdiOid(d.base.vdiId), InodeOff.snapCtime, snapField);
      this.log.info({ snapshot: hex(d.base.vdiId), working: hex(d.entry.vdiId), name: d.entry.name, tag: d.base.tag }, 'snapshot created');
    } else {
      this.log.info({ vid: hex(d.entry.vdiId), name: d.entry.name, size: String(d.entry.vdiSize), base: d.base ? hex(d.base.vdiId) : undefined }, 'VDI created');
    }
  }

  private async writeNewInode(hdr: InodeHeader, map: Uint32Array | null): Promise<void> {
    let used = 0;
    if (map) for (let i = 0; i < map.length; i++) if (map[i]) used = i + 1;
    const buf = Buffer.alloc(SD_INODE_HEADER_SIZE + 4 * used);
    encodeInodeHeader(hdr, buf);
    for (let i = 0; i < used; i++) buf.writeUInt32LE(map![i], SD_INODE_HEADER_SIZE + 4 * i);
    await this.gw.create(vidToVdiOid(hdr.vdiId), 0, buf);
  }

  /** The data_vdi_id entries a VDI's size spans. */
  async readMap(e: InodeHeader): Promise<Uint32Array> {
    const n = Math.min(objectCount(e.vdiSize, e.blockSizeShift), SD_DATA_OBJ_MAX);
    const out = new Uint32Array(n);
    if (n === 0) return out;
    const b = await this.gw.read(vidToVdiOid(e.vdiId), SD_INODE_HEADER_SIZE, 4 * n);
    for (let i = 0; i < n; i++) out[i] = b.readUInt32LE(4 * i);
    return out;
  }

  // ------------------------------------------------------------------ DEL_VDI

  /** DEL_VDI decision: the working VDI (no tag, snapid 0) or a snapshot stops existing by name. */
  applyDelete(name: string, tag: string, snapid: number): VdiEntry {
    const e = this.lookup(name, tag, snapid);
    this.remember({ ...e, name: '', tag: '', vdiSize: 0n }, true);
    this.locks.delete(e.vdiId);
    this.onDeleted(e);
    return e;
  }

  /**
   * DEL_VDI I/O, after the decision (which is the delete: every node's table and vdi-state file has
   * it): clear the inode's name and size (the header is rewritten in place, which needs no space on
   * a full disk), then free the objects nothing else maps. The map stays as it was: the size is 0,
   * so nothing reads it, and zeroing it would allocate blocks. What this cannot finish (a node
   * away, this gateway dying) each node's orphan sweep finishes.
   */
  async finishDelete(e: VdiEntry): Promise<void> {
    await this.inodeMutex.run(e.vdiId, async () => {
      const map = await this.readMap(e);
      const cleared = Buffer.alloc(SD_INODE_HEADER_SIZE);
      encodeInodeHeader({ ...e, name: '', tag: '', vdiSize: 0n }, cleared);
      const cur = await this.gw.read(vidToVdiOid(e.vdiId), 0, SD_INODE_HEADER_SIZE);
      cleared.set(cur.subarray(InodeOff.childVdiId), InodeOff.childVdiId);
      await this.gw.write(vidToVdiOid(e.vdiId), 0, cleared);
      const candidates: Array<[number, number]> = [];
      for (let i = 0; i < map.length; i++) if (map[i]) candidates.push([map[i], i]);
      const freed = await this.reclaim(candidates, e.vdiId);
      this.log.info({ vid: hex(e.vdiId), name: e.name, tag: e.tag, snapid: e.snapId, freed }, 'VDI deleted');
    });
  }

  /**
   * Removes the data objects (owner vid, idx) that no live VDI maps any more. Only VDIs of the same
   * lineage (descendants of the owner) can reference an object, so only their maps are read.
   */
  private async reclaim(candidates: Array<[number, number]>, skipVid: number): Promise<number> {
    if (!candidates.length) return 0;
    const owners = new Set(candidates.map(([v]) => v));
    const readers = this.all().filter((v) => !v.deleted && v.vdiId !== skipVid && [...owners].some((o) => this.descendsFrom(v, o)));
    const maps = await Promise.all(readers.map((v) => this.readMap(v)));
    let freed = 0;
    for (const [owner, idx] of candidates) {
      if (maps.some((m) => idx < m.length && m[idx] === owner)) continue;
      if (await this.gw.remove(vidToDataOid(owner, idx))) freed++;
    }
    return freed;
  }

  /** Live VDIs that may map objects of `vid` (itself and its descendants). */
  liveLineage(vid: number): VdiEntry[] {
    return this.all().filter((v) => !v.deleted && this.descendsFrom(v, vid));
  }

  /** A deleted VDI no live VDI descends from: none of its objects is mapped by anything. */
  unreferenced(vid: number): boolean {
    const e = this.vdis.get(vid);
    return !!e && e.deleted && this.liveLineage(vid).length === 0;
  }

  private descendsFrom(v: VdiEntry, ancestor: number): boolean {
    for (let cur: VdiEntry | undefined = v, hops = 0; cur && hops < 1 << 16; hops++) {
      if (cur.vdiId === ancestor) return true;
      cur = cur.parentVdiId ? this.vdis.get(cur.parentVdiId) : undefined;
    }
    return false;
  }

  // ------------------------------------------------------------------ object-level rules

  /** Writes may only go to a live, writable VDI's objects; a snapshot (or deleted VDI) is READONLY. */
  writable(vid: number): VdiEntry {
    const e = this.vdis.get(vid);
    if (!e) throw new SdError(Res.NO_VDI, `no VDI with id ${hex(vid)}`);
    if (e.deleted || e.snapCtime !== 0n) throw new SdError(Res.READONLY, `VDI ${hex(vid)} is ${e.deleted ? 'deleted' : 'a snapshot'}`);
    return e;
  }

  /**
   * WRITE_OBJ on an inode. Header bytes: tag, vm state, vm clock and the size (grow only) may change;
   * identity fields stay the server's. Map entries may only be set to 0, the VDI's own id, or left as
   * they are; objects a changed entry no longer references are freed when nothing else maps them.
   */
  async writeInode(vid: number, offset: number, data: Buffer): Promise<void> {
    const e = this.writable(vid);
    const oid = vidToVdiOid(vid);
    await this.inodeMutex.run(vid, async () => {
      const end = offset + data.length;
      if (offset < SD_INODE_HEADER_SIZE) {
        const hdrEnd = Math.min(end, SD_INODE_HEADER_SIZE);
        const cur = await this.gw.read(oid, 0, SD_INODE_HEADER_SIZE);
        const next = Buffer.from(cur);
        data.copy(next, offset, 0, hdrEnd - offset);
        const h = decodeInodeHeader(next);
        if (h.name !== e.name || h.vdiId !== vid) throw new SdError(Res.INVALID_PARMS, 'inode write would change the VDI name or id');
        if (h.vdiSize < e.vdiSize) throw new SdError(Res.INVALID_PARMS, 'shrinking a VDI is not supported');
        if (h.vdiSize > maxVdiSize(e.blockSizeShift)) throw new SdError(Res.INVALID_PARMS, 'VDI size over the maximum');
        // keep identity and lineage as the server knows them (clients replay stale headers)
        const keep: InodeHeader = { ...h, createTime: e.createTime, snapCtime: e.snapCtime, snapId: e.snapId, parentVdiId: e.parentVdiId,
          nrCopies: e.nrCopies, copyPolicy: e.copyPolicy, storePolicy: e.storePolicy, blockSizeShift: e.blockSizeShift };
        encodeInodeHeader(keep, next);
        await this.gw.write(oid, 0, next);
        if (keep.tag !== e.tag || keep.vdiSize !== e.vdiSize || keep.vmStateSize !== e.vmStateSize || keep.vmClockNsec !== e.vmClockNsec) {
          await this.onHeaderChange({ vid, tag: keep.tag, vdiSize: keep.vdiSize, vmStateSize: keep.vmStateSize, vmClockNsec: keep.vmClockNsec });
        }
      }
      if (end > SD_INODE_HEADER_SIZE) {
        const mapStart = Math.max(offset, SD_INODE_HEADER_SIZE);
        if ((mapStart - SD_INODE_HEADER_SIZE) % 4 !== 0 || (end - mapStart) % 4 !== 0) {
          throw new SdError(Res.INVALID_PARMS, 'map update not aligned to 4-byte entries');
        }
        const part = data.subarray(mapStart - offset);
        const old = await this.gw.read(oid, mapStart, part.length);
        const firstIdx = (mapStart - SD_INODE_HEADER_SIZE) / 4;
        const changed: Array<[number, number]> = [];
        for (let k = 0; k < part.length; k += 4) {
          const nv = part.readUInt32LE(k);
          const ov = old.readUInt32LE(k);
          if (nv === ov) continue;
          if (nv !== 0 && nv !== vid) throw new SdError(Res.INVALID_PARMS, `map entry ${firstIdx + k / 4} may only become 0 or ${hex(vid)}`);
          if (ov) changed.push([ov, firstIdx + k / 4]);
        }
        await this.gw.write(oid, mapStart, part);
        await this.reclaim(changed, -1);
      }
    });
  }

  /** DISCARD_OBJ on a data oid: the VDI stops mapping that block; its object is freed if unshared. */
  async discard(vid: number, idx: number): Promise<void> {
    const e = this.writable(vid);
    if (idx >= objectCount(e.vdiSize, e.blockSizeShift)) throw new SdError(Res.INVALID_PARMS, 'object index beyond the VDI size');
    const zero = Buffer.alloc(4);
    await this.writeInode(vid, mapEntryOffset(idx), zero);
  }

  /** A header change written by a client (tag, size, VM state), applied on every node. */
  applyHeader(u: HeaderUpdate): void {
    const e = this.vdis.get(u.vid);
    if (!e || e.deleted) return;
    this.remember({ ...e, tag: u.tag, vdiSize: u.vdiSize, vmStateSize: u.vmStateSize, vmClockNsec: u.vmClockNsec }, false);
  }

  /**
   * ALTER_VDI_COPY decision: the VDI's objects have `copies` copies from now on (placement asks this
   * table). Only a standalone working VDI: objects shared with a parent or children are placed by
   * their owner's count, so changing one VDI of a family would leave its shared blocks as they were.
   * Returns the old count.
   */
  applyAlterCopy(vid: number, copies: number): number {
    const e = this.vdis.get(vid);
    if (!e || e.deleted) throw new SdError(Res.NO_VDI, `no VDI with id ${hex(vid)}`);
    if (e.snapCtime !== 0n) throw new SdError(Res.INVALID_PARMS, `VDI ${hex(vid)} is a snapshot`);
    if (e.copyPolicy !== 0) throw new SdError(Res.INVALID_PARMS, 'changing the redundancy of an erasure-coded VDI is not supported');
    if (e.parentVdiId !== 0 || this.all().some((v) => !v.deleted && v.parentVdiId === vid)) {
      throw new SdError(Res.INVALID_PARMS, `only a standalone VDI can change its redundancy level (${e.name} has a parent or children)`);
    }
    if (e.nrCopies === copies) throw new SdError(Res.INVALID_PARMS, `${e.name} already has ${copies} copies`);
    this.remember({ ...e, nrCopies: copies }, false);
    return e.nrCopies;
  }

  // ------------------------------------------------------------------ locks (cluster state)

  /** LOCK_VDI: resolves the VDI; takes a lock on working VDIs (enforced on --lock clusters). */
  lock(name: string, tag: string, snapid: number, shared: boolean, enforce: boolean, owner = ''): VdiEntry {
    const e = this.lookup(name, tag, snapid);
    if (e.snapCtime !== 0n) return e; // snapshots are read-only: nothing to protect
    const cur = this.locks.get(e.vdiId);
    if (cur && enforce && (cur.exclusive || !shared)) throw new SdError(Res.VDI_LOCKED, `VDI '${name}' is locked`);
    if (cur) {
      cur.holders++;
      cur.exclusive = cur.exclusive || !shared;
      if (owner && !cur.owners.includes(owner)) cur.owners.push(owner);
    } else {
      this.locks.set(e.vdiId, { exclusive: !shared, holders: 1, owners: owner ? [owner] : [] });
    }
    return e;
  }

  release(vid: number): void {
    const cur = this.locks.get(vid);
    if (!cur) return;
    if (--cur.holders <= 0) this.locks.delete(vid);
  }

  /** Drops a lock whatever its holders (operator's `collie vdi lock unlock`). */
  forceRelease(vid: number): boolean {
    return this.locks.delete(vid);
  }

  /** A node left the cluster: the locks taken through it go with it. */
  dropLocksOf(owner: string): void {
    for (const [vid, l] of this.locks) {
      l.owners = l.owners.filter((o) => o !== owner);
      if (!l.owners.length) this.locks.delete(vid);
    }
  }

  // ------------------------------------------------------------------ state transfer

  /** Everything a joining node needs to hold the same table (msgpack-able). */
  exportState(): VdiState {
    return {
      vdis: this.all(),
      locks: [...this.locks].map(([vid, l]) => ({ vid, exclusive: l.exclusive, holders: l.holders, owners: [...l.owners] })),
    };
  }

  importState(s: VdiState): void {
    this.clear();
    for (const e of s.vdis) this.remember(e, e.deleted);
    for (const l of s.locks) this.locks.set(l.vid, { exclusive: l.exclusive, holders: l.holders, owners: [...l.owners] });
  }

  lockList(): LockInfo[] {
    const out: LockInfo[] = [];
    for (const [vid, l] of this.locks) {
      const e = this.vdis.get(vid);
      if (e) out.push({ vid, name: e.name, tag: e.tag, snapId: e.snapCtime !== 0n ? e.snapId : 0, exclusive: l.exclusive, holders: l.holders, owners: [...l.owners] });
    }
    return out;
  }
}

export function hex(vid: number): string {
  return vid.toString(16);
}
