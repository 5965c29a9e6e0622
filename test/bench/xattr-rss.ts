// npm run bench:xattr: RSS over 10^6 reads and 10^6 writes of an object's epoch xattr with the calls
// the store uses (fs-xattr's synchronous ones; its asynchronous ones leak ~400 bytes a call), to show
// that the store's xattr traffic does not grow the daemon. Prints RSS before, after the writes and
// after the reads; exits 1 when RSS more than doubled.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { getAttributeSync, setAttributeSync } from 'fs-xattr';

const N = Number(process.argv[2] ?? 1_000_000);
const rss = () => process.memoryUsage().rss;
const mb = (b: number) => `${(b / 1048576).toFixed(0)} MB`;

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'xattr-rss-'));
const file = path.join(dir, 'obj');
fs.writeFileSync(file, '');
try {
  const values = Array.from({ length: 16 }, (_, i) => { const b = Buffer.alloc(4); b.writeUInt32LE(i); return b; });
  setAttributeSync(file, 'user.sheepdog.epoch', values[0]);
  const before = rss();
  let t = process.hrtime.bigint();
  for (let i = 0; i < N; i++) setAttributeSync(file, 'user.sheepdog.epoch', values[i & 15]);
  const setUs = Number(process.hrtime.bigint() - t) / 1e3 / N;
  const afterSet = rss();
  t = process.hrtime.bigint();
  let sum = 0;
  for (let i = 0; i < N; i++) sum += getAttributeSync(file, 'user.sheepdog.epoch').readUInt32LE(0);
  const getUs = Number(process.hrtime.bigint() - t) / 1e3 / N;
  const afterGet = rss();
  console.log(`${N} setxattr: ${setUs.toFixed(1)} us each; ${N} getxattr: ${getUs.toFixed(1)} us each (checksum ${sum})`);
  console.log(`RSS: before ${mb(before)}, after the writes ${mb(afterSet)}, after the reads ${mb(afterGet)}`);
  if (afterGet > 2 * before) process.exitCode = 1;
} finally {
  fs.rmSync(dir, { recursive: true, force: true });
}
