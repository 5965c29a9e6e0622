// Erasure-coded VDIs on 6 sheep in 6 zones (formatted --copies=4:2): data written through the
// port-7000 protocol QEMU's driver speaks and through NBD reads back identical with any 2 sheep
// killed; recovery puts back every strip of every object; vdi check repairs a corrupted strip;
// snapshots, clones, rollback and backup/restore work; copies=3 VDIs live beside 4:2 ones; bad
// codes are refused with the reason. One cluster for the whole file.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { SheepProcess, freePort, tempDir, collie, control, run, stopSequencer } from '../helpers/sheep.js';
import { SheepClient } from '../../lib/client.js';
import { OpenVdi } from '../../lib/vdi-io.js';
import { Op } from '../../lib/proto.js';
import { oidHex, oidToVid, vidToDataOid, vidToVdiOid } from '../../lib/oid.js';
import { decodeInodeHeader, SD_INODE_HEADER_SIZE } from '../../lib/inode.js';
import type { RecoveryStatus, StatClusterReply } from '../../lib/admin.js';

const MB = 1 << 20;
const N = 6;
let base: string;
const sheep: SheepProcess[] = [];
const nbdPorts: number[] = [];
/** what each VDI must read as */
const expected = new Map<string, Buffer>();

async function withClient<T>(s: SheepProcess, fn: (c: SheepClient) => Promise<T>): Promise<T> {
  const c = await s.client();
  try {
    return await fn(c);
  } finally {
    c.close();
  }
}

/** The VDI read whole through port 7000 of sheep `s` (as QEMU's driver reads it). */
function read7000(s: SheepProcess, name: string): Promise<Buffer> {
  return withClient(s, async (c) => {
    const v = await OpenVdi.open(c, await c.getVdiInfo(name));
    return v.read(0, v.size);
  });
}

/** The VDI read whole through the NBD export of sheep `i` (nbdcopy, Debian's NBD client). */
async function readNbd(i: number, name: string): Promise<Buffer> {
  const file = path.join(base, `nbd-${name}-${i}.raw`);
  const r = await run('nbdcopy', [`nbd://127.0.0.1:${nbdPorts[i]}/${name}`, file]);
  assert.equal(r.code, 0, r.stderr);
  try {
    return await fs.readFile(file);
  } finally {
    await fs.rm(file, { force: true });
  }
}

/** Strip files (<oid>_<index>) of VDI `name`'s objects in the sheep's obj/ directories: oid -> indexes found. */
async function stripsOnDisk(vid: number): Promise<Map<string, number[]>> {
  const found = new Map<string, number[]>();
  for (const s of sheep) {
    for (const f of await fs.readdir(path.join(s.dir, 'obj'))) {
      const m = /^([0-9a-f]{16})_(\d+)$/.exec(f);
      if (!m || oidToVid(BigInt(`0x${m[1]}`)) !== vid) continue;
      found.set(m[1], [...(found.get(m[1]) ?? []), Number(m[2])].sort((a, b) => a - b));
    }
  }
  return found;
}

function vidOf(name: string): Promise<number> {
  return withClient(sheep[0], (c) => c.getVdiInfo(name));
}

/** Every sheep up, on one epoch with all 6 members, and done recovering it. */
async function settled(ms = 30_000): Promise<void> {
  const until = Date.now() + ms;
  for (;;) {
    const states = await Promise.all(sheep.map(async (s) => {
      try {
        const c = await control<StatClusterReply>(s, Op.STAT_CLUSTER);
        const r = await control<RecoveryStatus>(s, Op.STAT_RECOVERY);
        // epoch 0: no membership change since the format, nothing to recover
        return { epoch: c.epoch, nodes: c.nodes, idle: c.status === 'running' && r.state === 'idle' && (r.epoch === c.epoch || r.epoch === 0) };
      } catch {
        return null;
      }
    }));
    const e = states[0]?.epoch;
    if (states.every((x) => x && x.nodes === N && x.idle && x.epoch === e)) return;
    if (Date.now() > until) throw new Error(`cluster not settled: ${JSON.stringify(states)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Every object of `name` has all 6 strips on disk, each on a different sheep. */
async function assertAllStrips(name: string, objects: number): Promise<void> {
  const strips = await stripsOnDisk(await vidOf(name));
  assert.equal(strips.size, objects, `objects of ${name}`);
  for (const [oid, idx] of strips) assert.deepEqual(idx, [0, 1, 2, 3, 4, 5], `strips of ${oid}`);
}

async function waitForStrips(name: string, objects: number, ms = 20_000): Promise<void> {
  const until = Date.now() + ms;
  for (;;) {
    try {
      return await assertAllStrips(name, objects);
    } catch (e) {
      if (Date.now() > until) throw e;
      await new Promise((r) => setTimeout(r, 200));
    }
  }
}

before(async () => {
  base = await tempDir('erasure-');
  for (let z = 0; z < N; z++) {
    nbdPorts.push(await freePort());
    sheep.push(await new SheepProcess(path.join(base, `s${z}`), await freePort(),
      ['-c', `local:${base}/group`, '-z', String(z), '--nbd', `127.0.0.1:${nbdPorts[z]}`]).start());
  }
  const f = await collie(sheep[0].port, ['cluster', 'format', '--copies=4:2']);
  assert.equal(f.code, 0, f.stderr);
  await settled();

  // 'qemu': written through port 7000 as QEMU's driver writes (create-and-write, inode map updates),
  // then partial writes that are not stripe aligned, one across two objects
  assert.equal((await collie(sheep[0].port, ['vdi', 'create', 'qemu', '4M', '-z', '20'])).code, 0);
  const q = crypto.randomBytes(4 * MB);
  await withClient(sheep[1], async (c) => {
    const v = await OpenVdi.open(c, await c.getVdiInfo('qemu'));
    await v.write(0, q);
    for (const [off, len] of [[1048000, 3000], [4096, 4096], [2 * MB + 7, 100]]) {
      const piece = crypto.randomBytes(len);
      await v.write(off, piece);
      piece.copy(q, off);
    }
  });
  expected.set('qemu', q);

  // 'nbd': written through the NBD export with nbdcopy
  assert.equal((await collie(sheep[0].port, ['vdi', 'create', 'nbd', '2M', '-z', '20'])).code, 0);
  const n = crypto.randomBytes(2 * MB);
  const src = path.join(base, 'nbd-src.raw');
  await fs.writeFile(src, n);
  const w = await run('nbdcopy', [src, `nbd://127.0.0.1:${nbdPorts[2]}/nbd`]);
  assert.equal(w.code, 0, w.stderr);
  expected.set('nbd', n);
});

after(async () => {
  for (const s of sheep) await s.stop();
  await stopSequencer(`${base}/group`);
  if (!process.env.KEEP_TEST_DIRS) await fs.rm(base, { recursive: true, force: true });
});

test('vdi list shows the 4:2 code in the Copies column, and the inode carries copy_policy 0x22 with nr_copies 6', async () => {
  const r = await collie(sheep[0].port, ['vdi', 'list', '-r', 'qemu']);
  assert.match(r.stdout.toString(), /^= qemu 0 4194304 \d+ 0 \d+ [0-9a-f]+ 4:2 {2}20$/m);
  const h = await withClient(sheep[0], async (c) => decodeInodeHeader(await c.readObj(vidToVdiOid(await c.getVdiInfo('qemu')), 0, SD_INODE_HEADER_SIZE)));
  assert.equal(h.copyPolicy, 0x22);
  assert.equal(h.nrCopies, 6);
  const info = await collie(sheep[0].port, ['cluster', 'info', '-v']);
  assert.match(info.stdout.toString(), /Cluster store: plain with 4:2 redundancy policy/);
  await assertAllStrips('qemu', 4);
  await assertAllStrips('nbd', 2);
});

test('vdi object location shows which sheep holds which strip, as the ring places them', async () => {
  const r = await collie(sheep[0].port, ['vdi', 'object', 'location', '-i', '1', 'qemu']);
  assert.equal(r.code, 0, r.stderr);
  const text = r.stdout.toString();
  const held = [...text.matchAll(/^127\.0\.0\.1:(\d+) has strip (\d+)$/gm)].map((m) => `${m[2]}:127.0.0.1:${m[1]}`).sort();
  assert.equal(held.length, 6, text);
  const placed = /the 6 strips should be located at:\n(.*)$/m.exec(text)?.[1].split(' ').sort();
  assert.deepEqual(placed, held);
});

test('a 4:2 VDI written through port 7000 and one written through NBD read back identical with any 2 of the 6 sheep killed', async () => {
  for (let a = 0; a < N; a++) {
    for (let b = a + 1; b < N; b++) {
      await sheep[a].kill9();
      await sheep[b].kill9();
      const alive = [0, 1, 2, 3, 4, 5].filter((i) => i !== a && i !== b);
      const via = alive[(a + b) % alive.length];
      assert.ok((await read7000(sheep[via], 'qemu')).equals(expected.get('qemu')!), `qemu through port 7000 with ${a} and ${b} killed`);
      assert.ok((await readNbd(via, 'nbd')).equals(expected.get('nbd')!), `nbd through NBD with ${a} and ${b} killed`);
      await sheep[a].start();
      await sheep[b].start();
      await settled();
    }
  }
  await waitForStrips('qemu', 4);
});

test('recovery restores all 6 strips of every object after a sheep loses its store', async () => {
  const victim = sheep[3];
  await victim.stop();
  for (const f of await fs.readdir(path.join(victim.dir, 'obj'))) {
    if (/_\d+$/.test(f)) await fs.rm(path.join(victim.dir, 'obj', f));
  }
  await victim.start();
  await settled();
  await waitForStrips('qemu', 4);
  await waitForStrips('nbd', 2);
  assert.ok((await read7000(sheep[0], 'qemu')).equals(expected.get('qemu')!));
});

test('vdi check finds a corrupted strip, repairs it, and the VDI reads back right', async () => {
  const vid = await vidOf('qemu');
  // data strip 0 of the second object, wherever it is
  let file = '';
  for (const s of sheep) {
    const f = (await fs.readdir(path.join(s.dir, 'obj'))).find((n) => n === `${oidHex(vidToDataOid(vid, 1))}_0`);
    if (f) file = path.join(s.dir, 'obj', f);
  }
  assert.ok(file, 'strip 0 of object 1 is on some sheep');
  const fh = await fs.open(file, 'r+');
  await fh.write(Buffer.from('corrupted bytes!'), 0, 16, 200);
  await fh.close();
  const r = await collie(sheep[0].port, ['vdi', 'check', 'qemu']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout.toString(), /fixed strip [0-9a-f]{16}_0 on 127\.0\.0\.1:\d+/);
  const again = await collie(sheep[0].port, ['vdi', 'check', 'qemu']);
  assert.doesNotMatch(again.stdout.toString(), /fixed/);
  assert.ok((await read7000(sheep[2], 'qemu')).equals(expected.get('qemu')!));
});

test('snapshot, clone and rollback of a 4:2 VDI keep each version, copy-on-write reading the 4:2 parent', async () => {
  const p = sheep[0].port;
  assert.equal((await collie(p, ['vdi', 'snapshot', '-s', 'v1', 'qemu'])).code, 0);
  const v1 = expected.get('qemu')!;
  const piece = crypto.randomBytes(5000);
  assert.equal((await collie(p, ['vdi', 'write', 'qemu', String(MB + 300), '5000'], piece)).code, 0);
  const v2 = Buffer.from(v1);
  piece.copy(v2, MB + 300);
  assert.ok((await read7000(sheep[1], 'qemu')).equals(v2), 'the VDI has the new bytes');
  assert.ok((await collie(p, ['vdi', 'read', '-s', 'v1', 'qemu'])).stdout.equals(v1), 'the snapshot has the old ones');
  assert.equal((await collie(p, ['vdi', 'clone', '-s', 'v1', 'qemu', 'qclone'])).code, 0);
  const cpiece = crypto.randomBytes(700);
  assert.equal((await collie(p, ['vdi', 'write', 'qclone', '3000', '700'], cpiece)).code, 0);
  const c1 = Buffer.from(v1);
  cpiece.copy(c1, 3000);
  assert.ok((await read7000(sheep[4], 'qclone')).equals(c1), 'the clone: snapshot plus its own write');
  assert.match((await collie(p, ['vdi', 'list', '-r', 'qclone'])).stdout.toString(), / 4:2 /);
  assert.equal((await collie(p, ['vdi', 'rollback', '-f', '-s', 'v1', 'qemu'])).code, 0);
  assert.ok((await read7000(sheep[5], 'qemu')).equals(v1), 'rolled back to the snapshot');
});

test('a 4:2 VDI backed up and restored into a new VDI reads the same', async () => {
  const p = sheep[0].port;
  const b = await collie(p, ['vdi', 'backup', '-s', 'v1', 'qemu']);
  assert.equal(b.code, 0, b.stderr);
  const r = await collie(p, ['vdi', 'restore', 'qrestored'], b.stdout);
  assert.equal(r.code, 0, r.stderr);
  assert.ok((await read7000(sheep[3], 'qrestored')).equals(expected.get('qemu')!));
});

test('deleting a 4:2 VDI reclaims every one of its strips on every sheep', async () => {
  const vid = await vidOf('qrestored');
  assert.ok((await stripsOnDisk(vid)).size > 0, 'it has strips');
  const d = await collie(sheep[0].port, ['vdi', 'delete', 'qrestored']);
  assert.equal(d.code, 0, d.stderr);
  const until = Date.now() + 20_000;
  while ((await stripsOnDisk(vid)).size && Date.now() < until) await new Promise((r) => setTimeout(r, 200));
  assert.equal((await stripsOnDisk(vid)).size, 0, 'no strip of the deleted VDI is left');
});

test('a copies=3 VDI lives beside the 4:2 ones: full copies on 3 sheep, Copies 3 in vdi list', async () => {
  const p = sheep[0].port;
  assert.equal((await collie(p, ['vdi', 'create', 'plain', '2M', '-c', '3', '-z', '20'])).code, 0);
  const data = crypto.randomBytes(2 * MB);
  assert.equal((await collie(p, ['vdi', 'write', 'plain'], data)).code, 0);
  assert.ok((await read7000(sheep[5], 'plain')).equals(data));
  assert.match((await collie(p, ['vdi', 'list', '-r', 'plain'])).stdout.toString(), /^= plain 0 2097152 \d+ 0 \d+ [0-9a-f]+ 3 {2}20$/m);
  const vid = await vidOf('plain');
  const copies = new Map<string, number>();
  for (const s of sheep) {
    for (const f of await fs.readdir(path.join(s.dir, 'obj'))) {
      if (/^[0-9a-f]{16}$/.test(f) && oidToVid(BigInt(`0x${f}`)) === vid && !f.startsWith('8')) copies.set(f, (copies.get(f) ?? 0) + 1);
    }
  }
  assert.deepEqual([...copies.values()], [3, 3]);
  assert.equal((await stripsOnDisk(vid)).size, 0, 'no strips for a replicated VDI');
  assert.ok((await read7000(sheep[1], 'qemu')).equals(expected.get('qemu')!), 'the 4:2 VDI is unaffected');
});

test('bad erasure codes are refused with the reason', async () => {
  const p = sheep[0].port;
  const cases: Array<[string, RegExp]> = [
    ['3:2', /data strips must be 2, 4, 8 or 16/],
    ['4:0', /parity strips must be 1 to 15/],
    ['4:16', /parity strips must be 1 to 15/],
    ['8:1', /9 strips on 9 distinct zones, but the cluster has 6/],
  ];
  for (const [code, why] of cases) {
    const r = await collie(p, ['vdi', 'create', 'refused', '1M', '-c', code]);
    assert.notEqual(r.code, 0, code);
    assert.match(r.stderr, why, code);
  }
  const alter = await collie(p, ['vdi', 'alter-copy', '-c', '2', '-f', 'qemu']);
  assert.notEqual(alter.code, 0);
  assert.match(alter.stderr, /erasure code/);
  assert.doesNotMatch((await collie(p, ['vdi', 'list', '-r'])).stdout.toString(), /refused/);
});

test('node info shows the space erasure coding saves', async () => {
  const r = await collie(sheep[0].port, ['node', 'info']);
  assert.match(r.stdout.toString(), /Erasure coding 4:2\t[\d.]+ MB of strips hold [\d.]+ MB of data; 3 full copies \(the same 2 failures\) would take [\d.]+ MB: [\d.]+ MB saved/);
});
