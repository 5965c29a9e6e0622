// Erasure-coded redundancy (DESIGN.md, README "Erasure coding"): the policy byte, the strip layout
// of an object, and how a strip is named in a store. The codec itself is native/erasure.ts.
//
// Policy: as Sheepdog 1.0 encodes it in the inode's copy_policy byte, high nibble X/2 (so that 16
// fits), low nibble Y; the inode's nr_copies then holds X+Y. copy_policy 0 means full copies.
//
// Layout: an object is cut into stripes of STRIPE_DATA bytes (Sheepdog's SD_EC_DATA_STRIPE_SIZE);
// chunk i of every stripe (STRIPE_DATA/X bytes) goes to data strip i, so strip i is one file of
// objectSize/X bytes and a byte range of the object maps to one contiguous range of each strip.
// Parity strip j holds, byte for byte, the Reed-Solomon parity of the data strips at that offset.

import { Res, SdError } from './proto.js';
import { oidHex } from './oid.js';

/** Data bytes per stripe: a sector, so writes of whole sectors never read before they write. */
export const STRIPE_DATA = 512;
/** Sheepdog's SD_EC_MAX_STRIP: at most 16 data strips and 15 parity strips. */
export const EC_MAX_STRIP = 16;
export const EC_DATA_CHOICES = [2, 4, 8, 16] as const;

export interface EcPolicy {
  /** data strips */
  d: number;
  /** parity strips */
  p: number;
}

export function policyByte(d: number, p: number): number {
  return ((d / 2) << 4) | p;
}

/** The strips of a copy_policy byte; null for 0 (replicated). */
export function policyOf(copyPolicy: number): EcPolicy | null {
  if (!copyPolicy) return null;
  return { d: (copyPolicy >> 4) * 2, p: copyPolicy & 0x0f };
}

/** Why X:Y is not a valid erasure code, or null. */
export function ecPolicyProblem(d: number, p: number): string | null {
  if (!(EC_DATA_CHOICES as readonly number[]).includes(d)) return `${d} data strips: the number of data strips must be 2, 4, 8 or 16`;
  if (!Number.isInteger(p) || p < 1 || p >= EC_MAX_STRIP) return `${p} parity strips: the number of parity strips must be 1 to ${EC_MAX_STRIP - 1}`;
  return null;
}

/**
 * Parses a redundancy argument as dog does: "N" (N full copies) or "X:Y" (X data + Y parity
 * strips). Returns the inode's nr_copies and copy_policy; throws INVALID_PARMS with the reason.
 */
export function parseRedundancy(s: string): { copies: number; copyPolicy: number } {
  const m = /^(\d+)(?::(\d+))?$/.exec(s.trim());
  if (!m) throw new SdError(Res.INVALID_PARMS, `Invalid redundancy '${s}': give N copies or X:Y (data:parity strips, e.g. 4:2)`);
  const n = Number(m[1]);
  if (m[2] === undefined) return { copies: n, copyPolicy: 0 };
  const p = Number(m[2]);
  const why = ecPolicyProblem(n, p);
  if (why) throw new SdError(Res.INVALID_PARMS, `Invalid redundancy '${s}': ${why}`);
  return { copies: n + p, copyPolicy: policyByte(n, p) };
}

/** What `vdi list` shows in its Copies column: "X:Y" for erasure-coded VDIs, else the copy count. */
export function redundancyText(nrCopies: number, copyPolicy: number): string {
  const ec = policyOf(copyPolicy);
  return ec ? `${ec.d}:${ec.p}` : String(nrCopies);
}

// ------------------------------------------------------------------ geometry

/** Bytes of one stripe's chunk in each strip. */
export function chunkSize(ec: EcPolicy): number {
  return STRIPE_DATA / ec.d;
}

export function stripSize(ec: EcPolicy, objectSize: number): number {
  return objectSize / ec.d;
}

/**
 * The whole stripes a byte range of the object lies in: object bytes [start, end), which are
 * bytes [stripStart, stripEnd) of every strip.
 */
export function stripeSpan(ec: EcPolicy, offset: number, length: number): { start: number; end: number; stripStart: number; stripEnd: number } {
  const first = Math.floor(offset / STRIPE_DATA);
  const last = Math.ceil((offset + length) / STRIPE_DATA);
  const chunk = chunkSize(ec);
  return { start: first * STRIPE_DATA, end: last * STRIPE_DATA, stripStart: first * chunk, stripEnd: last * chunk };
}

// ------------------------------------------------------------------ strips in a store

/**
 * A strip's key in a store: its object's oid with the strip index + 1 in bits 56..60, which every
 * data oid leaves zero (the vid is 24 bits). Up to 31 strips (16 + 15) fit; the key stays a 64-bit
 * id, so the store's placement on disks and its indexes need nothing new.
 */
const STRIP_SHIFT = 56n;
const STRIP_MASK = 0x1fn << STRIP_SHIFT;

export function stripKey(oid: bigint, index: number): bigint {
  return (oid & ~STRIP_MASK) | (BigInt(index + 1) << STRIP_SHIFT);
}

/** The strip index a store key names, or null for a whole object. */
export function stripIndexOf(key: bigint): number | null {
  if (key >> 61n !== 0n) return null; // inode, vmstate and attribute ids use the top bits
  const i = Number((key & STRIP_MASK) >> STRIP_SHIFT);
  return i ? i - 1 : null;
}

/** The object a store key belongs to (the key itself for whole objects). */
export function baseOid(key: bigint): bigint {
  return stripIndexOf(key) === null ? key : key & ~STRIP_MASK;
}

/** A store file's name: 16 hex digits, and for a strip "_<index>" after them (as Sheepdog names strips). */
export function storeFileName(key: bigint): string {
  const i = stripIndexOf(key);
  return i === null ? oidHex(key) : `${oidHex(baseOid(key))}_${i}`;
}

export function parseStoreFileName(name: string): bigint | null {
  const m = /^([0-9a-f]{16})(?:_(\d{1,2}))?$/.exec(name);
  if (!m) return null;
  const oid = BigInt('0x' + m[1]);
  if (m[2] === undefined) return oid;
  const i = Number(m[2]);
  if (i > 30 || stripIndexOf(oid) !== null || oid >> 56n !== 0n) return null;
  return stripKey(oid, i);
}
