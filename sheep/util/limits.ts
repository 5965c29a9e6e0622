// The descriptor limit: raised from the soft to the hard limit at start (Node has no setrlimit, so
// util-linux's prlimit does it for this process), and read back to size the connection limit.

import fs from 'node:fs';
import { spawnSync } from 'node:child_process';
import type { Logger } from './log.js';

/** [soft, hard] RLIMIT_NOFILE of this process (Infinity for unlimited). */
export function fdLimits(): [number, number] {
  const line = fs.readFileSync('/proc/self/limits', 'utf8').split('\n').find((l) => l.startsWith('Max open files'));
  const parts = line?.trim().split(/\s+/) ?? [];
  const num = (s: string | undefined) => (s === 'unlimited' ? Infinity : Number(s));
  const soft = num(parts[3]);
  const hard = num(parts[4]);
  return [Number.isFinite(soft) || soft === Infinity ? soft : 1024, Number.isFinite(hard) || hard === Infinity ? hard : 1024];
}

/** Raises the soft descriptor limit to the hard one; returns the soft limit in force afterwards. */
export function raiseFdLimit(log: Logger): number {
  const [soft, hard] = fdLimits();
  if (soft < hard && Number.isFinite(hard)) {
    const r = spawnSync('prlimit', ['--pid', String(process.pid), `--nofile=${hard}:${hard}`], { stdio: 'ignore', timeout: 5000 });
    if (r.status !== 0) log.warn({ soft, hard }, 'could not raise the descriptor limit (prlimit failed): connections are limited by the soft limit');
  }
  const now = fdLimits()[0];
  return Number.isFinite(now) ? now : 1 << 20;
}
