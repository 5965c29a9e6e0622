// The Reed-Solomon codec of erasure-coded VDIs: Intel ISA-L through the addon native/erasure/
// (built by native/build.mjs when Debian's libisal-dev is installed). ISA-L was chosen over
// @ronomon/reed-solomon by `npm run bench:ec` (README "Erasure coding"). Calls are synchronous
// (about a millisecond per 4 MiB object); callers own every buffer, nothing is copied here.

import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

interface NativeErasure {
  encode(k: number, p: number, data: Buffer[], parity: Buffer[]): void;
  decode(k: number, p: number, present: Buffer[], presentIdx: number[], missingIdx: number[], out: Buffer[]): void;
  split(whole: Buffer, chunk: number, strips: Buffer[]): void;
  join(whole: Buffer, chunk: number, strips: Buffer[]): void;
}

const here = path.dirname(fileURLToPath(import.meta.url));
// compiled this is dist/native/erasure.js, the addon stays in native/erasure/build/Release/
const candidates = [
  path.join(here, '../../native/erasure/build/Release/erasure.node'),
  path.join(here, 'erasure/build/Release/erasure.node'),
];

let loaded: { ok: true; mod: NativeErasure } | { ok: false; reason: string } | undefined;

function load(): { ok: true; mod: NativeErasure } | { ok: false; reason: string } {
  if (loaded) return loaded;
  const addon = candidates.find((p) => fs.existsSync(p));
  if (!addon) {
    const recorded = path.join(path.dirname(path.dirname(candidates[0])), 'erasure-unavailable.txt');
    const reason = fs.existsSync(recorded) ? fs.readFileSync(recorded, 'utf8').trim()
      : "erasure coding unavailable: install Debian's libisal-dev (apt-get install libisal-dev) and run npm rebuild";
    return (loaded = { ok: false, reason });
  }
  return (loaded = { ok: true, mod: createRequire(import.meta.url)(addon) as NativeErasure });
}

/** Null when erasure coding can be used here, else why not. */
export function erasureUnavailable(): string | null {
  const l = load();
  return l.ok ? null : l.reason;
}

function codec(): NativeErasure {
  const l = load();
  if (!l.ok) throw new Error(l.reason);
  return l.mod;
}

/** The p parity strips of the data strips (all of one length), into `parity` when given. */
export function encode(data: Buffer[], p: number, parity = Array.from({ length: p }, () => Buffer.allocUnsafe(data[0].length))): Buffer[] {
  codec().encode(data.length, p, data, parity);
  return parity;
}

/**
 * Rebuilds strips from any k present ones: `present[i]` is strip `presentIdx[i]` (data strips are
 * 0..k-1, parity k..k+p-1); returns the strips `missing` names, in that order.
 */
export function decode(k: number, p: number, present: Buffer[], presentIdx: number[], missing: number[],
  out = missing.map(() => Buffer.allocUnsafe(present[0].length))): Buffer[] {
  if (missing.length) codec().decode(k, p, present.slice(0, k), presentIdx.slice(0, k), missing, out);
  return out;
}

/** Cuts whole stripes of an object into its k data strips (chunk bytes of each stripe per strip). */
export function splitStripes(whole: Buffer, k: number, chunk: number): Buffer[] {
  const strips = Array.from({ length: k }, () => Buffer.allocUnsafe(whole.length / k));
  codec().split(whole, chunk, strips);
  return strips;
}

/** The inverse of splitStripes: the object bytes of the data strips. */
export function joinStripes(strips: Buffer[], chunk: number): Buffer {
  const whole = Buffer.allocUnsafe(strips[0].length * strips.length);
  codec().join(whole, chunk, strips);
  return whole;
}
