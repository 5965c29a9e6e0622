// collie cluster snapshot save/list/show/load: the whole cluster (every VDI, its snapshots and
// clones, their blocks, VM state and attributes) to a local PATH and back, as dog's farm does.
// The on-disk format is lib/snapshot-store.ts; the rebuild on load is collie/snapshot-load.ts.

import type { Command } from 'commander';
import { Op, SdError } from '../lib/proto.js';
import type { SheepClient } from '../lib/client.js';
import type { LockInfo, ObjList, StatClusterReply } from '../lib/admin.js';
import { OpenVdi } from '../lib/vdi-io.js';
import { VMSTATE_BIT, oidHex, oidKind, oidToVid, parseOidHex, vidToDataOid, vidToVdiOid } from '../lib/oid.js';
import { SD_INODE_HEADER_SIZE, ctimeSeconds, type InodeHeader } from '../lib/inode.js';
import { ATTR_VALUE, decodeAttrHead } from '../lib/vdi-attr-layout.js';
import { formatSize } from '../lib/units.js';
import {
  SnapshotStore, SnapshotStoreError, type Manifest, type ManifestAttr, type ManifestVdi, type SnapshotEntry,
} from '../lib/snapshot-store.js';
import { CliError, EXIT_SYSFAIL, EXIT_USAGE, ctimeString, onNode, out, reason, renderTable, shortTime, withClient, type ConnOpts } from './common.js';
import { allInodes, VDI_LIST_COLUMNS, VDI_LIST_HEADER } from './vdi.js';
import { nodeList } from './node.js';
import { progress } from './progress.js';
import { pool, snapshotLoad, withAncestors } from './snapshot-load.js';
import { findGhosts } from './snapshot-ghosts.js';

/** VM state objects are 4 MiB whatever the VDI's object size (as the sheep stores them). */
const VMSTATE_OBJ_SIZE = 4 * 1024 * 1024;
/** Object reads in flight during a save (with -m, more). */
const SAVE_DEPTH = 4;
const SAVE_DEPTH_MULTI = 16;

/** Why a tag cannot be used, or null. A tag starting with a digit would read as an index. */
export function tagProblem(tag: string): string | null {
  if (!tag) return 'the tag cannot be empty';
  if (/^\s*[+-]?\d/.test(tag)) return 'Tag should not start with number.';
  if (Buffer.byteLength(tag) > 255) return 'the tag is at most 255 bytes';
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(tag)) return 'the tag cannot hold control characters (tab, newline, ...)';
  return null;
}

function storeFailure(e: unknown, tail: string): unknown {
  return e instanceof SnapshotStoreError ? new CliError(`${e.message}\n${tail}`, EXIT_SYSFAIL) : e;
}

// ------------------------------------------------------------------ save

interface SaveOpts extends ConnOpts {
  vdis: string[];
  multithread?: boolean;
}

/** A block to read once, however many VDIs map it. */
interface Job {
  oid: bigint;
  size: number;
  read: (off: number, len: number) => Promise<Buffer>;
  /** who it is read for, in error messages */
  what: string;
}

export async function snapshotSave(tag: string, dir: string, o: SaveOpts): Promise<void> {
  const bad = tagProblem(tag);
  if (bad) throw new CliError(bad, EXIT_USAGE);
  const tail = `Fail to save snapshot to path: ${dir}.`;
  const fail = (why: string) => new CliError(`${why}\n${tail}`, EXIT_SYSFAIL);
  let store: SnapshotStore;
  let unlock: () => Promise<void>;
  try {
    store = await SnapshotStore.create(dir);
    unlock = await store.lock();
  } catch (e) {
    throw storeFailure(e, tail);
  }
  try {
    if ((await store.readIndex()).some((s) => s.tag === tag)) {
      throw fail('Snapshot tag has already been used for another snapshot, please, use another one.');
    }
    const nodes = (await nodeList(o)).nodes;
    const manifest = await withClient(o, async (c) => {
      const st = await c.control<StatClusterReply>(Op.STAT_CLUSTER);
      if (st.status === 'wait_format') throw fail('The cluster is not formatted: there is nothing to save.');
      const { chosen, missing } = withAncestors(await allInodes(c), o.vdis, (h) => ({ name: h.name, id: h.vdiId, parent: h.parentVdiId }));
      if (missing.length) throw fail(`No VDI ${missing.join(', ')} in the cluster.`);
      if (!chosen.length) throw fail('Cannot execute: the cluster is empty.');
      // a working VDI a client holds open may change while it is read: say so (snapshots do not change)
      const locked = new Set((await c.control<LockInfo[]>(Op.LOCK_LIST)).map((l) => l.vid));
      for (const h of chosen) {
        if (h.snapCtime === 0n && locked.has(h.vdiId)) {
          process.stderr.write(`warning: ${h.name} is in use by a client: its blocks are saved as they are while they are read (snapshot it first for a consistent copy)\n`);
        }
      }
      const attrs = await attributeOids(nodes, new Set(chosen.map((h) => h.vdiId)));
      return saveVdis(c, store, chosen, attrs, st, tag, o.multithread ? SAVE_DEPTH_MULTI : SAVE_DEPTH, fail);
    });
    try {
      // the manifest, then the index that names it: the tag exists from this rename on
      const hash = await store.writeManifest(manifest.manifest);
      await store.appendIndex({ tag, time: manifest.manifest.time, manifest: hash, vdis: manifest.manifest.vdis.filter((v) => !v.deleted).length, ...manifest.stats });
    } catch (e) {
      throw storeFailure(e, tail);
    }
  } finally {
    await unlock();
  }
}

/** The attribute objects of the chosen VDIs: every node's object list, since their ids come from key hashes. */
async function attributeOids(nodes: Array<{ host: string; port: number }>, vids: Set<number>): Promise<Map<number, bigint[]>> {
  const found = new Map<number, Set<bigint>>();
  for (const n of nodes) {
    let list: ObjList;
    try {
      list = await onNode(n.host, n.port, (nc) => nc.control<ObjList>(Op.GET_OBJ_LIST));
    } catch (e) {
      throw new CliError(`failed to list the objects of ${n.host}:${n.port}: ${reason(e)}`, EXIT_SYSFAIL);
    }
    for (const [hex] of list) {
      const oid = parseOidHex(hex);
      if (oid === null || oidKind(oid) !== 'attr' || !vids.has(oidToVid(oid))) continue;
      const s = found.get(oidToVid(oid)) ?? new Set<bigint>();
      s.add(oid);
      found.set(oidToVid(oid), s);
    }
  }
  return new Map([...found].map(([vid, s]) => [vid, [...s].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0))]));
}

interface SaveStats {
  objects: number;
  bytes: number;
  addedObjects: number;
  addedBytes: number;
}

async function saveVdis(
  c: SheepClient, store: SnapshotStore, chosen: InodeHeader[], attrOids: Map<number, bigint[]>, st: StatClusterReply,
  tag: string, depth: number, fail: (why: string) => CliError,
): Promise<{ manifest: Manifest; stats: SaveStats }> {
  const opened = new Map<number, OpenVdi>();
  for (const h of chosen) opened.set(h.vdiId, await OpenVdi.open(c, h.vdiId));
  const read = (oid: bigint) => (off: number, len: number) => (len ? c.readObj(oid, off, len) : Promise.resolve(Buffer.alloc(0)));

  // every object once: inodes, blocks (shared ones are mapped by several VDIs), VM state, attribute values
  const jobs = new Map<bigint | string, Job>();
  const attrs = new Map<number, Array<{ key: string; jobKey: string; size: number }>>();
  for (const h of chosen) {
    const v = opened.get(h.vdiId)!;
    jobs.set(vidToVdiOid(h.vdiId), { oid: vidToVdiOid(h.vdiId), size: SD_INODE_HEADER_SIZE, read: read(vidToVdiOid(h.vdiId)), what: `the inode of ${h.name}` });
    v.map.forEach((owner, idx) => {
      if (!owner) return;
      const oid = vidToDataOid(owner, idx);
      if (!jobs.has(oid)) jobs.set(oid, { oid, size: v.objectSize, read: read(oid), what: `a block of ${h.name}` });
    });
    for (let idx = 0; idx * VMSTATE_OBJ_SIZE < Number(h.vmStateSize); idx++) {
      const oid = VMSTATE_BIT | (BigInt(h.vdiId) << 32n) | BigInt(idx);
      jobs.set(oid, { oid, size: Math.min(VMSTATE_OBJ_SIZE, Number(h.vmStateSize) - idx * VMSTATE_OBJ_SIZE), read: read(oid), what: `the VM state of ${h.name}` });
    }
    const list: Array<{ key: string; jobKey: string; size: number }> = [];
    for (const oid of attrOids.get(h.vdiId) ?? []) {
      const head = decodeAttrHead(await c.readObj(oid, 0, ATTR_VALUE));
      if (!head.key) continue; // a deleted attribute
      const jobKey = `attr:${oidHex(oid)}`;
      jobs.set(jobKey, { oid, size: head.valueLength, what: `attribute '${head.key}' of ${h.name}`, read: (off, len) => read(oid)(ATTR_VALUE + off, len) });
      list.push({ key: head.key, jobKey, size: head.valueLength });
    }
    attrs.set(h.vdiId, list);
  }

  // deleted snapshots the chosen VDIs descend from: their inodes (their blocks are among the above)
  const ghosts = await findGhosts(c, chosen.map((h) => opened.get(h.vdiId)!));
  for (const g of ghosts) {
    const oid = vidToVdiOid(g.header.vdiId);
    jobs.set(oid, { oid, size: SD_INODE_HEADER_SIZE, read: read(oid), what: `the inode of deleted VDI ${g.header.vdiId.toString(16)}` });
  }

  const hashes = new Map<bigint | string, string>();
  const sizes = new Map<string, number>();
  const added = new Set<string>();
  let addedBytes = 0;
  const all = [...jobs];
  const bar = progress(`saving ${tag}`, all.reduce((s, [, j]) => s + j.size, 0), 'bytes');
  try {
    await pool(all, depth, async ([key, j]) => {
      let r: { hash: string; added: boolean };
      try {
        r = await store.putObject(j.size, j.read);
      } catch (e) {
        if (e instanceof SdError) throw fail(`Fail to save object, oid ${oidHex(j.oid)} (${j.what}): ${reason(e)}`);
        if (e instanceof SnapshotStoreError) throw fail(e.message);
        throw fail(`cannot write to ${store.dir}: ${(e as Error).message}`);
      }
      hashes.set(key, r.hash);
      sizes.set(r.hash, j.size);
      if (r.added && !added.has(r.hash)) {
        added.add(r.hash);
        addedBytes += j.size;
      }
      bar.add(j.size);
    });
  } finally {
    bar.stop();
  }

  const vdis: ManifestVdi[] = chosen.map((h): ManifestVdi => {
    const v = opened.get(h.vdiId)!;
    const objects: ManifestVdi['objects'] = [];
    v.map.forEach((owner, idx) => {
      if (owner) objects.push([idx, owner, hashes.get(vidToDataOid(owner, idx))!]);
    });
    const vmstate: ManifestVdi['vmstate'] = [];
    for (let idx = 0; idx * VMSTATE_OBJ_SIZE < Number(h.vmStateSize); idx++) {
      vmstate.push([idx, hashes.get(VMSTATE_BIT | (BigInt(h.vdiId) << 32n) | BigInt(idx))!]);
    }
    const a: ManifestAttr[] = (attrs.get(h.vdiId) ?? []).map((x) => ({ key: x.key, value: hashes.get(x.jobKey)!, size: x.size }));
    return {
      name: h.name, tag: h.tag, snapId: h.snapId, vid: h.vdiId, parent: h.parentVdiId, snapshot: h.snapCtime !== 0n,
      createTime: String(h.createTime), snapCtime: String(h.snapCtime), vdiSize: String(h.vdiSize),
      vmStateSize: String(h.vmStateSize), vmClockNsec: String(h.vmClockNsec),
      nrCopies: h.nrCopies, blockSizeShift: h.blockSizeShift, copyPolicy: h.copyPolicy, storePolicy: h.storePolicy,
      inode: hashes.get(vidToVdiOid(h.vdiId))!, objects, vmstate, attrs: a,
    };
  });
  for (const g of ghosts) {
    const h = g.header;
    vdis.push({
      name: g.name, tag: '', snapId: h.snapId, vid: h.vdiId, parent: h.parentVdiId, snapshot: true, deleted: true,
      createTime: String(h.createTime), snapCtime: String(h.snapCtime), vdiSize: String(g.size), vmStateSize: '0', vmClockNsec: '0',
      nrCopies: h.nrCopies, blockSizeShift: h.blockSizeShift, copyPolicy: h.copyPolicy, storePolicy: h.storePolicy,
      inode: hashes.get(vidToVdiOid(h.vdiId))!,
      objects: [...g.map].sort((a, b) => a[0] - b[0]).map(([idx, owner]) => [idx, owner, hashes.get(vidToDataOid(owner, idx))!]),
      vmstate: [], attrs: [],
    });
  }
  const manifest: Manifest = {
    format: 'collie-cluster-snapshot', version: 1, tag, time: Date.now(),
    cluster: { copies: st.copies, blockSizeShift: st.blockSizeShift, lock: st.lock },
    vdis,
  };
  let bytes = 0;
  for (const s of sizes.values()) bytes += s;
  return { manifest, stats: { objects: sizes.size, bytes, addedObjects: added.size, addedBytes } };
}

// ------------------------------------------------------------------ list

export async function snapshotList(dir: string): Promise<void> {
  let all: SnapshotEntry[];
  try {
    all = await (await SnapshotStore.open(dir)).readIndex();
  } catch (e) {
    throw storeFailure(e, 'Fail to list snapshot.');
  }
  // dog's three columns, then what each tag holds and what its save added to PATH
  out('Index\t\tTag\t\tSnapshot Time\t\t\tVDIs\tData\tAdded\n');
  for (const s of all) {
    out(`${s.idx}\t\t${s.tag}\t\t${ctimeString(s.time)}\t${s.vdis}\t${formatSize(s.bytes)}\t${formatSize(s.addedBytes)}\n`);
  }
}

// ------------------------------------------------------------------ show

export async function snapshotShow(spec: string, dir: string, names: string[]): Promise<void> {
  const tail = 'Fail to show snapshot';
  let m: Manifest;
  try {
    const store = await SnapshotStore.open(dir);
    const entry = await store.find(spec);
    if (!entry) throw new CliError(`Snapshot index or tag does not exist.\n${tail}`, EXIT_SYSFAIL);
    m = await store.readManifest(entry.manifest);
  } catch (e) {
    throw storeFailure(e, tail);
  }
  const live = m.vdis.filter((v) => !v.deleted);
  const unknown = names.filter((n) => !live.some((v) => v.name === n));
  if (unknown.length) throw new CliError(`No VDI ${unknown.join(', ')} in snapshot ${m.tag}\n${tail}`, EXIT_SYSFAIL);
  // the columns of `vdi list`, as the VDIs were when the tag was saved
  const rows = live.filter((v) => !names.length || names.includes(v.name)).map((v) => {
    const objSize = 2 ** v.blockSizeShift;
    const own = v.objects.filter(([, owner]) => owner === v.vid).length;
    const clone = !v.snapshot && v.snapId === 1 && v.parent !== 0;
    return [v.snapshot ? 's' : clone ? 'c' : ' ', v.name, v.snapshot ? v.snapId : 0, formatSize(Number(v.vdiSize)), formatSize(own * objSize),
      formatSize((v.objects.length - own) * objSize), shortTime(ctimeSeconds(BigInt(v.createTime))), v.vid.toString(16), v.nrCopies, v.tag, v.blockSizeShift];
  });
  out(VDI_LIST_HEADER + renderTable(VDI_LIST_COLUMNS, rows));
}

// ------------------------------------------------------------------ the commands

type Act = <A extends unknown[]>(fn: (...a: A) => Promise<void>) => (...a: A) => Promise<void>;
type Opts = Record<string, unknown> & { address: string; port: number };

const collect = (v: string, prev: string[]) => [...prev, v];

/** `collie cluster snapshot ...`, added to the `cluster` command by collie/main.ts. */
export function registerClusterSnapshot(cluster: Command, conn: (c: Command) => Command, act: Act): Command {
  const snap = cluster.command('snapshot').description('save every VDI of the cluster to a local path, deduplicated, and load it back (dog\'s farm)')
    .addHelpText('after', `
PATH holds every object once, under the sha256 of its content (PATH/objects/ab/cdef...), one manifest per
tag (PATH/manifests/<sha256>.json: each VDI, its inode fields, attributes and the objects it maps) and
PATH/index.json, the tags. A save writes the index last (an interrupted save lists nothing); a second save
stores only the objects that changed. Load checks every object against its sha256 before it writes any.`);
  conn(snap.command('save').description('save every VDI (working, snapshots, clones) with its blocks, VM state and attributes under TAG in PATH; ' +
    'a block already in PATH is not stored again')
    .argument('<tag>', 'name of this save (must not start with a digit: load and show take an index too)')
    .argument('<path>', 'the snapshot store, created when missing')
    .argument('[vdi...]', 'only these VDIs (and the snapshots they descend from)'))
    .option('-m, --multithread', 'read more objects at once', false)
    .action(act(async (tag: string, dir: string, vdis: string[], o: Opts) => snapshotSave(tag, dir, { ...o, vdis, multithread: Boolean(o.multithread) })));
  conn(snap.command('list').description('list the tags saved in PATH: index, tag, time, VDIs, bytes they hold and bytes their save added')
    .argument('<path>'))
    .action(act(async (dir: string) => snapshotList(dir)));
  conn(snap.command('show').description('show the VDIs saved under a tag, in the columns of vdi list')
    .argument('<tag|idx>', 'a tag, or its index in list').argument('<path>').argument('[vdi...]', 'only these VDIs'))
    .action(act(async (spec: string, dir: string, vdis: string[]) => snapshotShow(spec, dir, vdis)));
  conn(snap.command('load').description('recreate the VDIs of a tag in this cluster (it is formatted first when unformatted; ' +
    'a cluster holding VDIs is formatted only after confirmation on a terminal); every object is checked against its sha256 first')
    .argument('<tag|idx>', 'a tag, or its index in list').argument('<path>').argument('[vdi...]', 'only these VDIs (and the snapshots they descend from)'))
    .option('-m, --vdi <name>', 'only this VDI and its snapshot chain (repeatable; the same as naming it after PATH)', collect, [])
    .action(act(async (spec: string, dir: string, vdis: string[], o: Opts) =>
      snapshotLoad(spec, dir, { ...o, vdis: [...vdis, ...(o.vdi as string[])] })));
  for (const c of snap.commands) {
    c.exitOverride((err) => {
      process.exit(err.code === 'commander.helpDisplayed' || err.exitCode === 0 ? 0 : EXIT_USAGE);
    });
  }
  return snap;
}
