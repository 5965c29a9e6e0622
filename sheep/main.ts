#!/usr/bin/env node
// sheep: the storage daemon. Parses options, takes the store, joins the cluster, serves clients.

process.env.UV_THREADPOOL_SIZE ??= '16'; // object I/O runs on libuv's pool: 4 threads starve it

import fs from 'node:fs/promises';
import { constants as fsc } from 'node:fs';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { Command, InvalidArgumentError, Option } from 'commander';
import { createLogger, LOG_LEVELS, type Logger } from './util/log.js';
import { ObjectStore } from './store/store.js';
import { System } from './cluster/system.js';
import { Listener } from './frontend/listener.js';
import { createDriver } from './cluster/drivers.js';
import { processAlive as alive } from './cluster/local-sequencer.js';
import { fnv1a64 } from '../lib/fnv.js';
import { HttpServer } from './frontend/http-server.js';
import { metrics } from './util/metrics.js';
import { NbdServer, type NbdConfig } from './frontend/nbd-server.js';
import { parseCidrList, AddressFilter, ByteBudget, ConnectionBudget, RefusalLog } from './frontend/admission.js';
import { readKeyFile, keyId } from '../lib/auth.js';
import { parseSize } from '../lib/units.js';
import { raiseFdLimit } from './util/limits.js';
import { parseThrottle } from './replication/recovery.js';
import type { Throttle } from '../lib/admin.js';
import type { GroupDriver } from './cluster/driver.js';
import { DEFAULT_VNODES, MAX_VNODES, type NodeInfo } from '../lib/node.js';

export const VERSION = '0.1.0';

interface SheepOptions {
  port: number;
  bindaddr?: string;
  myaddr?: string;
  socket?: string;
  foreground: boolean;
  pidfile?: string;
  logLevel: string;
  cluster: string;
  zone?: number;
  vnodes: number;
  recovery: Throttle;
  nbd?: string | true;
  nbdSocket?: string;
  nbdAllow: string[];
  nbdDeny: string[];
  nbdReadonly: string[];
  nbdTls?: string;
  nbdTlsCert?: string;
  nbdTlsKey?: string;
  nbdTlsCa?: string;
  nbdTlsPsk?: string;
  clusterKey?: string;
  peerTls: boolean;
  clientAllow: string[];
  clientDeny: string[];
  readonlyVdi: string[];
  maxConnections?: number;
  bufferLimit: number;
  socketGroup?: string;
  /** undefined: the default address; false: --no-http */
  http?: string | false;
  reservedSpace?: number;
  orphanGrace: number;
}

function sizeOpt(v: string): number {
  const n = parseSize(v);
  if (n === null || n < 1024 * 1024) throw new InvalidArgumentError('must be a size of at least 1M (K, M, G suffixes)');
  return n;
}

/** --reserved-space when not given (a tenth of a smaller filesystem). */
const DEFAULT_RESERVE = 256 * 1024 * 1024;
/** How often the store's disk is probed (write, sync, read back). */
const DISK_PROBE_MS = 5000;

/** A size that may be 0 (K, M, G suffixes). */
function sizeOrZero(v: string): number {
  const n = v.trim() === '0' ? 0 : parseSize(v);
  if (n === null) throw new InvalidArgumentError('must be a size such as 256M or 1G (K, M, G suffixes), or 0');
  return n;
}

function collect(v: string, prev: string[]): string[] {
  return [...prev, v];
}

/** "--nbd" alone, "--nbd 10810", "--nbd 127.0.0.1:10810", "--nbd [::1]:10810". */
function nbdAddress(v: string | true, bindaddr: string | undefined): { host: string | undefined; port: number } {
  if (v === true) return { host: bindaddr, port: 10809 };
  const m = /^(\d+)$/.exec(v) ?? /^\[(.+)\]:(\d+)$/.exec(v) ?? /^([^:]+):(\d+)$/.exec(v);
  if (!m) throw new Error(`--nbd: cannot parse '${v}' (use [host:]port)`);
  const [host, port] = m.length === 2 ? [bindaddr, Number(m[1])] : [m[1], Number(m[2])];
  if (port < 1 || port > 65535) throw new Error(`--nbd: bad port in '${v}'`);
  return { host, port };
}

/**
 * --http: "port", "host:port" or "[v6]:port"; without it 127.0.0.1 and sheep's port + 1000 (so sheep
 * sharing a machine do not collide). `explicit` says whether the operator chose it (then a port that
 * cannot be bound stops sheep; the default only warns).
 */
function httpAddress(v: string | boolean | undefined, sheepPort: number): { host: string; port: number; explicit: boolean } | null {
  if (v === false) return null;
  if (v === undefined || v === true) return { host: '127.0.0.1', port: sheepPort + 1000, explicit: false };
  const m = /^(\d+)$/.exec(v) ?? /^\[(.+)\]:(\d+)$/.exec(v) ?? /^([^:]+):(\d+)$/.exec(v);
  if (!m) throw new Error(`--http: cannot parse '${v}' (use [host:]port)`);
  const [host, port] = m.length === 2 ? ['127.0.0.1', Number(m[1])] : [m[1], Number(m[2])];
  if (port < 1 || port > 65535) throw new Error(`--http: bad port in '${v}'`);
  return { host, port, explicit: true };
}

/**
 * Without --zone a node's zone is its address (IPv4 as a little-endian u32, as Sheepdog does), so
 * sheep sharing a machine share a failure domain and replicas go to different machines.
 */
function defaultZone(host: string): number {
  const m = /^(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(host);
  if (m) return (Number(m[1]) | (Number(m[2]) << 8) | (Number(m[3]) << 16) | (Number(m[4]) << 24)) >>> 0;
  return Number(fnv1a64(host) & 0xffffffffn);
}

function intArg(min: number, max: number) {
  return (v: string): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min || n > max) throw new InvalidArgumentError(`must be an integer ${min}..${max}`);
    return n;
  };
}

/** -R max=N,interval=MS: at most N objects recovered per MS milliseconds. */
function recoveryArg(v: string): Throttle {
  const t: Partial<Record<'max' | 'interval', string>> = {};
  for (const part of v.split(',')) {
    const m = /^(max|interval)=(\d+)$/.exec(part.trim());
    if (!m) throw new InvalidArgumentError(`cannot parse '${part}' (use max=N,interval=MS, e.g. max=50,interval=1000)`);
    t[m[1] as 'max' | 'interval'] = m[2];
  }
  try {
    return parseThrottle({ max: Number(t.max ?? 0), interval: Number(t.interval ?? 0) });
  } catch (e) {
    throw new InvalidArgumentError((e as Error).message);
  }
}

/**
 * DIR, or DIR,DISK1,DISK2,... (the original's multi-disk syntax): the metadata directory and the
 * disks objects live on, as absolute paths. A disk given twice, or the same as DIR, is refused.
 */
function parseStorePaths(arg: string): { dir: string; disks: string[] } {
  const parts = arg.split(',').map((p) => p.trim());
  if (parts.some((p) => !p)) throw new Error(`cannot parse '${arg}': an empty path (use DIR or DIR,DISK1,DISK2,...)`);
  const [dir, ...disks] = parts.map((p) => path.resolve(p));
  const seen = new Set([dir]);
  for (const d of disks) {
    if (seen.has(d)) throw new Error(`${d} is given twice (DIR and each disk must be different paths)`);
    seen.add(d);
  }
  return { dir, disks };
}

function parseArgs(argv: string[]): { dir: string; disks: string[]; opts: SheepOptions } {
  const program = new Command('sheep')
    .description('Sheepdog storage daemon: stores objects in DIR and serves the sheepdog protocol (QEMU, collie). ' +
      'It goes to the background once it serves (the command returns then; -f keeps it in the foreground) ' +
      'and logs JSON lines to DIR/sheep.log (and to stderr with -f).')
    .version(`Sheepdog daemon version ${VERSION}`, '-v, --version', 'show the version')
    .argument('[DIR[,DISK...]]', 'store directory (needs user xattrs); with disks after it (DIR,DISK1,DISK2,...) DIR keeps the metadata and objects are spread over the disks by size (multi-disk: collie node md)', '/var/lib/sheepdog')
    .option('-p, --port <port>', 'TCP port to listen on', intArg(1, 65535), 7000)
    .option('-b, --bindaddr <addr>', 'IP address to listen on (default: all)')
    .option('-y, --myaddr <addr>', 'address advertised to other sheep (default: bindaddr or 127.0.0.1)')
    .option('--socket <path>', 'also listen on this Unix socket (for sheepdog+unix:// URIs)')
    .option('-f, --foreground', 'stay in the foreground and log to stderr too', false)
    .option('-P, --pidfile <file>', 'write the daemon pid to this file')
    .addOption(new Option('-l, --log-level <level>', 'log level').choices([...LOG_LEVELS]).default('info'))
    .option('-c, --cluster <driver>', 'cluster driver: local[:DIR] (sheep on this machine sharing DIR, default /run/sheepdog/local for root, else $XDG_RUNTIME_DIR/sheepdog-local), corosync[:GROUP] (a rack: corosync\'s totem ring) or zookeeper:HOST:PORT[,HOST:PORT...][/CHROOT][,timeout=SECONDS] (past one ring: a ZooKeeper ensemble; base znode /sheepdog, session timeout 10 s)', 'local')
    .option('-z, --zone <zone>', 'zone id: replicas go to distinct zones (default: derived from the address, so one zone per machine)', intArg(0, 2 ** 32 - 1))
    .option('-V, --vnodes <n>', 'virtual nodes on the placement ring', intArg(1, MAX_VNODES), DEFAULT_VNODES)
    .option('-R, --recovery <max=N,interval=MS>', 'throttle recovery: at most N objects copied per MS milliseconds', recoveryArg, { max: 0, interval: 0 })
    .option('--nbd [[host:]port]', 'serve VDIs over NBD (default port 10809): export NAME, or NAME@TAG / NAME@SNAPID read-only')
    .option('--nbd-socket <path>', 'serve NBD on this Unix socket too')
    .option('--nbd-allow <cidr,...>', 'only NBD clients from these networks (repeatable)', collect, [])
    .option('--nbd-deny <cidr,...>', 'refuse NBD clients from these networks (repeatable; checked first)', collect, [])
    .option('--nbd-readonly <vdi,...>', 'export these VDIs read-only (repeatable; read-only on port 7000 too, as --readonly-vdi)', collect, [])
    .option('--nbd-tls <off|on|require>', 'NBD TLS (STARTTLS): off, on (optional) or require (default: on when credentials are given, else off)')
    .option('--nbd-tls-cert <file>', 'NBD TLS server certificate (PEM, with --nbd-tls-key)')
    .option('--nbd-tls-key <file>', 'NBD TLS server private key (PEM)')
    .option('--nbd-tls-ca <file>', 'NBD clients must present a certificate signed by this CA (PEM)')
    .option('--nbd-tls-psk <file>', 'NBD TLS pre-shared keys, username:hexkey lines (psktool format)')
    .option('--cluster-key <file>', 'cluster key (collie cluster keygen): admin and peer requests need a connection that proved it, and sheep without it cannot join; without a key anyone who reaches the ports can administer the cluster')
    .option('--peer-tls', 'encrypt connections to other sheep: TLS 1.3 keyed from the cluster key (needs --cluster-key); every sheep accepts both', false)
    .option('--client-allow <cidr,...>', 'only clients from these networks on port 7000 (repeatable)', collect, [])
    .option('--client-deny <cidr,...>', 'refuse clients from these networks on port 7000 (repeatable; checked first)', collect, [])
    .option('--readonly-vdi <vdi,...>', 'unauthenticated clients (QEMU, NBD) may only read these VDIs (repeatable)', collect, [])
    .option('--max-connections <n>', 'open connections on all ports together (default: the descriptor limit less a reserve for object files and peers); the last 64 are kept for collie and peers', intArg(16, 1 << 20))
    .option('--buffer-limit <size>', 'request bytes held in memory at once, all connections together; a connection waits when it is reached', sizeOpt, 256 * 1024 * 1024)
    .option('--reserved-space <size>', 'free space the store keeps: new objects and recovery copies stop there, so deletes, metadata and recovery bookkeeping still work on a full disk (default: 256M, or a tenth of a smaller filesystem; 0: none)', sizeOrZero)
    .option('--orphan-grace <seconds>', 'an unmapped data object of a live VDI (a write that failed halfway, a client that died between create and map) is reclaimed once this old', intArg(1, 7 * 86400), 600)
    .option('--socket-group <group>', 'group that owns the Unix sockets (mode 0660)')
    .option('--http <[host:]port>', 'serve Prometheus metrics (/metrics), a JSON API (/api/cluster, /api/vdis) and the live monitor page (/) over HTTP, read-only (default: 127.0.0.1, port 8000 for a sheep on 7000: its port + 1000)')
    .option('--no-http', 'no HTTP endpoint')
    .showHelpAfterError()
    .exitOverride((err) => process.exit(err.exitCode === 0 ? 0 : 64));
  // defaults in words, not as JSON ({"max":0,"interval":0}, [], 268435456)
  for (const opt of program.options) {
    const d: unknown = opt.defaultValue;
    if (Array.isArray(d)) opt.defaultValueDescription = 'none';
    else if (d === false) opt.defaultValueDescription = 'off';
    else if (opt.long === '--recovery') opt.defaultValueDescription = 'no limit';
    else if (opt.long === '--buffer-limit') opt.defaultValueDescription = '256M';
  }
  program.parse(argv, { from: 'user' });
  let paths: { dir: string; disks: string[] };
  try {
    paths = parseStorePaths(program.args[0] ?? '/var/lib/sheepdog');
  } catch (e) {
    process.stderr.write(`sheep: ${(e as Error).message}\n`);
    process.exit(64);
  }
  return { ...paths, opts: program.opts<SheepOptions>() };
}

/** One daemon per store: DIR/lock holds the owner's pid; a lock whose pid is gone is stale. */
async function takeStoreLock(dir: string): Promise<string> {
  const file = path.join(dir, 'lock');
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fh = await fs.open(file, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL, 0o644);
      await fh.writeFile(`${process.pid}\n`);
      await fh.close();
      return file;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      const pid = Number((await fs.readFile(file, 'utf8').catch(() => '')).trim());
      if (pid && pid !== process.pid && alive(pid)) {
        throw new Error(`${dir} is already used by a running sheep (pid ${pid})`);
      }
      await fs.rm(file, { force: true });
    }
  }
  throw new Error(`cannot take the store lock ${file}`);
}

/** Pseudo filesystems: a store there is a mistake (and some of them make mkdir spin). */
const PSEUDO_FS = ['/proc', '/sys', '/dev'];

/** DIR exists (or is created) as a directory this user can write, mode 0700; otherwise a sentence. */
async function prepareStoreDir(dir: string): Promise<void> {
  // the nearest existing ancestor tells where DIR really lives (symlinks resolved)
  let probe = dir;
  for (;;) {
    try {
      probe = await fs.realpath(probe);
      break;
    } catch {
      const up = path.dirname(probe);
      if (up === probe) break;
      probe = up;
    }
  }
  if (PSEUDO_FS.some((p) => probe === p || probe.startsWith(`${p}/`))) {
    throw new Error(`${dir} is on ${probe.split('/').slice(0, 2).join('/')}, a pseudo filesystem: choose a directory on a disk`);
  }
  try {
    await fs.mkdir(dir, { recursive: true, mode: 0o700 });
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EEXIST' || code === 'ENOTDIR') throw new Error(`${dir} is not a directory`);
    if (code === 'EACCES' || code === 'EPERM') throw new Error(`cannot create ${dir}: permission denied (run sheep as a user that may write there, or create it for that user)`);
    throw new Error(`cannot create ${dir}: ${code ?? (e as Error).message}`);
  }
  const st = await fs.stat(dir);
  if (!st.isDirectory()) throw new Error(`${dir} is not a directory`);
  try {
    await fs.access(dir, fsc.W_OK | fsc.X_OK);
  } catch {
    throw new Error(`${dir} is not writable by this user (uid ${process.getuid?.()}): give it to the user sheep runs as`);
  }
  if (st.mode & 0o077) await fs.chmod(dir, 0o700).catch(() => undefined);
}

/** Gives a socket file to a group (a name from /etc/group, or a number). */
async function chgrp(file: string, group: string): Promise<void> {
  let gid = /^\d+$/.test(group) ? Number(group) : NaN;
  if (Number.isNaN(gid)) {
    const line = (await fs.readFile('/etc/group', 'utf8')).split('\n').find((l) => l.split(':')[0] === group);
    if (!line) throw new Error(`--socket-group: no group named '${group}'`);
    gid = Number(line.split(':')[2]);
  }
  await fs.chown(file, -1, gid);
}

async function run(dir: string, givenDisks: string[], o: SheepOptions, ready: (err?: string) => void): Promise<void> {
  // least privilege: the store, its log, config and key material are the owner's alone (0700/0600)
  process.umask(0o077);
  await prepareStoreDir(dir);
  await ObjectStore.checkXattrSupport(dir);
  let disks = givenDisks;
  const lockFile = await takeStoreLock(dir);
  const { log, reopen: reopenLog } = createLogger(dir, o.logLevel, o.foreground);
  // a disk is one sheep's: its own lock file (the pid), as DIR has. A disk that cannot be used (gone,
  // read-only, no xattrs) is left out, as the original does with a broken path; its objects are
  // recovered from the other nodes
  const diskLocks: string[] = [];
  const usable: string[] = [];
  for (const d of disks) {
    try {
      await prepareStoreDir(d);
      await ObjectStore.checkXattrSupport(d);
    } catch (e) {
      log.error({ disk: d, err: (e as Error).message }, 'disk cannot be used: left out');
      continue;
    }
    try {
      diskLocks.push(await takeStoreLock(d));
      usable.push(d);
    } catch (e) {
      for (const f of [lockFile, ...diskLocks]) await fs.rm(f, { force: true });
      throw e;
    }
  }
  if (disks.length && !usable.length) {
    for (const f of [lockFile, ...diskLocks]) await fs.rm(f, { force: true });
    throw new Error(`none of the disks can be used (${disks.join(', ')})`);
  }
  disks = usable;
  const host = o.myaddr ?? (o.bindaddr && o.bindaddr !== '0.0.0.0' ? o.bindaddr : '127.0.0.1');
  const parts: { listener?: Listener; store?: ObjectStore; nbd?: NbdServer; http?: HttpServer; group?: GroupDriver } = {};
  const names = (l: string[]) => l.flatMap((s) => s.split(',')).map((s) => s.trim()).filter(Boolean);
  const readonlyVdis = new Set([...names(o.nbdReadonly), ...names(o.readonlyVdi)]);
  const nbdCfg: NbdConfig = {
    allow: parseCidrList(o.nbdAllow),
    deny: parseCidrList(o.nbdDeny),
    readonly: readonlyVdis,
    tls: { mode: o.nbdTls, cert: o.nbdTlsCert, key: o.nbdTlsKey, ca: o.nbdTlsCa, psk: o.nbdTlsPsk },
  };
  const key = o.clusterKey ? readKeyFile(o.clusterKey) : null;
  if (o.peerTls && !key) throw new Error('--peer-tls needs --cluster-key: the TLS key is derived from the cluster key');
  if (key) log.info({ keyId: keyId(key) }, 'cluster key loaded: admin and peer requests need authentication');
  else log.warn('no cluster key (--cluster-key): anyone who reaches this sheep\'s ports can administer the cluster and its data');
  const fdLimit = raiseFdLimit(log);
  // object files (the store keeps up to 512 open), peers, logs and the cluster driver need descriptors too
  const maxConns = o.maxConnections ?? Math.max(64, fdLimit - 512 - 256);
  const RESERVE = 64;
  const admission = {
    conns: new ConnectionBudget(maxConns, Math.min(RESERVE, maxConns >> 2)),
    refusals: new RefusalLog(log),
    socketMode: 0o660,
  };
  const budget = new ByteBudget(o.bufferLimit, Math.min(64 * 1024 * 1024, o.bufferLimit >> 2));
  const clientFilter = new AddressFilter(parseCidrList(o.clientAllow), parseCidrList(o.clientDeny));
  const nbdAddr = o.nbd !== undefined ? nbdAddress(o.nbd, o.bindaddr) : null;
  const httpAddr = httpAddress(o.http, o.port);
  let stopping = false;
  const stop = async (why: string, code = 0) => {
    if (stopping) return;
    stopping = true;
    log.info({ why }, 'sheep stopping');
    try {
      await parts.nbd?.close();
      await parts.http?.close();
      await parts.group?.stop();
      await parts.listener?.close();
      await parts.store?.flushAll();
      await parts.store?.close();
    } catch (e) {
      log.error({ err: e }, 'error while stopping');
      code = code || 1;
    }
    for (const f of [lockFile, ...diskLocks]) await fs.rm(f, { force: true });
    if (o.pidfile) await fs.rm(o.pidfile, { force: true });
    log.flush();
    setTimeout(() => process.exit(code), 50);
  };
  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGINT', () => void stop('SIGINT'));
  // logrotate: the old file was renamed; start writing a new DIR/sheep.log
  process.on('SIGHUP', () => reopenLog());
  process.on('uncaughtException', (e) => {
    log.fatal({ err: e }, 'uncaught exception');
    void stop('uncaught exception', 1);
  });

  const store = await ObjectStore.open(dir, log, disks);
  if (disks.length) {
    // each disk keeps --reserved-space free (default: 256M, or a tenth of a smaller disk)
    store.setReserve(o.reservedSpace);
    await store.refreshSpace();
    log.info({ disks, reserve: o.reservedSpace ?? 'per disk' }, 'multi-disk store: objects spread over the disks by size');
  } else {
    const fsBytes = await fs.statfs(dir).then((st) => st.blocks * st.bsize);
    const reserve = o.reservedSpace ?? Math.min(DEFAULT_RESERVE, Math.floor(fsBytes / 10));
    store.setReserve(reserve);
    await store.refreshSpace();
    log.info({ reserve, filesystem: fsBytes }, 'free space kept for deletes and metadata (--reserved-space)');
  }
  parts.store = store;
  const port = o.port;
  const me: NodeInfo = { nid: `${host}:${port}`, host, port, zone: o.zone ?? defaultZone(host), vnodes: o.vnodes };
  const group = createDriver(o.cluster);
  parts.group = group;
  const sys = new System(dir, me, store, group, log, key, o.peerTls, o.orphanGrace * 1000);
  if (o.recovery.max) sys.recovery.setThrottle(o.recovery);
  group.onLost = (why) => {
    // without the group this node can no longer agree with the others: stop rather than diverge
    log.fatal({ why }, 'lost the cluster driver');
    void stop('cluster driver lost', 1);
  };
  sys.onShutdown = () => void stop('cluster shutdown');
  sys.onKill = () => void stop('collie node kill');
  await sys.start();
  // copies nothing maps (deletes this node missed, failed creates) are reclaimed after joining and
  // then every half grace period; deletes and finished recoveries sweep at once
  sys.sweepSoon();
  setInterval(() => sys.sweepSoon(), Math.max(1000, (o.orphanGrace * 1000) / 2)).unref();
  // a disk that fails under no load is found by the probe (then placement leaves this node out)
  setInterval(() => void store.probe(), DISK_PROBE_MS).unref();
  const l = new Listener(sys, log, {
    access: { key, readonlyVdis },
    admission: { ...admission, filter: clientFilter, useReserve: true },
    budget,
  });
  parts.listener = l;
  // the Unix socket first: tools take the open TCP port as the sign that sheep serves
  if (o.socket) {
    await l.listenUnix(o.socket);
    if (o.socketGroup) await chgrp(o.socket, o.socketGroup);
  }
  if (nbdAddr || o.nbdSocket) {
    const nbd = new NbdServer(sys, nbdCfg, log, { ...admission, filter: null, useReserve: false }, budget);
    parts.nbd = nbd;
    if (o.nbdSocket) {
      await nbd.listenUnix(o.nbdSocket);
      if (o.socketGroup) await chgrp(o.nbdSocket, o.socketGroup);
    }
    if (nbdAddr) await nbd.listenTcp(nbdAddr.host, nbdAddr.port);
  }
  metrics.bind({
    epoch: () => sys.epoch,
    status: () => sys.status,
    members: () => sys.members.length,
    disk: async () => {
      const sp = await store.refreshSpace();
      return { size: sp.size, free: sp.avail, reserve: sp.reserve, full: sp.full, failed: !!store.failed };
    },
    stored: () => store.usage(5000),
    recovery: () => sys.recovery.status,
  });
  if (httpAddr && !httpAddr.explicit && httpAddr.port > 65535) {
    log.warn({ port: httpAddr.port }, 'no HTTP endpoint (metrics, monitor): sheep\'s port + 1000 is no TCP port; choose one with --http [host:]port');
  } else if (httpAddr) {
    const h = new HttpServer(sys, key, log, { ...admission, filter: null, useReserve: false });
    try {
      await h.listen(httpAddr.host, httpAddr.port);
      parts.http = h;
    } catch (e) {
      const why = `HTTP on ${httpAddr.host}:${httpAddr.port}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`;
      if (httpAddr.explicit) throw new Error(`cannot serve ${why}`);
      log.warn({ why }, 'no HTTP endpoint (metrics, monitor): the default port is taken; choose one with --http [host:]port');
    }
  }
  const bound = await l.listenTcp(o.bindaddr, port);
  if (o.pidfile) await fs.writeFile(o.pidfile, `${process.pid}\n`);
  log.info({ dir, ...(disks.length ? { disks } : {}), port: bound, driver: o.cluster, status: sys.status, epoch: sys.epoch }, 'sheep started');
  ready();
}

async function main(): Promise<void> {
  const { dir, disks, opts } = parseArgs(process.argv.slice(2));
  const daemonChild = process.env.SHEEP_DAEMON_CHILD === '1';
  if (!opts.foreground && !daemonChild) {
    // daemonize: start a detached copy of ourselves and wait until it serves (or says why not)
    const child = spawn(process.execPath, [...process.execArgv, process.argv[1], ...process.argv.slice(2)], {
      detached: true,
      stdio: ['ignore', 'ignore', 'ignore', 'ipc'],
      env: { ...process.env, SHEEP_DAEMON_CHILD: '1' },
    });
    const verdict = await new Promise<string | null>((resolve) => {
      child.once('message', (m: { error?: string }) => resolve(m?.error ?? null));
      child.once('exit', (code) => resolve(`sheep exited during start-up (code ${code})`));
    });
    if (verdict) {
      process.stderr.write(`sheep: ${verdict}\n`);
      process.exit(1);
    }
    child.disconnect();
    child.unref();
    return;
  }
  const report = (err?: string) => {
    if (daemonChild && process.send) {
      process.send(err ? { error: err } : { ok: true });
      if (!err) process.disconnect?.();
    }
  };
  try {
    await run(dir, disks, opts, report);
  } catch (e) {
    const msg = (e as Error).message;
    process.stderr.write(`sheep: ${msg}\n`);
    report(msg);
    process.exit(1);
  }
}

void main();
