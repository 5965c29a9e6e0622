// init.d/sheepdog starts, reports and stops a real sheep using a defaults file under a temp prefix.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { ROOT, SHEEP, freePort, tempDir, run, collie, stopSequencer } from '../helpers/sheep.js';

/** The unprivileged user the init script runs sheep as (created here when the machine lacks it). */
async function sheepdogUid(): Promise<number | null> {
  if (process.getuid?.() !== 0) return null;
  let r = await run('id', ['-u', 'sheepdog']);
  if (r.code !== 0) {
    await run('useradd', ['--system', '--no-create-home', '--shell', '/usr/sbin/nologin', 'sheepdog']);
    r = await run('id', ['-u', 'sheepdog']);
  }
  return r.code === 0 ? Number(r.stdout.toString().trim()) : null;
}

test('the init script starts sheep as the sheepdog user, reports status, restarts and stops it', async () => {
  const prefix = await tempDir('initd-');
  const uid = await sheepdogUid();
  await fs.chmod(prefix, 0o755); // the daemon's user must reach its store inside
  const port = await freePort();
  const pidfile = path.join(prefix, 'run/sheep.pid');
  await fs.mkdir(path.dirname(pidfile), { recursive: true });
  await fs.mkdir(path.join(prefix, 'cluster'), { mode: 0o700 });
  if (uid !== null) await fs.chown(path.join(prefix, 'cluster'), uid, -1);
  const defaults = path.join(prefix, 'default-sheepdog');
  await fs.writeFile(defaults, [
    'START=yes',
    `DIR=${path.join(prefix, 'store')}`,
    `SHEEP="${process.execPath} ${SHEEP}"`,
    `SHEEP_OPTS="-p ${port} -b 127.0.0.1 -c local:${prefix}/cluster"`,
    `PIDFILE=${pidfile}`,
    `SHEEP_USER=${uid === null ? 'root' : 'sheepdog'}`,
    `CLUSTER_KEY=${prefix}/none.key`,
  ].join('\n') + '\n');
  const script = path.join(ROOT, 'init.d/sheepdog');
  const sh = (action: string) => run('/usr/bin/env', [`SHEEPDOG_DEFAULTS=${defaults}`, 'sh', script, action], undefined, 60000);
  try {
    assert.equal((await sh('status')).code, 3);
    const start = await sh('start');
    assert.equal(start.code, 0, start.stdout.toString() + start.stderr);
    const st = await sh('status');
    assert.equal(st.code, 0);
    assert.match(st.stdout.toString(), /running \(pid \d+\)/);
    if (uid !== null) {
      // the daemon runs as sheepdog, and its store is sheepdog's, 0700
      const pid = (await fs.readFile(pidfile, 'utf8')).trim();
      const status = await fs.readFile(`/proc/${pid}/status`, 'utf8');
      assert.match(status, new RegExp(`^Uid:\\s+${uid}\\s`, 'm'));
      const dst = await fs.stat(path.join(prefix, 'store'));
      assert.equal(dst.uid, uid);
      assert.equal(dst.mode & 0o777, 0o700);
    }
    assert.equal((await collie(port, ['cluster', 'info'])).code, 0);
    const pid1 = await fs.readFile(pidfile, 'utf8');
    assert.equal((await sh('restart')).code, 0);
    assert.notEqual(await fs.readFile(pidfile, 'utf8'), pid1);
    assert.equal((await sh('stop')).code, 0);
    assert.equal((await sh('status')).code, 3);
    await assert.rejects(fs.access(pidfile));
  } finally {
    await sh('stop');
    await stopSequencer(path.join(prefix, 'cluster'));
    await fs.rm(prefix, { recursive: true, force: true });
  }
});
