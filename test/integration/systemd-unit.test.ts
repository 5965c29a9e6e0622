// init.d/sheepdog.service: systemd's own checker accepts it (with ExecStart pointed at this build).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { ROOT, SHEEP, tempDir, run } from '../helpers/sheep.js';

const unitFile = path.join(ROOT, 'init.d/sheepdog.service');
const haveVerify = (await run('sh', ['-c', 'command -v systemd-analyze'])).code === 0;

test('the systemd unit passes systemd-analyze verify', { skip: haveVerify ? false : 'systemd-analyze is not installed' }, async () => {
  const dir = await tempDir('unit-');
  try {
    const unit = (await fs.readFile(unitFile, 'utf8')).replace('/usr/bin/sheep', SHEEP);
    await fs.chmod(SHEEP, 0o755);
    const copy = path.join(dir, 'sheepdog.service');
    await fs.writeFile(copy, unit);
    const r = await run('systemd-analyze', ['verify', copy]);
    assert.equal(r.code, 0, r.stderr + r.stdout.toString());
    assert.equal(r.stderr.trim(), '', 'no warnings');
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
});

test('the unit runs sheep in the foreground as the sheepdog user with the defaults file, restarts on failure and is hardened', async () => {
  const unit = await fs.readFile(unitFile, 'utf8');
  for (const line of ['User=sheepdog', 'EnvironmentFile=-/etc/default/sheepdog', 'ExecStart=/usr/bin/sheep -f $SHEEP_OPTS ${DIR}',
    'Restart=on-failure', 'LimitNOFILE=65536', 'ProtectSystem=strict', 'NoNewPrivileges=yes', 'StateDirectory=sheepdog']) {
    assert.ok(unit.split('\n').includes(line), `the unit has ${line}`);
  }
});
