import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { FrameReader, DirectFrameReader } from '../../lib/frame.js';
import { SD_HEADER_SIZE } from '../../lib/proto.js';

/** A stream of frames: 48-byte headers with data_length at byte 12, payloads of mixed sizes. */
function frames(sizes: number[]): { bytes: Buffer; expected: Array<{ id: number; payload: Buffer }> } {
  const parts: Buffer[] = [];
  const expected = sizes.map((len, id) => {
    const h = Buffer.alloc(SD_HEADER_SIZE);
    h.writeUInt32LE(id, 8);
    h.writeUInt32LE(len, 12);
    const payload = crypto.randomBytes(len);
    parts.push(h, payload);
    return { id, payload };
  });
  return { bytes: Buffer.concat(parts), expected };
}

const SIZES = [0, 4096, 1, 0, 65536, 47, 4 << 20, 0, 100_000, 48, 4096, 3 << 20, 0];

function collect(): { got: Array<{ id: number; payload: Buffer }>; onFrame: (h: Buffer, p: Buffer) => void } {
  const got: Array<{ id: number; payload: Buffer }> = [];
  // copies what it keeps: a reader may not reuse a buffer it handed out
  return { got, onFrame: (h, p) => got.push({ id: h.readUInt32LE(8), payload: Buffer.from(p) }) };
}

test('the direct reader yields every frame intact whatever sizes the socket reads in', () => {
  const { bytes, expected } = frames(SIZES);
  for (const maxRead of [1, 7, 48, 1000, 65536, 1 << 20]) {
    const { got, onFrame } = collect();
    const r = new DirectFrameReader((h) => h.readUInt32LE(12), onFrame);
    let pos = 0;
    let seed = maxRead;
    while (pos < bytes.length) {
      // a read fills at most the buffer offered, and often less
      const into = r.buffer();
      assert.ok(into.length > 0, 'the reader always offers room');
      seed = (seed * 1103515245 + 12345) >>> 0;
      const n = Math.min(into.length, bytes.length - pos, 1 + (seed % maxRead));
      bytes.copy(into, 0, pos, pos + n);
      r.read(n);
      pos += n;
    }
    assert.equal(got.length, expected.length, `reads of up to ${maxRead} bytes`);
    for (let i = 0; i < expected.length; i++) {
      assert.equal(got[i].id, expected[i].id);
      assert.ok(got[i].payload.equals(expected[i].payload), `frame ${i}, reads of up to ${maxRead} bytes`);
    }
  }
});

test('the direct reader has a large payload read in place: the buffer offered is the payload itself', () => {
  const { bytes } = frames([4 << 20]);
  const delivered: Buffer[] = [];
  const r = new DirectFrameReader((h) => h.readUInt32LE(12), (_h, p) => { delivered.push(p); });
  const first = r.buffer();
  bytes.copy(first, 0, 0, 1000);
  r.read(1000);
  const rest = r.buffer();
  assert.equal(rest.length, (4 << 20) - (1000 - SD_HEADER_SIZE), 'exactly the rest of the payload');
  bytes.copy(rest, 0, 1000);
  r.read(rest.length);
  assert.equal(delivered.length, 1);
  assert.equal(delivered[0].buffer, rest.buffer, 'the kernel wrote into the delivered payload');
  assert.ok(delivered[0].equals(bytes.subarray(SD_HEADER_SIZE)));
});

test('the direct reader passes on what the length check throws', () => {
  const r = new DirectFrameReader(() => { throw new Error('absurd data_length'); }, () => undefined);
  const h = Buffer.alloc(SD_HEADER_SIZE);
  h.copy(r.buffer());
  assert.throws(() => r.read(SD_HEADER_SIZE), /absurd/);
});

test('the chunk-list reader yields the same frames from chunks of any size', () => {
  const { bytes, expected } = frames(SIZES);
  const { got, onFrame } = collect();
  const r = new FrameReader((h) => h.readUInt32LE(12), onFrame);
  for (let pos = 0; pos < bytes.length; pos += 999) r.push(bytes.subarray(pos, pos + 999));
  assert.deepEqual(got.map((g) => g.id), expected.map((e) => e.id));
  for (let i = 0; i < expected.length; i++) assert.ok(got[i].payload.equals(expected[i].payload));
});
