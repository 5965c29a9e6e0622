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

function why(): string | false {
  if (process.getuid?.() !== 0) return 'needs root to create network namespaces';
  if (!corosyncAvailable()) return 'needs Debian\'s corosync';
  const a = cpgAvailable();
  if (!a.ok) return `the CPG addon is not built: ${a.reason}`;
  if (spawnSync('ip', ['netns', 'list']).status !== 0) return 'ip netns is not usable here';
  return false;
}

test('sheep on two hosts (network namespaces, a corosync each) form one cluster', { skip: why() }, async () => {
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
    for (let i = 0; i < 2; i++) {
      const p = spawn('ip', ['netns', 'exec', ns[i], process.execPath, SHEEP, '-f', '-l', 'warn', '-p', '7000', '-b', ADDR[i],
        '-c', 'corosync', path.join(dir, `s${i}`)], { stdio: 'ignore' });
      procs.push(p);
    }
    const collie = (i: number, args: string[], input?: Buffer) => inNs(ns[i], [process.execPath, COLLIE, ...args, '-a', ADDR[i], '-p', '7000'], input);
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
});
