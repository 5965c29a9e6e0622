// collie node kill, stat, log level, vnodes set, format: administration of one node.

import { Op, Res, SdError } from '../lib/proto.js';
import { formatSize } from '../lib/units.js';
import { MAX_VNODES } from '../lib/node.js';
import { toPinoLevel, levelList } from '../lib/log-levels.js';
import type { FrontendStat, LogLevelArgs, NodeStatReply, VnodesReply } from '../lib/admin.js';
import { nodeList } from './node.js';
import { CliError, EXIT_USAGE, connect, onNode, out, reason, withClient, type ConnOpts } from './common.js';

// ------------------------------------------------------------------ kill

/**
 * `node kill ID` (ids as `node list` numbers them) or `node kill -l` (the node collie talks to):
 * that sheep stops as on SIGTERM, and the others go on with a new epoch.
 */
export async function nodeKill(id: string | undefined, o: ConnOpts & { local?: boolean }): Promise<void> {
  if (o.local && id !== undefined) throw new CliError("don't use -l option and specify node id at the same time", EXIT_USAGE);
  if (!o.local && id === undefined) throw new CliError('please specify -l option or node id', EXIT_USAGE);
  let target = { host: o.address, port: o.port };
  if (id !== undefined) {
    if (!/^\d+$/.test(id)) throw new CliError(`Invalid node id '${id}', please specify a numeric value`, EXIT_USAGE);
    const nodes = (await nodeList(o)).nodes;
    const n = nodes[Number(id)];
    if (!n) throw new CliError(`Invalid node id '${Number(id)}' (the cluster has ${nodes.length} node(s): ids 0..${nodes.length - 1})`, EXIT_USAGE);
    target = { host: n.host, port: n.port };
  }
  try {
    await onNode(target.host, target.port, (c) => c.control(Op.KILL_NODE));
  } catch (e) {
    if (e instanceof CliError) throw e;
    throw new CliError(`Failed to execute request: ${reason(e)}`);
  }
}

// ------------------------------------------------------------------ stat

/** Which opcodes (or NBD commands) each column of `node stat` counts, per front end. */
const COLUMN_OPS: Record<keyof NodeStatReply, { write: string[]; read: string[]; remove: string[]; flush: string[] }> = {
  sheepdog: { write: ['CREATE_AND_WRITE_OBJ', 'WRITE_OBJ'], read: ['READ_OBJ'], remove: ['REMOVE_OBJ', 'DISCARD_OBJ'], flush: ['FLUSH_VDI'] },
  peer: { write: ['CREATE_AND_WRITE_PEER', 'WRITE_PEER'], read: ['READ_PEER'], remove: ['REMOVE_PEER'], flush: ['FLUSH_PEER'] },
  nbd: { write: ['WRITE', 'WRITE_ZEROES'], read: ['READ'], remove: ['TRIM'], flush: ['FLUSH'] },
};

/** Rows in dog's order (Client, Peer), then NBD, which the original did not have. */
const ROWS: Array<[keyof NodeStatReply, string]> = [['sheepdog', 'Client'], ['peer', 'Peer'], ['nbd', 'NBD']];

interface Counts {
  active: number;
  total: number;
  write: number;
  read: number;
  remove: number;
  flush: number;
  errors: number;
  /** bytes written (received) and read (sent) */
  wr: number;
  rd: number;
}

const sum = (m: Record<string, number>, names?: string[]) => (names ?? Object.keys(m)).reduce((a, k) => a + (m[k] ?? 0), 0);

function counts(front: keyof NodeStatReply, f: FrontendStat): Counts {
  const c = COLUMN_OPS[front];
  return {
    active: f.active, total: sum(f.ops), write: sum(f.ops, c.write), read: sum(f.ops, c.read),
    remove: sum(f.ops, c.remove), flush: sum(f.ops, c.flush), errors: sum(f.errors), wr: f.writtenBytes, rd: f.readBytes,
  };
}

/**
 * One `node stat` block: dog's columns (tab-separated; -r: no header or row names, space-separated,
 * bytes), then Errors; with `prev` (watch) also the bytes and requests of the last second.
 */
function statBlock(s: NodeStatReply, raw: boolean, prev?: NodeStatReply, secs = 1): string {
  const size = (n: number) => (raw ? String(Math.round(n)) : formatSize(n));
  const head = ['Request', 'Active', 'Total', 'Write', 'Read', 'Remove', 'Flush', 'All WR', 'All RD', ...(prev ? ['WRBW', 'RDBW', 'RPS'] : []), 'Errors'];
  const lines = raw ? [] : [head.join('\t')];
  for (const [front, label] of ROWS) {
    const c = counts(front, s[front]);
    const cells: Array<string | number> = [c.active, c.total, c.write, c.read, c.remove, c.flush, size(c.wr), size(c.rd)];
    if (prev) {
      const p = counts(front, prev[front]);
      cells.push(size((c.wr - p.wr) / secs), size((c.rd - p.rd) / secs), Math.round((c.total - p.total) / secs));
    }
    cells.push(c.errors);
    lines.push(raw ? cells.join(' ') : [label, ...cells].join('\t'));
  }
  return `${lines.join('\n')}\n`;
}

export async function nodeStat(o: ConnOpts & { watch?: boolean }): Promise<void> {
  const ask = async (c: Awaited<ReturnType<typeof connect>>) => {
    try {
      return await c.control<NodeStatReply>(Op.STAT);
    } catch (e) {
      throw new CliError(`failed to get stat information: ${reason(e)}`);
    }
  };
  if (!o.watch) {
    out(statBlock(await withClient(o, ask), Boolean(o.raw)));
    return;
  }
  await watchStat(o, ask);
}

/**
 * `node stat -w`: a block every second, until interrupted (Ctrl-C, SIGTERM) or the sheep goes away.
 * Rates are over the time that really passed between two answers.
 */
async function watchStat(o: ConnOpts, ask: (c: Awaited<ReturnType<typeof connect>>) => Promise<NodeStatReply>): Promise<void> {
  const c = await connect(o);
  let stopped = false;
  let wake: (() => void) | null = null;
  const stop = () => { stopped = true; wake?.(); };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  try {
    let prev = await ask(c);
    let at = performance.now();
    out(statBlock(prev, Boolean(o.raw), prev));
    while (!stopped) {
      await new Promise<void>((r) => { wake = r; setTimeout(r, 1000).unref(); });
      wake = null;
      if (stopped) break;
      const cur = await ask(c);
      const now = performance.now();
      out(statBlock(cur, Boolean(o.raw), prev, Math.max(0.001, (now - at) / 1000)));
      prev = cur;
      at = now;
    }
  } finally {
    process.off('SIGINT', stop);
    process.off('SIGTERM', stop);
    c.close();
  }
}

// ------------------------------------------------------------------ log level

const INVALID_LEVEL = (l: string) => `invalid loglevel: ${l}\navailable loglevels:\n${levelList()}`;

export async function nodeLogLevelGet(o: ConnOpts): Promise<void> {
  const r = await withClient(o, (c) => c.control<LogLevelArgs>(Op.GET_LOGLEVEL));
  // dog's "info (6)": the level and its number (pino's)
  out(r.value === undefined ? `${r.level}\n` : `${r.level} (${r.value})\n`);
}

export async function nodeLogLevelSet(level: string, o: ConnOpts): Promise<void> {
  // the sheep checks too; asking here first gives the list without a round trip
  if (!toPinoLevel(level)) throw new CliError(INVALID_LEVEL(level), EXIT_USAGE);
  try {
    await withClient(o, (c) => c.control<LogLevelArgs>(Op.SET_LOGLEVEL, { level }));
  } catch (e) {
    if (e instanceof SdError && e.result === Res.INVALID_PARMS) throw new CliError(INVALID_LEVEL(level), EXIT_USAGE);
    if (e instanceof CliError) throw e;
    throw new CliError(`Failed to execute request: ${reason(e)}`);
  }
}

export function nodeLogLevelList(): void {
  out(`${levelList()}\n`);
}

// ------------------------------------------------------------------ vnodes

export async function nodeVnodesSet(text: string, o: ConnOpts): Promise<void> {
  const n = Number(text);
  if (!/^\d+$/.test(text.trim()) || !Number.isInteger(n) || n < 1 || n > MAX_VNODES) {
    throw new CliError(`Invalid number of vnodes '${text}': must be an integer between 1 and ${MAX_VNODES}`, EXIT_USAGE);
  }
  let r: VnodesReply;
  try {
    r = await withClient(o, (c) => c.control<VnodesReply>(Op.SET_VNODES, { vnodes: n }));
  } catch (e) {
    if (e instanceof CliError) throw e;
    throw new CliError(`Failed to execute request: ${reason(e)}`);
  }
  // dog says nothing when it worked; an unchanged weight adds no epoch, which is worth knowing
  if (!r.changed) process.stderr.write(`the node has ${n} vnodes already: nothing changed (epoch ${r.epoch})\n`);
}

// ------------------------------------------------------------------ format

/**
 * The original's `node format DIR plain|tree` wrote a node's store format into a new store before its
 * sheep first started. Here a store has one format, which sheep lays out itself in an empty
 * directory on its first start; there is nothing to choose, so the command refuses with the reason.
 */
export async function nodeFormat(): Promise<void> {
  throw new CliError(
    'node format is not supported: the original chose the store format (plain or tree) of a new node\'s directory ' +
    'before its sheep first started; this sheep has one store format (obj/<oid> files, see README "How it works"), ' +
    'which it lays out itself in an empty directory when it first starts (`sheep DIR`). ' +
    'To wipe and set up the whole cluster use `collie cluster format`.');
}
