// collie cluster snapshot save/list/show/load against real sheep: a 3-sheep cluster (copies=2) with
// snapshots, a clone, a rollback, a deleted snapshot and attributes is saved to a local path and
// loaded into a second cluster; the store keeps each block once, checks every object on load, and an
// interrupted save leaves no tag behind.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { spawn } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { SheepProcess, freePort, tempDir, collie, collieHash, run, stopSequencer, COLLIE } from '../helpers/sheep.js';
import { SheepClient } from '../../lib/client.js';
import { Op } from '../../lib/proto.js';
import type { AttrReply, StatClusterReply } from '../../lib/admin.js';

const MB = 1 << 20;

interface Cluster {
  port: number;
  stop(): Promise<void>;
}

/** n sheep in one local-driver cluster, left unformatted. */
async function startCluster(n: number): Promise<Cluster> {
  const base = await tempDir('csnap-');
  const spec = `local:${base}/group`;
  const sheep: SheepProcess[] = [];
  for (let i = 0; i < n; i++) sheep.push(await new SheepProcess(path.join(base, `s${i}`), await freePort(), ['-c', spec, '-z', String(i)]).start());
  return {
    port: sheep[0].port,
    async stop() {
      for (const s of sheep) await s.stop();
      await stopSequencer(`${base}/group`);
      await fs.rm(base, { recursive: true, force: true });
    },
  };
}

async function ok(port: number, args: string[], input?: Buffer | string): Promise<string> {
  const r = await collie(port, args, input);
  assert.equal(r.code, 0, `collie ${args.join(' ')}: ${r.stderr}`);
  return r.stdout.toString();
}

async function control<T>(port: number, op: number, arg?: unknown): Promise<T> {
  const c = await SheepClient.connect({ port });
  try {
    return await c.control<T>(op, arg);
  } finally {
    c.close();
  }
}

/** `vdi list -r` rows without the creation time and vid (a load makes new ones). */
async function listColumns(port: number): Promise<string[]> {
  const rows = (await ok(port, ['vdi', 'list', '-r'])).trim().split('\n').filter(Boolean);
  return rows.map((l) => l.split(' ').filter((_, i) => i !== 6 && i !== 7).join(' ')).sort();
}

/** `vdi tree` with the snapshot times blanked. */
async function tree(port: number): Promise<string> {
  return (await ok(port, ['vdi', 'tree'])).replace(/\[\d{4}-\d\d-\d\d \d\d:\d\d/g, '[TIME');
}

/** sha256 of every VDI and snapshot: "type name id" -> digest. */
async function contents(port: number): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const l of (await ok(port, ['vdi', 'list', '-r'])).trim().split('\n').filter(Boolean)) {
    const [type, name, id] = l.split(' ');
    const r = await collieHash(port, ['vdi', 'read', name, ...(type === 's' ? ['-s', id] : [])]);
    assert.equal(r.code, 0, r.stderr);
    out.set(`${type} ${name} ${id}`, r.sha256);
  }
  return out;
}

async function duBytes(dir: string): Promise<number> {
  let total = 0;
  for (const e of await fs.readdir(dir, { withFileTypes: true, recursive: true })) {
    if (e.isFile()) total += (await fs.stat(path.join(e.parentPath, e.name))).size;
  }
  return total;
}

async function objectFiles(store: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await fs.readdir(path.join(store, 'objects'), { withFileTypes: true, recursive: true })) {
    if (e.isFile() && !e.name.startsWith('.tmp')) out.push(path.join(e.parentPath, e.name));
  }
  return out;
}

let src: Cluster;
let dst: Cluster;
let work: string;
let store: string;
let firstSave = 0;

before(async () => {
  work = await tempDir('csnap-work-');
  store = path.join(work, 'store');
  src = await startCluster(3);
  dst = await startCluster(3);
  const p = src.port;
  await ok(p, ['cluster', 'format', '-c', '2']);
  // alpha: two snapshots; beta: a clone of the first; gamma: never written
  await ok(p, ['vdi', 'create', 'alpha', '32M']);
  await ok(p, ['vdi', 'write', 'alpha', '0'], crypto.randomBytes(12 * MB));
  await ok(p, ['vdi', 'snapshot', '-s', 's1', 'alpha']);
  await ok(p, ['vdi', 'write', 'alpha', '4M'], crypto.randomBytes(4 * MB));
  await ok(p, ['vdi', 'snapshot', '-s', 's2', 'alpha']);
  await ok(p, ['vdi', 'write', 'alpha', '20M'], crypto.randomBytes(MB));
  await ok(p, ['vdi', 'clone', '-s', 's1', 'alpha', 'beta']);
  await ok(p, ['vdi', 'write', 'beta', '0'], crypto.randomBytes(2 * MB));
  await ok(p, ['vdi', 'create', 'gamma', '8M']);
  // r: rolled back to its first snapshot, and its middle snapshot deleted (c descends from a deleted one)
  await ok(p, ['vdi', 'create', 'r', '16M']);
  await ok(p, ['vdi', 'write', 'r', '0'], crypto.randomBytes(5 * MB));
  await ok(p, ['vdi', 'snapshot', '-s', 'a', 'r']);
  await ok(p, ['vdi', 'write', 'r', '0'], crypto.randomBytes(MB));
  await ok(p, ['vdi', 'snapshot', '-s', 'b', 'r']);
  await ok(p, ['vdi', 'write', 'r', '4M'], crypto.randomBytes(MB));
  await ok(p, ['vdi', 'snapshot', '-s', 'c', 'r']);
  await ok(p, ['vdi', 'rollback', '-f', '-s', 'a', 'r']);
  await ok(p, ['vdi', 'write', 'r', '8M'], crypto.randomBytes(MB));
  await ok(p, ['vdi', 'delete', '-s', 'b', 'r']);
  // attributes on working VDIs and on a snapshot
  await ok(p, ['vdi', 'setattr', 'alpha', 'owner', 'alice']);
  await ok(p, ['vdi', 'setattr', 'beta', 'purpose', 'test']);
  await control<AttrReply>(p, Op.GET_VDI_ATTR, { name: 'alpha', snapid: 1, key: 'frozen', value: Buffer.from('at s1'), mode: 'set' });
  const r = await collie(p, ['cluster', 'snapshot', 'save', 't1', store]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stderr, '', 'no progress bar through a pipe');
  firstSave = await duBytes(store);
});

after(async () => {
  await src?.stop();
  await dst?.stop();
  await fs.rm(work, { recursive: true, force: true });
});

test('load into an unformatted cluster formats it like the saved one and gives every VDI and snapshot the same content, family tree, list columns and attributes', async () => {
  await ok(dst.port, ['cluster', 'snapshot', 'load', 't1', store]);
  assert.equal((await control<StatClusterReply>(dst.port, Op.STAT_CLUSTER)).copies, 2);
  assert.equal(await tree(dst.port), await tree(src.port));
  // Used and Shared columns equal: blocks shared in the saved cluster are shared again
  assert.deepEqual(await listColumns(dst.port), await listColumns(src.port));
  const want = await contents(src.port);
  assert.equal(want.size, 8); // alpha x3, beta, gamma, r x3 (a, c, working), nothing of the deleted b
  assert.deepEqual(await contents(dst.port), want);
  assert.equal(await ok(dst.port, ['vdi', 'getattr', 'alpha', 'owner']), 'alice');
  assert.equal(await ok(dst.port, ['vdi', 'getattr', 'beta', 'purpose']), 'test');
  const frozen = await control<AttrReply>(dst.port, Op.GET_VDI_ATTR, { name: 'alpha', snapid: 1, key: 'frozen', mode: 'get' });
  assert.equal(Buffer.from(frozen.value!).toString(), 'at s1');
});

test('load refuses a cluster that already holds VDIs, saying why, and changes nothing', async () => {
  const before = await listColumns(dst.port);
  const r = await collie(dst.port, ['cluster', 'snapshot', 'load', 't1', store]);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /already holds VDIs \(.*alpha.*; \d+ with their snapshots\): a load formats the cluster first/);
  assert.match(r.stderr, /Fail to load snapshot/);
  assert.deepEqual(await listColumns(dst.port), before);
});

test('a second save after 4 MiB of one VDI changed stores only the changed block', async () => {
  await ok(src.port, ['vdi', 'write', 'alpha', '8M'], crypto.randomBytes(4 * MB));
  await ok(src.port, ['cluster', 'snapshot', 'save', 't2', store]);
  const added = (await duBytes(store)) - firstSave;
  assert.ok(added >= 4 * MB, `added ${added}`);
  assert.ok(added < 4 * MB + 256 * 1024, `added ${added}: more than the one block and a manifest`);
  assert.ok(firstSave > 6 * added, `first save ${firstSave}, second ${added}`);
  const list = await ok(src.port, ['cluster', 'snapshot', 'list', store]);
  assert.match(list, /^2\t\tt2\t\t\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}\t8\t\S+ MB\t4\.0 MB$/m);
});

test('list prints the index, tag and time of each save as dog does, then its VDIs, data and added bytes', async () => {
  const lines = (await ok(src.port, ['cluster', 'snapshot', 'list', store])).split('\n');
  assert.equal(lines[0], 'Index\t\tTag\t\tSnapshot Time\t\t\tVDIs\tData\tAdded');
  const m = /^1\t\tt1\t\t\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}\t8\t(\d+ MB)\t(\d+ MB)$/.exec(lines[1]);
  assert.ok(m, lines[1]);
  assert.equal(m[1], '44 MB'); // 11 distinct 4 MiB blocks (and inodes, attributes)
  assert.equal(m[2], m[1], 'the first save into an empty PATH added all it holds');
});

test('show prints the VDIs of a tag (by tag or index) in the columns of vdi list, deleted snapshots left out', async () => {
  const byTag = await ok(src.port, ['cluster', 'snapshot', 'show', 't1', store]);
  assert.equal(byTag, await ok(src.port, ['cluster', 'snapshot', 'show', '1', store]));
  const lines = byTag.trimEnd().split('\n');
  assert.match(lines[0], /^ {2}Name {8}Id {4}Size {4}Used {2}Shared {4}Creation time {3}VDI id {2}Copies {2}Tag {3}Block Size Shift$/);
  assert.equal(lines.length, 1 + 8);
  assert.ok(lines.some((l) => /^s alpha +1 +32 MB +12 MB +0\.0 MB .* s1 +22$/.test(l)), byTag);
  assert.ok(lines.some((l) => /^c beta +0 +32 MB +4\.0 MB +8\.0 MB /.test(l)), byTag);
  assert.ok(lines.some((l) => /^s r +3 +16 MB .* c +22$/.test(l)), byTag);
  assert.ok(!lines.some((l) => /\bb +22$/.test(l)), 'the deleted snapshot b is not shown');
  const only = (await ok(src.port, ['cluster', 'snapshot', 'show', 't1', store, 'beta'])).trimEnd().split('\n');
  assert.equal(only.length, 2);
});

test('load -m VDI loads only that VDI and the snapshots it descends from', async () => {
  await ok(dst.port, ['cluster', 'format', '-c', '2', '-f']);
  await ok(dst.port, ['cluster', 'snapshot', 'load', '-m', 'beta', 't1', store]);
  const rows = await listColumns(dst.port);
  assert.deepEqual(rows.map((l) => l.split(' ').slice(0, 3).join(' ')), ['c beta 0', 's alpha 1']);
  const want = await contents(src.port);
  const got = await contents(dst.port);
  assert.equal(got.get('c beta 0'), want.get('c beta 0'));
  assert.equal(got.get('s alpha 1'), want.get('s alpha 1'));
});

test('a corrupted object file stops load before the cluster is touched, and the error names the file', async () => {
  const copy = path.join(work, 'corrupt');
  await fs.cp(store, copy, { recursive: true });
  const files = await objectFiles(copy);
  const victim = files.find((f) => f.includes(`${path.sep}objects${path.sep}`))!;
  const fh = await fs.open(victim, 'r+');
  await fh.write(Buffer.from([0xff ^ (await fs.readFile(victim))[0]]), 0, 1, 0);
  await fh.close();
  await ok(dst.port, ['cluster', 'format', '-c', '2', '-f']);
  const r = await collie(dst.port, ['cluster', 'snapshot', 'load', 't1', copy]);
  assert.notEqual(r.code, 0);
  assert.ok(r.stderr.includes(victim), r.stderr);
  assert.match(r.stderr, /is corrupted: its content's sha256 is [0-9a-f]{64}, not the one in its name/);
  assert.deepEqual(await listColumns(dst.port), []);
});

test('save refuses a tag already used and a tag that starts with a digit', async () => {
  const used = await collie(src.port, ['cluster', 'snapshot', 'save', 't1', store]);
  assert.notEqual(used.code, 0);
  assert.equal(used.stderr, `Snapshot tag has already been used for another snapshot, please, use another one.\nFail to save snapshot to path: ${store}.\n`);
  const digit = await collie(src.port, ['cluster', 'snapshot', 'save', '7up', store]);
  assert.equal(digit.code, 64);
  assert.equal(digit.stderr, 'Tag should not start with number.\n');
  const missing = await collie(src.port, ['cluster', 'snapshot', 'show', 'nope', store]);
  assert.notEqual(missing.code, 0);
  assert.equal(missing.stderr, 'Snapshot index or tag does not exist.\nFail to show snapshot\n');
});

test('a save killed half-way lists no tag, and the next save of that tag completes', async () => {
  const fresh = path.join(work, 'killed');
  await ok(src.port, ['vdi', 'create', 'big', '96M']);
  await ok(src.port, ['vdi', 'write', 'big', '0'], crypto.randomBytes(96 * MB));
  const p = spawn(process.execPath, [COLLIE, 'cluster', 'snapshot', 'save', 'k', fresh, '-a', '127.0.0.1', '-p', String(src.port)], { stdio: 'ignore' });
  const exited = new Promise<void>((r) => p.once('exit', () => r()));
  const deadline = Date.now() + 60_000;
  let killedEarly = false;
  while (Date.now() < deadline) {
    const files = await objectFiles(fresh).catch(() => []);
    if (files.length >= 3) {
      killedEarly = !(await fs.stat(path.join(fresh, 'index.json')).then(() => true, () => false));
      p.kill('SIGKILL');
      break;
    }
    await new Promise((r) => setTimeout(r, 5));
  }
  await exited;
  assert.ok(killedEarly, 'the save was killed before it finished');
  const list = await ok(src.port, ['cluster', 'snapshot', 'list', fresh]);
  assert.equal(list, 'Index\t\tTag\t\tSnapshot Time\t\t\tVDIs\tData\tAdded\n');
  // the dead save's lock is taken over; its objects are found again instead of stored twice
  await ok(src.port, ['cluster', 'snapshot', 'save', 'k', fresh]);
  assert.match(await ok(src.port, ['cluster', 'snapshot', 'list', fresh]), /^1\t\tk\t\t/m);
  await ok(src.port, ['vdi', 'delete', 'big']);
});

const haveScript = (await run('sh', ['-c', 'command -v script'])).code === 0;

test('on a terminal save, verify and load show progress bars that reach 100%', { skip: haveScript ? false : 'script(1) is not installed' }, async () => {
  await ok(dst.port, ['cluster', 'format', '-c', '2', '-f']);
  const cmd = (args: string, port: number) => `"${process.execPath}" "${COLLIE}" ${args} -a 127.0.0.1 -p ${port}`;
  const inner = `${cmd(`cluster snapshot save t3 "${store}"`, src.port)} && ${cmd(`cluster snapshot load t3 "${store}"`, dst.port)}`;
  const r = await run('script', ['-qec', inner, '/dev/null']);
  assert.equal(r.code, 0, r.stdout.toString());
  const screen = r.stdout.toString().replace(/\x1b\[[0-9;?]*[A-Za-z]/g, '');
  assert.match(screen, /saving t3 \[[^\]]*\] 100% \S+ MB \/ \S+ MB/);
  assert.match(screen, /verifying t3 \[[^\]]*\] 100% \d+ \/ \d+ objects/);
  assert.match(screen, /loading \[[^\]]*\] 100% \S+ MB \/ \S+ MB/);
});
