// collie vdi track and vdi object dump-inode: where an object lived at each epoch (checked against the
// object files the sheep actually held at each epoch, on 3, then 4, then 3 sheep), and the inode's
// header fields as created, snapshotted and cloned.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { SheepProcess, freePort, tempDir, collie, stopSequencer, control } from '../helpers/sheep.js';
import { Op } from '../../lib/proto.js';
import { oidHex, vidToDataOid, vidToVdiOid } from '../../lib/oid.js';
import type { RecoveryStatus, StatClusterReply } from '../../lib/admin.js';

const MB = 1 << 20;
let base: string;
const sheep: SheepProcess[] = [];
let vid = 0;

async function add(zone: number): Promise<void> {
  sheep[zone] = await new SheepProcess(path.join(base, `s${zone}`), await freePort(), ['-c', `local:${base}/group`, '-z', String(zone)]).start();
}

const live = () => sheep.filter((s) => s?.alive);

async function vidOf(name: string, tag = ''): Promise<number> {
  const c = await live()[0].client();
  try { return await c.getVdiInfo(name, tag); } finally { c.close(); }
}

/** The live sheep holding `oid` in obj/, as "host:port", sorted. */
async function holders(oid: bigint): Promise<string[]> {
  const out: string[] = [];
  for (const s of live()) if (await fs.access(path.join(s.dir, 'obj', oidHex(oid))).then(() => true, () => false)) out.push(`127.0.0.1:${s.port}`);
  return out.sort();
}

/** Waits until every live sheep runs one epoch with all of them, recovery is done and each object has `copies` holders. */
async function settled(oids: bigint[], copies: number): Promise<number> {
  const deadline = Date.now() + 60_000;
  for (;;) {
    const st = await Promise.all(live().map((s) => control<StatClusterReply>(s, Op.STAT_CLUSTER)));
    const rec = await Promise.all(live().map((s) => control<RecoveryStatus>(s, Op.STAT_RECOVERY)));
    const epoch = st[0].epoch;
    const done = st.every((x) => x.epoch === epoch && x.nodes === live().length) && rec.every((r) => r.state === 'idle' && (r.epoch === epoch || epoch === 1)); // the format's epoch needs no recovery
    if (done && (await Promise.all(oids.map(holders))).every((h) => h.length === copies)) return epoch;
    if (Date.now() > deadline) throw new Error(`the cluster did not settle: ${JSON.stringify(rec)}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** `vdi track` output: epoch -> the nodes listed for it, sorted, in the order printed. */
function parseTrack(text: string): Array<[number, string[]]> {
  const blocks: Array<[number, string[]]> = [];
  for (const m of text.matchAll(/\nobj [0-9a-f]{16} locations at epoch (\d+), copies = 2\n-{51}\n((?:[^\n]+\n)*)/g)) {
    blocks.push([Number(m[1]), m[2].trim().split('\n').sort()]);
  }
  return blocks;
}

before(async () => {
  base = await tempDir('vdi-inspect-');
  for (let z = 0; z < 3; z++) await add(z);
  assert.equal((await collie(sheep[0].port, ['cluster', 'format', '--copies=2'])).code, 0);
  assert.equal((await collie(sheep[0].port, ['vdi', 'create', 'disk', '8M'])).code, 0);
  assert.equal((await collie(sheep[0].port, ['vdi', 'write', 'disk'], crypto.randomBytes(8 * MB))).code, 0);
  vid = await vidOf('disk');
});

after(async () => {
  for (const s of sheep) await s?.stop();
  await stopSequencer(`${base}/group`);
  if (!process.env.KEEP_TEST_DIRS) await fs.rm(base, { recursive: true, force: true });
});

test('vdi track shows one block per epoch with the nodes that held the object then (3 sheep, a 4th added, one killed)', { timeout: 180_000 }, async () => {
  const inode = vidToVdiOid(vid);
  const data0 = vidToDataOid(vid, 0);
  const seen = new Map<number, { inode: string[]; data0: string[] }>();
  const record = async () => {
    const epoch = await settled([inode, data0], 2);
    seen.set(epoch, { inode: await holders(inode), data0: await holders(data0) });
  };
  await record();
  await add(3);
  await record();
  await sheep[1].kill9();
  await record();
  assert.deepEqual([...seen.keys()], [1, 2, 3]);

  const t = await collie(sheep[0].port, ['vdi', 'track', 'disk']);
  assert.equal(t.code, 0, t.stderr);
  const text = t.stdout.toString();
  assert.ok(text.startsWith(`Tracking the inode object 0x${vid.toString(16)} with 3 nodes\n`), text);
  assert.deepEqual(parseTrack(text), [3, 2, 1].map((e) => [e, seen.get(e)!.inode]));

  const d = await collie(sheep[2].port, ['vdi', 'track', '-i', '0', 'disk']);
  assert.equal(d.code, 0, d.stderr);
  assert.ok(d.stdout.toString().startsWith(`Tracking the object ${oidHex(data0)} (the inode vid 0x${vid.toString(16)} idx 0) with 3 nodes\n`));
  assert.deepEqual(parseTrack(d.stdout.toString()), [3, 2, 1].map((e) => [e, seen.get(e)!.data0]));

  // the same object named by its id
  const o = await collie(sheep[3].port, ['vdi', 'track', '-o', oidHex(data0), 'disk']);
  assert.equal(o.code, 0, o.stderr);
  assert.deepEqual(parseTrack(o.stdout.toString()), parseTrack(d.stdout.toString()));
});

test('vdi track refuses an index past the largest VDI, an index with no object and an id that is not hex', async () => {
  const far = await collie(sheep[0].port, ['vdi', 'track', '-i', String(1 << 20), 'disk']);
  assert.equal(far.code, 1);
  assert.equal(far.stdout.toString(), 'The offset is too large!\n');
  const hole = await collie(sheep[0].port, ['vdi', 'track', '-i', '5', 'disk']);
  assert.equal(hole.code, 1);
  assert.equal(hole.stderr, `The inode object 0x${vid.toString(16)} idx 5 is not allocated\n`);
  const bad = await collie(sheep[0].port, ['vdi', 'track', '-o', 'xyz', 'disk']);
  assert.equal(bad.code, 1);
  assert.equal(bad.stderr, 'object id must be a hex integer\n');
});

test('vdi track and dump-inode of a VDI that does not exist say so in one sentence', async () => {
  for (const args of [['vdi', 'track', 'no-such-vdi'], ['vdi', 'object', 'dump-inode', 'no-such-vdi']]) {
    const r = await collie(sheep[0].port, args);
    assert.equal(r.code, 1);
    assert.equal(r.stderr, 'Failed to open VDI no-such-vdi (snapshot id: 0 snapshot tag: ): No VDI found\n');
  }
});

/** dump-inode's "field: value" lines (the header, up to data_vdi_id) and its data map entries. */
async function dump(name: string, snap?: string): Promise<{ f: Map<string, string>; map: string[] }> {
  const r = await collie(sheep[0].port, ['vdi', 'object', 'dump-inode', ...(snap ? ['-s', snap] : []), name]);
  assert.equal(r.code, 0, r.stderr);
  const [head, map] = r.stdout.toString().split('data_vdi_id:\n');
  const f = new Map(head.trimEnd().split('\n').map((l) => [l.slice(0, l.indexOf(':')), l.slice(l.indexOf(':') + 2)]));
  return { f, map: map.trimEnd() ? map.trimEnd().split('\n') : [] };
}

test('dump-inode prints the header fields of a VDI as it was created, and its mapped objects', async () => {
  assert.equal((await collie(sheep[0].port, ['vdi', 'create', '-c', '3', 'img', '12M'])).code, 0);
  assert.equal((await collie(sheep[0].port, ['vdi', 'write', 'img', '8M', '1M'], crypto.randomBytes(MB))).code, 0);
  const img = (await vidOf('img')).toString(16);
  const { f, map } = await dump('img');
  assert.deepEqual([...f.keys()], ['name', 'tag', 'create_time', 'snap_ctime', 'vm_clock_nsec', 'vdi_size', 'vm_state_size', 'copy_policy',
    'store_policy', 'nr_copies', 'block_size_shift', 'snap_id', 'vdi_id', 'parent_vdi_id', 'btree_counter']);
  assert.deepEqual(Object.fromEntries([...f].filter(([k]) => k !== 'create_time')), {
    name: 'img', tag: '', snap_ctime: '0', vm_clock_nsec: '0', vdi_size: String(12 * MB), vm_state_size: '0', copy_policy: '0',
    store_policy: '0', nr_copies: '3', block_size_shift: '22', snap_id: '1', vdi_id: img, parent_vdi_id: '0', btree_counter: '0',
  });
  // seconds since 1970 in the high 32 bits
  const created = Number(BigInt(`0x${f.get('create_time')}`) >> 32n);
  assert.ok(Math.abs(created - Date.now() / 1000) < 600, `create_time ${f.get('create_time')}`);
  assert.deepEqual(map, [`2: ${img}`]);
});

test('after a snapshot, dump-inode shows the snapshot tagged and frozen, and the working VDI as its child', async () => {
  assert.equal((await collie(sheep[0].port, ['vdi', 'snapshot', '-s', 'v1', 'img'])).code, 0);
  const snap = (await vidOf('img', 'v1')).toString(16);
  const work = (await vidOf('img')).toString(16);
  const s = await dump('img', 'v1');
  assert.equal(s.f.get('tag'), 'v1');
  assert.equal(s.f.get('snap_id'), '1');
  assert.equal(s.f.get('vdi_id'), snap);
  assert.notEqual(s.f.get('snap_ctime'), '0');
  const w = await dump('img');
  assert.equal(w.f.get('snap_id'), '2');
  assert.equal(w.f.get('vdi_id'), work);
  assert.equal(w.f.get('parent_vdi_id'), snap);
  assert.equal(w.f.get('snap_ctime'), '0');
  assert.deepEqual(w.map, [`2: ${snap}`]); // shares the snapshot's object until it writes
});

test('a clone\'s dump-inode names the snapshot it was cloned from as its parent', async () => {
  assert.equal((await collie(sheep[0].port, ['vdi', 'clone', '-s', 'v1', 'img', 'cl'])).code, 0);
  const snap = (await vidOf('img', 'v1')).toString(16);
  const c = await dump('cl');
  assert.equal(c.f.get('name'), 'cl');
  assert.equal(c.f.get('parent_vdi_id'), snap);
  assert.equal(c.f.get('nr_copies'), '3');
  assert.equal(c.f.get('vdi_size'), String(12 * MB));
});
