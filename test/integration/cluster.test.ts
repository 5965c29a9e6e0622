// Many sheep, one cluster: the same suite on the local driver, on a real corosync and on a real
// ZooKeeper ensemble (three servers on loopback; zookeeper.test.ts has what is its own). Membership,
// epochs, N-way replication, a node killed under a write stream, concurrent VDI creation, and
// refusal of a node from another cluster.

import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { SheepProcess, freePort, tempDir, collie, run, stopSequencer, COLLIE, control } from '../helpers/sheep.js';
import { startCorosync, corosyncAvailable, type Corosync } from '../helpers/corosync.js';
import { startEnsemble, zookeeperAvailable, type Ensemble } from '../helpers/zookeeper.js';
import { cpgAvailable } from '../../native/cpg.js';
import { SheepClient } from '../../lib/client.js';
import { OpenVdi } from '../../lib/vdi-io.js';
import { Op, Res, SdError } from '../../lib/proto.js';
import { oidHex } from '../../lib/oid.js';
import type { NodeListReply, StatClusterReply } from '../../lib/admin.js';

const MB = 1 << 20;

interface Cluster {
  sheep: SheepProcess[];
  add(zone: number): Promise<SheepProcess>;
  stop(): Promise<void>;
}

type Driver = 'local' | 'corosync' | 'zookeeper';

async function startCluster(driver: Driver, n: number): Promise<Cluster> {
  const base = await tempDir('cluster-');
  let corosync: Corosync | null = null;
  let ensemble: Ensemble | null = null;
  const tag = crypto.randomBytes(4).toString('hex');
  let spec = `local:${base}/group`;
  if (driver === 'corosync') {
    corosync = await startCorosync();
    spec = `corosync:sheeptest-${tag}`;
  } else if (driver === 'zookeeper') {
    ensemble = await startEnsemble(3);
    spec = `zookeeper:${ensemble.connectString}/sheeptest-${tag},timeout=4`;
  }
  const sheep: SheepProcess[] = [];
  const add = async (zone: number) => {
    const s = await new SheepProcess(path.join(base, `s${zone}`), await freePort(), ['-c', spec, '-z', String(zone)]).start();
    sheep.push(s);
    return s;
  };
  for (let i = 0; i < n; i++) await add(i);
  return {
    sheep,
    add,
    async stop() {
      for (const s of sheep) await s.stop();
      if (driver === 'local') await stopSequencer(`${base}/group`);
      await corosync?.stop();
      await ensemble?.stop();
      await fs.rm(base, { recursive: true, force: true });
    },
  };
}

async function until(cond: () => Promise<boolean>, ms = 15000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function holders(cl: Cluster, file: string): Promise<number> {
  let n = 0;
  for (const s of cl.sheep) if (s.alive && await fs.access(path.join(s.dir, 'obj', file)).then(() => true, () => false)) n++;
  return n;
}

function suite(driver: Driver, skip: string | false): void {
  describe(`a cluster on the ${driver} driver`, { skip }, () => {
    let cl: Cluster;
    before(async () => { cl = await startCluster(driver, 4); });
    after(async () => { await cl?.stop(); });

    test('every node lists all nodes and the same epoch after format --copies=3', async () => {
      const f = await collie(cl.sheep[1].port, ['cluster', 'format', '--copies=3']);
      assert.equal(f.code, 0, f.stderr);
      const views = await Promise.all(cl.sheep.map((s) => control<NodeListReply>(s, Op.GET_NODE_LIST)));
      for (const v of views) assert.deepEqual(v.nodes.map((n) => n.nid), cl.sheep.map((s) => `127.0.0.1:${s.port}`));
      // every node applies the format in the same order; the others may be a moment behind the one asked
      await until(async () => {
        const stats = await Promise.all(cl.sheep.map((s) => control<StatClusterReply>(s, Op.STAT_CLUSTER)));
        return stats.every((st) => st.epoch === 1 && st.status === 'running');
      });
      const lists = await Promise.all(cl.sheep.map((s) => collie(s.port, ['node', 'list', '-r'])));
      assert.ok(lists.every((l) => l.stdout.toString() === lists[0].stdout.toString()));
    });

    test('objects written through one node are on exactly 3 stores and readable through every other', async () => {
      const c0 = await cl.sheep[0].client();
      const data = crypto.randomBytes(24 * MB);
      try {
        const vid = await c0.newVdi('spread', 64n * BigInt(MB));
        const v = await OpenVdi.open(c0, vid);
        await v.write(0, data);
        for (let idx = 0; idx < 6; idx++) {
          assert.equal(await holders(cl, oidHex((BigInt(vid) << 32n) | BigInt(idx))), 3, `object ${idx}`);
        }
        assert.equal(await holders(cl, oidHex((1n << 63n) | (BigInt(vid) << 32n))), 3, 'the inode');
        for (const s of cl.sheep.slice(1)) {
          const c = await s.client();
          try {
            const r = await OpenVdi.open(c, await c.getVdiInfo('spread'));
            assert.ok((await r.read(0, 24 * MB)).equals(data), `read through ${s.port}`);
          } finally {
            c.close();
          }
        }
      } finally {
        c0.close();
      }
    });

    test('100 creates of distinct names through different nodes succeed with distinct vids; of one name exactly one does', async () => {
      const clients = await Promise.all(cl.sheep.map((s) => s.client()));
      try {
        const vids = await Promise.all(Array.from({ length: 100 }, (_, i) => clients[i % clients.length].newVdi(`par-${i}`, BigInt(MB))));
        assert.equal(new Set(vids).size, 100);
        const same = await Promise.allSettled(Array.from({ length: 10 }, (_, i) => clients[i % clients.length].newVdi('only-one', BigInt(MB))));
        assert.equal(same.filter((r) => r.status === 'fulfilled').length, 1);
        for (const r of same) if (r.status === 'rejected') assert.equal((r.reason as SdError).result, Res.VDI_EXIST);
      } finally {
        for (const c of clients) c.close();
      }
    });

    test('a node killed with SIGKILL under a write stream: no client error, epoch bumps, node list drops it, data intact', async () => {
      const writer = cl.sheep[0];
      const victim = cl.sheep[2];
      const before = await control<StatClusterReply>(writer, Op.STAT_CLUSTER);
      const c = await writer.client();
      const chunks: Buffer[] = [];
      try {
        const v = await OpenVdi.open(c, await c.newVdi('stream', 128n * BigInt(MB)));
        for (let i = 0; i < 96; i++) {
          if (i === 20) await victim.kill9();
          const b = crypto.randomBytes(MB);
          chunks.push(b);
          await v.write(i * MB, b);
        }
        await c.flushVdi(v.vid);
      } finally {
        c.close();
      }
      await until(async () => (await control<StatClusterReply>(writer, Op.STAT_CLUSTER)).epoch > before.epoch);
      const list = await control<NodeListReply>(writer, Op.GET_NODE_LIST);
      assert.ok(!list.nodes.some((n) => n.port === victim.port));
      assert.equal(list.nodes.length, 3);
      const reader = await cl.sheep[3].client();
      try {
        const r = await OpenVdi.open(reader, await reader.getVdiInfo('stream'));
        assert.ok((await r.read(0, 96 * MB)).equals(Buffer.concat(chunks)));
      } finally {
        reader.close();
      }
    });

    test('a node that comes back joins under a new epoch and serves the data written while it was away', async () => {
      const dead = cl.sheep.find((x) => !x.alive)!;
      // overwrite 'spread' while the node is away: its old copies must never be served again
      const fresh = crypto.randomBytes(24 * MB);
      const w = await cl.sheep[0].client();
      try {
        const v = await OpenVdi.open(w, await w.getVdiInfo('spread'));
        await v.write(0, fresh);
      } finally {
        w.close();
      }
      const before = await control<StatClusterReply>(cl.sheep[0], Op.STAT_CLUSTER);
      await dead.start();
      await until(async () => (await control<NodeListReply>(cl.sheep[0], Op.GET_NODE_LIST)).nodes.length === 4);
      const after = await control<StatClusterReply>(dead, Op.STAT_CLUSTER);
      assert.ok(after.epoch > before.epoch);
      assert.equal(after.epoch, (await control<StatClusterReply>(cl.sheep[0], Op.STAT_CLUSTER)).epoch);
      const r = await collie(dead.port, ['vdi', 'read', 'spread', '0', '24M']);
      assert.equal(r.code, 0, r.stderr);
      assert.ok(r.stdout.equals(fresh), 'the returning node serves the new data, not its old copies');
    });

    test('an attribute set through one node is read through every other', async () => {
      assert.equal((await collie(cl.sheep[0].port, ['vdi', 'setattr', 'spread', 'owner', 'alice'])).code, 0);
      for (const s of cl.sheep.filter((x) => x.alive)) {
        const r = await collie(s.port, ['vdi', 'getattr', 'spread', 'owner']);
        assert.equal(r.stdout.toString(), 'alice', `through ${s.port}`);
      }
    });

    test('collie node info and cluster info answer through any node', async () => {
      for (const s of cl.sheep.filter((x) => x.alive)) {
        const info = await collie(s.port, ['cluster', 'info']);
        assert.equal(info.code, 0);
        assert.match(info.stdout.toString(), /running/);
        const ni = await collie(s.port, ['node', 'info', '-r']);
        assert.equal(ni.code, 0, ni.stderr);
        assert.equal(ni.stdout.toString().trim().split('\n').length, 5);
      }
    });

    test('collie cluster shutdown stops every sheep', async () => {
      const r = await collie(cl.sheep[1].port, ['cluster', 'shutdown']);
      assert.equal(r.code, 0, r.stderr);
      await until(async () => cl.sheep.every((x) => !x.alive), 15000);
    });
  });
}

suite('local', false);
const coroSkip = !corosyncAvailable() ? 'needs root and Debian\'s corosync' : !cpgAvailable().ok ? `the CPG addon is not built: ${(cpgAvailable() as { reason: string }).reason}` : false;
suite('corosync', coroSkip);
const zk = zookeeperAvailable();
suite('zookeeper', zk.ok ? false : zk.reason);

/** Three nodes, copies=2: node 1 stops at epoch 1, node 2 at epoch 2, node 0 last at epoch 3. */
async function staggeredStop(a: Cluster): Promise<void> {
  await collie(a.sheep[0].port, ['cluster', 'format', '--copies=2']);
  await a.sheep[1].stop();
  await a.sheep[2].stop();
  await until(async () => (await control<StatClusterReply>(a.sheep[0], Op.STAT_CLUSTER)).epoch === 3);
  await a.sheep[0].stop();
}

test('after a full restart an older node waits, and the node with the newest history resumes the cluster', async () => {
  const a = await startCluster('local', 3);
  try {
    await staggeredStop(a);
    // node 1 comes back first: its history (epoch 1) is older, so it waits for its last epoch's nodes
    await a.sheep[1].start();
    const waiting = await control<StatClusterReply>(a.sheep[1], Op.STAT_CLUSTER);
    assert.equal(waiting.status, 'wait_join');
    assert.equal(waiting.epoch, 1);
    // node 0 stopped last (epoch 3, whose only node it is): its history is the one resumed
    await a.sheep[0].start();
    await until(async () => (await control<StatClusterReply>(a.sheep[1], Op.STAT_CLUSTER)).status === 'running');
    const st = await control<StatClusterReply>(a.sheep[1], Op.STAT_CLUSTER);
    assert.deepEqual(st.history.map((h) => h.epoch), [4, 3, 2, 1]);
    assert.deepEqual(st.history[1].nodes.map((n) => n.port), [a.sheep[0].port]);
  } finally {
    await a.stop();
  }
});

test('after recover force, a node with a newer epoch history is refused with the reason', async () => {
  const a = await startCluster('local', 3);
  try {
    await staggeredStop(a);
    await a.sheep[1].start();
    await control(a.sheep[1], Op.FORCE_RECOVER);
    await until(async () => (await control<StatClusterReply>(a.sheep[1], Op.STAT_CLUSTER)).status === 'running');
    assert.equal((await control<StatClusterReply>(a.sheep[1], Op.STAT_CLUSTER)).epoch, 2);
    // node 0, with epoch 3, must not be merged into the history the operator forced
    await assert.rejects(a.sheep[0].start(), /refused this node: conflicting epoch history: the node has epoch 3, the cluster 2/);
  } finally {
    await a.stop();
  }
});

test('a node formatted in another cluster is refused with the reason', async () => {
  const a = await startCluster('local', 1);
  const b = await startCluster('local', 1);
  try {
    await collie(a.sheep[0].port, ['cluster', 'format', '--copies=1']);
    await collie(b.sheep[0].port, ['cluster', 'format', '--copies=1']);
    // b's store joins a's group
    const stranger = b.sheep[0];
    await stranger.stop();
    const group = path.join(path.dirname(a.sheep[0].dir), 'group');
    const intruder = new SheepProcess(stranger.dir, await freePort(), ['-c', `local:${group}`, '-z', '9']);
    await assert.rejects(intruder.start(), /refused this node: the node belongs to another cluster/);
    const nodes = await control<NodeListReply>(a.sheep[0], Op.GET_NODE_LIST);
    assert.equal(nodes.nodes.length, 1);
  } finally {
    await a.stop();
    await b.stop();
  }
});



test('on corosync a sheep left without a majority of the last epoch halts I/O, and runs again when the others return', { skip: coroSkip }, async () => {
  const a = await startCluster('corosync', 3);
  try {
    await collie(a.sheep[0].port, ['cluster', 'format', '--copies=2']);
    await collie(a.sheep[0].port, ['vdi', 'create', 'h', '8M']);
    const data = crypto.randomBytes(4 << 20);
    assert.equal((await collie(a.sheep[2].port, ['vdi', 'write', 'h'], data)).code, 0);
    // the two oldest go: node 2 first keeps 2 of 3 (epoch 2 = nodes 1, 2), then is half of epoch 2
    // without its oldest node, which on a real split would be the side that goes on
    await a.sheep[0].kill9();
    await until(async () => (await control<StatClusterReply>(a.sheep[2], Op.STAT_CLUSTER)).nodes === 2);
    await a.sheep[1].kill9();
    await until(async () => (await control<StatClusterReply>(a.sheep[2], Op.STAT_CLUSTER)).status === 'halt');
    const st = await control<StatClusterReply>(a.sheep[2], Op.STAT_CLUSTER);
    assert.equal(st.statusText, 'IO has halted as there are not enough living nodes');
    assert.equal(st.epoch, 2, 'a halted side adds no epoch');
    const w = await collie(a.sheep[2].port, ['vdi', 'write', 'h', '0', '4096'], Buffer.alloc(4096));
    assert.notEqual(w.code, 0);
    assert.match(w.stderr.toString(), /halted/);
    // the others come back: the majority of epoch 2 is there again and I/O resumes
    await a.sheep[1].start();
    await a.sheep[0].start();
    await until(async () => (await control<StatClusterReply>(a.sheep[2], Op.STAT_CLUSTER)).status === 'running');
    const r = await collie(a.sheep[0].port, ['vdi', 'read', 'h', '0', '4M']);
    assert.equal(r.code, 0, r.stderr.toString());
    assert.ok(r.stdout.equals(data));
  } finally {
    await a.stop();
  }
});

test('on corosync a sheep with another cluster key is refused before it gets any cluster state; the right key joins', { skip: coroSkip }, async () => {
  const base = await tempDir('corokey-');
  const corosync = await startCorosync();
  const spec = `corosync:sheepkey-${crypto.randomBytes(4).toString('hex')}`;
  const keys = [path.join(base, 'a.key'), path.join(base, 'b.key')];
  for (const k of keys) assert.equal((await run(process.execPath, [COLLIE, 'cluster', 'keygen', k])).code, 0);
  const started: SheepProcess[] = [];
  try {
    const first = await new SheepProcess(path.join(base, 's0'), await freePort(), ['-c', spec, '-z', '0', '--cluster-key', keys[0]]).start();
    started.push(first);
    assert.equal((await collie(first.port, ['cluster', 'format', '-c', '1', '-f', '-k', keys[0]])).code, 0);
    const intruder = new SheepProcess(path.join(base, 'x'), await freePort(), ['-c', spec, '-z', '9', '--cluster-key', keys[1]]);
    await assert.rejects(intruder.start(), /the cluster refused this node: wrong cluster key: the sender uses a different cluster key/);
    await assert.rejects(fs.stat(path.join(base, 'x', 'config')), 'the intruder never received the config');
    const friend = await new SheepProcess(path.join(base, 's1'), await freePort(), ['-c', spec, '-z', '1', '--cluster-key', keys[0]]).start();
    started.push(friend);
    const l = await collie(first.port, ['node', 'list', '-r', '-k', keys[0]]);
    assert.equal(l.stdout.toString().trim().split('\n').length, 2);
  } finally {
    for (const s of started) await s.stop();
    await corosync.stop();
    await fs.rm(base, { recursive: true, force: true });
  }
});
