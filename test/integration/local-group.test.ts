// The local driver's group layer: sheep processes on one machine see one order of membership
// changes and messages, with no external service; a SIGKILLed member leaves at once.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { LocalGroup } from '../../sheep/cluster/local-group.js';
import { tempDir, ROOT } from '../helpers/sheep.js';

interface Seen { events: string[]; members: string[] }

function member(dir: string, id: string): { g: LocalGroup; seen: Seen; ready: Promise<void> } {
  const g = new LocalGroup(dir);
  const seen: Seen = { events: [], members: [] };
  let resolve!: () => void;
  const ready = new Promise<void>((r) => { resolve = r; });
  void g.init(id).then(() => g.start({
    confchg: (members, joined, left) => {
      seen.members = members;
      seen.events.push(`confchg +${joined.join(',')} -${left.join(',')} =${members.join(',')}`);
      if (joined.includes(id)) resolve();
    },
    deliver: (from, msg) => seen.events.push(`${from}:${msg.toString()}`),
  }));
  return { g, seen, ready };
}

async function until(cond: () => boolean, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 10));
  }
}

test('members see the same order of joins and of concurrent messages', async () => {
  const dir = await tempDir('local-group-');
  const a = member(dir, 'a');
  await a.ready;
  const b = member(dir, 'b');
  const c = member(dir, 'c');
  await Promise.all([b.ready, c.ready]);
  await until(() => a.seen.members.length === 3);
  await Promise.all(['a', 'b', 'c'].flatMap((who, i) => Array.from({ length: 100 }, (_, k) => [a, b, c][i].g.mcast(Buffer.from(`${who}${k}`)))));
  await until(() => [a, b, c].every((m) => m.seen.events.filter((e) => !e.startsWith('confchg')).length === 300));
  const tail = (m: Seen) => m.events.slice(m.events.findIndex((e) => e.startsWith('confchg') && e.includes('=a,b,c')));
  assert.deepEqual(tail(b.seen), tail(a.seen));
  assert.deepEqual(tail(c.seen), tail(a.seen));
  for (const m of [a, b, c]) await m.g.stop();
  await fs.rm(dir, { recursive: true, force: true });
});

test('a member killed with SIGKILL leaves the group at once', async () => {
  const dir = await tempDir('local-group-');
  const a = member(dir, 'a');
  await a.ready;
  const script = `import { LocalGroup } from ${JSON.stringify(path.join(ROOT, 'dist/sheep/cluster/local-group.js'))};
    const g = new LocalGroup(${JSON.stringify(dir)}); await g.init('victim'); await g.start({ confchg() {}, deliver() {} }); setInterval(() => {}, 1000);`;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: 'ignore' });
  await until(() => a.seen.members.includes('victim'));
  child.kill('SIGKILL');
  await until(() => !a.seen.members.includes('victim'), 3000);
  assert.match(a.seen.events[a.seen.events.length - 1], /^confchg \+ -victim =a$/);
  await a.g.stop();
  await fs.rm(dir, { recursive: true, force: true });
});
