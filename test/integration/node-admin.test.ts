// Node and cluster administration with real sheep: node kill, node stat (against /metrics), node log
// level, node vnodes set (objects move to the heavier node), cluster reweight (loop-mounted disks of
// different sizes), cluster alter-copy, cluster check, and the --help of each.

import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { SheepProcess, freePort, tempDir, collie, collieHash, stopSequencer, run, COLLIE, control } from '../helpers/sheep.js';
import { loopFsUnavailable, mountLoopFs, type LoopFs } from '../helpers/loopfs.js';
import { OpenVdi } from '../../lib/vdi-io.js';
import { Op } from '../../lib/proto.js';
import type { NodeListReply, RecoveryStatus, StatClusterReply, StatSheepReply } from '../../lib/admin.js';
import { autoVnodes } from '../../sheep/cluster/reweight.js';

const MB = 1 << 20;

interface Cluster {
  base: string;
  sheep: SheepProcess[];
  stop(): Promise<void>;
}

/** `n` sheep on one local driver, each in its own zone (its store in `dirs[i]` when given), formatted. */
async function startCluster(n: number, copies: number, opts: { dirs?: string[]; args?: string[][] } = {}): Promise<Cluster> {
  const base = await tempDir('node-admin-');
  const sheep: SheepProcess[] = [];
  const cl: Cluster = {
    base,
    sheep,
    async stop() {
      for (const s of sheep) await s.stop();
      await stopSequencer(`${base}/group`);
      await fs.rm(base, { recursive: true, force: true });
    },
  };
  try {
    for (let i = 0; i < n; i++) {
      const dir = opts.dirs?.[i] ?? path.join(base, `s${i}`);
      sheep.push(await new SheepProcess(dir, await freePort(), ['-c', `local:${base}/group`, '-z', String(i), ...(opts.args?.[i] ?? [])]).start());
    }
    const f = await collie(sheep[0].port, ['cluster', 'format', '-c', String(copies)]);
    assert.equal(f.code, 0, f.stderr);
  } catch (e) {
    await cl.stop();
    throw e;
  }
  return cl;
}

async function until(what: string, cond: () => Promise<boolean>, ms = 30000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Object files in a store (not the set-aside ones). */
async function objectFiles(s: SheepProcess): Promise<string[]> {
  return (await fs.readdir(path.join(s.dir, 'obj'))).filter((n) => /^[0-9a-f]{16}$/.test(n));
}

/** No node is recovering (after `epoch`, when given), and none holds set-aside copies. */
async function recovered(cl: Cluster, epoch?: number): Promise<boolean> {
  for (const s of cl.sheep) {
    const r = await control<RecoveryStatus>(s, Op.STAT_RECOVERY);
    if (r.state !== 'idle' || (epoch !== undefined && r.epoch !== epoch)) return false;
    const stale = await fs.readdir(path.join(s.dir, 'obj', '.stale')).catch(() => []);
    if (stale.length) return false;
  }
  return true;
}

const epochOf = async (s: SheepProcess) => (await control<StatClusterReply>(s, Op.STAT_CLUSTER)).epoch;

// ------------------------------------------------------------------ --help

describe('--help', () => {
  const cases: Array<[string[], RegExp[]]> = [
    [['node', 'kill'], [/Usage: collie node kill .*\[node id\]/, /-l, --local/]],
    [['node', 'stat'], [/Usage: collie node stat/, /-w, --watch/, /-r, --raw/]],
    [['node', 'log', 'level', 'set'], [/Usage: collie node log level set .*<log level>/, /emerg/]],
    [['node', 'log', 'level'], [/get/, /set/, /list/]],
    [['node', 'vnodes', 'set'], [/Usage: collie node vnodes set .*<num of vnodes>/, /1\.\.65535/]],
    [['node', 'format'], [/Usage: collie node format/, /not supported/]],
    [['cluster', 'reweight'], [/Usage: collie cluster reweight/, /capacity/]],
    [['cluster', 'alter-copy'], [/Usage: collie cluster alter-copy/, /-c, --copies/, /-f, --force/]],
    [['cluster', 'check'], [/Usage: collie cluster check/, /repair/]],
  ];
  for (const [cmd, want] of cases) {
    test(`collie ${cmd.join(' ')} --help explains the command and exits 0`, async () => {
      const r = await collie(1, [...cmd, '--help']);
      assert.equal(r.code, 0, r.stderr);
      for (const w of want) assert.match(r.stdout.toString(), w);
    });
  }
});

test('node format is refused with the reason: a store has one format, which sheep lays out itself', async () => {
  const r = await collie(1, ['node', 'format', '/var/lib/sheepdog', 'plain']);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /node format is not supported: .*one store format.*cluster format/s);
});

// ------------------------------------------------------------------ node kill

describe('node kill', () => {
  let cl: Cluster;
  before(async () => { cl = await startCluster(3, 2); });
  after(async () => { await cl?.stop(); });

  test('a node id that is not a number, or not in the list, is refused with exit 64', async () => {
    const abc = await collie(cl.sheep[0].port, ['node', 'kill', 'abc']);
    assert.equal(abc.code, 64);
    assert.match(abc.stderr, /Invalid node id 'abc', please specify a numeric value/);
    const seven = await collie(cl.sheep[0].port, ['node', 'kill', '7']);
    assert.equal(seven.code, 64);
    assert.match(seven.stderr, /Invalid node id '7'/);
    const none = await collie(cl.sheep[0].port, ['node', 'kill']);
    assert.equal(none.code, 64);
    assert.match(none.stderr, /please specify -l option or node id/);
    assert.ok(cl.sheep.every((s) => s.alive));
  });

  test('node kill ID stops exactly that sheep cleanly; the others go on with a new epoch and the data', async () => {
    const data = crypto.randomBytes(8 * MB);
    assert.equal((await collie(cl.sheep[0].port, ['vdi', 'create', 'k', '16M'])).code, 0);
    assert.equal((await collie(cl.sheep[0].port, ['vdi', 'write', 'k'], data)).code, 0);
    const epoch = await epochOf(cl.sheep[0]);
    // ids as `node list` numbers them
    const list = (await collie(cl.sheep[0].port, ['node', 'list', '-r'])).stdout.toString().trim().split('\n');
    const port2 = Number(list[2].split(' ')[1].split(':')[1]);
    const victim = cl.sheep.find((s) => s.port === port2)!;
    const exited = new Promise<number | null>((r) => victim.proc!.once('exit', (code) => r(code)));
    const k = await collie(cl.sheep[0].port, ['node', 'kill', '2']);
    assert.equal(k.code, 0, k.stderr);
    assert.equal(await exited, 0, 'the sheep exits as on SIGTERM');
    assert.match(await fs.readFile(path.join(victim.dir, 'sheep.log'), 'utf8'), /asked to stop \(collie node kill\)/);
    const rest = cl.sheep.filter((s) => s !== victim);
    assert.ok(rest.every((s) => s.alive), 'only that sheep stopped');
    for (const s of rest) {
      await until('a new epoch without the killed node', async () => {
        const st = await control<StatClusterReply>(s, Op.STAT_CLUSTER);
        return st.epoch === epoch + 1 && st.nodes === 2 && st.status === 'running';
      });
    }
    const nodes = (await control<NodeListReply>(rest[0], Op.GET_NODE_LIST)).nodes.map((n) => n.port).sort();
    assert.deepEqual(nodes, rest.map((s) => s.port).sort());
    const read = await collieHash(rest[1].port, ['vdi', 'read', 'k', '0', '8M']);
    assert.equal(read.sha256, crypto.createHash('sha256').update(data).digest('hex'));
  });
});

// ------------------------------------------------------------------ node stat

describe('node stat', () => {
  let cl: Cluster;
  let httpPort: number;
  before(async () => {
    httpPort = await freePort();
    cl = await startCluster(1, 1, { args: [['--http', `127.0.0.1:${httpPort}`]] });
    assert.equal((await collie(cl.sheep[0].port, ['vdi', 'create', 'st', '16M'])).code, 0);
  });
  after(async () => { await cl?.stop(); });

  /** `node stat -r`: rows Client, Peer, NBD of Active Total Write Read Remove Flush AllWR AllRD Errors. */
  async function stat(): Promise<number[][]> {
    const r = await collie(cl.sheep[0].port, ['node', 'stat', '-r']);
    assert.equal(r.code, 0, r.stderr);
    return r.stdout.toString().trim().split('\n').map((l) => l.split(' ').map(Number));
  }

  test('the counters of writes, reads and their bytes rise after I/O', async () => {
    const [before] = await stat();
    assert.equal((await collie(cl.sheep[0].port, ['vdi', 'write', 'st', '0'], crypto.randomBytes(4 * MB))).code, 0);
    assert.equal((await collieHash(cl.sheep[0].port, ['vdi', 'read', 'st', '0', '4M'])).length, 4 * MB);
    const [after] = await stat();
    assert.ok(after[1] > before[1], 'Total');
    assert.ok(after[2] > before[2], 'Write');
    assert.ok(after[3] > before[3], 'Read');
    assert.ok(after[6] - before[6] >= 4 * MB, 'All WR');
    assert.ok(after[7] - before[7] >= 4 * MB, 'All RD');
  });

  test('the numbers are those /metrics shows', async () => {
    const [client, peer, nbd] = await stat();
    const text = await (await fetch(`http://127.0.0.1:${httpPort}/metrics`)).text();
    const series = (name: string, frontend: string, ops?: string[]) => {
      let n = 0;
      for (const m of text.matchAll(new RegExp(`^${name}\\{([^}]*)\\} (\\S+)$`, 'gm'))) {
        const labels = Object.fromEntries([...m[1].matchAll(/(\w+)="([^"]*)"/g)].map((x) => [x[1], x[2]]));
        if (labels.frontend === frontend && (!ops || ops.includes(labels.op))) n += Number(m[2]);
      }
      return n;
    };
    // the STAT request itself is counted once answered: after the stat, before the scrape
    assert.equal(series('sheep_requests_total', 'sheepdog'), client[1] + 1);
    assert.equal(series('sheep_requests_total', 'sheepdog', ['CREATE_AND_WRITE_OBJ', 'WRITE_OBJ']), client[2]);
    assert.equal(series('sheep_requests_total', 'sheepdog', ['READ_OBJ']), client[3]);
    assert.equal(series('sheep_requests_total', 'sheepdog', ['FLUSH_VDI']), client[5]);
    assert.equal(series('sheep_written_bytes_total', 'sheepdog'), client[6]);
    assert.equal(series('sheep_read_bytes_total', 'sheepdog'), client[7]);
    assert.equal(series('sheep_request_errors_total', 'sheepdog'), client[8]);
    assert.equal(series('sheep_requests_total', 'peer'), peer[1]);
    assert.equal(series('sheep_requests_total', 'nbd'), nbd[1]);
    assert.ok(client[2] > 0 && client[6] > 0, 'the earlier writes are counted');
  });

  test('node stat -w prints a block every second and stops cleanly on SIGINT', async () => {
    const p = spawn(process.execPath, [COLLIE, 'node', 'stat', '-w', '-a', '127.0.0.1', '-p', String(cl.sheep[0].port)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let outText = '';
    let errText = '';
    p.stdout.on('data', (d: Buffer) => { outText += d.toString(); });
    p.stderr.on('data', (d: Buffer) => { errText += d.toString(); });
    const exited = new Promise<number | null>((r) => p.once('exit', (code) => r(code)));
    try {
      await until('two blocks', async () => (outText.match(/^Request\t/gm) ?? []).length >= 2, 10000);
      p.kill('SIGINT');
      const code = await Promise.race([exited, new Promise<string>((r) => setTimeout(() => r('still running'), 5000))]);
      assert.equal(code, 0, errText);
    } finally {
      if (p.exitCode === null) p.kill('SIGKILL');
    }
    assert.match(outText, /^Request\tActive\tTotal\tWrite\tRead\tRemove\tFlush\tAll WR\tAll RD\tWRBW\tRDBW\tRPS\tErrors$/m);
    assert.match(outText, /^Client\t\d+\t\d+\t/m);
    assert.equal(errText, '');
  });
});

// ------------------------------------------------------------------ node log level

describe('node log level', () => {
  let cl: Cluster;
  before(async () => { cl = await startCluster(1, 1); });
  after(async () => { await cl?.stop(); });

  const get = async () => (await collie(cl.sheep[0].port, ['node', 'log', 'level', 'get'])).stdout.toString().trim();
  const set = (l: string) => collie(cl.sheep[0].port, ['node', 'log', 'level', 'set', l]);
  /** A request that fails: the sheep logs it at debug level. */
  const failRequest = async () => {
    const c = await cl.sheep[0].client();
    try { await c.getVdiInfo('no-such-vdi').catch(() => undefined); } finally { c.close(); }
  };
  const debugLines = async () => (await fs.readFile(path.join(cl.sheep[0].dir, 'sheep.log'), 'utf8')).split('\n').filter((l) => l.includes('"level":20'));

  test('get shows the level the sheep started with; set changes it; get shows the new one', async () => {
    assert.equal(await get(), 'warn (40)');
    assert.equal((await set('info')).code, 0);
    assert.equal(await get(), 'info (30)');
    assert.equal((await set('warn')).code, 0);
    assert.equal(await get(), 'warn (40)');
  });

  test('after set debug the sheep writes debug lines to its log, and not before', async () => {
    await failRequest();
    await new Promise((r) => setTimeout(r, 300));
    assert.equal((await debugLines()).length, 0);
    const r = await set('debug');
    assert.equal(r.code, 0, r.stderr);
    await failRequest();
    await until('a debug line in sheep.log', async () => (await debugLines()).some((l) => l.includes('"msg":"request failed"')), 5000);
    assert.equal((await set('warn')).code, 0);
  });

  test("the original's level names are taken as the pino level they mean", async () => {
    assert.equal((await set('err')).code, 0);
    assert.equal(await get(), 'error (50)');
    assert.equal((await set('warning')).code, 0);
    assert.equal(await get(), 'warn (40)');
  });

  test('a bad level is refused with exit 64 and the list of levels; the level stays', async () => {
    const r = await set('bogus');
    assert.equal(r.code, 64);
    assert.match(r.stderr, /invalid loglevel: bogus\navailable loglevels:\nfatal/);
    assert.match(r.stderr, /debug/);
    assert.equal(await get(), 'warn (40)');
  });
});

// ------------------------------------------------------------------ node vnodes set

describe('node vnodes set', () => {
  let cl: Cluster;
  before(async () => { cl = await startCluster(3, 1); });
  after(async () => { await cl?.stop(); });

  test('out-of-range or non-numeric vnodes are refused with exit 64 and no epoch', async () => {
    const epoch = await epochOf(cl.sheep[0]);
    for (const bad of ['0', '65536', 'abc', '1.5']) {
      const r = await collie(cl.sheep[1].port, ['node', 'vnodes', 'set', bad]);
      assert.equal(r.code, 64, `${bad}: ${r.stderr}`);
      assert.match(r.stderr, /Invalid number of vnodes .*between 1 and 65535/);
    }
    assert.equal(await epochOf(cl.sheep[0]), epoch);
  });

  test('vnodes set adds an epoch, node list shows the weight, and recovery moves objects to the heavier node', async () => {
    // 120 small objects (1 MiB objects, a sector written in each), one copy each
    assert.equal((await collie(cl.sheep[0].port, ['vdi', 'create', '-z', '20', 'many', '120M'])).code, 0);
    const c = await cl.sheep[0].client();
    try {
      const v = await OpenVdi.open(c, await c.getVdiInfo('many'));
      for (let i = 0; i < 120; i++) await v.write(i * MB, crypto.randomBytes(512));
    } finally {
      c.close();
    }
    const epoch = await epochOf(cl.sheep[0]);
    await until('no recovery running', () => recovered(cl));
    const before = await Promise.all(cl.sheep.map(objectFiles));
    const heavy = 1;

    const r = await collie(cl.sheep[heavy].port, ['node', 'vnodes', 'set', '1000']);
    assert.equal(r.code, 0, r.stderr);
    for (const s of cl.sheep) await until('the new epoch on every node', async () => (await epochOf(s)) === epoch + 1);
    const list = (await collie(cl.sheep[0].port, ['node', 'list', '-r'])).stdout.toString();
    assert.match(list, new RegExp(`^\\d+ 127\\.0\\.0\\.1:${cl.sheep[heavy].port} 1000 ${heavy}$`, 'm'));
    const info = (await collie(cl.sheep[0].port, ['cluster', 'info'])).stdout.toString();
    assert.match(info, new RegExp(`\\s${epoch + 1} \\[.*127\\.0\\.0\\.1:${cl.sheep[heavy].port}:1000`));

    await until('recovery of the new epoch', () => recovered(cl, epoch + 1), 60000);
    const after = await Promise.all(cl.sheep.map(objectFiles));
    assert.equal(after.flat().length, before.flat().length, 'one copy of every object, still');
    assert.ok(after[heavy].length > before[heavy].length, `the heavier node holds more: ${before[heavy].length} -> ${after[heavy].length}`);
    for (let i = 0; i < 3; i++) if (i !== heavy) assert.ok(after[heavy].length > after[i].length, `more than node ${i}`);
    // and the data is where it should be: every object still reads back
    const check = await collie(cl.sheep[0].port, ['vdi', 'check', '-e', 'many']);
    assert.equal(check.code, 0, check.stdout.toString() + check.stderr);
  });

  test('setting the weight a node has already adds no epoch', async () => {
    const epoch = await epochOf(cl.sheep[0]);
    const r = await collie(cl.sheep[1].port, ['node', 'vnodes', 'set', '1000']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /nothing changed/);
    assert.equal(await epochOf(cl.sheep[0]), epoch);
  });
});

// ------------------------------------------------------------------ cluster reweight

const noLoop = await loopFsUnavailable();

describe('cluster reweight', () => {
  test('every node gets vnodes from its disk size in one new epoch (disks of 200, 400 and 600 MiB)', { skip: noLoop ?? false }, async () => {
    const base = await tempDir('reweight-');
    const disks: LoopFs[] = [];
    let cl: Cluster | null = null;
    try {
      for (const [i, size] of [200, 400, 600].entries()) disks.push(await mountLoopFs(base, `d${i}`, size));
      cl = await startCluster(3, 1, { dirs: disks.map((d) => path.join(d.dir, 'store')) });
      const epoch = await epochOf(cl.sheep[0]);
      const r = await collie(cl.sheep[0].port, ['cluster', 'reweight']);
      assert.equal(r.code, 0, r.stderr);
      for (const s of cl.sheep) await until('the new epoch on every node', async () => (await epochOf(s)) === epoch + 1);
      const nodes = (await control<NodeListReply>(cl.sheep[0], Op.GET_NODE_LIST)).nodes;
      const vnodes = cl.sheep.map((s) => nodes.find((n) => n.port === s.port)!.vnodes);
      // the formula, from the sizes the nodes report now (their logs take a little space meanwhile)
      const sizes = await Promise.all(cl.sheep.map(async (s) => (await control<StatSheepReply>(s, Op.STAT_SHEEP)).size));
      const expected = autoVnodes(sizes.map((sz, i) => [String(i), sz])).map(([, v]) => v);
      for (let i = 0; i < 3; i++) assert.ok(Math.abs(vnodes[i] - expected[i]) <= 1, `node ${i}: ${vnodes[i]} vnodes, formula ${expected[i]}`);
      // 64 times capacity over the average: about 32, 64 and 96
      assert.ok(vnodes[0] < vnodes[1] && vnodes[1] < vnodes[2], vnodes.join(' '));
      assert.ok(Math.abs(vnodes[0] - 32) <= 3 && Math.abs(vnodes[2] - 96) <= 3, vnodes.join(' '));
      assert.equal(await epochOf(cl.sheep[1]), epoch + 1, 'one decision, one epoch');
      // the same disks again: nothing to change
      const again = await collie(cl.sheep[2].port, ['cluster', 'reweight']);
      assert.equal(again.code, 0, again.stderr);
      assert.equal(await epochOf(cl.sheep[0]), epoch + 1);
    } finally {
      await cl?.stop();
      for (const d of disks) await d.umount();
      await fs.rm(base, { recursive: true, force: true });
    }
  });
});

describe('cluster reweight with a cluster key', () => {
  for (const extra of [[], ['--peer-tls']]) {
    test(`the sheep asks the other nodes for their disk size as a peer${extra.length ? ' over TLS' : ''}`, async () => {
      const base = await tempDir('reweight-key-');
      const key = path.join(base, 'cluster.key');
      const sheep: SheepProcess[] = [];
      try {
        assert.equal((await run(process.execPath, [COLLIE, 'cluster', 'keygen', key])).code, 0);
        for (let i = 0; i < 2; i++) {
          sheep.push(await new SheepProcess(path.join(base, `s${i}`), await freePort(), ['--cluster-key', key, ...extra, '-c', `local:${base}/group`, '-z', String(i)]).start());
        }
        assert.equal((await collie(sheep[0].port, ['cluster', 'format', '-c', '1', '-k', key])).code, 0);
        const r = await collie(sheep[0].port, ['cluster', 'reweight', '-k', key]);
        // both stores on one filesystem: the same capacity, the default weight each
        assert.equal(r.code, 0, r.stderr);
        const list = (await collie(sheep[1].port, ['node', 'list', '-r', '-k', key])).stdout.toString().trim().split('\n');
        assert.deepEqual(list.map((l) => l.split(' ')[2]), ['64', '64']);
        // without the key, administration is refused
        assert.notEqual((await collie(sheep[0].port, ['cluster', 'reweight'])).code, 0);
      } finally {
        for (const s of sheep) await s.stop();
        await stopSequencer(`${base}/group`);
        await fs.rm(base, { recursive: true, force: true });
      }
    });
  }
});

// ------------------------------------------------------------------ cluster alter-copy

describe('cluster alter-copy', () => {
  let cl: Cluster;
  before(async () => {
    cl = await startCluster(3, 1);
    assert.equal((await collie(cl.sheep[0].port, ['vdi', 'create', 'before', '8M'])).code, 0);
  });
  after(async () => { await cl?.stop(); });

  const copiesOf = async (name: string) => {
    const line = (await collie(cl.sheep[0].port, ['vdi', 'list', '-r', name])).stdout.toString().trim();
    return Number(line.split(' ')[8]);
  };

  test('without -f and without a terminal to confirm on, nothing changes', async () => {
    const r = await collie(cl.sheep[0].port, ['cluster', 'alter-copy', '-c', '2']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /not changed/);
    assert.match((await collie(cl.sheep[0].port, ['cluster', 'info', '-v'])).stdout.toString(), /plain with 1 redundancy policy/);
  });

  test('alter-copy -c 2 -f changes the default that cluster info and new VDIs show; existing VDIs keep theirs', async () => {
    const r = await collie(cl.sheep[0].port, ['cluster', 'alter-copy', '-f', '-c', '2']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stderr, "The cluster's redundancy level is set to 2, the old one was 1.\n");
    for (const s of cl.sheep) {
      await until('every node', async () => (await control<StatClusterReply>(s, Op.STAT_CLUSTER)).copies === 2);
      assert.match((await collie(s.port, ['cluster', 'info', '-v'])).stdout.toString(), /Cluster store: plain with 2 redundancy policy/);
    }
    assert.equal((await collie(cl.sheep[1].port, ['vdi', 'create', 'after', '8M'])).code, 0);
    assert.equal(await copiesOf('after'), 2);
    assert.equal(await copiesOf('before'), 1);
    const c = await cl.sheep[2].client();
    try {
      assert.equal((await c.getClusterDefault()).nrCopies, 2, 'what QEMU asks before it creates');
    } finally {
      c.close();
    }
  });

  test('the level the cluster has already is refused as nothing to change', async () => {
    const r = await collie(cl.sheep[0].port, ['cluster', 'alter-copy', '-f', '-c', '2']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /already set to 2, nothing changed/);
  });

  test('copies outside 1..31 are refused as a usage error', async () => {
    const r = await collie(cl.sheep[0].port, ['cluster', 'alter-copy', '-f', '-c', '32']);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /1\.\.31/);
  });
});

// ------------------------------------------------------------------ cluster check

describe('cluster check', () => {
  let cl: Cluster;
  before(async () => { cl = await startCluster(3, 2); });
  after(async () => { await cl?.stop(); });

  test('cluster check visits every VDI and snapshot and rebuilds a removed replica', async () => {
    const p = cl.sheep[0].port;
    assert.equal((await collie(p, ['vdi', 'create', 'a', '16M'])).code, 0);
    assert.equal((await collie(p, ['vdi', 'write', 'a'], crypto.randomBytes(12 * MB))).code, 0);
    assert.equal((await collie(p, ['vdi', 'snapshot', '-s', 'snap1', 'a'])).code, 0);
    assert.equal((await collie(p, ['vdi', 'create', 'b', '8M'])).code, 0);
    assert.equal((await collie(p, ['vdi', 'write', 'b'], crypto.randomBytes(MB))).code, 0);
    // a data object's copy removed from one of its two nodes
    const files = await Promise.all(cl.sheep.map(objectFiles));
    const victim = files.findIndex((f) => f.some((n) => !n.startsWith('8')));
    const oid = files[victim].find((n) => !n.startsWith('8'))!;
    await fs.rm(path.join(cl.sheep[victim].dir, 'obj', oid));

    const r = await collie(p, ['cluster', 'check']);
    const text = r.stdout.toString();
    assert.equal(r.code, 0, text + r.stderr);
    assert.match(text, /^fix vdi a$/m);
    assert.match(text, /^fix snapshot a \(id: 1, tag: "snap1"\)$/m);
    assert.match(text, /^fix vdi b$/m);
    assert.match(text, new RegExp(`fixed missing ${oid}`));
    assert.ok(await fs.access(path.join(cl.sheep[victim].dir, 'obj', oid)).then(() => true, () => false), 'the copy is back');
    const holders = (await Promise.all(cl.sheep.map(objectFiles))).filter((f) => f.includes(oid)).length;
    assert.equal(holders, 2);
  });

  test('a second cluster check finds nothing to repair', async () => {
    const r = await collie(cl.sheep[1].port, ['cluster', 'check']);
    assert.equal(r.code, 0, r.stderr);
    assert.doesNotMatch(r.stdout.toString(), /fixed|missing/);
    assert.equal((r.stdout.toString().match(/^finish check&repair /gm) ?? []).length, 3);
  });
});
