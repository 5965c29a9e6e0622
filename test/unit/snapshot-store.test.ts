// The local store of `collie cluster snapshot`: objects named by their sha256 and stored once, reads
// that check the name, an index that only ever shows finished tags, and the save lock.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { SnapshotStore, SnapshotStoreError, sha256, type Manifest } from '../../lib/snapshot-store.js';
import { withAncestors } from '../../collie/snapshot-load.js';

const dirs: string[] = [];
async function fresh(): Promise<SnapshotStore> {
  const base = await fs.mkdtemp(path.join(os.tmpdir(), 'snapstore-'));
  dirs.push(base);
  return SnapshotStore.create(path.join(base, 'store'));
}
after(async () => {
  for (const d of dirs) await fs.rm(d, { recursive: true, force: true });
});

const reader = (b: Buffer) => async (off: number, len: number) => b.subarray(off, off + len);

test('an object is stored under the sha256 of its content, and the same content a second time adds nothing', async () => {
  const s = await fresh();
  const data = crypto.randomBytes(100_000);
  const first = await s.putObject(data.length, reader(data));
  assert.deepEqual(first, { hash: sha256(data), added: true });
  assert.ok((await fs.readFile(s.objectPath(first.hash))).equals(data));
  assert.deepEqual(await s.putObject(data.length, reader(data)), { hash: first.hash, added: false });
});

test('an object larger than 32 MiB streams through a temporary file and ends up under its sha256 with no leftovers', async () => {
  const s = await fresh();
  const data = crypto.randomBytes(33 * 1024 * 1024);
  const r = await s.putObject(data.length, reader(data));
  assert.equal(r.hash, sha256(data));
  assert.equal(await s.verifyObject(r.hash), data.length);
  assert.ok((await s.readRange(r.hash, 5_000_000, 10)).equals(data.subarray(5_000_000, 5_000_010)));
  const leftovers = (await fs.readdir(path.join(s.dir, 'objects'))).filter((n) => n.startsWith('.tmp'));
  assert.deepEqual(leftovers, []);
});

test('reading a changed or missing object fails naming its file', async () => {
  const s = await fresh();
  const data = Buffer.from('block content');
  const { hash } = await s.putObject(data.length, reader(data));
  await fs.writeFile(s.objectPath(hash), 'block kontent');
  await assert.rejects(s.readObject(hash), (e: Error) => e instanceof SnapshotStoreError && e.message.includes(s.objectPath(hash)) && /corrupted/.test(e.message));
  await assert.rejects(s.verifyObject(hash), /corrupted/);
  await fs.rm(s.objectPath(hash));
  await assert.rejects(s.readObject(hash), (e: Error) => e.message === `object ${s.objectPath(hash)} is missing`);
});

test('a tag exists only once its index entry is written, and a manifest is checked against its name', async () => {
  const s = await fresh();
  const m: Manifest = { format: 'collie-cluster-snapshot', version: 1, tag: 'a', time: 1, cluster: { copies: 2, blockSizeShift: 22, lock: false }, vdis: [] };
  const hash = await s.writeManifest(m);
  assert.deepEqual(await s.readIndex(), []); // a manifest alone is no tag
  const e = await s.appendIndex({ tag: 'a', time: 1, manifest: hash, vdis: 0, objects: 0, bytes: 0, addedObjects: 0, addedBytes: 0 });
  assert.equal(e.idx, 1);
  assert.equal((await s.find('a'))?.manifest, hash);
  assert.equal((await s.find('1'))?.tag, 'a');
  assert.deepEqual(await s.readManifest(hash), m);
  const file = path.join(s.dir, 'manifests', `${hash}.json`);
  await fs.writeFile(file, JSON.stringify({ ...m, tag: 'b' }));
  await assert.rejects(s.readManifest(hash), /is corrupted/);
});

test('a directory holding another program\'s index.json is refused', async () => {
  const s = await fresh();
  await fs.writeFile(path.join(s.dir, 'index.json'), '{"something":"else"}');
  await assert.rejects(SnapshotStore.create(s.dir), /is not a collie cluster snapshot store/);
});

test('a second save is locked out while one runs; a lock left by a dead process is taken over', async () => {
  const s = await fresh();
  await fs.writeFile(path.join(s.dir, 'lock'), `${process.ppid}\n`); // a live process that is not us
  await assert.rejects(s.lock(), /another save into .* is running/);
  await fs.writeFile(path.join(s.dir, 'lock'), '2147483646\n'); // no such pid
  const release = await s.lock();
  assert.equal((await fs.readFile(path.join(s.dir, 'lock'), 'utf8')).trim(), String(process.pid));
  await release();
  await assert.rejects(fs.stat(path.join(s.dir, 'lock')));
});

test('choosing VDIs by name takes every VDI of those names and the snapshots they descend from, across names', () => {
  const all = [
    { name: 'a', id: 1, parent: 0 }, { name: 'a', id: 2, parent: 1 }, { name: 'a', id: 3, parent: 2 },
    { name: 'b', id: 4, parent: 1 }, { name: 'c', id: 5, parent: 0 },
  ];
  const r = withAncestors(all, ['b', 'x'], (t) => t);
  assert.deepEqual(r.chosen.map((t) => t.id), [1, 4]);
  assert.deepEqual(r.missing, ['x']);
  assert.equal(withAncestors(all, [], (t) => t).chosen.length, 5);
});
