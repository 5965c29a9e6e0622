// Full disks: a 3-sheep copies=3 cluster where one sheep's store is a small ext4 (a loop device).
// Filling it gives clients a clean NO_SPACE and leaves no copy behind; deletes work on the full
// disk and free every copy, also on a node that was away; recovery that finds the disk full waits,
// says so, and brings every object back to 3 copies once space is freed; a node whose disk is 60%
// full rejoins after a short absence.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { SheepProcess, freePort, tempDir, collie, collieHash, stopSequencer, control } from '../helpers/sheep.js';
import { loopFsUnavailable, mountLoopFs, type LoopFs } from '../helpers/loopfs.js';
import { Op } from '../../lib/proto.js';
import { oidHex, parseOidHex, oidToVid, oidKind, vidToVdiOid, dataOidToIdx } from '../../lib/oid.js';
import { SD_INODE_HEADER_SIZE } from '../../lib/inode.js';
import type { RecoveryStatus, StatClusterReply, StatSheepReply } from '../../lib/admin.js';

const MB = 1 << 20;
const skip = await loopFsUnavailable();
let base: string;
let disk: LoopFs;
const sheep: SheepProcess[] = [];

/** Sheep 2 keeps its store on the small disk, with a 16 MiB reserve. */
async function start(i: number): Promise<SheepProcess> {
  const dir = i === 2 ? path.join(disk.dir, 'store') : path.join(base, `s${i}`);
  const extra = i === 2 ? ['--reserved-space', '16M'] : [];
  const s = await new SheepProcess(dir, sheep[i]?.port ?? await freePort(), ['-c', `local:${base}/group`, '-z', String(i), '--orphan-grace', '2', ...extra]).start();
  sheep[i] = s;
  return s;
}

async function settled(n: number, ms = 60000): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    const live = sheep.filter((s) => s.alive);
    const st = await Promise.all(live.map((s) => control<StatClusterReply>(s, Op.STAT_CLUSTER)));
    const rec = await Promise.all(live.map((s) => control<RecoveryStatus>(s, Op.STAT_RECOVERY)));
    if (live.length === n && st.every((x) => x.nodes === n && x.epoch === st[0].epoch && x.status === 'running') &&
        rec.every((r) => r.state === 'idle' && (r.epoch === st[0].epoch || r.epoch === 0))) return;
    if (Date.now() > deadline) throw new Error(`the cluster did not settle: ${JSON.stringify(rec)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function vidOf(name: string): Promise<number> {
  const c = await sheep[0].client();
  try { return await c.getVdiInfo(name); } finally { c.close(); }
}

/** The data and vmstate objects of `vid` a store holds, in service or set aside. */
async function objectsOf(s: SheepProcess, vid: number): Promise<string[]> {
  const out: string[] = [];
  for (const sub of ['obj', 'obj/.stale']) {
    for (const n of await fs.readdir(path.join(s.dir, sub)).catch(() => [] as string[])) {
      const oid = parseOidHex(n);
      if (oid !== null && oidToVid(oid) === vid && oidKind(oid) !== 'inode') out.push(`${sub}/${n}`);
    }
  }
  return out;
}

/** Waits until no store holds a copy of `vid`'s objects (the orphan sweeps run in the background). */
async function noCopiesOf(vid: number, ms = 20000): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    const left = (await Promise.all(sheep.map((s) => objectsOf(s, vid)))).map((l, i) => l.length ? `sheep ${i}: ${l.join(' ')}` : '').filter(Boolean);
    if (!left.length) return;
    if (Date.now() > deadline) throw new Error(`copies of deleted VDI ${vid.toString(16)} remain: ${left.join('; ')}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

async function freeOnDisk(): Promise<number> {
  const st = await fs.statfs(disk.dir);
  return st.bavail * st.bsize;
}

/** Every data object `name` maps is on all 3 stores, identical. */
async function threeIdenticalCopies(name: string): Promise<void> {
  const vid = await vidOf(name);
  const c = await sheep[0].client();
  let map: Buffer;
  try { map = await c.readObj(vidToVdiOid(vid), SD_INODE_HEADER_SIZE, 4 * 64); } finally { c.close(); }
  for (let i = 0; i < 64; i++) {
    const owner = map.readUInt32LE(4 * i);
    if (!owner) continue;
    const file = oidHex((BigInt(owner) << 32n) | BigInt(i));
    const copies = await Promise.all(sheep.map((s) => fs.readFile(path.join(s.dir, 'obj', file)).catch(() => null)));
    assert.ok(copies.every((x) => x !== null), `object ${i} of ${name} lacks a copy: ${copies.map((x) => x !== null)}`);
    assert.ok(copies.every((x) => x!.equals(copies[0]!)), `the copies of object ${i} of ${name} differ`);
  }
}

before(async () => {
  if (skip) return;
  base = await tempDir('fulldisk-');
  disk = await mountLoopFs(base, 'small', 160);
  for (let i = 0; i < 3; i++) await start(i);
  assert.equal((await collie(sheep[0].port, ['cluster', 'format', '--copies=3'])).code, 0);
});

after(async () => {
  if (skip) return;
  for (const s of sheep) await s?.stop();
  await stopSequencer(`${base}/group`);
  await disk?.umount();
  await fs.rm(base, { recursive: true, force: true });
});

test('filling the small disk gives the writer NO_SPACE, and node info and cluster info show the node full', { skip: skip ?? false }, async () => {
  assert.equal((await collie(sheep[0].port, ['vdi', 'create', 'fill', '256M'])).code, 0);
  const w = await collie(sheep[0].port, ['vdi', 'write', 'fill'], crypto.randomBytes(200 * MB));
  assert.notEqual(w.code, 0, 'a write larger than the disk must fail');
  assert.match(w.stderr, /space/i);
  assert.ok(sheep[2].alive, 'the sheep with the full disk stays up');
  const st = await control<StatSheepReply>(sheep[2], Op.STAT_SHEEP);
  assert.equal(st.full, true);
  const info = await collie(sheep[0].port, ['node', 'info']);
  assert.match(info.stdout.toString(), /^ 2\t.*full \(under the 16 MB reserve/m);
  const ci = await collie(sheep[0].port, ['cluster', 'info']);
  assert.match(ci.stdout.toString(), /disk full/);
});

test('a create that failed on the full node leaves no unmapped copy on the others', { skip: skip ?? false }, async () => {
  const vid = await vidOf('fill');
  const c = await sheep[0].client();
  let map: Buffer;
  try { map = await c.readObj(vidToVdiOid(vid), SD_INODE_HEADER_SIZE, 4 * 64); } finally { c.close(); }
  for (const s of sheep) {
    for (const f of await objectsOf(s, vid)) {
      const idx = dataOidToIdx(parseOidHex(path.basename(f))!);
      assert.equal(map.readUInt32LE(4 * idx), vid, `${s.dir}: ${f} is not mapped by the VDI`);
    }
  }
  await threeIdenticalCopies('fill');
});

test('deleting a VDI works on the full disk and frees its copies on every store', { skip: skip ?? false }, async () => {
  const vid = await vidOf('fill');
  const d = await collie(sheep[0].port, ['vdi', 'delete', 'fill']);
  assert.equal(d.code, 0, d.stderr);
  assert.doesNotMatch((await collie(sheep[0].port, ['vdi', 'list', '-r'])).stdout.toString(), /fill/);
  await noCopiesOf(vid);
  assert.equal((await control<StatSheepReply>(sheep[2], Op.STAT_SHEEP)).full, false);
});

test('a VDI deleted while a node is away leaves no copy on it when it returns', { skip: skip ?? false }, async () => {
  assert.equal((await collie(sheep[0].port, ['vdi', 'create', 'gone', '16M'])).code, 0);
  assert.equal((await collie(sheep[0].port, ['vdi', 'write', 'gone'], crypto.randomBytes(16 * MB))).code, 0);
  const vid = await vidOf('gone');
  await sheep[1].kill9();
  await settled(2);
  assert.equal((await collie(sheep[0].port, ['vdi', 'delete', 'gone'])).code, 0);
  assert.equal((await objectsOf(sheep[1], vid)).length, 4, 'the away node still holds its copies');
  await start(1);
  await settled(3);
  await noCopiesOf(vid);
});

test('recovery that finds the disk full waits, says why, and restores 3 copies once space is freed', { skip: skip ?? false }, async () => {
  await sheep[2].kill9();
  await settled(2);
  const data = crypto.randomBytes(48 * MB);
  assert.equal((await collie(sheep[0].port, ['vdi', 'create', 'late', '48M'])).code, 0);
  assert.equal((await collie(sheep[0].port, ['vdi', 'write', 'late'], data)).code, 0);
  // leave about 24 MiB free: the reserve (16 MiB) leaves room for 2 of the 12 objects the node lacks
  const filler = path.join(disk.dir, 'filler');
  const fill = Math.max(0, (await freeOnDisk()) - 24 * MB);
  const fh = await fs.open(filler, 'w');
  for (let left = fill; left > 0; left -= 8 * MB) await fh.write(Buffer.alloc(Math.min(8 * MB, left), 1));
  await fh.close();
  await start(2);
  let blocked = '';
  for (const deadline = Date.now() + 30000; !blocked && Date.now() < deadline;) {
    blocked = (await control<RecoveryStatus>(sheep[2], Op.STAT_RECOVERY)).blocked ?? '';
    if (!blocked) await new Promise((r) => setTimeout(r, 200));
  }
  assert.match(blocked, /waiting for space/);
  assert.ok(sheep[2].alive);
  const nr = (await collie(sheep[0].port, ['node', 'recovery'])).stdout.toString();
  assert.match(nr, /recovery waiting for space: \d+ objects need copies here/);
  assert.match((await collie(sheep[0].port, ['cluster', 'info'])).stdout.toString(), /recovery waiting for space/);
  // clients are served meanwhile, from the other copies
  const want = crypto.createHash('sha256').update(data).digest('hex');
  assert.equal((await collieHash(sheep[2].port, ['vdi', 'read', 'late'])).sha256, want);
  await fs.rm(filler);
  await settled(3);
  assert.equal((await control<RecoveryStatus>(sheep[2], Op.STAT_RECOVERY)).blocked, undefined);
  const check = await collie(sheep[0].port, ['vdi', 'check', '-e', 'late']);
  assert.equal(check.code, 0, check.stdout.toString() + check.stderr);
  assert.match(check.stdout.toString(), /no object is missing/);
  await threeIdenticalCopies('late');
});

test('after a fill, free and full-restart cycle every VDI is whole and no store holds a deleted VDI\'s objects', { skip: skip ?? false }, async () => {
  const keep = crypto.randomBytes(8 * MB);
  assert.equal((await collie(sheep[0].port, ['vdi', 'create', 'keep', '8M'])).code, 0);
  assert.equal((await collie(sheep[0].port, ['vdi', 'write', 'keep'], keep)).code, 0);
  const deleted: number[] = [];
  for (const name of ['f1', 'f2']) {
    assert.equal((await collie(sheep[0].port, ['vdi', 'create', name, '128M'])).code, 0);
    await collie(sheep[0].port, ['vdi', 'write', name], crypto.randomBytes(64 * MB)); // the second one fills the disk
    deleted.push(await vidOf(name));
  }
  for (const name of ['f1', 'f2']) assert.equal((await collie(sheep[0].port, ['vdi', 'delete', name])).code, 0);
  assert.equal((await collie(sheep[0].port, ['cluster', 'shutdown'])).code, 0);
  for (const s of sheep) {
    for (let t = 0; s.alive && t < 100; t++) await new Promise((r) => setTimeout(r, 100));
    await s.stop();
  }
  for (let i = 0; i < 3; i++) await start(i);
  await settled(3);
  for (const vid of deleted) await noCopiesOf(vid);
  for (const name of ['keep', 'late']) {
    const check = await collie(sheep[0].port, ['vdi', 'check', '-e', name]);
    assert.equal(check.code, 0, check.stderr);
    assert.match(check.stdout.toString(), /no object is missing/);
    await threeIdenticalCopies(name);
  }
  assert.equal((await collieHash(sheep[2].port, ['vdi', 'read', 'keep'])).sha256, crypto.createHash('sha256').update(keep).digest('hex'));
});

test('a node whose disk is 60% full rejoins after a short absence and copies only what changed', { skip: skip ?? false }, async () => {
  // the small disk (160 MiB) holds 'late' (48 MiB) and 'keep' (8 MiB); 48 MiB more makes it over 60% full
  assert.equal((await collie(sheep[0].port, ['vdi', 'create', 'more', '48M'])).code, 0);
  assert.equal((await collie(sheep[0].port, ['vdi', 'write', 'more'], crypto.randomBytes(48 * MB))).code, 0);
  await settled(3);
  const st = await fs.statfs(disk.dir);
  const usedPct = 100 * (1 - st.bavail / st.blocks);
  assert.ok(usedPct >= 60, `the disk is ${usedPct.toFixed(0)}% full`);
  await sheep[2].kill9();
  await settled(2);
  const patch = crypto.randomBytes(8 * MB);
  assert.equal((await collie(sheep[0].port, ['vdi', 'write', 'more', '0', String(8 * MB)], patch)).code, 0);
  await start(2);
  await settled(3);
  const rec = await control<RecoveryStatus>(sheep[2], Op.STAT_RECOVERY);
  assert.equal(rec.copied, 2, `copied ${rec.copied} objects (2 changed)`);
  assert.equal(rec.error, undefined);
  await threeIdenticalCopies('more');
});
