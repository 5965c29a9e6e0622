// The `local` driver's group layer: sheep on one machine share a directory; a sequencer process
// (local-sequencer.ts, started on demand) orders membership changes and messages for all of them.
// No external service; a SIGKILLed sheep leaves the group the moment its connection closes.

import net from 'node:net';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { FrameSplitter, frame, sequencerPaths, type FromSequencer } from './local-sequencer.js';
import type { GroupDriver, GroupEvents } from './driver.js';

/**
 * Where the sheep of one machine meet by default: never in world-writable /tmp, where another user
 * could create the directory first and run the sequencer. root: /run/sheepdog/local; others: their
 * runtime directory, else ~/.sheepdog-local.
 */
export function defaultLocalDir(): string {
  if (process.getuid?.() === 0) return '/run/sheepdog/local';
  if (process.env.XDG_RUNTIME_DIR) return path.join(process.env.XDG_RUNTIME_DIR, 'sheepdog-local');
  return path.join(os.homedir(), '.sheepdog-local');
}

/** The meeting directory must be ours and closed to others: refuse one that another user owns. */
export async function secureDir(dir: string): Promise<void> {
  await fs.mkdir(dir, { recursive: true, mode: 0o700 });
  const st = await fs.lstat(dir);
  if (!st.isDirectory()) throw new Error(`the local cluster directory ${dir} is not a directory`);
  const uid = process.getuid?.();
  if (uid !== undefined && st.uid !== uid) {
    throw new Error(`the local cluster directory ${dir} belongs to another user (uid ${st.uid}): refusing to use it`);
  }
  if (st.mode & 0o077) await fs.chmod(dir, 0o700);
}
const SEQUENCER = path.join(path.dirname(fileURLToPath(import.meta.url)), 'local-sequencer.js');

export class LocalGroup implements GroupDriver {
  readonly canPartition = false;
  readonly name = 'local';
  private sock: net.Socket | null = null;
  private stopping = false;
  /** called when the sequencer goes away under us: the group can no longer order anything */
  onLost: (why: string) => void = () => undefined;

  constructor(readonly dir: string = defaultLocalDir()) {}

  private connectOnce(sockPath: string): Promise<net.Socket> {
    return new Promise((resolve, reject) => {
      const s = net.connect(sockPath);
      s.once('connect', () => { s.removeAllListeners('error'); resolve(s); });
      s.once('error', reject);
    });
  }

  private id = '';

  async init(preferred: string): Promise<string> {
    this.id = preferred;
    await secureDir(this.dir);
    const { sock } = sequencerPaths(this.dir);
    let spawned = false;
    const deadline = Date.now() + 10_000;
    for (;;) {
      try {
        this.sock = await this.connectOnce(sock);
        break;
      } catch (e) {
        if (Date.now() > deadline) throw new Error(`cannot reach the local cluster sequencer at ${sock}: ${(e as Error).message}`);
        if (!spawned) {
          const child = spawn(process.execPath, [SEQUENCER, this.dir], { detached: true, stdio: 'ignore' });
          child.unref();
          spawned = true;
        }
        await new Promise((r) => setTimeout(r, 50));
      }
    }
    return this.id;
  }

  async start(events: GroupEvents): Promise<void> {
    const s = this.sock;
    if (!s) throw new Error('init() first');
    const split = new FrameSplitter();
    s.on('data', (chunk: Buffer) => {
      for (const raw of split.push(chunk)) {
        const m = raw as FromSequencer;
        if (m.t === 'confchg') events.confchg(m.members, m.joined, m.left);
        else if (m.t === 'deliver') events.deliver(m.from, Buffer.from(m.msg));
      }
    });
    s.on('close', () => { if (!this.stopping) this.onLost('the local cluster sequencer closed the connection'); });
    s.on('error', () => undefined);
    s.write(frame({ t: 'hello', id: this.id }));
  }

  async mcast(msg: Buffer): Promise<void> {
    const s = this.sock;
    if (!s || s.destroyed) throw new Error('not connected to the local cluster sequencer');
    await new Promise<void>((resolve, reject) => s.write(frame({ t: 'mcast', msg }), (e) => (e ? reject(e) : resolve())));
  }

  async stop(): Promise<void> {
    this.stopping = true;
    this.sock?.end();
    this.sock?.destroy();
    this.sock = null;
  }
}
