// Splits a byte stream into 48-byte headers and their payloads with a single copy of each payload.

import { SD_HEADER_SIZE } from './proto.js';
import { ByteQueue } from './byte-queue.js';

/**
 * `payloadLength(header)` says how many payload bytes follow a header (it may throw to reject the
 * frame); `onFrame` gets the header and payload. Chunks are kept as a list, so a 4 MiB payload
 * arriving in 64 KiB pieces is assembled once, not re-concatenated per chunk.
 */
export class FrameReader {
  private readonly q = new ByteQueue();
  private header: Buffer | null = null;
  private need = SD_HEADER_SIZE;

  constructor(
    private readonly payloadLength: (header: Buffer) => number,
    private readonly onFrame: (header: Buffer, payload: Buffer) => void,
  ) {}

  get bufferedBytes(): number {
    return this.q.length;
  }

  push(chunk: Buffer): void {
    this.q.push(chunk);
    while (this.q.length >= this.need) {
      const bytes = this.q.take(this.need);
      if (this.header === null) {
        const len = this.payloadLength(bytes);
        if (len === 0) {
          this.onFrame(bytes, EMPTY);
          continue;
        }
        this.header = bytes;
        this.need = len;
      } else {
        const h = this.header;
        this.header = null;
        this.need = SD_HEADER_SIZE;
        this.onFrame(h, bytes);
      }
    }
  }
}

const EMPTY = Buffer.alloc(0);

/**
 * The same framing for a socket that reads into buffers we hand it (net's `onread` option): small
 * frames land in a reused scratch area and are copied out (a 48-byte header, a small payload),
 * and the rest of a large payload is read by the kernel straight into the payload's own buffer.
 * A 4 MiB payload then costs no JS-side copy and no 64 KiB chunk allocations: that assembly copy
 * and the garbage of the chunks were 40% of collie's CPU when it streamed a VDI.
 */
export class DirectFrameReader {
  private readonly scratch = Buffer.allocUnsafe(64 * 1024);
  /** unconsumed bytes of scratch: [start, end) */
  private start = 0;
  private end = 0;
  private header: Buffer | null = null;
  /** the payload length of `header` */
  private need = 0;
  /** a payload being read in place, and how much of it has arrived */
  private payload: Buffer | null = null;
  private filled = 0;

  constructor(
    private readonly payloadLength: (header: Buffer) => number,
    private readonly onFrame: (header: Buffer, payload: Buffer) => void,
  ) {}

  /** Where the socket's next read goes. */
  buffer(): Buffer {
    if (this.payload) return this.payload.subarray(this.filled);
    if (this.start === this.end) this.start = this.end = 0;
    else if (this.start > 0) {
      // fewer than 48 bytes of a header wait: move them to the front
      this.scratch.copy(this.scratch, 0, this.start, this.end);
      this.end -= this.start;
      this.start = 0;
    }
    return this.scratch.subarray(this.end);
  }

  /** The socket read `n` bytes into the last buffer(). */
  read(n: number): void {
    if (this.payload) {
      this.filled += n;
      if (this.filled === this.payload.length) this.deliver(this.payload);
      return;
    }
    this.end += n;
    for (;;) {
      const have = this.end - this.start;
      if (this.header === null) {
        if (have < SD_HEADER_SIZE) return;
        const h = Buffer.from(this.scratch.subarray(this.start, this.start + SD_HEADER_SIZE));
        this.start += SD_HEADER_SIZE;
        const len = this.payloadLength(h);
        if (len === 0) {
          this.onFrame(h, EMPTY);
          continue;
        }
        this.header = h;
        this.need = len;
        continue;
      }
      const len = this.need;
      const p = Buffer.allocUnsafe(len);
      const got = Math.min(have, len);
      this.scratch.copy(p, 0, this.start, this.start + got);
      this.start += got;
      if (got === len) {
        this.deliver(p);
        continue;
      }
      // the rest of this payload goes straight into it (scratch is empty now)
      this.payload = p;
      this.filled = got;
      return;
    }
  }

  private deliver(p: Buffer): void {
    const h = this.header!;
    this.header = null;
    this.payload = null;
    this.filled = 0;
    this.onFrame(h, p);
  }
}
