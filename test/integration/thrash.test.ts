// The thrash harness (npm run thrash) for two minutes: random SIGKILLs and restarts of 4 of 5 sheep
// under two verifying writers (port 7000 and NBD); nothing acknowledged may be lost, no client may
// see an error, and every object ends with 3 identical copies.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { ROOT, run } from '../helpers/sheep.js';

test('two minutes of random SIGKILLs under two verifying writers lose no acknowledged byte', async (t) => {
  const r = await run(process.execPath, [path.join(ROOT, 'dist/test/bench/thrash.js'), '--seconds', '120'], undefined, 600000);
  const out = r.stdout.toString();
  t.diagnostic(out.trim());
  assert.equal(r.code, 0, out + r.stderr);
  assert.match(out, /bytes lost: 0$/m);
  assert.match(out, /client errors with the gateway alive: 0$/m);
  assert.match(out, /with other than 3 identical copies: 0$/m);
  assert.match(out, /kills: [1-9]/);
  assert.match(out, /thrash: PASS/);
});
