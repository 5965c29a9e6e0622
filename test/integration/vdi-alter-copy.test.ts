// collie vdi alter-copy on 4 sheep in 4 zones: the copies of every object of the VDI, counted as files in
// each sheep's obj/, follow the new count as soon as the command returns, and the data reads back the
// same. Refusals come with the original's reasons.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { SheepProcess, freePort, tempDir, collie, collieHash, stopSequencer } from '../helpers/sheep.js';
import { oidHex, oidToVid } from '../../lib/oid.js';

const MB = 1 << 20;
let base: string;
const sheep: SheepProcess[] = [];
let data: Buffer;
let vid = 0;

before(async () => {
  base = await tempDir('alter-copy-');
  for (let z = 0; z < 4; z++) {
    sheep.push(await new SheepProcess(path.join(base, `s${z}`), await freePort(), ['-c', `local:${base}/group`, '-z', String(z)]).start());
  }
  assert.equal((await collie(sheep[0].port, ['cluster', 'format', '--copies=2'])).code, 0);
  data = crypto.randomBytes(20 * MB);
  assert.equal((await collie(sheep[0].port, ['vdi', 'create', 'disk', '20M'])).code, 0);
  assert.equal((await collie(sheep[0].port, ['vdi', 'write', 'disk'], data)).code, 0);
  const c = await sheep[0].client();
  try {
    vid = await c.getVdiInfo('disk');
  } finally {
    c.close();
  }
});

after(async () => {
  for (const s of sheep) await s.stop();
  await stopSequencer(`${base}/group`);
  if (!process.env.KEEP_TEST_DIRS) await fs.rm(base, { recursive: true, force: true });
});

/** For every object of VDI `vid` found in any store: how many sheep hold it in obj/. */
async function copiesOnDisk(v: number): Promise<Map<string, number>> {
  const count = new Map<string, number>();
  for (const s of sheep) {
    for (const f of await fs.readdir(path.join(s.dir, 'obj'))) {
      if (!/^[0-9a-f]{16}$/.test(f) || oidToVid(BigInt(`0x${f}`)) !== v) continue;
      count.set(f, (count.get(f) ?? 0) + 1);
    }
  }
  return count;
}

/** The inode and the 5 data objects of `disk`, each with `n` copies. */
async function assertCopies(n: number): Promise<void> {
  const count = await copiesOnDisk(vid);
  assert.equal(count.size, 6, `objects of disk: ${[...count.keys()].join(' ')}`);
  assert.ok(count.has(oidHex((1n << 63n) | (BigInt(vid) << 32n))), 'the inode is among them');
  for (const [oid, k] of count) assert.equal(k, n, `${oid} has ${k} copies`);
}

async function readsBack(): Promise<void> {
  const r = await collieHash(sheep[1].port, ['vdi', 'read', 'disk']);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.sha256, crypto.createHash('sha256').update(data).digest('hex'));
}

test('alter-copy 2 → 3 → 2: every object has that many copies on disk when the command returns, and the data reads back the same', { timeout: 120_000 }, async () => {
  await assertCopies(2);

  const up = await collie(sheep[0].port, ['vdi', 'alter-copy', '-c', '3', '-f', 'disk']);
  assert.equal(up.code, 0, up.stderr);
  assert.equal(up.stdout.toString(), "disk's redundancy level is set to 3, the old one was 2.\n6 objects: 6 copies made, 0 removed\n");
  await assertCopies(3);
  await readsBack();
  assert.match((await collie(sheep[2].port, ['vdi', 'object', 'dump-inode', 'disk'])).stdout.toString(), /^nr_copies: 3$/m);

  const down = await collie(sheep[3].port, ['vdi', 'alter-copy', '-c', '2', '-f', 'disk']);
  assert.equal(down.code, 0, down.stderr);
  assert.equal(down.stdout.toString(), "disk's redundancy level is set to 2, the old one was 3.\n6 objects: 0 copies made, 6 removed\n");
  await assertCopies(2);
  await readsBack();
  assert.match((await collie(sheep[0].port, ['vdi', 'list', '-r', 'disk'])).stdout.toString(), /^= disk 0 20971520 20971520 0 \d+ [0-9a-f]+ 2  22$/m);
});

test('a write after alter-copy reaches every copy under the new count', { timeout: 60_000 }, async () => {
  assert.equal((await collie(sheep[0].port, ['vdi', 'alter-copy', '-c', '4', '-f', 'disk'])).code, 0);
  const patch = crypto.randomBytes(MB);
  assert.equal((await collie(sheep[2].port, ['vdi', 'write', 'disk', '5M', '1M'], patch)).code, 0);
  patch.copy(data, 5 * MB);
  await assertCopies(4);
  // every copy of the object written holds the write
  const oid = oidHex((BigInt(vid) << 32n) | 1n);
  const digests = await Promise.all(sheep.map(async (s) => crypto.createHash('sha256').update(await fs.readFile(path.join(s.dir, 'obj', oid))).digest('hex')));
  assert.equal(new Set(digests).size, 1);
  await readsBack();
  assert.equal((await collie(sheep[0].port, ['vdi', 'alter-copy', '-c', '2', '-f', 'disk'])).code, 0);
  await assertCopies(2);
});

test('alter-copy refuses more copies than zones, and says why', async () => {
  const r = await collie(sheep[0].port, ['vdi', 'alter-copy', '-c', '5', '-f', 'disk']);
  assert.equal(r.code, 1);
  assert.equal(r.stderr, 'Number of copies (5) is larger than number of zones (4): each copy needs a zone of its own\n');
  await assertCopies(2);
});

test('alter-copy refuses 0 copies and erasure-coded policies as usage errors', async () => {
  const zero = await collie(sheep[0].port, ['vdi', 'alter-copy', '-c', '0', '-f', 'disk']);
  assert.equal(zero.code, 64);
  assert.equal(zero.stderr, "Invalid number of copies '0': an integer 1..31\n");
  const ec = await collie(sheep[0].port, ['vdi', 'alter-copy', '-c', '2:1', '-f', 'disk']);
  assert.equal(ec.code, 64);
  assert.equal(ec.stderr, 'Changing redundancy level of erasure coded vdi is not supported yet.\n');
});

test('alter-copy to the count the VDI already has changes nothing and says so', async () => {
  const r = await collie(sheep[0].port, ['vdi', 'alter-copy', '-c', '2', '-f', 'disk']);
  assert.equal(r.code, 1);
  assert.equal(r.stderr, "disk's redundancy level is already set to 2, nothing changed.\n");
});

test('alter-copy refuses a VDI with snapshots (it shares objects), as the original does', async () => {
  assert.equal((await collie(sheep[0].port, ['vdi', 'create', 'fam', '4M'])).code, 0);
  assert.equal((await collie(sheep[0].port, ['vdi', 'snapshot', '-s', 'before', 'fam'])).code, 0);
  const r = await collie(sheep[0].port, ['vdi', 'alter-copy', '-c', '3', '-f', 'fam']);
  assert.equal(r.code, 1);
  assert.equal(r.stderr, 'Only standalone vdi supports changing redundancy level.\nPlease clone fam with -n (--no-share) option first.\n');
});

test('the sheep refuses the same requests on its own (a client that skips the checks)', async () => {
  const { Op, Res, SdError } = await import('../../lib/proto.js');
  const c = await sheep[1].client();
  try {
    for (const [name, copies, why] of [['fam', 3, 'a VDI with a snapshot'], ['disk', 5, 'more copies than zones'], ['disk', 0, 'no copies'], ['disk', 2, 'the same count']] as const) {
      await assert.rejects(c.control(Op.ALTER_VDI_COPY, { name, copies }), (e) => e instanceof SdError && e.result === Res.INVALID_PARMS, why);
    }
    await assert.rejects(c.control(Op.ALTER_VDI_COPY, { name: 'no-such-vdi', copies: 3 }), (e) => e instanceof SdError && e.result === Res.NO_VDI);
  } finally {
    c.close();
  }
  await assertCopies(2);
});

test('alter-copy of a VDI that does not exist says so in one sentence', async () => {
  const r = await collie(sheep[0].port, ['vdi', 'alter-copy', '-c', '3', '-f', 'no-such-vdi']);
  assert.equal(r.code, 1);
  assert.equal(r.stderr, 'Failed to open VDI no-such-vdi (snapshot id: 0 snapshot tag: ): No VDI found\n');
});

test('alter-copy without -f and without a terminal asks, takes no for an answer and changes nothing', async () => {
  const r = await collie(sheep[0].port, ['vdi', 'alter-copy', '-c', '3', 'disk']);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /not changed \(use -f to skip the question\)/);
  await assertCopies(2);
});
