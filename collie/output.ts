// Where collie streams VDI data (vdi read, vdi backup). Node writes to a pipe on stdout synchronously:
// every 4 MiB piece would stop the event loop until the reader took it all, 64 KiB at a time, and
// the replies already on their way would wait. An fs stream writes from the I/O pool instead, so
// receiving and writing overlap. A pipe is opened again through /proc (libuv may have made fd 1
// non-blocking, and a pool thread must block on a full pipe, not fail with EAGAIN); a regular file
// is written through fd 1 itself (a second open would not share its offset or O_APPEND).

import fs from 'node:fs';

export interface DataSink {
  write(chunk: Buffer): Promise<void>;
  /** resolves once everything reached stdout */
  end(): Promise<void>;
}

/** Bytes buffered before a write waits: two pieces in flight toward stdout. */
const HIGH_WATER = 8 * 1024 * 1024;

export function stdoutSink(): DataSink {
  if (process.stdout.isTTY) return plainStdout();
  let st: fs.Stats | null = null;
  try { st = fs.fstatSync(1); } catch { /* closed stdout: process.stdout reports it */ }
  let fd = -1;
  if (st?.isFIFO()) {
    try { fd = fs.openSync('/proc/self/fd/1', 'w'); } catch { /* no /proc: fall back */ }
  } else if (st?.isFile()) fd = 1;
  if (fd < 0) return plainStdout();
  const out = fs.createWriteStream('', { fd, autoClose: fd !== 1, highWaterMark: HIGH_WATER });
  let failed: Error | null = null;
  out.on('error', (e: NodeJS.ErrnoException) => {
    // the reader went away (| head): nothing more to say, as with plain stdout
    if (e.code === 'EPIPE') process.exit(0);
    failed = e;
  });
  return {
    write: async (chunk) => {
      if (failed) throw failed;
      if (!out.write(chunk)) await new Promise<void>((resolve) => out.once('drain', () => resolve()));
    },
    end: () => new Promise<void>((resolve, reject) => {
      if (failed) return reject(failed);
      out.end(() => (failed ? reject(failed) : resolve()));
    }),
  };
}

/** A terminal or a socket: Node's own stdout stream. */
function plainStdout(): DataSink {
  return {
    write: async (chunk) => {
      if (!process.stdout.write(chunk)) await new Promise<void>((r) => process.stdout.once('drain', () => r()));
    },
    end: async () => undefined,
  };
}
