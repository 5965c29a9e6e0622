// collie at a terminal: progress bars on a pseudo-terminal (made by script(1)) and nothing extra
// through a pipe or into a file; the bash completion script.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { startSheep, destroySheep, collie, tempDir, run, COLLIE, type SheepProcess } from '../helpers/sheep.js';

let s: SheepProcess;
let dir: string;
const haveScript = (await run('sh', ['-c', 'command -v script'])).code === 0;

before(async () => {
  s = await startSheep();
  dir = await tempDir('progress-');
  await fs.writeFile(path.join(dir, 'in'), crypto.randomBytes(16 << 20));
  assert.equal((await collie(s.port, ['vdi', 'create', 'bar', '16M'])).code, 0);
});
after(async () => {
  await destroySheep(s);
  await fs.rm(dir, { recursive: true, force: true });
});

const cmd = (args: string) => `"${process.execPath}" "${COLLIE}" ${args} -a 127.0.0.1 -p ${s.port}`;

test('on a terminal vdi write, vdi read, vdi create -P, vdi check and vdi clone -n show a progress bar that reaches 100%', { skip: haveScript ? false : 'script(1) is not installed' }, async () => {
  const inner = `${cmd('vdi write bar')} < "${path.join(dir, 'in')}" && ${cmd('vdi read bar')} > /dev/null && ${cmd('vdi create -P pre 8M')} && ${cmd('vdi check bar')} && ${cmd('vdi snapshot -s s1 bar')} && ${cmd('vdi clone -n -s s1 bar full')}`;
  const r = await run('script', ['-qec', inner, '/dev/null']);
  assert.equal(r.code, 0, r.stderr);
  const screen = r.stdout.toString().replace(/\x1b\[[0-9;?]*[A-Za-z]/g, '');
  assert.match(screen, /writing bar \[[^\]]*\] 100% 16 MB \/ 16 MB/);
  assert.match(screen, /reading bar \[[^\]]*\] 100% 16 MB \/ 16 MB/);
  assert.match(screen, /preallocating pre \[[^\]]*\] 100% 2 \/ 2 objects/);
  assert.match(screen, /checking bar \[[^\]]*\] 100% 5 \/ 5 objects/); // the inode and 4 data objects
  assert.match(screen, /copying full \[[^\]]*\] 100% 4 \/ 4 objects/);
});

test('through a pipe the same commands print no progress', async () => {
  const w = await collie(s.port, ['vdi', 'write', 'bar'], { file: path.join(dir, 'in') });
  assert.equal(w.code, 0);
  assert.equal(w.stderr, '');
  const r = await collie(s.port, ['vdi', 'read', 'bar']);
  assert.equal(r.stderr, '');
  assert.equal(r.stdout.length, 16 << 20);
});

test('collie completion bash completes commands, options and the cluster\'s VDI names', async () => {
  const bin = path.join(dir, 'bin');
  await fs.mkdir(bin, { recursive: true });
  await fs.writeFile(path.join(bin, 'collie'), `#!/bin/sh\nexec "${process.execPath}" "${COLLIE}" "$@"\n`, { mode: 0o755 });
  assert.equal((await collie(s.port, ['vdi', 'create', 'my disk', '4M'])).code, 0);
  const probe = `source <(collie completion bash)
t() { COMP_WORDS=("$@"); COMP_CWORD=$((\${#COMP_WORDS[@]}-1)); _collie; printf '[%s]' "\${COMPREPLY[@]}"; echo; }
t collie vd
t collie vdi lock ""
t collie vdi create --pre
t collie vdi read -p ${s.port} -a 127.0.0.1 ""`;
  const r = await run('bash', ['-c', `PATH="${bin}:$PATH"; ${probe}`]);
  assert.equal(r.code, 0, r.stderr);
  const lines = r.stdout.toString().trim().split('\n');
  assert.deepEqual(lines, ['[vdi]', '[list][unlock]', '[--prealloc]', '[bar][full][my\\ disk][pre]']);
});
