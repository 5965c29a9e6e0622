// The HTTP endpoint (--http): Prometheus metrics that promtool accepts and that move with I/O, the
// JSON API, a read-only port that refuses anything else, and the live monitor page in Debian's
// chromium (playwright-core): three nodes shown, then a SIGKILLed sheep shown down with recovery
// progress.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import path from 'node:path';
import fs from 'node:fs/promises';
import { chromium, type Browser } from 'playwright-core';
import { spawn } from 'node:child_process';
import { SheepProcess, freePort, tempDir, collie, run, SHEEP, stopSequencer, waitForPort, endProcess } from '../helpers/sheep.js';

const MB = 1 << 20;
/** Debian's chromium (scripts/setup.sh installs it); playwright-core never downloads a browser */
const CHROMIUM = '/usr/bin/chromium';
let base: string;
const sheep: SheepProcess[] = [];
const httpPorts: number[] = [];
let nbdPort = 0;
let browser: Browser | null = null;

const url = (i: number, p: string) => `http://127.0.0.1:${httpPorts[i]}${p}`;

async function get(i: number, p: string): Promise<{ status: number; type: string; body: string }> {
  const r = await fetch(url(i, p));
  return { status: r.status, type: r.headers.get('content-type') ?? '', body: await r.text() };
}

/** The value of one series of a Prometheus text exposition (0 when absent). */
function sample(text: string, series: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line ? Number(line.slice(series.length + 1)) : 0;
}

before(async () => {
  base = await tempDir('sheep-monitor-');
  for (let i = 0; i < 3; i++) {
    httpPorts.push(await freePort());
    if (i === 0) nbdPort = await freePort();
    // a slow recovery (one object a second) so the page can show it in progress
    const args = ['-c', `local:${base}/group`, '-z', String(i), '--http', `127.0.0.1:${httpPorts[i]}`, '-R', 'max=1,interval=1000',
      ...(i === 0 ? ['--nbd', `127.0.0.1:${nbdPort}`] : [])];
    sheep.push(await new SheepProcess(path.join(base, `s${i}`), await freePort(), args).start());
  }
  assert.equal((await collie(sheep[0].port, ['cluster', 'format', '-c', '2'])).code, 0);
});

after(async () => {
  await browser?.close();
  for (const s of sheep) await s.stop();
  await stopSequencer(`${base}/group`);
  await fs.rm(base, { recursive: true, force: true });
});

test('metrics pass promtool check metrics and the request and byte counters rise with I/O', async () => {
  const before = (await get(0, '/metrics')).body;
  assert.equal((await collie(sheep[0].port, ['vdi', 'create', 'metered', '16M'])).code, 0);
  assert.equal((await collie(sheep[0].port, ['vdi', 'write', 'metered'], Buffer.alloc(2 * MB, 7))).code, 0);
  const q = await run('qemu-io', ['-f', 'raw', `nbd://127.0.0.1:${nbdPort}/metered`, '-c', 'write -P 9 0 64k', '-c', 'read -P 9 0 64k']);
  assert.equal(q.code, 0, q.stderr);
  const m = await get(0, '/metrics');
  assert.equal(m.status, 200);
  assert.match(m.type, /^text\/plain; version=0\.0\.4/);
  // promtool reads the exposition on stdin: exit 0 means well-formed and lint-clean
  const check = await run('promtool', ['check', 'metrics'], m.body);
  assert.equal(check.code, 0, `promtool: ${check.stdout.toString()}${check.stderr}`);
  const rose = (series: string, by: number) => {
    const d = sample(m.body, series) - sample(before, series);
    assert.ok(d >= by, `${series} rose by ${d}, expected at least ${by}`);
  };
  rose('sheep_written_bytes_total{frontend="sheepdog"}', 2 * MB);
  rose('sheep_requests_total{frontend="sheepdog",op="NEW_VDI"}', 1);
  rose('sheep_requests_total{frontend="nbd",op="WRITE"}', 1);
  rose('sheep_requests_total{frontend="nbd",op="READ"}', 1);
  rose('sheep_written_bytes_total{frontend="nbd"}', 64 * 1024);
  rose('sheep_read_bytes_total{frontend="nbd"}', 64 * 1024);
  rose('sheep_request_duration_seconds_count{frontend="nbd",op="WRITE"}', 1);
  // with two copies every write reaches another sheep: its peer front end counts them
  const peerWrites = ['CREATE_AND_WRITE_PEER', 'WRITE_PEER'].map((op) => sample((m.body), `sheep_requests_total{frontend="peer",op="${op}"}`));
  const others = await Promise.all([1, 2].map(async (i) => (await get(i, '/metrics')).body));
  const peerElsewhere = others.reduce((n, t) => n + sample(t, 'sheep_written_bytes_total{frontend="peer"}'), 0);
  assert.ok(peerWrites.some((n) => n > 0) || peerElsewhere >= 2 * MB, 'peer writes are counted');
  assert.equal(sample(m.body, 'sheep_cluster_members'), 3);
  assert.equal(sample(m.body, 'sheep_cluster_status{status="running"}'), 1);
  // the store is counted at most every 5 s (a stat per object): the new objects show up within that,
  // on the nodes placement chose (2 copies of the inode and of the data object, on 2 or 3 of the nodes)
  const stored = async () => (await Promise.all([0, 1, 2].map(async (i) => sample((await get(i, '/metrics')).body, 'sheep_store_objects'))))
    .reduce((a, b) => a + b, 0);
  let objects = await stored();
  for (const until = Date.now() + 12_000; objects < 4 && Date.now() < until;) {
    await new Promise((r) => setTimeout(r, 500));
    objects = await stored();
  }
  assert.ok(objects >= 4, `sheep_store_objects summed over the nodes: ${objects}`);
  assert.ok(sample(m.body, 'sheep_disk_free_bytes') > 0);
  assert.ok(sample(m.body, 'sheep_epoch') >= 1);
  assert.ok(m.body.includes('nodejs_eventloop_lag_seconds '), 'event-loop lag');
  assert.ok(m.body.includes('process_resident_memory_bytes '), 'process metrics');
});

test('/api/cluster lists every node with its zone, vnodes, disk, ring share and recovery', async () => {
  const r = await get(1, '/api/cluster');
  assert.equal(r.status, 200);
  assert.equal(r.type, 'application/json');
  const v = JSON.parse(r.body) as { cluster: { status: string; epoch: number; copies: number }; nodes: Array<{ nid: string; state: string; zone: number; vnodes: number; ringShare: number; disk: { size: number; avail: number }; recovery: { state: string } }>; epochs: unknown[] };
  assert.equal(v.cluster.status, 'running');
  assert.equal(v.cluster.copies, 2);
  assert.deepEqual(v.nodes.map((n) => n.nid), sheep.map((s) => `127.0.0.1:${s.port}`).sort((a, b) => a.localeCompare(b, undefined, { numeric: true })));
  assert.deepEqual(v.nodes.map((n) => n.state), ['up', 'up', 'up']);
  assert.deepEqual(new Set(v.nodes.map((n) => n.zone)), new Set([0, 1, 2]));
  for (const n of v.nodes) {
    assert.equal(n.vnodes, 64);
    assert.ok(n.ringShare > 0.1 && n.ringShare < 0.6, `ring share ${n.ringShare}`);
    assert.ok(n.disk.size > 0 && n.disk.avail > 0);
    assert.equal(n.recovery.state, 'idle');
  }
  assert.ok(Math.abs(v.nodes.reduce((s, n) => s + n.ringShare, 0) - 1) < 1e-9, 'shares sum to 1');
  assert.ok(v.epochs.length >= 1);
});

test('/api/vdis gives the VDIs and their snapshot and clone families as a tree', async () => {
  assert.equal((await collie(sheep[0].port, ['vdi', 'create', 'fam', '8M'])).code, 0);
  assert.equal((await collie(sheep[0].port, ['vdi', 'snapshot', '-s', 'monday', 'fam'])).code, 0);
  assert.equal((await collie(sheep[0].port, ['vdi', 'clone', '-s', 'monday', 'fam', 'famclone'])).code, 0);
  const v = JSON.parse((await get(2, '/api/vdis')).body) as { vdis: Array<{ name: string; snapshot: boolean }>; families: Array<{ name: string; tag: string; snapshot: boolean; children: Array<{ name: string; snapshot: boolean }> }> };
  assert.ok(v.vdis.some((x) => x.name === 'famclone' && !x.snapshot));
  const fam = v.families.find((f) => f.name === 'fam');
  assert.ok(fam, 'the family of fam');
  assert.equal(fam.snapshot, true);
  assert.equal(fam.tag, 'monday');
  assert.deepEqual(fam.children.map((c) => `${c.name}:${c.snapshot}`).sort(), ['fam:false', 'famclone:false']);
});

test('the HTTP port answers only GET and HEAD on known paths, and logs what it refuses with the peer address', async () => {
  const post = await fetch(url(0, '/metrics'), { method: 'POST', body: 'x' });
  assert.equal(post.status, 405);
  assert.equal((await get(0, '/../../etc/passwd')).status, 404);
  assert.equal((await get(0, '/nope')).status, 404);
  const head = await fetch(url(0, '/api/cluster'), { method: 'HEAD' });
  assert.equal(head.status, 200);
  // bytes that are no HTTP request
  const reply = await new Promise<string>((resolve, reject) => {
    const s = net.connect({ host: '127.0.0.1', port: httpPorts[0] });
    let got = '';
    s.on('data', (d) => { got += d.toString(); });
    s.on('close', () => resolve(got));
    s.on('error', reject);
    s.write(Buffer.from([0x00, 0xff, 0x13, 0x37, 0x0d, 0x0a, 0x0d, 0x0a]));
  });
  assert.match(reply, /^HTTP\/1\.1 400/);
  const log = await fs.readFile(path.join(sheep[0].dir, 'sheep.log'), 'utf8');
  assert.match(log, /"peer":"127\.0\.0\.1:\d+".*refused: HTTP POST refused/);
  assert.match(log, /"peer":"127\.0\.0\.1:\d+".*refused: bad HTTP request/);
  // the sheep still serves
  assert.equal((await get(0, '/api/cluster')).status, 200);
});

test('an explicit --http port that is taken stops sheep with a clear error', async () => {
  const dir = await tempDir();
  try {
    const r = await run(process.execPath, [SHEEP, '-f', '-p', String(await freePort()), '-c', `local:${dir}/c`, '--http', `127.0.0.1:${httpPorts[0]}`, path.join(dir, 'store')], undefined, 20000);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /cannot serve HTTP on 127\.0\.0\.1:\d+: EADDRINUSE/);
  } finally {
    await stopSequencer(`${dir}/c`);
    await fs.rm(dir, { recursive: true, force: true });
  }
});

test('the monitor page shows three nodes, then a SIGKILLed sheep as down with recovery progress', async (t) => {
  // data for recovery to move: 16 objects, copied one a second
  assert.equal((await collie(sheep[0].port, ['vdi', 'create', 'bulk', '64M'])).code, 0);
  assert.equal((await collie(sheep[0].port, ['vdi', 'write', 'bulk'], Buffer.alloc(64 * MB, 3))).code, 0);
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  const problems: string[] = [];
  page.on('console', (m) => { if (m.type() === 'error') problems.push(m.text()); });
  page.on('pageerror', (e) => problems.push(e.message));
  await page.goto(url(0, '/'));
  const rows = page.locator('#nodes tbody tr');
  await page.waitForFunction(() => document.querySelectorAll('#nodes tbody tr[data-state="up"]').length === 3, undefined, { timeout: 10000 });
  assert.equal(await rows.count(), 3);
  await page.waitForSelector('#families .vdi', { timeout: 10000 });
  assert.equal(await page.locator('#live').textContent(), 'live');

  const victim = sheep[2];
  await victim.kill9();
  const nid = `127.0.0.1:${victim.port}`;
  const started = Date.now();
  await page.waitForSelector(`#nodes tr[data-nid="${nid}"][data-state="down"]`, { timeout: 20000 });
  await page.waitForSelector('#recovery .recovery-row .bar', { timeout: 20000 });
  t.diagnostic(`down and recovery shown ${Date.now() - started} ms after the SIGKILL`);
  assert.match(await page.locator(`#nodes tr[data-nid="${nid}"]`).textContent() ?? '', /down since epoch \d+/);
  assert.match(await page.locator('#recovery').textContent() ?? '', /of \d+ objects/);
  const shot = path.join(base, 'monitor.png');
  await page.screenshot({ path: shot, fullPage: true });
  assert.ok((await fs.stat(shot)).size > 10_000);
  t.diagnostic(`screenshot: ${shot}`);
  // kept for a look after the run (the temp dir goes away)
  await fs.copyFile(shot, path.join(path.dirname(base), 'sheep-monitor-last.png')).catch(() => undefined);
  assert.deepEqual(problems, [], 'no console errors');
});


test('a sheep whose port + 1000 is no TCP port starts without HTTP and says why', async () => {
  const dir = await tempDir();
  const port = 65000 + Math.floor(Math.random() * 500);
  const p = spawn(process.execPath, [SHEEP, '-f', '-p', String(port), '-b', '127.0.0.1', '-c', `local:${dir}/c`, path.join(dir, 'store')], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  p.stderr!.on('data', (d: Buffer) => { err += d.toString(); });
  try {
    await waitForPort(port);
    // the log line is written before the port opens, but reaches the pipe asynchronously
    for (const deadline = Date.now() + 5000; !/no HTTP endpoint/.test(err) && Date.now() < deadline;) await new Promise((r) => setTimeout(r, 50));
    assert.match(err, /no HTTP endpoint.*port \+ 1000 is no TCP port/);
  } finally {
    await endProcess(p, 'SIGTERM');
    await stopSequencer(`${dir}/c`);
    await fs.rm(dir, { recursive: true, force: true });
  }
});
