// collie vdi setattr / getattr / lock / check.

import { Op, Res, SdError } from '../lib/proto.js';
import { OpenVdi } from '../lib/vdi-io.js';
import { vidToVdiOid, vidToDataOid, oidHex } from '../lib/oid.js';
import type { AttrReply, LockInfo, ObjList } from '../lib/admin.js';
import crypto from 'node:crypto';
import { chooseReplica } from '../lib/replica.js';
import { CliError, EXIT_SYSFAIL, EXIT_EXISTS, EXIT_MISSING, withClient, out, reason, vdiIdOf, renderTable, onNode, type Column, type ConnOpts } from './common.js';
import { Ring } from '../lib/ring.js';
import { SD_INODE_SIZE } from '../lib/inode.js';
import { nodeList } from './node.js';
import { progress } from './progress.js';
import { checkErasureObject } from './vdi-check-ec.js';
import { policyOf } from '../lib/erasure-layout.js';
import { resolveVid } from './vdi-family.js';

// ------------------------------------------------------------------ attributes

async function readStdin(): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const chunk of process.stdin as AsyncIterable<Buffer>) parts.push(chunk);
  return Buffer.concat(parts);
}

function attrError(e: unknown, key: string): CliError {
  if (e instanceof SdError) {
    if (e.result === Res.NO_VDI || e.result === Res.NO_TAG) return new CliError('VDI not found', EXIT_MISSING);
    if (e.result === Res.NO_OBJ) return new CliError(`Attribute '${key}' not found`, EXIT_MISSING);
    if (e.result === Res.VDI_EXIST) return new CliError(`The attribute '${key}' already exists`, EXIT_EXISTS);
  }
  return new CliError(`Failed to access attribute '${key}': ${reason(e)}`);
}

export async function vdiSetattr(name: string, key: string, value: string | undefined, o: ConnOpts & { delete?: boolean; exclusive?: boolean }): Promise<void> {
  const data = o.delete ? undefined : value !== undefined ? Buffer.from(value) : await readStdin();
  const mode = o.delete ? 'delete' : o.exclusive ? 'exclusive' : 'set';
  await withClient(o, async (c) => {
    try {
      await c.control<AttrReply>(Op.GET_VDI_ATTR, { name, key, value: data, mode });
    } catch (e) {
      throw attrError(e, key);
    }
  });
}

export async function vdiGetattr(name: string, key: string, o: ConnOpts): Promise<void> {
  await withClient(o, async (c) => {
    let r: AttrReply;
    try {
      r = await c.control<AttrReply>(Op.GET_VDI_ATTR, { name, key, mode: 'get' });
    } catch (e) {
      throw attrError(e, key);
    }
    process.stdout.write(Buffer.from(r.value ?? []));
  });
}

// ------------------------------------------------------------------ locks

/** Name, Id, VDI id, Tag, Owner node(s). */
const LOCK_COLUMNS: Column[] = [
  { width: 12, gap: '  ' }, { width: 3, align: 'right', gap: '' }, { width: 8, align: 'right', gap: '' }, { width: 15, gap: '  ' }, { gap: '' },
];

export async function vdiLockList(o: ConnOpts): Promise<void> {
  const locks = await withClient(o, (c) => c.control<LockInfo[]>(Op.LOCK_LIST));
  if (o.raw) {
    for (const l of locks) out(`${l.name} ${l.snapId} ${l.vid.toString(16)} ${l.tag} ${l.owners.join(' ')}\n`);
    return;
  }
  const rows = locks.map((l) => [l.name, l.snapId, l.vid.toString(16), l.tag, l.owners.join(' ')]);
  out(renderTable(LOCK_COLUMNS, [['Name', 'Id', 'VDI id', 'Tag', 'Owner node(s)'], ...rows]));
}

export async function vdiLockUnlock(name: string, o: ConnOpts & { snapshot?: string }): Promise<void> {
  await withClient(o, async (c) => {
    const vid = await resolveVid(c, name, o.snapshot);
    try {
      await c.control(Op.LOCK_FORCE_RELEASE, { vid });
    } catch (e) {
      if (e instanceof SdError && e.result === Res.VDI_NOT_LOCKED) throw new CliError(`VDI ${name} (vid=${vid.toString(16)}) is not locked`);
      throw new CliError(`Failed to unlock ${name}: ${reason(e)}`);
    }
  });
}

// ------------------------------------------------------------------ check

/** One replica of an object as a node holds it. */
interface Replica {
  node: NodeInfoLike;
  data: Buffer;
  digest: string;
  epoch: number;
}
type NodeInfoLike = { host: string; port: number; nid: string };

/**
 * Checks that the inode and every object the VDI maps have their N copies, and that the copies are
 * identical. A missing copy is rebuilt from another replica; copies that differ are all replaced by
 * the one chooseReplica picks. With no copy left the check reports the object as lost.
 */
export async function vdiCheck(name: string, o: ConnOpts & { snapshot?: string; exist?: boolean }): Promise<void> {
  const nodes = (await nodeList(o)).nodes;
  await withClient(o, async (c) => {
    const vid = await vdiIdOf(c, name, o.snapshot);
    const v = await OpenVdi.open(c, vid);
    const problems: string[] = [];
    if (v.header.vdiId !== vid || v.header.name !== name) problems.push(`inode ${oidHex(vidToVdiOid(vid))} names ${v.header.name}/${v.header.vdiId.toString(16)}`);
    const oids = [vidToVdiOid(vid), ...[...v.map.entries()].filter(([, owner]) => owner).map(([idx, owner]) => vidToDataOid(owner, idx))];
    const copies = v.header.nrCopies;
    const ring = new Ring(nodes);
    // every node's objects with their last-write epochs, asked once
    const lists = await Promise.all(nodes.map((n) => onNode(n.host, n.port, async (nc) => {
      try {
        return new Map(await nc.control<ObjList>(Op.GET_OBJ_LIST));
      } catch (e) {
        throw new CliError(`failed to list the objects of ${n.host}:${n.port}: ${reason(e)}`, EXIT_SYSFAIL);
      }
    })));
    let missingReplicas = 0;
    let lost = 0;
    let undecided = 0;
    // a VDI a client holds open may be written during the check: differing copies are only reported
    const inUse = (await c.control<LockInfo[]>(Op.LOCK_LIST)).some((l) => l.vid === vid);
    const bar = progress(`checking ${name}`, oids.length, 'objects');
    const ec = policyOf(v.header.copyPolicy);
    for (const oid of oids) {
      bar.add(1);
      const hex = oidHex(oid);
      if (ec && oid >> 63n === 0n) {
        // an erasure-coded data object: its strips, not copies
        const r = await checkErasureObject(oid, ec, v.header.copyPolicy, 2 ** v.header.blockSizeShift, nodes, ring, lists, { exist: o.exist, inUse, name });
        missingReplicas += r.missing;
        if (r.lost) lost++;
        if (r.undecided) undecided++;
        continue;
      }
      const targets = nodes.length < copies ? nodes : ring.replicas(oid, copies);
      const holders = nodes.filter((_, i) => lists[i].has(hex));
      const missing = targets.filter((t) => !holders.includes(t));
      for (const m of missing) out(`[${m.host}:${m.port}] oid ${hex} is missing.\n`);
      missingReplicas += missing.length;
      if (o.exist) continue;
      if (!holders.length) { lost++; continue; }
      const size = oid >> 63n ? SD_INODE_SIZE : 2 ** v.header.blockSizeShift;
      const readReplicas = async (): Promise<Replica[]> => {
        const got: Replica[] = [];
        for (const h of holders) {
          const data = await onNode(h.host, h.port, (nc) => nc.peerRead(oid, 0, size));
          got.push({ node: h, data, digest: crypto.createHash('sha256').update(data).digest('hex'), epoch: lists[nodes.indexOf(h)].get(hex) ?? 0 });
        }
        return got;
      };
      let replicas = await readReplicas();
      // a write in flight between two reads looks like a difference: look again before judging
      if (new Set(replicas.map((r) => r.digest)).size > 1) replicas = await readReplicas();
      let good = chooseReplica(replicas);
      if (new Set(replicas.map((r) => r.digest)).size > 1) {
        if (inUse) {
          out(`oid ${hex}: copies differ while ${name} is in use; not repaired (check again when it is not in use)\n`);
          undecided++;
          good = null;
        } else if (!good) {
          out(`oid ${hex}: copies of the same epoch differ and as many agree on each; not repaired\n`);
          undecided++;
        } else {
          const wrong = replicas.filter((r) => r.digest !== good!.digest);
          for (const r of wrong) await onNode(r.node.host, r.node.port, (nc) => nc.peerCreate(oid, good!.data));
          out(`fixed replica ${hex} on ${wrong.map((r) => `${r.node.host}:${r.node.port}`).join(', ')}\n`);
        }
      }
      // a missing copy is rebuilt from the chosen one, or from any when they all agree
      if (!good) continue; // counted above: nothing to rebuild a missing copy from with confidence
      for (const m of missing) await onNode(m.host, m.port, (nc) => nc.peerCreate(oid, good.data));
      if (missing.length) out(`fixed missing ${hex}\n`);
    }
    bar.stop();
    for (const p of problems) out(`${p}\n`);
    if (o.exist) {
      if (missingReplicas || problems.length) {
        out(`${name} lost ${missingReplicas} object(s).\n`);
        throw new CliError('', 1);
      }
      out(`${name} is fine, no object is missing.\n`);
      return;
    }
    if (lost) throw new CliError(`${name}: ${lost} object(s) have no replica left to repair from`, 1);
    if (undecided) throw new CliError(`${name}: ${undecided} object(s) not repaired (see above)`, 1);
    out(`finish check&repair ${name}\n`);
  });
}
