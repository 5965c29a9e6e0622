// The inode object (DESIGN.md §3): a 4664-byte header followed by the 2^20-entry data_vdi_id map.

import { readCString, writeCString, SD_MAX_VDI_LEN, SD_MAX_VDI_TAG_LEN } from './proto.js';

export const SD_INODE_HEADER_SIZE = 4664;
export const SD_DATA_OBJ_MAX = 1 << 20; // map entries per VDI
export const SD_INODE_SIZE = SD_INODE_HEADER_SIZE + 4 * SD_DATA_OBJ_MAX; // 4,198,968
/**
 * The inode as Sheepdog 1.0's own tools read it: the map is followed by gref[2^20] (8-byte
 * generation references, for its hyper-volume and reference-counting features). dog 1.0 reads the
 * whole of it; this store keeps no references, so that tail reads as zeros and is never stored.
 */
export const SD_INODE_SIZE_V1 = SD_INODE_SIZE + 8 * SD_DATA_OBJ_MAX; // 12,587,576
export const MAX_CHILDREN = 1024;
export const SD_DEFAULT_BLOCK_SIZE_SHIFT = 22;
export const SD_MIN_BLOCK_SIZE_SHIFT = 20;
export const SD_MAX_BLOCK_SIZE_SHIFT = 31;
/** Largest VDI QEMU and Sheepdog accept at a given object size: 2^20 objects. */
export function maxVdiSize(blockSizeShift: number): bigint {
  return BigInt(SD_DATA_OBJ_MAX) << BigInt(blockSizeShift);
}

export const InodeOff = {
  name: 0,
  tag: 256,
  createTime: 512,
  snapCtime: 520,
  vmClockNsec: 528,
  vdiSize: 536,
  vmStateSize: 544,
  copyPolicy: 552,
  storePolicy: 553,
  nrCopies: 554,
  blockSizeShift: 555,
  snapId: 556,
  vdiId: 560,
  parentVdiId: 564,
  childVdiId: 568,
  dataVdiId: SD_INODE_HEADER_SIZE,
} as const;

export interface InodeHeader {
  name: string;
  tag: string;
  /** seconds in the high 32 bits, nanoseconds in the low 32 bits */
  createTime: bigint;
  snapCtime: bigint;
  vmClockNsec: bigint;
  vdiSize: bigint;
  vmStateSize: bigint;
  copyPolicy: number;
  storePolicy: number;
  nrCopies: number;
  blockSizeShift: number;
  snapId: number;
  vdiId: number;
  parentVdiId: number;
}

export function decodeInodeHeader(b: Buffer): InodeHeader {
  if (b.length < InodeOff.childVdiId) throw new RangeError(`inode header needs ${InodeOff.childVdiId} bytes, got ${b.length}`);
  return {
    name: readCString(b, InodeOff.name, SD_MAX_VDI_LEN),
    tag: readCString(b, InodeOff.tag, SD_MAX_VDI_TAG_LEN),
    createTime: b.readBigUInt64LE(InodeOff.createTime),
    snapCtime: b.readBigUInt64LE(InodeOff.snapCtime),
    vmClockNsec: b.readBigUInt64LE(InodeOff.vmClockNsec),
    vdiSize: b.readBigUInt64LE(InodeOff.vdiSize),
    vmStateSize: b.readBigUInt64LE(InodeOff.vmStateSize),
    copyPolicy: b[InodeOff.copyPolicy],
    storePolicy: b[InodeOff.storePolicy],
    nrCopies: b[InodeOff.nrCopies],
    blockSizeShift: b[InodeOff.blockSizeShift],
    snapId: b.readUInt32LE(InodeOff.snapId),
    vdiId: b.readUInt32LE(InodeOff.vdiId),
    parentVdiId: b.readUInt32LE(InodeOff.parentVdiId),
  };
}

/** Encodes the header into `b` (at least 4664 bytes); the child area is left as it is. */
export function encodeInodeHeader(h: InodeHeader, b: Buffer = Buffer.alloc(SD_INODE_HEADER_SIZE)): Buffer {
  writeCString(b, InodeOff.name, SD_MAX_VDI_LEN, h.name);
  writeCString(b, InodeOff.tag, SD_MAX_VDI_TAG_LEN, h.tag);
  b.writeBigUInt64LE(h.createTime, InodeOff.createTime);
  b.writeBigUInt64LE(h.snapCtime, InodeOff.snapCtime);
  b.writeBigUInt64LE(h.vmClockNsec, InodeOff.vmClockNsec);
  b.writeBigUInt64LE(h.vdiSize, InodeOff.vdiSize);
  b.writeBigUInt64LE(h.vmStateSize, InodeOff.vmStateSize);
  b[InodeOff.copyPolicy] = h.copyPolicy;
  b[InodeOff.storePolicy] = h.storePolicy;
  b[InodeOff.nrCopies] = h.nrCopies;
  b[InodeOff.blockSizeShift] = h.blockSizeShift;
  b.writeUInt32LE(h.snapId >>> 0, InodeOff.snapId);
  b.writeUInt32LE(h.vdiId >>> 0, InodeOff.vdiId);
  b.writeUInt32LE(h.parentVdiId >>> 0, InodeOff.parentVdiId);
  return b;
}

/** Sheepdog's timestamp layout: seconds << 32 | nanoseconds. */
export function makeCtime(ms: number = Date.now(), extraNs = 0): bigint {
  const sec = Math.floor(ms / 1000);
  const ns = (ms % 1000) * 1_000_000 + extraNs;
  return (BigInt(sec) << 32n) | BigInt(ns >>> 0);
}

export function ctimeSeconds(ct: bigint): number {
  return Number(ct >> 32n);
}

export function isSnapshot(h: InodeHeader): boolean {
  return h.snapCtime !== 0n;
}

/** Objects a VDI of this size spans. */
export function objectCount(vdiSize: bigint, blockSizeShift: number): number {
  const objSize = 1n << BigInt(blockSizeShift);
  return Number((vdiSize + objSize - 1n) / objSize);
}

/** Byte offset of data_vdi_id[idx] inside the inode object. */
export function mapEntryOffset(idx: number): number {
  return InodeOff.dataVdiId + 4 * idx;
}
