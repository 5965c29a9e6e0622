// npm run thrash -- [--minutes M] [--down 1|2] [--driver local|corosync] [--seconds S] [--no-partitions]
//
// 5 sheep (copies=3, one zone each), two verifying writers through sheep 0 (one over port 7000, one
// over NBD) writing random blocks and reading random ranges back against an in-memory model, while
// sheep 1-4 are SIGKILLed at random and restarted (one at a time, or two down at once with --down 2).
// On the corosync driver each sheep is a host of its own: a network namespace with its own corosync,
// all on one bridge (root only; link-local 169.254.79.0/24, nothing leaves the machine), and half of
// the events are network partitions instead of kills: 1 or 2 of hosts 1-4 are cut off the bridge (the
// minority halts, the majority goes on) and healed a few seconds later.
// At the end every sheep is back, the harness waits for recovery to finish everywhere (time to
// clean), then checks every acknowledged write against the model through every sheep, that every
// object has exactly 3 copies and that they are identical. It prints kills, writes acknowledged,
// bytes verified, bytes lost (must be 0), client errors while the gateway was alive (must be 0) and
// the time to clean; exits 1 when anything was lost, wrong or failed.

import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { SheepProcess, freePort, tempDir, stopSequencer, waitForPort, endProcess, SHEEP } from '../helpers/sheep.js';
import { NbdConn, NBD_CMD } from '../helpers/nbd-client.js';
import { startCorosync, corosyncAvailable, type Corosync } from '../helpers/corosync.js';
import { SheepClient } from '../../lib/client.js';
import { OpenVdi } from '../../lib/vdi-io.js';
import { Op } from '../../lib/proto.js';
import { oidHex, oidKind, oidToVid } from '../../lib/oid.js';
import type { RecoveryStatus, StatClusterReply } from '../../lib/admin.js';

const MB = 1 << 20;
const VDI_SIZE = 64 * MB;
const NODES = 5;

function arg(name: string, def: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 && process.argv[i + 1] ? process.argv[i + 1] : def;
}

const seconds = Number(arg('seconds', String(Number(arg('minutes', '2')) * 60)));
const down = Number(arg('down', '1'));
const driver = arg('driver', 'local');
if (![1, 2].includes(down) || !['local', 'corosync'].includes(driver) || !(seconds > 0)) {
  console.error('usage: npm run thrash -- [--minutes M | --seconds S] [--down 1|2] [--driver local|corosync]');
  process.exit(64);
}

const partitions = driver === 'corosync' && !process.argv.includes('--no-partitions');

const stats = { kills: 0, partitions: 0, writes: 0, reads: 0, bytesVerified: 0, bytesLost: 0, clientErrors: 0, errorsWhileDown: 0 };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** One sheep of the thrash, wherever it runs. */
interface Node {
  readonly dir: string;
  readonly host: string;
  readonly port: number;
  start(): Promise<unknown>;
  kill9(): Promise<void>;
  stop(): Promise<void>;
}

async function control<T>(s: Node, op: number): Promise<T> {
  const c = await SheepClient.connect({ host: s.host, port: s.port });
  try { return await c.control<T>(op); } finally { c.close(); }
}

const client = (s: Node) => SheepClient.connect({ host: s.host, port: s.port });

/** A sheep on loopback (local driver, or every sheep on one corosync). */
class LoopbackNode implements Node {
  readonly host = '127.0.0.1';
  constructor(private readonly p: SheepProcess) {}
  get dir() { return this.p.dir; }
  get port() { return this.p.port; }
  start() { return this.p.start(); }
  kill9() { return this.p.kill9(); }
  stop() { return this.p.stop(); }
}

const SUBNET = '169.254.79';

function ip(args: string[]): void {
  const r = spawnSync('ip', args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`ip ${args.join(' ')}: ${r.stderr}`);
}

/** A sheep on a host of its own: a network namespace with its own corosync, on the hub's bridge. */
class HostNode implements Node {
  private proc: ChildProcess | null = null;
  readonly port = 7000;
  constructor(readonly ns: string, readonly host: string, readonly dir: string, private readonly extra: string[] = []) {}

  async start(): Promise<void> {
    const p = spawn('ip', ['netns', 'exec', this.ns, process.execPath, SHEEP, '-f', '-l', 'warn', '-p', '7000', '-b', this.host,
      '-c', 'corosync', ...this.extra, this.dir], { stdio: 'ignore' });
    this.proc = p;
    await waitForPort(this.port, 20000, this.host);
  }

  async kill9(): Promise<void> {
    await endProcess(this.proc, 'SIGKILL');
    this.proc = null;
  }

  async stop(): Promise<void> {
    await endProcess(this.proc, 'SIGTERM');
    this.proc = null;
  }
}

/**
 * NODES hosts on one switch: a bridge in a hub namespace, each host on it by a veth pair, and one
 * more pair from this (root) namespace so the writers and checks reach every host. Cutting host i
 * takes its port on the hub down.
 */
class Switch {
  readonly tag = crypto.randomBytes(3).toString('hex');
  readonly hub = `thrH${this.tag}`;
  readonly ns = Array.from({ length: NODES }, (_, i) => `thr${i}${this.tag}`);
  readonly addrs = Array.from({ length: NODES }, (_, i) => `${SUBNET}.${i + 1}`);
  readonly coros: Corosync[] = [];
  private port(i: number | 'root') { return `tp${i === 'root' ? 'r' : i}${this.tag}`; }

  async build(): Promise<void> {
    ip(['netns', 'add', this.hub]);
    ip(['-n', this.hub, 'link', 'add', 'br0', 'type', 'bridge']);
    ip(['-n', this.hub, 'link', 'set', 'br0', 'up']);
    const attach = (end: string, hubEnd: string) => {
      ip(['link', 'add', end, 'type', 'veth', 'peer', 'name', hubEnd]);
      ip(['link', 'set', hubEnd, 'netns', this.hub]);
      ip(['-n', this.hub, 'link', 'set', hubEnd, 'master', 'br0']);
      ip(['-n', this.hub, 'link', 'set', hubEnd, 'up']);
    };
    for (let i = 0; i < NODES; i++) {
      ip(['netns', 'add', this.ns[i]]);
      const end = `th${i}${this.tag}`;
      attach(end, this.port(i));
      ip(['link', 'set', end, 'netns', this.ns[i]]);
      ip(['-n', this.ns[i], 'addr', 'add', `${this.addrs[i]}/24`, 'dev', end]);
      ip(['-n', this.ns[i], 'link', 'set', end, 'up']);
      ip(['-n', this.ns[i], 'link', 'set', 'lo', 'up']);
    }
    const rootEnd = `thr${this.tag}`;
    attach(rootEnd, this.port('root'));
    ip(['addr', 'add', `${SUBNET}.100/24`, 'dev', rootEnd]);
    ip(['link', 'set', rootEnd, 'up']);
    const nodes = this.addrs.map((addr, i) => ({ addr, nodeid: i + 1 }));
    // corosync's default token (3000 ms): five rings on two loaded cores must not split on a late token
    for (let i = 0; i < NODES; i++) this.coros.push(await startCorosync({ netns: this.ns[i], bindAddr: this.addrs[i], nodes, token: 3000 }));
  }

  cut(i: number): void { ip(['-n', this.hub, 'link', 'set', this.port(i), 'down']); }
  heal(i: number): void { ip(['-n', this.hub, 'link', 'set', this.port(i), 'up']); }

  async destroy(): Promise<void> {
    for (const c of this.coros) await c.stop().catch(() => undefined);
    for (const n of [...this.ns, this.hub]) spawnSync('ip', ['netns', 'delete', n]);
  }
}

/** Random writes of 4 KiB .. 1 MiB, each read back at once, against the model; never throws. */
function writer(name: string, io: { write(off: number, b: Buffer): Promise<void>; read(off: number, n: number): Promise<Buffer> }, model: Buffer, running: () => boolean): Promise<void> {
  return (async () => {
    while (running()) {
      const len = 4096 * (1 + crypto.randomInt(256));
      const off = 4096 * crypto.randomInt((VDI_SIZE - len) / 4096);
      const block = crypto.randomBytes(len);
      try {
        await io.write(off, block);
        block.copy(model, off); // acknowledged: from now on it must be there
        stats.writes++;
        const back = await io.read(off, len);
        stats.reads++;
        stats.bytesVerified += len;
        if (!back.equals(model.subarray(off, off + len))) {
          stats.bytesLost += len;
          console.error(`${name}: read back at ${off}+${len} differs from the acknowledged write`);
        }
      } catch (e) {
        // the gateway (sheep 0) is never killed: any error a client sees is a failure
        stats.clientErrors++;
        console.error(`${name}: ${(e as Error).message}`);
        await sleep(200);
      }
    }
  })();
}

async function main(): Promise<void> {
  if (driver === 'corosync' && !corosyncAvailable()) throw new Error('the corosync driver needs root and Debian\'s corosync');
  if (partitions && spawnSync('ip', ['netns', 'list']).status !== 0) throw new Error('partitions need ip netns (root); --no-partitions runs without');
  const base = await tempDir('thrash-');
  let corosync: Corosync | null = null;
  let net: Switch | null = null;
  const spec = driver === 'local' ? `local:${base}/group` : `corosync:thrash-${crypto.randomBytes(4).toString('hex')}`;
  const sheep: Node[] = [];
  let nbdAt = { host: '127.0.0.1', port: 0 };
  let running = true;
  try {
    if (partitions) {
      net = new Switch();
      await net.build();
      for (let i = 0; i < NODES; i++) {
        const n = new HostNode(net.ns[i], net.addrs[i], path.join(base, `s${i}`), i === 0 ? ['--nbd', `${net.addrs[0]}:10809`] : []);
        await n.start();
        sheep.push(n);
      }
      nbdAt = { host: net.addrs[0], port: 10809 };
    } else {
      if (driver === 'corosync') corosync = await startCorosync();
      nbdAt.port = await freePort();
      for (let i = 0; i < NODES; i++) {
        const args = ['-c', spec, '-z', String(i)];
        if (i === 0) args.push('--nbd', `127.0.0.1:${nbdAt.port}`);
        sheep.push(new LoopbackNode(await new SheepProcess(path.join(base, `s${i}`), await freePort(), args).start()));
      }
    }
    // every sheep in the cluster before it is formatted
    for (const deadline = Date.now() + 60000; (await control<StatClusterReply>(sheep[0], Op.STAT_CLUSTER)).nodes < NODES;) {
      if (Date.now() > deadline) throw new Error('the sheep did not all join');
      await sleep(200);
    }
    const c = await client(sheep[0]);
    await c.control(Op.MAKE_FS, { copies: 3 });
    const models = { p7000: Buffer.alloc(VDI_SIZE), nbd: Buffer.alloc(VDI_SIZE) };
    for (const name of Object.keys(models)) await c.newVdi(name, BigInt(VDI_SIZE));
    const v = await OpenVdi.open(c, await c.getVdiInfo('p7000'));
    const nbd = await NbdConn.open(nbdAt, 'nbd');
    nbd.replyTimeoutMs = 120_000;
    const nbdIo = {
      write: async (off: number, b: Buffer) => { const r = await nbd.cmd(NBD_CMD.WRITE, off, b.length, b); if (r.error) throw new Error(`NBD write errno ${r.error}`); },
      read: async (off: number, n: number) => { const r = await nbd.cmd(NBD_CMD.READ, off, n); if (r.error) throw new Error(`NBD read errno ${r.error}`); return r.data; },
    };
    const t0 = Date.now();
    const writers = [
      writer('port 7000', { write: (o, b) => v.write(o, b), read: (o, n) => v.read(o, n) }, models.p7000, () => running),
      writer('NBD', nbdIo, models.nbd, () => running),
    ];
    // chaos: SIGKILL one (or two) of sheep 1-4, restart it a few seconds later, again and again; with
    // partitions, every other event cuts hosts off the network instead, and heals them
    while (Date.now() - t0 < seconds * 1000) {
      await sleep(3000 + crypto.randomInt(7000));
      if (Date.now() - t0 >= seconds * 1000) break;
      const victims = [1, 2, 3, 4].sort(() => crypto.randomInt(3) - 1).slice(0, down);
      if (net && crypto.randomInt(2) === 0) {
        for (const i of victims) net.cut(i);
        stats.partitions++;
        await sleep(2000 + crypto.randomInt(6000));
        for (const i of victims) net.heal(i);
        continue;
      }
      for (const i of victims) { await sheep[i].kill9(); stats.kills++; }
      await sleep(2000 + crypto.randomInt(6000));
      for (const i of victims) await sheep[i].start();
    }
    running = false;
    await Promise.all(writers);
    const tEnd = Date.now();
    // time to clean: every node in one epoch, recovery idle everywhere
    for (;;) {
      const st = await Promise.all(sheep.map((s) => control<StatClusterReply>(s, Op.STAT_CLUSTER)));
      const rec = await Promise.all(sheep.map((s) => control<RecoveryStatus>(s, Op.STAT_RECOVERY)));
      if (st.every((x) => x.nodes === NODES && x.epoch === st[0].epoch) && rec.every((r) => r.state === 'idle' && (r.epoch === st[0].epoch || r.epoch === 0))) break;
      if (Date.now() - tEnd > 300_000) throw new Error(`recovery did not finish: ${JSON.stringify(rec)}`);
      await sleep(100);
    }
    const clean = (Date.now() - tEnd) / 1000;
    nbd.close();
    // every acknowledged byte, through every sheep
    for (const s of sheep) {
      const cc = await client(s);
      for (const [name, model] of Object.entries(models)) {
        const vv = await OpenVdi.open(cc, await cc.getVdiInfo(name));
        for (let off = 0; off < VDI_SIZE; off += 4 * MB) {
          const got = await vv.read(off, 4 * MB);
          const want = model.subarray(off, off + 4 * MB);
          stats.bytesVerified += want.length;
          if (!got.equals(want)) {
            let diff = 0;
            for (let i = 0; i < want.length; i++) if (got[i] !== want[i]) diff++;
            stats.bytesLost += diff;
            console.error(`${name} at ${off} through ${s.port}: ${diff} bytes differ`);
          }
        }
      }
      cc.close();
    }
    // exactly 3 identical copies of every object of the two VDIs
    const vids = new Set<number>();
    for (const name of Object.keys(models)) vids.add(await c.getVdiInfo(name));
    const holders = new Map<string, Buffer[]>();
    for (const s of sheep) {
      for (const f of await fs.readdir(path.join(s.dir, 'obj'))) {
        if (f.startsWith('.')) continue;
        const oid = BigInt(`0x${f}`);
        if (!vids.has(oidToVid(oid)) || (oidKind(oid) !== 'data' && oidKind(oid) !== 'inode')) continue;
        const l = holders.get(f) ?? [];
        l.push(await fs.readFile(path.join(s.dir, 'obj', f)));
        holders.set(f, l);
      }
    }
    let badCopies = 0;
    for (const [f, l] of holders) {
      const len = Math.max(...l.map((b) => b.length));
      const norm = l.map((b) => Buffer.concat([b, Buffer.alloc(len - b.length)]));
      if (l.length !== 3 || !norm.every((b) => b.equals(norm[0]))) {
        badCopies++;
        console.error(`object ${f}: ${l.length} copies${norm.every((b) => b.equals(norm[0])) ? '' : ', not identical'}`);
      }
    }
    c.close();
    console.log(`thrash (${driver} driver${net ? ', a host per sheep' : ''}, ${NODES} sheep, copies=3, ${down} down at a time, ${seconds} s):`);
    console.log(`  kills: ${stats.kills}`);
    if (net) console.log(`  partitions: ${stats.partitions}`);
    console.log(`  writes acknowledged: ${stats.writes} (read back at once: ${stats.reads})`);
    console.log(`  bytes verified: ${stats.bytesVerified}`);
    console.log(`  bytes lost: ${stats.bytesLost}`);
    console.log(`  client errors with the gateway alive: ${stats.clientErrors}`);
    console.log(`  objects: ${holders.size}, with other than 3 identical copies: ${badCopies}`);
    console.log(`  time to clean: ${clean.toFixed(1)} s`);
    const ok = stats.bytesLost === 0 && stats.clientErrors === 0 && badCopies === 0 && stats.writes > 0;
    console.log(`thrash: ${ok ? 'PASS' : 'FAIL'}`);
    if (!ok) process.exitCode = 1;
  } catch (e) {
    process.exitCode = 1;
    throw e;
  } finally {
    running = false;
    for (const s of sheep) await s.stop();
    if (driver === 'local') await stopSequencer(`${base}/group`);
    await corosync?.stop();
    await net?.destroy();
    // a failed run keeps the stores and the sheep logs (DIR/sheep.log) for a look
    if (process.exitCode) console.log(`thrash: stores and logs kept in ${base}`);
    else await fs.rm(base, { recursive: true, force: true });
  }
}

main().catch((e) => { console.error(`thrash: ${(e as Error).stack ?? e}`); process.exitCode = 1; });
