// collie vdi snapshot / clone / rollback / resize / tree / graph: the VDI family, driven with
// exactly the requests QEMU's driver uses, so images made by collie and by QEMU mix freely.

import { SheepClient } from '../lib/client.js';
import { Res, SdError } from '../lib/proto.js';
import { formatSize } from '../lib/units.js';
import { OpenVdi } from '../lib/vdi-io.js';
import { vidToVdiOid } from '../lib/oid.js';
import { InodeOff, SD_INODE_HEADER_SIZE, maxVdiSize, decodeInodeHeader, ctimeSeconds, type InodeHeader } from '../lib/inode.js';
import { CliError, EXIT_USAGE, withClient, out, reason, shortTime, snapshotSpec, padL, confirm } from './common.js';
import type { ConnOpts } from './common.js';
import { allInodes, checkNewName } from './vdi.js';
import { progress } from './progress.js';

function openError(name: string, snap: string | undefined, e: unknown): CliError {
  const { tag, snapid } = snapshotSpec(snap);
  return new CliError(`Failed to open VDI ${name} (snapshot id: ${snapid} snapshot tag: ${tag}): ${reason(e)}`);
}

export async function resolveVid(c: SheepClient, name: string, snap?: string): Promise<number> {
  const { tag, snapid } = snapshotSpec(snap);
  try {
    return await c.getVdiInfo(name, tag, snapid);
  } catch (e) {
    throw openError(name, snap, e);
  }
}

// ------------------------------------------------------------------ snapshot

/** What QEMU's `snapshot -c` does: tag the working inode, then NEW_VDI with snapid=1. */
export async function takeSnapshot(c: SheepClient, name: string, tag: string): Promise<{ snapshot: number; working: number }> {
  let vid: number;
  try {
    vid = await c.getVdiInfo(name);
  } catch (e) {
    throw new CliError(`Failed to create snapshot for ${name}: ${reason(e)}`);
  }
  if (tag) {
    const exists = await c.getVdiInfo(name, tag).then(() => true, () => false);
    if (exists) throw new CliError(`Failed to create snapshot for ${name}, maybe snapshot id (0) or tag (${tag}) is existed`);
  }
  const field = Buffer.alloc(256);
  if (Buffer.byteLength(tag) >= 256) throw new CliError('the snapshot tag must be shorter than 256 bytes', EXIT_USAGE);
  field.write(tag);
  const size = decodeInodeHeader(await c.readObj(vidToVdiOid(vid), 0, SD_INODE_HEADER_SIZE)).vdiSize;
  try {
    await c.writeObj(vidToVdiOid(vid), InodeOff.tag, field);
    const working = await c.newVdi(name, size, { baseVdiId: vid, snapshot: true });
    return { snapshot: vid, working };
  } catch (e) {
    throw new CliError(`Failed to create snapshot for ${name}: ${reason(e)}`);
  }
}

export async function vdiSnapshot(name: string, o: ConnOpts & { snapshot?: string; verbose?: boolean }): Promise<void> {
  await withClient(o, async (c) => {
    const r = await takeSnapshot(c, name, o.snapshot ?? '');
    if (o.verbose) {
      out(o.raw ? `${r.working.toString(16)} ${r.snapshot.toString(16)}\n`
        : `new VID of original VDI: ${r.working.toString(16)}, VDI ID of newly created snapshot: ${r.snapshot.toString(16)}\n`);
    }
  });
}

// ------------------------------------------------------------------ clone

export async function vdiClone(src: string, dst: string, o: ConnOpts & { snapshot?: string; prealloc?: boolean; full?: boolean }): Promise<void> {
  if (!o.snapshot) throw new CliError("Only snapshot VDIs can be cloned\nPlease specify the '-s' option", EXIT_USAGE);
  checkNewName(dst);
  await withClient(o, async (c) => {
    const snapVid = await resolveVid(c, src, o.snapshot);
    const base = await OpenVdi.open(c, snapVid);
    if (base.header.snapCtime === 0n) throw new CliError("Only snapshot VDIs can be cloned");
    let vid: number;
    try {
      vid = o.full
        ? await c.newVdi(dst, base.header.vdiSize, { copies: base.header.nrCopies, copyPolicy: base.header.copyPolicy, blockSizeShift: base.header.blockSizeShift })
        : await c.newVdi(dst, base.header.vdiSize, { baseVdiId: snapVid });
    } catch (e) {
      throw new CliError(`Failed to create VDI ${dst}: ${reason(e)}`);
    }
    if (!o.full && !o.prealloc) return;
    const v = await OpenVdi.open(c, vid);
    const bar = progress(`${o.full ? 'copying' : 'preallocating'} ${dst}`, v.map.length, 'objects');
    for (let idx = 0; idx < v.map.length; idx++) {
      bar.add(1);
      const len = Math.min(v.objectSize, v.size - idx * v.objectSize);
      if (o.full) {
        // an independent copy: the data, no lineage
        if (base.map[idx]) await v.writePiece(idx, 0, await base.readPiece(idx, 0, len));
        else if (o.prealloc) await v.writePiece(idx, 0, Buffer.alloc(len));
      } else if (v.map[idx] === 0) {
        await v.writePiece(idx, 0, Buffer.alloc(len));
      } else if (v.map[idx] !== vid) {
        await v.writePiece(idx, 0, Buffer.alloc(0)); // copy-on-write of the whole object, no change
      }
    }
    bar.stop();
  });
}

// ------------------------------------------------------------------ rollback

/** What QEMU's `snapshot -a` does: drop the working VDI, start a new one from the snapshot. */
export async function rollbackTo(c: SheepClient, name: string, snapVid: number): Promise<number> {
  const size = decodeInodeHeader(await c.readObj(vidToVdiOid(snapVid), 0, SD_INODE_HEADER_SIZE)).vdiSize;
  try {
    await c.delVdi(name);
  } catch (e) {
    if (!(e instanceof SdError && e.result === Res.NO_VDI)) throw new CliError(`Failed to delete the working VDI ${name}: ${reason(e)}`);
  }
  try {
    return await c.newVdi(name, size, { baseVdiId: snapVid });
  } catch (e) {
    throw new CliError(`Failed to create the working VDI ${name} from the snapshot: ${reason(e)}`);
  }
}

export async function vdiRollback(name: string, o: ConnOpts & { snapshot?: string; force?: boolean; verbose?: boolean }): Promise<void> {
  if (!o.snapshot) throw new CliError("Please specify the '-s' option", EXIT_USAGE);
  await withClient(o, async (c) => {
    const snapVid = await resolveVid(c, name, o.snapshot);
    if (!o.force && !(await confirm('This operation discards any changes made since the previous\nsnapshot was taken.  Continue?'))) {
      throw new CliError('rollback not confirmed; nothing changed (use -f to skip the question)');
    }
    const vid = await rollbackTo(c, name, snapVid);
    if (o.verbose) out(`new VID of ${name}: ${vid.toString(16)}\n`);
  });
}

// ------------------------------------------------------------------ resize

export async function vdiResize(name: string, size: number, o: ConnOpts): Promise<void> {
  await withClient(o, async (c) => {
    const vid = await resolveVid(c, name);
    const h = decodeInodeHeader(await c.readObj(vidToVdiOid(vid), 0, SD_INODE_HEADER_SIZE));
    if (BigInt(size) < h.vdiSize) throw new CliError('Shrinking VDIs is not implemented');
    if (BigInt(size) > maxVdiSize(h.blockSizeShift)) {
      throw new CliError(`New VDI size is too large. This volume's max size is ${maxVdiSize(h.blockSizeShift)}`);
    }
    const f = Buffer.alloc(8);
    f.writeBigUInt64LE(BigInt(size));
    try {
      await c.writeObj(vidToVdiOid(vid), InodeOff.vdiSize, f);
    } catch (e) {
      throw new CliError(`Failed to update an inode header: ${reason(e)}`);
    }
  });
}

// ------------------------------------------------------------------ tree and graph

interface Family {
  roots: InodeHeader[];
  children: Map<number, InodeHeader[]>;
}

function family(all: InodeHeader[]): Family {
  const byVid = new Map(all.map((h) => [h.vdiId, h]));
  const children = new Map<number, InodeHeader[]>();
  const roots: InodeHeader[] = [];
  for (const h of all) {
    const p = h.parentVdiId ? byVid.get(h.parentVdiId) : undefined;
    if (!p) { roots.push(h); continue; }
    let l = children.get(p.vdiId);
    if (!l) children.set(p.vdiId, (l = []));
    l.push(h);
  }
  // the same-name continuation first (the VDI's own history), then clones by vid
  for (const [pv, l] of children) {
    const pname = byVid.get(pv)!.name;
    l.sort((a, b) => Number(b.name === pname) - Number(a.name === pname) || a.vdiId - b.vdiId);
  }
  return { roots, children };
}

function treeLabel(h: InodeHeader, showName: boolean): string {
  const t = h.snapCtime !== 0n ? `[${shortTime(ctimeSeconds(h.createTime))}${h.tag ? ` ${h.tag}` : ''}]` : '(You Are Here)';
  return showName ? `${h.name}---${t}` : t;
}

function drawTree(h: InodeHeader, parentName: string | null, f: Family): string[] {
  const me = treeLabel(h, h.name !== parentName);
  const kids = f.children.get(h.vdiId) ?? [];
  if (!kids.length) return [me];
  const blocks = kids.map((k) => drawTree(k, h.name, f));
  if (blocks.length === 1) {
    const pad = ' '.repeat(me.length + 3);
    return blocks[0].map((l, j) => (j === 0 ? `${me}---${l}` : pad + l));
  }
  const pad = ' '.repeat(me.length);
  const lines: string[] = [];
  blocks.forEach((blk, i) => {
    const last = i === blocks.length - 1;
    const conn = i === 0 ? '-+-' : last ? ' `-' : ' |-';
    const cont = last ? '   ' : ' | ';
    blk.forEach((l, j) => lines.push(j === 0 ? (i === 0 ? me : pad) + conn + l : pad + cont + l));
  });
  return lines;
}

export async function vdiTree(o: ConnOpts): Promise<void> {
  const all = await withClient(o, (c) => allInodes(c));
  const f = family(all);
  for (const r of f.roots) for (const l of drawTree(r, null, f)) out(`${l}\n`);
}

function dotString(s: string): string {
  return s.replace(/\\/g, '\\\\').replace(/"/g, '\\"');
}

export async function vdiGraph(o: ConnOpts): Promise<void> {
  const all = await withClient(o, (c) => allInodes(c));
  const live = new Set(all.map((h) => h.vdiId));
  out('digraph G {\n  node [shape = "box", fontname = "Courier"];\n\n  "0" [shape = "ellipse", label = "root"];\n\n');
  for (const h of all) {
    const vid = h.vdiId.toString(16);
    const parent = h.parentVdiId && live.has(h.parentVdiId) ? h.parentVdiId.toString(16) : '0';
    const sec = ctimeSeconds(h.createTime);
    const [date, time] = shortTime(sec, true).split(' ');
    const snap = h.snapCtime !== 0n;
    const label = [
      `Name:${padL(dotString(h.name), 11)}`,
      `Tag:${padL(snap ? h.snapId : 0, 12)}`,
      `Size:${padL(formatSize(Number(h.vdiSize)), 11)}`,
      `Date:${padL(date, 11)}`,
      `Time:${padL(time, 11)}`,
    ].join('\\n');
    out(`  "${parent}" -> "${vid}";\n  "${vid}" [\n    group = "${dotString(h.name)}",\n    label = "${label}"${snap ? '' : ',\n    color="red"'}\n  ];\n\n`);
  }
  out('}\n');
}
