// A hostile network: with a cluster key, unauthenticated connections may send only what QEMU's
// driver sends; admin and peer opcodes need a connection that proved the key; a sheep with another
// key cannot join; bad key files, bad store directories and malformed payloads get clear refusals.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import crypto from 'node:crypto';
import { SheepClient } from '../../lib/client.js';
import { Op, Res, SdError, encodeObjReq, encodePlainReq, SD_HEADER_SIZE } from '../../lib/proto.js';
import { vidToVdiOid, vidToDataOid } from '../../lib/oid.js';
import { pack } from 'msgpackr';
import { SheepProcess, tempDir, freePort, run, collie, collieHash, stopSequencer, SHEEP, COLLIE, pidRunning } from '../helpers/sheep.js';

let root: string;
let keyFile: string;
let otherKey: string;
let s: SheepProcess;
const VDI_SIZE = 16 * 1024 * 1024;

async function authed(port: number, key = keyFile): Promise<SheepClient> {
  const c = await SheepClient.connect({ port });
  await c.authenticate(Buffer.from((await fs.readFile(key, 'utf8')).trim(), 'hex'), 'admin');
  return c;
}

function colliek(port: number, args: string[], input?: Buffer | string) {
  return collie(port, [...args, '-k', keyFile], input);
}

async function resultOf(c: SheepClient, header: Buffer, payload?: Buffer): Promise<number> {
  return (await c.send(header, payload)).rsp.result;
}

function peerHeader(opcode: number, oid: bigint, len: number, write: boolean): Buffer {
  return encodeObjReq({
    protoVer: 0, opcode, flags: write ? 1 : 0, epoch: 0, id: 0, dataLength: len,
    oid, cowOid: 0n, copies: 0, copyPolicy: 0, ecIndex: 0, tgtEpoch: 0, offset: 0n,
  });
}

async function vdiHash(port: number, name: string): Promise<string> {
  const r = await collieHash(port, ['vdi', 'read', name, '-k', keyFile]);
  assert.equal(r.code, 0, r.stderr);
  return r.sha256;
}

before(async () => {
  root = await tempDir('security-');
  keyFile = path.join(root, 'cluster.key');
  otherKey = path.join(root, 'other.key');
  for (const f of [keyFile, otherKey]) {
    const r = await run(process.execPath, [COLLIE, 'cluster', 'keygen', f]);
    assert.equal(r.code, 0, r.stderr);
  }
  s = await new SheepProcess(path.join(root, 'store'), await freePort(), ['--cluster-key', keyFile, '-c', `local:${root}/cluster`, '--readonly-vdi', 'golden']).start();
  const fmt = await colliek(s.port, ['cluster', 'format', '-c', '1', '-f']);
  assert.equal(fmt.code, 0, fmt.stderr);
  for (const name of ['victim', 'golden']) {
    assert.equal((await colliek(s.port, ['vdi', 'create', name, String(VDI_SIZE)])).code, 0);
    const w = await colliek(s.port, ['vdi', 'write', name], crypto.randomBytes(VDI_SIZE));
    assert.equal(w.code, 0, w.stderr);
  }
});

after(async () => {
  await s?.stop();
  await stopSequencer(`${root}/cluster`);
  await fs.rm(root, { recursive: true, force: true });
});

test('collie cluster keygen writes a 0600 key and refuses to overwrite one', async () => {
  const st = await fs.stat(keyFile);
  assert.equal(st.mode & 0o777, 0o600);
  assert.match((await fs.readFile(keyFile, 'utf8')).trim(), /^[0-9a-f]{64}$/);
  const again = await run(process.execPath, [COLLIE, 'cluster', 'keygen', keyFile]);
  assert.equal(again.code, 1);
  assert.match(again.stderr, /exists already/);
  // keygen makes the key: a SHEEPDOG_KEY_FILE naming the file it is about to write must not stop it
  const fresh = path.join(root, 'fresh.key');
  const viaEnv = await run('/usr/bin/env', [`SHEEPDOG_KEY_FILE=${fresh}`, process.execPath, COLLIE, 'cluster', 'keygen', fresh]);
  assert.equal(viaEnv.code, 0, viaEnv.stderr);
  assert.equal((await fs.stat(fresh)).mode & 0o777, 0o600);
});

test('without authentication every admin and peer opcode of the attack list is refused and logged', async () => {
  const before = await vdiHash(s.port, 'victim');
  const c = await s.client();
  try {
    const inode = vidToVdiOid(0); // any object: refused before it is looked at
    const plain = (op: number, payload?: Buffer) => encodePlainReq({ protoVer: 0, opcode: op, flags: payload ? 1 : 0, epoch: 0, id: 0, dataLength: payload?.length ?? 0 });
    const refused: Array<[string, Buffer, Buffer?]> = [
      ['MAKE_FS', plain(Op.MAKE_FS, pack({ copies: 1 })), pack({ copies: 1 })],
      ['SHUTDOWN', plain(Op.SHUTDOWN)],
      ['DISABLE_RECOVER', plain(Op.DISABLE_RECOVER)],
      ['GET_OBJ_LIST', plain(Op.GET_OBJ_LIST)],
      // the cluster state the master offers a joiner: VDI names and locks
      ['GET_SNAPSHOT', plain(Op.GET_SNAPSHOT, Buffer.from('127.0.0.1:7000#1')), Buffer.from('127.0.0.1:7000#1')],
      ['STAT_CLUSTER', plain(Op.STAT_CLUSTER)],
      ['WRITE_PEER', peerHeader(Op.WRITE_PEER, inode, 8, true), Buffer.alloc(8)],
      ['CREATE_AND_WRITE_PEER', peerHeader(Op.CREATE_AND_WRITE_PEER, inode, 8, true), Buffer.alloc(8)],
      ['REMOVE_PEER', peerHeader(Op.REMOVE_PEER, inode, 0, false)],
      // the administration added with the original's remaining commands
      ['KILL_NODE', plain(Op.KILL_NODE)],
      ['SET_VNODES', plain(Op.SET_VNODES, pack({ vnodes: 1 })), pack({ vnodes: 1 })],
      ['REWEIGHT', plain(Op.REWEIGHT)],
      ['ALTER_CLUSTER_COPY', plain(Op.ALTER_CLUSTER_COPY, pack({ copies: 1 })), pack({ copies: 1 })],
      ['ALTER_VDI_COPY', plain(Op.ALTER_VDI_COPY, pack({ name: 'victim', copies: 1 })), pack({ name: 'victim', copies: 1 })],
      ['SET_LOGLEVEL', plain(Op.SET_LOGLEVEL, pack({ level: 'trace' })), pack({ level: 'trace' })],
      ['MD_PLUG', plain(Op.MD_PLUG, pack({ paths: ['/tmp'] })), pack({ paths: ['/tmp'] })],
      ['MD_UNPLUG', plain(Op.MD_UNPLUG, pack({ paths: ['/tmp'] })), pack({ paths: ['/tmp'] })],
    ];
    for (const [name, hdr, payload] of refused) assert.equal(await resultOf(c, hdr, payload), Res.ACCESS_DENIED, name);
  } finally {
    c.close();
  }
  assert.equal(await vdiHash(s.port, 'victim'), before);
  const log = await fs.readFile(path.join(s.dir, 'sheep.log'), 'utf8');
  assert.match(log, /refused: MAKE_FS needs an authenticated admin connection/);
  assert.match(log, /"peer":"127\.0\.0\.1:\d+"/);
});

test('the same requests succeed on a connection that proved the key', async () => {
  const c = await authed(s.port);
  try {
    const st = await c.control<{ status: string }>(Op.STAT_CLUSTER);
    assert.equal(st.status, 'running');
    const list = await c.control<Array<[string, number]>>(Op.GET_OBJ_LIST);
    assert.ok(list.length > 0);
  } finally {
    c.close();
  }
  const r = await colliek(s.port, ['cluster', 'info']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout.toString(), /running/);
});

test('collie without the key is told what is missing', async () => {
  const r = await run(process.execPath, [COLLIE, 'cluster', 'info', '-a', '127.0.0.1', '-p', String(s.port)]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /Permission denied.*--key FILE/);
});

test('collie with another key is refused, and so is a sheep that cannot prove the key', async () => {
  const r = await collie(s.port, ['cluster', 'info', '-k', otherKey]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /authentication with 127\.0\.0\.1:\d+ failed/);
  await assert.rejects(authed(s.port, otherKey), (e: unknown) => e instanceof SdError && e.result === Res.ACCESS_DENIED);
});

test('a key file readable by others is refused by collie and by sheep', async () => {
  const loose = path.join(root, 'loose.key');
  await fs.copyFile(keyFile, loose);
  await fs.chmod(loose, 0o644);
  const c = await collie(s.port, ['cluster', 'info', '-k', loose]);
  assert.equal(c.code, 64);
  assert.match(c.stderr, /accessible by others.*chmod 600/);
  const r = await run(process.execPath, [SHEEP, '-f', '-p', String(await freePort()), '--cluster-key', loose, '-c', `local:${root}/c2`, path.join(root, 'loose-store')]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /accessible by others/);
});

test('random request headers without authentication leave every VDI byte-identical', async () => {
  const before = [await vdiHash(s.port, 'victim'), await vdiHash(s.port, 'golden')];
  const rnd = crypto.createHash('sha256').update('fuzz-seed').digest();
  let state = rnd.readUInt32LE(0);
  const next = () => { state = (state * 1103515245 + 12345) >>> 0; return state; };
  for (let round = 0; round < 20; round++) {
    const sock = net.connect({ port: s.port, host: '127.0.0.1' });
    await new Promise((r) => sock.once('connect', r));
    sock.on('error', () => undefined);
    const chunks: Buffer[] = [];
    for (let i = 0; i < 250; i++) {
      const h = Buffer.alloc(SD_HEADER_SIZE);
      for (let j = 0; j < SD_HEADER_SIZE; j += 4) h.writeUInt32LE(next(), j);
      // aim at real opcodes half the time, with small payloads so the stream stays in frame
      if (i % 2) h[1] = [Op.MAKE_FS, Op.SHUTDOWN, Op.REMOVE_PEER, Op.WRITE_PEER, Op.CREATE_AND_WRITE_PEER, Op.DEL_VDI, Op.DISABLE_RECOVER, Op.GET_OBJ_LIST][next() % 8];
      h[0] = 0;
      h.writeUInt16LE(h.readUInt16LE(2) & 1, 2);
      h.writeUInt32LE(next() % 64, 12);
      chunks.push(h);
      if (h[2] & 1) chunks.push(crypto.randomBytes(h.readUInt32LE(12)));
    }
    sock.end(Buffer.concat(chunks));
    await new Promise((r) => { sock.once('close', r); setTimeout(r, 300); });
    sock.destroy();
  }
  assert.ok(s.alive, 'sheep survived');
  assert.deepEqual([await vdiHash(s.port, 'victim'), await vdiHash(s.port, 'golden')], before);
  const l = await colliek(s.port, ['vdi', 'list', '-r']);
  assert.match(l.stdout.toString(), /victim/);
  assert.match(l.stdout.toString(), /golden/);
});

test('a VDI marked read-only refuses writes and deletion from unauthenticated clients, not from collie', async () => {
  const c = await s.client();
  try {
    const vid = await c.getVdiInfo('golden');
    const oid = vidToDataOid(vid, 0);
    await assert.rejects(c.writeObj(oid, 0, Buffer.alloc(512, 1)), (e: unknown) => e instanceof SdError && e.result === Res.READONLY);
    await assert.rejects(c.delVdi('golden'), (e: unknown) => e instanceof SdError && e.result === Res.READONLY);
    assert.equal((await c.readObj(oid, 0, 512)).length, 512);
  } finally {
    c.close();
  }
  const w = await colliek(s.port, ['vdi', 'write', 'golden', '0', '512'], Buffer.alloc(512, 7));
  assert.equal(w.code, 0, w.stderr);
});

test('malformed msgpack arguments are answered INVALID_PARMS, never a system error', async () => {
  const c = await authed(s.port);
  try {
    for (const op of [Op.GET_VDI_ATTR, Op.SET_RECOVERY_THROTTLE, Op.MAKE_FS, Op.LOCK_FORCE_RELEASE]) {
      for (const payload of [pack(null), pack(42), pack(['x']), Buffer.from([0xc1])]) {
        const h = encodePlainReq({ protoVer: 0, opcode: op, flags: 1, epoch: 0, id: 0, dataLength: payload.length });
        assert.equal(await resultOf(c, h, payload), Res.INVALID_PARMS, `op ${op} payload ${payload.toString('hex')}`);
      }
    }
    const bad = pack({ name: 'victim', key: 'k', mode: 'explode' });
    assert.equal(await resultOf(c, encodePlainReq({ protoVer: 0, opcode: Op.GET_VDI_ATTR, flags: 1, epoch: 0, id: 0, dataLength: bad.length }), bad), Res.INVALID_PARMS);
  } finally {
    c.close();
  }
  const log = await fs.readFile(path.join(s.dir, 'sheep.log'), 'utf8');
  assert.doesNotMatch(log, /request failed unexpectedly/);
});

test('a sheep with another cluster key is refused before it gets any cluster state', async () => {
  const other = new SheepProcess(path.join(root, 'intruder'), await freePort(), ['--cluster-key', otherKey, '-c', `local:${root}/cluster`]);
  await assert.rejects(other.start(), /the cluster refused this node: wrong cluster key/);
  // it never took the cluster's config
  await assert.rejects(fs.stat(path.join(root, 'intruder', 'config')));
  const nodes = await colliek(s.port, ['node', 'list', '-r']);
  assert.equal(nodes.stdout.toString().trim().split('\n').length, 1);
});

test('a sheep without a key cannot join a cluster that has one', async () => {
  const other = new SheepProcess(path.join(root, 'keyless'), await freePort(), ['-c', `local:${root}/cluster`]);
  await assert.rejects(other.start(), /the cluster refused this node: wrong cluster key: the sender has no cluster key/);
});

test('the store is private: DIR 0700, object files and config 0600', async () => {
  assert.equal((await fs.stat(s.dir)).mode & 0o777, 0o700);
  for (const f of ['config', 'sheep.log']) assert.equal((await fs.stat(path.join(s.dir, f))).mode & 0o777, 0o600, f);
  const objs = (await fs.readdir(path.join(s.dir, 'obj'))).filter((f) => !f.startsWith('.'));
  assert.ok(objs.length > 0);
  for (const f of objs.slice(0, 10)) assert.equal((await fs.stat(path.join(s.dir, 'obj', f))).mode & 0o777, 0o600, f);
  assert.equal((await fs.stat(path.join(root, 'cluster'))).mode & 0o777, 0o700);
});

test('a store directory sheep cannot use gives a sentence and a non-zero exit, not a hang', async () => {
  const file = path.join(root, 'a-file');
  await fs.writeFile(file, 'x');
  const cases: Array<[string, RegExp]> = [
    ['/proc/sheepdog-test', /pseudo filesystem/],
    ['/sys/kernel/sheepdog-test', /pseudo filesystem/],
    [file, /is not a directory/],
    [path.join(file, 'sub'), /not a directory/],
  ];
  for (const [dir, why] of cases) {
    const r = await run(process.execPath, [SHEEP, '-p', String(await freePort()), '-c', `local:${root}/c3`, dir], undefined, 20000);
    assert.equal(r.code, 1, `${dir}: ${r.stderr}`);
    assert.match(r.stderr, why, dir);
  }
  // a user that may not write DIR (root-owned 0755): the sheepdog user, when the machine has it
  const uid = await run('id', ['-u', 'sheepdog']);
  if (process.getuid?.() === 0 && uid.code === 0) {
    const locked = path.join(root, 'root-only');
    await fs.mkdir(locked, { mode: 0o755 });
    await fs.chmod(root, 0o755);
    const r = await run('runuser', ['-u', 'sheepdog', '--', process.execPath, SHEEP, '-p', String(await freePort()), '-c', `local:${locked}/c`, locked], undefined, 20000);
    await fs.chmod(root, 0o700);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /not writable by this user|permission denied/);
  }
});

test('a client address outside --client-allow is closed at accept and logged', async () => {
  const t = await new SheepProcess(path.join(root, 'allow'), await freePort(), ['-c', `local:${root}/c4`, '--client-allow', '10.0.0.0/8']).start().catch((e) => e);
  // the test harness waits for the port with a connection from 127.0.0.1, which is refused: the
  // sheep is up nonetheless (it logged the refusal)
  assert.ok(!(t instanceof SheepProcess) || t.alive);
  const p = t instanceof SheepProcess ? t : null;
  try {
    const log = path.join(root, 'allow', 'sheep.log');
    for (let i = 0; i < 50 && !(await fs.readFile(log, 'utf8').catch(() => '')).includes('address not allowed'); i++) await new Promise((r) => setTimeout(r, 100));
    assert.match(await fs.readFile(log, 'utf8'), /"peer":"127\.0\.0\.1:\d+".*refused: address not allowed/);
    const c = await SheepClient.connect({ port: p ? p.port : 0 }).catch((e) => e);
    if (c instanceof SheepClient) {
      await assert.rejects(c.getClusterDefault(), /connection closed|ECONNRESET/);
      c.close();
    }
  } finally {
    await p?.stop();
    await stopSequencer(`${root}/c4`);
  }
});

test('connections beyond the limit are closed, and collie still gets in on the reserve', async () => {
  const t = await new SheepProcess(path.join(root, 'flood'), await freePort(), ['--cluster-key', keyFile, '-c', `local:${root}/c5`, '--max-connections', '100']).start();
  const socks: net.Socket[] = [];
  try {
    for (let i = 0; i < 130; i++) {
      const so = net.connect({ port: t.port, host: '127.0.0.1' });
      so.on('error', () => undefined);
      socks.push(so);
    }
    await new Promise((r) => setTimeout(r, 1000));
    const open = socks.filter((x) => !x.destroyed && x.readyState === 'open').length;
    assert.ok(open <= 100, `${open} connections stayed open`);
    const r = await collie(t.port, ['node', 'list', '-r', '-k', keyFile]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(await fs.readFile(path.join(t.dir, 'sheep.log'), 'utf8'), /too many connections/);
    assert.ok(t.alive);
  } finally {
    for (const so of socks) so.destroy();
    await t.stop();
    await stopSequencer(`${root}/c5`);
  }
});

test('with --peer-tls sheep talk to each other over TLS keyed from the cluster key, and data is replicated', async () => {
  const sheep: SheepProcess[] = [];
  try {
    for (let i = 0; i < 3; i++) {
      sheep.push(await new SheepProcess(path.join(root, `ptls${i}`), await freePort(),
        ['--cluster-key', keyFile, '--peer-tls', '-c', `local:${root}/c6`, '-z', String(i), '-l', 'debug']).start());
    }
    const k = ['-k', keyFile];
    assert.equal((await collie(sheep[0].port, ['cluster', 'format', '-c', '3', '-f', ...k])).code, 0);
    assert.equal((await collie(sheep[0].port, ['vdi', 'create', 'enc', '8M', ...k])).code, 0);
    const data = crypto.randomBytes(8 * 1024 * 1024);
    const w = await collie(sheep[0].port, ['vdi', 'write', 'enc', ...k], data);
    assert.equal(w.code, 0, w.stderr);
    const want = crypto.createHash('sha256').update(data).digest('hex');
    for (const t of sheep) assert.equal((await collieHash(t.port, ['vdi', 'read', 'enc', ...k])).sha256, want);
    // every object has its 3 copies, written over the encrypted peer connections
    const objs = await Promise.all(sheep.map(async (t) => (await fs.readdir(path.join(t.dir, 'obj'))).filter((f) => !f.startsWith('.')).length));
    assert.ok(objs.every((n) => n === objs[0] && n > 1), `objects per store: ${objs}`);
    let tls = 0, challenge = 0;
    for (const t of sheep) {
      const log = await fs.readFile(path.join(t.dir, 'sheep.log'), 'utf8');
      tls += (log.match(/"role":"peer".*TLS connection authenticated/g) ?? []).length;
      challenge += (log.match(/"role":"peer".*"msg":"connection authenticated"/g) ?? []).length;
    }
    assert.ok(tls >= 2, `peer TLS connections: ${tls}`);
    assert.equal(challenge, 0, 'no peer connection used the plaintext challenge-response');
  } finally {
    for (const t of sheep) await t.stop();
    await stopSequencer(`${root}/c6`);
  }
});

test('a TLS connection with a key derived from another cluster key is refused', async () => {
  const other = Buffer.from((await fs.readFile(otherKey, 'utf8')).trim(), 'hex');
  const { tlsPsk, TLS_IDENTITY } = await import('../../lib/auth.js');
  await assert.rejects(SheepClient.connect({ port: s.port, tls: { psk: tlsPsk(other), identity: TLS_IDENTITY.admin } }, 3000));
  const ok = await SheepClient.connect({ port: s.port, tls: { psk: tlsPsk(Buffer.from((await fs.readFile(keyFile, 'utf8')).trim(), 'hex')), identity: TLS_IDENTITY.admin } });
  try {
    assert.equal((await ok.control<{ status: string }>(Op.STAT_CLUSTER)).status, 'running');
  } finally {
    ok.close();
  }
});

test('under ulimit -n 1024, 1,100 idle connections neither kill the sheep nor keep collie from writing', async () => {
  const dir = path.join(root, 'ulimit');
  const port = await freePort();
  const pidfile = path.join(root, 'ulimit.pid');
  const start = await run('prlimit', ['--nofile=1024:1024', process.execPath, SHEEP, '-p', String(port), '-b', '127.0.0.1',
    '--cluster-key', keyFile, '-c', `local:${root}/c7`, '-P', pidfile, dir]);
  assert.equal(start.code, 0, start.stderr);
  const pid = Number((await fs.readFile(pidfile, 'utf8')).trim());
  const socks: net.Socket[] = [];
  try {
    const k = ['-k', keyFile];
    assert.equal((await collie(port, ['cluster', 'format', '-c', '1', '-f', ...k])).code, 0);
    assert.equal((await collie(port, ['vdi', 'create', 'u', '4M', ...k])).code, 0);
    for (let i = 0; i < 1100; i++) {
      const so = net.connect({ port, host: '127.0.0.1' });
      so.on('error', () => undefined);
      socks.push(so);
    }
    await new Promise((r) => setTimeout(r, 1500));
    const data = crypto.randomBytes(4 * 1024 * 1024);
    const w = await collie(port, ['vdi', 'write', 'u', ...k], data);
    assert.equal(w.code, 0, w.stderr);
    const r = await collieHash(port, ['vdi', 'read', 'u', ...k]);
    assert.equal(r.sha256, crypto.createHash('sha256').update(data).digest('hex'));
    process.kill(pid, 0); // still alive
    assert.match(await fs.readFile(path.join(dir, 'sheep.log'), 'utf8'), /too many connections/);
  } finally {
    for (const so of socks) so.destroy();
    try { process.kill(pid, 'SIGTERM'); } catch { /* gone */ }
    for (let i = 0; i < 100; i++) {
      if (!pidRunning(pid)) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    await stopSequencer(`${root}/c7`);
  }
});

test('collie vdi list shows a VDI whose inode is gone as damaged and lists the others', async () => {
  assert.equal((await colliek(s.port, ['vdi', 'create', 'doomed', '4M'])).code, 0);
  const c = await authed(s.port);
  try {
    const vid = await c.getVdiInfo('doomed');
    // what a fuzzed REMOVE_PEER once did: the inode object disappears from the only store
    assert.equal(await resultOf(c, peerHeader(Op.REMOVE_PEER, vidToVdiOid(vid), 0, false)), Res.SUCCESS);
    const l = await colliek(s.port, ['vdi', 'list']);
    assert.equal(l.code, 0, l.stderr);
    const text = l.stdout.toString();
    assert.match(text, new RegExp(`^d \\(damaged\\).*${vid.toString(16)}`, 'm'));
    assert.match(text, /victim/);
    assert.match(l.stderr, /1 VDI\(s\) marked d/);
  } finally {
    c.close();
  }
});
