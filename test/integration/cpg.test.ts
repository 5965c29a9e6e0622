// The corosync CPG binding (native/cpg.cc via native/cpg.ts) against a real, throwaway corosync.
// Skipped, with the reason, when corosync or the addon is missing or we are not root.

import { test, before, after, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { CpgGroup, cpgAvailable, type CpgChange, type CpgMember } from '../../native/cpg.js';
import { corosyncAvailable, startCorosync, type Corosync } from '../helpers/corosync.js';

const CPG_MODULE = pathToFileURL(path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../native/cpg.js')).href;

function skipReason(): string | null {
  if (process.getuid?.() !== 0) return 'needs root to run corosync';
  if (!corosyncAvailable()) return 'corosync is not installed (apt-get install corosync)';
  const a = cpgAvailable();
  if (!a.ok) return a.reason;
  return null;
}

const SKIP = skipReason();
let corosync: Corosync | null = null;
let startError: Error | null = null;

before(async () => {
  if (SKIP !== null) return;
  try {
    corosync = await startCorosync();
  } catch (err) {
    startError = err as Error;
  }
});

after(async () => {
  await corosync?.stop();
});

/** Skips the test when it cannot run; fails it when corosync did not start. */
function ready(t: TestContext): boolean {
  if (SKIP !== null) {
    t.skip(SKIP);
    return false;
  }
  if (startError !== null) throw startError;
  return true;
}

let groupSeq = 0;
const groupName = (): string => `sheep-cpg-test-${process.pid}-${++groupSeq}`;

async function waitFor<T>(what: string, ms: number, probe: () => T | undefined | false): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = probe();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const has = (list: CpgMember[], pid: number): boolean => list.some((m) => m.pid === pid);

/** Everything a CpgGroup in this process saw. */
class Recorder {
  delivered: string[] = [];
  confchgs: Array<{ members: CpgMember[]; left: CpgChange[]; joined: CpgChange[] }> = [];

  constructor(readonly group: CpgGroup) {
    group.on('deliver', (_from, msg) => this.delivered.push(msg.toString()));
    group.on('confchg', (members, left, joined) => this.confchgs.push({ members, left, joined }));
  }

  get members(): CpgMember[] {
    return this.confchgs.at(-1)?.members ?? [];
  }
}

// A second group member in its own node process, driven over stdin/stdout (JSON lines).
const CHILD = `
const { CpgGroup } = await import(process.env.CPG_MODULE);
const readline = await import('node:readline');
const out = (o) => process.stdout.write(JSON.stringify(o) + '\\n');
const g = new CpgGroup(process.env.CPG_GROUP);
const delivered = [];
let want = -1;
const check = () => { if (want >= 0 && delivered.length >= want) { out({ type: 'delivered', delivered }); want = -1; } };
g.on('deliver', (from, msg) => { delivered.push(msg.toString()); check(); });
g.on('confchg', (members, left, joined) => out({ type: 'confchg', members, left, joined }));
g.join();
out({ type: 'ready', local: g.local() });
const rl = readline.createInterface({ input: process.stdin });
rl.on('line', async (line) => {
  const [cmd, a, b] = line.split(' ');
  if (cmd === 'send') {
    want = Number(b);
    for (let i = 0; i < Number(a); i++) {
      g.mcast(Buffer.from('child:' + i));
      if (i % 5 === 4) await new Promise((r) => setTimeout(r, 1));
    }
    check();
  } else if (cmd === 'exit') {
    g.close();
    process.exit(0);
  }
});
rl.on('close', () => { g.close(); process.exit(0); });
`;

interface ChildEvent {
  type: 'ready' | 'confchg' | 'delivered';
  local?: CpgMember;
  members?: CpgMember[];
  left?: CpgChange[];
  joined?: CpgChange[];
  delivered?: string[];
}

class ChildMember {
  readonly proc: ChildProcess;
  events: ChildEvent[] = [];
  stderr = '';

  constructor(group: string) {
    this.proc = spawn(process.execPath, ['--input-type=module', '-e', CHILD], {
      env: { ...process.env, CPG_MODULE, CPG_GROUP: group },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    readline.createInterface({ input: this.proc.stdout! }).on('line', (l) => this.events.push(JSON.parse(l) as ChildEvent));
    this.proc.stderr!.on('data', (d: Buffer) => {
      this.stderr += d.toString();
    });
  }

  get pid(): number {
    return this.proc.pid ?? -1;
  }

  send(line: string): void {
    this.proc.stdin!.write(line + '\n');
  }

  async waitEvent(what: string, ms: number, pred: (e: ChildEvent) => boolean): Promise<ChildEvent> {
    return waitFor(what, ms, () => {
      if (this.proc.exitCode !== null) throw new Error(`child member exited (${this.proc.exitCode}): ${this.stderr}`);
      return this.events.find(pred);
    });
  }

  async kill(): Promise<void> {
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) return;
    const gone = new Promise((r) => this.proc.once('exit', r));
    this.proc.kill('SIGKILL');
    await gone;
  }
}

/** This process joins a fresh group, recording what it sees; the group is closed after the test. */
function joinNewGroup(t: TestContext): { name: string; g: CpgGroup; rec: Recorder } {
  const name = groupName();
  const g = new CpgGroup(name);
  t.after(() => g.close());
  const rec = new Recorder(g);
  g.join();
  return { name, g, rec };
}

test('two members in different processes see each other join and receive every message in the same order', { timeout: 60_000 }, async (t) => {
  if (!ready(t)) return;
  const { name, g, rec } = joinNewGroup(t);
  const me = g.local();
  assert.equal(me.pid, process.pid);
  assert.equal(me.nodeid, 1);

  const child = new ChildMember(name);
  t.after(() => child.kill());
  await child.waitEvent('the child to join', 10_000, (e) => e.type === 'ready');
  await waitFor('our confchg listing the child', 10_000, () => has(rec.members, child.pid));
  await child.waitEvent("the child's confchg listing us", 10_000, (e) => e.type === 'confchg' && has(e.members ?? [], process.pid) && has(e.members ?? [], child.pid));
  const joinedChange = rec.confchgs.find((c) => has(c.joined, child.pid));
  assert.equal(joinedChange?.joined.find((m) => m.pid === child.pid)?.reason, 'join');

  // Both send 200 messages at the same time, in bursts of 5 with a millisecond's pause, so the
  // two streams interleave.
  const N = 200;
  child.send(`send ${N} ${2 * N}`);
  for (let i = 0; i < N; i++) {
    g.mcast(Buffer.from(`parent:${i}`));
    if (i % 5 === 4) await new Promise((r) => setTimeout(r, 1));
  }
  await waitFor('all messages delivered here', 20_000, () => rec.delivered.length >= 2 * N);
  const theirs = (await child.waitEvent('all messages delivered to the child', 20_000, (e) => e.type === 'delivered')).delivered ?? [];

  assert.equal(rec.delivered.length, 2 * N);
  assert.deepEqual(theirs, rec.delivered, 'both members delivered the same sequence');
  for (const who of ['parent', 'child']) {
    const mine = rec.delivered.filter((m) => m.startsWith(who + ':'));
    assert.deepEqual(mine, Array.from({ length: N }, (_, i) => `${who}:${i}`), `${who}'s messages in send order`);
  }
  // How interleaved the two streams were (informative: depends on scheduling).
  const switches = rec.delivered.filter((m, i) => i > 0 && m.split(':')[0] !== rec.delivered[i - 1].split(':')[0]).length;
  t.diagnostic(`the delivery order switched sender ${switches} times`);

  child.send('exit');
  await waitFor('the child to leave', 10_000, () => rec.confchgs.some((c) => c.left.some((m) => m.pid === child.pid)));
  assert.equal(rec.confchgs.find((c) => has(c.left, child.pid))?.left[0]?.reason, 'procdown');
});

test('a process can be a member of a group only once, but can hold handles in several groups', { timeout: 30_000 }, async (t) => {
  if (!ready(t)) return;
  const name = groupName();
  const a = new CpgGroup(name);
  const b = new CpgGroup(name);
  const other = new CpgGroup(groupName());
  t.after(() => {
    a.close();
    b.close();
    other.close();
  });
  const ra = new Recorder(a);
  const ro = new Recorder(other);
  a.join();
  // corosync names a member by (nodeid, pid), so a second handle of this process is refused.
  assert.throws(() => b.join(), (err: Error & { code?: string }) => err.code === 'CS_ERR_EXIST' && /already a member/.test(err.message));
  other.join();
  await waitFor('both groups to list us', 10_000, () => has(ra.members, process.pid) && has(ro.members, process.pid));
  for (let i = 0; i < 50; i++) {
    a.mcast(Buffer.from(`a:${i}`));
    other.mcast(Buffer.from(`o:${i}`));
  }
  await waitFor('50 deliveries in each group', 10_000, () => ra.delivered.length === 50 && ro.delivered.length === 50);
  assert.deepEqual(ra.delivered, Array.from({ length: 50 }, (_, i) => `a:${i}`), 'groups do not leak into each other');
  assert.deepEqual(ro.delivered, Array.from({ length: 50 }, (_, i) => `o:${i}`));
  a.leave();
  await waitFor('our own leave to be reported', 10_000, () => ra.confchgs.some((c) => c.left.some((m) => m.pid === process.pid && m.reason === 'leave')));
  // A handle cannot join twice, and one that left still holds the (nodeid, pid) slot until it is
  // finalized.
  assert.throws(() => a.join(), /already left .*does not let a handle join twice/);
  assert.throws(() => b.join(), /CS_ERR_EXIST/);
  a.close();
  b.join();
  const rb = new Recorder(b);
  await waitFor('b to see itself join', 10_000, () => has(rb.members, process.pid));
});

test('a member killed with SIGKILL shows up in the left list of the survivors', { timeout: 30_000 }, async (t) => {
  if (!ready(t)) return;
  const { name, g, rec } = joinNewGroup(t);
  const child = new ChildMember(name);
  t.after(() => child.kill());
  await waitFor('the child to join', 10_000, () => has(rec.members, child.pid));
  const pid = child.pid;
  const killedAt = Date.now();
  await child.kill();
  const change = await waitFor('a confchg with the killed child in left', 10_000, () => rec.confchgs.find((c) => has(c.left, pid)));
  t.diagnostic(`noticed ${Date.now() - killedAt} ms after SIGKILL`);
  assert.equal(change.left.find((m) => m.pid === pid)?.reason, 'procdown');
  assert.ok(!has(change.members, pid));
  assert.ok(has(change.members, process.pid));
});

test('mcast after close throws a clear error, and close is idempotent', { timeout: 10_000 }, async (t) => {
  if (!ready(t)) return;
  const g = new CpgGroup(groupName());
  assert.throws(() => g.mcast(Buffer.from('early')), /not joined/);
  g.join();
  g.mcast(Buffer.from('fine'));
  g.close();
  g.close();
  assert.throws(() => g.mcast(Buffer.from('late')), /mcast\(\) after close\(\)/);
  assert.throws(() => g.local(), /after close/);
  assert.throws(() => g.join(), /after close/);
});

test('a group name longer than corosync allows is refused', { timeout: 10_000 }, async (t) => {
  if (!ready(t)) return;
  assert.throws(() => new CpgGroup('x'.repeat(129)), /1\.\.128 bytes/);
});
