// FNV-1a 64-bit, the hash Sheepdog and QEMU use for VDI names (and the ring uses for placement).

const FNV64_OFFSET = 0xcbf29ce484222325n;
const MASK64 = 0xffffffffffffffffn;

/** FNV-1a-64 over `data`, continuing from `seed` (the standard offset basis by default). */
export function fnv1a64(data: Uint8Array | string, seed: bigint = FNV64_OFFSET): bigint {
  const bytes = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
  hLo = Number(seed & 0xffffffffn);
  hHi = Number((seed >> 32n) & 0xffffffffn);
  for (let i = 0; i < bytes.length; i++) mix(bytes[i]);
  return ((BigInt(hHi) << 32n) | BigInt(hLo)) & MASK64;
}

/** The vid a VDI name hashes to: where its run of set bits in the VDI bitmap starts. */
export function nameToVid(name: string): number {
  return Number(fnv1a64(name) & 0xffffffn);
}

/** the offset basis as 32-bit words (ring points hash without BigInts) */
const OFFSET_LO = Number(FNV64_OFFSET & 0xffffffffn);
const OFFSET_HI = Number(FNV64_OFFSET >> 32n);

/** the running hash: two numbers, so a byte costs no typed-array writes */
let hLo = 0, hHi = 0;

/**
 * hLo/hHi = (hash ^ b) * the FNV prime 2^40 + 0x1b3, multiplied on four 16-bit limbs so the loop
 * stays in plain numbers (BigInt arithmetic per byte is ~20x slower).
 */
function mix(b: number): void {
  const x = (hLo ^ b) >>> 0;
  const l0 = x & 0xffff, l1 = x >>> 16, l2 = hHi & 0xffff, l3 = hHi >>> 16;
  const t0 = l0 * 0x1b3;
  const t1 = l1 * 0x1b3 + (t0 >>> 16);
  let t2 = l2 * 0x1b3 + (t1 >>> 16);
  let t3 = l3 * 0x1b3 + (t2 >>> 16);
  t2 = (t2 & 0xffff) + ((l0 << 8) & 0xffff);
  t3 = (t3 & 0xffff) + (((l0 << 8) >>> 16) & 0xffff) + ((l1 << 8) & 0xffff) + (t2 >>> 16);
  hLo = ((t0 & 0xffff) | ((t1 & 0xffff) << 16)) >>> 0;
  hHi = ((t2 & 0xffff) | ((t3 & 0xffff) << 16)) >>> 0;
}

/** hLo/hHi continue over the UTF-8 bytes of `text` (plain numbers: no typed-array writes per byte). */
function mixText(text: string): void {
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c >= 0x80) {
      // not ASCII: hash the UTF-8 bytes like fnv1a64 does
      for (const b of Buffer.from(text.slice(i), 'utf8')) mix(b);
      break;
    }
    mix(c);
  }
}

/**
 * Ring points without BigInt: the point of vnode v of a node is FNV-1a-64 of "host:port:v", hashed
 * once more as its 8 little-endian bytes (the same value as fnv1a64(le64(fnv1a64(name)))). The
 * prefix "host:port:" is hashed once for all of a node's vnodes (`prefixWords`), then each vnode
 * costs its decimal digits and the second pass (`vnodePointWords`). Building a ring hashes every
 * vnode of every node, and each membership change the vnodes of the nodes that came or left, on
 * every member. Words: out[0] the low 32 bits, out[1] the high.
 */
export function prefixWords(prefix: string, out: Uint32Array): void {
  hLo = OFFSET_LO;
  hHi = OFFSET_HI;
  mixText(prefix);
  out[0] = hLo;
  out[1] = hHi;
}

/** The ring point of the prefix (its prefixWords) followed by the decimal digits of v (v >= 0). */
export function vnodePointWords(prefix: Uint32Array, v: number, out: Uint32Array): void {
  hLo = prefix[0];
  hHi = prefix[1];
  // the digits as String(v) has them, without making the string
  let div = 1;
  while (div * 10 <= v) div *= 10;
  for (; div >= 1; div /= 10) mix(48 + (Math.floor(v / div) % 10));
  const lo = hLo, hi = hHi;
  hLo = OFFSET_LO;
  hHi = OFFSET_HI;
  for (let i = 0; i < 4; i++) mix((lo >>> (8 * i)) & 0xff);
  for (let i = 0; i < 4; i++) mix((hi >>> (8 * i)) & 0xff);
  out[0] = hLo;
  out[1] = hHi;
}

/** FNV-1a-64 of `bytes` as out[0] (low 32 bits) and out[1] (high), without BigInt (ring probes). */
export function fnv1a64Words(bytes: Uint8Array, out: Uint32Array): void {
  hLo = OFFSET_LO;
  hHi = OFFSET_HI;
  for (let i = 0; i < bytes.length; i++) mix(bytes[i]);
  out[0] = hLo;
  out[1] = hHi;
}
