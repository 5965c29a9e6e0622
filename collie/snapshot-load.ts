// collie cluster snapshot load: rebuilds the VDIs of a saved tag in a cluster with exactly the
// requests QEMU and collie use (create, clone, snapshot, write, delete), so the loaded family has the
// saved shape: a snapshot is rebuilt as a working VDI that is filled and then snapshotted, its
// children start from it, and a block a VDI shared with its parent in the saved cluster stays shared.

import { Op, SdError } from '../lib/proto.js';
import type { SheepClient } from '../lib/client.js';
import type { StatClusterReply } from '../lib/admin.js';
import { OpenVdi } from '../lib/vdi-io.js';
import { VMSTATE_BIT, vidToDataOid, vidToVdiOid } from '../lib/oid.js';
import { SD_INODE_HEADER_SIZE, decodeInodeHeader, encodeInodeHeader, mapEntryOffset } from '../lib/inode.js';
import { SnapshotStore, SnapshotStoreError, STREAM_CHUNK, type ManifestObject, type ManifestVdi, type Manifest } from '../lib/snapshot-store.js';
import { CliError, EXIT_SYSFAIL, confirm, reason, withClient, type ConnOpts } from './common.js';
import { allInodes } from './vdi.js';
import { progress, type Progress } from './progress.js';

/** Objects larger than this go to the cluster in pieces (a request carries at most 32 MiB). */
const WHOLE_WRITE_MAX = 32 * 1024 * 1024;
/** Object writes kept in flight. */
const DEPTH = 8;

/** Runs `fn` over `items`, `depth` at a time; the first failure stops the rest. */
export async function pool<T>(items: T[], depth: number, fn: (t: T) => Promise<void>): Promise<void> {
  let next = 0;
  let failed = false;
  const worker = async () => {
    while (!failed && next < items.length) {
      const item = items[next++];
      try {
        await fn(item);
      } catch (e) {
        failed = true;
        throw e;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(depth, items.length) }, worker));
}

interface Lineage {
  name: string;
  id: number;
  parent: number;
}

/**
 * The VDIs named (every VDI of each name: working VDI and snapshots) and what they need: their
 * ancestors, snapshots of other names included (a clone needs the snapshot it was cloned from).
 * No names: all of them. `missing` lists the names that match nothing.
 */
export function withAncestors<T>(all: T[], names: string[], key: (t: T) => Lineage): { chosen: T[]; missing: string[] } {
  if (!names.length) return { chosen: all, missing: [] };
  const byId = new Map(all.map((t) => [key(t).id, t]));
  const keep = new Set<number>();
  for (const t of all) {
    if (!names.includes(key(t).name)) continue;
    for (let cur: T | undefined = t; cur && !keep.has(key(cur).id); cur = byId.get(key(cur).parent)) keep.add(key(cur).id);
  }
  const found = new Set(all.filter((t) => names.includes(key(t).name)).map((t) => key(t).name));
  return { chosen: all.filter((t) => keep.has(key(t).id)), missing: names.filter((n) => !found.has(n)) };
}

const lineage = (v: ManifestVdi): Lineage => ({ name: v.name, id: v.vid, parent: v.parent });

function vmstateOid(vid: number, idx: number): bigint {
  return VMSTATE_BIT | (BigInt(vid) << 32n) | BigInt(idx >>> 0);
}

function label(v: ManifestVdi): string {
  if (v.deleted) return `deleted snapshot ${v.vid.toString(16)} of ${v.name}`;
  return v.snapshot ? `${v.name} (snapshot ${v.snapId}${v.tag ? `, tag ${v.tag}` : ''})` : v.name;
}

export interface LoadOpts extends ConnOpts {
  vdis: string[];
}

export async function snapshotLoad(spec: string, dir: string, o: LoadOpts): Promise<void> {
  const fail = (why: string, code = EXIT_SYSFAIL) => new CliError(`${why}\nFail to load snapshot`, code);
  let store: SnapshotStore;
  let manifest: Manifest;
  let tag: string;
  try {
    store = await SnapshotStore.open(dir);
    const entry = await store.find(spec);
    if (!entry) throw fail('Snapshot index or tag does not exist.');
    tag = entry.tag;
    manifest = await store.readManifest(entry.manifest);
  } catch (e) {
    if (e instanceof SnapshotStoreError) throw fail(e.message);
    throw e;
  }
  const { chosen, missing } = withAncestors(manifest.vdis, o.vdis, lineage);
  if (missing.length) throw fail(`no VDI ${missing.join(', ')} in snapshot ${tag}`);

  // every object the load needs is checked before the cluster is touched: a damaged PATH loads nothing
  const hashes = new Set<string>();
  for (const v of chosen) {
    hashes.add(v.inode);
    for (const [, , h] of v.objects) hashes.add(h);
    for (const [, h] of v.vmstate) hashes.add(h);
    for (const a of v.attrs) hashes.add(a.value);
  }
  const sizes = new Map<string, number>();
  const check = progress(`verifying ${tag}`, hashes.size, 'objects');
  try {
    await pool([...hashes], 4, async (h) => {
      sizes.set(h, await store.verifyObject(h));
      check.add(1);
    });
  } catch (e) {
    if (e instanceof SnapshotStoreError) throw fail(e.message);
    throw e;
  } finally {
    check.stop();
  }

  await withClient(o, async (c) => {
    await prepareCluster(c, manifest, fail);
    await new Rebuild(c, store, chosen, sizes, fail).run();
  });
}

/**
 * An unformatted cluster is formatted with the saved defaults (as dog's load does); a formatted one
 * must hold no VDI: dog's load formats it anyway after asking, and so does this, on a terminal.
 */
async function prepareCluster(c: SheepClient, m: Manifest, fail: (why: string, code?: number) => CliError): Promise<void> {
  const st = await c.control<StatClusterReply>(Op.STAT_CLUSTER);
  let format = st.status === 'wait_format';
  if (!format && st.status !== 'running') throw fail(`the cluster is not ready for I/O: ${st.statusText}`);
  if (!format) {
    const live = await allInodes(c);
    if (live.length) {
      const names = [...new Set(live.map((h) => h.name))];
      const shown = names.slice(0, 5).join(', ') + (names.length > 5 ? ', ...' : '');
      const ok = await confirm(`Caution! The cluster is not empty (${live.length} VDIs: ${shown}).\nLoading formats the cluster first, which deletes them.\nAre you sure you want to continue?`);
      if (!ok) {
        throw fail(`the cluster already holds VDIs (${shown}; ${live.length} with their snapshots): a load formats the cluster first, which would delete them. ` +
          'Not loaded: answer yes on a terminal, or format the cluster first (collie cluster format)');
      }
      format = true;
    }
  }
  if (!format) return;
  try {
    await c.control(Op.MAKE_FS, { copies: m.cluster.copies, blockSizeShift: m.cluster.blockSizeShift, lock: m.cluster.lock });
  } catch (e) {
    throw fail(`Format failed: ${reason(e)}`);
  }
}

class Rebuild {
  /** saved vid -> vid in this cluster */
  private readonly newVid = new Map<number, number>();
  /** the working VDI of each name right now; a placeholder is one a snapshot left that nothing saved needs yet */
  private readonly working = new Map<string, { vid: number; parent: number; placeholder: boolean }>();
  private readonly byVid: Map<number, ManifestVdi>;
  private readonly maps = new Map<number, Map<number, ManifestObject>>();
  private bar: Progress = { add: () => undefined, set: () => undefined, stop: () => undefined };

  constructor(
    private readonly c: SheepClient,
    private readonly store: SnapshotStore,
    private readonly vdis: ManifestVdi[],
    private readonly sizes: Map<string, number>,
    private readonly fail: (why: string, code?: number) => CliError,
  ) {
    this.byVid = new Map(vdis.map((v) => [v.vid, v]));
    for (const v of vdis) this.maps.set(v.vid, new Map(v.objects.map((e) => [e[0], e])));
  }

  /** The blocks `v` wrote itself: those its parent (in the snapshot) does not map to the same owner. */
  private own(v: ManifestVdi): ManifestObject[] {
    const pm = this.byVid.has(v.parent) ? this.maps.get(v.parent)! : null;
    return v.objects.filter(([idx, owner]) => !(pm && pm.get(idx)?.[1] === owner));
  }

  async run(): Promise<void> {
    let total = 0;
    for (const v of this.vdis) {
      for (const [, , h] of this.own(v)) total += this.sizes.get(h) ?? 0;
      for (const [, h] of v.vmstate) total += this.sizes.get(h) ?? 0;
    }
    this.bar = progress('loading', total, 'bytes');
    try {
      const children = new Map<number, ManifestVdi[]>();
      const roots: ManifestVdi[] = [];
      for (const v of this.vdis) {
        if (!this.byVid.has(v.parent)) { roots.push(v); continue; }
        const l = children.get(v.parent) ?? [];
        l.push(v);
        children.set(v.parent, l);
      }
      // snapshots first, parents before children, the same-name child first (it continues the
      // working VDI the parent's snapshot left); working VDIs last: each name has one at a time
      const order: ManifestVdi[] = [];
      const visit = (v: ManifestVdi) => {
        if (!v.snapshot) return;
        order.push(v);
        const kids = (children.get(v.vid) ?? []).slice().sort((a, b) => Number(b.name === v.name) - Number(a.name === v.name) || a.vid - b.vid);
        for (const k of kids) visit(k);
      };
      for (const r of roots.sort((a, b) => a.vid - b.vid)) visit(r);
      for (const v of order) await this.buildSnapshot(v);
      for (const v of this.vdis.filter((x) => !x.snapshot).sort((a, b) => a.vid - b.vid)) {
        if (this.byVid.has(v.parent) && !this.newVid.has(v.parent)) throw this.fail(`cannot rebuild ${label(v)}: its parent is not a snapshot`);
        await this.buildWorking(v);
      }
      const stranded = this.vdis.filter((v) => !this.newVid.has(v.vid));
      if (stranded.length) throw this.fail(`cannot rebuild ${stranded.map(label).join(', ')}: a parent is not a snapshot`);
      // names saved with snapshots only: the working VDI the last snapshot left goes
      for (const [name, w] of this.working) {
        if (w.placeholder) await this.c.delVdi(name);
      }
      // deleted snapshots were rebuilt for their children's sake: they go again
      for (const v of this.vdis.filter((x) => x.deleted)) {
        const snapid = decodeInodeHeader(await this.c.readObj(vidToVdiOid(this.newVid.get(v.vid)!), 0, SD_INODE_HEADER_SIZE)).snapId;
        try {
          await this.c.delVdi(v.name, '', snapid);
        } catch (e) {
          throw this.fail(`Failed to delete the rebuilt deleted snapshot ${label(v)}: ${reason(e)}`);
        }
      }
      await this.attributes();
    } finally {
      this.bar.stop();
    }
  }

  private async buildSnapshot(v: ManifestVdi): Promise<void> {
    const w = await this.workingFor(v);
    await this.fill(w, v);
    let next: number;
    try {
      next = await this.c.newVdi(v.name, BigInt(v.vdiSize), { baseVdiId: w, snapshot: true });
    } catch (e) {
      throw this.fail(`Failed to create snapshot ${label(v)}: ${reason(e)}`);
    }
    this.newVid.set(v.vid, w);
    this.working.set(v.name, { vid: next, parent: w, placeholder: true });
  }

  private async buildWorking(v: ManifestVdi): Promise<void> {
    const w = await this.workingFor(v);
    await this.fill(w, v);
    this.newVid.set(v.vid, w);
    this.working.set(v.name, { vid: w, parent: this.newVid.get(v.parent) ?? 0, placeholder: false });
  }

  /**
   * A working VDI of v's name whose map is v's parent's: the one the parent's snapshot left, or a
   * new one (a clone of the parent, or a plain VDI for a root) after the name's current one goes.
   */
  private async workingFor(v: ManifestVdi): Promise<number> {
    const parent = this.newVid.get(v.parent) ?? 0;
    const cur = this.working.get(v.name);
    if (cur && cur.placeholder && parent && cur.parent === parent) return cur.vid;
    if (cur) {
      if (!cur.placeholder) throw this.fail(`cannot rebuild ${label(v)}: the working VDI ${v.name} is already loaded`);
      await this.c.delVdi(v.name);
      this.working.delete(v.name);
    }
    let vid: number;
    try {
      vid = parent
        ? await this.c.newVdi(v.name, BigInt(v.vdiSize), { baseVdiId: parent })
        : await this.c.newVdi(v.name, BigInt(v.vdiSize), { copies: v.nrCopies, copyPolicy: v.copyPolicy ?? 0, blockSizeShift: v.blockSizeShift });
    } catch (e) {
      throw this.fail(`Failed to create VDI ${label(v)}: ${reason(e)}`);
    }
    this.working.set(v.name, { vid, parent, placeholder: true });
    return vid;
  }

  /** Gives working VDI `w` the header fields, blocks and VM state of `v`. */
  private async fill(w: number, v: ManifestVdi): Promise<void> {
    const c = this.c;
    const inode = vidToVdiOid(w);
    const raw = await c.readObj(inode, 0, SD_INODE_HEADER_SIZE);
    const h = decodeInodeHeader(raw);
    const want = { ...h, tag: v.tag, vdiSize: BigInt(v.vdiSize), vmStateSize: BigInt(v.vmStateSize), vmClockNsec: BigInt(v.vmClockNsec) };
    if (want.tag !== h.tag || want.vdiSize !== h.vdiSize || want.vmStateSize !== h.vmStateSize || want.vmClockNsec !== h.vmClockNsec) {
      try {
        await c.writeObj(inode, 0, encodeInodeHeader(want, Buffer.from(raw)));
      } catch (e) {
        throw this.fail(`Failed to update the inode of ${label(v)}: ${reason(e)}`);
      }
    }
    const vdi = await OpenVdi.open(c, w);
    const objSize = vdi.objectSize;
    const own = this.own(v);
    await pool(own, DEPTH, async ([idx, , hash]) => {
      const size = this.sizes.get(hash) ?? -1;
      if (size !== objSize) throw this.fail(`object ${this.store.objectPath(hash)} has ${size} bytes, not the ${objSize} of a block of ${label(v)}`);
      await this.writeObject(vidToDataOid(w, idx), hash, size, true, v);
    });
    // the map: own blocks point at w, blocks the parent has and v had not are unmapped
    const next = Uint32Array.from(vdi.map);
    for (const [idx] of own) next[idx] = w;
    const mapped = new Set(v.objects.map(([idx]) => idx));
    for (let i = 0; i < next.length; i++) if (next[i] && !mapped.has(i)) next[i] = 0;
    let first = -1;
    let last = -1;
    for (let i = 0; i < next.length; i++) {
      if (next[i] === vdi.map[i]) continue;
      if (first < 0) first = i;
      last = i;
    }
    if (first >= 0) {
      const b = Buffer.alloc(4 * (last - first + 1));
      for (let i = first; i <= last; i++) b.writeUInt32LE(next[i], 4 * (i - first));
      await c.writeObj(inode, mapEntryOffset(first), b);
    }
    await pool(v.vmstate, DEPTH, async ([idx, hash]) => {
      await this.writeObject(vmstateOid(w, idx), hash, this.sizes.get(hash) ?? 0, false, v);
    });
  }

  private async writeObject(oid: bigint, hash: string, size: number, data: boolean, v: ManifestVdi): Promise<void> {
    try {
      if (size <= WHOLE_WRITE_MAX) {
        await this.c.createAndWriteObj(oid, 0, await this.store.readObject(hash));
      } else {
        for (let off = 0; off < size; off += STREAM_CHUNK) {
          const piece = await this.store.readRange(hash, off, Math.min(STREAM_CHUNK, size - off));
          if (off === 0) await this.c.createAndWriteObj(oid, 0, piece);
          else await this.c.writeObj(oid, off, piece);
        }
      }
    } catch (e) {
      if (e instanceof SnapshotStoreError) throw this.fail(e.message);
      if (e instanceof SdError) throw this.fail(`Fail to load ${data ? 'object' : 'VM state object'} ${oid.toString(16)} of ${label(v)}: ${reason(e)}`);
      throw e;
    }
    this.bar.add(size);
  }

  /** Attributes last: the snapshot ids they are set by are known once every VDI of a name exists. */
  private async attributes(): Promise<void> {
    for (const v of this.vdis) {
      if (!v.attrs.length) continue;
      const vid = this.newVid.get(v.vid)!;
      const snapid = decodeInodeHeader(await this.c.readObj(vidToVdiOid(vid), 0, SD_INODE_HEADER_SIZE)).snapId;
      for (const a of v.attrs) {
        const value = await this.store.readObject(a.value).catch((e: unknown) => { throw e instanceof SnapshotStoreError ? this.fail(e.message) : e; });
        try {
          await this.c.control(Op.GET_VDI_ATTR, { name: v.name, snapid, key: a.key, value, mode: 'set' });
        } catch (e) {
          throw this.fail(`Failed to set attribute '${a.key}' of ${label(v)}: ${reason(e)}`);
        }
      }
    }
  }
}
