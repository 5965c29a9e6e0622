// npm run bench:recovery: how fast a cluster re-replicates after losing a node. 4 sheep, copies=3,
// 1 GiB written; one sheep is killed and the clock runs until every object has 3 copies again.
// The baseline, measured in the same run on the same disk, is a plain `cp` of the same number of
// bytes: re-replication has to read and write at least that much. Then a rejoin: 3 sheep, copies=3
// (each holds all 1 GiB), one killed, 16 MiB written (4 objects) during its 10 s away, restarted: what recovery
// copies to it (the changed objects, not the 1 GiB it holds) and how long until the cluster is clean.
// A script, not a test.

import { spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { SheepProcess, freePort, stopSequencer, ROOT } from '../helpers/sheep.js';
import { SheepClient } from '../../lib/client.js';
import { OpenVdi } from '../../lib/vdi-io.js';
import { Op } from '../../lib/proto.js';
import { oidHex, vidToDataOid } from '../../lib/oid.js';
import type { RecoveryStatus, StatClusterReply } from '../../lib/admin.js';

const MB = 1 << 20;
const SIZE = Number(process.env.BENCH_RECOVERY_MB ?? 1024) * MB;
const OBJ = 4 * MB;

function settle(): void {
  spawnSync('sync');
}

async function control<T>(s: SheepProcess, op: number, arg?: unknown): Promise<T> {
  const c = await s.client();
  try { return await c.control<T>(op, arg); } finally { c.close(); }
}

async function holders(sheep: SheepProcess[], vid: number, idx: number): Promise<number> {
  let n = 0;
  for (const s of sheep) if (s.alive && await fs.access(path.join(s.dir, 'obj', oidHex(vidToDataOid(vid, idx)))).then(() => true, () => false)) n++;
  return n;
}

/** Kills one sheep and returns seconds until every object has 3 live copies, and bytes copied. */
async function loseOne(sheep: SheepProcess[], vid: number, victim: number): Promise<{ seconds: number; bytes: number }> {
  const live = sheep.filter((_, i) => i !== victim);
  const t0 = process.hrtime.bigint();
  await sheep[victim].kill9();
  const objects = SIZE / OBJ;
  let copied = 0;
  for (;;) {
    const st = await Promise.all(live.map((s) => control<StatClusterReply>(s, Op.STAT_CLUSTER)));
    const rec = await Promise.all(live.map((s) => control<RecoveryStatus>(s, Op.STAT_RECOVERY)));
    if (st.every((x) => x.nodes === live.length) && rec.every((r) => r.state === 'idle' && r.epoch === st[0].epoch)) {
      let ok = true;
      for (let i = 0; i < objects && ok; i++) ok = (await holders(live, vid, i)) === 3;
      if (ok) {
        copied = rec.reduce((a, r) => a + r.copied, 0);
        settle(); // the copies are on disk, as the baseline's are
        break;
      }
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return { seconds: Number(process.hrtime.bigint() - t0) / 1e9, bytes: copied * OBJ };
}

/** Kills a sheep holding SIZE bytes, writes 16 MiB during 10 s, restarts it: bytes copied, seconds to clean. */
async function rejoin(work: string): Promise<{ held: number; written: number; copied: number; kept: number; seconds: number }> {
  const sheep: SheepProcess[] = [];
  try {
    for (let i = 0; i < 3; i++) {
      sheep.push(await new SheepProcess(path.join(work, `r${i}`), await freePort(), ['-c', `local:${work}/rgroup`, '-z', String(i), '-l', 'warn']).start());
    }
    const c = await SheepClient.connect({ port: sheep[0].port });
    try {
      await c.control(Op.MAKE_FS, { copies: 3 });
      const v = await OpenVdi.open(c, await c.newVdi('rejoin', BigInt(SIZE)));
      for (let off = 0; off < SIZE; off += 64 * MB) await v.write(off, crypto.randomBytes(64 * MB));
      settle();
      const held = await usedBy(sheep[2]);
      await sheep[2].kill9();
      const away = Date.now();
      // 16 MiB in 1 MiB writes at a random place while the node is away (recovery copies whole
      // 4 MiB objects: 16 MiB touching 4 objects is 16 MiB to copy)
      const at = OBJ * crypto.randomInt(SIZE / OBJ - 4);
      let written = 0;
      for (; written < 16 * MB; written += MB) await v.write(at + written, crypto.randomBytes(MB));
      await new Promise((r) => setTimeout(r, Math.max(0, 10_000 - (Date.now() - away))));
      const t0 = process.hrtime.bigint();
      await sheep[2].start();
      for (;;) {
        const st = await Promise.all(sheep.map((s) => control<StatClusterReply>(s, Op.STAT_CLUSTER)));
        const rec = await Promise.all(sheep.map((s) => control<RecoveryStatus>(s, Op.STAT_RECOVERY)));
        if (st.every((x) => x.nodes === 3 && x.epoch === st[0].epoch) && rec.every((r) => r.state === 'idle' && (r.epoch === st[0].epoch || r.epoch === 0))) {
          const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
          const r2 = rec[2];
          return { held, written, copied: r2.copied * OBJ, kept: r2.kept ?? 0, seconds };
        }
        await new Promise((r) => setTimeout(r, 50));
      }
    } finally {
      c.close();
    }
  } finally {
    for (const s of sheep) await s.stop();
    await stopSequencer(`${work}/rgroup`);
  }
}

/** Bytes a sheep's objects take on disk. */
async function usedBy(s: SheepProcess): Promise<number> {
  let n = 0;
  for (const f of await fs.readdir(path.join(s.dir, 'obj'))) {
    if (!/^[0-9a-f]{16}$/.test(f)) continue;
    n += (await fs.stat(path.join(s.dir, 'obj', f))).blocks * 512;
  }
  return n;
}

async function main(): Promise<void> {
  const work = await fs.mkdtemp(path.join(ROOT, 'run', 'bench-recovery-'));
  const sheep: SheepProcess[] = [];
  try {
    for (let i = 0; i < 4; i++) {
      sheep.push(await new SheepProcess(path.join(work, `s${i}`), await freePort(), ['-c', `local:${work}/group`, '-z', String(i), '-l', 'warn']).start());
    }
    const c = await SheepClient.connect({ port: sheep[0].port });
    let vid: number;
    try {
      await c.control(Op.MAKE_FS, { copies: 3 });
      vid = await c.newVdi('rec', BigInt(SIZE));
      const v = await OpenVdi.open(c, vid);
      for (let off = 0; off < SIZE; off += 64 * MB) await v.write(off, crypto.randomBytes(64 * MB));
    } finally {
      c.close();
    }
    settle();
    const r = await loseOne(sheep, vid, 1);
    settle();
    // baseline: copy the same number of bytes with cp on the same disk, flushed like the sheep's
    const src = path.join(work, 'baseline.src');
    const dst = path.join(work, 'baseline.dst');
    spawnSync('dd', ['if=/dev/urandom', `of=${src}`, 'bs=4M', `count=${r.bytes / OBJ}`, 'status=none']);
    settle();
    const t0 = process.hrtime.bigint();
    spawnSync('sh', ['-c', `cp "${src}" "${dst}" && sync`]);
    const cpSeconds = Number(process.hrtime.bigint() - t0) / 1e9;
    const mbps = r.bytes / 1e6 / r.seconds;
    const cpMbps = r.bytes / 1e6 / cpSeconds;
    const cpu = os.cpus()[0]?.model ?? '';
    console.log(`# sheepdog-ts recovery benchmark (${new Date().toISOString().slice(0, 10)}, ${os.cpus().length} cores ${cpu}, node ${process.version})`);
    console.log('');
    console.log(`4 sheep, copies=3, ${SIZE / MB} MiB written; one sheep killed with SIGKILL; timed until every object has 3 copies again:`);
    console.log('');
    console.log('| | MB re-replicated | seconds | MB/s |');
    console.log('|---|---:|---:|---:|');
    console.log(`| recovery after a node loss | ${(r.bytes / 1e6).toFixed(0)} | ${r.seconds.toFixed(2)} | ${mbps.toFixed(1)} |`);
    console.log(`| baseline: cp of the same bytes on the same disk | ${(r.bytes / 1e6).toFixed(0)} | ${cpSeconds.toFixed(2)} | ${cpMbps.toFixed(1)} |`);
    console.log(`| ratio | | | ${(mbps / cpMbps).toFixed(2)}x |`);
    for (const s of sheep) await s.stop();
    await stopSequencer(`${work}/group`);
    sheep.length = 0;
    const j = await rejoin(work);
    console.log('');
    console.log(`3 sheep, copies=3; one sheep holding ${(j.held / MB).toFixed(0)} MiB killed, ${(j.written / MB).toFixed(1)} MiB written in 1 MiB writes during its 10 s away, restarted:`);
    console.log('');
    console.log('| held by the node | written while away | copied to it by recovery | objects kept | seconds to clean after restart |');
    console.log('|---:|---:|---:|---:|---:|');
    console.log(`| ${(j.held / MB).toFixed(0)} MiB | ${(j.written / MB).toFixed(1)} MiB | ${(j.copied / MB).toFixed(0)} MiB (${(100 * j.copied / j.held).toFixed(1)}% of what it holds) | ${j.kept} | ${j.seconds.toFixed(2)} |`);
  } finally {
    for (const s of sheep) await s.stop();
    await stopSequencer(`${work}/group`);
    await fs.rm(work, { recursive: true, force: true });
  }
}

await main();
