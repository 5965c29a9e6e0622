// Sheepdog wire protocol: constants and the 48-byte header codecs (DESIGN.md §3).
// Every multi-byte field is little-endian. One encoder/decoder per header view.

export const SD_PROTO_VER = 0x02;
export const SD_HEADER_SIZE = 48;

/** Client opcodes (QEMU's sheepdog driver) and internal ones (collie and sheep-to-sheep). */
export const Op = {
  CREATE_AND_WRITE_OBJ: 0x01,
  READ_OBJ: 0x02,
  WRITE_OBJ: 0x03,
  REMOVE_OBJ: 0x04,
  DISCARD_OBJ: 0x05,
  NEW_VDI: 0x11,
  LOCK_VDI: 0x12,
  RELEASE_VDI: 0x13,
  GET_VDI_INFO: 0x14,
  READ_VDIS: 0x15,
  FLUSH_VDI: 0x16,
  DEL_VDI: 0x17,
  GET_CLUSTER_DEFAULT: 0x18,
  // internal
  GET_NODE_LIST: 0x82,
  MAKE_FS: 0x84,
  SHUTDOWN: 0x85,
  STAT_SHEEP: 0x86,
  STAT_CLUSTER: 0x87,
  GET_VDI_ATTR: 0x89,
  FORCE_RECOVER: 0x8a,
  STAT_RECOVERY: 0x97,
  KILL_NODE: 0x9a,
  GET_OBJ_LIST: 0xa1,
  GET_EPOCH: 0xa2,
  CREATE_AND_WRITE_PEER: 0xa3,
  READ_PEER: 0xa4,
  WRITE_PEER: 0xa5,
  REMOVE_PEER: 0xa6,
  ENABLE_RECOVER: 0xa8,
  DISABLE_RECOVER: 0xa9,
  FLUSH_NODES: 0xad,
  FLUSH_PEER: 0xae,
  // multi-disk: `collie node md info|plug|unplug` (the original's numbers)
  MD_INFO: 0xb1,
  MD_PLUG: 0xb2,
  MD_UNPLUG: 0xb3,
  // the original's numbers: node and cluster administration (`collie node stat|log|vnodes`, `cluster reweight|alter-copy`)
  REWEIGHT: 0xb5,
  STAT: 0xb8,
  GET_LOGLEVEL: 0xb9,
  SET_LOGLEVEL: 0xba,
  ALTER_CLUSTER_COPY: 0xbf,
  SET_VNODES: 0xcc,
  // ours: lock table listing and forced unlock for `collie vdi lock`
  LOCK_LIST: 0xc0,
  LOCK_FORCE_RELEASE: 0xc1,
  // ours: recovery throttling of one node (`collie node recovery set-throttle|get-throttle`)
  SET_RECOVERY_THROTTLE: 0xc2,
  GET_RECOVERY_THROTTLE: 0xc3,
  // ours: sha256 of an object's content on this node's store (recovery keeps a current set-aside copy)
  GET_HASH_PEER: 0xc4,
  // ours: the cluster state the master offered a joiner in its welcome (membership.ts), fetched by the joiner
  GET_SNAPSHOT: 0xc5,
  // ours in number: the original's SD_OP_ALTER_VDI_COPY is 0xC0, which is our LOCK_LIST; changes a VDI's
  // copy count (a cluster decision) and gives its objects that many copies (`collie vdi alter-copy`)
  ALTER_VDI_COPY: 0xc8,
  // ours: proves the cluster key on a connection (lib/auth.ts), which may then send admin or peer opcodes
  AUTH: 0xd0,
} as const;
export type OpCode = (typeof Op)[keyof typeof Op];

export const Flag = {
  CMD_WRITE: 0x01,
  CMD_COW: 0x02,
  CMD_CACHE: 0x04,
  CMD_DIRECT: 0x08,
  CMD_PIGGYBACK: 0x10,
  /** ours, on CREATE_AND_WRITE_PEER: create only if the object is absent (an existing copy wins) */
  CMD_IF_ABSENT: 0x0800,
  /** ours, on READ_PEER and GET_OBJ_LIST: the set-aside copies (obj/.stale), a recovery source of last resort */
  CMD_STALE: 0x1000,
  /** ours, on peer object I/O: the gateway does it for a client (recovery on that node makes room for it) */
  CMD_FOR_CLIENT: 0x2000,
} as const;

export const Res = {
  SUCCESS: 0x00,
  UNKNOWN: 0x01,
  NO_OBJ: 0x02,
  EIO: 0x03,
  VDI_EXIST: 0x04,
  INVALID_PARMS: 0x05,
  SYSTEM_ERROR: 0x06,
  VDI_LOCKED: 0x07,
  NO_VDI: 0x08,
  NO_BASE_VDI: 0x09,
  VDI_READ: 0x0a,
  VDI_WRITE: 0x0b,
  BASE_VDI_READ: 0x0c,
  BASE_VDI_WRITE: 0x0d,
  NO_TAG: 0x0e,
  STARTUP: 0x0f,
  VDI_NOT_LOCKED: 0x10,
  SHUTDOWN: 0x11,
  NO_MEM: 0x12,
  FULL_VDI: 0x13,
  VER_MISMATCH: 0x14,
  NO_SPACE: 0x15,
  WAIT_FOR_FORMAT: 0x16,
  WAIT_FOR_JOIN: 0x17,
  JOIN_FAILED: 0x18,
  HALT: 0x19,
  READONLY: 0x1a,
  // internal
  OLD_NODE_VER: 0x81,
  NEW_NODE_VER: 0x82,
  NOT_FORMATTED: 0x83,
  INVALID_CTIME: 0x84,
  INVALID_EPOCH: 0x85,
  NETWORK_ERROR: 0x86,
  AGAIN: 0x8f,
  STALE_OBJ: 0x90,
  CLUSTER_ERROR: 0x91,
  // ours: the connection's role may not send this opcode (authenticate with the cluster key first)
  ACCESS_DENIED: 0x92,
} as const;
export type ResultCode = (typeof Res)[keyof typeof Res];

/** The human wording Sheepdog's CLI prints for each result (sheepdog's sd_strerror). */
const RESULT_TEXT: Record<number, string> = {
  [Res.SUCCESS]: 'Success',
  [Res.UNKNOWN]: 'Unknown error',
  [Res.NO_OBJ]: 'No object found',
  [Res.EIO]: 'I/O error',
  [Res.VDI_EXIST]: 'VDI exists already',
  [Res.INVALID_PARMS]: 'Invalid parameters',
  [Res.SYSTEM_ERROR]: 'System error',
  [Res.VDI_LOCKED]: 'VDI is already locked',
  [Res.NO_VDI]: 'No VDI found',
  [Res.NO_BASE_VDI]: 'No base VDI found',
  [Res.VDI_READ]: 'Failed to read from requested VDI',
  [Res.VDI_WRITE]: 'Failed to write to requested VDI',
  [Res.BASE_VDI_READ]: 'Failed to read from base VDI',
  [Res.BASE_VDI_WRITE]: 'Failed to write to base VDI',
  [Res.NO_TAG]: 'Failed to find requested tag',
  [Res.STARTUP]: 'System is still booting',
  [Res.VDI_NOT_LOCKED]: 'VDI is not locked',
  [Res.SHUTDOWN]: 'System is shutting down',
  [Res.NO_MEM]: 'Out of memory on server',
  [Res.FULL_VDI]: "Maximum number of VDIs reached",
  [Res.VER_MISMATCH]: 'Protocol version mismatch',
  [Res.NO_SPACE]: 'Server has no space for new objects',
  [Res.WAIT_FOR_FORMAT]: 'Waiting for cluster to be formatted',
  [Res.WAIT_FOR_JOIN]: 'Waiting for other nodes to join cluster',
  [Res.JOIN_FAILED]: 'Node has failed to join cluster',
  [Res.HALT]: 'IO has halted as there are not enough living nodes',
  [Res.READONLY]: 'Object is read-only',
  [Res.OLD_NODE_VER]: 'Request has an old epoch',
  [Res.NEW_NODE_VER]: 'Request has a new epoch',
  [Res.NOT_FORMATTED]: 'Cluster has not been formatted',
  [Res.INVALID_CTIME]: 'Creation time is different',
  [Res.INVALID_EPOCH]: 'Invalid epoch',
  [Res.NETWORK_ERROR]: 'Network error between sheep',
  [Res.AGAIN]: 'Try again later',
  [Res.STALE_OBJ]: 'Object may be stale',
  [Res.CLUSTER_ERROR]: 'Cluster driver error',
  [Res.ACCESS_DENIED]: 'Permission denied: this request needs a connection authenticated with the cluster key',
};

export function resultText(r: number): string {
  return RESULT_TEXT[r] ?? `Unknown result 0x${r.toString(16)}`;
}

const RESULT_NAME = new Map<number, string>(Object.entries(Res).map(([k, v]) => [v, k]));
export function resultName(r: number): string {
  return RESULT_NAME.get(r) ?? `0x${r.toString(16)}`;
}
const OP_NAME = new Map<number, string>(Object.entries(Op).map(([k, v]) => [v, k]));
export function opName(o: number): string {
  return OP_NAME.get(o) ?? `OP_0x${o.toString(16)}`;
}

/** An error that carries the protocol result code it should be answered with. */
export class SdError extends Error {
  constructor(readonly result: number, message?: string) {
    super(message ?? resultText(result));
    this.name = 'SdError';
  }
}

// ------------------------------------------------------------------ common prefix

/** Bytes 0..15, shared by every request and response. */
export interface HeaderPrefix {
  protoVer: number;
  opcode: number;
  flags: number;
  epoch: number;
  id: number;
  dataLength: number;
}

export function decodePrefix(b: Buffer): HeaderPrefix {
  return {
    protoVer: b[0],
    opcode: b[1],
    flags: b.readUInt16LE(2),
    epoch: b.readUInt32LE(4),
    id: b.readUInt32LE(8),
    dataLength: b.readUInt32LE(12),
  };
}

function encodePrefix(b: Buffer, p: HeaderPrefix): void {
  b[0] = p.protoVer;
  b[1] = p.opcode;
  b.writeUInt16LE(p.flags, 2);
  b.writeUInt32LE(p.epoch >>> 0, 4);
  b.writeUInt32LE(p.id >>> 0, 8);
  b.writeUInt32LE(p.dataLength >>> 0, 12);
}

// ------------------------------------------------------------------ object request

export interface ObjReq extends HeaderPrefix {
  oid: bigint;
  cowOid: bigint;
  copies: number;
  copyPolicy: number;
  ecIndex: number;
  tgtEpoch: number;
  offset: bigint;
}

export function decodeObjReq(b: Buffer): ObjReq {
  // every request pays for this: the prefix's object gains the fields (an object spread costs more)
  const r = decodePrefix(b) as ObjReq;
  r.oid = b.readBigUInt64LE(16);
  r.cowOid = b.readBigUInt64LE(24);
  r.copies = b[32];
  r.copyPolicy = b[33];
  r.ecIndex = b[34];
  r.tgtEpoch = b.readUInt32LE(36);
  r.offset = b.readBigUInt64LE(40);
  return r;
}

export function encodeObjReq(r: ObjReq): Buffer {
  const b = Buffer.alloc(SD_HEADER_SIZE);
  encodePrefix(b, r);
  b.writeBigUInt64LE(r.oid, 16);
  b.writeBigUInt64LE(r.cowOid, 24);
  b[32] = r.copies;
  b[33] = r.copyPolicy;
  b[34] = r.ecIndex;
  b.writeUInt32LE(r.tgtEpoch >>> 0, 36);
  b.writeBigUInt64LE(r.offset, 40);
  return b;
}

// ------------------------------------------------------------------ VDI request

export interface VdiReq extends HeaderPrefix {
  vdiSize: bigint;
  baseVdiId: number;
  copies: number;
  copyPolicy: number;
  storePolicy: number;
  blockSizeShift: number;
  snapid: number;
  type: number;
}

export function decodeVdiReq(b: Buffer): VdiReq {
  return {
    ...decodePrefix(b),
    vdiSize: b.readBigUInt64LE(16),
    baseVdiId: b.readUInt32LE(24),
    copies: b[28],
    copyPolicy: b[29],
    storePolicy: b[30],
    blockSizeShift: b[31],
    snapid: b.readUInt32LE(32),
    type: b.readUInt32LE(36),
  };
}

export function encodeVdiReq(r: VdiReq): Buffer {
  const b = Buffer.alloc(SD_HEADER_SIZE);
  encodePrefix(b, r);
  b.writeBigUInt64LE(r.vdiSize, 16);
  b.writeUInt32LE(r.baseVdiId >>> 0, 24);
  b[28] = r.copies;
  b[29] = r.copyPolicy;
  b[30] = r.storePolicy;
  b[31] = r.blockSizeShift;
  b.writeUInt32LE(r.snapid >>> 0, 32);
  b.writeUInt32LE(r.type >>> 0, 36);
  return b;
}

// ------------------------------------------------------------------ generic request (internal ops)

/** Internal ops carry their arguments in a msgpack payload; the header only frames them. */
export type PlainReq = HeaderPrefix;

export function encodePlainReq(r: PlainReq): Buffer {
  const b = Buffer.alloc(SD_HEADER_SIZE);
  encodePrefix(b, r);
  return b;
}

// ------------------------------------------------------------------ responses

export interface Rsp extends HeaderPrefix {
  result: number;
  /** VDI replies: 24 vdi_id, 28 attr_id, 32 copies, 33 block_size_shift. */
  vdiId: number;
  attrId: number;
  copies: number;
  blockSizeShift: number;
  /** GET_CLUSTER_DEFAULT replies: 20 nr_copies, 21 copy_policy, 22 block_size_shift. */
  defNrCopies: number;
  defCopyPolicy: number;
  defBlockSizeShift: number;
}

export function decodeRsp(b: Buffer): Rsp {
  // every reply pays for this: the prefix's object gains the fields (an object spread costs more)
  const r = decodePrefix(b) as Rsp;
  r.result = b.readUInt32LE(16);
  r.defNrCopies = b[20];
  r.defCopyPolicy = b[21];
  r.defBlockSizeShift = b[22];
  r.vdiId = b.readUInt32LE(24);
  r.attrId = b.readUInt32LE(28);
  r.copies = b[32];
  r.blockSizeShift = b[33];
  return r;
}

export interface RspInit {
  opcode: number;
  id: number;
  epoch: number;
  result: number;
  dataLength?: number;
  vdi?: { vdiId: number; attrId?: number; copies: number; blockSizeShift: number };
  clusterDefault?: { nrCopies: number; copyPolicy: number; blockSizeShift: number };
}

/** Encodes a response header the way Sheepdog 1.0 lays it out (proto_ver 0, opcode echoed, flags 0). */
export function encodeRsp(r: RspInit): Buffer {
  const b = Buffer.alloc(SD_HEADER_SIZE);
  encodePrefix(b, { protoVer: 0, opcode: r.opcode, flags: 0, epoch: r.epoch, id: r.id, dataLength: r.dataLength ?? 0 });
  b.writeUInt32LE(r.result >>> 0, 16);
  if (r.clusterDefault) {
    b[20] = r.clusterDefault.nrCopies;
    b[21] = r.clusterDefault.copyPolicy;
    b[22] = r.clusterDefault.blockSizeShift;
  }
  if (r.vdi) {
    b.writeUInt32LE(r.vdi.vdiId >>> 0, 24);
    b.writeUInt32LE((r.vdi.attrId ?? 0) >>> 0, 28);
    b[32] = r.vdi.copies;
    b[33] = r.vdi.blockSizeShift;
  }
  return b;
}

// ------------------------------------------------------------------ names in payloads

export const SD_MAX_VDI_LEN = 256;
export const SD_MAX_VDI_TAG_LEN = 256;

/** Reads a NUL-terminated string from a fixed-size field. */
export function readCString(b: Buffer, start: number, len: number): string {
  const end = Math.min(b.length, start + len);
  if (start >= end) return '';
  const nul = b.indexOf(0, start);
  return b.toString('utf8', start, nul >= 0 && nul < end ? nul : end);
}

/** Writes `s` into a fixed-size, NUL-padded field. Throws when it does not fit (NUL included). */
export function writeCString(b: Buffer, start: number, len: number, s: string): void {
  const bytes = Buffer.from(s, 'utf8');
  if (bytes.length >= len) throw new SdError(Res.INVALID_PARMS, `name too long (${bytes.length} bytes, max ${len - 1})`);
  b.fill(0, start, start + len);
  bytes.copy(b, start);
}

/** Payload of NEW_VDI/LOCK_VDI/GET_VDI_INFO/DEL_VDI: name[256] (+ tag[256]). */
export function encodeNameTag(name: string, tag?: string): Buffer {
  const b = Buffer.alloc(tag === undefined ? SD_MAX_VDI_LEN : SD_MAX_VDI_LEN + SD_MAX_VDI_TAG_LEN);
  writeCString(b, 0, SD_MAX_VDI_LEN, name);
  if (tag !== undefined) writeCString(b, SD_MAX_VDI_LEN, SD_MAX_VDI_TAG_LEN, tag);
  return b;
}

export function decodeNameTag(b: Buffer): { name: string; tag: string } {
  return {
    name: readCString(b, 0, SD_MAX_VDI_LEN),
    tag: b.length > SD_MAX_VDI_LEN ? readCString(b, SD_MAX_VDI_LEN, SD_MAX_VDI_TAG_LEN) : '',
  };
}
