// npm run thrash -- [--minutes M] [--down 1|2] [--driver local|corosync] [--seconds S]
//
// 5 sheep (copies=3, one zone each), two verifying writers through sheep 0 (one over port 7000, one
// over NBD) writing random blocks and reading random ranges back against an in-memory model, while
// sheep 1-4 are SIGKILLed at random and restarted (one at a time, or two down at once with --down 2).
// At the end every sheep is back, the harness waits for recovery to finish everywhere (time to
// clean), then checks every acknowledged write against the model through every sheep, that every
// object has exactly 3 copies and that they are identical. It prints kills, writes acknowledged,
// bytes verified, bytes lost (must be 0), client errors while the gateway was alive (must be 0) and
// the time to clean; exits 1 when anything was lost, wrong or failed.

import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { SheepProcess, freePort, tempDir, stopSequencer } from '../helpers/sheep.js';
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

const stats = { kills: 0, writes: 0, reads: 0, bytesVerified: 0, bytesLost: 0, clientErrors: 0, errorsWhileDown: 0 };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function control<T>(s: SheepProcess, op: number): Promise<T> {
  const c = await s.client();
  try { return await c.control<T>(op); } finally { c.close(); }
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
  const base = await tempDir('thrash-');
  let corosync: Corosync | null = null;
  const spec = driver === 'local' ? `local:${base}/group` : `corosync:thrash-${crypto.randomBytes(4).toString('hex')}`;
  if (driver === 'corosync') corosync = await startCorosync();
  const nbdPort = await freePort();
  const sheep: SheepProcess[] = [];
  for (let i = 0; i < NODES; i++) {
    const args = ['-c', spec, '-z', String(i)];
    if (i === 0) args.push('--nbd', `127.0.0.1:${nbdPort}`);
    sheep.push(await new SheepProcess(path.join(base, `s${i}`), await freePort(), args).start());
  }
  let running = true;
  try {
    const c = await sheep[0].client();
    await c.control(Op.MAKE_FS, { copies: 3 });
    const models = { p7000: Buffer.alloc(VDI_SIZE), nbd: Buffer.alloc(VDI_SIZE) };
    for (const name of Object.keys(models)) await c.newVdi(name, BigInt(VDI_SIZE));
    const v = await OpenVdi.open(c, await c.getVdiInfo('p7000'));
    const nbd = await NbdConn.open({ port: nbdPort, host: '127.0.0.1' }, 'nbd');
    const nbdIo = {
      write: async (off: number, b: Buffer) => { const r = await nbd.cmd(NBD_CMD.WRITE, off, b.length, b); if (r.error) throw new Error(`NBD write errno ${r.error}`); },
      read: async (off: number, n: number) => { const r = await nbd.cmd(NBD_CMD.READ, off, n); if (r.error) throw new Error(`NBD read errno ${r.error}`); return r.data; },
    };
    const t0 = Date.now();
    const writers = [
      writer('port 7000', { write: (o, b) => v.write(o, b), read: (o, n) => v.read(o, n) }, models.p7000, () => running),
      writer('NBD', nbdIo, models.nbd, () => running),
    ];
    // chaos: SIGKILL one (or two) of sheep 1-4, restart it a few seconds later, again and again
    while (Date.now() - t0 < seconds * 1000) {
      await sleep(3000 + crypto.randomInt(7000));
      if (Date.now() - t0 >= seconds * 1000) break;
      const victims = [1, 2, 3, 4].sort(() => crypto.randomInt(3) - 1).slice(0, down);
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
      const cc = await s.client();
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
    console.log(`thrash (${driver} driver, ${NODES} sheep, copies=3, ${down} down at a time, ${seconds} s):`);
    console.log(`  kills: ${stats.kills}`);
    console.log(`  writes acknowledged: ${stats.writes} (read back at once: ${stats.reads})`);
    console.log(`  bytes verified: ${stats.bytesVerified}`);
    console.log(`  bytes lost: ${stats.bytesLost}`);
    console.log(`  client errors with the gateway alive: ${stats.clientErrors}`);
    console.log(`  objects: ${holders.size}, with other than 3 identical copies: ${badCopies}`);
    console.log(`  time to clean: ${clean.toFixed(1)} s`);
    const ok = stats.bytesLost === 0 && stats.clientErrors === 0 && badCopies === 0 && stats.writes > 0;
    console.log(`thrash: ${ok ? 'PASS' : 'FAIL'}`);
    if (!ok) process.exitCode = 1;
  } finally {
    running = false;
    for (const s of sheep) await s.stop();
    if (driver === 'local') await stopSequencer(`${base}/group`);
    await corosync?.stop();
    await fs.rm(base, { recursive: true, force: true });
  }
}

main().catch((e) => { console.error(`thrash: ${(e as Error).stack ?? e}`); process.exit(1); });
