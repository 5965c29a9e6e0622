// Recovery after membership changes: N copies restored after a loss, a returning node catches up
// (and serves what was written while it was away from its own store), a new node takes its share.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { getAttribute } from 'fs-xattr';
import { SheepProcess, freePort, tempDir, collie, stopSequencer, control } from '../helpers/sheep.js';
import { SheepClient } from '../../lib/client.js';
import { OpenVdi } from '../../lib/vdi-io.js';
import { Op } from '../../lib/proto.js';
import { oidHex, oidKind, oidToVid, parseOidHex, dataOidToIdx, vidToDataOid, vidToVdiOid } from '../../lib/oid.js';
import type { RecoveryStatus, StatClusterReply } from '../../lib/admin.js';

const MB = 1 << 20;
let base: string;
const sheep: SheepProcess[] = [];
let data: Buffer;
let vid = 0;

async function add(zone: number, extra: string[] = []): Promise<SheepProcess> {
  const s = await new SheepProcess(path.join(base, `s${zone}`), sheep[zone]?.port ?? await freePort(), ['-c', `local:${base}/group`, '-z', String(zone), ...extra]).start();
  sheep[zone] = s;
  return s;
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

/** How many live nodes hold each of the first `objects` data objects of VDI `v`. */
async function copies(v: number, objects: number): Promise<number[]> {
  const out: number[] = [];
  for (let idx = 0; idx < objects; idx++) {
    let n = 0;
    for (const s of sheep) if (s?.alive && await fs.access(path.join(s.dir, 'obj', oidHex(vidToDataOid(v, idx)))).then(() => true, () => false)) n++;
    out.push(n);
  }
  return out;
}

/** Every object has exactly 3 copies on live nodes (within a bound: recovery finishes in the background). */
async function threeCopiesEach(v = vid, objects = data.length / (4 * MB)): Promise<void> {
  const deadline = Date.now() + 20000;
  let last = await copies(v, objects);
  while (!last.every((n) => n === 3) && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 100));
    last = await copies(v, objects);
  }
  assert.deepEqual(last, Array(objects).fill(3));
}

/**
 * A client that keeps writing random 1 MiB blocks into VDI `name` (holding `initial`) through node
 * `s` and reads each back, comparing bytes, until stopped. It resolves with the expected image.
 */
function workload(s: SheepProcess, name: string, initial: Buffer): { stop: () => Promise<{ image: Buffer; ops: number }> } {
  let running = true;
  const size = initial.length;
  const image = Buffer.from(initial); // blocks the workload never reaches keep what the VDI held
  const done = (async () => {
    const c = await s.client();
    let ops = 0;
    try {
      const v = await OpenVdi.open(c, await c.getVdiInfo(name));
      while (running) {
        const off = crypto.randomInt(size / MB) * MB;
        const block = crypto.randomBytes(MB);
        await v.write(off, block);
        block.copy(image, off);
        const back = await v.read(off, MB);
        if (!back.equals(block)) throw new Error(`read back at ${off} differs from what was written`);
        ops++;
      }
    } finally {
      c.close();
    }
    return { image, ops };
  })();
  return { stop: async () => { running = false; return done; } };
}

/**
 * `rec` read through node `s` is what was written; if not, says which objects read wrong and which
 * node's copy (in service or set aside) differs, with its last-write epoch.
 */
async function assertIntact(s: SheepProcess, back: Buffer): Promise<void> {
  if (back.equals(data)) return;
  const report: string[] = [];
  for (let idx = 0; idx < data.length / (4 * MB); idx++) {
    const want = data.subarray(idx * 4 * MB, (idx + 1) * 4 * MB);
    if (!back.subarray(idx * 4 * MB, (idx + 1) * 4 * MB).equals(want)) report.push(`object ${idx} reads wrong`);
    for (const n of sheep.filter((x) => x?.alive)) {
      for (const dir of ['', '.stale']) {
        const f = path.join(n.dir, 'obj', dir, oidHex(vidToDataOid(vid, idx)));
        const copy = await fs.readFile(f).catch(() => null);
        if (!copy || copy.equals(want)) continue;
        const epoch = await getAttribute(f, 'user.sheepdog.epoch').then((b) => b.readUInt32LE(0), () => -1);
        report.push(`object ${idx} differs on zone ${sheep.indexOf(n)}${dir ? ' (set aside)' : ''}, epoch ${epoch}`);
      }
    }
  }
  assert.fail(`rec read through zone ${sheep.indexOf(s)} is not what was written: ${report.join('; ')}`);
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
  if (!process.env.KEEP_TEST_DIRS) await fs.rm(base, { recursive: true, force: true });
});

test('a node killed under a verified write/read workload: no client error, then exactly 3 copies of every object', async (t) => {
  const c = await sheep[0].client();
  const initial = Buffer.alloc(16 * MB, 1);
  let wvid: number;
  try {
    wvid = await c.newVdi('busy', 16n * BigInt(MB));
    await (await OpenVdi.open(c, wvid)).write(0, initial); // every object exists
  } finally {
    c.close();
  }
  const w = workload(sheep[0], 'busy', initial);
  await new Promise((r) => setTimeout(r, 500));
  await sheep[1].kill9();
  await recovered();
  const { image, ops } = await w.stop();
  assert.ok(ops > 0, 'the workload ran');
  t.diagnostic(`the workload made ${ops} verified 1 MiB writes`);
  await threeCopiesEach();
  await threeCopiesEach(wvid, 4);
  await assertIntact(sheep[2], await readThrough(sheep[2]));
  const c2 = await sheep[3].client();
  try {
    const back = await (await OpenVdi.open(c2, wvid)).read(0, 16 * MB);
    const differ = [...Array(16).keys()].filter((i) => !back.subarray(i * MB, (i + 1) * MB).equals(image.subarray(i * MB, (i + 1) * MB)));
    assert.deepEqual(differ, [], 'the workload VDI reads back what was written, through another node (MiB blocks that differ)');
  } finally {
    c2.close();
  }
  // and every replica on its own: a write lost on one copy would surface after the next failure
  for (let idx = 0; idx < 4; idx++) {
    for (const s of sheep.filter((x) => x?.alive)) {
      const copy = await fs.readFile(path.join(s.dir, 'obj', oidHex(vidToDataOid(wvid, idx))));
      assert.ok(copy.equals(image.subarray(idx * 4 * MB, (idx + 1) * 4 * MB)), `object ${idx} on node ${s.port} holds every acknowledged write`);
    }
  }
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
  await assertIntact(sheep[4], await readThrough(sheep[4]));
});

test('two nodes lost one after another (the second during recovery): no data lost', async () => {
  await sheep[0].kill9();
  await new Promise((r) => setTimeout(r, 100));
  await sheep[3].kill9();
  await recovered();
  await threeCopiesEach();
  await assertIntact(sheep[2], await readThrough(sheep[2]));
});

test('collie node recovery shows every node\'s progress', async () => {
  const r = await collie(sheep[2].port, ['node', 'recovery']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout.toString(), /^Nodes In Recovery:\n  Id   Host:Port         V-Nodes       Zone       Progress\n/);
});

/** The epoch, status text and recovery state one node reports. */
async function clusterStatus(s: SheepProcess): Promise<StatClusterReply> {
  return control<StatClusterReply>(s, Op.STAT_CLUSTER);
}

async function until(what: string, cond: () => Promise<boolean>, ms = 30000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function objectsOn(s: SheepProcess): Promise<number> {
  return (await fs.readdir(path.join(s.dir, 'obj'))).filter((n) => n.startsWith('00')).length;
}

test('with automatic recovery disabled a returning node copies nothing by itself until recover enable, yet objects clients write reach it at once', async () => {
  let r = await collie(sheep[2].port, ['cluster', 'recover', 'disable']);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout.toString(), 'Cluster recovery: disable\n');
  assert.match((await collie(sheep[1].port, ['cluster', 'info'])).stdout.toString(), /^Cluster status: running, auto-recovery disabled\n/);
  await add(3);
  await until('the new epoch shows everywhere', async () => (await clusterStatus(sheep[1])).nodes === 4);
  // it rejoined after the cluster moved on: its copies are set aside and nothing is copied back
  await new Promise((r) => setTimeout(r, 1000));
  assert.equal(await objectsOn(sheep[3]), 0);
  const st = await control<RecoveryStatus>(sheep[3], Op.STAT_RECOVERY);
  assert.equal(st.state, 'waiting');
  const info = (await collie(sheep[3].port, ['node', 'recovery'])).stdout.toString();
  assert.match(info, /127\.0\.0\.1:\d+\s+64\s+3\s+0\.0%/, 'node recovery lists the waiting node at 0.0%');
  // reads are still right: they fail over to the nodes that have the objects
  await assertIntact(sheep[3], await readThrough(sheep[3]));
  // what a client writes does not wait for recovery: the objects it touches reach the node at once
  const c = await sheep[1].client();
  try {
    const v = await OpenVdi.open(c, vid);
    for (let idx = 0; idx < data.length / (4 * MB); idx++) {
      const patch = crypto.randomBytes(4096);
      await v.write(idx * 4 * MB + 8192, patch);
      patch.copy(data, idx * 4 * MB + 8192);
    }
  } finally {
    c.close();
  }
  const copied = (await fs.readdir(path.join(sheep[3].dir, 'obj'))).map(parseOidHex)
    .filter((o): o is bigint => o !== null && oidKind(o) === 'data' && oidToVid(o) === vid);
  assert.ok(copied.length > 0, 'the written objects the returning node owns were copied to it on demand');
  for (const oid of copied) {
    const idx = dataOidToIdx(oid);
    assert.ok((await fs.readFile(path.join(sheep[3].dir, 'obj', oidHex(oid)))).equals(data.subarray(idx * 4 * MB, (idx + 1) * 4 * MB)), `on-demand copy of object ${idx} is whole and current`);
  }
  assert.equal((await control<RecoveryStatus>(sheep[3], Op.STAT_RECOVERY)).state, 'waiting', 'while recovery still waits');
  // node recovery --watch follows it: still running while recovery waits, done once it has finished
  let watchDone = false;
  const watch = collie(sheep[1].port, ['node', 'recovery', '--watch']).finally(() => { watchDone = true; });
  await new Promise((r) => setTimeout(r, 1500));
  assert.equal(watchDone, false, 'node recovery --watch waits while a node waits to recover');
  r = await collie(sheep[3].port, ['cluster', 'recover', 'enable']);
  assert.equal(r.stdout.toString(), 'Cluster recovery: enable\n');
  const w = await watch;
  assert.equal(w.code, 0, w.stderr);
  assert.match(w.stdout.toString(), /^recovery finished on every node \(epoch \d+\)\n$/);
  await recovered();
  await threeCopiesEach();
  assert.ok(await objectsOn(sheep[3]) > 0, 'the returning node holds its share after enable');
  await assertIntact(sheep[3], await readThrough(sheep[3]));
});

test('a recovery throttle (sheep -R, node recovery set-throttle) bounds the objects copied per interval', async () => {
  // node 0 returns with -R max=1,interval=400: it must pull its share one object per 400 ms
  const started = Date.now();
  await add(0, ['-R', 'max=1,interval=400']);
  const t = await collie(sheep[0].port, ['node', 'recovery', 'get-throttle']);
  assert.equal(t.stderr, 'max (1), interval (400)\n');
  let seen = 0;
  await until('node 0 copied 3 objects', async () => {
    const st = await control<RecoveryStatus>(sheep[0], Op.STAT_RECOVERY);
    // the first object of each 400 ms window may go at once: never more than that
    assert.ok(st.copied <= 1 + Math.floor((Date.now() - started) / 400), `copied ${st.copied} after ${Date.now() - started} ms`);
    seen = Math.max(seen, st.copied);
    return seen >= 3;
  });
  // lifting the limit lets it finish
  const u = await collie(sheep[0].port, ['node', 'recovery', 'set-throttle', '0', '0']);
  assert.equal(u.code, 0, u.stderr);
  assert.equal((await collie(sheep[0].port, ['node', 'recovery', 'get-throttle'])).stderr, 'max (0), interval (0)\n');
  const bad = await collie(sheep[0].port, ['node', 'recovery', 'set-throttle', '5']);
  assert.equal(bad.code, 64);
  await recovered();
  await threeCopiesEach();
  await assertIntact(sheep[0], await readThrough(sheep[0]));
});

test('a VDI deleted while a node is away stays deleted when the node returns', async () => {
  await recovered();
  const gone = crypto.randomBytes(16 * MB);
  const c = await sheep[2].client();
  let gvid: number;
  try {
    gvid = await c.newVdi('gone', 16n * BigInt(MB));
    await (await OpenVdi.open(c, gvid)).write(0, gone);
  } finally {
    c.close();
  }
  const files = (s: SheepProcess, dir: string) => [0, 1, 2, 3].map((i) => path.join(s.dir, 'obj', dir, oidHex(vidToDataOid(gvid, i))));
  const held = async (s: SheepProcess) => (await Promise.all(files(s, '').map((f) => fs.access(f).then(() => 1, () => 0)))).reduce((a, b) => a + b, 0);
  // the node that holds most of the VDI's objects goes away (SIGKILL: it keeps them on disk)
  const live = sheep.filter((s) => s?.alive);
  const counts = await Promise.all(live.map(held));
  const away = live[counts.indexOf(Math.max(...counts))];
  const zone = sheep.indexOf(away);
  assert.ok(Math.max(...counts) > 0);
  await away.kill9();
  await recovered();
  const del = await collie(live.find((s) => s !== away)!.port, ['vdi', 'delete', 'gone']);
  assert.equal(del.code, 0, del.stderr);
  await add(zone);
  await recovered();
  // nothing of it came back: not the name, not a data object, in service or set aside
  assert.doesNotMatch((await collie(sheep[zone].port, ['vdi', 'list', '-r'])).stdout.toString(), /\bgone\b/);
  const read = await collie(sheep[zone].port, ['vdi', 'read', 'gone', '0', '512']);
  assert.notEqual(read.code, 0);
  assert.match(read.stderr.toString(), /No VDI found/);
  await until('set-aside copies are purged', async () => {
    for (const s of sheep.filter((x) => x?.alive)) {
      for (const f of [...files(s, ''), ...files(s, '.stale')]) if (await fs.access(f).then(() => true, () => false)) return false;
    }
    return true;
  });
  // every copy of its inode shows it deleted (the returning node's old copy did not win)
  for (const s of sheep.filter((x) => x?.alive)) {
    const f = path.join(s.dir, 'obj', oidHex(vidToVdiOid(gvid)));
    if (!(await fs.access(f).then(() => true, () => false))) continue;
    assert.equal((await fs.readFile(f)).subarray(0, 256).toString('latin1').replace(/\0+$/, ''), '', `inode copy on ${s.port} has no name`);
  }
  await assertIntact(sheep[zone], await readThrough(sheep[zone]));
});

async function readAll(s: SheepProcess, name: string, len: number): Promise<Buffer> {
  const r = await collie(s.port, ['vdi', 'read', name, '0', String(len)]);
  assert.equal(r.code, 0, r.stderr);
  return r.stdout;
}

test('vdi check rebuilds a missing copy and replaces a damaged one with the good copy', async () => {
  await recovered();
  const holders = async (idx: number) => {
    const out: string[] = [];
    for (const s of sheep) {
      const f = s?.alive ? path.join(s.dir, 'obj', oidHex(vidToDataOid(vid, idx))) : '';
      if (f && await fs.access(f).then(() => true, () => false)) out.push(f);
    }
    return out;
  };
  const [damaged] = await holders(0);
  const fh = await fs.open(damaged, 'r+');
  await fh.write(crypto.randomBytes(4096), 0, 4096, 8192);
  await fh.close();
  const [gone] = await holders(1);
  await fs.rm(gone);
  const r = await collie(sheep.find((s) => s?.alive)!.port, ['vdi', 'check', 'rec']);
  assert.equal(r.code, 0, r.stderr);
  const text = r.stdout.toString();
  assert.match(text, new RegExp(`fixed replica ${oidHex(vidToDataOid(vid, 0))} on `));
  assert.match(text, new RegExp(`oid ${oidHex(vidToDataOid(vid, 1))} is missing\\.\\nfixed missing ${oidHex(vidToDataOid(vid, 1))}\\n`));
  assert.match(text, /finish check&repair rec\n$/);
  for (const idx of [0, 1]) {
    const files = await holders(idx);
    assert.equal(files.length, 3);
    for (const f of files) assert.ok((await fs.readFile(f)).equals(data.subarray(idx * 4 * MB, (idx + 1) * 4 * MB)), `copy ${f} is right`);
  }
  assert.equal((await collie(sheep[2].port, ['vdi', 'check', '-e', 'rec'])).stdout.toString(), 'rec is fine, no object is missing.\n');
});

test('vdi check reports, and does not touch, differing copies of a VDI a client holds open', async () => {
  const file = async () => {
    for (const s of sheep) {
      const f = s?.alive ? path.join(s.dir, 'obj', oidHex(vidToDataOid(vid, 2))) : '';
      if (f && await fs.access(f).then(() => true, () => false)) return f;
    }
    throw new Error('no copy of object 2');
  };
  const damaged = await file();
  const fh = await fs.open(damaged, 'r+');
  await fh.write(Buffer.alloc(4096, 0xee), 0, 4096, 0);
  await fh.close();
  const port = sheep.find((s) => s?.alive)!.port;
  const c = await SheepClient.connect({ port });
  try {
    await c.lockVdi('rec');
    const r = await collie(port, ['vdi', 'check', 'rec']);
    assert.equal(r.code, 1);
    assert.match(r.stdout.toString(), new RegExp(`oid ${oidHex(vidToDataOid(vid, 2))}: copies differ while rec is in use; not repaired`));
    assert.ok(!(await fs.readFile(damaged)).equals(data.subarray(8 * MB, 12 * MB)), 'the copy was left alone');
    await c.releaseVdi('rec', vid);
  } finally {
    c.close();
  }
  const again = await collie(port, ['vdi', 'check', 'rec']);
  assert.equal(again.code, 0, again.stdout.toString());
  assert.ok((await fs.readFile(damaged)).equals(data.subarray(8 * MB, 12 * MB)), 'repaired once nobody holds it');
});

test('full shutdown and restart: the cluster waits for the last epoch\'s nodes, then serves every VDI intact', async () => {
  await recovered();
  const epoch = (await clusterStatus(sheep[0])).epoch;
  const live = sheep.filter((s) => s?.alive);
  assert.equal((await collie(sheep[0].port, ['cluster', 'shutdown'])).code, 0);
  await until('every sheep stopped', async () => live.every((s) => !s.alive));
  const zones = [4, 2, 1, 0, 3].filter((z) => live.includes(sheep[z]));
  await add(zones[0]);
  const waiting = await collie(sheep[zones[0]].port, ['cluster', 'info']);
  assert.match(waiting.stdout.toString(), /^Cluster status: Waiting for other nodes to join cluster\n/);
  const refused = await collie(sheep[zones[0]].port, ['vdi', 'read', 'rec', '0', '4096']);
  assert.notEqual(refused.code, 0);
  assert.match(refused.stderr.toString(), /Waiting for other nodes to join cluster/);
  for (const z of zones.slice(1)) await add(z);
  await until('the cluster runs again', async () => (await clusterStatus(sheep[zones[0]])).status === 'running');
  // the same nodes as the last epoch: no new epoch
  assert.equal((await clusterStatus(sheep[zones[1]])).epoch, epoch);
  await assertIntact(sheep[zones[2]], await readAll(sheep[zones[2]], 'rec', data.length));
  await recovered();
  await threeCopiesEach();
});

test('every sheep killed with SIGKILL and restarted: every VDI intact', async () => {
  const live = sheep.filter((s) => s?.alive);
  const zones = live.map((s) => sheep.indexOf(s));
  await Promise.all(live.map((s) => s.kill9()));
  for (const z of [...zones].reverse()) await add(z);
  await until('the cluster runs again', async () => (await clusterStatus(sheep[zones[0]])).status === 'running');
  await assertIntact(sheep[zones[1]], await readAll(sheep[zones[1]], 'rec', data.length));
  await recovered();
  await threeCopiesEach();
});

test('recover force goes on without a missing node, which later rejoins and catches up', async () => {
  const live = sheep.filter((s) => s?.alive);
  const zones = live.map((s) => sheep.indexOf(s));
  const epoch = (await clusterStatus(live[0])).epoch;
  // a shutdown keeps every node in the last epoch: all of them are needed to resume
  assert.equal((await collie(live[0].port, ['cluster', 'shutdown'])).code, 0);
  await until('every sheep stopped', async () => live.every((s) => !s.alive));
  const [missing, ...rest] = zones;
  for (const z of rest) await add(z);
  assert.equal((await clusterStatus(sheep[rest[0]])).status, 'wait_join');
  const noTty = await collie(sheep[rest[0]].port, ['cluster', 'recover', 'force']);
  assert.notEqual(noTty.code, 0, 'without a terminal and without -f it does not force');
  assert.equal((await clusterStatus(sheep[rest[0]])).status, 'wait_join');
  const r = await collie(sheep[rest[0]].port, ['cluster', 'recover', 'force', '-f']);
  assert.equal(r.code, 0, r.stderr);
  await until('the cluster runs again', async () => (await clusterStatus(sheep[rest[1]])).status === 'running');
  const st = await clusterStatus(sheep[rest[1]]);
  assert.equal(st.epoch, epoch + 1, 'going on without a node is a new epoch');
  assert.equal(st.history[0].nodes.length, rest.length);
  await assertIntact(sheep[rest[0]], await readAll(sheep[rest[0]], 'rec', data.length));
  await add(missing);
  await recovered();
  await threeCopiesEach();
  await assertIntact(sheep[missing], await readAll(sheep[missing], 'rec', data.length));
});
