// The op table: every opcode sheep answers, with its kind and handler (like Sheepdog's sheep/ops.c).
//   gateway: object I/O from clients, routed to the object's replicas
//   peer:    object I/O on this node's own store (sheep-to-sheep)
//   cluster: a decision ordered through the cluster driver and applied on every node
//   local:   answered from this node's state

import { pack, unpack } from 'msgpackr';
import {
  Op, Flag, Res, SdError, decodeObjReq, decodeVdiReq, decodeNameTag, type HeaderPrefix, type ObjReq,
} from '../lib/proto.js';
import { oidKind, oidToVid, dataOidToIdx, NR_VDIS } from '../lib/oid.js';
import { SD_MIN_BLOCK_SIZE_SHIFT, SD_MAX_BLOCK_SIZE_SHIFT } from '../lib/inode.js';
import { vdiAttr, type AttrRequest } from './vdi-attr.js';
import { checkRange, objRead, objWrite, objCreate, MAX_DATA_LENGTH } from './object-io.js';
import { SD_INODE_SIZE } from '../lib/inode.js';

/** Nothing a sheep stores is larger than a 2^31-byte object. */
const MAX_OBJECT_SIZE = Math.max(2 ** 31, SD_INODE_SIZE);
import type { System } from './system.js';
import type { VdiEntry } from './vdi.js';
import { localList, packObjList, parseThrottle, type Throttle } from './recovery.js';

export type OpKind = 'gateway' | 'peer' | 'cluster' | 'local';

export interface OpRequest {
  prefix: HeaderPrefix;
  hdr: Buffer;
  /** the payload; present only when the request carried CMD_WRITE */
  data: Buffer;
}

export interface OpReply {
  result?: number;
  data?: Buffer;
  vdi?: { vdiId: number; attrId?: number; copies: number; blockSizeShift: number };
  clusterDefault?: { nrCopies: number; copyPolicy: number; blockSizeShift: number };
}

export interface OpDef {
  name: string;
  kind: OpKind;
  /** answered WAIT_FOR_FORMAT before the cluster is formatted */
  needsFormat: boolean;
  handler: (sys: System, req: OpRequest) => Promise<OpReply>;
}


// ------------------------------------------------------------------ object I/O

function checkedObjReq(sys: System, req: OpRequest, write: boolean): ObjReq & { off: number } {
  const r = decodeObjReq(req.hdr);
  if (write && !(r.flags & Flag.CMD_WRITE)) throw new SdError(Res.INVALID_PARMS, 'write without CMD_WRITE payload');
  checkRange(sys, r.oid, r.offset, r.dataLength);
  return { ...r, off: Number(r.offset) };
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
  await objWrite(sys, r.oid, r.off, req.data);
  return {};
}

async function createAndWriteObj(sys: System, req: OpRequest): Promise<OpReply> {
  const r = checkedObjReq(sys, req, true);
  await objCreate(sys, r.oid, r.off, req.data, r.flags & Flag.CMD_COW && r.cowOid !== 0n ? r.cowOid : undefined);
  return {};
}

async function removeObj(sys: System, req: OpRequest): Promise<OpReply> {
  const r = checkedObjReq(sys, req, false);
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
  return { ...r, off: Number(r.offset) };
}

async function readPeer(sys: System, req: OpRequest): Promise<OpReply> {
  const r = peerReq(sys, req);
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

/** GET_OBJ_LIST: this node's objects and the epoch of their last write (recovery). */
async function getObjList(sys: System): Promise<OpReply> {
  return { data: packObjList(await localList(sys.store)) };
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
  const e = await sys.newVdi({
    name, size: r.vdiSize, baseVid: r.baseVdiId, snapshot: r.snapid === 1 && r.baseVdiId !== 0,
    copies: r.copies, copyPolicy: r.copyPolicy, blockSizeShift: r.blockSizeShift,
  });
  return vdiReply(e);
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

function args<T>(req: OpRequest): T {
  if (!req.data.length) throw new SdError(Res.INVALID_PARMS, 'missing arguments');
  try {
    return unpack(req.data) as T;
  } catch {
    throw new SdError(Res.INVALID_PARMS, 'malformed arguments');
  }
}

function reply(v: unknown): OpReply {
  return { data: pack(v) };
}

export interface MakeFsArgs {
  copies: number;
  copyPolicy?: number;
  blockSizeShift?: number;
  lock?: boolean;
}

async function makeFs(sys: System, req: OpRequest): Promise<OpReply> {
  const a = args<MakeFsArgs>(req);
  const copies = Number(a.copies);
  const bss = Number(a.blockSizeShift ?? 22);
  if (!Number.isInteger(copies) || copies < 1 || copies > 31) throw new SdError(Res.INVALID_PARMS, 'copies must be 1..31');
  if (!Number.isInteger(bss) || bss < SD_MIN_BLOCK_SIZE_SHIFT || bss > SD_MAX_BLOCK_SIZE_SHIFT) {
    throw new SdError(Res.INVALID_PARMS, `block size shift must be ${SD_MIN_BLOCK_SIZE_SHIFT}..${SD_MAX_BLOCK_SIZE_SHIFT}`);
  }
  await sys.decide({ kind: 'format', copies, copyPolicy: 0, blockSizeShift: bss, lock: Boolean(a.lock), ctime: Date.now() });
  return {};
}

async function shutdown(sys: System): Promise<OpReply> {
  // answer first, then stop: the client must see SUCCESS
  setImmediate(() => void sys.decide({ kind: 'shutdown' }).catch((e) => sys.log.error({ err: e }, 'shutdown failed')));
  return {};
}

export interface NodeListReply {
  nodes: Array<{ nid: string; host: string; port: number; zone: number; vnodes: number }>;
  me: string;
}

async function getNodeList(sys: System): Promise<OpReply> {
  const r: NodeListReply = { nodes: sys.members, me: sys.me.nid };
  return reply(r);
}

export interface StatSheepReply {
  size: number;
  used: number;
  avail: number;
  vdiSizeTotal: number;
}

async function statSheep(sys: System): Promise<OpReply> {
  const d = await sys.diskStats();
  let total = 0;
  for (const v of sys.vdis.all()) if (!v.deleted && v.snapCtime === 0n) total += Number(v.vdiSize);
  const r: StatSheepReply = { ...d, vdiSizeTotal: total };
  return reply(r);
}

export interface StatClusterReply {
  status: string;
  statusText: string;
  autoRecovery: boolean;
  ctime: number;
  epoch: number;
  copies: number;
  copyPolicy: number;
  blockSizeShift: number;
  lock: boolean;
  nodes: number;
  /** distinct zones among the nodes: replicas go to distinct zones */
  zones: number;
  history: Array<{ epoch: number; time: number; nodes: Array<{ host: string; port: number; vnodes: number }> }>;
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
  return reply(await sys.withAttrLock(String(a.name), () => vdiAttr(sys, a)));
}

async function lockList(sys: System): Promise<OpReply> {
  return reply(sys.vdis.lockList());
}

async function lockForceRelease(sys: System, req: OpRequest): Promise<OpReply> {
  const a = args<{ vid: number }>(req);
  const done = await sys.decide<boolean>({ kind: 'forceRelease', vid: Number(a.vid) });
  if (!done) throw new SdError(Res.VDI_NOT_LOCKED);
  return {};
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

// ------------------------------------------------------------------ the table

const g = (name: string, handler: OpDef['handler']): OpDef => ({ name, kind: 'gateway', needsFormat: true, handler });
const p = (name: string, handler: OpDef['handler']): OpDef => ({ name, kind: 'peer', needsFormat: true, handler });
const c = (name: string, handler: OpDef['handler'], needsFormat = true): OpDef => ({ name, kind: 'cluster', needsFormat, handler });
const l = (name: string, handler: OpDef['handler'], needsFormat = true): OpDef => ({ name, kind: 'local', needsFormat, handler });

export const OPS: ReadonlyMap<number, OpDef> = new Map<number, OpDef>([
  [Op.CREATE_AND_WRITE_OBJ, g('CREATE_AND_WRITE_OBJ', createAndWriteObj)],
  [Op.READ_OBJ, g('READ_OBJ', readObj)],
  [Op.WRITE_OBJ, g('WRITE_OBJ', writeObj)],
  [Op.REMOVE_OBJ, g('REMOVE_OBJ', removeObj)],
  [Op.DISCARD_OBJ, g('DISCARD_OBJ', discardObj)],
  [Op.FLUSH_VDI, g('FLUSH_VDI', flushVdi)],
  [Op.READ_PEER, p('READ_PEER', readPeer)],
  [Op.WRITE_PEER, p('WRITE_PEER', writePeer)],
  [Op.CREATE_AND_WRITE_PEER, p('CREATE_AND_WRITE_PEER', createPeer)],
  [Op.REMOVE_PEER, p('REMOVE_PEER', removePeer)],
  [Op.FLUSH_PEER, p('FLUSH_PEER', flushPeer)],
  [Op.GET_OBJ_LIST, p('GET_OBJ_LIST', getObjList)],
  [Op.STAT_RECOVERY, l('STAT_RECOVERY', statRecovery, false)],
  [Op.SET_RECOVERY_THROTTLE, l('SET_RECOVERY_THROTTLE', setRecoveryThrottle, false)],
  [Op.GET_RECOVERY_THROTTLE, l('GET_RECOVERY_THROTTLE', getRecoveryThrottle, false)],
  [Op.FORCE_RECOVER, c('FORCE_RECOVER', forceRecover, false)],
  [Op.ENABLE_RECOVER, c('ENABLE_RECOVER', enableRecover, false)],
  [Op.DISABLE_RECOVER, c('DISABLE_RECOVER', disableRecover, false)],
  [Op.NEW_VDI, c('NEW_VDI', newVdi)],
  [Op.LOCK_VDI, c('LOCK_VDI', lockVdi)],
  [Op.RELEASE_VDI, c('RELEASE_VDI', releaseVdi)],
  [Op.DEL_VDI, c('DEL_VDI', delVdi)],
  [Op.GET_VDI_INFO, l('GET_VDI_INFO', getVdiInfo)],
  [Op.READ_VDIS, l('READ_VDIS', readVdis)],
  [Op.GET_CLUSTER_DEFAULT, l('GET_CLUSTER_DEFAULT', getClusterDefault)],
  [Op.MAKE_FS, c('MAKE_FS', makeFs, false)],
  [Op.SHUTDOWN, c('SHUTDOWN', shutdown, false)],
  [Op.GET_VDI_ATTR, c('GET_VDI_ATTR', getVdiAttr)],
  [Op.LOCK_FORCE_RELEASE, c('LOCK_FORCE_RELEASE', lockForceRelease)],
  [Op.GET_NODE_LIST, l('GET_NODE_LIST', getNodeList, false)],
  [Op.STAT_SHEEP, l('STAT_SHEEP', statSheep, false)],
  [Op.STAT_CLUSTER, l('STAT_CLUSTER', statCluster, false)],
  [Op.LOCK_LIST, l('LOCK_LIST', lockList)],
]);
