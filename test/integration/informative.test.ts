// The two conversations in ../shared/conformance/informative/ record bugs of the original Sheepdog
// (snapshot apply after writes fails; a deleted snapshot stays listed). We replay QEMU's recorded
// requests verbatim and check that our sheep does the right thing instead.

import { test, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { startSheep, destroySheep, SHARED, type SheepProcess } from '../helpers/sheep.js';
import { SheepClient } from '../../lib/client.js';
import { OpenVdi } from '../../lib/vdi-io.js';
import { Res, type Rsp } from '../../lib/proto.js';
import { nameToVid } from '../../lib/fnv.js';
import { vidToVdiOid, NR_VDIS, oidHex } from '../../lib/oid.js';
import { decodeInodeHeader, SD_INODE_HEADER_SIZE } from '../../lib/inode.js';

interface Exchange { order: number; request: { header: string; payload: unknown; op: string }; response: { result: number } | null }
interface Trace { connections: Array<{ exchanges: Exchange[] }> }

function payload(p: unknown): Buffer {
  if (p === null || p === undefined) return Buffer.alloc(0);
  if (typeof p === 'string') return Buffer.from(p, 'hex');
  const o = p as { len: number; fill?: number; hex?: string; segments?: Array<[number, string]> };
  if (o.fill !== undefined) return Buffer.alloc(o.len, o.fill);
  if (o.hex !== undefined) return Buffer.from(o.hex, 'hex');
  const b = Buffer.alloc(o.len);
  for (const [off, h] of o.segments ?? []) Buffer.from(h, 'hex').copy(b, off);
  return b;
}

/** Sends every recorded request in global order; returns our reply for each order number. */
async function replay(c: SheepClient, file: string): Promise<Map<number, Rsp>> {
  const t = JSON.parse(fs.readFileSync(path.join(SHARED, 'conformance/informative', file), 'utf8')) as Trace;
  const all = t.connections.flatMap((k) => k.exchanges).sort((a, b) => a.order - b.order);
  const out = new Map<number, Rsp>();
  for (const ex of all) {
    const hdr = Buffer.from(ex.request.header, 'hex');
    const { rsp } = await c.send(hdr, payload(ex.request.payload));
    out.set(ex.order, rsp);
  }
  return out;
}

async function listSnapshots(c: SheepClient, name: string): Promise<string[]> {
  const bm = await c.readVdis();
  const tags: string[] = [];
  for (let vid = nameToVid(name); vid < NR_VDIS && bm[vid >> 3] & (1 << (vid & 7)); vid++) {
    const h = decodeInodeHeader(await c.readObj(vidToVdiOid(vid), 0, SD_INODE_HEADER_SIZE));
    if (h.name === name && h.snapCtime !== 0n) tags.push(h.tag);
  }
  return tags;
}

let sheep: SheepProcess | undefined;
afterEach(async () => { if (sheep) await destroySheep(sheep); sheep = undefined; });

test('qemu-img snapshot -a succeeds when the working VDI holds data, and the VDI reads as the snapshot', async () => {
  sheep = await startSheep({ copies: 1 });
  const c = await sheep.client();
  try {
    const r = await replay(c, 'f_snapshot_apply.json');
    assert.equal(r.get(72)!.result, Res.SUCCESS, 'DEL_VDI of the working VDI');
    const created = r.get(75)!;
    assert.equal(created.result, Res.SUCCESS, 'NEW_VDI from the snapshot (the original says VDI_EXIST)');
    assert.equal(created.vdiId, 0xed202d);
    const v = await OpenVdi.open(c, await c.lockVdi('alpha'));
    assert.equal(v.vid, 0xed202d);
    // the snapshot held 0xab at 0..64k; the discarded working VDI had 0x12 at 0..4k
    assert.deepEqual(await v.read(0, 65536), Buffer.alloc(65536, 0xab));
    assert.deepEqual(await v.read(4 << 20, 8192), Buffer.alloc(8192, 0xcd));
    assert.deepEqual(await listSnapshots(c, 'alpha'), ['s1']);
    // the deleted working VDI's own object was freed
    assert.ok(!fs.existsSync(path.join(sheep.dir, 'obj', oidHex(0x00ed202c00000000n))));
  } finally {
    c.close();
  }
});

test('qemu-img snapshot -d removes the snapshot from the listing and frees its objects', async () => {
  sheep = await startSheep({ copies: 1 });
  const c = await sheep.client();
  try {
    const r = await replay(c, 'g_snapshot_delete.json');
    assert.equal(r.get(79)!.result, Res.SUCCESS, 'DEL_VDI of the snapshot');
    assert.deepEqual(await listSnapshots(c, 'alpha'), [], 'the original still lists s1 here');
    await assert.rejects(c.lockVdi('alpha', 's1'), /tag/);
    for (const oid of [0x00ed202b00000000n, 0x00ed202b00000001n, 0x00ed202c00000000n]) {
      assert.ok(!fs.existsSync(path.join(sheep.dir, 'obj', oidHex(oid))), `${oidHex(oid)} should be freed`);
    }
    // QEMU zeroed the working VDI's map itself: it reads as zeros, as with the original
    const v = await OpenVdi.open(c, await c.lockVdi('alpha'));
    assert.deepEqual(await v.read(0, 65536), Buffer.alloc(65536, 0));
  } finally {
    c.close();
  }
});


