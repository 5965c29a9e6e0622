// The erasure-coded object I/O of the gateway (sheep/replication/erasure-io.ts) over six in-memory
// "nodes": partial writes keep strips and parity consistent, reads survive any two lost nodes, a
// new owner gets its strip rebuilt on demand.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import pino from 'pino';
import { ErasureIo, type StripOps } from '../../sheep/replication/erasure-io.js';
import { Res, SdError } from '../../lib/proto.js';
import { stripKey, stripSize, type EcPolicy } from '../../lib/erasure-layout.js';
import { decode } from '../../native/erasure.js';
import type { NodeInfo } from '../../lib/node.js';

const SIZE = 64 * 1024; // a small object keeps the test fast; the layout does not depend on the size
const EC: EcPolicy = { d: 4, p: 2 };
const OID = 0x00abcdef00000003n;

class Cluster {
  readonly nodes: NodeInfo[] = Array.from({ length: 6 }, (_, i) => ({ nid: `n${i}`, host: '127.0.0.1', port: 7000 + i, zone: i, vnodes: 64 }) as NodeInfo);
  readonly stores = new Map<string, Map<bigint, Buffer>>(this.nodes.map((n) => [n.nid, new Map()]));
  readonly down = new Set<string>();
  /** strip i lives on nodes[placement[i]] */
  placement = [0, 1, 2, 3, 4, 5];

  private store(n: NodeInfo): Map<bigint, Buffer> {
    if (this.down.has(n.nid)) throw new SdError(Res.NETWORK_ERROR, `${n.nid} is down`);
    return this.stores.get(n.nid)!;
  }

  ops(): StripOps {
    return {
      readStrip: async (n, oid, _ec, i, off, len) => {
        const b = this.store(n).get(stripKey(oid, i));
        if (!b) throw new SdError(Res.NO_OBJ);
        return Buffer.from(b.subarray(off, off + len));
      },
      writeStrip: async (n, oid, _ec, i, off, data) => {
        const b = this.store(n).get(stripKey(oid, i));
        if (!b) throw new SdError(Res.NO_OBJ);
        data.copy(b, off);
      },
      createStrip: async (n, oid, ec, i, off, data, ifAbsent) => {
        const s = this.store(n);
        if (ifAbsent && s.has(stripKey(oid, i))) return;
        const b = Buffer.alloc(stripSize(ec, SIZE));
        data.copy(b, off);
        s.set(stripKey(oid, i), b);
      },
      removeStrip: async (n, oid, _ec, i) => this.store(n).delete(stripKey(oid, i)),
      targets: () => this.placement.map((k) => this.nodes[k]),
      nodes: () => this.nodes,
      objectSize: () => SIZE,
      ioReady: async () => undefined,
      membershipChange: async () => { throw new SdError(Res.EIO, 'no membership change in this test'); },
      retryable: () => false,
    };
  }

  strip(i: number): Buffer {
    return this.stores.get(this.nodes[this.placement[i]].nid)!.get(stripKey(OID, i))!;
  }
}

const quiet = pino({ level: 'silent' });

test('random partial writes read back exactly, and the parity strips always decode the data', async () => {
  const c = new Cluster();
  const io = new ErasureIo(c.ops(), quiet);
  const expect = Buffer.alloc(SIZE);
  await io.create(OID, EC, 0, Buffer.alloc(0));
  for (let n = 0; n < 200; n++) {
    const off = crypto.randomInt(SIZE);
    const len = 1 + crypto.randomInt(Math.min(5000, SIZE - off));
    const data = crypto.randomBytes(len);
    await io.write(OID, EC, off, data);
    data.copy(expect, off);
  }
  assert.ok((await io.read(OID, EC, 0, SIZE)).equals(expect));
  assert.ok((await io.read(OID, EC, 1234, 777)).equals(expect.subarray(1234, 2011)));
  // data strips 0 and 1 from strips 2, 3 and the two parity strips: the parity is current
  const rebuilt = decode(4, 2, [c.strip(2), c.strip(3), c.strip(4), c.strip(5)], [2, 3, 4, 5], [0, 1]);
  assert.ok(rebuilt[0].equals(c.strip(0)) && rebuilt[1].equals(c.strip(1)));
});

test('the object reads back with any 2 of the 6 nodes down', async () => {
  const c = new Cluster();
  const io = new ErasureIo(c.ops(), quiet);
  const data = crypto.randomBytes(SIZE);
  await io.create(OID, EC, 0, data);
  for (let a = 0; a < 6; a++) {
    for (let b = a + 1; b < 6; b++) {
      c.down.clear();
      c.down.add(`n${a}`).add(`n${b}`);
      assert.ok((await io.read(OID, EC, 0, SIZE)).equals(data), `nodes ${a} and ${b} down`);
    }
  }
});

test('a write reaching a new owner without its strip rebuilds the strip there first', async () => {
  const c = new Cluster();
  const io = new ErasureIo(c.ops(), quiet);
  const data = crypto.randomBytes(SIZE);
  await io.create(OID, EC, 0, data);
  // the owner of strip 2 lacks it (placement moved it there and recovery has not run yet)
  c.stores.get('n2')!.delete(stripKey(OID, 2));
  const piece = crypto.randomBytes(100);
  await io.write(OID, EC, 40_000, piece);
  piece.copy(data, 40_000);
  assert.ok(c.strip(2), 'strip 2 is back on its node');
  c.down.add('n0').add('n1'); // and it is right: read without two other strips
  assert.ok((await io.read(OID, EC, 0, SIZE)).equals(data));
});

test('a 512-byte-aligned write reads nothing; an unaligned one reads only its partial stripes', async () => {
  const c = new Cluster();
  const ops = c.ops();
  let reads = 0;
  const counting: StripOps = { ...ops, readStrip: (...a) => { reads++; return ops.readStrip(...a); } };
  const io = new ErasureIo(counting, quiet);
  await io.create(OID, EC, 0, crypto.randomBytes(SIZE));
  reads = 0;
  await io.write(OID, EC, 4096, crypto.randomBytes(4096));
  assert.equal(reads, 0);
  await io.write(OID, EC, 4096 + 100, crypto.randomBytes(200)); // inside one stripe: its 4 data strips
  assert.equal(reads, 4);
});
