// collie vdi backup / restore: stream the difference between two snapshots (or a whole snapshot)
// and apply it to a VDI whose base snapshot holds the same data, here or on another cluster.

import crypto from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { SheepClient } from '../lib/client.js';
import { progress } from './progress.js';
import { OpenVdi } from '../lib/vdi-io.js';
import {
  BackupReader, BackupFormatError, baseDigest, encodeEnd, encodeHeader, encodeRecord, REC_DATA, REC_ZERO, type BackupRecord,
} from '../lib/backup-stream.js';
import { vidToVdiOid } from '../lib/oid.js';
import { InodeOff } from '../lib/inode.js';
import { CliError, EXIT_USAGE, withClient, reason, type ConnOpts } from './common.js';
import { resolveVid, rollbackTo, takeSnapshot } from './vdi-family.js';

const SECTOR = 4096;

async function openSnapshot(c: SheepClient, name: string, snap: string): Promise<OpenVdi> {
  const v = await OpenVdi.open(c, await resolveVid(c, name, snap));
  if (v.header.snapCtime === 0n) throw new CliError(`${name} ${snap} is not a snapshot`);
  return v;
}

/** Digest over every object of a snapshot (holes are not read). */
function snapshotDigest(v: OpenVdi): Promise<Buffer> {
  return baseDigest(v.map.length, v.objectSize, (i) => (v.map[i] ? v.readPiece(i, 0, v.objectSize) : null));
}

/** The whole content of object idx (zeros where the VDI maps nothing). */
async function objectContent(v: OpenVdi | null, idx: number, size: number): Promise<Buffer> {
  if (!v || idx >= v.map.length || !v.map[idx]) return Buffer.alloc(size);
  return v.readPiece(idx, 0, size);
}

function isZero(b: Buffer): boolean {
  for (let i = 0; i < b.length; i++) if (b[i]) return false;
  return true;
}

/** Runs of 4 KiB sectors where `to` differs from `from`. */
function* diffRuns(from: Buffer, to: Buffer): Generator<[number, number]> {
  let start = -1;
  for (let off = 0; off <= to.length; off += SECTOR) {
    const differs = off < to.length && !to.subarray(off, off + SECTOR).equals(from.subarray(off, off + SECTOR));
    if (differs && start < 0) start = off;
    if (!differs && start >= 0) {
      yield [start, off - start];
      start = -1;
    }
  }
}

async function write(chunk: Buffer, hash: crypto.Hash): Promise<void> {
  hash.update(chunk);
  if (!process.stdout.write(chunk)) await new Promise<void>((r) => process.stdout.once('drain', () => r()));
}

export async function vdiBackup(name: string, o: ConnOpts & { snapshot?: string; from?: string }): Promise<void> {
  if (!o.snapshot) throw new CliError("Please specify snapshots with '-F' and '-s' options (-F may be left out for a full backup)", EXIT_USAGE);
  if (process.stdout.isTTY) throw new CliError('refusing to write a binary backup stream to a terminal; redirect stdout to a file', EXIT_USAGE);
  await withClient(o, async (c) => {
    const to = await openSnapshot(c, name, o.snapshot!);
    const from = o.from ? await openSnapshot(c, name, o.from) : null;
    if (from && from.header.blockSizeShift !== to.header.blockSizeShift) throw new CliError('the two snapshots have different object sizes');
    const os_ = to.objectSize;
    const n = Math.max(to.map.length, from?.map.length ?? 0);
    const indices: number[] = [];
    for (let i = 0; i < n; i++) {
      const tv = to.map[i] ?? 0;
      const fv = from ? from.map[i] ?? 0 : 0;
      if (tv !== fv) indices.push(i);
    }
    const digest = from ? await snapshotDigest(from) : Buffer.alloc(32);
    const hash = crypto.createHash('sha256');
    await write(encodeHeader({ incremental: !!from, blockSizeShift: to.header.blockSizeShift, vdiSize: to.header.vdiSize,
      fromSize: from?.header.vdiSize ?? 0n, indices, baseDigest: digest }), hash);
    let records = 0;
    const bar = progress(`backing up ${name}`, indices.length, 'objects');
    for (const idx of indices) {
      bar.add(1);
      const [f, t] = await Promise.all([objectContent(from, idx, os_), objectContent(to, idx, os_)]);
      for (const [off, len] of diffRuns(f, t)) {
        const part = t.subarray(off, off + len);
        const rec: BackupRecord = isZero(part) ? { type: REC_ZERO, idx, offset: off, len } : { type: REC_DATA, idx, offset: off, len, data: part };
        await write(encodeRecord(rec), hash);
        records++;
      }
    }
    bar.stop();
    const end = encodeEnd(records, hash);
    process.stdout.write(end);
  });
}

/** Copies stdin to a temp file while checking every checksum; returns the file and its header. */
async function receive(): Promise<{ file: string; dir: string; reader: BackupReader }> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'collie-restore-'));
  const file = path.join(dir, 'stream');
  const out = fs.createWriteStream(file);
  const reader = new BackupReader();
  try {
    for await (const chunk of process.stdin as AsyncIterable<Buffer>) {
      reader.push(chunk);
      if (!out.write(chunk)) await new Promise<void>((r) => out.once('drain', () => r()));
    }
    await new Promise<void>((res, rej) => out.end((e?: Error | null) => (e ? rej(e) : res())));
  } catch (e) {
    out.destroy();
    await fsp.rm(dir, { recursive: true, force: true });
    if (e instanceof BackupFormatError) throw new CliError(`Invalid backup stream: ${e.message}; nothing was changed`);
    throw e;
  }
  if (!reader.header || !reader.done) {
    await fsp.rm(dir, { recursive: true, force: true });
    throw new CliError('Invalid backup stream: it is truncated (no end marker); nothing was changed');
  }
  return { file, dir, reader };
}

export async function vdiRestore(name: string, o: ConnOpts & { snapshot?: string }): Promise<void> {
  const { file, dir, reader } = await receive();
  const h = reader.header!;
  try {
    await withClient(o, async (c) => {
      let vid: number;
      if (h.incremental) {
        if (!o.snapshot) throw new CliError("This is a differential backup: give the base snapshot with '-s'", EXIT_USAGE);
        const base = await openSnapshot(c, name, o.snapshot);
        const sameGeometry = base.header.blockSizeShift === h.blockSizeShift && base.header.vdiSize === h.fromSize;
        const digest = sameGeometry ? await snapshotDigest(base) : null;
        if (!digest || !digest.equals(h.baseDigest)) {
          throw new CliError(`The backup does not apply to ${name} snapshot ${o.snapshot}: its content differs from the backup's base; nothing was changed`);
        }
        // keep what the working VDI holds now as an untagged snapshot, then start again from the base
        const working = await c.getVdiInfo(name).then(() => true, () => false);
        if (working) await takeSnapshot(c, name, '');
        vid = await rollbackTo(c, name, base.vid);
        if (h.vdiSize > base.header.vdiSize) {
          const f = Buffer.alloc(8);
          f.writeBigUInt64LE(h.vdiSize);
          await c.writeObj(vidToVdiOid(vid), InodeOff.vdiSize, f);
        }
      } else {
        if (await c.getVdiInfo(name).then(() => true, () => false)) {
          throw new CliError(`VDI ${name} exists already: a full backup restores into a new VDI; nothing was changed`);
        }
        try {
          vid = await c.newVdi(name, h.vdiSize, { blockSizeShift: h.blockSizeShift });
        } catch (e) {
          throw new CliError(`Failed to create VDI ${name}: ${reason(e)}`);
        }
      }
      const v = await OpenVdi.open(c, vid);
      const apply = new BackupReader();
      const bar = progress(`restoring ${name}`, (await fsp.stat(file)).size, 'bytes');
      try {
        for await (const chunk of fs.createReadStream(file, { highWaterMark: 4 << 20 })) {
          for (const r of apply.push(chunk as Buffer)) {
            await v.writePiece(r.idx, r.offset, r.type === REC_DATA ? r.data! : Buffer.alloc(r.len));
          }
          bar.add((chunk as Buffer).length);
        }
      } finally {
        bar.stop();
      }
      await c.flushVdi(vid);
    });
  } finally {
    await fsp.rm(dir, { recursive: true, force: true });
  }
}
