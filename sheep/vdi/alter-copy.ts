// ALTER_VDI_COPY (`collie vdi alter-copy`): a VDI's copy count changes by a cluster decision, so every
// node's placement asks for the new count from then on; the node that took the request then gives every
// object of the VDI exactly that many copies: the nodes that hold one under the new count and lack it get
// a whole copy from an existing replica, and the nodes that no longer hold one drop theirs once every
// holder has it. Placement is a prefix walk of the ring, so the holders under N+1 copies are those under
// N plus one: the old holders keep theirs and have every write.
//
// What this cannot finish (a node unreachable meanwhile) is finished by the next recovery, which places
// by the same count; the reply says how many objects were left to it.

import { setTimeout as sleep } from 'node:timers/promises';
import { Res, SdError } from '../../lib/proto.js';
import { InodeOff } from '../../lib/inode.js';
import { oidHex, oidToVid, vidToVdiOid } from '../../lib/oid.js';
import type { AlterCopyArgs, AlterCopyReply } from '../../lib/admin.js';
import type { NodeInfo } from '../../lib/node.js';
import type { Gateway } from '../replication/gateway.js';
import type { Logger } from '../util/log.js';
import type { VdiTable } from './vdi-table.js';

/** What the reshaping needs from the running sheep (the cluster's System provides it). */
export interface AlterCopyContext {
  readonly vdis: VdiTable;
  readonly gateway: Gateway;
  readonly members: NodeInfo[];
  readonly log: Logger;
  /** the ALTER_VDI_COPY decision, applied on every node; resolves with the old count */
  decide<T>(op: { kind: 'alterCopy'; vid: number; copies: number }): Promise<T>;
}

/** SD_MAX_COPIES: the inode's nr_copies is a byte, and Sheepdog caps it at 31. */
const MAX_COPIES = 31;
/** Objects reshaped at once. */
const PARALLEL = 4;
/** Between two looks at a new copy that differs from the old ones (a client write may be half-applied). */
const SETTLE_MS = 200;

interface Counts {
  copied: number;
  removed: number;
}

export async function alterVdiCopy(sys: AlterCopyContext, a: AlterCopyArgs): Promise<AlterCopyReply> {
  const copies = a.copies;
  if (!Number.isInteger(copies) || copies < 1 || copies > MAX_COPIES) throw new SdError(Res.INVALID_PARMS, `copies must be 1..${MAX_COPIES}`);
  const e = sys.vdis.lookup(a.name, '', 0);
  // a node whose disk failed holds nothing (no vnodes): its zone does not count
  const zones = new Set(sys.members.filter((n) => n.vnodes > 0).map((n) => n.zone)).size;
  if (copies > zones) throw new SdError(Res.INVALID_PARMS, `${copies} copies need ${copies} zones; the cluster has ${zones}`);
  const vid = e.vdiId;
  const oldCopies = await sys.decide<number>({ kind: 'alterCopy', vid, copies });
  sys.log.info({ vid: vid.toString(16), name: e.name, copies, oldCopies }, 'VDI redundancy level changed: reshaping its objects');

  const counts: Counts = { copied: 0, removed: 0 };
  let oids = await objectsOf(sys.gateway, sys.members, vid);
  const total = oids.size;
  // a second round catches what the first could not see: a client write in flight since before the
  // decision may re-create a copy on a node that no longer holds one. What is still off after it is
  // left to recovery (a node unreachable meanwhile)
  for (let round = 0; round < 2 && oids.size; round++) {
    await reshape(sys.gateway, oids, counts, sys.log);
    oids = new Map([...(await objectsOf(sys.gateway, sys.members, vid))].filter(([oid, holders]) => !exactly(sys.gateway.targets(oid), holders)));
  }
  // the inode says it too (a store without its vdi-state file rebuilds the table from the inodes); written
  // once its copies are in place, so that the write reaches each of them
  await sys.gateway.write(vidToVdiOid(vid), InodeOff.nrCopies, Buffer.from([copies]));
  const reply: AlterCopyReply = { vid, oldCopies, copies, objects: total, copied: counts.copied, removed: counts.removed, unfinished: oids.size };
  sys.log.info({ ...reply, vid: vid.toString(16) }, oids.size ? 'VDI reshaped in part: recovery finishes the rest' : 'VDI reshaped');
  return reply;
}

/** Every object of `vid` in service on any member (data, inode, VM state, attributes), with its holders. */
async function objectsOf(gw: Gateway, members: NodeInfo[], vid: number): Promise<Map<bigint, NodeInfo[]>> {
  const out = new Map<bigint, NodeInfo[]>();
  const lists = await Promise.all(members.map(async (n) => {
    try {
      return await gw.listOn(n);
    } catch {
      return []; // unreachable now: what it holds is recovery's to sort out
    }
  }));
  members.forEach((n, i) => {
    for (const oid of lists[i]) {
      if (oidToVid(oid) !== vid) continue;
      const l = out.get(oid);
      if (l) l.push(n);
      else out.set(oid, [n]);
    }
  });
  return out;
}

function exactly(targets: NodeInfo[], holders: NodeInfo[]): boolean {
  return targets.length === holders.length && targets.every((t) => holders.some((h) => h.nid === t.nid));
}

async function reshape(gw: Gateway, objects: Map<bigint, NodeInfo[]>, counts: Counts, log: Logger): Promise<void> {
  const queue = [...objects];
  const worker = async () => {
    for (let next = queue.shift(); next; next = queue.shift()) {
      const [oid, holders] = next;
      try {
        await reshapeOne(gw, oid, holders, counts);
      } catch (err) {
        log.warn({ oid: oidHex(oid), err: (err as Error).message }, 'alter-copy: object left for recovery');
      }
    }
  };
  await Promise.all(Array.from({ length: PARALLEL }, worker));
}

/** Gives one object exactly its holders under the current count. */
async function reshapeOne(gw: Gateway, oid: bigint, holders: NodeInfo[], counts: Counts): Promise<void> {
  const targets = gw.targets(oid);
  const has = (n: NodeInfo) => holders.some((h) => h.nid === n.nid);
  const missing = targets.filter((t) => !has(t));
  for (const t of missing) {
    await gw.copyTo(t, oid);
    counts.copied++;
  }
  if (missing.length) await settleNewCopies(gw, oid, targets.filter(has), missing);
  const extra = holders.filter((h) => !targets.some((t) => t.nid === h.nid));
  if (!extra.length) return;
  // a copy goes only once every holder under the new count has one: it may be the last (recovery running)
  for (const t of targets) if (!(await gw.holds(t, oid))) throw new SdError(Res.NO_OBJ, `${t.nid} lacks its copy`);
  for (const n of extra) if (await gw.removeOn(n, oid)) counts.removed++;
}

/**
 * A client write that left its gateway before the decision went to the old holders only; if it landed
 * after the copy was read, the new copy missed it. The old holders had every write: a new copy that
 * differs from them, the same way on two looks (not a write being applied), is replaced by theirs.
 */
async function settleNewCopies(gw: Gateway, oid: bigint, old: NodeInfo[], fresh: NodeInfo[]): Promise<void> {
  if (!old.length) return;
  const look = async () => Promise.all([...old, ...fresh].map(async (n) => (await gw.hashOn(n, oid)).toString('hex')));
  const first = await look();
  if (new Set(first).size === 1) return;
  await sleep(SETTLE_MS);
  const second = await look();
  if (new Set(second).size === 1) return;
  const oldHash = second[0];
  // old holders that disagree among themselves, or a picture still moving: a write in flight, whose
  // later writes reach every holder under the new count; nothing to judge from here
  if (second.slice(0, old.length).some((h) => h !== oldHash) || second.some((h, i) => h !== first[i])) return;
  const data = await gw.readOnNode(old[0], oid);
  for (const [i, n] of fresh.entries()) if (second[old.length + i] !== oldHash) await gw.replaceOn(n, oid, data);
}
