// Object ids (DESIGN.md §3): data (vid << 32 | idx), inode 1<<63, vmstate 1<<62, attribute 1<<61.

export const VDI_BIT = 1n << 63n;
export const VMSTATE_BIT = 1n << 62n;
export const VDI_ATTR_BIT = 1n << 61n;
export const NR_VDIS = 1 << 24;
export const MAX_VID = NR_VDIS - 1;

export type OidKind = 'data' | 'inode' | 'vmstate' | 'attr';

export function vidToVdiOid(vid: number): bigint {
  return VDI_BIT | (BigInt(vid) << 32n);
}

export function vidToDataOid(vid: number, idx: number): bigint {
  return (BigInt(vid) << 32n) | BigInt(idx >>> 0);
}

export function vidToAttrOid(vid: number, attrId: number): bigint {
  return VDI_ATTR_BIT | (BigInt(vid) << 32n) | BigInt(attrId >>> 0);
}

export function oidToVid(oid: bigint): number {
  return Number((oid >> 32n) & 0xffffffn);
}

export function dataOidToIdx(oid: bigint): number {
  return Number(oid & 0xffffffffn);
}

/**
 * Classifies an oid; returns null for ids no client may use (unknown high bits,
 * several type bits at once, or a vid field wider than 24 bits).
 */
export function oidKind(oid: bigint): OidKind | null {
  const top = oid >> 56n;
  const vidHigh = (oid >> 56n) & 0x1fn; // bits 56..60 must be zero: vid is 24 bits
  if (vidHigh !== 0n) return null;
  switch (top & 0xe0n) {
    case 0n:
      return 'data';
    case 0x80n:
      return (oid & 0xffffffffn) === 0n ? 'inode' : null;
    case 0x40n:
      return 'vmstate';
    case 0x20n:
      return 'attr';
    default:
      return null;
  }
}

export function oidHex(oid: bigint): string {
  return oid.toString(16).padStart(16, '0');
}

export function parseOidHex(s: string): bigint | null {
  return /^[0-9a-f]{16}$/.test(s) ? BigInt('0x' + s) : null;
}
