// Test helper: run a throwaway corosync (udpu, no crypto) from a temp dir, for the CPG tests.
//
// Only ONE corosync can run per network namespace: clients find it through libqb's abstract
// unix sockets (which are per network namespace), and it owns its totem port on the ring
// address. So a multi-node test starts one corosync per `netns` (each with its own address in
// `nodes`); two startCorosync() calls in the same namespace fail.
//
// corosync also locks a hard-coded pid file, /var/run/corosync.pid, shared by every network
// namespace of the machine. For a netns instance we therefore give corosync a private mount
// namespace with the temp dir bind-mounted over /run, so instances in different namespaces do not
// collide on it. In the root namespace the real /run is used: if corosync refuses to start
// because of a pid file whose process is gone, the stale file is removed and the start retried
// once.

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { sleep, exited, waitExit, which, pidRunning } from './sheep.js';

export interface CorosyncNode {
  addr: string;
  nodeid: number;
}

export interface CorosyncOptions {
  /** This node's ring0 address; with `nodes`, must be one of theirs. Default 127.0.0.1. */
  bindAddr?: string;
  /** This node's id when `nodes` is not given. Default 1. */
  nodeid?: number;
  /** The whole cluster. Default: this single node. */
  nodes?: CorosyncNode[];
  /** Run inside `ip netns exec NETNS` (the namespace must exist, with bindAddr configured). */
  netns?: string;
  /**
   * Totem token timeout in ms. Default 1000: a lost node is noticed within about two seconds. Long
   * runs on a loaded machine use corosync's own default (3000), or a late token splits the ring.
   */
  token?: number;
}

export interface Corosync {
  conf: string;
  dir: string;
  stop(): Promise<void>;
}

const PID_FILE = '/run/corosync.pid';
const READY_MS = 15_000;
const STOP_MS = 10_000;
const EXIT_ALREADY_RUNNING = 18; // corosync's exit status when the pid file is locked

/** corosync and corosync-cfgtool are installed and we are root (corosync needs it). */
export function corosyncAvailable(): boolean {
  return process.getuid?.() === 0 && which('corosync', ['/usr/sbin', '/sbin']) !== null && which('corosync-cfgtool', ['/usr/sbin', '/sbin']) !== null;
}

function renderConf(dir: string, nodes: CorosyncNode[], token = 1000): string {
  const nodelist = nodes
    .map((n) => `  node {\n    ring0_addr: ${n.addr}\n    nodeid: ${n.nodeid}\n  }\n`)
    .join('');
  return `# written by test/helpers/corosync.ts
totem {
  version: 2
  cluster_name: sheeptest
  transport: udpu
  crypto_cipher: none
  crypto_hash: none
  # short by default, so that a lost node is noticed within about two seconds
  token: ${token}
}

nodelist {
${nodelist}}

quorum {
  provider: corosync_votequorum
  expected_votes: ${nodes.length}
${nodes.length === 2 ? '  two_node: 1\n' : ''}}

logging {
  to_logfile: yes
  logfile: ${path.join(dir, 'corosync.log')}
  to_stderr: no
  to_syslog: no
  timestamp: on
}

system {
  state_dir: ${dir}
}
`;
}

function inNetns(netns: string | undefined, argv: string[]): [string, string[]] {
  return netns === undefined ? [argv[0], argv.slice(1)] : ['ip', ['netns', 'exec', netns, ...argv]];
}

function readPid(file: string): number {
  try {
    return Number.parseInt(fs.readFileSync(file, 'utf8').trim(), 10);
  } catch {
    return NaN;
  }
}

function logTail(dir: string, lines = 15): string {
  try {
    return fs.readFileSync(path.join(dir, 'corosync.log'), 'utf8').trim().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}


async function kill(p: ChildProcess): Promise<void> {
  if (exited(p)) return;
  p.kill('SIGTERM');
  if (!(await waitExit(p, STOP_MS))) {
    p.kill('SIGKILL');
    await waitExit(p, STOP_MS);
  }
}

export async function startCorosync(opts: CorosyncOptions = {}): Promise<Corosync> {
  if (!corosyncAvailable()) throw new Error('corosync is not installed (apt-get install corosync) or we are not root');
  const bindAddr = opts.bindAddr ?? (opts.nodes?.[0]?.addr ?? '127.0.0.1');
  const nodes = opts.nodes ?? [{ addr: bindAddr, nodeid: opts.nodeid ?? 1 }];
  if (!nodes.some((n) => n.addr === bindAddr)) {
    throw new Error(`startCorosync: bindAddr ${bindAddr} is not in nodes (${nodes.map((n) => n.addr).join(', ')})`);
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'corosync-test-'));
  const conf = path.join(dir, 'corosync.conf');
  fs.writeFileSync(conf, renderConf(dir, nodes, opts.token));
  let runDir: string | undefined;
  if (opts.netns !== undefined) {
    runDir = path.join(dir, 'run');
    fs.mkdirSync(runDir);
  }

  const launch = (): { proc: ChildProcess; output: () => string } => {
    // corosync -f stays in the foreground; `exec` chains keep the child pid = corosync's pid.
    const argv =
      runDir === undefined
        ? ['corosync', '-f', '-c', conf]
        : [
            'unshare', '--mount', '--propagation', 'private', '--',
            'sh', '-c', 'mount --bind "$1" /run && exec corosync -f -c "$2"', 'sh', runDir, conf,
          ];
    const [cmd, args] = inNetns(opts.netns, argv);
    const proc = spawn(cmd, args, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    const keep = (d: Buffer): void => {
      out = (out + d.toString()).slice(-8192);
    };
    proc.stdout?.on('data', keep);
    proc.stderr?.on('data', keep);
    proc.on('error', (err) => keep(Buffer.from(`spawn ${cmd}: ${err.message}\n`)));
    return { proc, output: () => out };
  };

  const cleanupDir = (): void => fs.rmSync(dir, { recursive: true, force: true });

  for (let attempt = 0; ; attempt++) {
    const { proc, output } = launch();
    const deadline = Date.now() + READY_MS;
    // Ready when corosync-cfgtool gets an answer AND the pid file names our process: another
    // corosync already running in this namespace would answer cfgtool too, while ours is still
    // on its way to exiting with "already running".
    const pidFile = runDir === undefined ? PID_FILE : path.join(runDir, 'corosync.pid');
    let ready = false;
    while (Date.now() < deadline && !exited(proc)) {
      const [cmd, args] = inNetns(opts.netns, ['corosync-cfgtool', '-s']);
      const r = spawnSync(cmd, args, { stdio: 'ignore', timeout: 5000 });
      if (r.status === 0 && !exited(proc) && readPid(pidFile) === proc.pid) {
        ready = true;
        break;
      }
      await sleep(100);
    }
    if (ready) {
      let stopped = false;
      // If the test process dies without calling stop(), do not leave corosync running.
      const onExit = (): void => {
        if (!exited(proc)) proc.kill('SIGKILL');
      };
      process.once('exit', onExit);
      return {
        conf,
        dir,
        async stop(): Promise<void> {
          if (stopped) return;
          stopped = true;
          process.removeListener('exit', onExit);
          await kill(proc);
          cleanupDir();
        },
      };
    }
    // Not ready: find out why.
    await waitExit(proc, 200);
    if (exited(proc) && proc.exitCode === EXIT_ALREADY_RUNNING && runDir === undefined && attempt === 0) {
      const pid = readPid(PID_FILE);
      if (Number.isFinite(pid) && !pidRunning(pid)) {
        fs.rmSync(PID_FILE, { force: true }); // stale: its corosync is gone
        continue;
      }
      cleanupDir();
      throw new Error(
        `corosync refuses to start: another corosync (pid ${Number.isFinite(pid) ? pid : '?'}, see ${PID_FILE}) is ` +
          'already running on this machine; only one corosync can run per network namespace',
      );
    }
    const why = exited(proc)
      ? `corosync exited (${proc.exitCode ?? proc.signalCode})`
      : `corosync-cfgtool -s did not succeed within ${READY_MS} ms`;
    await kill(proc);
    const log = logTail(dir);
    cleanupDir();
    throw new Error(`${why}\n${output()}\n--- corosync.log ---\n${log}`);
  }
}
