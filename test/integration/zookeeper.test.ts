// The zookeeper cluster driver on a real ensemble: three ZooKeeper servers from Debian's package on
// loopback, started and stopped by this file. The cluster suite's core (membership, copies, a sheep
// killed under a write stream, shutdown) runs on it in cluster.test.ts; here is what is its own:
// the group's order, a bad address, a restart, a server killed, a session expired on purpose, the
// ensemble losing quorum, pruning, and a cluster moving over from corosync.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import zk from 'node-zookeeper-client';
import { SheepProcess, freePort, tempDir, collie, control } from '../helpers/sheep.js';
import { startEnsemble, zookeeperAvailable, type Ensemble } from '../helpers/zookeeper.js';
import { startCorosync, corosyncAvailable } from '../helpers/corosync.js';
import { cpgAvailable } from '../../native/cpg.js';
import { ZooKeeperGroup } from '../../sheep/cluster/zookeeper.js';
import type { GroupEvents } from '../../sheep/cluster/driver.js';
import { Op } from '../../lib/proto.js';
import type { NodeListReply, StatClusterReply } from '../../lib/admin.js';

const avail = zookeeperAvailable();
const SKIP = avail.ok ? false : avail.reason;
const MB = 1 << 20;
let ens: Ensemble;
let base: string;

before(async () => {
  if (SKIP) return;
  ens = await startEnsemble(3);
  base = await tempDir('zk-sheep-');
});

after(async () => {
  await ens?.stop();
  if (base) await fs.rm(base, { recursive: true, force: true });
});

const tag = (): string => crypto.randomBytes(4).toString('hex');

async function until(cond: () => boolean | Promise<boolean>, ms = 20000, what = 'condition'): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`${what} not met within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const stat = (s: SheepProcess) => control<StatClusterReply>(s, Op.STAT_CLUSTER);

/** n sheep on the ensemble under their own chroot; `timeout` is the ZooKeeper session timeout in s. */
async function zkCluster(n: number, timeout: number): Promise<{ sheep: SheepProcess[]; spec: string; stop(): Promise<void> }> {
  const spec = `zookeeper:${ens.connectString}/c-${tag()},timeout=${timeout}`;
  const sheep: SheepProcess[] = [];
  for (let i = 0; i < n; i++) {
    sheep.push(await new SheepProcess(path.join(base, `${tag()}-${i}`), await freePort(), ['-c', spec, '-z', String(i)]).start());
  }
  return {
    sheep,
    spec,
    async stop() {
      for (const s of sheep) {
        if (s.alive) process.kill(s.pid, 'SIGCONT');
        await s.stop();
      }
    },
  };
}

/** What one member of the group saw, in order. */
function recorder(): { events: GroupEvents; seen: string[]; members: string[]; left: string[] } {
  const r = {
    seen: [] as string[],
    members: [] as string[],
    left: [] as string[],
    events: {
      confchg(members: string[], joined: string[], left: string[]) {
        r.members = members;
        r.left.push(...left);
        r.seen.push(`confchg ${members.join(',')} +${joined.join(',')} -${left.join(',')}`);
      },
      deliver(from: string, msg: Buffer) {
        r.seen.push(`${from} ${msg.length > 64 ? crypto.createHash('sha256').update(msg).digest('hex') : msg.toString()}`);
      },
    } satisfies GroupEvents,
  };
  return r;
}

test('members of a ZooKeeper group see the same changes and messages in one order, a message larger than a znode arrives whole, and a member that stops is in the left list', { skip: SKIP, timeout: 60_000 }, async () => {
  const spec = `${ens.connectString}/g-${tag()},timeout=4`;
  const a = new ZooKeeperGroup(spec), b = new ZooKeeperGroup(spec);
  const ra = recorder(), rb = recorder();
  try {
    const ida = await a.init('a');
    await a.start(ra.events);
    await until(() => ra.members.includes(ida), 10000, 'a in its own view');
    const idb = await b.init('b');
    await b.start(rb.events);
    await until(() => ra.members.includes(idb) && rb.members.includes(idb), 10000, 'b joined');
    assert.deepEqual(rb.members, [ida, idb], 'members oldest first');
    const big = crypto.randomBytes(1_500_000);
    const sends: Array<Promise<void>> = [];
    for (let i = 0; i < 50; i++) {
      sends.push(a.mcast(Buffer.from(`a${i}`)), b.mcast(Buffer.from(`b${i}`)));
      if (i === 25) sends.push(a.mcast(big));
    }
    await Promise.all(sends);
    const msgs = (r: typeof ra) => r.seen.filter((x) => !x.startsWith('confchg'));
    await until(() => msgs(ra).length === 101 && msgs(rb).length === 101, 20000, 'every message delivered');
    assert.deepEqual(msgs(ra), msgs(rb), 'one order for both');
    const fromA = msgs(ra).filter((x) => x.startsWith(`${ida} `)).map((x) => x.slice(ida.length + 1));
    const bigAt = fromA.indexOf(crypto.createHash('sha256').update(big).digest('hex'));
    assert.equal(bigAt, 26, 'the large message arrived whole, in its sender\'s order');
    assert.deepEqual(fromA.filter((x) => x.length < 8), Array.from({ length: 50 }, (_, i) => `a${i}`), 'each sender\'s messages in the order sent');
    await b.stop();
    await until(() => ra.left.includes(idb), 10000, 'b in a\'s left list');
    assert.deepEqual(ra.members, [ida]);
  } finally {
    await a.stop();
    await b.stop();
  }
});

test('an unreachable ensemble or a malformed address stops sheep at start with the reason', { skip: SKIP, timeout: 60_000 }, async () => {
  const dead = await freePort();
  const s = new SheepProcess(path.join(base, `dead-${tag()}`), await freePort(), ['-c', `zookeeper:127.0.0.1:${dead}`]);
  await assert.rejects(s.start(), new RegExp(`cannot reach the ZooKeeper ensemble at 127\\.0\\.0\\.1:${dead}: no server answered within 10 s`));
  const bad = new SheepProcess(path.join(base, `bad-${tag()}`), await freePort(), ['-c', 'zookeeper:localhost']);
  await assert.rejects(bad.start(), /zookeeper: bad server address 'localhost'/);
});

test('after a full shutdown, the sheep restarted on ZooKeeper resume the cluster with its epoch and data', { skip: SKIP, timeout: 120_000 }, async () => {
  const cl = await zkCluster(3, 4);
  try {
    const [s0] = cl.sheep;
    assert.equal((await collie(s0.port, ['cluster', 'format', '--copies=3'])).code, 0);
    assert.equal((await collie(s0.port, ['vdi', 'create', 'r', '8M'])).code, 0);
    const data = crypto.randomBytes(4 * MB);
    assert.equal((await collie(s0.port, ['vdi', 'write', 'r'], data)).code, 0);
    const epoch = (await stat(s0)).epoch;
    assert.equal((await collie(s0.port, ['cluster', 'shutdown'])).code, 0);
    await until(() => cl.sheep.every((s) => !s.alive), 15000, 'every sheep stopped');
    for (const s of cl.sheep) await s.start();
    await until(async () => (await Promise.all(cl.sheep.map(stat))).every((st) => st.status === 'running'), 20000, 'running again');
    for (const s of cl.sheep) assert.equal((await stat(s)).epoch, epoch, 'the same nodes came back: no new epoch');
    const r = await collie(cl.sheep[2].port, ['vdi', 'read', 'r', '0', '4M']);
    assert.ok(r.stdout.equals(data));
  } finally {
    await cl.stop();
  }
});

test('the ZooKeeper leader killed under a verified write stream: no client error, no epoch added', { skip: SKIP, timeout: 120_000 }, async () => {
  const cl = await zkCluster(3, 6);
  const killed = await ens.leader();
  try {
    const [s0] = cl.sheep;
    assert.equal((await collie(s0.port, ['cluster', 'format', '--copies=2'])).code, 0);
    const epoch = (await stat(s0)).epoch;
    const c = await s0.client();
    const chunks: Buffer[] = [];
    try {
      const vid = await c.newVdi('zs', 64n * BigInt(MB));
      const { OpenVdi } = await import('../../lib/vdi-io.js');
      const v = await OpenVdi.open(c, vid);
      for (let i = 0; i < 48; i++) {
        if (i === 8) await ens.kill(killed);
        const b = crypto.randomBytes(MB);
        chunks.push(b);
        await v.write(i * MB, b);
        // cluster decisions go through ZooKeeper too: they must carry on as well
        if (i % 8 === 0) assert.equal((await collie(cl.sheep[i % 3].port, ['vdi', 'create', `zs-${i}`, '1M'])).code, 0);
      }
    } finally {
      c.close();
    }
    for (const s of cl.sheep) assert.equal((await stat(s)).epoch, epoch, 'no membership change');
    const r = await collie(cl.sheep[1].port, ['vdi', 'read', 'zs', '0', '48M']);
    assert.equal(r.code, 0, r.stderr.toString());
    assert.ok(r.stdout.equals(Buffer.concat(chunks)));
  } finally {
    await cl.stop();
    await ens.start(killed);
    await ens.waitServing();
  }
});

test('a sheep whose ZooKeeper session expired leaves, joins again as a returning node in the same process, and serves what was written meanwhile', { skip: SKIP, timeout: 120_000 }, async () => {
  const cl = await zkCluster(3, 2);
  try {
    const [s0, , s2] = cl.sheep;
    assert.equal((await collie(s0.port, ['cluster', 'format', '--copies=3'])).code, 0);
    assert.equal((await collie(s0.port, ['vdi', 'create', 'x', '8M'])).code, 0);
    assert.equal((await collie(s0.port, ['vdi', 'write', 'x'], crypto.randomBytes(8 * MB))).code, 0);
    const before = (await stat(s0)).epoch;
    const pid = s2.pid;
    process.kill(pid, 'SIGSTOP'); // frozen past the session timeout: the ensemble ends its session
    await until(async () => (await control<NodeListReply>(s0, Op.GET_NODE_LIST)).nodes.length === 2, 20000, 'the frozen sheep counted as gone');
    const fresh = crypto.randomBytes(8 * MB);
    assert.equal((await collie(s0.port, ['vdi', 'write', 'x'], fresh)).code, 0);
    process.kill(pid, 'SIGCONT');
    await until(async () => (await control<NodeListReply>(s0, Op.GET_NODE_LIST)).nodes.length === 3, 30000, 'the sheep back in the node list');
    await until(async () => (await stat(s2)).status === 'running' && (await stat(s2)).epoch === (await stat(s0)).epoch, 20000, 'the returning sheep running in the current epoch');
    assert.equal(s2.pid, pid, 'the same process joined again');
    assert.ok(s2.alive);
    assert.equal((await stat(s0)).epoch, before + 2, 'one epoch for the leave, one for the return');
    const r = await collie(s2.port, ['vdi', 'read', 'x', '0', '8M']);
    assert.equal(r.code, 0, r.stderr.toString());
    assert.ok(r.stdout.equals(fresh), 'the returning sheep serves the data written while it was away');
  } finally {
    await cl.stop();
  }
});

test('without a ZooKeeper quorum every sheep halts client I/O and adds no epoch; I/O resumes when the quorum returns', { skip: SKIP, timeout: 120_000 }, async () => {
  const cl = await zkCluster(3, 4);
  const down = [0, 1];
  try {
    const [s0, s1] = cl.sheep;
    assert.equal((await collie(s0.port, ['cluster', 'format', '--copies=2'])).code, 0);
    assert.equal((await collie(s0.port, ['vdi', 'create', 'q', '8M'])).code, 0);
    const epoch = (await stat(s0)).epoch;
    for (const i of down) await ens.kill(i);
    for (const s of cl.sheep) {
      await until(async () => {
        const w = await collie(s.port, ['vdi', 'write', 'q', '0', '4096'], Buffer.alloc(4096, 1));
        return w.code !== 0 && /halted/i.test(w.stderr.toString());
      }, 20000, `sheep on ${s.port} refusing I/O`);
    }
    for (const s of cl.sheep) assert.equal((await stat(s)).epoch, epoch, 'no epoch while the ensemble cannot decide');
    for (const i of down) await ens.start(i);
    await ens.waitServing();
    const data = crypto.randomBytes(MB);
    await until(async () => (await collie(s1.port, ['vdi', 'write', 'q', '0', '1M'], data)).code === 0, 30000, 'writes accepted again');
    for (const s of cl.sheep) assert.equal((await stat(s)).epoch, epoch, 'the same sessions went on: no epoch');
    assert.ok((await collie(cl.sheep[2].port, ['vdi', 'read', 'q', '0', '1M'])).stdout.equals(data));
  } finally {
    for (const i of down) if (!ens.servers[i].alive) await ens.start(i);
    await ens.waitServing();
    await cl.stop();
  }
});

test('queue entries every sheep has applied are pruned from ZooKeeper', { skip: SKIP, timeout: 60_000 }, async () => {
  const cl = await zkCluster(2, 4);
  const chroot = cl.spec.slice(cl.spec.indexOf('/'), cl.spec.lastIndexOf(','));
  const c = zk.createClient(ens.connectString);
  try {
    c.connect();
    await new Promise<void>((r) => c.once('connected', () => r()));
    assert.equal((await collie(cl.sheep[0].port, ['cluster', 'format', '--copies=2'])).code, 0);
    for (let i = 0; i < 30; i++) assert.equal((await collie(cl.sheep[i % 2].port, ['vdi', 'create', `p${i}`, '1M'])).code, 0);
    const entries = () => new Promise<string[]>((resolve, reject) => c.getChildren(`${chroot}/queue`, (e, ch) => (e ? reject(e) : resolve(ch))));
    // sequential names count every entry ever made (one per create at least)
    const made = Math.max(...(await entries()).map((n) => Number(n.slice(2))));
    assert.ok(made >= 30, `entries made for 30 creates: ${made}`);
    await until(async () => (await entries()).length <= 2, 20000, 'the applied entries pruned');
  } finally {
    c.close();
    await cl.stop();
  }
});

const coroSkip = SKIP || (!corosyncAvailable() ? 'needs root and Debian\'s corosync' : !cpgAvailable().ok ? 'the CPG addon is not built' : false);

test('a cluster moves from corosync to ZooKeeper: stopped, restarted with the new driver, it keeps its epoch history and data', { skip: coroSkip, timeout: 120_000 }, async () => {
  const corosync = await startCorosync();
  const dirs = [path.join(base, `mv-${tag()}-0`), path.join(base, `mv-${tag()}-1`)];
  const ports = [await freePort(), await freePort()];
  const coro = `corosync:move-${tag()}`;
  let sheep = dirs.map((d, i) => new SheepProcess(d, ports[i], ['-c', coro, '-z', String(i)]));
  try {
    await sheep[0].start();
    assert.equal((await collie(ports[0], ['cluster', 'format', '--copies=2'])).code, 0);
    await sheep[1].start(); // epoch 2
    assert.equal((await collie(ports[0], ['vdi', 'create', 'm', '8M'])).code, 0);
    const data = crypto.randomBytes(8 * MB);
    assert.equal((await collie(ports[1], ['vdi', 'write', 'm'], data)).code, 0);
    await until(async () => (await stat(sheep[0])).epoch === 2, 10000, 'epoch 2');
    const history = (await stat(sheep[0])).history.map((h) => [h.epoch, h.nodes.map((n) => n.port)]);
    assert.equal((await collie(ports[0], ['cluster', 'shutdown'])).code, 0);
    await until(() => sheep.every((s) => !s.alive), 15000, 'stopped');
    await corosync.stop();
    const spec = `zookeeper:${ens.connectString}/moved-${tag()}`;
    sheep = dirs.map((d, i) => new SheepProcess(d, ports[i], ['-c', spec, '-z', String(i)]));
    for (const s of sheep) await s.start();
    await until(async () => (await stat(sheep[1])).status === 'running', 20000, 'running on ZooKeeper');
    assert.deepEqual((await stat(sheep[1])).history.map((h) => [h.epoch, h.nodes.map((n) => n.port)]), history, 'the epoch history carried over');
    const r = await collie(ports[0], ['vdi', 'read', 'm', '0', '8M']);
    assert.ok(r.stdout.equals(data));
  } finally {
    for (const s of sheep) await s.stop();
    await corosync.stop();
  }
});
