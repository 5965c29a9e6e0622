// collie's edges: a port that is not a sheep, a listing that fails, writes past the end of a VDI,
// names a VDI may not have. Errors are sentences with the documented exit codes.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { startSheep, destroySheep, collie, collieHash, freePort, tempDir, run, COLLIE, type SheepProcess } from '../helpers/sheep.js';
import { Res, SdError } from '../../lib/proto.js';

let s: SheepProcess;
let dir: string;
before(async () => {
  s = await startSheep();
  dir = await tempDir('collie-errors-');
});
after(async () => {
  await destroySheep(s);
  await fs.rm(dir, { recursive: true, force: true });
});

test('a port that answers but is not a sheep gives exit 2 and says so, without a stack trace', async () => {
  const port = await freePort();
  // an NBD-like server: it greets first
  const srv = net.createServer((c) => { c.on('error', () => undefined); c.write('NBDMAGICIHAVEOPT\0\x03'); }).listen(port, '127.0.0.1');
  try {
    const r = await collie(port, ['cluster', 'info']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /127\.0\.0\.1:\d+ is not a sheep/);
    assert.doesNotMatch(r.stderr, /\n\s+at /);
  } finally {
    srv.close();
  }
});

test('vdi list prints nothing when it cannot reach the cluster', async () => {
  const r = await collie(await freePort(), ['vdi', 'list']);
  assert.equal(r.code, 2);
  assert.equal(r.stdout.length, 0);
  assert.match(r.stderr, /failed to connect/);
});

test('a write whose length goes past the end of the VDI fails before writing anything', async () => {
  assert.equal((await collie(s.port, ['vdi', 'create', 'edge', '8M'])).code, 0);
  const r = await collie(s.port, ['vdi', 'write', 'edge', '4M', '8M'], crypto.randomBytes(8 << 20));
  assert.equal(r.code, 1);
  assert.match(r.stderr, /past the end of edge \(8388608 bytes\); nothing written/);
  const zeros = crypto.createHash('sha256').update(Buffer.alloc(8 << 20)).digest('hex');
  assert.equal((await collieHash(s.port, ['vdi', 'read', 'edge'])).sha256, zeros);
});

test('a file on stdin longer than the VDI fails before writing anything', async () => {
  const file = path.join(dir, 'big');
  await fs.writeFile(file, crypto.randomBytes(12 << 20));
  const r = await run('sh', ['-c', `"${process.execPath}" "${COLLIE}" vdi write edge -a 127.0.0.1 -p ${s.port} < "${file}"`]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /Writing 12582912 bytes at offset 0 would go past the end of edge/);
  const zeros = crypto.createHash('sha256').update(Buffer.alloc(8 << 20)).digest('hex');
  assert.equal((await collieHash(s.port, ['vdi', 'read', 'edge'])).sha256, zeros);
});

test('a pipe longer than the VDI fills it and then fails, saying what was not written', async () => {
  const data = crypto.randomBytes(12 << 20);
  const r = await collie(s.port, ['vdi', 'write', 'edge'], data);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /Input is longer than edge \(8388608 bytes\): the first 8388608 bytes from offset 0 were written/);
  const want = crypto.createHash('sha256').update(data.subarray(0, 8 << 20)).digest('hex');
  assert.equal((await collieHash(s.port, ['vdi', 'read', 'edge'])).sha256, want);
});

for (const [what, name] of [['that is empty', ''], ['of 256 bytes', 'x'.repeat(256)], ['with a tab', 'a\tb'], ['with a newline', 'a\nb'], ['with an @', 'disk@1']]) {
  test(`a VDI name ${what} is refused by collie (exit 64, the reason) and by the sheep`, async () => {
    const r = await collie(s.port, ['vdi', 'create', name, '4M']);
    assert.equal(r.code, 64, r.stderr);
    assert.match(r.stderr, /Invalid VDI name .*: a VDI name (cannot|is at most)/);
    const c = await s.client();
    try {
      await assert.rejects(c.newVdi(name, 4n << 20n), (e) => e instanceof SdError && e.result === Res.INVALID_PARMS);
    } finally {
      c.close();
    }
  });
}

test('a 255-byte name and a name with spaces are accepted', async () => {
  assert.equal((await collie(s.port, ['vdi', 'create', 'y'.repeat(255), '4M'])).code, 0);
  assert.equal((await collie(s.port, ['vdi', 'create', 'my disk', '4M'])).code, 0);
});

test('cluster recover force on a running cluster says there is nothing to force', async () => {
  const r = await collie(s.port, ['cluster', 'recover', 'force', '-f']);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /^Nothing to force: the cluster is not waiting for nodes to join \(running, auto-recovery enabled\)/);
});

test('vdi check of a VDI that does not exist says so in one sentence', async () => {
  const r = await collie(s.port, ['vdi', 'check', 'no-such-vdi']);
  assert.equal(r.code, 1);
  assert.equal(r.stderr, 'Failed to open VDI no-such-vdi (snapshot id: 0 snapshot tag: ): No VDI found\n');
});
