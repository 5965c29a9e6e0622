import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fnv1a64, nameToVid } from '../../lib/fnv.js';

test('FNV-1a-64 matches the published test vectors', () => {
  assert.equal(fnv1a64(''), 0xcbf29ce484222325n);
  assert.equal(fnv1a64('a'), 0xaf63dc4c8601ec8cn);
  assert.equal(fnv1a64('foobar'), 0x85944171f73967e8n);
  assert.equal(fnv1a64(Buffer.from([0xff, 0x00, 0x80])), referenceFnv(Buffer.from([0xff, 0x00, 0x80])));
});

test('FNV-1a-64 agrees with a BigInt reference on random inputs', () => {
  for (let i = 0; i < 200; i++) {
    const b = Buffer.alloc(i % 37);
    for (let k = 0; k < b.length; k++) b[k] = (i * 31 + k * 17) & 0xff;
    assert.equal(fnv1a64(b), referenceFnv(b));
  }
});

test('VDI names hash to the vids the original Sheepdog and QEMU use', () => {
  assert.equal(nameToVid('alpha'), 0xed202b);
  assert.equal(nameToVid('beta'), 0x4620a7);
  assert.equal(nameToVid('big'), 0x4fd259);
  assert.equal(nameToVid('test'), 0x7c2b25);
});

function referenceFnv(b: Buffer): bigint {
  let h = 0xcbf29ce484222325n;
  for (const x of b) h = ((h ^ BigInt(x)) * 0x100000001b3n) & 0xffffffffffffffffn;
  return h;
}
