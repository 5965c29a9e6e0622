#!/usr/bin/env node
// sheep: the storage daemon. Parses options, takes the store, joins the cluster, serves clients.

process.env.UV_THREADPOOL_SIZE ??= '16'; // object I/O runs on libuv's pool: 4 threads starve it

import fs from 'node:fs/promises';
import { constants as fsc } from 'node:fs';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { Command, InvalidArgumentError, Option } from 'commander';
import { createLogger, LOG_LEVELS, type Logger } from './log.js';
import { ObjectStore } from './store.js';
import { System } from './system.js';
import { Listener } from './listener.js';
import { createDriver } from './cluster/local.js';
import { processAlive as alive } from './cluster/local-sequencer.js';
import { fnv1a64 } from '../lib/fnv.js';
import { NbdServer, parseCidrList, type NbdConfig } from './nbd-server.js';
import { parseThrottle, type Throttle } from './recovery.js';
import type { GroupDriver, NodeInfo } from './cluster/driver.js';

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

function parseArgs(argv: string[]): { dir: string; opts: SheepOptions } {
  const program = new Command('sheep')
    .description('Sheepdog storage daemon: stores objects in DIR and serves the sheepdog protocol (QEMU, collie)')
    .version(`Sheepdog daemon version ${VERSION}`, '-v, --version', 'show the version')
    .argument('[DIR]', 'store directory (needs user xattrs)', '/var/lib/sheepdog')
    .option('-p, --port <port>', 'TCP port to listen on', intArg(1, 65535), 7000)
    .option('-b, --bindaddr <addr>', 'IP address to listen on (default: all)')
    .option('-y, --myaddr <addr>', 'address advertised to other sheep (default: bindaddr or 127.0.0.1)')
    .option('--socket <path>', 'also listen on this Unix socket (for sheepdog+unix:// URIs)')
    .option('-f, --foreground', 'stay in the foreground and log to stderr too', false)
    .option('-P, --pidfile <file>', 'write the daemon pid to this file')
    .addOption(new Option('-l, --log-level <level>', 'log level').choices([...LOG_LEVELS]).default('info'))
    .option('-c, --cluster <driver>', 'cluster driver: local[:DIR] (sheep on this machine sharing DIR, default /tmp/sheepdog-local) or corosync[:GROUP]', 'local')
    .option('-z, --zone <zone>', 'zone id: replicas go to distinct zones (default: derived from the address, so one zone per machine)', intArg(0, 2 ** 32 - 1))
    .option('-V, --vnodes <n>', 'virtual nodes on the placement ring', intArg(1, 65535), 64)
    .option('-R, --recovery <max=N,interval=MS>', 'throttle recovery: at most N objects copied per MS milliseconds (default: no limit)', recoveryArg, { max: 0, interval: 0 })
    .option('--nbd [[host:]port]', 'serve VDIs over NBD (default port 10809): export NAME, or NAME@TAG / NAME@SNAPID read-only')
    .option('--nbd-socket <path>', 'serve NBD on this Unix socket too')
    .option('--nbd-allow <cidr,...>', 'only NBD clients from these networks (repeatable)', collect, [])
    .option('--nbd-deny <cidr,...>', 'refuse NBD clients from these networks (repeatable; checked first)', collect, [])
    .option('--nbd-readonly <vdi,...>', 'export these VDIs read-only (repeatable)', collect, [])
    .showHelpAfterError()
    .exitOverride((err) => process.exit(err.exitCode === 0 ? 0 : 64));
  program.parse(argv, { from: 'user' });
  return { dir: path.resolve(program.args[0] ?? '/var/lib/sheepdog'), opts: program.opts<SheepOptions>() };
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

async function run(dir: string, o: SheepOptions, ready: (err?: string) => void): Promise<void> {
  await fs.mkdir(dir, { recursive: true });
  await ObjectStore.checkXattrSupport(dir);
  const lockFile = await takeStoreLock(dir);
  const log: Logger = createLogger(dir, o.logLevel, o.foreground);
  const host = o.myaddr ?? (o.bindaddr && o.bindaddr !== '0.0.0.0' ? o.bindaddr : '127.0.0.1');
  const parts: { listener?: Listener; store?: ObjectStore; nbd?: NbdServer; group?: GroupDriver } = {};
  const nbdCfg: NbdConfig = {
    allow: parseCidrList(o.nbdAllow),
    deny: parseCidrList(o.nbdDeny),
    readonly: new Set(o.nbdReadonly.flatMap((s) => s.split(',')).map((s) => s.trim()).filter(Boolean)),
  };
  const nbdAddr = o.nbd !== undefined ? nbdAddress(o.nbd, o.bindaddr) : null;
  let stopping = false;
  const stop = async (why: string, code = 0) => {
    if (stopping) return;
    stopping = true;
    log.info({ why }, 'sheep stopping');
    try {
      await parts.nbd?.close();
      await parts.group?.stop();
      await parts.listener?.close();
      await parts.store?.flushAll();
      await parts.store?.close();
    } catch (e) {
      log.error({ err: e }, 'error while stopping');
      code = code || 1;
    }
    await fs.rm(lockFile, { force: true });
    if (o.pidfile) await fs.rm(o.pidfile, { force: true });
    log.flush();
    setTimeout(() => process.exit(code), 50);
  };
  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGINT', () => void stop('SIGINT'));
  process.on('uncaughtException', (e) => {
    log.fatal({ err: e }, 'uncaught exception');
    void stop('uncaught exception', 1);
  });

  const store = await ObjectStore.open(dir, log);
  parts.store = store;
  const port = o.port;
  const me: NodeInfo = { nid: `${host}:${port}`, host, port, zone: o.zone ?? defaultZone(host), vnodes: o.vnodes };
  const group = createDriver(o.cluster);
  parts.group = group;
  const sys = new System(dir, me, store, group, log);
  if (o.recovery.max) sys.recovery.setThrottle(o.recovery);
  group.onLost = (why) => {
    // without the group this node can no longer agree with the others: stop rather than diverge
    log.fatal({ why }, 'lost the cluster driver');
    void stop('cluster driver lost', 1);
  };
  sys.onShutdown = () => void stop('cluster shutdown');
  await sys.start();
  const l = new Listener(sys, log);
  parts.listener = l;
  const bound = await l.listenTcp(o.bindaddr, port);
  if (o.socket) await l.listenUnix(o.socket);
  if (nbdAddr || o.nbdSocket) {
    const nbd = new NbdServer(sys, nbdCfg, log);
    parts.nbd = nbd;
    if (nbdAddr) await nbd.listenTcp(nbdAddr.host, nbdAddr.port);
    if (o.nbdSocket) await nbd.listenUnix(o.nbdSocket);
  }
  if (o.pidfile) await fs.writeFile(o.pidfile, `${process.pid}\n`);
  log.info({ dir, port: bound, driver: o.cluster, status: sys.status, epoch: sys.epoch }, 'sheep started');
  ready();
}

async function main(): Promise<void> {
  const { dir, opts } = parseArgs(process.argv.slice(2));
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
    await run(dir, opts, report);
  } catch (e) {
    const msg = (e as Error).message;
    process.stderr.write(`sheep: ${msg}\n`);
    report(msg);
    process.exit(1);
  }
}

void main();
