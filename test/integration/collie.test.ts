// collie against a real sheep: the round trip an operator does, and the restart promise.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { SheepProcess, freePort, tempDir, collie, destroySheep } from '../helpers/sheep.js';

const MB = 1 << 20;
let sheep: SheepProcess;
let work: string;
let random: string;
let randomSum: string;

before(async () => {
  work = await tempDir('collie-test-');
  random = path.join(work, 'random.raw');
  const data = crypto.randomBytes(200 * MB);
  await fs.writeFile(random, data);
  randomSum = crypto.createHash('sha256').update(data).digest('hex');
  sheep = await new SheepProcess(path.join(work, 'store'), await freePort()).start();
});
after(async () => {
  if (sheep) await destroySheep(sheep);
  await fs.rm(work, { recursive: true, force: true });
});

const sha = (b: Buffer) => crypto.createHash('sha256').update(b).digest('hex');

async function objFiles(): Promise<string[]> {
  return (await fs.readdir(path.join(sheep.dir, 'obj'))).filter((n) => /^[0-9a-f]{16}$/.test(n));
}

test('an unformatted cluster says so, and refuses VDI creation', async () => {
  const info = await collie(sheep.port, ['cluster', 'info']);
  assert.equal(info.code, 0);
  assert.equal(info.stdout.toString(), 'Cluster status: Waiting for cluster to be formatted\n\n');
  const cr = await collie(sheep.port, ['vdi', 'create', 'early', '1G']);
  assert.equal(cr.code, 1);
  assert.match(cr.stderr, /Failed to create VDI early: Waiting for cluster to be formatted/);
});

test('cluster format sets copies and starts epoch 1', async () => {
  const f = await collie(sheep.port, ['cluster', 'format', '--copies=1']);
  assert.equal(f.code, 0, f.stderr);
  assert.equal(f.stdout.toString(), 'using backend plain store\n');
  const info = (await collie(sheep.port, ['cluster', 'info'])).stdout.toString();
  assert.match(info, /^Cluster status: running, auto-recovery enabled\n\nCluster created at .+\n\nEpoch Time {11}Version \[Host:Port:V-Nodes,,,\]\n\d{4}-\d\d-\d\d \d\d:\d\d:\d\d {6}1 \[127\.0\.0\.1:\d+:64\]\n$/);
  const nl = (await collie(sheep.port, ['node', 'list', '-r'])).stdout.toString();
  assert.equal(nl, `0 127.0.0.1:${sheep.port} 64 16777343\n`, 'the default zone is the address, as in Sheepdog');
});

test('collie round trip: 200 MiB of random data written to a 256 MiB VDI reads back identical', async () => {
  assert.equal((await collie(sheep.port, ['vdi', 'create', 'disk', '256M'])).code, 0);
  const w = await collie(sheep.port, ['vdi', 'write', 'disk'], { file: random });
  assert.equal(w.code, 0, w.stderr);
  const r = await collie(sheep.port, ['vdi', 'read', 'disk', '0', '200M']);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout.length, 200 * MB);
  assert.equal(sha(r.stdout), randomSum);
  // the unwritten tail reads as zeros
  const tail = await collie(sheep.port, ['vdi', 'read', 'disk', '200M', '56M']);
  assert.deepEqual(tail.stdout, Buffer.alloc(56 * MB));
});

test('a VDI of 64 MiB objects (-z 26) is written and read back whole: requests stay within what sheep accepts', async () => {
  assert.equal((await collie(sheep.port, ['vdi', 'create', '-z', '26', 'big-objects', '192M'])).code, 0);
  const data = (await fs.readFile(random)).subarray(0, 150 * MB);
  const w = await collie(sheep.port, ['vdi', 'write', 'big-objects'], data);
  assert.equal(w.code, 0, w.stderr);
  const r = await collie(sheep.port, ['vdi', 'read', 'big-objects', '0', '150M']);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(sha(r.stdout), sha(data));
  assert.equal((await collie(sheep.port, ['vdi', 'delete', 'big-objects'])).code, 0);
});

test('benchmark io overwrites the objects of a preallocated VDI with zeros and reports the rate; a VDI with holes is refused', async () => {
  assert.equal((await collie(sheep.port, ['vdi', 'create', '-P', 'bench', '16M'])).code, 0);
  assert.equal((await collie(sheep.port, ['vdi', 'write', 'bench', '0', '1M'], crypto.randomBytes(MB))).code, 0);
  const b = await collie(sheep.port, ['benchmark', 'io', 'bench', '-f', '-t', '12', '-w', 'fixed', '-n', '3']);
  assert.equal(b.code, 0, b.stderr);
  assert.match(b.stdout.toString(), /^12 writes of 4\.0 MB \(48 MB\) in [\d.]+ s with 3 in flight: [\d.]+ [KMG]B\/s, [\d.]+ writes\/s, latency p50 [\d.]+ ms, p99 [\d.]+ ms\n$/);
  const raw = (await collie(sheep.port, ['benchmark', 'io', 'bench', '-f', '-t', '4', '-r'])).stdout.toString().trim().split(' ');
  assert.equal(raw[0], '4');
  assert.equal(raw[1], String(16 * MB));
  const r = await collie(sheep.port, ['vdi', 'read', 'bench', '0', '16M']);
  assert.ok(r.stdout.equals(Buffer.alloc(16 * MB)), 'the benchmark erased the data, as it warns');
  assert.equal((await collie(sheep.port, ['vdi', 'create', 'sparse', '16M'])).code, 0);
  const h = await collie(sheep.port, ['benchmark', 'io', 'sparse', '-f']);
  assert.equal(h.code, 1);
  assert.match(h.stderr, /VDI sparse has unallocated data/);
  const w = await collie(sheep.port, ['benchmark', 'io', 'bench']);
  assert.notEqual(w.code, 0, 'without -f and without a terminal it refuses');
  assert.match(w.stderr, /not confirmed; nothing written/);
  for (const n of ['bench', 'sparse']) assert.equal((await collie(sheep.port, ['vdi', 'delete', n])).code, 0);
});

test('vdi list shows size, the used space and the VDI id', async () => {
  const l = (await collie(sheep.port, ['vdi', 'list'])).stdout.toString().split('\n');
  assert.equal(l[0], '  Name        Id    Size    Used  Shared    Creation time   VDI id  Copies  Tag   Block Size Shift');
  assert.match(l[1], /^  disk         0  256 MB  200 MB  0\.0 MB \d{4}-\d\d-\d\d \d\d:\d\d  [ 0-9a-f]{7} {6}1 {16}22$/);
  const raw = (await collie(sheep.port, ['vdi', 'list', '-r', 'disk'])).stdout.toString();
  assert.match(raw, new RegExp(`^= disk 0 ${256 * MB} ${200 * MB} 0 \\d+ [0-9a-f]+ 1  22\\n$`));
});

test('vdi object shows where an object lives and the map', async () => {
  const loc = (await collie(sheep.port, ['vdi', 'object', 'location', 'disk', '-i', '3'])).stdout.toString();
  assert.match(loc, /^Looking for the object [0-9a-f]{8}00000003 \(vid 0x[0-9a-f]+ idx 3, 1 copies\) with 1 nodes\n\n127\.0\.0\.1:\d+ has the object\n/);
  const short = (await collie(sheep.port, ['vdi', 'object', 'disk', '-i', '3'])).stdout.toString();
  assert.equal(short, loc, 'location is the default subcommand');
  const unalloc = (await collie(sheep.port, ['vdi', 'object', 'location', 'disk', '-i', '60'])).stdout.toString();
  assert.match(unalloc, /idx 60 is not allocated/);
  const map = (await collie(sheep.port, ['vdi', 'object', 'map', 'disk'])).stdout.toString().split('\n');
  assert.equal(map[0], 'Index       VID');
  assert.equal(map.filter((x) => /^\d{8} /.test(x)).length, 50);
});

test('sheep restarted on its store keeps every VDI and its data without a new format', async () => {
  await sheep.stop();
  await sheep.start();
  const info = (await collie(sheep.port, ['cluster', 'info'])).stdout.toString();
  assert.match(info, /running/);
  const r = await collie(sheep.port, ['vdi', 'read', 'disk', '0', '200M']);
  assert.equal(sha(r.stdout), randomSum);
});

test('sheep killed with SIGKILL comes back with every acknowledged write', async () => {
  const w = await collie(sheep.port, ['vdi', 'write', 'disk', '250M'], Buffer.alloc(MB, 0x5a));
  assert.equal(w.code, 0);
  await sheep.kill9();
  await sheep.start();
  const r = await collie(sheep.port, ['vdi', 'read', 'disk', '250M', '1M']);
  assert.deepEqual(r.stdout, Buffer.alloc(MB, 0x5a));
});

test('vdi delete frees the space of its objects', async () => {
  const before = await objFiles();
  assert.ok(before.length >= 51);
  const d = await collie(sheep.port, ['vdi', 'delete', 'disk']);
  assert.equal(d.code, 0, d.stderr);
  const after = await objFiles();
  assert.deepEqual(after.filter((n) => !n.startsWith('8')), [], 'only inode objects remain');
  assert.equal((await collie(sheep.port, ['vdi', 'list', '-r'])).stdout.toString(), '');
  const again = await collie(sheep.port, ['vdi', 'delete', 'disk']);
  assert.equal(again.code, 1);
  assert.match(again.stderr, /No VDI found/);
});

test('usage errors exit 64 with a reason', async () => {
  const bad = await collie(sheep.port, ['vdi', 'create', 'x', '1X']);
  assert.equal(bad.code, 64);
  assert.match(bad.stderr, /Invalid size '1X'/);
  const missing = await collie(sheep.port, ['vdi', 'create', 'x']);
  assert.equal(missing.code, 64);
  const unknown = await collie(sheep.port, ['vdi', 'frobnicate']);
  assert.equal(unknown.code, 64);
});

test('node info reports the disk and the virtual size of the VDIs', async () => {
  await collie(sheep.port, ['vdi', 'create', 'sized', '1G']);
  const raw = (await collie(sheep.port, ['node', 'info', '-r'])).stdout.toString().trim().split('\n');
  assert.match(raw[0], /^0 \d+ \d+ \d+ \d+%$/);
  assert.match(raw[1], new RegExp(`^Total \\d+ \\d+ \\d+ \\d+% ${2 ** 30}$`));
});

test('a second sheep on the same store is refused with a clear message', async () => {
  const other = new SheepProcess(sheep.dir, await freePort());
  await assert.rejects(other.start(), /already used by a running sheep/);
});
