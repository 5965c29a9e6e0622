// The epoch log keeps whole records in memory and on the wire, and mostly deltas on disk: these
// tests read the files back through a fresh log, as a restarted sheep or `collie cluster info` does.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { EpochLog, diffNodes, type EpochRecord } from '../../sheep/cluster/epoch-log.js';
import type { NodeInfo } from '../../lib/node.js';

const node = (i: number, vnodes = 64): NodeInfo => ({ nid: `10.0.${i >> 8}.${i & 255}:7000`, host: `10.0.${i >> 8}.${i & 255}`, port: 7000, zone: i, vnodes });
const nids = (r: EpochRecord) => r.nodes.map((n) => `${n.nid}/${n.vnodes}`).join(',');

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'epoch-log-'));
  try {
    await fn(dir);
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
}

/** 200 epochs of joins, leaves and weight changes on 100 nodes, as membership appends them. */
function history(): EpochRecord[] {
  let nodes = Array.from({ length: 100 }, (_, i) => node(i));
  const out: EpochRecord[] = [];
  for (let e = 1; e <= 200; e++) {
    if (e > 1) {
      if (e % 3 === 0) nodes = [...nodes, node(1000 + e)];
      else if (e % 3 === 1) nodes = nodes.filter((_, i) => i !== e % nodes.length);
      else nodes = nodes.map((n, i) => (i === e % nodes.length ? { ...n, vnodes: n.vnodes + 1 } : n));
    }
    out.push({ epoch: e, time: 1_700_000_000_000 + e, nodes });
  }
  return out;
}

test('a restarted log reads back every record of 200 changes exactly as they were appended', async () => {
  await withDir(async (dir) => {
    const log = new EpochLog(dir);
    await log.init();
    const recs = history();
    for (const r of recs) await log.append(r);
    const again = new EpochLog(dir);
    await again.init();
    const all = await again.readAll();
    assert.deepEqual(all.map((r) => r.epoch), recs.map((r) => r.epoch));
    for (let i = 0; i < recs.length; i++) assert.equal(nids(all[i]), nids(recs[i]), `epoch ${recs[i].epoch}`);
    assert.deepEqual(all.map((r) => r.time), recs.map((r) => r.time));
    assert.equal(nids((await again.latest())!), nids(recs[recs.length - 1]));
    assert.deepEqual((await again.since(150)).map(nids), recs.slice(149).map(nids));
    assert.deepEqual((await again.forNodeAt(37)).map(nids), [nids(recs[36]), nids(recs[199])]);
  });
});

test('an epoch file of a one-node change holds the change, not the whole node list', async () => {
  await withDir(async (dir) => {
    const log = new EpochLog(dir);
    await log.init();
    const recs = history();
    for (const r of recs) await log.append(r);
    const sizes = await Promise.all(recs.map(async (r) => (await fs.stat(path.join(dir, 'epoch', String(r.epoch).padStart(8, '0')))).size));
    const whole = JSON.stringify(recs[199]).length;
    const small = sizes.filter((s) => s < whole / 10).length;
    // a whole record at most every 64 epochs (and the first)
    assert.ok(small >= 200 - 5, `${small} of 200 files are deltas (a whole record is ${whole} bytes)`);
  });
});

test('records written whole (stores from before deltas) are read as before and deltas follow them', async () => {
  await withDir(async (dir) => {
    const recs = history().slice(0, 20);
    await fs.mkdir(path.join(dir, 'epoch'));
    for (const r of recs.slice(0, 10)) await fs.writeFile(path.join(dir, 'epoch', String(r.epoch).padStart(8, '0')), JSON.stringify(r) + '\n');
    const log = new EpochLog(dir);
    await log.init();
    for (const r of recs.slice(10)) await log.append(r);
    const again = new EpochLog(dir);
    await again.init();
    assert.deepEqual((await again.readAll()).map(nids), recs.map(nids));
  });
});

test('a delta whose base record is missing is left out like a missing record, not misread', async () => {
  await withDir(async (dir) => {
    const log = new EpochLog(dir);
    await log.init();
    const recs = history().slice(0, 10);
    for (const r of recs) await log.append(r);
    const files = (await fs.readdir(path.join(dir, 'epoch'))).sort();
    const stored = await Promise.all(files.map(async (f) => JSON.parse(await fs.readFile(path.join(dir, 'epoch', f), 'utf8')) as { epoch: number; base?: number }));
    const first = stored.find((s) => s.base === undefined)!;
    await fs.rm(path.join(dir, 'epoch', String(first.epoch).padStart(8, '0')));
    const again = new EpochLog(dir);
    await again.init();
    const all = await again.readAll();
    // every record read is one that was appended; those built on the removed one are not read
    const builtOnRemoved = (e: number): boolean => {
      const s = stored.find((x) => x.epoch === e)!;
      return e === first.epoch || (s.base !== undefined && builtOnRemoved(s.base));
    };
    for (const r of all) assert.equal(nids(r), nids(recs[r.epoch - 1]));
    assert.deepEqual(all.map((r) => r.epoch), stored.filter((s) => !builtOnRemoved(s.epoch)).map((s) => s.epoch));
    assert.ok(all.length < recs.length);
  });
});

test('diffNodes describes a join, a leave and a weight change, and gives up on a reordering', () => {
  const a = Array.from({ length: 10 }, (_, i) => node(i));
  assert.deepEqual(diffNodes(a, [...a, node(99)]), { left: [], changed: [], joined: [node(99)] });
  assert.deepEqual(diffNodes(a, a.filter((_, i) => i !== 4)), { left: [node(4).nid], changed: [], joined: [] });
  const heavier = a.map((n, i) => (i === 2 ? { ...n, vnodes: 128 } : n));
  assert.deepEqual(diffNodes(a, heavier), { left: [], changed: [heavier[2]], joined: [] });
  const swapped = [a[1], a[0], ...a.slice(2)];
  const d = diffNodes(a, swapped);
  // either a delta that gives the same order back, or none (then the record is written whole)
  if (d) assert.deepEqual([...a.filter((n) => !d.left.includes(n.nid)), ...d.joined].map((n) => n.nid), swapped.map((n) => n.nid));
});
