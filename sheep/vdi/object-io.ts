// Object I/O with the rules every client path shares (port 7000 requests and the NBD export):
// oid kinds, ranges inside objects, READONLY snapshots, copy-on-write sources, inode map updates.

import { Res, SdError } from '../../lib/proto.js';
import { oidKind, oidToVid, dataOidToIdx, vidToVdiOid, type OidKind } from '../../lib/oid.js';
import { SD_INODE_SIZE, SD_INODE_SIZE_V1, objectCount, mapEntryOffset } from '../../lib/inode.js';
import type { ObjectTransport } from '../../lib/vdi-io.js';
import { SD_ATTR_OBJ_SIZE } from './vdi-attr.js';
import type { VdiContext } from './context.js';
import { stripIndexOf, baseOid, policyOf } from '../../lib/erasure-layout.js';

/** Largest payload or read a single request may carry (a whole inode is 4,198,968 bytes). */
export const MAX_DATA_LENGTH = 32 * 1024 * 1024;
export const VMSTATE_OBJ_SIZE = 4 * 1024 * 1024;

function kindOf(oid: bigint): OidKind {
  const kind = oidKind(oid);
  if (!kind) throw new SdError(Res.INVALID_PARMS, `malformed oid ${oid.toString(16)}`);
  return kind;
}

export function objectSize(sys: VdiContext, oid: bigint): number {
  const strip = stripIndexOf(oid);
  if (strip !== null) {
    // a strip of an erasure-coded data object: 1/X of it
    const base = baseOid(oid);
    const e = sys.vdis.get(oidToVid(base));
    const ec = policyOf(e ? e.copyPolicy : sys.clusterDefaults.copyPolicy);
    if (!ec) throw new SdError(Res.INVALID_PARMS, `strip ${strip} of ${base.toString(16)}, whose VDI is not erasure-coded`);
    return objectSize(sys, base) / ec.d;
  }
  switch (kindOf(oid)) {
    case 'inode':
      return SD_INODE_SIZE;
    case 'vmstate':
      return VMSTATE_OBJ_SIZE;
    case 'attr':
      return SD_ATTR_OBJ_SIZE;
    case 'data': {
      const e = sys.vdis.get(oidToVid(oid));
      return 2 ** (e ? e.blockSizeShift : sys.clusterDefaults.blockSizeShift);
    }
  }
}

/**
 * A request's range must lie inside its object and under the per-request limit. Reads of an inode
 * may reach to dog 1.0's inode size (its zero gref tail, see SD_INODE_SIZE_V1).
 */
export function checkRange(sys: VdiContext, oid: bigint, offset: bigint | number, length: number, read = false): void {
  if (length > MAX_DATA_LENGTH) throw new SdError(Res.INVALID_PARMS, `data_length ${length} over ${MAX_DATA_LENGTH}`);
  const size = read && kindOf(oid) === 'inode' ? SD_INODE_SIZE_V1 : objectSize(sys, oid);
  if (BigInt(offset) > BigInt(size) || Number(offset) + length > size) {
    throw new SdError(Res.INVALID_PARMS, `range ${offset}+${length} outside the ${size}-byte object`);
  }
}

/** Data objects exist only for blocks inside a writable VDI's size. */
function checkDataIndex(sys: VdiContext, oid: bigint): void {
  const e = sys.vdis.writable(oidToVid(oid));
  if (dataOidToIdx(oid) >= objectCount(e.vdiSize, e.blockSizeShift)) {
    throw new SdError(Res.INVALID_PARMS, `object index ${dataOidToIdx(oid)} beyond the VDI size`);
  }
}

export async function objRead(sys: VdiContext, oid: bigint, offset: number, length: number): Promise<Buffer> {
  if (kindOf(oid) !== 'inode' || offset + length <= SD_INODE_SIZE) return sys.gateway.read(oid, offset, length);
  // dog 1.0 reads its larger inode: what is stored, then the zero gref tail
  const out = Buffer.alloc(length);
  if (offset < SD_INODE_SIZE) (await sys.gateway.read(oid, offset, SD_INODE_SIZE - offset)).copy(out);
  return out;
}

export async function objWrite(sys: VdiContext, oid: bigint, offset: number, data: Buffer): Promise<void> {
  const vid = oidToVid(oid);
  switch (kindOf(oid)) {
    case 'inode':
      return sys.vdis.writeInode(vid, offset, data);
    case 'data':
      checkDataIndex(sys, oid);
      return sys.gateway.write(oid, offset, data);
    case 'vmstate':
      sys.vdis.writable(vid);
      return sys.gateway.write(oid, offset, data);
    case 'attr':
      return sys.gateway.write(oid, offset, data);
  }
}

export async function objCreate(sys: VdiContext, oid: bigint, offset: number, data: Buffer, cowOid?: bigint): Promise<void> {
  switch (kindOf(oid)) {
    case 'inode':
      throw new SdError(Res.INVALID_PARMS, 'inode objects are created by NEW_VDI');
    case 'data':
      checkDataIndex(sys, oid);
      if (cowOid !== undefined && (oidKind(cowOid) !== 'data' || dataOidToIdx(cowOid) !== dataOidToIdx(oid))) {
        throw new SdError(Res.INVALID_PARMS, 'copy-on-write source must be the same block of another VDI');
      }
      break;
    case 'vmstate':
      sys.vdis.writable(oidToVid(oid));
      cowOid = undefined;
      break;
    case 'attr':
      cowOid = undefined;
      break;
  }
  try {
    await sys.gateway.create(oid, offset, data, cowOid);
  } catch (e) {
    if (oidKind(oid) === 'data' && e instanceof SdError && (e.result === Res.NO_SPACE || e.result === Res.EIO)) await dropUnmapped(sys, oid);
    throw e;
  }
}

/**
 * A create that failed on one replica (its disk full or failing) succeeded on the others: those
 * copies are not mapped (the client maps a block only after its create succeeded), so they go now
 * rather than wait for the orphan sweep.
 */
async function dropUnmapped(sys: VdiContext, oid: bigint): Promise<void> {
  const vid = oidToVid(oid);
  try {
    const entry = (await sys.gateway.read(vidToVdiOid(vid), mapEntryOffset(dataOidToIdx(oid)), 4)).readUInt32LE(0);
    if (entry !== vid) await sys.gateway.remove(oid);
  } catch {
    // the orphan sweep of each node finds it later
  }
}

/** The same rules as a transport for OpenVdi: in-process VDI I/O for the NBD export. */
export function localTransport(sys: VdiContext): ObjectTransport {
  return {
    readObj: (oid, offset, length) => { checkRange(sys, oid, offset, length, true); return objRead(sys, oid, offset, length); },
    writeObj: (oid, offset, data) => { checkRange(sys, oid, offset, data.length); return objWrite(sys, oid, offset, data); },
    createAndWriteObj: (oid, offset, data, cowOid) => {
      checkRange(sys, oid, offset, data.length);
      return objCreate(sys, oid, offset, data, cowOid || undefined);
    },
  };
}
