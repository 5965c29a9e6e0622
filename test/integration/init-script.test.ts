// init.d/sheepdog starts, reports and stops a real sheep using a defaults file under a temp prefix.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { ROOT, SHEEP, freePort, tempDir, run, collie, stopSequencer } from '../helpers/sheep.js';

test('the init script starts, reports status, restarts and stops sheep', async () => {
  const prefix = await tempDir('initd-');
  const port = await freePort();
  const pidfile = path.join(prefix, 'run/sheep.pid');
  await fs.mkdir(path.dirname(pidfile), { recursive: true });
  const defaults = path.join(prefix, 'default-sheepdog');
  await fs.writeFile(defaults, [
    'START=yes',
    `DIR=${path.join(prefix, 'store')}`,
    `SHEEP="${process.execPath} ${SHEEP}"`,
    `SHEEP_OPTS="-p ${port} -b 127.0.0.1 -c local:${prefix}/cluster"`,
    `PIDFILE=${pidfile}`,
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
