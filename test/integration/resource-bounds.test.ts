// Memory a client can make the daemon hold is bounded: payloads that stop half way, replies nobody
// reads, bursts of large reads, on port 7000 and over NBD, stay within --buffer-limit and the
// per-connection limits; the sheep keeps serving and its data is intact.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import { SheepProcess, startSheep, destroySheep, freePort, collie, collieHash } from '../helpers/sheep.js';
import { NbdConn } from '../helpers/nbd-client.js';
import { Op, encodeObjReq } from '../../lib/proto.js';
import { vidToDataOid } from '../../lib/oid.js';

const MB = 1024 * 1024;
let s: SheepProcess;
let nbdPort: number;
let vid: number;
let want: string;

function rss(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) * 1024 : 0;
}

/** The highest RSS of the sheep while `ms` pass. */
async function peakRss(pid: number, ms: number): Promise<number> {
  let peak = rss(pid);
  for (const end = Date.now() + ms; Date.now() < end;) {
    await new Promise((r) => setTimeout(r, 100));
    peak = Math.max(peak, rss(pid));
  }
  return peak;
}

function objHeader(opcode: number, oid: bigint, len: number, write: boolean): Buffer {
  return encodeObjReq({
    protoVer: 1, opcode, flags: write ? 1 : 0, epoch: 0, id: 1, dataLength: len,
    oid, cowOid: 0n, copies: 0, copyPolicy: 0, ecIndex: 0, tgtEpoch: 0, offset: 0n,
  });
}

async function connect(port: number): Promise<net.Socket> {
  const c = net.connect({ port, host: '127.0.0.1' });
  c.on('error', () => undefined);
  await new Promise((r) => c.once('connect', r));
  return c;
}

before(async () => {
  nbdPort = await freePort();
  s = await startSheep({ args: ['--buffer-limit', '64M', '--nbd', `127.0.0.1:${nbdPort}`] });
  assert.equal((await collie(s.port, ['vdi', 'create', 'big', '64M'])).code, 0);
  const data = crypto.randomBytes(64 * MB);
  assert.equal((await collie(s.port, ['vdi', 'write', 'big'], data)).code, 0);
  want = crypto.createHash('sha256').update(data).digest('hex');
  const c = await s.client();
  vid = await c.getVdiInfo('big');
  c.close();
});

after(async () => {
  await destroySheep(s);
});

test('20 connections each stopping 1 byte short of a 31 MiB payload do not make the sheep hold 600 MiB', async (t) => {
  const base = rss(s.pid);
  const payload = Buffer.alloc(31 * MB - 1, 0x5a);
  const socks: net.Socket[] = [];
  for (let i = 0; i < 20; i++) {
    const c = await connect(s.port);
    c.write(objHeader(Op.WRITE_OBJ, vidToDataOid(vid, i % 16), 31 * MB, true));
    c.write(payload); // the same buffer each time: the test itself holds it once
    socks.push(c);
  }
  const peak = await peakRss(s.pid, 3000);
  for (const c of socks) c.destroy();
  t.diagnostic(`sheep RSS ${Math.round(base / MB)} MiB before, ${Math.round(peak / MB)} MiB at the peak`);
  assert.ok(peak - base < 200 * MB, `RSS grew by ${Math.round((peak - base) / MB)} MiB`);
  assert.equal((await collieHash(s.port, ['vdi', 'read', 'big'])).sha256, want);
});

test('200 READ_OBJ of 4 MiB sent in one burst by a client that never reads stay bounded', async (t) => {
  const base = rss(s.pid);
  const c = await connect(s.port);
  c.pause(); // never read a reply
  const burst: Buffer[] = [];
  for (let i = 0; i < 200; i++) burst.push(objHeader(Op.READ_OBJ, vidToDataOid(vid, i % 16), 4 * MB, false));
  c.write(Buffer.concat(burst));
  const peak = await peakRss(s.pid, 3000);
  c.destroy();
  t.diagnostic(`sheep RSS ${Math.round(base / MB)} MiB before, ${Math.round(peak / MB)} MiB at the peak`);
  assert.ok(peak - base < 250 * MB, `RSS grew by ${Math.round((peak - base) / MB)} MiB`);
  // a well-behaved client is served meanwhile and afterwards
  assert.equal((await collieHash(s.port, ['vdi', 'read', 'big'])).sha256, want);
});

test('24 NBD reads of 32 MiB that the client never reads stay bounded', async (t) => {
  const base = rss(s.pid);
  const conn = await NbdConn.open({ port: nbdPort, host: '127.0.0.1' }, 'big');
  conn.s.sock.pause();
  const reqs: Buffer[] = [];
  for (let i = 0; i < 24; i++) {
    const h = Buffer.alloc(28);
    h.writeUInt32BE(0x25609513, 0);
    h.writeUInt16BE(0, 6); // READ
    h.writeBigUInt64BE(BigInt(i + 1), 8);
    h.writeBigUInt64BE(BigInt((i % 2) * 32 * MB), 16);
    h.writeUInt32BE(32 * MB, 24);
    reqs.push(h);
  }
  conn.s.sock.write(Buffer.concat(reqs));
  const peak = await peakRss(s.pid, 4000);
  conn.s.sock.destroy();
  t.diagnostic(`sheep RSS ${Math.round(base / MB)} MiB before, ${Math.round(peak / MB)} MiB at the peak`);
  assert.ok(peak - base < 250 * MB, `RSS grew by ${Math.round((peak - base) / MB)} MiB`);
  assert.equal((await collieHash(s.port, ['vdi', 'read', 'big'])).sha256, want);
});
