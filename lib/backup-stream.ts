// The backup stream of `collie vdi backup/restore`: the blocks that differ between two snapshots
// (or every allocated block), with enough in the header to refuse the wrong base and enough
// checksums to refuse a damaged stream before anything is written.
//
//   header   "SDBKUP01"  u32 flags (bit 0: incremental)  u32 block_size_shift  u64 vdi_size (to)
//            u64 from_size  u32 n  u32 idx[n] (objects the stream changes, ascending)
//            32-byte base digest: sha256 over sha256(object i of the from snapshot) for every object i
//            the from snapshot spans (zeros when full): restore refuses a base whose content differs
//            u32 crc32 of the header bytes before it
//   records  u8 type (1 data, 2 zeros)  u32 idx  u32 offset  u32 len  [len bytes when data]
//            u32 crc32 of the record bytes before it
//   end      u8 0xff  u32 record count  32-byte sha256 of every byte before this digest
// All integers little-endian.

import crypto from 'node:crypto';
import zlib from 'node:zlib';
import { ByteQueue } from './byte-queue.js';

export const BACKUP_MAGIC = 'SDBKUP01';
export const REC_DATA = 1;
export const REC_ZERO = 2;
export const REC_END = 0xff;

export interface BackupHeader {
  incremental: boolean;
  blockSizeShift: number;
  vdiSize: bigint;
  fromSize: bigint;
  indices: number[];
  baseDigest: Buffer;
}

export interface BackupRecord {
  type: typeof REC_DATA | typeof REC_ZERO;
  idx: number;
  offset: number;
  len: number;
  data?: Buffer;
}

export function encodeHeader(h: BackupHeader): Buffer {
  const b = Buffer.alloc(8 + 4 + 4 + 8 + 8 + 4 + 4 * h.indices.length + 32 + 4);
  let o = b.write(BACKUP_MAGIC, 0, 'latin1');
  o = b.writeUInt32LE(h.incremental ? 1 : 0, o);
  o = b.writeUInt32LE(h.blockSizeShift, o);
  o = b.writeBigUInt64LE(h.vdiSize, o);
  o = b.writeBigUInt64LE(h.fromSize, o);
  o = b.writeUInt32LE(h.indices.length, o);
  for (const i of h.indices) o = b.writeUInt32LE(i, o);
  o += h.baseDigest.copy(b, o, 0, 32);
  b.writeUInt32LE(zlib.crc32(b.subarray(0, o)), o);
  return b;
}

export function encodeRecord(r: BackupRecord): Buffer {
  const dataLen = r.type === REC_DATA ? r.len : 0;
  const b = Buffer.alloc(13 + dataLen + 4);
  b[0] = r.type;
  b.writeUInt32LE(r.idx, 1);
  b.writeUInt32LE(r.offset, 5);
  b.writeUInt32LE(r.len, 9);
  if (dataLen) r.data!.copy(b, 13, 0, dataLen);
  b.writeUInt32LE(zlib.crc32(b.subarray(0, 13 + dataLen)), 13 + dataLen);
  return b;
}

/**
 * Digest of the content a stream applies to: sha256 over the sha256 of every object of the base,
 * in order. `objectAt(i)` returns object i's bytes, or null for a hole (hashed as zeros, unread).
 */
export async function baseDigest(count: number, objectSize: number, objectAt: (i: number) => Promise<Buffer> | null): Promise<Buffer> {
  const zeroHash = crypto.createHash('sha256').update(Buffer.alloc(objectSize)).digest();
  const h = crypto.createHash('sha256');
  const DEPTH = 4;
  const pending: Array<Promise<Buffer> | null> = [];
  for (let i = 0; i < count || pending.length; ) {
    while (pending.length < DEPTH && i < count) pending.push(objectAt(i++));
    const p = pending.shift()!;
    h.update(p === null ? zeroHash : crypto.createHash('sha256').update(await p).digest());
  }
  return h.digest();
}

export class BackupFormatError extends Error {}

/** Incremental parser: feed bytes, get the header and records out; checks every checksum. */
export class BackupReader {
  private readonly q = new ByteQueue();
  private readonly digest = crypto.createHash('sha256');
  private listed = new Set<number>();
  header: BackupHeader | null = null;
  records = 0;
  done = false;

  push(chunk: Buffer): BackupRecord[] {
    if (this.done && chunk.length) throw new BackupFormatError('data after the end of the backup stream');
    this.q.push(chunk);
    const out: BackupRecord[] = [];
    const q = this.q;
    for (;;) {
      if (!this.header) {
        if (q.length < 36) return out;
        const fixed = q.peek(36);
        if (fixed.toString('latin1', 0, 8) !== BACKUP_MAGIC) throw new BackupFormatError('not a sheepdog backup stream (bad magic)');
        const n = fixed.readUInt32LE(32);
        if (n > 1 << 20) throw new BackupFormatError('corrupt header: too many objects');
        const len = 36 + 4 * n + 32 + 4;
        if (q.length < len) return out;
        const h = this.take(len);
        if (zlib.crc32(h.subarray(0, len - 4)) !== h.readUInt32LE(len - 4)) throw new BackupFormatError('corrupt header (checksum mismatch)');
        const indices: number[] = [];
        for (let i = 0; i < n; i++) indices.push(h.readUInt32LE(36 + 4 * i));
        this.header = {
          incremental: (h.readUInt32LE(8) & 1) === 1,
          blockSizeShift: h.readUInt32LE(12),
          vdiSize: h.readBigUInt64LE(16),
          fromSize: h.readBigUInt64LE(24),
          indices,
          baseDigest: Buffer.from(h.subarray(36 + 4 * n, 36 + 4 * n + 32)),
        };
        this.listed = new Set(indices);
        continue;
      }
      if (this.done || q.length < 1) return out;
      const type = q.peek(1)[0];
      if (type === REC_END) {
        if (q.length < 37) return out;
        const end = q.take(37);
        this.digest.update(end.subarray(0, 5));
        if (end.readUInt32LE(1) !== this.records) throw new BackupFormatError('corrupt stream: record count mismatch');
        if (!this.digest.digest().equals(end.subarray(5, 37))) throw new BackupFormatError('corrupt stream: digest mismatch');
        this.done = true;
        if (q.length) throw new BackupFormatError('data after the end of the backup stream');
        return out;
      }
      if (type !== REC_DATA && type !== REC_ZERO) throw new BackupFormatError(`corrupt stream: unknown record type ${type}`);
      if (q.length < 13) return out;
      const len = q.peek(13).readUInt32LE(9);
      if (len > 2 ** 31) throw new BackupFormatError('corrupt stream: absurd record length');
      const recLen = 13 + (type === REC_DATA ? len : 0) + 4;
      if (q.length < recLen) return out;
      const r = this.take(recLen);
      if (zlib.crc32(r.subarray(0, recLen - 4)) !== r.readUInt32LE(recLen - 4)) throw new BackupFormatError(`corrupt stream: record ${this.records} checksum mismatch`);
      const rec: BackupRecord = { type, idx: r.readUInt32LE(1), offset: r.readUInt32LE(5), len };
      if (rec.offset + len > 2 ** this.header.blockSizeShift) throw new BackupFormatError(`corrupt stream: record ${this.records} outside its object`);
      if (!this.listed.has(rec.idx)) throw new BackupFormatError(`corrupt stream: record for object ${rec.idx} not listed in the header`);
      if (type === REC_DATA) rec.data = r.subarray(13, 13 + len);
      this.records++;
      out.push(rec);
    }
  }

  private take(n: number): Buffer {
    const b = this.q.take(n);
    this.digest.update(b);
    return b;
  }
}

/** The end marker: record count and the digest of everything before the digest. */
export function encodeEnd(records: number, digestSoFar: crypto.Hash): Buffer {
  const b = Buffer.alloc(37);
  b[0] = REC_END;
  b.writeUInt32LE(records, 1);
  digestSoFar.update(b.subarray(0, 5));
  digestSoFar.digest().copy(b, 5);
  return b;
}
