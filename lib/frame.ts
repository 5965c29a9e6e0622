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
