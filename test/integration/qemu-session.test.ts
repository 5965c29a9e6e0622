// A scripted QEMU session through the protocol client, against a real sheep: every step is what
// QEMU's sheepdog driver sends (DESIGN.md §3.1), and every result is checked byte for byte.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startSheep, destroySheep, type SheepProcess } from '../helpers/sheep.js';
import { SheepClient } from '../../lib/client.js';
import { OpenVdi } from '../../lib/vdi-io.js';
import { Res, SdError, Op, encodePlainReq } from '../../lib/proto.js';
import { nameToVid } from '../../lib/fnv.js';
import { vidToVdiOid, vidToDataOid, NR_VDIS } from '../../lib/oid.js';
import { decodeInodeHeader, SD_INODE_HEADER_SIZE, SD_INODE_SIZE } from '../../lib/inode.js';

let sheep: SheepProcess;
let c: SheepClient;
const MB = 1 << 20;
const fill = (n: number, v: number) => Buffer.alloc(n, v);

before(async () => {
  sheep = await startSheep({ copies: 1 });
  c = await sheep.client();
});
after(async () => {
  c?.close();
  if (sheep) await destroySheep(sheep);
});

/** QEMU's `snapshot -l`: READ_VDIS, then the headers of the run of set bits from the name's hash. */
async function snapshotList(name: string): Promise<Array<{ vid: number; tag: string; snapId: number }>> {
  const bm = await c.readVdis();
  const out = [];
  for (let vid = nameToVid(name); vid < NR_VDIS && bm[vid >> 3] & (1 << (vid & 7)); vid++) {
    const h = decodeInodeHeader(await c.readObj(vidToVdiOid(vid), 0, SD_INODE_HEADER_SIZE));
    if (h.name === name && h.snapCtime !== 0n) out.push({ vid, tag: h.tag, snapId: h.snapId });
  }
  return out;
}

test('the QEMU sequence create, lock, write, snapshot, COW write, clone, resize, delete works', async () => {
  const def = await c.getClusterDefault();
  assert.deepEqual(def, { nrCopies: 1, copyPolicy: 0, blockSizeShift: 22 });

  // create + open
  const vid = await c.newVdi('vm1', 64n * BigInt(MB));
  assert.equal(vid, nameToVid('vm1'));
  assert.equal(await c.lockVdi('vm1'), vid);
  const inode = await c.readObj(vidToVdiOid(vid), 0, SD_INODE_SIZE);
  assert.equal(inode.length, SD_INODE_SIZE);
  assert.equal(decodeInodeHeader(inode).vdiSize, 64n * BigInt(MB));

  // write to unallocated objects, then read back (including a never-written range)
  let v = await OpenVdi.open(c, vid);
  await v.write(0, fill(64 * 1024, 0xab));
  await v.write(4 * MB, fill(8192, 0xcd));
  await c.flushVdi(vid);
  assert.deepEqual(await v.read(0, 64 * 1024), fill(64 * 1024, 0xab));
  assert.deepEqual(await v.read(128 * 1024, 4096), fill(4096, 0));
  assert.deepEqual(await v.read(4 * MB, 8192), fill(8192, 0xcd));

  // snapshot: tag into the current header, NEW_VDI snapid=1 → new working vid
  const tagged = Buffer.from(await c.readObj(vidToVdiOid(vid), 0, SD_INODE_HEADER_SIZE));
  tagged.fill(0, 256, 512);
  Buffer.from('before-patch').copy(tagged, 256);
  await c.writeObj(vidToVdiOid(vid), 0, tagged);
  const work = await c.newVdi('vm1', 64n * BigInt(MB), { baseVdiId: vid, snapshot: true });
  assert.equal(work, vid + 1);
  await c.releaseVdi('vm1', work);

  // writes to the snapshot's objects are refused: READONLY
  await assert.rejects(c.writeObj(vidToDataOid(vid, 0), 0, fill(512, 1)), (e: SdError) => e.result === Res.READONLY);

  // COW write through the new working VDI leaves the snapshot intact
  v = await OpenVdi.open(c, work);
  assert.equal(v.map[0], vid);
  await v.write(0, fill(4096, 0x12));
  assert.equal(v.map[0], work);
  assert.deepEqual(await v.read(0, 4096), fill(4096, 0x12));
  assert.deepEqual(await v.read(4096, 60 * 1024), fill(60 * 1024, 0xab));
  const snap = await OpenVdi.open(c, await c.lockVdi('vm1', 'before-patch'));
  assert.deepEqual(await snap.read(0, 64 * 1024), fill(64 * 1024, 0xab));
  assert.equal(await c.lockVdi('vm1', '', 1), vid);

  // snapshot list via the READ_VDIS scan
  assert.deepEqual(await snapshotList('vm1'), [{ vid, tag: 'before-patch', snapId: 1 }]);

  // clone from the snapshot
  const clone = await c.newVdi('vm1-clone', 64n * BigInt(MB), { baseVdiId: vid });
  const cv = await OpenVdi.open(c, clone);
  assert.equal(cv.header.parentVdiId, vid);
  assert.deepEqual(await cv.read(0, 64 * 1024), fill(64 * 1024, 0xab));
  await cv.write(8192, fill(4096, 0x34));
  assert.deepEqual(await cv.read(8192, 4096), fill(4096, 0x34));
  assert.deepEqual(await snap.read(8192, 4096), fill(4096, 0xab));

  // resize: QEMU rewrites the header with the new size; then writes past the old end
  const hdr = Buffer.from(await c.readObj(vidToVdiOid(work), 0, SD_INODE_HEADER_SIZE));
  hdr.writeBigUInt64LE(128n * BigInt(MB), 536);
  await c.writeObj(vidToVdiOid(work), 0, hdr);
  v = await OpenVdi.open(c, work);
  assert.equal(v.size, 128 * MB);
  await v.write(100 * MB, fill(4096, 0xef));
  assert.deepEqual(await v.read(100 * MB, 4096), fill(4096, 0xef));

  // delete the clone; the snapshot and the working VDI still read right
  await c.delVdi('vm1-clone');
  await assert.rejects(c.getVdiInfo('vm1-clone'), (e: SdError) => e.result === Res.NO_VDI);
  assert.deepEqual(await snap.read(0, 4096), fill(4096, 0xab));
  assert.deepEqual(await v.read(0, 4096), fill(4096, 0x12));
});

test('many requests in flight on one connection are all answered, matched by id', async () => {
  const vid = await c.newVdi('pipelined', 64n * BigInt(MB));
  const v = await OpenVdi.open(c, vid);
  await Promise.all(Array.from({ length: 16 }, (_, i) => v.writePiece(i, 0, fill(4096, i + 1))));
  const reads = await Promise.all(Array.from({ length: 16 }, (_, i) => v.readPiece(i, 0, 4096)));
  reads.forEach((b, i) => assert.deepEqual(b, fill(4096, i + 1)));
});

test('opening a missing VDI, tag or snapshot id gives NO_VDI and NO_TAG', async () => {
  await assert.rejects(c.lockVdi('nosuch'), (e: SdError) => e.result === Res.NO_VDI);
  await c.newVdi('tagless', BigInt(MB));
  await assert.rejects(c.lockVdi('tagless', 'nosuchtag'), (e: SdError) => e.result === Res.NO_TAG);
  await assert.rejects(c.lockVdi('tagless', '', 7), (e: SdError) => e.result === Res.NO_TAG);
  await assert.rejects(c.newVdi('tagless', BigInt(MB)), (e: SdError) => e.result === Res.VDI_EXIST);
});

test('READ_VDIS returns the 2 MiB bitmap with a bit per VDI', async () => {
  const h = encodePlainReq({ protoVer: 0, opcode: Op.READ_VDIS, flags: 0, epoch: 0, id: 0, dataLength: NR_VDIS / 8 });
  const { rsp, data } = await c.send(h);
  assert.equal(rsp.result, Res.SUCCESS);
  assert.equal(data.length, 2 * MB);
  const vid = nameToVid('tagless');
  assert.ok(data[vid >> 3] & (1 << (vid & 7)));
});

test('FLUSH_VDI answers SUCCESS once the writes are durable', async () => {
  const vid = await c.newVdi('flushme', BigInt(4 * MB));
  const v = await OpenVdi.open(c, vid);
  await v.write(0, fill(4096, 9));
  await c.flushVdi(vid);
});

test('DISCARD_OBJ clears the map entry, frees the object, and the block reads as zeros', async () => {
  const vid = await c.newVdi('discard', BigInt(8 * MB));
  let v = await OpenVdi.open(c, vid);
  await v.write(4 * MB, fill(4096, 0x66));
  await c.discardObj(vidToDataOid(vid, 1));
  v = await OpenVdi.open(c, vid);
  assert.equal(v.map[1], 0);
  assert.deepEqual(await v.read(4 * MB, 4096), fill(4096, 0));
  await assert.rejects(c.readObj(vidToDataOid(vid, 1), 0, 16), (e: SdError) => e.result === Res.NO_OBJ);
});
