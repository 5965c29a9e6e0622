// Test helper: run a throwaway ZooKeeper ensemble on 127.0.0.1, every server a child process of
// the test, with its config, data and log in its own temp dir (nothing under /etc or /var/log).
//
// It uses Debian 12's `zookeeper` package (3.8.0; apt-get install zookeeper): the server classes
// in /usr/share/java/zookeeper.jar (its manifest's Class-Path names the other jars it needs), and
// log4j 1.2 through slf4j-log4j12 for the logs (both are dependencies of libzookeeper-java).
//
// Each server: java -cp zookeeper.jar:slf4j-log4j12.jar:log4j-1.2.jar ... QuorumPeerMain zoo.cfg.
// A short tickTime (500 ms by default) keeps elections and failure detection quick; sessions may
// be 2..120 ticks long. fsync is off (forceSync=no): a SIGKILLed server keeps its data, since the
// page cache survives; only a host crash would lose it, which tests do not do.
//
// "Serving" is judged with the `srvr` four-letter command: a server that is part of a working
// quorum answers "Mode: leader" / "Mode: follower" ("Mode: standalone" for a one-server
// ensemble); one that is not answers "This ZooKeeper instance is not currently serving requests".

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { freePort, tempDir, sleep, exited, waitExit, which } from './sheep.js';

const JAVA_DIR = '/usr/share/java';
const JARS = ['zookeeper.jar', 'slf4j-log4j12.jar', 'log4j-1.2.jar'];
const MAIN = 'org.apache.zookeeper.server.quorum.QuorumPeerMain';
const SERVING_MS = 60_000;
const EXIT_MS = 5_000;

export interface ZkServer {
  /** Index in `Ensemble.servers` (0-based); its ZooKeeper id (myid) is index + 1. */
  index: number;
  myid: number;
  clientPort: number;
  peerPort: number;
  electionPort: number;
  /** The server's own dir: zoo.cfg, log4j.properties, data/ (with myid), zookeeper.log, out.log. */
  dir: string;
  /** pid of the running JVM, undefined while it is stopped. */
  pid: number | undefined;
  alive: boolean;
}

export interface Ensemble {
  /** "127.0.0.1:p1,127.0.0.1:p2,..." for a client. */
  connectString: string;
  servers: ZkServer[];
  /** SIGKILLs server i and waits for its exit (no-op if it is not running). */
  kill(i: number): Promise<void>;
  /** Starts server i again with its data; resolves once it answers `srvr` (not necessarily serving). */
  start(i: number): Promise<void>;
  /** Kills every server, removes the dirs; bounded in time, safe to call twice. */
  stop(): Promise<void>;
  /** Index of the leader (polls up to timeoutMs, then throws with each server's state). */
  leader(timeoutMs?: number): Promise<number>;
  /**
   * Resolves when a majority of the ensemble answers `srvr` with a mode, one of them the leader,
   * and every running server serves too; throws with the logs' tails after timeoutMs.
   */
  waitServing(timeoutMs?: number): Promise<void>;
  /** Sends a four-letter command (srvr, ruok, mntr, stat, conf, ...) to server i; its answer. */
  fourLetter(i: number, cmd: string, timeoutMs?: number): Promise<string>;
  /** The last lines of server i's zookeeper.log and out.log. */
  logTail(i: number, lines?: number): string;
}

export interface EnsembleOptions {
  /** ZooKeeper tick in ms. Default 500: sessions may be 1 s .. 60 s; a dead leader is noticed in ~2.5 s. */
  tickTime?: number;
  /** JVM heap ceiling in MB. Default 128 (a server's RSS is then about 60-80 MB). */
  heapMb?: number;
  /** log4j level for zookeeper.log. Default INFO. */
  logLevel?: 'DEBUG' | 'INFO' | 'WARN' | 'ERROR';
  /** How long startEnsemble waits for the ensemble to serve. Default 60 s. */
  timeoutMs?: number;
}

/** java and Debian's ZooKeeper jars are installed. */
export function zookeeperAvailable(): { ok: true } | { ok: false; reason: string } {
  if (which('java', ['/usr/bin']) === null) return { ok: false, reason: 'java is not installed (apt-get install default-jre)' };
  const missing = JARS.map((j) => path.join(JAVA_DIR, j)).filter((j) => !fs.existsSync(j));
  if (missing.length > 0) {
    return { ok: false, reason: `missing ${missing.join(', ')} (apt-get install zookeeper)` };
  }
  const r = spawnSync('java', ['-version'], { stdio: 'ignore', timeout: 15_000 });
  if (r.status !== 0) return { ok: false, reason: `java -version failed (${r.error?.message ?? `status ${r.status}`})` };
  return { ok: true };
}


function tail(file: string, lines: number): string {
  try {
    return fs.readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(none)';
  }
}

/** One four-letter command over TCP; the server answers and closes the connection. */
export function fourLetterWord(port: number, cmd: string, timeoutMs = 2000): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: '127.0.0.1', port });
    let out = '';
    const t = setTimeout(() => {
      s.destroy();
      reject(new Error(`${cmd} on port ${port}: no answer within ${timeoutMs} ms`));
    }, timeoutMs);
    s.setEncoding('utf8');
    s.on('connect', () => s.write(cmd));
    s.on('data', (d: string) => {
      out += d;
    });
    s.on('error', (err) => {
      clearTimeout(t);
      reject(err);
    });
    s.on('close', () => {
      clearTimeout(t);
      resolve(out);
    });
  });
}

type Mode = 'leader' | 'follower' | 'standalone' | 'observer' | 'not-serving' | 'down';

function parseMode(srvr: string): Mode {
  const m = /^Mode: (\w+)/m.exec(srvr);
  if (m) return m[1] as Mode;
  return 'not-serving';
}

interface Server extends ZkServer {
  proc: ChildProcess | null;
}

function renderConf(s: Server, all: Server[], tickTime: number): string {
  const servers = all
    .map((o) => `server.${o.myid}=127.0.0.1:${o.peerPort}:${o.electionPort}`)
    .join('\n');
  return `# written by test/helpers/zookeeper.ts
tickTime=${tickTime}
initLimit=20
syncLimit=5
minSessionTimeout=${2 * tickTime}
maxSessionTimeout=${120 * tickTime}
dataDir=${path.join(s.dir, 'data')}
clientPort=${s.clientPort}
clientPortAddress=127.0.0.1
maxClientCnxns=0
admin.enableServer=false
4lw.commands.whitelist=*
forceSync=no
preAllocSize=1024
autopurge.purgeInterval=0
${servers}
`;
}

function renderLog4j(dir: string, level: string): string {
  return `# written by test/helpers/zookeeper.ts
log4j.rootLogger=${level}, FILE
log4j.appender.FILE=org.apache.log4j.FileAppender
log4j.appender.FILE.File=${path.join(dir, 'zookeeper.log')}
log4j.appender.FILE.Append=true
log4j.appender.FILE.layout=org.apache.log4j.PatternLayout
log4j.appender.FILE.layout.ConversionPattern=%d{ISO8601} %-5p [%t:%C{1}@%L] - %m%n
`;
}

/** Starts an ensemble of n servers (default 3) and waits until it serves. */
export async function startEnsemble(n = 3, opts: EnsembleOptions = {}): Promise<Ensemble> {
  const avail = zookeeperAvailable();
  if (!avail.ok) throw new Error(`startEnsemble: ${avail.reason}`);
  if (!Number.isInteger(n) || n < 1) throw new Error(`startEnsemble: bad server count ${n}`);
  const tickTime = opts.tickTime ?? 500;
  const heapMb = opts.heapMb ?? 128;
  const root = await tempDir('zk-test-');

  const servers: Server[] = [];
  const taken = new Set<number>();
  const port = async (): Promise<number> => {
    for (;;) {
      const p = await freePort();
      if (!taken.has(p)) {
        taken.add(p);
        return p;
      }
    }
  };
  for (let i = 0; i < n; i++) {
    const dir = path.join(root, `zk${i + 1}`);
    servers.push({
      index: i,
      myid: i + 1,
      clientPort: await port(),
      peerPort: await port(),
      electionPort: await port(),
      dir,
      pid: undefined,
      alive: false,
      proc: null,
    });
  }
  for (const s of servers) {
    fs.mkdirSync(path.join(s.dir, 'data'), { recursive: true });
    fs.writeFileSync(path.join(s.dir, 'data', 'myid'), `${s.myid}\n`);
    fs.writeFileSync(path.join(s.dir, 'zoo.cfg'), renderConf(s, servers, tickTime));
    fs.writeFileSync(path.join(s.dir, 'log4j.properties'), renderLog4j(s.dir, opts.logLevel ?? 'INFO'));
  }

  const classpath = JARS.map((j) => path.join(JAVA_DIR, j)).join(':');
  let stopped = false;

  const launch = (s: Server): void => {
    if (s.proc && !exited(s.proc)) return;
    const out = fs.openSync(path.join(s.dir, 'out.log'), 'a');
    const args = [
      `-Xmx${heapMb}m`,
      '-Xms16m',
      '-Xss512k',
      '-XX:+UseSerialGC',
      '-XX:TieredStopAtLevel=1', // C1 only: less memory and CPU at start
      '-XX:-UsePerfData', // no /tmp/hsperfdata_* files
      '-Djava.net.preferIPv4Stack=true',
      `-Dlog4j.configuration=file:${path.join(s.dir, 'log4j.properties')}`,
      '-Dzookeeper.jmx.log4j.disable=true',
      '-Dzookeeper.cnxTimeout=1000', // election connections to a dead peer give up quickly
      '-cp',
      classpath,
      MAIN,
      path.join(s.dir, 'zoo.cfg'),
    ];
    let proc: ChildProcess;
    try {
      proc = spawn('java', args, { cwd: s.dir, stdio: ['ignore', out, out] });
    } finally {
      fs.closeSync(out);
    }
    proc.on('error', (err) => fs.appendFileSync(path.join(s.dir, 'out.log'), `spawn java: ${err.message}\n`));
    proc.on('exit', () => {
      if (s.proc === proc) {
        s.alive = false;
        s.pid = undefined;
      }
    });
    s.proc = proc;
    s.pid = proc.pid;
    s.alive = proc.pid !== undefined;
  };

  const killOne = async (s: Server): Promise<void> => {
    const p = s.proc;
    if (!p) return;
    if (!exited(p)) {
      p.kill('SIGKILL');
      if (!(await waitExit(p, EXIT_MS))) throw new Error(`zookeeper server ${s.myid} (pid ${p.pid}) did not exit after SIGKILL`);
    }
    s.proc = null;
    s.alive = false;
    s.pid = undefined;
  };

  const onExit = (): void => {
    for (const s of servers) if (s.proc && !exited(s.proc)) s.proc.kill('SIGKILL');
  };
  process.once('exit', onExit);

  const logTail = (i: number, lines = 20): string => {
    const s = servers[i];
    if (!s) return `(no server ${i})`;
    return `--- zk${s.myid} zookeeper.log ---\n${tail(path.join(s.dir, 'zookeeper.log'), lines)}\n` +
      `--- zk${s.myid} out.log ---\n${tail(path.join(s.dir, 'out.log'), Math.min(lines, 10))}`;
  };

  const modes = async (): Promise<Mode[]> =>
    Promise.all(
      servers.map(async (s): Promise<Mode> => {
        if (!s.alive) return 'down';
        try {
          return parseMode(await fourLetterWord(s.clientPort, 'srvr', 1000));
        } catch {
          return 'down';
        }
      }),
    );

  const server = (i: number): Server => {
    const s = servers[i];
    if (!s) throw new Error(`no zookeeper server ${i} (ensemble of ${servers.length})`);
    return s;
  };

  const ensemble: Ensemble = {
    connectString: servers.map((s) => `127.0.0.1:${s.clientPort}`).join(','),
    servers,

    async kill(i: number): Promise<void> {
      await killOne(server(i));
    },

    async start(i: number): Promise<void> {
      if (stopped) throw new Error('ensemble is stopped');
      const s = server(i);
      launch(s);
      const p = s.proc!;
      const deadline = Date.now() + SERVING_MS;
      for (;;) {
        if (exited(p)) throw new Error(`zookeeper server ${s.myid} exited (${p.exitCode ?? p.signalCode})\n${logTail(i)}`);
        try {
          await fourLetterWord(s.clientPort, 'srvr', 1000);
          return;
        } catch {
          // not listening yet
        }
        if (Date.now() > deadline) throw new Error(`zookeeper server ${s.myid} did not answer within ${SERVING_MS} ms\n${logTail(i)}`);
        await sleep(100);
      }
    },

    async stop(): Promise<void> {
      if (stopped) return;
      stopped = true;
      process.removeListener('exit', onExit);
      const results = await Promise.allSettled(servers.map((s) => killOne(s)));
      fs.rmSync(root, { recursive: true, force: true });
      const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
      if (failed) throw failed.reason;
    },

    async leader(timeoutMs = 10_000): Promise<number> {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const m = await modes();
        const i = m.findIndex((x) => x === 'leader' || x === 'standalone');
        if (i >= 0) return i;
        if (Date.now() > deadline) throw new Error(`no zookeeper leader within ${timeoutMs} ms: ${m.map((x, j) => `zk${j + 1}=${x}`).join(' ')}`);
        await sleep(100);
      }
    },

    async waitServing(timeoutMs = SERVING_MS): Promise<void> {
      const deadline = Date.now() + timeoutMs;
      const majority = Math.floor(servers.length / 2) + 1;
      for (;;) {
        const m = await modes();
        const serving = m.filter((x) => x === 'leader' || x === 'follower' || x === 'standalone').length;
        const hasLeader = m.some((x) => x === 'leader' || x === 'standalone');
        const running = servers.filter((s) => s.alive).length;
        if (hasLeader && serving >= majority && serving === running) return;
        // fewer running servers than a majority can never serve: say so at once
        if (Date.now() > deadline || running < majority) {
          const state = m.map((x, j) => `zk${j + 1}=${x}`).join(' ');
          const why = running < majority ? `only ${running} of ${servers.length} servers running` : `not serving within ${timeoutMs} ms`;
          throw new Error(
            `zookeeper ensemble ${why} (${state})\n` +
              servers.map((s) => logTail(s.index, 15)).join('\n'),
          );
        }
        await sleep(100);
      }
    },

    fourLetter(i: number, cmd: string, timeoutMs = 2000): Promise<string> {
      return fourLetterWord(server(i).clientPort, cmd, timeoutMs);
    },

    logTail,
  };

  try {
    for (const s of servers) launch(s);
    const deadline = Date.now() + (opts.timeoutMs ?? SERVING_MS);
    // fail fast if a JVM dies at start (bad config, port taken, ...)
    const died = new Promise<never>((_, reject) => {
      for (const s of servers) {
        s.proc?.once('exit', (code, sig) => {
          if (!stopped) reject(new Error(`zookeeper server ${s.myid} exited at start (${code ?? sig})\n${logTail(s.index)}`));
        });
      }
    });
    died.catch(() => undefined);
    await Promise.race([ensemble.waitServing(Math.max(0, deadline - Date.now())), died]);
  } catch (err) {
    await ensemble.stop().catch(() => undefined);
    throw err;
  }
  return ensemble;
}
