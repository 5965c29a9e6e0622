#!/usr/bin/env node
// collie: the command-line tool that runs a sheepdog cluster. `collie <group> <command> [args]`.

import { Command, InvalidArgumentError } from 'commander';
import { CliError, EXIT_FAILURE, EXIT_SYSFAIL, EXIT_USAGE, sizeArg, loadClusterKey, reason } from './common.js';
import { SdError } from '../lib/proto.js';
import { NotASheepError } from '../lib/client.js';
import { DEFAULT_KEY_FILE } from '../lib/auth.js';
import { clusterFormat, clusterInfo, clusterShutdown, clusterRecoverForce, clusterRecoverMode, clusterKeygen } from './cluster.js';
import { nodeListCmd, nodeInfoCmd, nodeRecoveryCmd, nodeRecoveryWatch, nodeSetThrottle, nodeGetThrottle } from './node.js';
import { mdInfoCmd, mdPlugCmd, mdUnplugCmd } from './node-md.js';
import { vdiCreate, vdiList, vdiDelete, vdiRead, vdiWrite, vdiObject } from './vdi.js';
import { vdiSnapshot, vdiClone, vdiRollback, vdiResize, vdiTree, vdiGraph } from './vdi-family.js';
import { vdiSetattr, vdiGetattr, vdiLockList, vdiLockUnlock, vdiCheck } from './vdi-admin.js';
import { vdiBackup, vdiRestore } from './backup.js';
import { vdiAlterCopy } from './vdi-alter-copy.js';
import { vdiTrack } from './vdi-track.js';
import { vdiDumpInode } from './vdi-inode.js';
import { completionScript } from './completion.js';
import { registerClusterSnapshot } from './cluster-snapshot.js';
import { registerBenchmark } from './benchmark.js';
import { nodeKill, nodeStat, nodeLogLevelGet, nodeLogLevelSet, nodeLogLevelList, nodeVnodesSet, nodeFormat } from './node-admin.js';
import { clusterReweight, clusterAlterCopy, clusterCheck } from './cluster-admin.js';
import { parseRedundancy } from '../lib/erasure-layout.js';

/** dog's -c: N copies, or X:Y for an erasure code (X data + Y parity strips); refused with the reason. */
function redundancyArg(v: string): { copies: number; copyPolicy: number } {
  try {
    const r = parseRedundancy(v);
    if (!r.copyPolicy && (r.copies < 1 || r.copies > 31)) throw new InvalidArgumentError('must be 1..31 copies, or X:Y (X data strips of 2, 4, 8 or 16 and Y parity strips of 1..15)');
    return r;
  } catch (e) {
    if (e instanceof InvalidArgumentError) throw e;
    throw new InvalidArgumentError((e as Error).message);
  }
}

function intArg(min: number, max: number) {
  return (v: string): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min || n > max) throw new InvalidArgumentError(`must be an integer ${min}..${max}`);
    return n;
  };
}

/** Adds the options every command that talks to a sheep has. */
function conn(cmd: Command, raw = false): Command {
  cmd.option('-a, --address <host>', 'sheep address', 'localhost')
    .option('-p, --port <port>', 'sheep port', intArg(1, 65535), 7000)
    .option('-k, --key <file>', `cluster key proved to the sheep (default: $SHEEPDOG_KEY_FILE, else ${DEFAULT_KEY_FILE} when it exists)`);
  if (raw) cmd.option('-r, --raw', 'raw output: no headers, single spaces, sizes in bytes', false);
  return cmd;
}

type Opts = Record<string, unknown> & { address: string; port: number; raw?: boolean };

/** Wraps an action: errors print their reason and set the exit code. */
function act<A extends unknown[]>(fn: (...a: A) => Promise<void>) {
  return async (...a: A) => {
    try {
      await fn(...a);
    } catch (e) {
      if (e instanceof CliError) {
        if (e.message) process.stderr.write(`${e.message}\n`);
        process.exitCode = e.exitCode;
      } else if (e instanceof SdError) {
        // the server said no: its reason, not a stack trace
        process.stderr.write(`${reason(e)}\n`);
        process.exitCode = EXIT_FAILURE;
      } else if (e instanceof NotASheepError) {
        process.stderr.write(`${e.message}\n`);
        process.exitCode = EXIT_SYSFAIL;
      } else {
        // a sentence, not a stack trace (COLLIE_DEBUG=1 shows where it came from)
        process.stderr.write(`${process.env.COLLIE_DEBUG ? (e as Error)?.stack : (e as Error)?.message ?? String(e)}\n`);
        process.exitCode = EXIT_FAILURE;
      }
    }
  };
}

// `collie vdi read x | head` closes the pipe early: that is the reader's choice, not an error
process.stdout.on('error', (e: NodeJS.ErrnoException) => {
  if (e.code === 'EPIPE') process.exit(0);
  throw e;
});

const program = new Command('collie')
  .description('Sheepdog administrator utility: manage the cluster, its nodes and virtual disk images (VDIs)')
  .version('0.1.0', '--version')
  .showHelpAfterError()
  .configureOutput({ writeErr: (s) => process.stderr.write(s) });

// every command that talks to a sheep proves the cluster key first, when collie has one
program.hook('preAction', (_root, cmd) => {
  if (cmd.name() === 'keygen' || cmd.name() === 'completion') return; // no sheep involved (keygen makes the key: there may be none yet)
  try {
    loadClusterKey(cmd.opts().key as string | undefined);
  } catch (e) {
    process.stderr.write(`${(e as Error).message}\n`);
    process.exit(e instanceof CliError ? e.exitCode : EXIT_FAILURE);
  }
});

// ------------------------------------------------------------------ cluster
const cluster = program.command('cluster').description('cluster-wide operations');
cluster.command('keygen').description(`write a new random cluster key (give it to every sheep with --cluster-key and to collie)`)
  .argument('[file]', 'where to write it (mode 0600)', DEFAULT_KEY_FILE)
  .option('-f, --force', 'replace an existing key file (sheep using the old key must be restarted with the new one)', false)
  .action(act(async (file: string, o: { force: boolean }) => clusterKeygen(file, o.force)));
conn(cluster.command('format').description('create a Sheepdog store: wipes every node and sets the defaults'))
  .option('-c, --copies <n>', 'default data redundancy: N full copies of every object, or X:Y erasure coding (X data strips of 2, 4, 8 or 16 plus Y parity strips of 1..15 on X+Y zones: survives Y lost zones at (X+Y)/X the space)', redundancyArg, { copies: 3, copyPolicy: 0 })
  .option('-z, --block-size-shift <n>', 'default object size as a power of two (20..31)', intArg(20, 31), 22)
  .option('-l, --lock', 'enforce VDI locks: a second writer is refused', false)
  .option('-f, --force', 'do not ask for confirmation when the cluster holds VDIs', false)
  .action(act(async (o: Opts) => clusterFormat({ ...o, ...(o.copies as { copies: number; copyPolicy: number }), blockSizeShift: o.blockSizeShift as number, lock: Boolean(o.lock), force: Boolean(o.force) })));
conn(cluster.command('info').description('show cluster status, creation time and epoch history'), true)
  .option('-v, --verbose', 'print more information', false)
  .action(act(async (o: Opts) => clusterInfo({ ...o, verbose: Boolean(o.verbose) })));
const recover = cluster.command('recover').description('control recovery: after a full restart, or pause it');
conn(recover.command('force').description('stop waiting for the nodes of the last epoch and go on with the nodes present'))
  .option('-f, --force', 'do not prompt for confirmation', false)
  .action(act(async (o: Opts) => clusterRecoverForce({ ...o, force: Boolean(o.force) })));
conn(recover.command('enable').description('enable automatic recovery, and run the recovery that waited meanwhile'))
  .action(act(async (o: Opts) => clusterRecoverMode(o, true)));
conn(recover.command('disable').description('disable automatic recovery (membership changes are recorded; copying waits)'))
  .action(act(async (o: Opts) => clusterRecoverMode(o, false)));
conn(cluster.command('shutdown').description('stop every sheep of the cluster (data is flushed first)'))
  .action(act(async (o: Opts) => clusterShutdown(o)));
registerClusterSnapshot(cluster, conn, act);
registerBenchmark(program, conn, act);
conn(cluster.command('reweight').description("set every node's vnodes from the capacity of its store (the default vnodes times its capacity over the average): one new epoch, then recovery moves objects to match"))
  .action(act(async (o: Opts) => clusterReweight(o)));
conn(cluster.command('alter-copy').description("set the cluster's redundancy level: the default copies of VDIs created from now on (existing VDIs keep theirs)"))
  .option('-c, --copies <n>', 'the default number of copies (default: 3)', intArg(1, 31))
  .option('-f, --force', 'do not prompt for confirmation', false)
  .action(act(async (o: Opts) => clusterAlterCopy({ ...o, copies: o.copies as number | undefined, force: Boolean(o.force) })));
conn(cluster.command('check').description('check and repair every VDI and snapshot of the cluster (vdi check of each: missing copies rebuilt, differing copies made the same)'))
  .action(act(async (o: Opts) => clusterCheck(o)));

// ------------------------------------------------------------------ node
const node = program.command('node').description('node information');
conn(node.command('list').description('list nodes (* marks the node collie talks to)'), true).action(act(async (o: Opts) => nodeListCmd(o)));
conn(node.command('info').description('show disk usage of each node'), true).action(act(async (o: Opts) => nodeInfoCmd(o)));
const recovery = node.command('recovery').description('show recovery progress of the nodes, or set/get the recovery throttle of one node');
conn(recovery.command('info', { isDefault: true }).description('show the nodes that are recovering objects, with their progress (default)'))
  .option('-w, --watch', 'follow recovery until every node has finished (a progress bar on a terminal)', false)
  .action(act(async (o: Opts) => (o.watch ? nodeRecoveryWatch(o) : nodeRecoveryCmd(o))));
conn(recovery.command('set-throttle').description('recover at most MAX objects per INTERVAL milliseconds on this node (0 0: no limit)')
  .argument('<max>').argument('<interval>'))
  .action(act(async (max: string, interval: string, o: Opts) => nodeSetThrottle(max, interval, o)));
conn(recovery.command('get-throttle').description('show the recovery throttle of this node'))
  .action(act(async (o: Opts) => nodeGetThrottle(o)));
conn(node.command('kill').description('stop a node cleanly, as on SIGTERM (it flushes and leaves; the others go on with a new epoch and recover)')
  .argument('[node id]', 'the node to stop, as `node list` numbers them'), true)
  .option('-l, --local', 'stop the node collie talks to (-a/-p)', false)
  .action(act(async (id: string | undefined, o: Opts) => nodeKill(id, { ...o, local: Boolean(o.local) })));
conn(node.command('stat').description('show request counters of the node collie talks to: by front end (Client: port 7000, Peer: other sheep, NBD), as its /metrics counts them'), true)
  .option('-w, --watch', 'print them every second, with the last second\'s bandwidth and requests (until Ctrl-C)', false)
  .action(act(async (o: Opts) => nodeStat({ ...o, watch: Boolean(o.watch) })));
const nodeLog = node.command('log').description('show or set the log level of the node');
const logLevel = nodeLog.command('level').description("manipulate the log level of the node collie talks to (pino's levels; the original's syslog names are accepted too)");
conn(logLevel.command('get').description('show the current log level')).action(act(async (o: Opts) => nodeLogLevelGet(o)));
conn(logLevel.command('set').description('set a new log level (at once, until the sheep restarts)').argument('<log level>', 'fatal, error, warn, info, debug, trace, or emerg, alert, crit, err, warning, notice'))
  .action(act(async (level: string, o: Opts) => nodeLogLevelSet(level, o)));
logLevel.command('list').description('list the log levels a sheep accepts').action(act(async () => nodeLogLevelList()));
const vnodes = node.command('vnodes').description("set the node's vnodes (its weight in placement)");
conn(vnodes.command('set').description("set the vnodes of the node collie talks to: decided for the whole cluster, a new epoch, then recovery moves objects to match (until the sheep restarts: give it --vnodes to keep)")
  .argument('<num of vnodes>', '1..65535'))
  .action(act(async (n: string, o: Opts) => nodeVnodesSet(n, o)));
conn(node.command('format').description('initialize the store format of a node: not supported (a store has one format, which sheep sets up itself)')
  .argument('[directory of sheep]').argument('[store format]'))
  .action(act(async () => nodeFormat()));

const md = node.command('md').description("a node's disks (sheep DIR,DISK1,DISK2,...): show, plug and unplug them");
conn(md.command('info').description('show multi-disk information: size, use and state of each disk of the node'), true)
  .option('-A, --all', 'show md information of all the nodes', false)
  .action(act(async (o: Opts) => mdInfoCmd({ ...o, all: Boolean(o.all) })));
conn(md.command('plug').description('plug more disk(s) into the node: new objects go to them by size (their obj/ is emptied first)')
  .argument('<disks>', 'absolute path(s) on the node, comma-separated'))
  .option('-f, --force', 'ignore the confirmation', false)
  .action(act(async (disks: string, o: Opts) => mdPlugCmd(disks, { ...o, force: Boolean(o.force) })));
conn(md.command('unplug').description("unplug disk(s) from the node: their objects move to the node's other disks first (refused without room there)")
  .argument('<disks>', 'absolute path(s) on the node, comma-separated'))
  .option('-f, --force', 'ignore the confirmation', false)
  .action(act(async (disks: string, o: Opts) => mdUnplugCmd(disks, { ...o, force: Boolean(o.force) })));

// ------------------------------------------------------------------ vdi
const vdi = program.command('vdi').description('virtual disk images');
conn(vdi.command('create').description('create an image').argument('<vdiname>').argument('<size>', 'size, e.g. 10G'), true)
  .option('-P, --prealloc', 'preallocate all the data objects', false)
  .option('-c, --copies <n>', 'data redundancy: N full copies, or X:Y erasure coding (X data strips of 2, 4, 8 or 16 plus Y parity strips of 1..15, on X+Y zones; default: the cluster default)', redundancyArg)
  .option('-z, --block-size-shift <n>', 'object size as a power of two', intArg(0, 64))
  .option('-v, --verbose', 'print the id of the new VDI', false)
  .action(act(async (name: string, size: string, o: Opts) => vdiCreate(name, sizeArg(size), {
    ...o, prealloc: Boolean(o.prealloc), copies: (o.copies as { copies: number } | undefined)?.copies,
    copyPolicy: (o.copies as { copyPolicy: number } | undefined)?.copyPolicy,
    blockSizeShift: o.blockSizeShift as number | undefined, verbose: Boolean(o.verbose),
  })));
conn(vdi.command('list').description('list images').argument('[vdiname]', 'only this VDI and its snapshots'), true)
  .action(act(async (name: string | undefined, o: Opts) => vdiList(name, o)));
conn(vdi.command('delete').description('delete an image or one of its snapshots').argument('<vdiname>'))
  .option('-s, --snapshot <id|tag>', 'delete this snapshot instead of the working VDI')
  .action(act(async (name: string, o: Opts) => vdiDelete(name, { ...o, snapshot: o.snapshot as string | undefined })));
conn(vdi.command('read').description('read data from an image to stdout').argument('<vdiname>').argument('[offset]').argument('[len]'))
  .option('-s, --snapshot <id|tag>', 'read this snapshot')
  .action(act(async (name: string, off: string | undefined, len: string | undefined, o: Opts) =>
    vdiRead(name, off === undefined ? 0 : sizeArg(off), len === undefined ? undefined : sizeArg(len), { ...o, snapshot: o.snapshot as string | undefined })));
conn(vdi.command('write').description('write data from stdin to an image').argument('<vdiname>').argument('[offset]').argument('[len]'))
  .action(act(async (name: string, off: string | undefined, len: string | undefined, o: Opts) =>
    vdiWrite(name, off === undefined ? 0 : sizeArg(off), len === undefined ? undefined : sizeArg(len), o)));
conn(vdi.command('object').description('show which nodes hold an object of an image (location, the default), its object map (map) or its inode header (dump-inode)')
  .argument('<subcommand|vdiname>', 'location, map or dump-inode; may be left out (location)').argument('[vdiname]'))
  .option('-i, --index <idx>', 'data object index (default: the inode object)', intArg(0, 2 ** 31))
  .option('-s, --snapshot <id|tag>', 'a snapshot instead of the working VDI')
  .action(act(async (first: string, second: string | undefined, o: Opts) => {
    const [sub, name] = second === undefined ? ['location', first] : [first, second];
    const so = { ...o, index: o.index as number | undefined, snapshot: o.snapshot as string | undefined };
    if (sub === 'dump-inode') return vdiDumpInode(name, so);
    if (sub !== 'location' && sub !== 'map') throw new CliError(`unknown subcommand '${sub}': use location, map or dump-inode`, EXIT_USAGE);
    await vdiObject(sub, name, so);
  }));
conn(vdi.command('track').description('show the object epoch trace in the image: the nodes that held it at each epoch')
  .argument('<vdiname>'))
  .option('-i, --index <idx>', 'data object index (default: the inode object)', intArg(0, 2 ** 31))
  .option('-s, --snapshot <id|tag>', 'a snapshot instead of the working VDI')
  .option('-o, --oid <oid>', 'the object id (hex) to track instead')
  .action(act(async (name: string, o: Opts) =>
    vdiTrack(name, { ...o, index: o.index as number | undefined, snapshot: o.snapshot as string | undefined, oid: o.oid as string | undefined })));
conn(vdi.command('alter-copy').description("set the vdi's redundancy level: every object gains or loses copies before the command returns")
  .argument('<vdiname>'))
  .option('-c, --copies <n>', 'the number of copies (1 to the number of zones; default 3)')
  .option('-f, --force', 'do not ask for confirmation', false)
  .action(act(async (name: string, o: Opts) => vdiAlterCopy(name, { ...o, copies: o.copies as string | undefined, force: Boolean(o.force) })));

conn(vdi.command('snapshot').description('create a snapshot: the VDI as it is now, kept read-only').argument('<vdiname>'), true)
  .option('-s, --snapshot <tag>', 'tag for the snapshot')
  .option('-v, --verbose', 'print the new ids', false)
  .action(act(async (name: string, o: Opts) => vdiSnapshot(name, { ...o, snapshot: o.snapshot as string | undefined, verbose: Boolean(o.verbose) })));
conn(vdi.command('clone').description('clone a snapshot into a new writable VDI that shares its objects').argument('<src>').argument('<dst>'))
  .option('-s, --snapshot <id|tag>', 'the snapshot of SRC to clone (required)')
  .option('-P, --prealloc', 'allocate every object of the clone now', false)
  .option('-n, --no-share', 'full copy: an independent VDI with its own objects and no parent')
  .action(act(async (src: string, dst: string, o: Opts) => vdiClone(src, dst, {
    ...o, snapshot: o.snapshot as string | undefined, prealloc: Boolean(o.prealloc), full: o.share === false,
  })));
conn(vdi.command('rollback').description('discard the changes since a snapshot: the VDI reads as the snapshot again').argument('<vdiname>'), true)
  .option('-s, --snapshot <id|tag>', 'the snapshot to roll back to (required)')
  .option('-f, --force', 'do not ask for confirmation', false)
  .option('-v, --verbose', 'print the new VDI id', false)
  .action(act(async (name: string, o: Opts) => vdiRollback(name, { ...o, snapshot: o.snapshot as string | undefined, force: Boolean(o.force), verbose: Boolean(o.verbose) })));
conn(vdi.command('resize').description('grow a VDI (shrinking is refused)').argument('<vdiname>').argument('<size>'))
  .action(act(async (name: string, size: string, o: Opts) => vdiResize(name, sizeArg(size), o)));
conn(vdi.command('tree').description('show VDIs as family trees: snapshots, clones, (You Are Here)'))
  .action(act(async (o: Opts) => vdiTree(o)));
conn(vdi.command('graph').description('print the VDI family as a Graphviz dot graph'))
  .action(act(async (o: Opts) => vdiGraph(o)));
conn(vdi.command('setattr').description('set a VDI attribute (value from stdin when left out)').argument('<vdiname>').argument('<key>').argument('[value]'))
  .option('-d, --delete', 'delete the attribute', false)
  .option('-x, --exclusive', 'fail (exit 3) if the attribute exists', false)
  .action(act(async (name: string, key: string, value: string | undefined, o: Opts) =>
    vdiSetattr(name, key, value, { ...o, delete: Boolean(o.delete), exclusive: Boolean(o.exclusive) })));
conn(vdi.command('getattr').description('print a VDI attribute (exit 5 when missing)').argument('<vdiname>').argument('<key>'))
  .action(act(async (name: string, key: string, o: Opts) => vdiGetattr(name, key, o)));
const lock = vdi.command('lock').description('VDI locks: list, unlock');
conn(lock.command('list').description('list locked VDIs'), true).action(act(async (o: Opts) => vdiLockList(o)));
conn(lock.command('unlock').description('release a lock left by a dead client').argument('<vdiname>'))
  .option('-s, --snapshot <id|tag>', 'a snapshot instead of the working VDI')
  .action(act(async (name: string, o: Opts) => vdiLockUnlock(name, { ...o, snapshot: o.snapshot as string | undefined })));
conn(vdi.command('check').description("check that every object of an image is present on its nodes; repair where a replica is left").argument('<vdiname>'))
  .option('-s, --snapshot <id|tag>', 'check a snapshot')
  .option('-e, --exist', 'only report missing objects, repair nothing', false)
  .action(act(async (name: string, o: Opts) => vdiCheck(name, { ...o, snapshot: o.snapshot as string | undefined, exist: Boolean(o.exist) })));
conn(vdi.command('backup').description('write the blocks that changed between snapshots -F and -s (or all of -s) to stdout').argument('<vdiname>'))
  .option('-s, --snapshot <id|tag>', 'the newer snapshot (required)')
  .option('-F, --from <id|tag>', 'the older snapshot: a differential backup')
  .action(act(async (name: string, o: Opts) => vdiBackup(name, { ...o, snapshot: o.snapshot as string | undefined, from: o.from as string | undefined })));
conn(vdi.command('restore').description('apply a backup from stdin: onto snapshot -s of VDI (differential) or into a new VDI (full)').argument('<vdiname>'))
  .option('-s, --snapshot <id|tag>', 'the base snapshot the differential backup was taken from')
  .action(act(async (name: string, o: Opts) => vdiRestore(name, { ...o, snapshot: o.snapshot as string | undefined })));

program.command('completion').description('print a shell completion script: eval "$(collie completion bash)" (or zsh)')
  .argument('<shell>', 'bash or zsh')
  .action(act(async (shell: string) => {
    if (shell !== 'bash' && shell !== 'zsh') throw new CliError(`no completion for '${shell}': bash or zsh`, EXIT_USAGE);
    process.stdout.write(completionScript(program, shell));
  }));

for (const c of [program, cluster, node, vdi, ...cluster.commands, ...node.commands, ...vdi.commands, ...lock.commands, ...recover.commands, ...recovery.commands, ...md.commands]) {
  c.exitOverride((err) => {
    process.exit(err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.exitCode === 0 ? 0 : EXIT_USAGE);
  });
}

if (process.argv.length <= 2) {
  program.outputHelp();
  process.exit(EXIT_USAGE);
}
await program.parseAsync(process.argv);
