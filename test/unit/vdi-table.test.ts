import { test } from 'node:test';
import assert from 'node:assert/strict';
import pino from 'pino';
import { VdiTable, type NewVdiArgs } from '../../sheep/vdi/vdi-table.js';
import { makeCtime } from '../../lib/inode.js';
import type { ObjectIo } from '../../sheep/replication/gateway.js';
import { nameToVid } from '../../lib/fnv.js';
import { Res, SdError } from '../../lib/proto.js';
import { vidToDataOid } from '../../lib/oid.js';

/** Objects in memory: just enough of a store for the VDI layer. */
class MemIo implements ObjectIo {
  readonly objs = new Map<bigint, Buffer>();
  async read(oid: bigint, off: number, len: number): Promise<Buffer> {
    const o = this.objs.get(oid);
    if (!o) throw new SdError(Res.NO_OBJ);
    const out = Buffer.alloc(len);
    o.copy(out, 0, off, Math.min(o.length, off + len));
    return out;
  }
  async write(oid: bigint, off: number, data: Buffer): Promise<void> {
    const o = this.objs.get(oid);
    if (!o) throw new SdError(Res.NO_OBJ);
    this.put(oid, o, off, data);
  }
  async create(oid: bigint, off: number, data: Buffer, cow?: bigint): Promise<void> {
    this.put(oid, cow !== undefined ? Buffer.from(this.objs.get(cow)!) : Buffer.alloc(0), off, data);
  }
  private put(oid: bigint, base: Buffer, off: number, data: Buffer): void {
    const b = Buffer.alloc(Math.max(base.length, off + data.length));
    base.copy(b);
    data.copy(b, off);
    this.objs.set(oid, b);
  }
  async remove(oid: bigint): Promise<boolean> { return this.objs.delete(oid); }
  async exists(oid: bigint): Promise<boolean> { return this.objs.has(oid); }
}

const defaults = { copies: 1, copyPolicy: 0, blockSizeShift: 22 };

/** NEW_VDI as a node runs it: the decision, then the inode I/O. */
async function create(t: VdiTable, a: NewVdiArgs) {
  const d = t.applyNewVdi(a, defaults, makeCtime());
  await t.finishNewVdi(d);
  return d.entry;
}

async function del(t: VdiTable, name: string, tag: string, snapid: number) {
  await t.finishDelete(t.applyDelete(name, tag, snapid));
}
const MB64 = 64n << 20n;
const mk = () => new VdiTable(new MemIo(), pino({ level: 'silent' }));

/** Two different names whose hashes share the low 24 bits. */
function collidingNames(): [string, string] {
  const seen = new Map<number, string>();
  for (let i = 0; ; i++) {
    const n = `vol${i}`;
    const v = nameToVid(n);
    const other = seen.get(v);
    if (other) return [other, n];
    seen.set(v, n);
  }
}

function bitSet(t: VdiTable, vid: number): boolean {
  return (t.bitmap[vid >>> 3] & (1 << (vid & 7))) !== 0;
}

test('a new VDI takes the vid its name hashes to', async () => {
  const t = mk();
  const e = await create(t, { name: 'alpha', size: MB64, baseVid: 0, snapshot: false, copies: 0, copyPolicy: 0, blockSizeShift: 0 });
  assert.equal(e.vdiId, 0xed202b);
  assert.ok(bitSet(t, 0xed202b));
});

test('colliding names probe linearly to the next free vid and stay findable', async () => {
  const t = mk();
  const [a, b] = collidingNames();
  const ea = await create(t, { name: a, size: MB64, baseVid: 0, snapshot: false, copies: 0, copyPolicy: 0, blockSizeShift: 0 });
  const eb = await create(t, { name: b, size: MB64, baseVid: 0, snapshot: false, copies: 0, copyPolicy: 0, blockSizeShift: 0 });
  assert.equal(ea.vdiId, nameToVid(a));
  assert.equal(eb.vdiId, nameToVid(a) + 1);
  assert.equal(t.lookup(b, '', 0).vdiId, eb.vdiId);
  // deleting the first keeps its bit, so a scan from the hash still reaches the second
  await del(t, a, '', 0);
  assert.ok(bitSet(t, ea.vdiId));
  assert.equal(t.lookup(b, '', 0).vdiId, eb.vdiId);
  assert.throws(() => t.lookup(a, '', 0), (e: SdError) => e.result === Res.NO_VDI);
});

test('a snapshot keeps the old vid and the working VDI moves to the next one', async () => {
  const t = mk();
  const w = await create(t, { name: 'alpha', size: MB64, baseVid: 0, snapshot: false, copies: 0, copyPolicy: 0, blockSizeShift: 0 });
  const w2 = await create(t, { name: 'alpha', size: MB64, baseVid: w.vdiId, snapshot: true, copies: 0, copyPolicy: 0, blockSizeShift: 0 });
  assert.equal(w2.vdiId, w.vdiId + 1);
  assert.equal(w2.snapId, 2);
  assert.equal(w2.parentVdiId, w.vdiId);
  assert.notEqual(t.get(w.vdiId)!.snapCtime, 0n);
  assert.equal(t.lookup('alpha', '', 0).vdiId, w2.vdiId);
  assert.equal(t.lookup('alpha', '', 1).vdiId, w.vdiId);
  assert.throws(() => t.lookup('alpha', '', 7), (e: SdError) => e.result === Res.NO_TAG);
  assert.throws(() => t.writable(w.vdiId), (e: SdError) => e.result === Res.READONLY);
});

test('an object is freed only when no live VDI maps it any more', async () => {
  const io = new MemIo();
  const t = new VdiTable(io, pino({ level: 'silent' }));
  const base = await create(t, { name: 'a', size: MB64, baseVid: 0, snapshot: false, copies: 0, copyPolicy: 0, blockSizeShift: 0 });
  const entry = Buffer.alloc(4);
  entry.writeUInt32LE(base.vdiId);
  await io.create(vidToDataOid(base.vdiId, 0), 0, Buffer.from('data'));
  await t.writeInode(base.vdiId, 4664, entry);
  const work = await create(t, { name: 'a', size: MB64, baseVid: base.vdiId, snapshot: true, copies: 0, copyPolicy: 0, blockSizeShift: 0 });
  const clone = await create(t, { name: 'c', size: MB64, baseVid: base.vdiId, snapshot: false, copies: 0, copyPolicy: 0, blockSizeShift: 0 });
  await del(t, 'a', '', 1); // the snapshot: working VDI and clone still map the object
  assert.ok(io.objs.has(vidToDataOid(base.vdiId, 0)));
  await del(t, 'a', '', 0);
  assert.ok(io.objs.has(vidToDataOid(base.vdiId, 0)));
  await del(t, 'c', '', 0); // the last reference
  assert.ok(!io.objs.has(vidToDataOid(base.vdiId, 0)));
  void work; void clone;
});

test('a map entry may only point at the VDI itself or be cleared', async () => {
  const t = mk();
  const e = await create(t, { name: 'x', size: MB64, baseVid: 0, snapshot: false, copies: 0, copyPolicy: 0, blockSizeShift: 0 });
  const bad = Buffer.alloc(4);
  bad.writeUInt32LE(0x123456);
  await assert.rejects(t.writeInode(e.vdiId, 4664, bad), (err: SdError) => err.result === Res.INVALID_PARMS);
});

test('locks conflict only when enforced, and follow the working VDI through a snapshot', async () => {
  const t = mk();
  const w = await create(t, { name: 'l', size: MB64, baseVid: 0, snapshot: false, copies: 0, copyPolicy: 0, blockSizeShift: 0 });
  t.lock('l', '', 0, false, true);
  assert.throws(() => t.lock('l', '', 0, false, true), (e: SdError) => e.result === Res.VDI_LOCKED);
  assert.doesNotThrow(() => t.lock('l', '', 0, false, false));
  const w2 = await create(t, { name: 'l', size: MB64, baseVid: w.vdiId, snapshot: true, copies: 0, copyPolicy: 0, blockSizeShift: 0 });
  assert.deepEqual(t.lockList().map((l) => l.vid), [w2.vdiId]);
});

test('an alter-copy decision changes a standalone VDI\'s count, and refuses VDIs that share objects, snapshots and the same count', async () => {
  const t = mk();
  const base = { size: MB64, baseVid: 0, snapshot: false, copies: 2, copyPolicy: 0, blockSizeShift: 22 };
  const solo = await create(t, { ...base, name: 'solo' });
  assert.equal(t.applyAlterCopy(solo.vdiId, 3), 2);
  assert.equal(t.get(solo.vdiId)!.nrCopies, 3);
  assert.equal(t.exportState().vdis.find((v) => v.vdiId === solo.vdiId)!.nrCopies, 3); // what joining nodes take over
  assert.throws(() => t.applyAlterCopy(solo.vdiId, 3), (e) => e instanceof SdError && e.result === Res.INVALID_PARMS);

  const fam = await create(t, { ...base, name: 'fam' });
  const snap = await create(t, { ...base, name: 'fam', baseVid: fam.vdiId, snapshot: true });
  const invalid = (e: unknown) => e instanceof SdError && e.result === Res.INVALID_PARMS;
  assert.throws(() => t.applyAlterCopy(fam.vdiId, 3), invalid); // now the frozen snapshot, with a child
  assert.throws(() => t.applyAlterCopy(snap.vdiId, 3), invalid); // the working VDI has a parent
  assert.equal(t.get(snap.vdiId)!.nrCopies, 2);
  assert.throws(() => t.applyAlterCopy(0xabcdef, 3), (e) => e instanceof SdError && e.result === Res.NO_VDI);
});
