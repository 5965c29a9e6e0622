// The recorded QEMU 5.0 <-> Sheepdog 1.0 conversations replay against our sheep with 0 failures.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { ROOT, SHARED, freePort, tempDir, run } from '../helpers/sheep.js';

test('every trace in ../shared/conformance/traces replays with 0 failed', async (t) => {
  const dir = await tempDir('conformance-');
  const port = await freePort();
  const reset = `CONF_DIR=${dir} bash ${path.join(ROOT, 'scripts/conformance-reset.sh')}`;
  try {
    const r = await run(process.execPath, [path.join(SHARED, 'conformance/replay.mjs'), '--port', String(port), '--setup-cmd', reset,
      '--all', path.join(SHARED, 'conformance/traces')], undefined, 600000);
    const text = r.stdout.toString();
    for (const line of text.split('\n')) if (/^(trace|FAIL)/.test(line)) t.diagnostic(line);
    const m = /^(\d+) passed, (\d+) failed$/m.exec(text);
    assert.ok(m, `no summary line in replay output: ${text.slice(-2000)} ${r.stderr}`);
    assert.equal(Number(m[2]), 0, text);
    assert.ok(Number(m[1]) > 0);
    assert.equal(r.code, 0);
  } finally {
    const pidFile = path.join(dir, 'sheep.pid');
    const pid = Number(await fs.readFile(pidFile, 'utf8').catch(() => '0'));
    if (pid) try { process.kill(pid, 'SIGTERM'); } catch { /* already gone */ }
    await new Promise((r) => setTimeout(r, 300));
    if (pid) try { process.kill(pid, 'SIGKILL'); } catch { /* already gone */ }
    await fs.rm(dir, { recursive: true, force: true });
  }
});
