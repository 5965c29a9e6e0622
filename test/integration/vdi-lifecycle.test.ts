// The VDI lifecycle with collie and QEMU's request sequence mixed: snapshots, clones, rollback,
// delete with reclaim, tree/graph/list, attributes, locks, check, backup and restore.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { startSheep, destroySheep, collie, collieHash, tempDir, run, COLLIE, type SheepProcess } from '../helpers/sheep.js';
import { SheepClient } from '../../lib/client.js';
import { OpenVdi } from '../../lib/vdi-io.js';
import { vidToVdiOid, oidHex, vidToDataOid } from '../../lib/oid.js';
import { SD_INODE_HEADER_SIZE } from '../../lib/inode.js';

const MB = 1 << 20;
let sheep: SheepProcess;
let c: SheepClient;
let work: string;

before(async () => {
  sheep = await startSheep({ copies: 1 });
  c = await sheep.client();
  work = await tempDir('lifecycle-');
});
after(async () => {
  c?.close();
  if (sheep) await destroySheep(sheep);
  await fs.rm(work, { recursive: true, force: true });
});

const ok = async (args: string[], input?: Buffer | string | { file: string }) => {
  const r = await collie(sheep.port, args, input);
  assert.equal(r.code, 0, `collie ${args.join(' ')}: ${r.stderr}`);
  return r.stdout.toString();
};
const fill = (v: number) => Buffer.alloc(4 * MB, v);

/** Reads objects 0..2 of a VDI and returns the byte each is filled with (asserting it is uniform). */
async function pattern(vid: number): Promise<number[]> {
  const v = await OpenVdi.open(c, vid);
  const out = [];
  for (let i = 0; i < 3; i++) {
    const b = await v.read(i * 4 * MB, 4 * MB);
    assert.ok(b.every((x) => x === b[0]), `object ${i} of ${vid.toString(16)} is uniform`);
    out.push(b[0]);
  }
  return out;
}

async function dataObjects(): Promise<string[]> {
  return (await fs.readdir(path.join(sheep.dir, 'obj'))).filter((n) => /^[0-9a-f]{16}$/.test(n) && !n.startsWith('8')).sort();
}

/** QEMU's `snapshot -c TAG`: the tag goes into the current header, then NEW_VDI snapid=1. */
async function qemuSnapshot(name: string, tag: string): Promise<number> {
  const vid = await c.lockVdi(name);
  const hdr = Buffer.from(await c.readObj(vidToVdiOid(vid), 0, SD_INODE_HEADER_SIZE));
  hdr.fill(0, 256, 512);
  hdr.write(tag, 256);
  await c.writeObj(vidToVdiOid(vid), 0, hdr);
  const working = await c.newVdi(name, hdr.readBigUInt64LE(536), { baseVdiId: vid, snapshot: true });
  await c.releaseVdi(name, working);
  return working;
}

test('a family built by collie and QEMU requests reads back what was written at each point', async () => {
  await ok(['vdi', 'create', 'base', '64M']);
  const v0 = await c.getVdiInfo('base');
  await (await OpenVdi.open(c, v0)).write(0, Buffer.concat([fill(1), fill(1), fill(1)]));
  await ok(['vdi', 'snapshot', '-s', 's1', 'base']); // collie
  const w1 = await c.getVdiInfo('base');
  await (await OpenVdi.open(c, w1)).write(4 * MB, fill(2)); // QEMU-style COW write
  const w2 = await qemuSnapshot('base', 's2'); // QEMU's snapshot sequence
  await ok(['vdi', 'clone', '-s', 's1', 'base', 'c1']);
  const cv = await c.getVdiInfo('c1');
  await (await OpenVdi.open(c, w2)).write(8 * MB, fill(3));
  await (await OpenVdi.open(c, cv)).write(0, fill(4));

  assert.deepEqual(await pattern(await c.getVdiInfo('base', 's1')), [1, 1, 1]);
  assert.deepEqual(await pattern(await c.getVdiInfo('base', 's2')), [1, 2, 1]);
  assert.deepEqual(await pattern(w2), [1, 2, 3]);
  assert.deepEqual(await pattern(cv), [4, 1, 1]);
  assert.deepEqual([await c.getVdiInfo('base', 's1'), await c.getVdiInfo('base', 's2')], [v0, w1]);
  // the same through collie vdi read of a snapshot
  const s2read = await collie(sheep.port, ['vdi', 'read', '-s', 's2', 'base', '4M', '4M']);
  assert.deepEqual(s2read.stdout, fill(2));

  const list = (await ok(['vdi', 'list', '-r'])).trim().split('\n').map((l) => l.split(' ').slice(0, 2).concat(l.split(' ')[9] ?? '').join(' '));
  assert.deepEqual(list.sort(), ['= base ', 'c c1 ', 's base s1', 's base s2']);
  const raw = (await ok(['vdi', 'list', '-r', 'base'])).trim().split('\n');
  assert.equal(raw.length, 3);

  const tree = (await ok(['vdi', 'tree'])).split('\n');
  assert.match(tree[0], /^base---\[\d{4}-\d\d-\d\d \d\d:\d\d s1\]-\+-\[\d{4}-\d\d-\d\d \d\d:\d\d s2\]---\(You Are Here\)$/);
  assert.match(tree[1], /^ +`-c1---\(You Are Here\)$/);

  const dot = await ok(['vdi', 'graph']);
  assert.match(dot, new RegExp(`"0" -> "${v0.toString(16)}";`));
  assert.match(dot, new RegExp(`"${v0.toString(16)}" -> "${w1.toString(16)}";`));
  assert.match(dot, new RegExp(`"${w1.toString(16)}" -> "${w2.toString(16)}";`));
  assert.match(dot, new RegExp(`"${v0.toString(16)}" -> "${cv.toString(16)}";`));
  const svg = spawnSync('dot', ['-Tsvg'], { input: dot });
  assert.equal(svg.status, 0, `dot -Tsvg failed: ${svg.stderr}`);
  assert.match(svg.stdout.toString(), /<svg/);
});

test('rollback makes the VDI read as the snapshot; deletes free exactly the unreferenced objects', async () => {
  const v0 = await c.getVdiInfo('base', 's1');
  const w1 = await c.getVdiInfo('base', 's2');
  const w2 = await c.getVdiInfo('base');
  const cv = await c.getVdiInfo('c1');
  const d = (vid: number, i: number) => oidHex(vidToDataOid(vid, i));
  assert.deepEqual(await dataObjects(), [d(v0, 0), d(v0, 1), d(v0, 2), d(w1, 1), d(w2, 2), d(cv, 0)].sort());

  await ok(['vdi', 'rollback', '-f', '-s', 's1', 'base']);
  const w3 = await c.getVdiInfo('base');
  assert.notEqual(w3, w2);
  assert.deepEqual(await pattern(w3), [1, 1, 1]);
  assert.deepEqual(await dataObjects(), [d(v0, 0), d(v0, 1), d(v0, 2), d(w1, 1), d(cv, 0)].sort(), 'the discarded working VDI\'s own object is freed');

  await ok(['vdi', 'delete', '-s', 's1', 'base']);
  assert.deepEqual(await pattern(cv), [4, 1, 1], 'the clone stays readable');
  assert.deepEqual(await pattern(w3), [1, 1, 1]);
  assert.equal((await dataObjects()).length, 5, 'the rolled-back VDI and the clone still map s1\'s objects');

  await ok(['vdi', 'delete', '-s', 's2', 'base']);
  assert.deepEqual(await dataObjects(), [d(v0, 0), d(v0, 1), d(v0, 2), d(cv, 0)].sort());
  await ok(['vdi', 'delete', 'base']);
  assert.deepEqual(await dataObjects(), [d(v0, 1), d(v0, 2), d(cv, 0)].sort(), 'only the clone keeps objects alive');
  await ok(['vdi', 'delete', 'c1']);
  assert.deepEqual(await dataObjects(), [], 'deleting the last VDI of the family frees everything');
  assert.equal((await ok(['vdi', 'tree'])), '');
});

test('vdi rollback without -f and without a terminal changes nothing', async () => {
  await ok(['vdi', 'create', 'rb', '8M']);
  await ok(['vdi', 'write', 'rb', '0', '9'], 'version-1');
  await ok(['vdi', 'snapshot', '-s', 'v1', 'rb']);
  await ok(['vdi', 'write', 'rb', '0', '9'], 'VERSION-2');
  const r = await collie(sheep.port, ['vdi', 'rollback', '-s', 'v1', 'rb']);
  assert.equal(r.code, 1);
  assert.equal((await collie(sheep.port, ['vdi', 'read', 'rb', '0', '9'])).stdout.toString(), 'VERSION-2');
  const nos = await collie(sheep.port, ['vdi', 'rollback', '-f', 'rb']);
  assert.equal(nos.code, 64);
});

test('a duplicate snapshot tag is refused', async () => {
  const r = await collie(sheep.port, ['vdi', 'snapshot', '-s', 'v1', 'rb']);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /tag \(v1\) is existed/);
});

test('vdi resize grows a VDI and refuses to shrink it', async () => {
  await ok(['vdi', 'resize', 'rb', '32M']);
  assert.match(await ok(['vdi', 'list', '-r', 'rb']), new RegExp(`= rb 0 ${32 * MB} `));
  await ok(['vdi', 'write', 'rb', '30M', '5'], 'grown');
  assert.equal((await collie(sheep.port, ['vdi', 'read', 'rb', '30M', '5'])).stdout.toString(), 'grown');
  const shrink = await collie(sheep.port, ['vdi', 'resize', 'rb', '16M']);
  assert.equal(shrink.code, 1);
  assert.match(shrink.stderr, /Shrinking/);
});

test('attributes: set, get, exclusive, from stdin, delete, exit codes, and they survive a restart', async () => {
  await ok(['vdi', 'setattr', 'rb', 'owner', 'alice']);
  assert.equal(await ok(['vdi', 'getattr', 'rb', 'owner']), 'alice');
  const x = await collie(sheep.port, ['vdi', 'setattr', '-x', 'rb', 'owner', 'carol']);
  assert.equal(x.code, 3);
  assert.match(x.stderr, /The attribute 'owner' already exists/);
  await ok(['vdi', 'setattr', 'rb', 'stdinkey'], 'from stdin\n');
  assert.equal(await ok(['vdi', 'getattr', 'rb', 'stdinkey']), 'from stdin\n');
  const missing = await collie(sheep.port, ['vdi', 'getattr', 'rb', 'nokey']);
  assert.equal(missing.code, 5);
  assert.match(missing.stderr, /Attribute 'nokey' not found/);
  assert.equal((await collie(sheep.port, ['vdi', 'getattr', 'nonexist', 'owner'])).code, 5);
  c.close();
  await sheep.stop();
  await sheep.start();
  c = await sheep.client();
  assert.equal(await ok(['vdi', 'getattr', 'rb', 'owner']), 'alice');
  await ok(['vdi', 'setattr', '-d', 'rb', 'owner']);
  assert.equal((await collie(sheep.port, ['vdi', 'getattr', 'rb', 'owner'])).code, 5);
});

test('vdi lock list shows a lock left by a client and vdi lock unlock clears it', async () => {
  const vid = await c.lockVdi('rb');
  const list = await ok(['vdi', 'lock', 'list']);
  assert.match(list, new RegExp(`^  Name         Id  VDI id  Tag            Owner node\\(s\\)\\n  rb +0 +${vid.toString(16)}  +127\\.0\\.0\\.1:${sheep.port}\\n$`));
  await ok(['vdi', 'lock', 'unlock', 'rb']);
  assert.equal(await ok(['vdi', 'lock', 'list', '-r']), '');
  const again = await collie(sheep.port, ['vdi', 'lock', 'unlock', 'rb']);
  assert.equal(again.code, 1);
  assert.match(again.stderr, /is not locked/);
});

test('vdi check passes on a healthy VDI and reports an object lost from the store', async () => {
  assert.equal(await ok(['vdi', 'check', 'rb']), 'finish check&repair rb\n');
  assert.equal(await ok(['vdi', 'check', '-e', 'rb']), 'rb is fine, no object is missing.\n');
  const vid = await c.getVdiInfo('rb');
  const v = await OpenVdi.open(c, vid);
  const idx = v.map.findIndex((o) => o === vid);
  await fs.rm(path.join(sheep.dir, 'obj', oidHex(vidToDataOid(vid, idx))));
  const r = await collie(sheep.port, ['vdi', 'check', '-e', 'rb']);
  assert.equal(r.code, 1);
  assert.match(r.stdout.toString(), new RegExp(`oid ${oidHex(vidToDataOid(vid, idx))} is missing\\.\\nrb lost 1 object\\(s\\)\\.`));
  const repair = await collie(sheep.port, ['vdi', 'check', 'rb']);
  assert.equal(repair.code, 1, 'with one node there is no replica to repair from');
  assert.match(repair.stderr, /no replica left/);
});

test('an incremental backup of 10 MiB of changes is ~10 MiB and restores a copy at s1 to exactly s2', async () => {
  await ok(['vdi', 'create', 'src', '1G']);
  const rnd = crypto.randomBytes(32 * MB);
  const initial = path.join(work, 'initial.raw');
  await fs.writeFile(initial, rnd);
  await ok(['vdi', 'write', 'src', '0', '32M'], { file: initial });
  await ok(['vdi', 'write', 'src', '512M', '8M'], crypto.randomBytes(8 * MB));
  await ok(['vdi', 'snapshot', '-s', 's1', 'src']);
  for (let k = 0; k < 10; k++) await ok(['vdi', 'write', 'src', String(k * 37 * MB + 12345), '1M'], crypto.randomBytes(MB));
  await ok(['vdi', 'snapshot', '-s', 's2', 'src']);

  const inc = path.join(work, 'inc.bin');
  const full = path.join(work, 'full.bin');
  await run('/bin/sh', ['-c', `"${process.execPath}" "${COLLIE}" vdi backup -F s1 -s s2 src -p ${sheep.port} > "${inc}"`]);
  await run('/bin/sh', ['-c', `"${process.execPath}" "${COLLIE}" vdi backup -s s1 src -p ${sheep.port} > "${full}"`]);
  const incSize = (await fs.stat(inc)).size;
  assert.ok(incSize >= 10 * MB && incSize < 10.5 * MB, `incremental stream is ${incSize} bytes`);

  // a copy at s1: the full backup restored into a new VDI, then snapshotted as s1
  await ok(['vdi', 'restore', 'dst'], { file: full });
  await ok(['vdi', 'snapshot', '-s', 's1', 'dst']);
  await ok(['vdi', 'restore', '-s', 's1', 'dst'], { file: inc });
  const want = await collieHash(sheep.port, ['vdi', 'read', '-s', 's2', 'src']);
  const got = await collieHash(sheep.port, ['vdi', 'read', 'dst']);
  assert.equal(got.length, 1 << 30);
  assert.equal(got.sha256, want.sha256, 'restored VDI is identical to s2');
});

test('a corrupt or truncated stream, or the wrong base, is refused and nothing changes', async () => {
  const inc = path.join(work, 'inc.bin');
  const data = await fs.readFile(inc);
  const corrupt = Buffer.from(data);
  corrupt[Math.floor(corrupt.length / 2)] ^= 0x55;
  const before = await collieHash(sheep.port, ['vdi', 'read', 'dst', '0', '64M']);
  const listBefore = await ok(['vdi', 'list', '-r', 'dst']);
  const bad = await collie(sheep.port, ['vdi', 'restore', '-s', 's1', 'dst'], corrupt);
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /Invalid backup stream: corrupt stream/);
  const trunc = await collie(sheep.port, ['vdi', 'restore', '-s', 's1', 'dst'], data.subarray(0, data.length - 10));
  assert.equal(trunc.code, 1);
  assert.match(trunc.stderr, /truncated/);
  // wrong base: a VDI whose s1 holds other data
  await ok(['vdi', 'create', 'other', '1G']);
  await ok(['vdi', 'write', 'other', '0', '1M'], crypto.randomBytes(MB));
  await ok(['vdi', 'snapshot', '-s', 's1', 'other']);
  const wrong = await collie(sheep.port, ['vdi', 'restore', '-s', 's1', 'other'], data);
  assert.equal(wrong.code, 1);
  assert.match(wrong.stderr, /does not apply to other snapshot s1/);
  assert.equal((await collieHash(sheep.port, ['vdi', 'read', 'dst', '0', '64M'])).sha256, before.sha256);
  assert.equal(await ok(['vdi', 'list', '-r', 'dst']), listBefore);
});
