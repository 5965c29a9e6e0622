// A failing disk: one of 4 sheep (copies=3) keeps its store on a loop-mounted ext4 that is shut down
// under it (every I/O then fails with EIO, as on a dying disk). The sheep finds it, stops serving
// copies from it, stays a member (a gateway for its clients), and the cluster re-replicates.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { SheepProcess, freePort, tempDir, collie, collieHash, stopSequencer, control } from '../helpers/sheep.js';
import { loopFsUnavailable, mountLoopFs, type LoopFs } from '../helpers/loopfs.js';
import { Op } from '../../lib/proto.js';
import { oidHex, vidToVdiOid } from '../../lib/oid.js';
import { SD_INODE_HEADER_SIZE } from '../../lib/inode.js';
import type { NodeListReply, RecoveryStatus, StatClusterReply, StatSheepReply } from '../../lib/admin.js';

const MB = 1 << 20;
const skip = await loopFsUnavailable();
let base: string;
let disk: LoopFs;
const sheep: SheepProcess[] = [];
const sha = (b: Buffer) => crypto.createHash('sha256').update(b).digest('hex');

before(async () => {
  if (skip) return;
  base = await tempDir('diskfault-');
  disk = await mountLoopFs(base, 'failing', 128);
  for (let i = 0; i < 4; i++) {
    const dir = i === 3 ? path.join(disk.dir, 'store') : path.join(base, `s${i}`);
    sheep[i] = await new SheepProcess(dir, await freePort(), ['-c', `local:${base}/group`, '-z', String(i)]).start();
  }
  assert.equal((await collie(sheep[0].port, ['cluster', 'format', '--copies=3'])).code, 0);
});

after(async () => {
  if (skip) return;
  for (const s of sheep) await s?.stop();
  await stopSequencer(`${base}/group`);
  await disk?.umount();
  await fs.rm(base, { recursive: true, force: true });
});

test('a disk that fails with EIO is reported, its copies are re-replicated, and no acknowledged byte is lost', { skip: skip ?? false }, async () => {
  const data = crypto.randomBytes(32 * MB);
  assert.equal((await collie(sheep[0].port, ['vdi', 'create', 'vm', '64M'])).code, 0);
  assert.equal((await collie(sheep[0].port, ['vdi', 'write', 'vm'], data)).code, 0);
  const before3 = (await fs.readdir(path.join(sheep[3].dir, 'obj'))).filter((n) => /^[0-9a-f]{16}$/.test(n)).length;
  assert.ok(before3 > 0, 'the failing node holds copies');

  await disk.fail();
  // found by the next I/O or the periodic probe; the node stays a member with no vnodes
  let st: StatSheepReply | null = null;
  for (const deadline = Date.now() + 20000; Date.now() < deadline;) {
    st = await control<StatSheepReply>(sheep[3], Op.STAT_SHEEP);
    if (st.diskFailed) break;
    await new Promise((r) => setTimeout(r, 200));
  }
  assert.match(st?.diskFailed ?? '', /EIO/);
  assert.ok(sheep[3].alive, 'the sheep stays up as a gateway');
  const info = (await collie(sheep[0].port, ['node', 'info'])).stdout.toString();
  assert.match(info, /^ 3\t.*disk failed: EIO/m);
  const nodes = await control<NodeListReply>(sheep[0], Op.GET_NODE_LIST);
  assert.equal(nodes.nodes.find((n) => n.port === sheep[3].port)?.vnodes, 0);

  // the other three settle on the new epoch with every object back to 3 copies there
  for (const deadline = Date.now() + 60000; ;) {
    const sts = await Promise.all(sheep.map((s) => control<StatClusterReply>(s, Op.STAT_CLUSTER)));
    const rec = await Promise.all(sheep.map((s) => control<RecoveryStatus>(s, Op.STAT_RECOVERY)));
    if (sts.every((x) => x.epoch === sts[0].epoch) && rec.every((r) => r.state === 'idle' && r.epoch === sts[0].epoch)) break;
    assert.ok(Date.now() < deadline, `recovery did not finish: ${JSON.stringify(rec)}`);
    await new Promise((r) => setTimeout(r, 200));
  }
  const c = await sheep[0].client();
  const vid = await c.getVdiInfo('vm');
  const map = await c.readObj(vidToVdiOid(vid), SD_INODE_HEADER_SIZE, 4 * 16);
  c.close();
  for (let i = 0; i < 8; i++) {
    assert.equal(map.readUInt32LE(4 * i), vid);
    const file = oidHex((BigInt(vid) << 32n) | BigInt(i));
    const copies = await Promise.all(sheep.slice(0, 3).map((s) => fs.readFile(path.join(s.dir, 'obj', file))));
    assert.ok(copies.every((x) => sha(x) === sha(data.subarray(i * 4 * MB, (i + 1) * 4 * MB))), `object ${i}: the 3 healthy nodes hold it, intact`);
  }
  // clients of the failed node are still served, reads and writes, through the others
  assert.equal((await collieHash(sheep[3].port, ['vdi', 'read', 'vm', '0', String(32 * MB)])).sha256, sha(data));
  const more = crypto.randomBytes(8 * MB);
  assert.equal((await collie(sheep[3].port, ['vdi', 'write', 'vm', String(32 * MB), String(8 * MB)], more)).code, 0);
  assert.equal((await collieHash(sheep[0].port, ['vdi', 'read', 'vm', String(32 * MB), String(8 * MB)])).sha256, sha(more));
  const check = await collie(sheep[0].port, ['vdi', 'check', '-e', 'vm']);
  assert.match(check.stdout.toString(), /no object is missing/);
});
