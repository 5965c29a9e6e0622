// pino logger: JSON lines to DIR/sheep.log, and to stderr as well when running in the foreground.

import pino, { type Logger } from 'pino';
import path from 'node:path';

export type { Logger };

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace'] as const;

export function createLogger(dir: string, level: string, foreground: boolean): Logger {
  const file = pino.destination({ dest: path.join(dir, 'sheep.log'), mkdir: true, sync: false });
  const streams: pino.StreamEntry[] = [{ level: level as pino.Level, stream: file }];
  if (foreground) streams.push({ level: level as pino.Level, stream: pino.destination(2) });
  return pino({ level, base: { pid: process.pid } }, pino.multistream(streams));
}
