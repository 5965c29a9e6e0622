// Progress bars for long collie commands, on stderr and only when it is a terminal: piped or
// redirected output (scripts, CI) gets nothing extra.

import { createRequire } from 'node:module';
import type cliProgressTypes from 'cli-progress';
import { formatSize } from '../lib/units.js';

/** Loaded on the first bar: commands without a terminal do not pay for it at start-up. */
const loadCliProgress = () => createRequire(import.meta.url)('cli-progress') as typeof cliProgressTypes;

export interface Progress {
  /** `n` more units done */
  add(n: number): void;
  /** where it stands now, when the total moves too (recovery: new objects appear) */
  set(done: number, total: number): void;
  /** ends the bar (leaves it showing the final count); once is enough, more is harmless */
  stop(): void;
}

const NONE: Progress = { add: () => undefined, set: () => undefined, stop: () => undefined };

/** A bar counting bytes (`unit: 'bytes'`) or objects, for `total` of them; a no-op without a terminal. */
export function progress(label: string, total: number, unit: 'bytes' | 'objects'): Progress {
  if (!process.stderr.isTTY || total <= 0) return NONE;
  let max = total;
  const cliProgress = loadCliProgress();
  const bar = new cliProgress.SingleBar({
    stream: process.stderr,
    format: `${label} [{bar}] {percentage}% {shown} {rate}`,
    hideCursor: true,
    clearOnComplete: false,
    fps: 5,
  }, cliProgress.Presets.shades_classic);
  const started = Date.now();
  let done = 0;
  const fields = () => {
    const secs = Math.max(0.001, (Date.now() - started) / 1000);
    return unit === 'bytes'
      ? { shown: `${formatSize(done)} / ${formatSize(max)}`, rate: `${formatSize(done / secs)}/s` }
      : { shown: `${done} / ${max} objects`, rate: '' };
  };
  bar.start(total, 0, fields());
  let stopped = false;
  return {
    add(n: number) {
      done += n;
      if (!stopped) bar.update(Math.min(done, max), fields());
    },
    set(d: number, t: number) {
      done = d;
      if (t !== max && t > 0) { max = t; bar.setTotal(t); }
      if (!stopped) bar.update(Math.min(done, max), fields());
    },
    stop() {
      if (stopped) return;
      stopped = true;
      bar.update(Math.min(done, max), fields());
      bar.stop();
    },
  };
}
