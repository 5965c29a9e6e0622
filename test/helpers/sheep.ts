// Test helpers: start real sheep processes on 127.0.0.1 with temp stores, run collie, clean up.

import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs/promises';
import fsSync from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { SheepClient } from '../../lib/client.js';
import { Op } from '../../lib/proto.js';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
export const SHEEP = path.join(ROOT, 'dist/sheep/main.js');
export const COLLIE = path.join(ROOT, 'dist/collie/main.js');
export const SHARED = path.resolve(ROOT, '../shared');

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const p = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(p));
    });
  });
}

export async function tempDir(prefix = 'sheep-test-'): Promise<string> {
  return fs.mkdtemp(path.join(os.tmpdir(), prefix));
}

export async function waitForPort(port: number, ms = 15000, host = '127.0.0.1'): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect({ host, port });
      s.once('connect', () => { s.destroy(); resolve(true); });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`port ${port} did not open within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export class SheepProcess {
  proc: ChildProcess | null = null;
  stderr = '';

  constructor(readonly dir: string, readonly port: number, readonly extraArgs: string[] = []) {}

  async start(): Promise<this> {
    this.stderr = '';
    // each test cluster gets its own local-driver directory unless the test chose a driver
    const cluster = this.extraArgs.includes('-c') ? [] : ['-c', `local:${this.dir}.cluster`];
    // no HTTP endpoint unless the test asks (its default port, sheep's + 1000, could be another test's)
    const http = this.extraArgs.some((a) => a.startsWith('--http') || a === '--no-http') ? [] : ['--no-http'];
    const p = spawn(process.execPath, [SHEEP, '-f', '-l', 'warn', '-p', String(this.port), '-b', '127.0.0.1', ...cluster, ...http, ...this.extraArgs, this.dir], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    p.stderr!.on('data', (d: Buffer) => { this.stderr += d.toString(); });
    this.proc = p;
    const exited = new Promise<never>((_, reject) => p.once('exit', (code) => reject(new Error(`sheep exited with ${code}: ${this.stderr}`))));
    await Promise.race([waitForPort(this.port), exited]);
    return this;
  }

  get pid(): number {
    return this.proc?.pid ?? 0;
  }

  client(): Promise<SheepClient> {
    return SheepClient.connect({ port: this.port });
  }

  /** Graceful stop (SIGTERM), bounded: SIGKILL after 10 s. */
  async stop(): Promise<void> {
    await endProcess(this.proc, 'SIGTERM');
    this.proc = null;
  }

  async kill9(): Promise<void> {
    await endProcess(this.proc, 'SIGKILL');
    this.proc = null;
  }

  get alive(): boolean {
    return !!this.proc && this.proc.exitCode === null && this.proc.signalCode === null;
  }
}

/** The path of an executable on PATH or in `extraDirs`, else null. */
export function which(cmd: string, extraDirs: string[] = []): string | null {
  for (const d of (process.env.PATH ?? '').split(path.delimiter).concat(extraDirs)) {
    const p = path.join(d, cmd);
    try {
      fsSync.accessSync(p, fsSync.constants.X_OK);
      return p;
    } catch {
      // not here
    }
  }
  return null;
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * Whether process `pid` still runs. A daemon (detached, its parent gone) that exited stays a zombie
 * until PID 1 reaps it, which on this machine's init takes a second or more: kill(pid, 0) still
 * succeeds then, so the state in /proc decides.
 */
export function pidRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
  try {
    const stat = fsSync.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // "pid (comm) S ...": the state follows the last ')' (comm may hold spaces or parentheses)
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

export function exited(p: ChildProcess): boolean {
  return p.exitCode !== null || p.signalCode !== null;
}

/** Waits up to `ms` for the child to exit; false if it is still running. */
export async function waitExit(p: ChildProcess, ms: number): Promise<boolean> {
  if (exited(p)) return true;
  return new Promise((resolve) => {
    const t = setTimeout(() => resolve(false), ms);
    p.once('exit', () => {
      clearTimeout(t);
      resolve(true);
    });
  });
}

/** One control request (msgpack argument and reply) to a sheep on a connection of its own. */
export async function control<T>(s: SheepProcess, op: number, arg?: unknown): Promise<T> {
  const c = await s.client();
  try {
    return await c.control<T>(op, arg);
  } finally {
    c.close();
  }
}

/** Ends a child with `signal` (SIGTERM is followed by SIGKILL after 10 s) and waits for its exit. */
export async function endProcess(p: ChildProcess | null, signal: 'SIGTERM' | 'SIGKILL'): Promise<void> {
  if (!p || p.exitCode !== null || p.signalCode !== null) return;
  const done = new Promise<void>((r) => p.once('exit', () => r()));
  p.kill(signal);
  const t = signal === 'SIGTERM' ? setTimeout(() => p.kill('SIGKILL'), 10000) : undefined;
  await done;
  clearTimeout(t);
}

/** A fresh store with one running sheep; formatted unless `format` is false. */
export async function startSheep(opts: { copies?: number; lock?: boolean; format?: boolean; args?: string[] } = {}): Promise<SheepProcess> {
  const dir = await tempDir();
  const s = await new SheepProcess(dir, await freePort(), opts.args).start();
  if (opts.format !== false) {
    const c = await s.client();
    try {
      await c.control(Op.MAKE_FS, { copies: opts.copies ?? 1, lock: opts.lock ?? false });
    } finally {
      c.close();
    }
  }
  return s;
}

export async function destroySheep(s: SheepProcess): Promise<void> {
  await s.stop();
  await fs.rm(s.dir, { recursive: true, force: true });
  await stopSequencer(`${s.dir}.cluster`);
}

/** The local driver's sequencer exits by itself when idle; tests stop it at once. */
export async function stopSequencer(clusterDir: string): Promise<void> {
  const pid = Number((await fs.readFile(path.join(clusterDir, 'seq.pid'), 'utf8').catch(() => '')).trim());
  if (pid) try { process.kill(pid, 'SIGTERM'); } catch { /* gone */ }
  await fs.rm(clusterDir, { recursive: true, force: true });
}

export interface RunResult {
  code: number;
  stdout: Buffer;
  stderr: string;
}

/** Runs collie (or any node script) with optional stdin, bounded in time. */
export function run(cmd: string, args: string[], input?: Buffer | string | { file: string }, timeoutMs = 120000): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let err = '';
    p.stdout.on('data', (d: Buffer) => out.push(d));
    p.stderr.on('data', (d: Buffer) => { err += d.toString(); });
    const t = setTimeout(() => { p.kill('SIGKILL'); reject(new Error(`${cmd} ${args.join(' ')} timed out`)); }, timeoutMs);
    p.on('error', reject);
    p.on('close', (code) => {
      clearTimeout(t);
      resolve({ code: code ?? -1, stdout: Buffer.concat(out), stderr: err });
    });
    p.stdin.on('error', () => undefined);
    if (input && typeof input === 'object' && 'file' in input) {
      void import('node:fs').then((f) => f.createReadStream(input.file).pipe(p.stdin));
    } else {
      p.stdin.end(input ?? '');
    }
  });
}

export function collie(port: number, args: string[], input?: Buffer | string | { file: string }): Promise<RunResult> {
  return run(process.execPath, [COLLIE, ...args, '-a', '127.0.0.1', '-p', String(port)], input);
}

/** Runs collie and hashes its stdout instead of keeping it (for whole-VDI reads). */
export function collieHash(port: number, args: string[]): Promise<{ code: number; sha256: string; length: number; stderr: string }> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [COLLIE, ...args, '-a', '127.0.0.1', '-p', String(port)], { stdio: ['ignore', 'pipe', 'pipe'] });
    const h = createHash('sha256');
    let length = 0;
    let err = '';
    p.stdout.on('data', (d: Buffer) => { h.update(d); length += d.length; });
    p.stderr.on('data', (d: Buffer) => { err += d.toString(); });
    const t = setTimeout(() => { p.kill('SIGKILL'); reject(new Error(`collie ${args.join(' ')} timed out`)); }, 300000);
    p.on('error', reject);
    p.on('close', (code) => { clearTimeout(t); resolve({ code: code ?? -1, sha256: h.digest('hex'), length, stderr: err }); });
  });
}
