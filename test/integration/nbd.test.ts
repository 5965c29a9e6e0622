// The NBD export with real clients from Debian (qemu-img, qemu-io, nbdinfo, nbdcopy) and a raw
// client for errno values, access lists and bad input.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { startSheep, destroySheep, collie, freePort, tempDir, run, type SheepProcess } from '../helpers/sheep.js';
import { NbdConn, RawSocket, greet, option, readOptionReply, goData, NBD_CMD } from '../helpers/nbd-client.js';
import { SheepClient } from '../../lib/client.js';
import { OpenVdi } from '../../lib/vdi-io.js';

const MB = 1 << 20;
const EPERM = 1, EINVAL = 22, ENOSPC = 28, EOVERFLOW = 75;
let sheep: SheepProcess;
let nbdPort: number;
let sockPath: string;
let work: string;
let raw256: string;

before(async () => {
  work = await tempDir('nbd-test-');
  nbdPort = await freePort();
  sockPath = path.join(work, 'nbd.sock');
  sheep = await startSheep({
    copies: 1,
    args: ['--nbd', `127.0.0.1:${nbdPort}`, '--nbd-socket', sockPath, '--nbd-deny', '127.0.0.2/32', '--nbd-readonly', 'golden'],
  });
  raw256 = path.join(work, 'random.raw');
  await fs.writeFile(raw256, crypto.randomBytes(256 * MB));
});
after(async () => {
  if (sheep) await destroySheep(sheep);
  await fs.rm(work, { recursive: true, force: true });
});

const uri = (name: string) => `nbd://127.0.0.1:${nbdPort}/${name}`;
async function sh(cmd: string, args: string[]): Promise<string> {
  const r = await run(cmd, args, undefined, 300000);
  assert.equal(r.code, 0, `${cmd} ${args.join(' ')}: ${r.stderr}${r.stdout.toString().slice(-2000)}`);
  return r.stdout.toString();
}
async function create(name: string, size: string): Promise<void> {
  const r = await collie(sheep.port, ['vdi', 'create', name, size]);
  assert.equal(r.code, 0, r.stderr);
}

test('qemu-img convert into an NBD export and qemu-img compare: identical, over TCP and the Unix socket', async () => {
  await create('disk', '256M');
  await sh('qemu-img', ['convert', '-n', '-f', 'raw', '-O', 'raw', raw256, uri('disk')]);
  assert.match(await sh('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', raw256, uri('disk')]), /Images are identical/);
  assert.match(await sh('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', raw256, `nbd+unix:///disk?socket=${sockPath}`]), /Images are identical/);
  await create('disk2', '256M');
  await sh('qemu-img', ['convert', '-n', '-f', 'raw', '-O', 'raw', raw256, `nbd+unix:///disk2?socket=${sockPath}`]);
  assert.match(await sh('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', raw256, uri('disk2')]), /Images are identical/);
});

test('qemu-io read/write/discard/write-zeroes patterns verify', async () => {
  await create('pat', '64M');
  const out = await sh('qemu-io', ['-f', 'raw',
    '-c', 'write -P 0xab 0 64k', '-c', 'write -P 0xcd 4M 8k', '-c', 'read -P 0xab 0 64k', '-c', 'read -P 0 128k 4k',
    '-c', 'write -P 0x11 8M 4M', '-c', 'discard 8M 4M', '-c', 'read -P 0 8M 4M',
    '-c', 'write -z 4M 4k', '-c', 'read -P 0 4M 4k', '-c', 'read -P 0xcd 4100k 4k',
    '-c', 'write -P 0x22 16M 1M', '-c', 'write -z 16M 4M', '-c', 'read -P 0 16M 4M',
    '-c', 'write -P 0x33 20M 8k', '-c', 'flush', '-c', 'read -P 0x33 20M 8k', uri('pat')]);
  assert.doesNotMatch(out, /Pattern verification failed|failed/);
});

test('qemu-img map shows holes for unwritten ranges', async () => {
  const map = JSON.parse(await sh('qemu-img', ['map', '-f', 'raw', '--output=json', uri('pat')])) as Array<{ start: number; length: number; data: boolean; zero: boolean }>;
  const at = (off: number) => map.find((e) => e.start <= off && off < e.start + e.length)!;
  assert.equal(at(0).data, true);
  assert.equal(at(8 * MB).data, false, 'the discarded object is a hole');
  assert.equal(at(40 * MB).data, false, 'never written');
  assert.equal(at(40 * MB).zero, true);
});

test('nbdinfo --list lists the VDIs and nbdcopy round-trips identical data', async () => {
  const list = await sh('nbdinfo', ['--list', `nbd://127.0.0.1:${nbdPort}`]);
  for (const n of ['disk', 'disk2', 'pat']) assert.match(list, new RegExp(`export="${n}"`));
  const outFile = path.join(work, 'copy.raw');
  await sh('nbdcopy', [uri('disk'), outFile]);
  assert.equal(await sh('cmp', [outFile, raw256]), '');
  await create('viacopy', '256M');
  await sh('nbdcopy', [raw256, uri('viacopy')]);
  assert.match(await sh('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', raw256, uri('viacopy')]), /Images are identical/);
});

test('data written over NBD reads back over port 7000, and the reverse', async () => {
  const c = await SheepClient.connect({ port: sheep.port });
  try {
    const v = await OpenVdi.open(c, await c.getVdiInfo('disk'));
    const want = (await fs.readFile(raw256)).subarray(100 * MB, 104 * MB);
    assert.deepEqual(await v.read(100 * MB, 4 * MB), want);
    const mine = crypto.randomBytes(3 * MB);
    await v.write(200 * MB + 4096, mine);
    await c.flushVdi(v.vid);
    const conn = await NbdConn.open({ host: '127.0.0.1', port: nbdPort }, 'disk');
    const r = await conn.cmd(NBD_CMD.READ, 200 * MB + 4096, 3 * MB);
    conn.close();
    assert.equal(r.error, 0);
    assert.deepEqual(r.data, mine);
  } finally {
    c.close();
  }
});

test('a snapshot export is read-only, reads the snapshot, and refuses writes with EPERM', async () => {
  await create('snapme', '16M');
  await sh('qemu-io', ['-f', 'raw', '-c', 'write -P 0x41 0 1M', uri('snapme')]);
  assert.equal((await collie(sheep.port, ['vdi', 'snapshot', '-s', 'v1', 'snapme'])).code, 0);
  await sh('qemu-io', ['-f', 'raw', '-c', 'write -P 0x42 0 1M', uri('snapme')]);
  await sh('qemu-io', ['-f', 'raw', '-r', '-c', 'read -P 0x41 0 1M', uri('snapme@v1')]);
  await sh('qemu-io', ['-f', 'raw', '-r', '-c', 'read -P 0x41 0 1M', uri('snapme@1')]);
  await sh('qemu-io', ['-f', 'raw', '-r', '-c', 'read -P 0x42 0 1M', uri('snapme')]);
  const conn = await NbdConn.open({ host: '127.0.0.1', port: nbdPort }, 'snapme@v1');
  assert.ok(conn.flags & 2, 'NBD_FLAG_READ_ONLY');
  assert.equal((await conn.cmd(NBD_CMD.WRITE, 0, 512, Buffer.alloc(512, 1))).error, EPERM);
  assert.equal((await conn.cmd(NBD_CMD.TRIM, 0, 4096)).error, EPERM);
  conn.close();
});

test('an export listed in --nbd-readonly refuses writes', async () => {
  await create('golden', '8M');
  const conn = await NbdConn.open({ host: '127.0.0.1', port: nbdPort }, 'golden');
  assert.ok(conn.flags & 2);
  assert.equal((await conn.cmd(NBD_CMD.WRITE, 0, 512, Buffer.alloc(512, 1))).error, EPERM);
  conn.close();
});

test('a second writer is refused while the first holds the VDI; readers are not', async () => {
  await create('shared', '8M');
  const a = await NbdConn.open({ host: '127.0.0.1', port: nbdPort }, 'shared');
  assert.equal((await a.cmd(NBD_CMD.WRITE, 0, 4096, Buffer.alloc(4096, 7))).error, 0);
  const b = await NbdConn.open({ host: '127.0.0.1', port: nbdPort }, 'shared');
  assert.equal((await b.cmd(NBD_CMD.WRITE, 0, 4096, Buffer.alloc(4096, 8))).error, EPERM);
  const rd = await b.cmd(NBD_CMD.READ, 0, 4096);
  assert.deepEqual(rd.data, Buffer.alloc(4096, 7));
  assert.match((await collie(sheep.port, ['vdi', 'lock', 'list'])).stdout.toString(), /shared .* nbd:127\.0\.0\.1:\d+/);
  a.close();
  b.close();
  // once the writer is gone its lock goes too
  await new Promise((r) => setTimeout(r, 300));
  const c = await NbdConn.open({ host: '127.0.0.1', port: nbdPort }, 'shared');
  assert.equal((await c.cmd(NBD_CMD.WRITE, 0, 4096, Buffer.alloc(4096, 9))).error, 0);
  c.close();
});

test('a denied address gets NBD_REP_ERR_POLICY; an allowed one works', async () => {
  const s = await RawSocket.connect({ host: '127.0.0.1', port: nbdPort, localAddress: '127.0.0.2' });
  await greet(s);
  s.write(option(7, goData('disk')));
  const r = await readOptionReply(s);
  assert.equal(r!.type, 2 ** 31 + 2, 'NBD_REP_ERR_POLICY');
  assert.match(r!.data.toString(), /deny list/);
  s.destroy();
  const ok = await NbdConn.open({ host: '127.0.0.1', port: nbdPort, localAddress: '127.0.0.1' }, 'disk');
  assert.equal((await ok.cmd(NBD_CMD.READ, 0, 512)).error, 0);
  ok.close();
});

test('an allow list refuses everyone outside it', async () => {
  const dir = await tempDir();
  const port = await freePort();
  const s2 = await startSheep({ args: ['--nbd', `127.0.0.1:${port}`, '--nbd-allow', '10.99.0.0/16'] });
  try {
    await collie(s2.port, ['vdi', 'create', 'x', '8M']);
    const r = await run('nbdinfo', [`nbd://127.0.0.1:${port}/x`]);
    assert.notEqual(r.code, 0, 'nbdinfo is refused');
    const s = await RawSocket.connect({ host: '127.0.0.1', port });
    await greet(s);
    s.write(option(7, goData('x')));
    const rep = await readOptionReply(s);
    assert.equal(rep!.type, 2 ** 31 + 2, 'NBD_REP_ERR_POLICY');
    assert.match(rep!.data.toString(), /127\.0\.0\.1 is not in the allow list/);
    s.destroy();
  } finally {
    await destroySheep(s2);
    await fs.rm(dir, { recursive: true, force: true });
  }
});

test('bad requests get NBD errors and never wedge the server', async () => {
  const conn = await NbdConn.open({ host: '127.0.0.1', port: nbdPort }, 'pat');
  assert.equal((await conn.cmd(NBD_CMD.READ, 64 * MB, 4096)).error, EINVAL, 'read past the end');
  assert.equal((await conn.cmd(NBD_CMD.WRITE, 64 * MB - 100, 512, Buffer.alloc(512))).error, ENOSPC, 'write past the end');
  assert.equal((await conn.cmd(NBD_CMD.READ, 0, 64 * MB)).error, EOVERFLOW, 'oversized read');
  assert.equal((await conn.cmd(99, 0, 0)).error, EINVAL, 'unknown command');
  assert.equal((await conn.cmd(NBD_CMD.BLOCK_STATUS, 0, 4096)).error, EINVAL, 'block status without a meta context');
  assert.equal((await conn.cmd(NBD_CMD.READ, 0, 16)).error, 0, 'the connection still works');
  conn.close();

  // an unknown option is answered ERR_UNSUP, and the handshake can go on
  const s = await RawSocket.connect({ host: '127.0.0.1', port: nbdPort });
  await greet(s);
  s.write(option(4242));
  assert.equal((await readOptionReply(s))!.type, 2 ** 31 + 1);
  s.write(option(7, goData('no-such-vdi')));
  assert.equal((await readOptionReply(s))!.type, 2 ** 31 + 6, 'NBD_REP_ERR_UNKNOWN');
  s.destroy();

  // wrong magic: the server hangs up
  const w = await RawSocket.connect({ host: '127.0.0.1', port: nbdPort });
  await greet(w);
  w.write(Buffer.from('NOTMAGIC00000000'));
  assert.ok(await w.closedByServer());

  // a client vanishing in the middle of a write payload
  const v = await NbdConn.open({ host: '127.0.0.1', port: nbdPort }, 'pat');
  const h = Buffer.alloc(28);
  h.writeUInt32BE(0x25609513, 0);
  h.writeUInt16BE(NBD_CMD.WRITE, 6);
  h.writeBigUInt64BE(40n * BigInt(MB), 16);
  h.writeUInt32BE(4 * MB, 24);
  v.s.write(Buffer.concat([h, Buffer.alloc(MB, 0x5f)]));
  v.s.destroy();
  await new Promise((r) => setTimeout(r, 200));
  await sh('qemu-io', ['-f', 'raw', '-r', '-c', 'read -P 0 40M 4M', uri('pat')]);
  assert.ok(sheep.alive);
});
