// Bad input never crashes sheep: malformed headers, absurd lengths, unknown opcodes, truncated
// payloads, out-of-range offsets, and a 10,000-request fuzz run with bounded memory.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import crypto from 'node:crypto';
import fs from 'node:fs';
import { startSheep, destroySheep, type SheepProcess } from '../helpers/sheep.js';
import { SheepClient } from '../../lib/client.js';
import { OpenVdi } from '../../lib/vdi-io.js';
import { Op, Flag, Res, encodeObjReq, encodeVdiReq, encodePlainReq, encodeNameTag, decodeRsp, SD_HEADER_SIZE } from '../../lib/proto.js';
import { vidToVdiOid, vidToDataOid } from '../../lib/oid.js';
import { SD_INODE_SIZE, SD_INODE_SIZE_V1, SD_INODE_HEADER_SIZE } from '../../lib/inode.js';

let sheep: SheepProcess;
let vid = 0;
const PATTERN = Buffer.alloc(1 << 20, 0x77);

before(async () => {
  sheep = await startSheep({ copies: 1 });
  const c = await sheep.client();
  vid = await c.newVdi('fuzz-target', 64n << 20n);
  const v = await OpenVdi.open(c, vid);
  await v.write(0, PATTERN);
  c.close();
});
after(async () => { if (sheep) await destroySheep(sheep); });

/** Sends raw bytes on a fresh connection; resolves with the first reply header, or 'closed'/'timeout'. */
function rawExchange(bytes: Buffer, timeoutMs = 3000): Promise<Buffer | 'closed' | 'timeout'> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port: sheep.port });
    let got = Buffer.alloc(0);
    const t = setTimeout(() => { s.destroy(); resolve('timeout'); }, timeoutMs);
    s.on('data', (d) => {
      got = Buffer.concat([got, d]);
      if (got.length >= SD_HEADER_SIZE) { clearTimeout(t); s.destroy(); resolve(got.subarray(0, SD_HEADER_SIZE)); }
    });
    s.on('close', () => { clearTimeout(t); resolve(got.length >= SD_HEADER_SIZE ? got.subarray(0, SD_HEADER_SIZE) : 'closed'); });
    s.on('error', () => undefined);
    s.write(bytes);
  });
}

const objReq = (opcode: number, flags: number, oid: bigint, len: number, offset = 0n) =>
  encodeObjReq({ protoVer: 0, opcode, flags, epoch: 0, id: 7, dataLength: len, oid, cowOid: 0n, copies: 0, copyPolicy: 0, ecIndex: 0, tgtEpoch: 0, offset });

function resultOf(r: Buffer | 'closed' | 'timeout'): number | string {
  return typeof r === 'string' ? r : decodeRsp(r).result;
}

test('an unknown opcode is answered UNKNOWN', async () => {
  const h = encodePlainReq({ protoVer: 0, opcode: 0x7e, flags: 0, epoch: 0, id: 1, dataLength: 0 });
  assert.equal(resultOf(await rawExchange(h)), Res.UNKNOWN);
});

test('a newer protocol version is answered VER_MISMATCH', async () => {
  const h = encodePlainReq({ protoVer: 9, opcode: Op.READ_VDIS, flags: 0, epoch: 0, id: 1, dataLength: 16 });
  assert.equal(resultOf(await rawExchange(h)), Res.VER_MISMATCH);
});

test('an absurd payload length is refused and that connection dropped', async () => {
  const h = objReq(Op.WRITE_OBJ, Flag.CMD_WRITE, vidToDataOid(vid, 0), 0xfffffff0);
  assert.equal(resultOf(await rawExchange(h)), Res.INVALID_PARMS);
});

test('a read past the end of an object is INVALID_PARMS', async () => {
  assert.equal(resultOf(await rawExchange(objReq(Op.READ_OBJ, 0, vidToDataOid(vid, 0), 4096, BigInt((4 << 20) - 1024)))), Res.INVALID_PARMS);
  assert.equal(resultOf(await rawExchange(objReq(Op.READ_OBJ, 0, vidToDataOid(vid, 0), 0x7fffffff))), Res.INVALID_PARMS);
});

test('an inode read as dog 1.0 reads it (12,587,576 bytes) gets the stored inode and a zero tail; writes there are refused', async () => {
  const c = await sheep.client();
  try {
    const stored = await c.readObj(vidToVdiOid(vid), 0, SD_INODE_SIZE);
    const whole = await c.readObj(vidToVdiOid(vid), 0, SD_INODE_SIZE_V1);
    assert.equal(whole.length, 12_587_576);
    assert.ok(whole.subarray(0, SD_INODE_SIZE).equals(stored));
    assert.ok(stored.readUInt32LE(SD_INODE_HEADER_SIZE) === vid, 'the map names the written block');
    assert.ok(whole.subarray(SD_INODE_SIZE).every((b) => b === 0));
  } finally {
    c.close();
  }
  const intoTail = Buffer.concat([objReq(Op.WRITE_OBJ, Flag.CMD_WRITE, vidToVdiOid(vid), 8, BigInt(SD_INODE_SIZE)), Buffer.alloc(8)]);
  assert.equal(resultOf(await rawExchange(intoTail)), Res.INVALID_PARMS);
  assert.equal(resultOf(await rawExchange(objReq(Op.READ_OBJ, 0, vidToVdiOid(vid), 8, BigInt(SD_INODE_SIZE_V1)))), Res.INVALID_PARMS);
});

test('an oid of no valid kind is INVALID_PARMS', async () => {
  assert.equal(resultOf(await rawExchange(objReq(Op.READ_OBJ, 0, 0xff00000000000000n, 16))), Res.INVALID_PARMS);
  const inodeCreate = Buffer.concat([objReq(Op.CREATE_AND_WRITE_OBJ, Flag.CMD_WRITE, vidToVdiOid(vid), 4), Buffer.alloc(4)]);
  assert.equal(resultOf(await rawExchange(inodeCreate)), Res.INVALID_PARMS);
});

test('a write beyond the VDI size is INVALID_PARMS', async () => {
  const beyond = Buffer.concat([objReq(Op.CREATE_AND_WRITE_OBJ, Flag.CMD_WRITE, vidToDataOid(vid, 100), 8), Buffer.alloc(8)]);
  assert.equal(resultOf(await rawExchange(beyond)), Res.INVALID_PARMS);
});

test('a client vanishing in the middle of a payload leaves nothing half-written', async () => {
  const h = objReq(Op.CREATE_AND_WRITE_OBJ, Flag.CMD_WRITE, vidToDataOid(vid, 5), 4 << 20);
  assert.equal(await rawExchange(Buffer.concat([h, Buffer.alloc(1 << 20, 1)]), 500), 'timeout');
  const c = await sheep.client();
  try {
    const v = await OpenVdi.open(c, vid);
    assert.equal(v.map[5], 0);
    assert.ok(!fs.existsSync(`${sheep.dir}/obj/${vidToDataOid(vid, 5).toString(16).padStart(16, '0')}`));
  } finally {
    c.close();
  }
});

function rssKb(pid: number): number {
  const m = /VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : 0;
}

/** Seeds: valid requests of every client op, to mutate. */
function seeds(): Array<[Buffer, Buffer]> {
  const name = encodeNameTag('fuzz-target', '');
  const vdiH = (op: number, len: number) => encodeVdiReq({ protoVer: 1, opcode: op, flags: len ? Flag.CMD_WRITE : 0, epoch: 0, id: 1, dataLength: len, vdiSize: 64n << 20n, baseVdiId: 0, copies: 0, copyPolicy: 0, storePolicy: 0, blockSizeShift: 22, snapid: 0, type: 0 });
  return [
    [objReq(Op.READ_OBJ, 0, vidToVdiOid(vid), 4664), Buffer.alloc(0)],
    [objReq(Op.READ_OBJ, 0, vidToDataOid(vid, 0), 4096), Buffer.alloc(0)],
    [objReq(Op.WRITE_OBJ, Flag.CMD_WRITE, vidToDataOid(vid, 1), 512, 4096n), Buffer.alloc(512, 3)],
    [objReq(Op.CREATE_AND_WRITE_OBJ, Flag.CMD_WRITE, vidToDataOid(vid, 2), 512), Buffer.alloc(512, 4)],
    [objReq(Op.WRITE_OBJ, Flag.CMD_WRITE, vidToVdiOid(vid), 4, 4664n + 8n), Buffer.alloc(4)],
    [objReq(Op.FLUSH_VDI, 0, vidToVdiOid(vid), 0), Buffer.alloc(0)],
    [objReq(Op.DISCARD_OBJ, 0, vidToDataOid(vid, 3), 0), Buffer.alloc(0)],
    [vdiH(Op.NEW_VDI, 256), encodeNameTag('fuzz-new')],
    [vdiH(Op.LOCK_VDI, 512), Buffer.concat([name, Buffer.alloc(256)])],
    [vdiH(Op.GET_VDI_INFO, 512), Buffer.concat([name, Buffer.alloc(256)])],
    [vdiH(Op.RELEASE_VDI, 12), Buffer.from('fuzz-target\0')],
    [encodePlainReq({ protoVer: 0, opcode: Op.READ_VDIS, flags: 0, epoch: 0, id: 1, dataLength: 1 << 21 }), Buffer.alloc(0)],
    [encodePlainReq({ protoVer: 1, opcode: Op.GET_CLUSTER_DEFAULT, flags: 0, epoch: 0, id: 1, dataLength: 0 }), Buffer.alloc(0)],
  ];
}

/** Admin ops that are valid but destructive: a fuzzer must not format or stop the cluster, or stop a sheep. */
const FORBIDDEN = new Set<number>([Op.MAKE_FS, Op.SHUTDOWN, Op.KILL_NODE]);

function mutate(rnd: () => number, seed: [Buffer, Buffer]): Buffer {
  let h: Buffer;
  let p: Buffer;
  if (rnd() < 0.3) {
    h = crypto.randomBytes(SD_HEADER_SIZE);
    p = Buffer.alloc(0);
  } else {
    h = Buffer.from(seed[0]);
    p = Buffer.from(seed[1]);
    const flips = 1 + Math.floor(rnd() * 4);
    for (let i = 0; i < flips; i++) h[Math.floor(rnd() * SD_HEADER_SIZE)] = Math.floor(rnd() * 256);
    if (p.length && rnd() < 0.5) p[Math.floor(rnd() * p.length)] ^= 0xff;
  }
  if (FORBIDDEN.has(h[1])) h[1] = Op.READ_OBJ;
  const write = (h.readUInt16LE(2) & Flag.CMD_WRITE) !== 0;
  let len = h.readUInt32LE(12);
  if (write && len > 64 * 1024 && len <= 32 * 1024 * 1024) {
    len = Math.floor(rnd() * 65536); // keep the payloads we must send small
    h.writeUInt32LE(len, 12);
  }
  if (!write) return h;
  if (len > 32 * 1024 * 1024) return h; // the server must refuse and close
  if (p.length !== len) p = Buffer.concat([p, crypto.randomBytes(Math.max(0, len - p.length))]).subarray(0, len);
  return Buffer.concat([h, p]);
}

test('10,000 random and mutated requests: sheep stays up, memory stays bounded, clients still work', async () => {
  let state = 0x12345678;
  const rnd = () => ((state = (Math.imul(state, 1103515245) + 12345) >>> 0) / 2 ** 32);
  const corpus = seeds();
  const rssBefore = rssKb(sheep.pid);
  let timeouts = 0;
  let answered = 0;
  let closed = 0;
  const TOTAL = 10000;
  const WORKERS = 8;
  let next = 0;
  await Promise.all(Array.from({ length: WORKERS }, async () => {
    while (next < TOTAL) {
      // batches on one connection: some requests share it, some get their own
      const batch: Buffer[] = [];
      const n = 1 + Math.floor(rnd() * 20);
      for (let i = 0; i < n && next < TOTAL; i++, next++) batch.push(mutate(rnd, corpus[Math.floor(rnd() * corpus.length)]));
      for (const req of batch) {
        const r = await rawExchange(req, 3000);
        if (r === 'timeout') timeouts++;
        else if (r === 'closed') closed++;
        else answered++;
      }
    }
  }));
  assert.ok(sheep.alive, `sheep died: ${sheep.stderr}`);
  assert.equal(timeouts, 0, 'every request is answered or its connection closed');
  assert.equal(answered + closed, TOTAL);
  const rssAfter = rssKb(sheep.pid);
  assert.ok(rssAfter < 400 * 1024, `RSS ${rssAfter} kB (before ${rssBefore} kB) stays bounded`);
  // a valid client still works and the data is intact
  const c = await SheepClient.connect({ port: sheep.port });
  try {
    assert.deepEqual(await c.getClusterDefault(), { nrCopies: 1, copyPolicy: 0, blockSizeShift: 22 });
    const v = await OpenVdi.open(c, await c.getVdiInfo('fuzz-target'));
    assert.deepEqual(await v.read(0, 4096), PATTERN.subarray(0, 4096));
  } finally {
    c.close();
  }
});
