// collie node md: a node's disks (the original's multi-disk): info, plug, unplug.

import path from 'node:path';
import { Op, Res, SdError } from '../lib/proto.js';
import { formatSize } from '../lib/units.js';
import type { MdDiskInfo, MdInfoReply } from '../lib/admin.js';
import { CliError, EXIT_FAILURE, EXIT_USAGE, confirm, onNode, out, reason, withClient, type ConnOpts } from './common.js';
import { nodeList } from './node.js';

/** The original's cautions before plug and unplug (skipped with -f). */
const PLUG_CAUTION = 'Caution! The directories to be plugged will be purged (their obj/ directory is emptied).\nAre you sure you want to continue?';
const UNPLUG_CAUTION = 'Caution! The objects of the unplugged disks are moved to the node\'s other disks.\nAre you sure you want to continue?';

/** One disk's row: Id, Size, Used, Avail, Use%, Path as dog prints them, then why a disk is not in service. */
function diskRow(d: MdDiskInfo, raw: boolean, nid: string): string {
  const pct = d.size ? Math.floor((d.used * 100) / d.size) : 0;
  const state = d.status === 'failed' ? `failed: ${d.failure ?? 'I/O error'}` : d.status === 'draining' ? 'draining' : '';
  if (raw) {
    // dog -r: address, then the figures in bytes; a disk out of service says so in a last field
    return `${nid} ${d.idx} ${d.size} ${d.used} ${d.avail} ${pct}% ${d.path}${d.status === 'ok' ? '' : ` ${d.status}`}\n`;
  }
  return `${String(d.idx).padStart(2)}\t${formatSize(d.size)}\t${formatSize(d.used)}\t${formatSize(d.avail)}\t${String(pct).padStart(3)}%\t${d.path}${state ? `\t${state}` : ''}\n`;
}

async function nodeMdInfo(host: string, port: number, raw: boolean): Promise<void> {
  let r: MdInfoReply;
  try {
    r = await onNode(host, port, (c) => c.control<MdInfoReply>(Op.MD_INFO));
  } catch (e) {
    throw new CliError(`failed to get multi-disk information: ${reason(e)}`, EXIT_FAILURE);
  }
  const nid = `${host}:${port}`;
  for (const d of r.disks) out(diskRow(d, raw, nid));
}

/** `node md info`: the disks of the node collie talks to, or with -A of every node. */
export async function mdInfoCmd(o: ConnOpts & { all: boolean }): Promise<void> {
  const raw = !!o.raw;
  if (!raw) out('Id\tSize\tUsed\tAvail\tUse%\tPath\n');
  if (!o.all) return nodeMdInfo(o.address, o.port, raw);
  const l = await nodeList(o);
  for (const [i, n] of l.nodes.entries()) {
    if (!raw) out(`Node ${i}:\n`);
    await nodeMdInfo(n.host, n.port, raw);
  }
}

/** The comma-separated disk list of plug and unplug: absolute paths on the node's machine. */
function diskPaths(arg: string): string[] {
  const paths = arg.split(',').map((p) => p.trim());
  if (!arg.trim() || paths.some((p) => !p)) throw new CliError("Empty path isn't allowed", EXIT_USAGE);
  for (const p of paths) {
    if (!path.isAbsolute(p)) throw new CliError(`${p}: give absolute paths (they are paths on the node's machine)`, EXIT_USAGE);
  }
  return paths;
}

const NOT_MD = "this node keeps its objects in its store directory alone: start it as 'sheep DIR,DISK1,DISK2,...' to plug and unplug disks";

/**
 * The node's disks, to refuse the common mistakes with their reason here (the sheep answers with a
 * result code only; its log says more).
 */
async function checkPaths(op: number, paths: string[], o: ConnOpts): Promise<void> {
  const r = await withClient(o, (c) => c.control<MdInfoReply>(Op.MD_INFO));
  if (!r.md) throw new CliError(NOT_MD, EXIT_FAILURE);
  const disks = new Map(r.disks.map((d) => [path.resolve(d.path), d]));
  for (const p of paths) {
    if (op === Op.MD_PLUG && disks.has(path.resolve(p))) throw new CliError(`${p} is already a disk of this node`, EXIT_FAILURE);
    if (op === Op.MD_UNPLUG && !disks.has(path.resolve(p))) throw new CliError(`${p} is not a disk of this node (see 'collie node md info')`, EXIT_FAILURE);
  }
  if (op === Op.MD_UNPLUG) {
    const gone = new Set(paths.map((p) => path.resolve(p)));
    if (![...disks.values()].some((d) => d.status === 'ok' && !gone.has(path.resolve(d.path)))) {
      throw new CliError('cannot unplug the last disk in service: the node would have nowhere to keep its objects', EXIT_FAILURE);
    }
  }
}

async function plugUnplug(op: number, paths: string[], o: ConnOpts): Promise<void> {
  await checkPaths(op, paths, o);
  try {
    await withClient(o, (c) => c.control(op, { paths }));
  } catch (e) {
    if (e instanceof CliError) throw e;
    const why = e instanceof SdError && e.result === Res.NO_SPACE && op === Op.MD_UNPLUG
      ? `${reason(e)}: the node's other disks cannot take the objects of the unplugged disks`
      : reason(e);
    throw new CliError(`Failed to execute request: ${why}; look for sheep.log for more information`, EXIT_FAILURE);
  }
}

/** `node md plug PATH[,PATH...]`: new objects go to the new disks by size from now on. */
export async function mdPlugCmd(disks: string, o: ConnOpts & { force: boolean }): Promise<void> {
  const paths = diskPaths(disks);
  if (!o.force && !(await confirm(PLUG_CAUTION))) throw new CliError('not plugged (use -f to skip the question)');
  await plugUnplug(Op.MD_PLUG, paths, o);
}

/** `node md unplug PATH[,PATH...]`: the disks' objects move to the node's other disks first. */
export async function mdUnplugCmd(disks: string, o: ConnOpts & { force: boolean }): Promise<void> {
  const paths = diskPaths(disks);
  if (!o.force && !(await confirm(UNPLUG_CAUTION))) throw new CliError('not unplugged (use -f to skip the question)');
  await plugUnplug(Op.MD_UNPLUG, paths, o);
}
