// The simulated cluster (test/sim/): the real membership and placement code over an in-process group.

import test from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { SimCluster } from '../sim/sim-cluster.js';
import { measureChange, placementFigures } from '../sim/measure.js';
import { simMemberId, simNodeInfo } from '../sim/sim-cluster.js';
import { SoloRecorder, measureAlone } from '../sim/solo.js';

async function withCluster(n: number, fn: (c: SimCluster) => Promise<void>): Promise<void> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'sim-test-'));
  try {
    const c = new SimCluster(dir, 'warn');
    await c.boot(n);
    await fn(c);
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
}

test('every simulated member ends with the same members and epoch after a join and a leave', async () => {
  await withCluster(10, async (c) => {
    assert.equal(c.disagreement(), null);
    const epoch = c.epoch;
    await c.join(1);
    await c.leave(1);
    assert.equal(c.disagreement(), null);
    assert.equal(c.nodes.length, 10);
    assert.equal(c.epoch, epoch + 2);
  });
});

test('a storm of 20 nodes joining at once adds one epoch per node and every one is accepted', async () => {
  await withCluster(10, async (c) => {
    const epoch = c.epoch;
    await c.join(20);
    assert.equal(c.epoch, epoch + 20);
    assert.equal(c.nodes.length, 30);
    assert.equal(c.disagreement(), null);
  });
});

test('the state a joiner fetches does not grow with the epoch history', async () => {
  await withCluster(10, async (c) => {
    const early = await measureChange(c, () => c.join(1));
    for (let i = 0; i < 100; i++) {
      await c.join(1);
      await c.leave(1);
    }
    const late = await measureChange(c, () => c.join(1));
    assert.ok(c.epoch > 200);
    // one node more in the cluster and a few bytes of larger numbers; not 200 more records
    assert.ok(late.fetchedBytes < early.fetchedBytes * 1.3, `state ${late.fetchedBytes} bytes after 200 epochs, ${early.fetchedBytes} after 2`);
  });
});

test('only the joiner receives the cluster state: what the group delivers for a join does not grow with the members', async () => {
  await withCluster(40, async (c) => {
    const join = await measureChange(c, () => c.join(1));
    assert.equal(c.disagreement(), null);
    // the state (40 nodes, their epoch records) goes once, point to point
    assert.ok(join.fetchedBytes > 40 * 100, `${join.fetchedBytes} bytes fetched`);
    // a join request, a welcome and a present: small messages, each to every member
    assert.ok(join.largest < 1024, `largest message ${join.largest} bytes`);
    assert.ok(join.bytesDelivered < 41 * 3 * 1024, `${join.bytesDelivered} bytes delivered`);
  });
});

test('on 100 nodes one join moves about 1/N of the copies and of the first replicas, and copies stay balanced', () => {
  const p = placementFigures(100, 50_000);
  assert.ok(p.joinPrimaries <= 1.5 * p.joinIdeal, `${p.joinPrimaries} of the objects, ideal ${p.joinIdeal}`);
  assert.ok(p.joinCopies <= 1.5 * p.joinIdeal, `${p.joinCopies} of the copies, ideal ${p.joinIdeal}`);
  assert.ok(p.maxOverMean < 1.2);
});

test('a member replayed alone in a process of its own, once or again warm, ends with the epoch and members it had in the simulation', async () => {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'sim-solo-'));
  try {
    const c = new SimCluster(dir, 'warn');
    const seed = Array.from({ length: 10 }, (_, i) => simNodeInfo(i));
    const solo = new SoloRecorder(c.bus, [{ memberId: simMemberId(seed[1]), info: seed[1], config: c.config, seed }]);
    await c.boot(10);
    solo.booted();
    await solo.change('join', () => c.join(1));
    await solo.change('leave', () => c.leave(1));
    c.bus.tap = null;
    c.bus.fetchTap = null;
    const rounds = await measureAlone([...solo.recs.values()][0], dir, 2);
    assert.equal(rounds.length, 2);
    for (const alone of rounds) {
      assert.equal(alone.epoch, c.epoch);
      assert.deepEqual(alone.members, c.nodes.map((n) => n.info.nid));
      assert.deepEqual(alone.changes.map((x) => x.name), ['join', 'leave']);
    }
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
});
