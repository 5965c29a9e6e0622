// Shared plumbing of collie commands: connection options, errors with exit codes, output helpers.

import fs from 'node:fs';
import { createRequire } from 'node:module';
import readline from 'node:readline/promises';
import type TableTypes from 'cli-table3';
import { SheepClient } from '../lib/client.js';
import { Res, SdError, resultText } from '../lib/proto.js';
import { DEFAULT_KEY_FILE, readKeyFile } from '../lib/auth.js';
import { parseSize } from '../lib/units.js';

export const EXIT_SUCCESS = 0;
export const EXIT_FAILURE = 1;
export const EXIT_SYSFAIL = 2;
export const EXIT_EXISTS = 3;
export const EXIT_MISSING = 5;
export const EXIT_USAGE = 64;

/** An error that ends collie with a message on stderr and a specific exit code. */
export class CliError extends Error {
  constructor(message: string, readonly exitCode: number = EXIT_FAILURE) {
    super(message);
  }
}

export interface ConnOpts {
  address: string;
  port: number;
  raw?: boolean;
}

/** A port that does not answer collie's first request this soon is not taken for a sheep. */
const FIRST_REPLY_MS = 15_000;

/** The cluster key collie proves on every connection (admin role), once loaded. */
let clusterKey: Buffer | null = null;

/**
 * --key FILE, else $SHEEPDOG_KEY_FILE, else /etc/sheepdog/cluster.key when it exists; none: collie
 * talks as an unauthenticated client (enough for a sheep without a key).
 */
export function loadClusterKey(option: string | undefined): void {
  const file = option ?? process.env.SHEEPDOG_KEY_FILE ?? (fs.existsSync(DEFAULT_KEY_FILE) ? DEFAULT_KEY_FILE : undefined);
  if (!file) return;
  try {
    clusterKey = readKeyFile(file);
  } catch (e) {
    throw new CliError((e as Error).message, EXIT_USAGE);
  }
}

/** A connection to one sheep, authenticated as admin when collie has the cluster key. */
export async function connectTo(host: string, port: number): Promise<SheepClient> {
  let c: SheepClient;
  try {
    c = await SheepClient.connect({ host, port }, 5000, FIRST_REPLY_MS);
  } catch (e) {
    throw new CliError(`failed to connect to ${host}:${port}: ${(e as Error).message}`, EXIT_SYSFAIL);
  }
  if (clusterKey) {
    try {
      await c.authenticate(clusterKey, 'admin');
    } catch (e) {
      c.close();
      const why = e instanceof SdError && e.result === Res.ACCESS_DENIED && !e.message.startsWith('the sheep')
        ? 'the sheep refused the cluster key (a different key, or the sheep has none)'
        : reason(e);
      throw new CliError(`authentication with ${host}:${port} failed: ${why}`, EXIT_FAILURE);
    }
  }
  return c;
}

export function connect(o: ConnOpts): Promise<SheepClient> {
  return connectTo(o.address, o.port);
}

/** Runs `fn` with a connection, closing it afterwards. */
export async function withClient<T>(o: ConnOpts, fn: (c: SheepClient) => Promise<T>): Promise<T> {
  const c = await connect(o);
  try {
    return await fn(c);
  } finally {
    c.close();
  }
}

/** The reason text for a failed request: the protocol's wording for SdErrors. */
export function reason(e: unknown): string {
  if (e instanceof SdError && e.result === Res.ACCESS_DENIED) {
    return `${resultText(e.result)} (give collie the key: --key FILE, SHEEPDOG_KEY_FILE or ${DEFAULT_KEY_FILE})`;
  }
  if (e instanceof SdError) return resultText(e.result);
  return (e as Error)?.message ?? String(e);
}

export const SIZE_HINT = 'You may use B, K, M, G, T or P suffixes for bytes, kilobytes, megabytes, gigabytes, terabytes and petabytes.';

export function sizeArg(text: string): number {
  const n = parseSize(text);
  if (n === null) throw new CliError(`Invalid size '${text}'\n${SIZE_HINT}`, EXIT_USAGE);
  return n;
}

export function out(s: string): void {
  process.stdout.write(s);
}

/** "2026-11-22 03:38" in local time, from seconds since the epoch. */
export function shortTime(sec: number, withSeconds = false): string {
  const d = new Date(sec * 1000);
  const p = (n: number) => String(n).padStart(2, '0');
  const base = `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}`;
  return withSeconds ? `${base}:${p(d.getSeconds())}` : base;
}

/** ctime(3)-style: "Sun Nov 22 03:38:52 2026". */
export function ctimeString(ms: number): string {
  const d = new Date(ms);
  const days = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];
  const months = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
  const p = (n: number) => String(n).padStart(2, '0');
  return `${days[d.getDay()]} ${months[d.getMonth()]} ${String(d.getDate()).padStart(2, ' ')} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())} ${d.getFullYear()}`;
}

/** "-s X": all digits is a snapshot id, anything else a tag. */
/**
 * The vid of VDI `name` (or of its snapshot `snapshot`, an id or a tag), else the original's error.
 * (dog's vdi check adds "FATAL: no inode objects", which only repeats that line in other words.)
 */
export async function vdiIdOf(c: SheepClient, name: string, snapshot?: string): Promise<number> {
  const { tag, snapid } = snapshotSpec(snapshot);
  try {
    return await c.getVdiInfo(name, tag, snapid);
  } catch (e) {
    throw new CliError(`Failed to open VDI ${name} (snapshot id: ${snapid} snapshot tag: ${tag}): ${reason(e)}`);
  }
}

export function snapshotSpec(s: string | undefined): { tag: string; snapid: number } {
  if (s === undefined || s === '') return { tag: '', snapid: 0 };
  return /^\d+$/.test(s) ? { tag: '', snapid: Number(s) } : { tag: s, snapid: 0 };
}

/**
 * Columns a string takes on a terminal: wide (CJK, fullwidth, emoji) characters take two, combining
 * marks and zero-width characters none, so names in any script line up in tables.
 */
export function displayWidth(s: string): number {
  let w = 0;
  for (const ch of s) {
    const c = ch.codePointAt(0)!;
    if (/\p{Mn}|\p{Me}|\p{Cf}/u.test(ch)) continue;
    w += isWide(c) ? 2 : 1;
  }
  return w;
}

function isWide(c: number): boolean {
  return (c >= 0x1100 && c <= 0x115f) || (c >= 0x2e80 && c <= 0x303e) || (c >= 0x3041 && c <= 0x33ff) ||
    (c >= 0x3400 && c <= 0x4dbf) || (c >= 0x4e00 && c <= 0x9fff) || (c >= 0xa000 && c <= 0xa4cf) ||
    (c >= 0xac00 && c <= 0xd7a3) || (c >= 0xf900 && c <= 0xfaff) || (c >= 0xfe30 && c <= 0xfe4f) ||
    (c >= 0xff00 && c <= 0xff60) || (c >= 0xffe0 && c <= 0xffe6) || (c >= 0x1f300 && c <= 0x1f64f) ||
    (c >= 0x1f900 && c <= 0x1f9ff) || (c >= 0x20000 && c <= 0x3fffd);
}

/** printf-style right alignment by display width (the labels of `vdi graph`; tables use renderTable). */
export const padL = (s: string | number, w: number) => ' '.repeat(Math.max(0, w - displayWidth(String(s)))) + String(s);

/** One column of a table, as the reference `dog` prints it. */
export interface Column {
  /**
   * Least width in terminal columns (printf's %8s). Without one, an empty cell still takes a column
   * (cli-table3's least) unless it ends its row.
   */
  width?: number;
  /** 'left' when left out. */
  align?: 'left' | 'right';
  /** What is printed before the column: ' ' when left out (the first column: nothing). */
  gap?: string;
}

/**
 * The width measure cli-table3 pads by: string-width, its own dependency (resolved from cli-table3 so it
 * is the very copy it uses). It disagrees with displayWidth on some emoji and marks; renderTable makes up
 * the difference so columns stay where displayWidth puts them.
 */
let stringWidthFn: ((s: string) => number) | null = null;
function stringWidth(s: string): number {
  if (!stringWidthFn) {
    try {
      stringWidthFn = createRequire(createRequire(import.meta.url).resolve('cli-table3'))('string-width') as (s: string) => number;
    } catch {
      stringWidthFn = displayWidth; // a cli-table3 without it: wide emoji may then misalign, nothing breaks
    }
  }
  return stringWidthFn(s);
}

/** cli-table3, loaded by the first table: commands that print none do not pay for it at start-up. */
let TableCtor: typeof TableTypes | null = null;
const loadTable = () => (TableCtor ??= createRequire(import.meta.url)('cli-table3') as typeof TableTypes);

/** No borders: a space between columns, unless a column gives its own gap. */
const NO_BORDER: Partial<Record<TableTypes.CharName, string>> = {
  top: '', 'top-mid': '', 'top-left': '', 'top-right': '', bottom: '', 'bottom-mid': '', 'bottom-left': '', 'bottom-right': '',
  left: '', 'left-mid': '', mid: '', 'mid-mid': '', right: '', 'right-mid': '', middle: ' ',
};

/**
 * Lays rows out with cli-table3, one output line (ending in a newline) each. Rows are laid out the way
 * dog's printf does: a cell wider than its column pushes the rest of its own row instead of widening
 * the column for every row, so each row is a table of its own. An empty last cell of a column without
 * a width prints nothing, not even its gap (cli-table3 would give it one column).
 */
export function renderTable(columns: Column[], rows: Array<Array<string | number>>): string {
  let text = '';
  for (const row of rows) {
    const cells = row.map(String);
    while (cells.length && cells[cells.length - 1] === '' && !columns[cells.length - 1].width) cells.pop();
    const Table = loadTable();
    const table = new Table({
      chars: NO_BORDER,
      style: { 'padding-left': 0, 'padding-right': 0, head: [], border: [] },
      colAligns: cells.map((_, i) => columns[i].align ?? 'left'),
      // the width displayWidth asks for, in cli-table3's measure of this cell
      colWidths: cells.map((c, i) => Math.max(columns[i].width ?? 0, displayWidth(c)) + stringWidth(c) - displayWidth(c)),
    });
    // cli-table3 draws 'left' before the first cell and 'middle' before the others
    table.push(cells.map((content, i) => {
      const gap = columns[i].gap;
      return gap === undefined ? content : { content, chars: i ? { middle: gap } : { left: gap } };
    }));
    text += `${table.toString()}\n`;
  }
  return text;
}

/** Runs `fn` against one specific node (not the cluster), mapping connection trouble to exit 2. */
export async function onNode<T>(host: string, port: number, fn: (c: SheepClient) => Promise<T>): Promise<T> {
  const c = await connectTo(host, port);
  try {
    return await fn(c);
  } finally {
    c.close();
  }
}

/** Asks on the terminal; without one (scripts, CI) the answer is no. */
export async function confirm(question: string): Promise<boolean> {
  if (!process.stdin.isTTY) return false;
  const rl = readline.createInterface({ input: process.stdin, output: process.stdout });
  try {
    return (await rl.question(`${question} [yes/no]: `)).trim() === 'yes';
  } finally {
    rl.close();
  }
}
