// The fuzz harness (npm run fuzz) in a short run: random and mutated requests of every class, with and
// without authentication, and a connection flood, against a real sheep with a cluster key.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { ROOT, run } from '../helpers/sheep.js';

test('50,000 fuzzed requests and a connection flood: the sheep stays up, RSS stays bounded, every VDI is byte-identical', async () => {
  const r = await run(process.execPath, [path.join(ROOT, 'dist/test/bench/fuzz.js'), '50000'], undefined, 240000);
  const out = r.stdout.toString();
  assert.equal(r.code, 0, out + r.stderr);
  assert.match(out, /daemon deaths: 0/);
  assert.match(out, /VDIs byte-identical after the run: yes/);
  assert.match(out, /fuzz: PASS/);
  const m = /(\d+) sent, (\d+) answered/.exec(out);
  assert.ok(m && Number(m[2]) > 0.9 * Number(m[1]), `most requests were answered: ${out}`);
});
