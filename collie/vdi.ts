// collie vdi: create, list, delete, read, write, object.

import fs from 'node:fs';
import { vdiNameProblem } from '../lib/vdi-name.js';
import { progress } from './progress.js';
import { stdoutSink } from './output.js';
import { SheepClient } from '../lib/client.js';
import { Res, SdError } from '../lib/proto.js';
import { formatSize } from '../lib/units.js';
import { OpenVdi } from '../lib/vdi-io.js';
import { NR_VDIS, vidToVdiOid, vidToDataOid, oidHex } from '../lib/oid.js';
import {
  decodeInodeHeader, SD_INODE_HEADER_SIZE, maxVdiSize, SD_DATA_OBJ_MAX, SD_MIN_BLOCK_SIZE_SHIFT, SD_MAX_BLOCK_SIZE_SHIFT,
  ctimeSeconds, type InodeHeader,
} from '../lib/inode.js';
import {
  CliError, EXIT_SYSFAIL, EXIT_USAGE, withClient, out, reason, shortTime, snapshotSpec, renderTable, onNode, type Column, type ConnOpts,
} from './common.js';
import { Ring } from '../lib/ring.js';
import { nodeList, checkEcZones } from './node.js';
import { redundancyText, policyOf } from '../lib/erasure-layout.js';

// ------------------------------------------------------------------ create

export interface CreateOpts extends ConnOpts {
  prealloc?: boolean;
  copies?: number;
  /** an erasure code (lib/erasure-layout.ts), with copies X+Y */
  copyPolicy?: number;
  blockSizeShift?: number;
  verbose?: boolean;
}

/** A new VDI's name is checked here first, as the sheep checks it, so the reason is a sentence. */
export function checkNewName(name: string): void {
  const bad = vdiNameProblem(name);
  if (bad) throw new CliError(`Invalid VDI name ${JSON.stringify(name)}: ${bad}`, EXIT_USAGE);
}

export async function vdiCreate(name: string, size: number, o: CreateOpts): Promise<void> {
  checkNewName(name);
  const bss = o.blockSizeShift ?? 0;
  if (bss && bss < SD_MIN_BLOCK_SIZE_SHIFT) throw new CliError(`Object Size is larger than 2^20. Please set shift bit larger than 20`);
  if (bss > SD_MAX_BLOCK_SIZE_SHIFT) throw new CliError(`Object Size is limited to 2^31. Please set shift bit lower than 31`);
  await withClient(o, async (c) => {
    const effBss = bss || (await c.getClusterDefault().catch(() => ({ blockSizeShift: 22 }))).blockSizeShift || 22;
    if (BigInt(size) > maxVdiSize(effBss)) {
      throw new CliError(`VDI size is larger than ${formatSize(Number(maxVdiSize(effBss)))} bytes, please use '-z' to create larger object size volume`, EXIT_USAGE);
    }
    await checkEcZones(o, o.copyPolicy, `Failed to create VDI ${name}`);
    let vid: number;
    try {
      vid = await c.newVdi(name, BigInt(size), { copies: o.copies ?? 0, copyPolicy: o.copyPolicy ?? 0, blockSizeShift: bss });
    } catch (e) {
      throw new CliError(`Failed to create VDI ${name}: ${reason(e)}`);
    }
    if (o.prealloc) {
      const v = await OpenVdi.open(c, vid);
      const os = v.objectSize;
      const bar = progress(`preallocating ${name}`, v.map.length, 'objects');
      for (let idx = 0; idx < v.map.length; idx++) {
        const len = Math.min(os, v.size - idx * os);
        await v.writePiece(idx, 0, Buffer.alloc(len));
        bar.add(1);
      }
      bar.stop();
    }
    if (o.verbose) out(o.raw ? `${vid.toString(16)}\n` : `VDI ID of newly created VDI: ${vid.toString(16)}\n`);
  });
}

// ------------------------------------------------------------------ helpers

async function openByName(c: SheepClient, name: string, snap: string | undefined): Promise<OpenVdi> {
  const { tag, snapid } = snapshotSpec(snap);
  let vid: number;
  try {
    vid = await c.getVdiInfo(name, tag, snapid);
  } catch (e) {
    throw new CliError(`Failed to open VDI ${name} (snapshot id: ${snapid} snapshot tag: ${tag}): ${reason(e)}`);
  }
  return OpenVdi.open(c, vid);
}

/** Every VDI inode header in the cluster, in vid order (what `vdi list` and friends walk). */
/**
 * Every VDI's inode header. An inode that cannot be read (lost, damaged) does not end the listing:
 * its vid goes to `damaged`, when given, and the rest is listed.
 */
export async function allInodes(c: SheepClient, damaged?: (vid: number, why: unknown) => void): Promise<InodeHeader[]> {
  let bitmap: Buffer;
  try {
    bitmap = await c.readVdis();
  } catch (e) {
    if (e instanceof SdError && e.result === Res.WAIT_FOR_FORMAT) return [];
    throw e;
  }
  const vids: number[] = [];
  for (let byte = 0; byte < bitmap.length; byte++) {
    if (!bitmap[byte]) continue;
    for (let bit = 0; bit < 8; bit++) if (bitmap[byte] & (1 << bit)) vids.push(byte * 8 + bit);
  }
  const out: InodeHeader[] = [];
  for (const vid of vids) {
    if (vid >= NR_VDIS) break;
    let h: InodeHeader;
    try {
      h = decodeInodeHeader(await c.readObj(vidToVdiOid(vid), 0, SD_INODE_HEADER_SIZE));
    } catch (e) {
      if (!(e instanceof SdError) || !damaged || (e.result !== Res.NO_OBJ && e.result !== Res.EIO)) throw e;
      damaged(vid, e);
      continue;
    }
    if (h.name) out.push(h); // deleted VDIs keep their bit but have no name
  }
  return out;
}

// ------------------------------------------------------------------ list

/** The columns of `vdi list`, in printf terms "%c %-8s %5d %7s %7s %7s %s  %7x %6s %13s %3d" as dog prints them. */
export const VDI_LIST_COLUMNS: Column[] = [
  {}, { width: 8 }, { width: 5, align: 'right' }, { width: 7, align: 'right' }, { width: 7, align: 'right' },
  { width: 7, align: 'right' }, { width: 16 }, { width: 7, align: 'right', gap: '  ' }, { width: 6, align: 'right' },
  { width: 13, align: 'right' }, { width: 3, align: 'right' },
];
/** dog's header line, which does not follow the columns below it. */
export const VDI_LIST_HEADER = '  Name        Id    Size    Used  Shared    Creation time   VDI id  Copies  Tag   Block Size Shift\n';

export async function vdiList(name: string | undefined, o: ConnOpts): Promise<void> {
  // the whole listing is gathered first: a failure prints no half table
  const lines: string[] = [];
  const rows: Array<Array<string | number>> = [];
  await withClient(o, async (c) => {
    const damaged: number[] = [];
    for (const h of await allInodes(c, (vid) => damaged.push(vid))) {
      if (name !== undefined && h.name !== name) continue;
      const v = await OpenVdi.open(c, h.vdiId);
      const { own, shared } = v.usage();
      const os = v.objectSize;
      const snap = h.snapCtime !== 0n;
      const clone = !snap && h.snapId === 1 && h.parentVdiId !== 0;
      const id = snap ? h.snapId : 0;
      const sec = ctimeSeconds(h.createTime);
      if (o.raw) {
        const type = snap ? 's' : clone ? 'c' : '=';
        lines.push(`${type} ${escapeName(h.name)} ${id} ${h.vdiSize} ${own * os} ${shared * os} ${sec} ${h.vdiId.toString(16)} ${redundancyText(h.nrCopies, h.copyPolicy)} ${h.tag} ${h.blockSizeShift}\n`);
      } else {
        const type = snap ? 's' : clone ? 'c' : ' ';
        rows.push([type, h.name, id, formatSize(Number(h.vdiSize)), formatSize(own * os), formatSize(shared * os), shortTime(sec),
          h.vdiId.toString(16), redundancyText(h.nrCopies, h.copyPolicy), h.tag, h.blockSizeShift]);
      }
    }
    // a VDI whose inode is gone is still in the table: show it, marked, rather than fail the listing
    if (name === undefined) {
      for (const vid of damaged) {
        if (o.raw) lines.push(`d (damaged) 0 - - - - ${vid.toString(16)} - - -\n`);
        else rows.push(['d', '(damaged)', '-', '-', '-', '-', '-', vid.toString(16), '-', '-', '-']);
      }
    }
    out(o.raw ? lines.join('') : VDI_LIST_HEADER + renderTable(VDI_LIST_COLUMNS, rows));
    if (damaged.length) process.stderr.write(`${damaged.length} VDI(s) marked d: the inode object is missing or unreadable on every replica\n`);
  });
}

function escapeName(n: string): string {
  return n.replace(/([\\ ])/g, '\\$1');
}

// ------------------------------------------------------------------ delete

export async function vdiDelete(name: string, o: ConnOpts & { snapshot?: string }): Promise<void> {
  const { tag, snapid } = snapshotSpec(o.snapshot);
  await withClient(o, async (c) => {
    try {
      await c.delVdi(name, tag, snapid);
    } catch (e) {
      if (e instanceof SdError && (e.result === Res.NO_VDI || e.result === Res.NO_TAG)) {
        throw new CliError(`Failed to open VDI ${name} (snapshot id: ${snapid} snapshot tag: ${tag}): ${reason(e)}`);
      }
      throw new CliError(`Failed to delete ${name}: ${reason(e)}`);
    }
  });
}

// ------------------------------------------------------------------ read / write (streaming)

/** Requests kept in flight by vdi read/write: enough to keep the pipe full, bounded in memory. */
const IO_DEPTH = 8;

function clipRange(v: OpenVdi, offset: number, len: number | undefined, what: 'Read' | 'Write'): number {
  if (offset > v.size) throw new CliError(`${what} offset is beyond the end of the VDI`);
  const max = v.size - offset;
  return len === undefined ? max : Math.min(len, max);
}

export async function vdiRead(name: string, offset: number, len: number | undefined, o: ConnOpts & { snapshot?: string }): Promise<void> {
  await withClient(o, async (c) => {
    const v = await openByName(c, name, o.snapshot);
    const total = clipRange(v, offset, len, 'Read');
    const bar = progress(`reading ${name}`, total, 'bytes');
    const pieces = [...v.pieces(offset, total)];
    const inflight: Array<Promise<Buffer>> = [];
    let next = 0;
    const issue = () => {
      while (inflight.length < IO_DEPTH && next < pieces.length) {
        const p = pieces[next++];
        const pr = v.readPiece(p.idx, p.off, p.len);
        pr.catch(() => undefined); // awaited in order below
        inflight.push(pr);
      }
    };
    issue();
    const out = stdoutSink();
    try {
      while (inflight.length) {
        let buf: Buffer;
        try {
          buf = await inflight.shift()!;
        } catch (e) {
          throw new CliError(`Failed to read VDI: ${reason(e)}`);
        }
        issue();
        bar.add(buf.length);
        await out.write(buf);
      }
      await out.end();
    } finally {
      bar.stop();
    }
  });
}

/** Reads stdin into pieces aligned to the VDI's objects, yielding each as soon as it is complete. */
/** The size of stdin when it is a regular file (known before reading), else null. */
function stdinFileSize(): number | null {
  try {
    const st = fs.fstatSync(0);
    return st.isFile() ? st.size - posOfStdin() : null;
  } catch {
    return null;
  }
}

/** Where stdin's file position is (a shell may hand over a file already partly read). */
function posOfStdin(): number {
  try {
    const m = /^pos:\s*(\d+)/m.exec(fs.readFileSync('/proc/self/fdinfo/0', 'utf8'));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

/** `input.overflow` is set when stdin held more than `total` bytes (the rest is not read). */
async function* stdinPieces(v: OpenVdi, offset: number, total: number, input = { overflow: false }): AsyncGenerator<{ idx: number; off: number; data: Buffer }> {
  let pos = 0;
  let cur: Buffer | null = null;
  let fill = 0;
  let piece = { idx: 0, off: 0, len: 0 };
  const nextPiece = () => {
    const abs = offset + pos;
    const os = v.objectSize;
    piece = { idx: Math.floor(abs / os), off: abs % os, len: Math.min(os - (abs % os), total - pos) };
    cur = Buffer.allocUnsafe(piece.len);
    fill = 0;
  };
  nextPiece();
  for await (const chunk of process.stdin as AsyncIterable<Buffer>) {
    if (pos >= total) {
      // everything that fits was written: one more byte means the input was longer
      if (chunk.length) input.overflow = true;
      return;
    }
    let at = 0;
    while (at < chunk.length && pos < total) {
      const k = Math.min(chunk.length - at, piece.len - fill);
      chunk.copy(cur!, fill, at, at + k);
      fill += k;
      at += k;
      pos += k;
      if (fill === piece.len) {
        yield { idx: piece.idx, off: piece.off, data: cur! };
        fill = 0; // written: the end of input must not write it again
        if (pos < total) nextPiece();
      }
    }
    if (pos >= total && at < chunk.length) {
      input.overflow = true;
      return;
    }
  }
  // stdin ended early: write what arrived, nothing more
  if (fill > 0) yield { idx: piece.idx, off: piece.off, data: cur!.subarray(0, fill) };
}

export async function vdiWrite(name: string, offset: number, len: number | undefined, o: ConnOpts): Promise<void> {
  await withClient(o, async (c) => {
    let vid: number;
    try {
      vid = await c.lockVdi(name);
    } catch (e) {
      throw new CliError(`Failed to open VDI ${name} (snapshot id: 0 snapshot tag: ): ${reason(e)}`);
    }
    try {
      const v = await OpenVdi.open(c, vid);
      // what cannot fit is refused before a byte is written: an explicit length, or stdin that is a file
      const want = len ?? stdinFileSize();
      if (offset > v.size || (want !== null && offset + want > v.size)) {
        throw new CliError(`Writing ${want ?? 0} bytes at offset ${offset} would go past the end of ${name} (${v.size} bytes); nothing written`);
      }
      const total = clipRange(v, offset, len, 'Write');
      const inflight = new Set<Promise<void>>();
      let failure: unknown = null;
      const input = { overflow: false };
      const bar = progress(`writing ${name}`, want ?? total, 'bytes');
      try {
        for await (const p of stdinPieces(v, offset, total, input)) {
          const pr: Promise<void> = v.writePiece(p.idx, p.off, p.data)
            .then(() => bar.add(p.data.length))
            .catch((e) => { failure ??= e; })
            .finally(() => inflight.delete(pr));
          inflight.add(pr);
          if (inflight.size >= IO_DEPTH) await Promise.race(inflight);
          if (failure) break;
        }
        await Promise.all(inflight);
      } finally {
        bar.stop();
      }
      if (failure) throw new CliError(`Failed to write VDI: ${reason(failure)}`);
      await c.flushVdi(vid);
      // a pipe longer than the VDI is only known at its end: say what was dropped
      if (len === undefined && input.overflow) {
        throw new CliError(`Input is longer than ${name} (${v.size} bytes): the first ${total} bytes from offset ${offset} were written, the rest was not`);
      }
    } finally {
      await c.releaseVdi(name, vid).catch(() => undefined);
    }
  });
}

// ------------------------------------------------------------------ object

export async function vdiObject(sub: string, name: string, o: ConnOpts & { index?: number; snapshot?: string }): Promise<void> {
  if (o.index !== undefined && o.index >= SD_DATA_OBJ_MAX) {
    out('The offset is too large!\n');
    throw new CliError('', 1);
  }
  const nodes = await nodeList(o);
  await withClient(o, async (c) => {
    let v: OpenVdi;
    try {
      v = await openByName(c, name, o.snapshot);
    } catch (e) {
      throw new CliError(`${(e as Error).message}\nFATAL: no inode objects`);
    }
    if (sub === 'map') {
      const idxs = o.index !== undefined ? [o.index] : [...v.map.keys()].filter((i) => v.map[i]);
      // dog's header line, which does not follow the columns below it
      out('Index       VID\n');
      out(renderTable([{}, { width: 8, align: 'right' }], idxs.map((i) => [String(i).padStart(8, '0'), (v.map[i] ?? 0).toString(16)])));
      return;
    }
    let oid: bigint;
    if (o.index === undefined) {
      oid = vidToVdiOid(v.vid);
      out(`Looking for the inode object 0x${v.vid.toString(16)} with ${nodes.nodes.length} nodes\n\n`);
    } else {
      const owner = v.map[o.index] ?? 0;
      if (!owner) {
        out(`The inode object 0x${v.vid.toString(16)} idx ${o.index} is not allocated\n`);
        return;
      }
      oid = vidToDataOid(owner, o.index);
      const redundancy = v.header.copyPolicy ? `${redundancyText(v.header.nrCopies, v.header.copyPolicy)} erasure coded` : `${v.header.nrCopies} copies`;
      out(`Looking for the object ${oidHex(oid)} (vid 0x${v.vid.toString(16)} idx ${o.index}, ${redundancy}) with ${nodes.nodes.length} nodes\n\n`);
    }
    const ec = o.index === undefined ? null : policyOf(v.header.copyPolicy);
    if (ec) {
      // an erasure-coded object is its strips: which node holds which, and where the ring puts each
      const total = ec.d + ec.p;
      for (const n of nodes.nodes) {
        const held: number[] = [];
        for (let i = 0; i < total; i++) {
          if (await onNode(n.host, n.port, (c) => c.peerReadStrip(oid, v.header.copyPolicy, i, 0, 0).then(() => true, () => false))) held.push(i);
        }
        out(`${n.host}:${n.port} ${held.length ? `has strip ${held.join(', ')}` : "doesn't have the object"}\n`);
      }
      const where = new Ring(nodes.nodes).replicas(oid, total);
      out(`\nAccording to sheepdog algorithm, the ${total} strips should be located at:\n${where.map((n, i) => `${i}:${n.host}:${n.port}`).join(' ')}\n`);
      return;
    }
    for (const n of nodes.nodes) {
      const has = await hasObject(n.host, n.port, oid);
      out(`${n.host}:${n.port} ${has ? 'has' : "doesn't have"} the object\n`);
    }
    const copies = v.header.nrCopies;
    if (nodes.nodes.length < copies) {
      out(`\nBecause number of nodes (${nodes.nodes.length}) is less than number of copies (${copies}), the object should be located at every nodes.\n`);
    } else {
      const where = new Ring(nodes.nodes).replicas(oid, copies);
      out(`\nAccording to sheepdog algorithm, the object should be located at:\n${where.map((n) => `${n.host}:${n.port}`).join(' ')}\n`);
    }
  });
}

async function hasObject(host: string, port: number, oid: bigint): Promise<boolean> {
  return onNode(host, port, async (c) => {
    try {
      return await c.hasLocalObject(oid);
    } catch (e) {
      throw new CliError(`failed to look up ${oidHex(oid)} on ${host}:${port}: ${reason(e)}`, EXIT_SYSFAIL);
    }
  });
}

