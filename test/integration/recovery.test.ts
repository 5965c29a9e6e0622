// Recovery after membership changes: N copies restored after a loss, a returning node catches up
// (and serves what was written while it was away from its own store), a new node takes its share.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { SheepProcess, freePort, tempDir, collie, stopSequencer } from '../helpers/sheep.js';
import { SheepClient } from '../../lib/client.js';
import { OpenVdi } from '../../lib/vdi-io.js';
import { Op } from '../../lib/proto.js';
import { oidHex, vidToDataOid } from '../../lib/oid.js';
import type { RecoveryStatus } from '../../sheep/recovery.js';
import type { StatClusterReply } from '../../sheep/ops.js';

const MB = 1 << 20;
let base: string;
const sheep: SheepProcess[] = [];
let data: Buffer;
let vid = 0;

async function add(zone: number): Promise<SheepProcess> {
  const s = await new SheepProcess(path.join(base, `s${zone}`), sheep[zone]?.port ?? await freePort(), ['-c', `local:${base}/group`, '-z', String(zone)]).start();
  sheep[zone] = s;
  return s;
}

async function control<T>(s: SheepProcess, op: number): Promise<T> {
  const c = await s.client();
  try { return await c.control<T>(op); } finally { c.close(); }
}

/** Waits until every live node finished recovery for the cluster's current epoch. */
async function recovered(): Promise<void> {
  const live = sheep.filter((s) => s?.alive);
  const deadline = Date.now() + 60000;
  for (;;) {
    const stats = await Promise.all(live.map((s) => control<StatClusterReply>(s, Op.STAT_CLUSTER)));
    const epochs = stats.map((x) => x.epoch);
    // the membership must already show exactly the live nodes (a SIGKILL is noticed a moment later)
    if (stats.some((x) => x.nodes !== live.length)) {
      if (Date.now() > deadline) throw new Error('the membership did not settle');
      await new Promise((r) => setTimeout(r, 100));
      continue;
    }
    const st = await Promise.all(live.map((s) => control<RecoveryStatus>(s, Op.STAT_RECOVERY)));
    if (epochs.every((e) => e === epochs[0]) && st.every((r) => r.state === 'idle' && r.epoch === epochs[0])) return;
    if (Date.now() > deadline) throw new Error(`recovery did not finish: ${JSON.stringify(st)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** How many live nodes hold each data object of the VDI. */
async function copies(): Promise<number[]> {
  const out: number[] = [];
  for (let idx = 0; idx < data.length / (4 * MB); idx++) {
    let n = 0;
    for (const s of sheep) if (s?.alive && await fs.access(path.join(s.dir, 'obj', oidHex(vidToDataOid(vid, idx)))).then(() => true, () => false)) n++;
    out.push(n);
  }
  return out;
}

/** Every object has exactly 3 copies on live nodes (within a bound: recovery finishes in the background). */
async function threeCopiesEach(): Promise<void> {
  const deadline = Date.now() + 20000;
  let last = await copies();
  while (!last.every((n) => n === 3) && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 100));
    last = await copies();
  }
  assert.deepEqual(last, Array(data.length / (4 * MB)).fill(3));
}

async function readThrough(s: SheepProcess, len = data.length): Promise<Buffer> {
  const c = await s.client();
  try {
    const v = await OpenVdi.open(c, await c.getVdiInfo('rec'));
    return await v.read(0, len);
  } finally {
    c.close();
  }
}

before(async () => {
  base = await tempDir('recovery-');
  for (let i = 0; i < 4; i++) await add(i);
  assert.equal((await collie(sheep[0].port, ['cluster', 'format', '--copies=3'])).code, 0);
  data = crypto.randomBytes(48 * MB);
  const c = await sheep[0].client();
  try {
    vid = await c.newVdi('rec', 64n * BigInt(MB));
    await (await OpenVdi.open(c, vid)).write(0, data);
  } finally {
    c.close();
  }
});
after(async () => {
  for (const s of sheep) await s?.stop();
  await stopSequencer(`${base}/group`);
  await fs.rm(base, { recursive: true, force: true });
});

test('after a node is lost every object again has exactly 3 copies on live nodes', async () => {
  await sheep[1].kill9();
  await recovered();
  await threeCopiesEach();
  assert.ok((await readThrough(sheep[2])).equals(data));
});

test('the lost node comes back, catches up, and holds what was written while it was away', async () => {
  const fresh = crypto.randomBytes(12 * MB);
  const c = await sheep[0].client();
  try {
    await (await OpenVdi.open(c, vid)).write(0, fresh);
  } finally {
    c.close();
  }
  fresh.copy(data, 0);
  await add(1);
  await recovered();
  await threeCopiesEach();
  // the node's own store now has current copies of everything it owns
  const own = await SheepClient.connect({ port: sheep[1].port });
  try {
    let held = 0;
    for (let idx = 0; idx < 12; idx++) {
      const oid = vidToDataOid(vid, idx);
      if (!(await own.hasLocalObject(oid))) continue;
      held++;
      const copy = await own.peerRead(oid, 0, 4 * MB);
      assert.ok(copy.equals(data.subarray(idx * 4 * MB, (idx + 1) * 4 * MB)), `object ${idx} on the returning node is current`);
    }
    assert.ok(held > 0, 'the returning node owns some objects again');
  } finally {
    own.close();
  }
});

test('a fifth node takes its share; no object is lost and none has more than 3 copies', async () => {
  await add(4);
  await recovered();
  await threeCopiesEach();
  const onNew = (await fs.readdir(path.join(sheep[4].dir, 'obj'))).filter((n) => n.startsWith('00')).length;
  assert.ok(onNew > 0, 'the new node holds objects');
  // once every node finished, the copies set aside are removed everywhere
  const deadline = Date.now() + 15000;
  const staleLeft = async () => {
    let n = 0;
    for (const s of sheep) if (s?.alive) n += (await fs.readdir(path.join(s.dir, 'obj', '.stale'))).length;
    return n;
  };
  while ((await staleLeft()) > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  assert.equal(await staleLeft(), 0, 'set-aside copies purged after cluster-wide recovery');
  assert.ok((await readThrough(sheep[4])).equals(data));
});

test('two nodes lost one after another (the second during recovery): no data lost', async () => {
  await sheep[0].kill9();
  await new Promise((r) => setTimeout(r, 100));
  await sheep[3].kill9();
  await recovered();
  await threeCopiesEach();
  assert.ok((await readThrough(sheep[2])).equals(data));
});

test('collie node recovery shows every node\'s progress', async () => {
  const r = await collie(sheep[2].port, ['node', 'recovery']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout.toString(), /^Nodes In Recovery:\n  Id   Host:Port         V-Nodes       Zone       Progress\n/);
});
