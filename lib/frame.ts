// Splits a byte stream into 48-byte headers and their payloads with a single copy of each payload.

import { SD_HEADER_SIZE } from './proto.js';

/**
 * `payloadLength(header)` says how many payload bytes follow a header (it may throw to reject the
 * frame); `onFrame` gets the header and payload. Chunks are kept as a list, so a 4 MiB payload
 * arriving in 64 KiB pieces is assembled once, not re-concatenated per chunk.
 */
export class FrameReader {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private header: Buffer | null = null;
  private need = SD_HEADER_SIZE;

  constructor(
    private readonly payloadLength: (header: Buffer) => number,
    private readonly onFrame: (header: Buffer, payload: Buffer) => void,
  ) {}

  get bufferedBytes(): number {
    return this.buffered;
  }

  push(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    while (this.buffered >= this.need) {
      const bytes = this.take(this.need);
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

  private take(n: number): Buffer {
    const first = this.chunks[0];
    if (first.length >= n) {
      // common case: the frame lies inside one chunk; hand out a view, no copy
      const out = first.subarray(0, n);
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
      this.buffered -= n;
      return out;
    }
    const out = Buffer.allocUnsafe(n);
    let off = 0;
    while (off < n) {
      const c = this.chunks[0];
      const k = Math.min(c.length, n - off);
      c.copy(out, off, 0, k);
      off += k;
      if (k === c.length) this.chunks.shift();
      else this.chunks[0] = c.subarray(k);
    }
    this.buffered -= n;
    return out;
  }
}

const EMPTY = Buffer.alloc(0);
