// A node that comes back after a short absence keeps its copies that are still current and copies
// only what changed while it was away; what it copies stays as sparse as the original.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { SheepProcess, freePort, tempDir, collie, collieHash, stopSequencer, control } from '../helpers/sheep.js';
import { Op } from '../../lib/proto.js';
import { oidHex, vidToDataOid, vidToVdiOid } from '../../lib/oid.js';
import type { RecoveryStatus, StatClusterReply } from '../../lib/admin.js';
import { Ring } from '../../lib/ring.js';

const MB = 1 << 20;
let base: string;
const sheep: SheepProcess[] = [];

async function start(zone: number): Promise<SheepProcess> {
  const s = await new SheepProcess(path.join(base, `s${zone}`), sheep[zone]?.port ?? await freePort(), ['-c', `local:${base}/group`, '-z', String(zone)]).start();
  sheep[zone] = s;
  return s;
}

/** Every live node runs the same epoch with all of them in it, and none is recovering. */
async function settled(n: number): Promise<void> {
  const deadline = Date.now() + 60000;
  for (;;) {
    const live = sheep.filter((s) => s.alive);
    const st = await Promise.all(live.map((s) => control<StatClusterReply>(s, Op.STAT_CLUSTER)));
    const rec = await Promise.all(live.map((s) => control<RecoveryStatus>(s, Op.STAT_RECOVERY)));
    if (live.length === n && st.every((x) => x.nodes === n && x.epoch === st[0].epoch) &&
        rec.every((r) => r.state === 'idle' && (r.epoch === st[0].epoch || r.epoch === 0))) return;
    if (Date.now() > deadline) throw new Error(`the cluster did not settle: ${JSON.stringify(rec)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function allocated(file: string): Promise<number> {
  return (await fs.stat(file)).blocks * 512;
}

before(async () => {
  base = await tempDir('rejoin-');
  for (let z = 0; z < 3; z++) await start(z);
  assert.equal((await collie(sheep[0].port, ['cluster', 'format', '--copies=3'])).code, 0);
});

after(async () => {
  for (const s of sheep) await s?.stop();
  await stopSequencer(`${base}/group`);
  await fs.rm(base, { recursive: true, force: true });
});

test('a node restarted after a short absence keeps its current copies and copies only what changed', async () => {
  const image = crypto.randomBytes(64 * MB);
  assert.equal((await collie(sheep[0].port, ['vdi', 'create', 'full', '64M'])).code, 0);
  assert.equal((await collie(sheep[0].port, ['vdi', 'write', 'full'], image)).code, 0);
  await settled(3);
  await sheep[2].kill9();
  await settled(2);
  // 8 MiB written while it is away: data objects 0 and 1 change, the other 14 do not
  const patch = crypto.randomBytes(8 * MB);
  assert.equal((await collie(sheep[0].port, ['vdi', 'write', 'full', '0', String(8 * MB)], patch)).code, 0);
  patch.copy(image, 0);
  await start(2);
  await settled(3);
  const st = await control<RecoveryStatus>(sheep[2], Op.STAT_RECOVERY);
  assert.equal(st.copied, 2, `copied ${st.copied} objects (only the 2 that changed should be)`);
  assert.ok((st.kept ?? 0) >= 15, `kept ${st.kept} set-aside copies (16 data objects and the inode, less the 2 that changed)`);
  // nothing is left set aside, and the node's copies are the current ones
  assert.deepEqual(await fs.readdir(path.join(sheep[2].dir, 'obj', '.stale')), []);
  const want = crypto.createHash('sha256').update(image).digest('hex');
  for (const s of sheep) assert.equal((await collieHash(s.port, ['vdi', 'read', 'full'])).sha256, want);
  const c = await sheep[0].client();
  const vid = await c.getVdiInfo('full');
  c.close();
  for (let idx = 0; idx < 16; idx++) {
    const name = oidHex(vidToDataOid(vid, idx));
    const copies = await Promise.all(sheep.map((s) => fs.readFile(path.join(s.dir, 'obj', name))));
    assert.ok(copies.every((x) => x.equals(copies[0])), `the copies of object ${idx} differ`);
  }
});

test('copies made by recovery stay sparse: an object holding 4 KiB takes about 4 KiB on the returning node', async () => {
  assert.equal((await collie(sheep[0].port, ['vdi', 'create', 'sparse', '64M'])).code, 0);
  for (let idx = 0; idx < 16; idx++) {
    assert.equal((await collie(sheep[0].port, ['vdi', 'write', 'sparse', String(idx * 4 * MB), '4096'], crypto.randomBytes(4096))).code, 0);
  }
  await settled(3);
  await sheep[2].kill9();
  await settled(2);
  // every object changes while the node is away: recovery copies all of them
  for (let idx = 0; idx < 16; idx++) {
    assert.equal((await collie(sheep[0].port, ['vdi', 'write', 'sparse', String(idx * 4 * MB + 8192), '4096'], crypto.randomBytes(4096))).code, 0);
  }
  await start(2);
  await settled(3);
  const st = await control<RecoveryStatus>(sheep[2], Op.STAT_RECOVERY);
  assert.ok(st.copied >= 16, `copied ${st.copied}`);
  const c = await sheep[0].client();
  const vid = await c.getVdiInfo('sparse');
  c.close();
  let total = 0;
  for (let idx = 0; idx < 16; idx++) total += await allocated(path.join(sheep[2].dir, 'obj', oidHex(vidToDataOid(vid, idx))));
  assert.ok(total <= 16 * 64 * 1024, `16 objects holding 8 KiB each take ${total} bytes on the returning node`);
  assert.ok(await allocated(path.join(sheep[2].dir, 'obj', oidHex(vidToVdiOid(vid)))) < 256 * 1024, 'the inode stays small');
  const r0 = await collieHash(sheep[0].port, ['vdi', 'read', 'sparse']);
  const r2 = await collieHash(sheep[2].port, ['vdi', 'read', 'sparse']);
  assert.equal(r2.sha256, r0.sha256);
});

async function waitNodes(n: number): Promise<void> {
  const deadline = Date.now() + 30000;
  while ((await Promise.all(sheep.filter((s) => s.alive).map((s) => control<StatClusterReply>(s, Op.STAT_CLUSTER)))).some((x) => x.nodes !== n)) {
    if (Date.now() > deadline) throw new Error(`the membership did not reach ${n} nodes`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

for (const disabledAfter of [false, true]) {
  test(`a node that owns an object again right after an epoch without it never serves its stale copy (recovery ${disabledAfter ? 'still disabled' : 'enabled'} when it owns it again)`, async () => {
    const name = `reown${disabledAfter ? 'd' : 'e'}`;
    const image = crypto.randomBytes(64 * MB);
    assert.equal((await collie(sheep[0].port, ['vdi', 'create', name, '64M'])).code, 0);
    assert.equal((await collie(sheep[0].port, ['vdi', 'write', name], image)).code, 0);
    await settled(3);
    const c = await sheep[0].client();
    const vid = await c.getVdiInfo(name);
    c.close();
    // recovery disabled: node 0 keeps its copies of what it stops owning (nothing is set aside)
    assert.equal((await collie(sheep[0].port, ['cluster', 'recover', 'disable'])).code, 0);
    const d = await new SheepProcess(path.join(base, `d${name}`), await freePort(), ['-c', `local:${base}/group`, '-z', '3']).start();
    try {
      await waitNodes(4);
      const four = new Ring([...[0, 1, 2].map((z) => ({ nid: `127.0.0.1:${sheep[z].port}`, host: '127.0.0.1', port: sheep[z].port, zone: z, vnodes: 64 })),
        { nid: `127.0.0.1:${d.port}`, host: '127.0.0.1', port: d.port, zone: 3, vnodes: 64 }]);
      const me = `127.0.0.1:${sheep[0].port}`;
      const idx = [...Array(16).keys()].find((i) => !four.replicas(vidToDataOid(vid, i), 3).some((n) => n.nid === me));
      assert.ok(idx !== undefined, 'some object moves away from node 0 when the fourth node joins');
      // written while node 0 does not own it: its copy misses this
      const fresh = crypto.randomBytes(4 * MB);
      assert.equal((await collie(sheep[1].port, ['vdi', 'write', name, String(idx * 4 * MB), String(4 * MB)], fresh)).code, 0);
      fresh.copy(image, idx * 4 * MB);
      // the fourth node goes: node 0 owns the object again
      await d.kill9();
      await waitNodes(3);
      if (!disabledAfter) assert.equal((await collie(sheep[0].port, ['cluster', 'recover', 'enable'])).code, 0);
      // node 0 prefers its own copy for reads: it must be the current one, or none
      const r = await collie(sheep[0].port, ['vdi', 'read', name, String(idx * 4 * MB), String(4 * MB)]);
      assert.equal(r.code, 0, r.stderr);
      assert.ok(r.stdout.equals(fresh), 'node 0 served a copy that missed the write made while it did not own the object');
      if (disabledAfter) assert.equal((await collie(sheep[0].port, ['cluster', 'recover', 'enable'])).code, 0);
      await settled(3);
      // and once recovery ran, every copy is the current one
      const file = oidHex(vidToDataOid(vid, idx));
      for (const s of sheep) assert.ok((await fs.readFile(path.join(s.dir, 'obj', file))).equals(fresh), `${s.dir} holds a stale copy`);
      assert.equal((await collieHash(sheep[0].port, ['vdi', 'read', name])).sha256, crypto.createHash('sha256').update(image).digest('hex'));
    } finally {
      await d.stop();
    }
  });
}
