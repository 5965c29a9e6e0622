// The op table: every opcode sheep answers, with its kind, role and handler (like Sheepdog's sheep/ops.c).
// Kind (what it does):
//   gateway: object I/O from clients, routed to the object's replicas
//   peer:    object I/O on this node's own store (sheep-to-sheep)
//   cluster: a decision ordered through the cluster driver and applied on every node
//   local:   answered from this node's state
// Role (who may send it, once the sheep has a cluster key; without one every connection may send all):
//   client: what QEMU's sheepdog driver sends; no authentication (QEMU cannot authenticate)
//   admin:  what only collie needs; a connection authenticated as admin may send every opcode
//   peer:   sheep-to-sheep; a connection authenticated as peer may send client and peer opcodes

import fs from 'node:fs/promises';
import { pack, unpack } from 'msgpackr';
import {
  Op, Flag, Res, SdError, decodeObjReq, decodeVdiReq, decodeNameTag, type HeaderPrefix, type ObjReq,
} from '../../lib/proto.js';
import { oidKind, oidToVid, dataOidToIdx, NR_VDIS } from '../../lib/oid.js';
import { policyOf, ecPolicyProblem, stripKey, stripIndexOf } from '../../lib/erasure-layout.js';
import { erasureUnavailable } from '../../native/erasure.js';
import { SD_MIN_BLOCK_SIZE_SHIFT, SD_MAX_BLOCK_SIZE_SHIFT } from '../../lib/inode.js';
import { vdiAttr } from '../vdi/vdi-attr.js';
import { vdiNameProblem } from '../../lib/vdi-name.js';
import { metrics } from '../util/metrics.js';
import type {
  StatSheepArgs, AttrRequest, MakeFsArgs, NodeListReply, StatSheepReply, StatClusterReply, Throttle, ForceReleaseArgs, MdInfoReply, MdPathsArgs,
  LogLevelArgs, SetVnodesArgs, VnodesReply, ClusterCopiesArgs, ClusterCopiesReply,
} from '../../lib/admin.js';
import { toPinoLevel, levelList } from '../../lib/log-levels.js';
import { MAX_VNODES } from '../../lib/node.js';
import { autoVnodes, memberCapacities } from '../cluster/reweight.js';
import { checkRange, objRead, objWrite, objCreate, objectSize, MAX_DATA_LENGTH } from '../vdi/object-io.js';
import { SD_INODE_SIZE } from '../../lib/inode.js';
import { authProof, decodeAuthStep, newNonce, proofMatches, type Role } from '../../lib/auth.js';

/** Nothing a sheep stores is larger than a 2^31-byte object. */
const MAX_OBJECT_SIZE = Math.max(2 ** 31, SD_INODE_SIZE);
import type { System } from '../cluster/system.js';
import type { VdiEntry } from '../vdi/vdi-table.js';
import { localList, staleList, packObjList, parseThrottle } from '../replication/recovery.js';
import { alterVdiCopy } from '../vdi/alter-copy.js';
import type { AlterCopyArgs } from '../../lib/admin.js';

export type OpKind = 'gateway' | 'peer' | 'cluster' | 'local';

/** One connection to port 7000 (or the Unix socket) as the op handlers see it. */
export interface Conn {
  /** "address:port", or "unix" */
  readonly peer: string;
  /** what it may send: client until it authenticates (admin when the sheep has no key) */
  role: Role;
  /** AUTH step 1 answered: what step 2 must prove */
  challenge: { role: Role; cnonce: Buffer; snonce: Buffer } | null;
  /** called once the connection authenticated */
  onAuthenticated?: () => void;
}

/** The daemon's access rules, the same for every connection. */
export interface Access {
  /** the cluster key; null: no authentication, every connection may send every opcode */
  key: Buffer | null;
  /** VDIs (by name) that unauthenticated clients may only read, on every front end */
  readonlyVdis: ReadonlySet<string>;
}

export interface OpRequest {
  prefix: HeaderPrefix;
  hdr: Buffer;
  /** the payload; present only when the request carried CMD_WRITE */
  data: Buffer;
  conn: Conn;
  access: Access;
}

/** Whether a connection of role `conn` may send an opcode of role `op`. */
export function mayUse(conn: Role, op: Role): boolean {
  return op === 'client' || conn === 'admin' || conn === op;
}

export interface OpReply {
  result?: number;
  data?: Buffer;
  vdi?: { vdiId: number; attrId?: number; copies: number; blockSizeShift: number };
  clusterDefault?: { nrCopies: number; copyPolicy: number; blockSizeShift: number };
  /** runs once the reply left for the kernel (or the connection died first) */
  afterSent?: () => void;
}

export interface OpDef {
  name: string;
  kind: OpKind;
  role: Role;
  /** answered WAIT_FOR_FORMAT before the cluster is formatted */
  needsFormat: boolean;
  handler: (sys: System, req: OpRequest) => Promise<OpReply>;
}


// ------------------------------------------------------------------ object I/O

function checkedObjReq(sys: System, req: OpRequest, write: boolean): ObjReq & { off: number } {
  const r = decodeObjReq(req.hdr) as ObjReq & { off: number };
  if (write && !(r.flags & Flag.CMD_WRITE)) throw new SdError(Res.INVALID_PARMS, 'write without CMD_WRITE payload');
  checkRange(sys, r.oid, r.offset, r.dataLength, !write);
  r.off = Number(r.offset);
  return r;
}

async function readObj(sys: System, req: OpRequest): Promise<OpReply> {
  const r = checkedObjReq(sys, req, false);
  if (r.dataLength === 0) {
    // an existence probe (collie vdi object/check): ask the filesystem, not a cached descriptor
    if (!(await sys.gateway.exists(r.oid))) throw new SdError(Res.NO_OBJ);
    return {};
  }
  return { data: await objRead(sys, r.oid, r.off, r.dataLength) };
}

async function writeObj(sys: System, req: OpRequest): Promise<OpReply> {
  const r = checkedObjReq(sys, req, true);
  guardReadonly(sys, req, oidToVid(r.oid));
  await objWrite(sys, r.oid, r.off, req.data);
  return {};
}

async function createAndWriteObj(sys: System, req: OpRequest): Promise<OpReply> {
  const r = checkedObjReq(sys, req, true);
  guardReadonly(sys, req, oidToVid(r.oid));
  await objCreate(sys, r.oid, r.off, req.data, r.flags & Flag.CMD_COW && r.cowOid !== 0n ? r.cowOid : undefined);
  return {};
}

async function removeObj(sys: System, req: OpRequest): Promise<OpReply> {
  const r = checkedObjReq(sys, req, false);
  guardReadonly(sys, req, oidToVid(r.oid));
  const kind = oidKind(r.oid);
  if (kind === 'data' || kind === 'inode') {
    throw new SdError(Res.INVALID_PARMS, 'data and inode objects are freed by DEL_VDI and DISCARD_OBJ');
  }
  if (!(await sys.gateway.remove(r.oid))) throw new SdError(Res.NO_OBJ);
  return {};
}

async function discardObj(sys: System, req: OpRequest): Promise<OpReply> {
  const r = checkedObjReq(sys, req, false);
  if (oidKind(r.oid) !== 'data') throw new SdError(Res.INVALID_PARMS, 'DISCARD_OBJ takes a data object id');
  guardReadonly(sys, req, oidToVid(r.oid));
  await sys.vdis.discard(oidToVid(r.oid), dataOidToIdx(r.oid));
  return {};
}

async function flushVdi(sys: System, req: OpRequest): Promise<OpReply> {
  const r = decodeObjReq(req.hdr);
  await sys.gateway.flushVdi(oidToVid(r.oid));
  return {};
}

// ------------------------------------------------------------------ peer I/O (sheep to sheep, this node's store)

/**
 * Requests between sheep carry the sender's epoch: both sides must agree on the membership.
 * Epoch 0 marks an operator's tool (collie vdi object/check), which addresses one node on purpose.
 */
function peerReq(sys: System, req: OpRequest): ObjReq & { off: number } {
  const r = decodeObjReq(req.hdr);
  if (r.epoch !== 0 && r.epoch < sys.epoch) throw new SdError(Res.OLD_NODE_VER);
  if (r.epoch > sys.epoch) throw new SdError(Res.NEW_NODE_VER);
  if (oidKind(r.oid) === null) throw new SdError(Res.INVALID_PARMS, `malformed oid ${r.oid.toString(16)}`);
  if (r.dataLength > MAX_DATA_LENGTH || r.offset > BigInt(MAX_OBJECT_SIZE)) throw new SdError(Res.INVALID_PARMS, 'range too large');
  // a strip of an erasure-coded object (copy_policy and ec_index set, as Sheepdog's requests carry
  // them): the handlers below work on the strip's own key in the store
  if (r.copyPolicy !== 0) {
    const ec = policyOf(r.copyPolicy)!;
    const why = ecPolicyProblem(ec.d, ec.p);
    if (why) throw new SdError(Res.INVALID_PARMS, `copy_policy ${r.copyPolicy}: ${why}`);
    if (oidKind(r.oid) !== 'data') throw new SdError(Res.INVALID_PARMS, 'only data objects are erasure-coded');
    if (r.ecIndex >= ec.d + ec.p) throw new SdError(Res.INVALID_PARMS, `strip ${r.ecIndex} of a ${ec.d}:${ec.p} object`);
    return { ...r, oid: stripKey(r.oid, r.ecIndex), off: Number(r.offset) };
  }
  return { ...r, off: Number(r.offset) };
}

async function readPeer(sys: System, req: OpRequest): Promise<OpReply> {
  const r = peerReq(sys, req);
  // a set-aside copy is read only by recovery, when no copy in service exists anywhere
  if (r.flags & Flag.CMD_STALE) {
    // a probe (no length) answers the set-aside copy's last-write epoch, so the newest can be chosen
    if (r.dataLength === 0) return { data: await staleEpochOf(sys, r.oid) };
    return { data: await sys.store.readStale(r.oid, r.off, r.dataLength) };
  }
  if (r.dataLength === 0) {
    if (!(await sys.store.exists(r.oid))) throw new SdError(Res.NO_OBJ);
    return {};
  }
  return { data: await sys.store.read(r.oid, r.off, r.dataLength) };
}

async function writePeer(sys: System, req: OpRequest): Promise<OpReply> {
  const r = peerReq(sys, req);
  await sys.store.write(r.oid, r.off, req.data, sys.epoch);
  return {};
}

async function createPeer(sys: System, req: OpRequest): Promise<OpReply> {
  const r = peerReq(sys, req);
  if (r.flags & Flag.CMD_IF_ABSENT) {
    if (r.off !== 0) throw new SdError(Res.INVALID_PARMS, 'a create-if-absent carries the whole object');
    await sys.store.createIfAbsent(r.oid, req.data, sys.epoch);
  } else {
    await sys.store.create(r.oid, r.off, req.data, sys.epoch);
  }
  return {};
}

async function removePeer(sys: System, req: OpRequest): Promise<OpReply> {
  const r = peerReq(sys, req);
  await sys.store.remove(r.oid);
  return {};
}

async function flushPeer(sys: System, req: OpRequest): Promise<OpReply> {
  const r = peerReq(sys, req);
  await sys.store.flushVdi(oidToVid(r.oid));
  return {};
}

async function staleEpochOf(sys: System, oid: bigint): Promise<Buffer> {
  await sys.store.readStale(oid, 0, 0); // NO_OBJ when there is none
  const b = Buffer.alloc(4);
  b.writeUInt32LE(await sys.store.epochOf(oid, true));
  return b;
}

/** GET_HASH_PEER: sha256 of this node's copy (the object's size, holes as zeros). */
async function hashPeer(sys: System, req: OpRequest): Promise<OpReply> {
  const r = peerReq(sys, req);
  if (!(await sys.store.exists(r.oid))) throw new SdError(Res.NO_OBJ);
  return { data: await sys.store.hashOf(r.oid, objectSize(sys, r.oid)) };
}

/** GET_OBJ_LIST: this node's objects and the epoch of their last write (recovery). */
async function getObjList(sys: System, req: OpRequest): Promise<OpReply> {
  const stale = (req.prefix.flags & Flag.CMD_STALE) !== 0;
  return { data: packObjList(await (stale ? staleList(sys.store) : localList(sys.store))) };
}

/** An offer's name is a number and a group member id (a node address and a process id): anything longer is not one. */
const MAX_OFFER_NAME = 256;

/**
 * GET_SNAPSHOT: the cluster state this node, as master, offered a joiner in its welcome; the payload
 * is the name the welcome gave it. Kept until the joiner leaves, for a few minutes at most.
 */
async function getSnapshot(sys: System, req: OpRequest): Promise<OpReply> {
  if (!req.data.length || req.data.length > MAX_OFFER_NAME) throw new SdError(Res.INVALID_PARMS, 'GET_SNAPSHOT names the state a welcome offered');
  const bytes = sys.snapshotOffer(req.data.toString('utf8'));
  if (!bytes) throw new SdError(Res.NO_OBJ, 'no cluster state offered under that name');
  return { data: Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength) };
}

async function statRecovery(sys: System): Promise<OpReply> {
  return reply(sys.recovery.status);
}

// ------------------------------------------------------------------ VDI operations

function vdiReply(e: { vdiId: number; nrCopies: number; blockSizeShift: number }): OpReply {
  return { vdi: { vdiId: e.vdiId, copies: e.nrCopies, blockSizeShift: e.blockSizeShift } };
}

function nameTag(req: OpRequest): { name: string; tag: string } {
  if (!req.data.length) throw new SdError(Res.INVALID_PARMS, 'missing VDI name payload');
  return decodeNameTag(req.data);
}

async function newVdi(sys: System, req: OpRequest): Promise<OpReply> {
  const r = decodeVdiReq(req.hdr);
  const { name } = nameTag(req);
  const snapshot = r.snapid === 1 && r.baseVdiId !== 0;
  // a snapshot keeps its VDI's name; only new names are checked (names made before the rule still work)
  const bad = snapshot ? null : vdiNameProblem(name);
  if (bad) throw new SdError(Res.INVALID_PARMS, bad);
  if (!snapshot && !r.baseVdiId) checkErasureCode(sys, r.copies ? r.copyPolicy : sys.clusterDefaults.copyPolicy);
  const e = await sys.newVdi({
    name, size: r.vdiSize, baseVid: r.baseVdiId, snapshot,
    copies: r.copies, copyPolicy: r.copyPolicy, blockSizeShift: r.blockSizeShift,
  });
  return vdiReply(e);
}

/**
 * An erasure code this cluster can keep: valid X:Y, X+Y zones to put the strips on, and the codec
 * built here. Checked where the request arrives, before the decision every node applies.
 */
function checkErasureCode(sys: System, copyPolicy: number): void {
  const ec = policyOf(copyPolicy);
  if (!ec) return;
  const why = ecPolicyProblem(ec.d, ec.p);
  if (why) throw new SdError(Res.INVALID_PARMS, why);
  const zones = new Set(sys.members.map((n) => n.zone)).size;
  if (ec.d + ec.p > zones) {
    throw new SdError(Res.INVALID_PARMS, `${ec.d}:${ec.p} puts its ${ec.d + ec.p} strips on ${ec.d + ec.p} zones; the cluster has ${zones}`);
  }
  const unavailable = erasureUnavailable();
  if (unavailable) throw new SdError(Res.INVALID_PARMS, unavailable);
}

async function lockVdi(sys: System, req: OpRequest): Promise<OpReply> {
  const r = decodeVdiReq(req.hdr);
  const { name, tag } = nameTag(req);
  return vdiReply(await sys.decide<VdiEntry>({ kind: 'lock', name, tag, snapid: r.snapid, shared: r.type === 1, owner: sys.me.nid }));
}

async function releaseVdi(sys: System, req: OpRequest): Promise<OpReply> {
  const r = decodeVdiReq(req.hdr);
  await sys.decide({ kind: 'release', vid: r.baseVdiId });
  return {};
}

async function getVdiInfo(sys: System, req: OpRequest): Promise<OpReply> {
  const r = decodeVdiReq(req.hdr);
  const { name, tag } = nameTag(req);
  return vdiReply(sys.vdis.lookup(name, tag, r.snapid));
}

async function delVdi(sys: System, req: OpRequest): Promise<OpReply> {
  const r = decodeVdiReq(req.hdr);
  const { name, tag } = nameTag(req);
  if (req.conn.role === 'client' && req.access.readonlyVdis.has(name)) throw new SdError(Res.READONLY, `VDI ${name} is read-only for unauthenticated clients`);
  const vid = await sys.delVdi(name, tag, r.snapid);
  return { vdi: { vdiId: vid, copies: 0, blockSizeShift: 0 } };
}

async function readVdis(sys: System, req: OpRequest): Promise<OpReply> {
  const len = Math.min(req.prefix.dataLength, NR_VDIS / 8);
  return { data: Buffer.from(sys.vdis.bitmap.subarray(0, len)) };
}

async function getClusterDefault(sys: System): Promise<OpReply> {
  const d = sys.clusterDefaults;
  return { clusterDefault: { nrCopies: d.copies, copyPolicy: d.copyPolicy, blockSizeShift: d.blockSizeShift } };
}

// ------------------------------------------------------------------ internal ops (msgpack payloads)

/** The msgpack argument map of an internal op; anything but a map (null, a number, garbage) is refused. */
function args<T>(req: OpRequest): Partial<T> {
  if (!req.data.length) throw new SdError(Res.INVALID_PARMS, 'missing arguments');
  let v: unknown;
  try {
    v = unpack(req.data);
  } catch {
    throw new SdError(Res.INVALID_PARMS, 'malformed arguments');
  }
  // a plain map only (msgpackr also yields arrays, buffers and marker objects such as its 0xc1 type)
  if (typeof v !== 'object' || v === null || Object.getPrototypeOf(v) !== Object.prototype) throw new SdError(Res.INVALID_PARMS, 'arguments must be a map');
  return v as Partial<T>;
}

const ATTR_MODES = new Set(['get', 'set', 'exclusive', 'delete']);

function reply(v: unknown): OpReply {
  return { data: pack(v) };
}


async function makeFs(sys: System, req: OpRequest): Promise<OpReply> {
  const a = args<MakeFsArgs>(req);
  const copies = Number(a.copies);
  const bss = Number(a.blockSizeShift ?? 22);
  if (!Number.isInteger(copies) || copies < 1 || copies > 31) throw new SdError(Res.INVALID_PARMS, 'copies must be 1..31');
  const copyPolicy = Number(a.copyPolicy ?? 0);
  if (!Number.isInteger(copyPolicy) || copyPolicy < 0 || copyPolicy > 0xff) throw new SdError(Res.INVALID_PARMS, 'copy_policy must be a byte');
  checkErasureCode(sys, copyPolicy);
  const ec = policyOf(copyPolicy);
  if (ec && copies !== ec.d + ec.p) throw new SdError(Res.INVALID_PARMS, `an erasure code ${ec.d}:${ec.p} has ${ec.d + ec.p} copies, not ${copies}`);
  if (!Number.isInteger(bss) || bss < SD_MIN_BLOCK_SIZE_SHIFT || bss > SD_MAX_BLOCK_SIZE_SHIFT) {
    throw new SdError(Res.INVALID_PARMS, `block size shift must be ${SD_MIN_BLOCK_SIZE_SHIFT}..${SD_MAX_BLOCK_SIZE_SHIFT}`);
  }
  await sys.decide({ kind: 'format', copies, copyPolicy, blockSizeShift: bss, lock: Boolean(a.lock), ctime: Date.now() });
  return {};
}

async function shutdown(sys: System): Promise<OpReply> {
  // answer first, then stop: the client must see SUCCESS
  setImmediate(() => void sys.decide({ kind: 'shutdown' }).catch((e) => sys.log.error({ err: e }, 'shutdown failed')));
  return {};
}


async function getNodeList(sys: System): Promise<OpReply> {
  const r: NodeListReply = { nodes: sys.members, me: sys.me.nid };
  return reply(r);
}


async function statSheep(sys: System, req: OpRequest): Promise<OpReply> {
  const a = req.data?.length ? args<StatSheepArgs>(req) : {};
  const cachedMs = typeof a.cachedMs === 'number' && a.cachedMs > 0 ? Math.min(a.cachedMs, 60_000) : 0;
  const d = await sys.diskStats(cachedMs);
  let total = 0;
  for (const v of sys.vdis.all()) if (!v.deleted && v.snapCtime === 0n) total += Number(v.vdiSize);
  const r: StatSheepReply = { ...d, vdiSizeTotal: total, io: { ...metrics.io }, ...(a.strips === true ? { ecStrips: await stripUsage(sys) } : {}) };
  return reply(r);
}

/** Bytes of strip files here (allocated blocks), per erasure code of their VDIs. */
async function stripUsage(sys: System): Promise<Array<[number, number]>> {
  const byPolicy = new Map<number, number>();
  for (const key of await sys.store.list()) {
    if (stripIndexOf(key) === null) continue;
    const policy = sys.vdis.get(oidToVid(key))?.copyPolicy ?? 0;
    if (!policy) continue;
    try {
      const st = await fs.stat(sys.store.pathOf(key));
      byPolicy.set(policy, (byPolicy.get(policy) ?? 0) + st.blocks * 512);
    } catch { /* removed meanwhile */ }
  }
  return [...byPolicy];
}


async function statCluster(sys: System): Promise<OpReply> {
  const c = sys.config;
  const r: StatClusterReply = {
    status: sys.status,
    statusText: sys.statusText,
    autoRecovery: sys.autoRecovery,
    ctime: c?.ctime ?? 0,
    epoch: sys.epoch,
    copies: c?.copies ?? 0,
    copyPolicy: c?.copyPolicy ?? 0,
    blockSizeShift: c?.blockSizeShift ?? 0,
    lock: c?.lock ?? false,
    nodes: sys.members.length,
    zones: new Set(sys.members.map((n) => n.zone)).size,
    history: c ? (await sys.epochHistory()).reverse() : [],
  };
  return reply(r);
}

async function getVdiAttr(sys: System, req: OpRequest): Promise<OpReply> {
  const a = args<AttrRequest>(req);
  if (typeof a.name !== 'string' || typeof a.key !== 'string' || typeof a.mode !== 'string' || !ATTR_MODES.has(a.mode)) {
    throw new SdError(Res.INVALID_PARMS, 'GET_VDI_ATTR needs name, key and mode');
  }
  if ((a.tag !== undefined && typeof a.tag !== 'string') || (a.snapid !== undefined && typeof a.snapid !== 'number') ||
      (a.value !== undefined && !(a.value instanceof Uint8Array))) {
    throw new SdError(Res.INVALID_PARMS, 'GET_VDI_ATTR: tag, snapid or value of the wrong type');
  }
  const r: AttrRequest = { name: a.name, key: a.key, mode: a.mode, tag: a.tag, snapid: a.snapid, value: a.value };
  return reply(await sys.withAttrLock(r.name, () => vdiAttr(sys, r)));
}

async function lockList(sys: System): Promise<OpReply> {
  return reply(sys.vdis.lockList());
}

async function lockForceRelease(sys: System, req: OpRequest): Promise<OpReply> {
  const a = args<ForceReleaseArgs>(req);
  const done = await sys.decide<boolean>({ kind: 'forceRelease', vid: Number(a.vid) });
  if (!done) throw new SdError(Res.VDI_NOT_LOCKED);
  return {};
}

/** ALTER_VDI_COPY: answered once the VDI's objects have their new number of copies. */
async function alterVdiCopyOp(sys: System, req: OpRequest): Promise<OpReply> {
  const a = args<AlterCopyArgs>(req);
  if (typeof a.name !== 'string' || typeof a.copies !== 'number') throw new SdError(Res.INVALID_PARMS, 'ALTER_VDI_COPY needs name and copies');
  return reply(await alterVdiCopy(sys, { name: a.name, copies: a.copies }));
}

async function forceRecover(sys: System): Promise<OpReply> {
  await sys.decide({ kind: 'forceRecover' });
  return {};
}

async function enableRecover(sys: System): Promise<OpReply> {
  await sys.decide({ kind: 'autoRecovery', enabled: true });
  return {};
}

async function disableRecover(sys: System): Promise<OpReply> {
  await sys.decide({ kind: 'autoRecovery', enabled: false });
  return {};
}

async function setRecoveryThrottle(sys: System, req: OpRequest): Promise<OpReply> {
  sys.recovery.setThrottle(parseThrottle(args<Partial<Throttle>>(req)));
  return {};
}

async function getRecoveryThrottle(sys: System): Promise<OpReply> {
  return reply(sys.recovery.throttle);
}

// ------------------------------------------------------------------ multi-disk (collie node md)

async function mdInfo(sys: System): Promise<OpReply> {
  const r: MdInfoReply = { md: sys.store.md, disks: await sys.store.mdInfo() };
  return reply(r);
}

const MAX_MD_PATHS = 64;

function mdPaths(req: OpRequest): string[] {
  const p = args<MdPathsArgs>(req).paths;
  // a node has a handful of disks: a request naming more, or paths longer than Linux allows, is refused
  if (!Array.isArray(p) || !p.length || p.length > MAX_MD_PATHS || p.some((x) => typeof x !== 'string' || !x.startsWith('/') || x.length > 4096)) {
    throw new SdError(Res.INVALID_PARMS, `paths: 1 to ${MAX_MD_PATHS} absolute paths`);
  }
  return p;
}

/** The reply carries only a result code: the reason of a refusal goes to the log (`look for sheep.log`). */
async function logRefusal<T>(sys: System, what: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    sys.log.warn({ err: (e as Error).message }, `${what} refused`);
    throw e;
  }
}

async function mdPlug(sys: System, req: OpRequest): Promise<OpReply> {
  const paths = mdPaths(req);
  await logRefusal(sys, 'md plug', () => sys.store.plug(paths));
  return {};
}

async function mdUnplug(sys: System, req: OpRequest): Promise<OpReply> {
  const paths = mdPaths(req);
  return reply(await logRefusal(sys, 'md unplug', () => sys.store.unplug(paths)));
}

// ------------------------------------------------------------------ node and cluster administration

/** KILL_NODE: this sheep stops as on SIGTERM (flush, a clean leave); the others add an epoch. */
async function killNode(sys: System, req: OpRequest): Promise<OpReply> {
  sys.log.warn({ by: req.conn.peer }, 'asked to stop (collie node kill)');
  // answer first, then stop: the client must see SUCCESS
  return { afterSent: () => sys.onKill() };
}

/** STAT: request counters by front end, the numbers /metrics shows. */
async function nodeStat(): Promise<OpReply> {
  const r = await metrics.requestStats();
  // not counting this request itself, which is in flight while it answers
  r.sheepdog.active = Math.max(0, r.sheepdog.active - 1);
  return reply(r);
}

async function getLoglevel(sys: System): Promise<OpReply> {
  const r: LogLevelArgs = { level: sys.log.level, value: sys.log.levelVal };
  return reply(r);
}

async function setLoglevel(sys: System, req: OpRequest): Promise<OpReply> {
  const a = args<LogLevelArgs>(req);
  const level = typeof a.level === 'string' ? toPinoLevel(a.level) : null;
  if (!level) throw new SdError(Res.INVALID_PARMS, `unknown log level; use one of:\n${levelList()}`);
  const old = sys.log.level;
  sys.log.level = level;
  sys.log.info({ level, old, asked: a.level }, 'log level changed');
  const r: LogLevelArgs = { level, value: sys.log.levelVal };
  return reply(r);
}

function vnodesReply(sys: System, changed: boolean): OpReply {
  const r: VnodesReply = { nodes: sys.members.map((n) => [n.nid, n.vnodes]), changed, epoch: sys.epoch };
  return reply(r);
}

/** SET_VNODES: this node's weight, decided for the whole cluster (a new epoch moves objects). */
async function setVnodes(sys: System, req: OpRequest): Promise<OpReply> {
  const a = args<SetVnodesArgs>(req);
  const n = Number(a.vnodes);
  if (!Number.isInteger(n) || n < 1 || n > MAX_VNODES) throw new SdError(Res.INVALID_PARMS, `vnodes must be an integer 1..${MAX_VNODES}`);
  if (sys.store.failed) throw new SdError(Res.EIO, `this node's disk failed (${sys.store.failed}): it holds no copies and keeps no vnodes`);
  const changed = await sys.decide<boolean>({ kind: 'vnodes', weights: [[sys.me.nid, n]] });
  return vnodesReply(sys, changed);
}

/** REWEIGHT: every member's weight from its store's capacity, in one decision (one new epoch). */
async function reweight(sys: System): Promise<OpReply> {
  let capacities: Array<[string, number]>;
  try {
    capacities = await memberCapacities(sys);
  } catch (e) {
    sys.log.warn({ err: (e as Error).message }, 'reweight failed');
    throw e;
  }
  const weights = autoVnodes(capacities);
  sys.log.info({ capacities, weights }, 'reweight: vnodes from store capacity');
  const changed = await sys.decide<boolean>({ kind: 'vnodes', weights });
  return vnodesReply(sys, changed);
}

/** ALTER_CLUSTER_COPY: the default copies for VDIs created from now on (existing VDIs keep theirs). */
async function alterClusterCopy(sys: System, req: OpRequest): Promise<OpReply> {
  const a = args<ClusterCopiesArgs>(req);
  const copies = Number(a.copies);
  if (!Number.isInteger(copies) || copies < 1 || copies > 31) throw new SdError(Res.INVALID_PARMS, 'copies must be 1..31');
  return reply(await sys.decide<ClusterCopiesReply>({ kind: 'copies', copies }));
}

// ------------------------------------------------------------------ authentication (lib/auth.ts)

async function auth(sys: System, req: OpRequest): Promise<OpReply> {
  const key = req.access.key;
  if (!key) throw new SdError(Res.ACCESS_DENIED, 'this sheep has no cluster key');
  const a = decodeAuthStep(req.data);
  const c = req.conn;
  if (a.step === 1) {
    const snonce = newNonce();
    c.challenge = { role: a.role, cnonce: Buffer.from(a.bytes), snonce };
    return { data: Buffer.concat([snonce, authProof(key, 'server', a.role, c.challenge.cnonce, snonce)]) };
  }
  const ch = c.challenge;
  c.challenge = null;
  if (!ch || ch.role !== a.role || !proofMatches(authProof(key, 'client', ch.role, ch.cnonce, ch.snonce), a.bytes)) {
    sys.log.warn({ peer: c.peer, role: a.role }, 'authentication failed: wrong cluster key');
    throw new SdError(Res.ACCESS_DENIED, 'authentication failed');
  }
  c.role = ch.role;
  c.onAuthenticated?.();
  sys.log.debug({ peer: c.peer, role: ch.role }, 'connection authenticated');
  return {};
}

/** A VDI served read-only (--readonly-vdi, --nbd-readonly) refuses writes from unauthenticated clients. */
function guardReadonly(sys: System, req: OpRequest, vid: number): void {
  if (req.conn.role !== 'client' || !req.access.readonlyVdis.size) return;
  const e = sys.vdis.get(vid);
  if (e && req.access.readonlyVdis.has(e.name)) throw new SdError(Res.READONLY, `VDI ${e.name} is read-only for unauthenticated clients`);
}

// ------------------------------------------------------------------ the table

type Handler = OpDef['handler'];
const op = (name: string, kind: OpKind, role: Role, handler: Handler, needsFormat = true): OpDef => ({ name, kind, role, needsFormat, handler });

export const OPS: ReadonlyMap<number, OpDef> = new Map<number, OpDef>([
  //                                   name                     kind       role      handler             needs format
  [Op.CREATE_AND_WRITE_OBJ,   op('CREATE_AND_WRITE_OBJ',  'gateway', 'client', createAndWriteObj)],
  [Op.READ_OBJ,               op('READ_OBJ',              'gateway', 'client', readObj)],
  [Op.WRITE_OBJ,              op('WRITE_OBJ',             'gateway', 'client', writeObj)],
  [Op.REMOVE_OBJ,             op('REMOVE_OBJ',            'gateway', 'client', removeObj)],
  [Op.DISCARD_OBJ,            op('DISCARD_OBJ',           'gateway', 'client', discardObj)],
  [Op.FLUSH_VDI,              op('FLUSH_VDI',             'gateway', 'client', flushVdi)],
  [Op.NEW_VDI,                op('NEW_VDI',               'cluster', 'client', newVdi)],
  [Op.LOCK_VDI,               op('LOCK_VDI',              'cluster', 'client', lockVdi)],
  [Op.RELEASE_VDI,            op('RELEASE_VDI',           'cluster', 'client', releaseVdi)],
  [Op.DEL_VDI,                op('DEL_VDI',               'cluster', 'client', delVdi)],
  [Op.GET_VDI_INFO,           op('GET_VDI_INFO',          'local',   'client', getVdiInfo)],
  [Op.READ_VDIS,              op('READ_VDIS',             'local',   'client', readVdis)],
  [Op.GET_CLUSTER_DEFAULT,    op('GET_CLUSTER_DEFAULT',   'local',   'client', getClusterDefault)],
  [Op.AUTH,                   op('AUTH',                  'local',   'client', auth, false)],
  [Op.READ_PEER,              op('READ_PEER',             'peer',    'peer',   readPeer)],
  [Op.WRITE_PEER,             op('WRITE_PEER',            'peer',    'peer',   writePeer)],
  [Op.CREATE_AND_WRITE_PEER,  op('CREATE_AND_WRITE_PEER', 'peer',    'peer',   createPeer)],
  [Op.REMOVE_PEER,            op('REMOVE_PEER',           'peer',    'peer',   removePeer)],
  [Op.FLUSH_PEER,             op('FLUSH_PEER',            'peer',    'peer',   flushPeer)],
  [Op.GET_OBJ_LIST,           op('GET_OBJ_LIST',          'peer',    'peer',   getObjList)],
  [Op.GET_HASH_PEER,          op('GET_HASH_PEER',         'peer',    'peer',   hashPeer)],
  [Op.GET_SNAPSHOT,           op('GET_SNAPSHOT',          'local',   'peer',   getSnapshot, false)],
  [Op.MAKE_FS,                op('MAKE_FS',               'cluster', 'admin',  makeFs, false)],
  [Op.SHUTDOWN,               op('SHUTDOWN',              'cluster', 'admin',  shutdown, false)],
  [Op.FORCE_RECOVER,          op('FORCE_RECOVER',         'cluster', 'admin',  forceRecover, false)],
  [Op.ENABLE_RECOVER,         op('ENABLE_RECOVER',        'cluster', 'admin',  enableRecover, false)],
  [Op.DISABLE_RECOVER,        op('DISABLE_RECOVER',       'cluster', 'admin',  disableRecover, false)],
  [Op.GET_VDI_ATTR,           op('GET_VDI_ATTR',          'cluster', 'admin',  getVdiAttr)],
  [Op.LOCK_FORCE_RELEASE,     op('LOCK_FORCE_RELEASE',    'cluster', 'admin',  lockForceRelease)],
  [Op.ALTER_VDI_COPY,         op('ALTER_VDI_COPY',        'cluster', 'admin',  alterVdiCopyOp)],
  [Op.STAT_RECOVERY,          op('STAT_RECOVERY',         'local',   'admin',  statRecovery, false)],
  [Op.SET_RECOVERY_THROTTLE,  op('SET_RECOVERY_THROTTLE', 'local',   'admin',  setRecoveryThrottle, false)],
  [Op.GET_RECOVERY_THROTTLE,  op('GET_RECOVERY_THROTTLE', 'local',   'admin',  getRecoveryThrottle, false)],
  [Op.GET_NODE_LIST,          op('GET_NODE_LIST',         'local',   'admin',  getNodeList, false)],
  // peer role too: `cluster reweight` asks every member for its disk size
  [Op.STAT_SHEEP,             op('STAT_SHEEP',            'local',   'peer',   statSheep, false)],
  [Op.STAT_CLUSTER,           op('STAT_CLUSTER',          'local',   'admin',  statCluster, false)],
  [Op.LOCK_LIST,              op('LOCK_LIST',             'local',   'admin',  lockList)],
  [Op.MD_INFO,                op('MD_INFO',               'local',   'admin',  mdInfo, false)],
  [Op.MD_PLUG,                op('MD_PLUG',               'local',   'admin',  mdPlug, false)],
  [Op.MD_UNPLUG,              op('MD_UNPLUG',             'local',   'admin',  mdUnplug, false)],
  [Op.KILL_NODE,              op('KILL_NODE',             'local',   'admin',  killNode, false)],
  [Op.STAT,                   op('STAT',                  'local',   'admin',  nodeStat, false)],
  [Op.GET_LOGLEVEL,           op('GET_LOGLEVEL',          'local',   'admin',  getLoglevel, false)],
  [Op.SET_LOGLEVEL,           op('SET_LOGLEVEL',          'local',   'admin',  setLoglevel, false)],
  [Op.SET_VNODES,             op('SET_VNODES',            'cluster', 'admin',  setVnodes)],
  [Op.REWEIGHT,               op('REWEIGHT',              'cluster', 'admin',  reweight)],
  [Op.ALTER_CLUSTER_COPY,     op('ALTER_CLUSTER_COPY',    'cluster', 'admin',  alterClusterCopy)],
]);
