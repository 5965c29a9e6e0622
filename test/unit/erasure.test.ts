import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { encode, decode, splitStripes, joinStripes } from '../../native/erasure.js';
import {
  parseRedundancy, redundancyText, policyOf, stripeSpan, stripKey, stripIndexOf, baseOid, storeFileName, parseStoreFileName, chunkSize, STRIPE_DATA,
} from '../../lib/erasure-layout.js';

const combos = (n: number, k: number): number[][] => {
  if (k === 0) return [[]];
  const out: number[][] = [];
  for (let i = 0; i <= n - k; i++) for (const rest of combos(n - i - 1, k - 1)) out.push([i, ...rest.map((r) => r + i + 1)]);
  return out;
};

test('any 4 of the 6 strips of a 4:2 code rebuild the other 2', () => {
  const data = Array.from({ length: 4 }, () => crypto.randomBytes(4096));
  const all = [...data, ...encode(data, 2)];
  for (const keep of combos(6, 4)) {
    const missing = [0, 1, 2, 3, 4, 5].filter((i) => !keep.includes(i));
    const rebuilt = decode(4, 2, keep.map((i) => all[i]), keep, missing);
    missing.forEach((m, j) => assert.ok(rebuilt[j].equals(all[m]), `strip ${m} from ${keep}`));
  }
});

test('16:15, the widest code, rebuilds 15 lost strips', () => {
  const data = Array.from({ length: 16 }, () => crypto.randomBytes(256));
  const all = [...data, ...encode(data, 15)];
  const keep = [1, 3, 5, 7, 9, 11, 13, 15, 16, 18, 20, 22, 24, 26, 28, 30];
  const missing = all.map((_, i) => i).filter((i) => !keep.includes(i));
  const rebuilt = decode(16, 15, keep.map((i) => all[i]), keep, missing);
  missing.forEach((m, j) => assert.ok(rebuilt[j].equals(all[m])));
});

test('parity is linear: zero data strips have zero parity (sparse strips stay consistent)', () => {
  const parity = encode(Array.from({ length: 4 }, () => Buffer.alloc(1024)), 2);
  for (const p of parity) assert.ok(p.equals(Buffer.alloc(1024)));
});

test('split gives strip i chunk i of every stripe, and join undoes it', () => {
  const ec = policyOf(parseRedundancy('4:2').copyPolicy)!;
  const whole = crypto.randomBytes(STRIPE_DATA * 3);
  const strips = splitStripes(whole, ec.d, chunkSize(ec));
  const chunk = chunkSize(ec);
  for (let s = 0; s < 3; s++) for (let i = 0; i < 4; i++) {
    assert.ok(strips[i].subarray(s * chunk, (s + 1) * chunk).equals(whole.subarray(s * STRIPE_DATA + i * chunk, s * STRIPE_DATA + (i + 1) * chunk)));
  }
  assert.ok(joinStripes(strips, chunk).equals(whole));
});

test('a 4 KiB write at 8 KiB touches one contiguous 1 KiB range of each 4:2 strip', () => {
  const ec = { d: 4, p: 2 };
  assert.deepEqual(stripeSpan(ec, 8192, 4096), { start: 8192, end: 12288, stripStart: 2048, stripEnd: 3072 });
  assert.deepEqual(stripeSpan(ec, 100, 10), { start: 0, end: 512, stripStart: 0, stripEnd: 128 });
});

test('redundancy X:Y encodes as Sheepdog 1.0 does (copy_policy (X/2)<<4 | Y, nr_copies X+Y)', () => {
  assert.deepEqual(parseRedundancy('4:2'), { copies: 6, copyPolicy: 0x22 });
  assert.deepEqual(parseRedundancy('16:15'), { copies: 31, copyPolicy: 0x8f });
  assert.deepEqual(parseRedundancy('3'), { copies: 3, copyPolicy: 0 });
  assert.equal(redundancyText(6, 0x22), '4:2');
  assert.equal(redundancyText(3, 0), '3');
});

test('bad erasure codes are refused with the reason', () => {
  assert.throws(() => parseRedundancy('3:2'), /data strips must be 2, 4, 8 or 16/);
  assert.throws(() => parseRedundancy('4:0'), /parity strips must be 1 to 15/);
  assert.throws(() => parseRedundancy('4:16'), /parity strips must be 1 to 15/);
  assert.throws(() => parseRedundancy('4:x'), /Invalid redundancy/);
});

test('a strip key names its object and index, and its file is <oid>_<index>', () => {
  const oid = 0x00abcdef00000007n;
  const key = stripKey(oid, 5);
  assert.equal(stripIndexOf(key), 5);
  assert.equal(baseOid(key), oid);
  assert.equal(stripIndexOf(oid), null);
  assert.equal(storeFileName(key), '00abcdef00000007_5');
  assert.equal(parseStoreFileName('00abcdef00000007_5'), key);
  assert.equal(parseStoreFileName('00abcdef00000007'), oid);
  assert.equal(stripIndexOf(1n << 63n), null);
  assert.equal(parseStoreFileName('00abcdef00000007_31'), null);
});
