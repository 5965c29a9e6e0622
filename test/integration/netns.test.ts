// Two hosts: sheep in two network namespaces joined by a veth pair, each with its own corosync,
// form one cluster. Addresses are link-local (169.254.77.0/24) inside namespaces this test makes.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { SHEEP, COLLIE, tempDir } from '../helpers/sheep.js';
import { startCorosync, corosyncAvailable, type Corosync } from '../helpers/corosync.js';
import { cpgAvailable } from '../../native/cpg.js';

const ADDR = ['169.254.77.1', '169.254.77.2'];

function ip(args: string[]): void {
  const r = spawnSync('ip', args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`ip ${args.join(' ')}: ${r.stderr}`);
}

function inNs(ns: string, args: string[], input?: Buffer): { code: number; stdout: Buffer; stderr: string } {
  const r = spawnSync('ip', ['netns', 'exec', ns, ...args], { input, timeout: 60000, maxBuffer: 64 << 20 });
  return { code: r.status ?? -1, stdout: r.stdout ?? Buffer.alloc(0), stderr: r.stderr?.toString() ?? '' };
}

/** Waits until the corosync of namespace `ns` sees `n` members (the rings formed before the sheep start). */
async function corosyncMembers(ns: string, n: number): Promise<void> {
  const deadline = Date.now() + 30000;
  for (;;) {
    const out = inNs(ns, ['corosync-cmapctl', '-b', 'runtime.members']).stdout.toString();
    if ((out.match(/\.status \(str\) = joined/g) ?? []).length >= n) return;
    if (Date.now() > deadline) throw new Error(`corosync in ${ns} did not see ${n} members: ${out}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

function why(): string | false {
  if (process.getuid?.() !== 0) return 'needs root to create network namespaces';
  if (!corosyncAvailable()) return 'needs Debian\'s corosync';
  const a = cpgAvailable();
  if (!a.ok) return `the CPG addon is not built: ${a.reason}`;
  if (spawnSync('ip', ['netns', 'list']).status !== 0) return 'ip netns is not usable here';
  return false;
}

/** Waits until the corosync of namespace `ns` sees exactly `n` members. */
async function corosyncExactly(ns: string, n: number): Promise<void> {
  const deadline = Date.now() + 30000;
  for (;;) {
    const out = inNs(ns, ['corosync-cmapctl', '-b', 'runtime.members']).stdout.toString();
    if ((out.match(/\.status \(str\) = joined/g) ?? []).length === n) return;
    if (Date.now() > deadline) throw new Error(`corosync in ${ns} did not get to ${n} members: ${out}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

for (const apart of [false, true]) {
  const name = apart
    ? 'sheep started on two hosts that cannot see each other merge into one cluster when the network comes up'
    : 'sheep on two hosts (network namespaces, a corosync each) form one cluster';
  test(name, { skip: why() }, () => twoHosts(apart));
}

async function twoHosts(apart: boolean): Promise<void> {
  const tag = crypto.randomBytes(3).toString('hex');
  const ns = [`sheepA${tag}`, `sheepB${tag}`];
  const veth = [`vsa${tag}`, `vsb${tag}`];
  const dir = await tempDir('netns-');
  const coros: Corosync[] = [];
  const procs: ChildProcess[] = [];
  try {
    for (const n of ns) ip(['netns', 'add', n]);
    ip(['link', 'add', veth[0], 'type', 'veth', 'peer', 'name', veth[1]]);
    for (let i = 0; i < 2; i++) {
      ip(['link', 'set', veth[i], 'netns', ns[i]]);
      ip(['-n', ns[i], 'addr', 'add', `${ADDR[i]}/24`, 'dev', veth[i]]);
      ip(['-n', ns[i], 'link', 'set', veth[i], 'up']);
      ip(['-n', ns[i], 'link', 'set', 'lo', 'up']);
    }
    const nodes = ADDR.map((addr, i) => ({ addr, nodeid: i + 1 }));
    for (let i = 0; i < 2; i++) coros.push(await startCorosync({ netns: ns[i], bindAddr: ADDR[i], nodes }));
    for (const n of ns) await corosyncMembers(n, 2);
    if (apart) {
      // cut the cable: each corosync goes on alone, and each sheep founds its own (unformatted) group
      ip(['-n', ns[1], 'link', 'set', veth[1], 'down']);
      for (const n of ns) await corosyncExactly(n, 1);
    }
    for (let i = 0; i < 2; i++) {
      const p = spawn('ip', ['netns', 'exec', ns[i], process.execPath, SHEEP, '-f', '-l', 'warn', '-p', '7000', '-b', ADDR[i],
        '-c', 'corosync', path.join(dir, `s${i}`)], { stdio: 'ignore' });
      procs.push(p);
    }
    const collie = (i: number, args: string[], input?: Buffer) => inNs(ns[i], [process.execPath, COLLIE, ...args, '-a', ADDR[i], '-p', '7000'], input);
    if (apart) {
      for (let i = 0; i < 2; i++) {
        const until = Date.now() + 30000;
        while (collie(i, ['node', 'list', '-r']).stdout.toString().trim().split('\n').filter(Boolean).length !== 1) {
          if (Date.now() > until) throw new Error(`sheep ${i} did not start alone`);
          await new Promise((r) => setTimeout(r, 200));
        }
      }
      ip(['-n', ns[1], 'link', 'set', veth[1], 'up']);
    }
    const deadline = Date.now() + 30000;
    while (collie(1, ['node', 'list', '-r']).stdout.toString().trim().split('\n').length !== 2) {
      if (Date.now() > deadline) throw new Error(`the two sheep did not meet: ${collie(1, ['node', 'list', '-r']).stdout}`);
      await new Promise((r) => setTimeout(r, 200));
    }
    assert.equal(collie(0, ['cluster', 'format', '--copies=2']).code, 0);
    assert.equal(collie(0, ['vdi', 'create', 'across', '16M']).code, 0);
    const data = crypto.randomBytes(8 << 20);
    const w = collie(0, ['vdi', 'write', 'across'], data);
    assert.equal(w.code, 0, w.stderr);
    const r = collie(1, ['vdi', 'read', 'across', '0', '8M']);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(r.stdout.equals(data), 'read on the other host');
    const lists = [0, 1].map((i) => collie(i, ['node', 'list', '-r']).stdout.toString());
    assert.equal(lists[0], lists[1]);
    assert.deepEqual(lists[0].trim().split('\n').map((l) => l.split(' ')[1]).sort(), ADDR.map((a) => `${a}:7000`));
    // both stores hold both copies
    const obj = (i: number) => fs.readdir(path.join(dir, `s${i}`, 'obj')).then((l) => l.filter((n) => n.startsWith('00')).length);
    assert.equal(await obj(0), 2);
    assert.equal(await obj(1), 2);
  } finally {
    for (const p of procs) p.kill('SIGTERM');
    await new Promise((r) => setTimeout(r, 500));
    for (const p of procs) if (p.exitCode === null) p.kill('SIGKILL');
    for (const c of coros) await c.stop();
    for (const n of ns) spawnSync('ip', ['netns', 'delete', n]);
    await fs.rm(dir, { recursive: true, force: true });
  }
}

/**
 * Three hosts on one switch: a bridge in a fourth namespace (the hub), each host on it through a
 * veth pair. Taking a host's port down on the hub splits the network; bringing it up heals it.
 */
test('a network split: the majority goes on, the minority halts I/O, and after healing the cluster re-merges with no data lost', { skip: why() }, async () => {
  const tag = crypto.randomBytes(3).toString('hex');
  const hub = `sheepH${tag}`;
  const addrs = ['169.254.78.1', '169.254.78.2', '169.254.78.3'];
  const ns = addrs.map((_, i) => `sheep${i}${tag}`);
  const port = (i: number) => `vp${i}${tag}`; // the hub's end of host i's cable
  const dir = await tempDir('split-');
  const coros: Corosync[] = [];
  const procs: ChildProcess[] = [];
  try {
    ip(['netns', 'add', hub]);
    ip(['-n', hub, 'link', 'add', 'br0', 'type', 'bridge']);
    ip(['-n', hub, 'link', 'set', 'br0', 'up']);
    for (let i = 0; i < 3; i++) {
      ip(['netns', 'add', ns[i]]);
      const host = `vh${i}${tag}`;
      ip(['link', 'add', host, 'type', 'veth', 'peer', 'name', port(i)]);
      ip(['link', 'set', host, 'netns', ns[i]]);
      ip(['link', 'set', port(i), 'netns', hub]);
      ip(['-n', hub, 'link', 'set', port(i), 'master', 'br0']);
      ip(['-n', hub, 'link', 'set', port(i), 'up']);
      ip(['-n', ns[i], 'addr', 'add', `${addrs[i]}/24`, 'dev', host]);
      ip(['-n', ns[i], 'link', 'set', host, 'up']);
      ip(['-n', ns[i], 'link', 'set', 'lo', 'up']);
    }
    const nodes = addrs.map((addr, i) => ({ addr, nodeid: i + 1 }));
    for (let i = 0; i < 3; i++) coros.push(await startCorosync({ netns: ns[i], bindAddr: addrs[i], nodes }));
    for (const n of ns) await corosyncMembers(n, 3);
    for (let i = 0; i < 3; i++) {
      // one sheep at a time: the first founds, the others join it
      procs.push(spawn('ip', ['netns', 'exec', ns[i], process.execPath, SHEEP, '-f', '-l', 'info', '-p', '7000', '-b', addrs[i],
        '-c', 'corosync', path.join(dir, `s${i}`)], { stdio: ['ignore', 'ignore', 'ignore'] }));
      await waitUntil(`sheep ${i} joined`, () => nodeCount(i) === i + 1);
    }
    const collie = (i: number, args: string[], input?: Buffer) => inNs(ns[i], [process.execPath, COLLIE, ...args, '-a', addrs[i], '-p', '7000'], input);
    function nodeCount(i: number): number {
      const out = inNs(ns[i], [process.execPath, COLLIE, 'node', 'list', '-r', '-a', addrs[i], '-p', '7000']).stdout.toString().trim();
      return out ? out.split('\n').length : 0;
    }
    const status = (i: number) => collie(i, ['cluster', 'info']).stdout.toString().split('\n')[0];
    assert.equal(collie(0, ['cluster', 'format', '--copies=3']).code, 0);
    assert.equal(collie(0, ['vdi', 'create', 'split', '16M']).code, 0);
    const before = crypto.randomBytes(8 << 20);
    assert.equal(collie(0, ['vdi', 'write', 'split'], before).code, 0);

    // split host 2 off
    ip(['-n', hub, 'link', 'set', port(2), 'down']);
    await waitUntil('the majority dropped host 2', () => nodeCount(0) === 2);
    await waitUntil('host 2 halted', () => status(2) === 'Cluster status: IO has halted as there are not enough living nodes');
    assert.equal(status(0), 'Cluster status: running, auto-recovery enabled');
    // the minority refuses writes (and reads: its copies may be old)
    const refused = collie(2, ['vdi', 'write', 'split', '0', '4096'], Buffer.alloc(4096, 7));
    assert.notEqual(refused.code, 0);
    assert.match(refused.stderr, /halted/i);
    // the majority writes on
    const during = crypto.randomBytes(8 << 20);
    const w = collie(1, ['vdi', 'write', 'split', '4M'], during);
    assert.equal(w.code, 0, w.stderr);

    // heal: host 2 comes back, is taken in under a new epoch and catches up
    ip(['-n', hub, 'link', 'set', port(2), 'up']);
    await waitUntil('the cluster re-merged', () => nodeCount(0) === 3 && nodeCount(2) === 3 && status(2) === 'Cluster status: running, auto-recovery enabled', 60000);
    const lists = [0, 1, 2].map((i) => collie(i, ['node', 'list', '-r']).stdout.toString());
    assert.equal(lists[2], lists[0]);
    const expected = Buffer.concat([before.subarray(0, 4 << 20), during]);
    const r = collie(2, ['vdi', 'read', 'split', '0', '12M']);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(r.stdout.equals(expected), 'the healed minority serves what the majority wrote');
    // and, once recovered, its own store holds current copies: read them with the others gone
    const dataObjects = async () => (await fs.readdir(path.join(dir, 's2', 'obj'))).filter((n) => n.startsWith('00')).sort();
    await waitUntil('host 2 holds every data object again', async () => (await dataObjects()).length === 3);
    for (const [idx, name] of (await dataObjects()).entries()) {
      const copy = await fs.readFile(path.join(dir, 's2', 'obj', name));
      assert.ok(copy.equals(expected.subarray(idx << 22, (idx + 1) << 22)), `host 2's own copy of object ${idx} is current`);
    }
  } finally {
    for (const p of procs) p.kill('SIGTERM');
    await new Promise((r) => setTimeout(r, 500));
    for (const p of procs) if (p.exitCode === null) p.kill('SIGKILL');
    for (const c of coros) await c.stop();
    for (const n of [...ns, hub]) spawnSync('ip', ['netns', 'delete', n]);
    await fs.rm(dir, { recursive: true, force: true });
  }
});

async function waitUntil(what: string, cond: () => boolean | Promise<boolean>, ms = 30000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}
