// pino logger: JSON lines to DIR/sheep.log, and to stderr as well when running in the foreground.

import pino, { type Logger } from 'pino';
import path from 'node:path';

export type { Logger };

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace'] as const;

const LEVEL_NAMES: Record<number, string> = { 10: 'TRACE', 20: 'DEBUG', 30: 'INFO', 40: 'WARN', 50: 'ERROR', 60: 'FATAL' };

/** "12:03:04 WARN  node left the cluster node=10.0.0.2:7000" from one JSON log line. */
export function humanLine(json: string): string {
  let rec: Record<string, unknown>;
  try {
    rec = JSON.parse(json) as Record<string, unknown>;
  } catch {
    return json;
  }
  const { level, time, msg, pid: _pid, ...rest } = rec;
  const t = new Date(Number(time)).toTimeString().slice(0, 8);
  const fields = Object.entries(rest).map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`).join(' ');
  return `${t} ${(LEVEL_NAMES[Number(level)] ?? String(level)).padEnd(5)} ${String(msg ?? '')}${fields ? ` ${fields}` : ''}\n`;
}

/**
 * The daemon's logger. `reopen` starts a new DIR/sheep.log (logrotate moved the old one away;
 * the daemon calls it on SIGHUP).
 */
export function createLogger(dir: string, level: string, foreground: boolean): { log: Logger; reopen: () => void } {
  const file = pino.destination({ dest: path.join(dir, 'sheep.log'), mkdir: true, sync: false });
  // the log lives on the store's disk: when that disk fails, the file stops taking lines (an
  // unhandled write error would stop the daemon, and its exit would block flushing the dead file);
  // the cluster goes on logging the failure on the other nodes
  let fileFailed = false;
  file.on('error', (e: Error) => {
    if (fileFailed) return;
    fileFailed = true;
    process.stderr.write(`sheep: cannot write ${path.join(dir, 'sheep.log')} (${e.message}): logging to it stopped\n`);
    try { file.destroy(); } catch { /* already closed */ }
  });
  const guarded = {
    write(line: string): void { if (!fileFailed) file.write(line); },
    flush(): void { if (!fileFailed) file.flush(); },
    flushSync(): void { if (!fileFailed) file.flushSync(); },
  };
  // the streams take every level: the logger's own level filters, so `collie node log level set`
  // (log.level = ...) reaches the file and stderr alike
  const streams: pino.StreamEntry[] = [{ level: 'trace', stream: guarded }];
  if (foreground) {
    // on a terminal a person reads it: one short line per record; piped (journald, a file) it stays JSON
    const stderr = pino.destination(2);
    streams.push({ level: 'trace', stream: process.stderr.isTTY ? { write: (line: string) => stderr.write(humanLine(line)) } : stderr });
  }
  const log = pino({ level, base: { pid: process.pid } }, pino.multistream(streams));
  const reopen = () => {
    if (fileFailed) return;
    file.reopen();
    log.info('log file reopened (SIGHUP)');
  };
  return { log, reopen };
}
