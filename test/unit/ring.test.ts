import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Ring, type RingNode } from '../../lib/ring.js';

const node = (i: number, zone = i, vnodes = 64): RingNode => ({ nid: `127.0.0.1:${7000 + i}`, host: '127.0.0.1', port: 7000 + i, zone, vnodes });
const oidAt = (i: number) => (BigInt(0x100000 + (i >>> 12)) << 32n) | BigInt(i & 0xfff); // data oids of many VDIs

test('1,000,000 oids over 8 nodes x 64 vnodes: every node holds within 15% of the mean', () => {
  const ring = new Ring(Array.from({ length: 8 }, (_, i) => node(i)));
  const counts = new Map<string, number>();
  const N = 1_000_000;
  for (let i = 0; i < N; i++) {
    const p = ring.primary(oidAt(i))!;
    counts.set(p.nid, (counts.get(p.nid) ?? 0) + 1);
  }
  const mean = N / 8;
  for (const [nid, c] of counts) assert.ok(Math.abs(c - mean) / mean <= 0.15, `${nid} holds ${c} (mean ${mean})`);
  assert.equal(counts.size, 8);
});

test('adding a 9th node moves at most ~1.5/9 of the primary placements', () => {
  const eight = new Ring(Array.from({ length: 8 }, (_, i) => node(i)));
  const nine = new Ring(Array.from({ length: 9 }, (_, i) => node(i)));
  const N = 200_000;
  let moved = 0;
  for (let i = 0; i < N; i++) {
    const after = nine.primary(oidAt(i))!.nid;
    if (eight.primary(oidAt(i))!.nid !== after) {
      moved++;
      assert.equal(after, '127.0.0.1:7008', 'objects only move to the new node');
    }
  }
  assert.ok(moved / N <= 1.5 / 9, `moved ${(100 * moved / N).toFixed(1)}%`);
  assert.ok(moved > 0);
});

test('replicas are distinct nodes, in distinct zones when zones differ', () => {
  const ring = new Ring([node(0, 0), node(1, 0), node(2, 1), node(3, 1), node(4, 2)]);
  for (let i = 0; i < 2000; i++) {
    const r = ring.replicas(oidAt(i), 3);
    assert.equal(r.length, 3);
    assert.equal(new Set(r.map((n) => n.zone)).size, 3);
  }
});

test('with fewer nodes than copies every node holds a copy', () => {
  const ring = new Ring([node(0), node(1)]);
  assert.equal(ring.replicas(123n, 3).length, 2);
  assert.equal(new Ring([]).replicas(1n, 3).length, 0);
});

test('placement is deterministic and independent of node order', () => {
  const a = new Ring([node(0), node(1), node(2), node(3)]);
  const b = new Ring([node(3), node(1), node(0), node(2)]);
  for (let i = 0; i < 1000; i++) assert.deepEqual(a.replicas(oidAt(i), 2).map((n) => n.nid), b.replicas(oidAt(i), 2).map((n) => n.nid));
});

test('a ring derived through joins, leaves, weight changes and storms places every object as a ring built from scratch', () => {
  const at = (i: number, vnodes = 64) => ({ nid: `10.0.${i >> 8}.${i & 255}:7000`, host: `10.0.${i >> 8}.${i & 255}`, port: 7000, zone: i, vnodes });
  let nodes = Array.from({ length: 60 }, (_, i) => at(i));
  let ring = new Ring(nodes);
  for (let step = 0; step < 24; step++) {
    if (step % 4 === 0) nodes = [...nodes, at(100 + step)];
    else if (step % 4 === 1) nodes = nodes.filter((_, i) => i !== (step * 7) % nodes.length);
    else if (step % 4 === 2) nodes = nodes.map((n, i) => (i === (step * 5) % nodes.length ? { ...n, vnodes: n.vnodes + 16 } : n));
    else nodes = [...nodes.filter((_, i) => i < 10 || i >= 15), at(200 + step), at(300 + step, 8)];
    ring = new Ring(nodes, ring);
    const scratch = new Ring(nodes);
    for (let i = 0; i < 2000; i++) {
      const oid = oidAt(i * 31 + step);
      assert.deepEqual(ring.replicas(oid, 3).map((n) => n.nid), scratch.replicas(oid, 3).map((n) => n.nid), `step ${step}, oid ${oid}`);
    }
    assert.deepEqual(ring.arcShares(), scratch.arcShares());
  }
});

test('a ring derived after one join shares every block of points the new node does not fall in', () => {
  const at = (i: number) => ({ nid: `10.0.${i >> 8}.${i & 255}:7000`, host: `10.0.${i >> 8}.${i & 255}`, port: 7000, zone: i, vnodes: 64 });
  const nodes = Array.from({ length: 500 }, (_, i) => at(i));
  const before = new Ring(nodes);
  const after = new Ring([...nodes, at(999)], before);
  const old = new Set(before.layout.blocks);
  const fresh = after.layout.blocks.filter((b) => !old.has(b));
  // 64 new points fall in at most 64 of the 250 blocks (a block that grows too big splits in two)
  assert.ok(before.layout.blocks.length >= 250);
  assert.ok(fresh.length <= 2 * 64, `${fresh.length} blocks of ${after.layout.blocks.length} made anew`);
});
