// The sheep daemon itself: start-up checks, daemon mode, Unix socket, cluster shutdown, attributes.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { SHEEP, SheepProcess, freePort, tempDir, run, collie, startSheep, destroySheep, waitForPort, stopSequencer, pidRunning } from '../helpers/sheep.js';
import { SheepClient } from '../../lib/client.js';
import { Op, Res, SdError } from '../../lib/proto.js';
import { OpenVdi } from '../../lib/vdi-io.js';

test('sheep refuses a store directory without user xattr support', async (t) => {
  if (process.getuid?.() !== 0) { t.skip('needs root to mount a ramfs (no user xattrs)'); return; }
  const mnt = await tempDir('ramfs-');
  try {
    execFileSync('mount', ['-t', 'ramfs', 'ramfs', mnt]);
  } catch {
    t.skip('cannot mount ramfs here');
    await fs.rm(mnt, { recursive: true, force: true });
    return;
  }
  try {
    const r = await run(process.execPath, [SHEEP, '-f', '-p', String(await freePort()), path.join(mnt, 'store')], undefined, 20000);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /does not support user extended attributes/);
  } finally {
    execFileSync('umount', [mnt]);
    await fs.rm(mnt, { recursive: true, force: true });
  }
});

test('without -f sheep daemonizes, returns once it serves, and writes its pid file', async () => {
  const dir = await tempDir();
  const port = await freePort();
  const pidfile = path.join(dir, 'sheep.pid');
  try {
    const r = await run(process.execPath, [SHEEP, '-p', String(port), '-P', pidfile, '-c', `local:${dir}/cluster`, path.join(dir, 'store')], undefined, 20000);
    assert.equal(r.code, 0, r.stderr);
    const pid = Number(await fs.readFile(pidfile, 'utf8'));
    assert.ok(pid > 0);
    await waitForPort(port, 2000);
    // a second daemon on the same store fails with the reason, in the foreground process
    const again = await run(process.execPath, [SHEEP, '-p', String(await freePort()), '-c', `local:${dir}/cluster`, path.join(dir, 'store')], undefined, 20000);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /already used by a running sheep/);
    process.kill(pid, 'SIGTERM');
    for (let i = 0; i < 100; i++) {
      if (!pidRunning(pid)) break;
      await new Promise((res) => setTimeout(res, 50));
    }
    await assert.rejects(fs.access(pidfile), 'pid file removed on stop');
  } finally {
    await stopSequencer(`${dir}/cluster`);
    await fs.rm(dir, { recursive: true, force: true });
  }
});

test('sheep serves the same protocol on a Unix socket (sheepdog+unix://)', async () => {
  const dir = await tempDir();
  const sockPath = path.join(dir, 'sheep.sock');
  const s = await new SheepProcess(path.join(dir, 'store'), await freePort(), ['--socket', sockPath]).start();
  try {
    const c = await SheepClient.connect({ socketPath: sockPath });
    try {
      await c.control(Op.MAKE_FS, { copies: 1 });
      const vid = await c.newVdi('unix', 8n << 20n);
      const v = await OpenVdi.open(c, vid);
      await v.write(4096, Buffer.alloc(4096, 0x42));
      assert.deepEqual(await v.read(4096, 4096), Buffer.alloc(4096, 0x42));
    } finally {
      c.close();
    }
  } finally {
    await destroySheep(s);
  }
});

test('collie cluster shutdown stops the sheep after flushing', async () => {
  const s = await startSheep();
  try {
    const r = await collie(s.port, ['cluster', 'shutdown']);
    assert.equal(r.code, 0, r.stderr);
    const exited = await Promise.race([
      new Promise<boolean>((res) => s.proc!.once('exit', () => res(true))),
      new Promise<boolean>((res) => setTimeout(() => res(false), 10000)),
    ]);
    assert.ok(exited, 'sheep exited after cluster shutdown');
  } finally {
    await destroySheep(s);
  }
});

test('VDI attributes are set, read, refused on exclusive re-create, deleted, and survive a restart', async () => {
  const s = await startSheep();
  try {
    let c = await s.client();
    await c.newVdi('attrs', 8n << 20n);
    await c.control(Op.GET_VDI_ATTR, { name: 'attrs', key: 'owner', value: Buffer.from('alice'), mode: 'exclusive' });
    await assert.rejects(c.control(Op.GET_VDI_ATTR, { name: 'attrs', key: 'owner', value: Buffer.from('bob'), mode: 'exclusive' }),
      (e: SdError) => e.result === Res.VDI_EXIST);
    await c.control(Op.GET_VDI_ATTR, { name: 'attrs', key: 'note', value: Buffer.from('x'.repeat(1000)), mode: 'set' });
    c.close();
    await s.stop();
    await s.start();
    c = await s.client();
    const got = await c.control<{ value: Uint8Array }>(Op.GET_VDI_ATTR, { name: 'attrs', key: 'owner', mode: 'get' });
    assert.equal(Buffer.from(got.value).toString(), 'alice');
    await c.control(Op.GET_VDI_ATTR, { name: 'attrs', key: 'owner', mode: 'delete' });
    await assert.rejects(c.control(Op.GET_VDI_ATTR, { name: 'attrs', key: 'owner', mode: 'get' }), (e: SdError) => e.result === Res.NO_OBJ);
    const note = await c.control<{ value: Uint8Array }>(Op.GET_VDI_ATTR, { name: 'attrs', key: 'note', mode: 'get' });
    assert.equal(Buffer.from(note.value).toString(), 'x'.repeat(1000));
    c.close();
  } finally {
    await destroySheep(s);
  }
});

test('sheep --help says it daemonizes and where it logs, and gives defaults in words', async () => {
  const r = await run(process.execPath, [SHEEP, '--help']);
  assert.equal(r.code, 0);
  const help = r.stdout.toString().replace(/\s+/g, ' ');
  assert.match(help, /goes to the background once it serves/);
  assert.match(help, /DIR\/sheep\.log/);
  assert.doesNotMatch(help, /default: \[\]|default: \{|268435456/);
  assert.match(help, /--recovery <max=N,interval=MS> throttle recovery: at most N objects copied per MS milliseconds \(default: no limit\)/);
});

test('SIGHUP makes sheep start a new sheep.log after logrotate moved the old one away', async () => {
  const s = await startSheep({ args: ['-l', 'info'] });
  try {
    const log = path.join(s.dir, 'sheep.log');
    await fs.rename(log, `${log}.1`);
    process.kill(s.pid, 'SIGHUP');
    const deadline = Date.now() + 10000;
    for (;;) {
      const text = await fs.readFile(log, 'utf8').catch(() => '');
      if (text.includes('log file reopened')) break;
      assert.ok(Date.now() < deadline, 'no new sheep.log after SIGHUP');
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.match(await fs.readFile(`${log}.1`, 'utf8'), /"msg"/, 'the rotated file keeps what was logged before');
    assert.ok(s.alive);
  } finally {
    await destroySheep(s);
  }
});

test('in the foreground on a terminal sheep logs readable lines; its log file stays JSON', async () => {
  if ((await run('sh', ['-c', 'command -v script'])).code !== 0) return;
  const dir = await tempDir('pretty-');
  try {
    const port = await freePort();
    const inner = `timeout -s TERM 3 "${process.execPath}" "${SHEEP}" -f -l info -p ${port} -b 127.0.0.1 -c local:${dir}/group ${dir}/s`;
    const r = await run('script', ['-qec', inner, '/dev/null']);
    const screen = r.stdout.toString();
    assert.match(screen, /^\d\d:\d\d:\d\d INFO  listening host=127\.0\.0\.1 port=\d+/m, screen);
    assert.doesNotMatch(screen, /"level":/);
    const file = await fs.readFile(path.join(dir, 's', 'sheep.log'), 'utf8');
    assert.match(file.split('\n')[0], /^\{"level":\d+,"time":\d+/);
  } finally {
    await stopSequencer(`${dir}/group`);
    await fs.rm(dir, { recursive: true, force: true });
  }
});
