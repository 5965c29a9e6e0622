// Bytes received but not consumed yet, kept as a list of chunks: taking n bytes copies only when
// they straddle chunks, so a 4 MiB payload that arrived in 64 KiB pieces is assembled once.

export class ByteQueue {
  private chunks: Buffer[] = [];
  length = 0;

  push(b: Buffer): void {
    if (b.length) {
      this.chunks.push(b);
      this.length += b.length;
    }
  }

  /** The first k bytes (k <= length) without consuming them. */
  peek(k: number): Buffer {
    if (this.chunks[0].length >= k) return this.chunks[0].subarray(0, k);
    const parts: Buffer[] = [];
    let got = 0;
    for (const c of this.chunks) {
      parts.push(c);
      got += c.length;
      if (got >= k) break;
    }
    return Buffer.concat(parts, got).subarray(0, k);
  }

  /** Consumes and returns the first k bytes (k <= length). */
  take(k: number): Buffer {
    const first = this.chunks[0];
    let out: Buffer;
    if (first.length >= k) {
      out = first.subarray(0, k);
      if (first.length === k) this.chunks.shift();
      else this.chunks[0] = first.subarray(k);
    } else {
      out = Buffer.allocUnsafe(k);
      let off = 0;
      while (off < k) {
        const c = this.chunks[0];
        const n = Math.min(c.length, k - off);
        c.copy(out, off, 0, n);
        off += n;
        if (n === c.length) this.chunks.shift();
        else this.chunks[0] = c.subarray(n);
      }
    }
    this.length -= k;
    return out;
  }
}
