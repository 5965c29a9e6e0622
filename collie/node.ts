// collie node: list, info.

import { Op } from '../lib/proto.js';
import { SheepClient } from '../lib/client.js';
import { formatSize } from '../lib/units.js';
import { policyOf } from '../lib/erasure-layout.js';
import type { NodeListReply, StatSheepReply, StatSheepArgs, RecoveryStatus, Throttle } from '../lib/admin.js';
import { progress } from './progress.js';
import { CliError, EXIT_SYSFAIL, EXIT_USAGE, withClient, connectTo, out, reason, renderTable, type Column, type ConnOpts } from './common.js';

export async function nodeList(o: ConnOpts): Promise<NodeListReply> {
  try {
    return await withClient(o, (c) => c.control<NodeListReply>(Op.GET_NODE_LIST));
  } catch (e) {
    if (e instanceof CliError) process.stderr.write(`${e.message}\n`);
    throw new CliError('Failed to get node list', EXIT_SYSFAIL);
  }
}

/** Host:Port, V-Nodes and Zone, after the Id, in `node list` and `node recovery`. */
const NODE_COLUMNS: Column[] = [{ width: 20, gap: '   ' }, { width: 2, align: 'right', gap: '\t' }, { width: 11, align: 'right', gap: '' }];
/** A mark for the node collie talks to, then the Id. */
const NODE_LIST_COLUMNS: Column[] = [{ width: 1 }, { width: 3, align: 'right', gap: '' }, ...NODE_COLUMNS];

/**
 * An erasure code needs a zone per strip: refused here with the reason (the sheep refuses it too,
 * but a protocol error carries only its code).
 */
export async function checkEcZones(o: ConnOpts, copyPolicy: number | undefined, what: string): Promise<void> {
  const ec = policyOf(copyPolicy ?? 0);
  if (!ec) return;
  const zones = new Set((await nodeList(o)).nodes.map((n) => n.zone)).size;
  if (ec.d + ec.p > zones) {
    throw new CliError(`${what}: ${ec.d}:${ec.p} puts each object's ${ec.d + ec.p} strips on ${ec.d + ec.p} distinct zones, but the cluster has ${zones}`, EXIT_USAGE);
  }
}

export async function nodeListCmd(o: ConnOpts): Promise<void> {
  const l = await nodeList(o);
  if (o.raw) {
    l.nodes.forEach((n, i) => out(`${i} ${n.host}:${n.port} ${n.vnodes} ${n.zone}\n`));
    return;
  }
  // dog's header line, which does not follow the columns below it
  out('  Id   Host:Port         V-Nodes       Zone\n');
  // '*' marks the node collie is talking to
  out(renderTable(NODE_LIST_COLUMNS, l.nodes.map((n, i) => [n.nid === l.me ? '*' : ' ', i, `${n.host}:${n.port}`, n.vnodes, n.zone])));
}

/** Id, Size, Used, Avail, Use% separated by tabs, then why a node cannot take its share, when it cannot. */
const NODE_INFO_COLUMNS: Column[] = [
  { width: 2, align: 'right' }, { gap: '\t' }, { gap: '\t' }, { gap: '\t' }, { width: 4, align: 'right', gap: '\t' }, { gap: '\t' },
];

export async function nodeInfoCmd(o: ConnOpts): Promise<void> {
  const l = await nodeList(o);
  const raw = o.raw;
  const size = (n: number) => (raw ? String(n) : formatSize(n));
  const pct = (used: number, total: number) => (total ? Math.floor((used * 100) / total) : 0);
  // rows go out as each node answers (every row is laid out on its own)
  const row = (cells: Array<string | number>) => out(renderTable(NODE_INFO_COLUMNS, [cells]));
  if (!raw) row(['Id', 'Size', 'Used', 'Avail', 'Use%']);
  let tSize = 0, tUsed = 0, tAvail = 0, vsize = 0, ok = 0;
  const strips = new Map<number, number>();
  for (const [i, n] of l.nodes.entries()) {
    try {
      const c = await connectTo(n.host, n.port);
      try {
        const s = await c.control<StatSheepReply>(Op.STAT_SHEEP, { strips: true } satisfies StatSheepArgs);
        tSize += s.size; tUsed += s.used; tAvail += s.avail; vsize = Math.max(vsize, s.vdiSizeTotal); ok++;
        for (const [policy, bytes] of s.ecStrips ?? []) strips.set(policy, (strips.get(policy) ?? 0) + bytes);
        // a node whose disk failed, or whose free space is under its reserve, says so after its figures
        const state = s.diskFailed ? `disk failed: ${s.diskFailed}` : s.full ? `full (under the ${size(s.reserve ?? 0)} reserve: new objects refused)` : '';
        if (raw) out(`${i} ${s.size} ${s.used} ${s.avail} ${pct(s.used, s.size)}%${s.diskFailed ? ' failed' : s.full ? ' full' : ''}\n`);
        else row([i, size(s.size), size(s.used), size(s.avail), `${pct(s.used, s.size)}%`, state]);
      } finally {
        c.close();
      }
    } catch (e) {
      process.stderr.write(`Response's result: ${reason(e)}\n`);
    }
  }
  if (!ok) throw new CliError('Cannot get information from any nodes', EXIT_SYSFAIL);
  if (raw) out(`Total ${tSize} ${tUsed} ${tAvail} ${pct(tUsed, tSize)}% ${vsize}\n`);
  else {
    row(['Total', size(tSize), size(tUsed), size(tAvail), `${pct(tUsed, tSize)}%`]);
    out(`\nTotal virtual image size\t${size(vsize)}\n`);
  }
  for (const line of ecSavings(strips, raw)) out(line);
}

/**
 * Space erasure coding saves: per code X:Y, the strips hold X/(X+Y) of their bytes as data, and
 * Y+1 full copies of that data would survive as many lost zones.
 */
function ecSavings(strips: Map<number, number>, raw?: boolean): string[] {
  const lines: string[] = [];
  for (const [policy, bytes] of [...strips].sort((a, b) => a[0] - b[0])) {
    const ec = policyOf(policy);
    if (!ec) continue;
    const data = Math.round((bytes * ec.d) / (ec.d + ec.p));
    const copies = data * (ec.p + 1);
    const saved = Math.max(0, copies - bytes);
    if (raw) lines.push(`EC ${ec.d}:${ec.p} ${bytes} ${data} ${copies} ${saved}\n`);
    else {
      lines.push(`Erasure coding ${ec.d}:${ec.p}\t${formatSize(bytes)} of strips hold ${formatSize(data)} of data; ` +
        `${ec.p + 1} full copies (the same ${ec.p} failures) would take ${formatSize(copies)}: ${formatSize(saved)} saved\n`);
    }
  }
  return lines;
}

/**
 * What an operator must know about nodes that cannot do their share now: a full or failed disk, a
 * recovery waiting for space or that gave up. Asked of every node at once; a node that does not
 * answer is left out (`node info` names it).
 */
export async function nodeWarnings(o: ConnOpts): Promise<string[]> {
  const l = await withClient(o, (c) => c.control<NodeListReply>(Op.GET_NODE_LIST));
  const per = await Promise.all(l.nodes.map(async (n) => {
    const lines: string[] = [];
    try {
      await withClient({ ...o, address: n.host, port: n.port }, async (c) => {
        const s = await c.control<StatSheepReply>(Op.STAT_SHEEP);
        const r = await c.control<RecoveryStatus>(Op.STAT_RECOVERY);
        const who = `Node ${n.host}:${n.port}`;
        if (s.diskFailed) lines.push(`${who}: disk failed (${s.diskFailed}): its copies are served and recovered from other nodes`);
        else if (s.full) lines.push(`${who}: disk full (${formatSize(s.avail)} free, ${formatSize(s.reserve ?? 0)} reserved): new objects placed there are refused`);
        if (r.blocked) lines.push(`${who}: recovery ${r.blocked}`);
        else if (r.state === 'idle' && r.error) lines.push(`${who}: recovery failed: ${r.error}`);
      });
    } catch { /* unreachable now: membership will tell */ }
    return lines;
  }));
  return per.flat();
}

/** Id, the node columns, then Progress ("12.5%"). */
const RECOVERY_COLUMNS: Column[] = [{ width: 4, align: 'right' }, ...NODE_COLUMNS, { width: 12, align: 'right', gap: '' }];

export async function nodeRecoveryCmd(o: ConnOpts): Promise<void> {
  const l = await nodeList(o);
  // dog's header line, which does not follow the columns below it
  out('Nodes In Recovery:\n  Id   Host:Port         V-Nodes       Zone       Progress\n');
  for (const [i, n] of l.nodes.entries()) {
    let st: RecoveryStatus;
    try {
      st = await withClient({ ...o, address: n.host, port: n.port }, (c) => c.control<RecoveryStatus>(Op.STAT_RECOVERY));
    } catch (e) {
      process.stderr.write(`${n.nid}: ${reason(e)}\n`);
      continue;
    }
    if (st.state === 'idle' && !st.error) continue;
    const pct = st.total ? (100 * st.done) / st.total : 0;
    out(renderTable(RECOVERY_COLUMNS, [[i, `${n.host}:${n.port}`, n.vnodes, n.zone, `${pct.toFixed(1)}%`]]));
    // a run that gave up says why (it runs again at the next membership change)
    if (st.state === 'idle' && st.error) out(`       recovery failed: ${st.error}\n`);
    // a run that cannot finish now says why (a full disk), and goes on by itself
    if (st.blocked) out(`       recovery ${st.blocked}\n`);
  }
}

/**
 * `node recovery --watch`: follows every node's recovery until none is running or waiting, with a
 * progress bar on a terminal (objects done of the objects to check, all nodes together), then says so.
 */
export async function nodeRecoveryWatch(o: ConnOpts): Promise<void> {
  let bar: ReturnType<typeof progress> | null = null; // drawn once a node is recovering
  let lastBlocked = '';
  try {
    for (;;) {
      const l = await nodeList(o);
      const st = await Promise.all(l.nodes.map((n) =>
        withClient({ ...o, address: n.host, port: n.port }, (c) => c.control<RecoveryStatus>(Op.STAT_RECOVERY)).catch(() => null)));
      const busy = st.filter((s): s is RecoveryStatus => !!s && s.state !== 'idle');
      if (!busy.length) break;
      const total = Math.max(1, busy.reduce((a, s) => a + s.total, 0));
      bar ??= progress('recovery', total, 'objects');
      bar.set(busy.reduce((a, s) => a + s.done, 0), total);
      const blocked = busy.map((s) => s.blocked).find(Boolean) ?? '';
      if (blocked && blocked !== lastBlocked) process.stderr.write(`\nrecovery ${blocked}\n`);
      lastBlocked = blocked;
      await new Promise((r) => setTimeout(r, 500));
    }
  } finally {
    bar?.stop();
  }
  const epochs = await withClient(o, (c) => c.control<{ epoch: number }>(Op.STAT_CLUSTER));
  out(`recovery finished on every node (epoch ${epochs.epoch})\n`);
}

export async function nodeSetThrottle(max: string, interval: string, o: ConnOpts): Promise<void> {
  const m = Number(max);
  const i = Number(interval);
  const ok = (n: number) => Number.isInteger(n) && n >= 0;
  if (!ok(m) || !ok(i) || (m === 0) !== (i === 0)) {
    throw new CliError(`Invalid interval max (${max}), interval (${interval}): both 0 (no limit) or both positive integers`, EXIT_USAGE);
  }
  await withClient(o, (c) => c.control(Op.SET_RECOVERY_THROTTLE, { max: m, interval: i }));
}

export async function nodeGetThrottle(o: ConnOpts): Promise<void> {
  const t = await withClient(o, (c) => c.control<Throttle>(Op.GET_RECOVERY_THROTTLE));
  // the original prints this on stderr
  process.stderr.write(`max (${t.max}), interval (${t.interval})\n`);
}
