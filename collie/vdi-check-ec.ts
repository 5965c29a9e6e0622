// collie vdi check of an erasure-coded data object: each of its X+Y strips must be on its node (the
// i-th of the object's placement), and the strips must agree (the parity of the data strips is
// the parity strips). A missing strip is decoded from X others and written to its node; a
// corrupted strip (the one whose omission makes the others agree) is replaced the same way.

import { encode, decode } from '../native/erasure.js';
import { oidHex } from '../lib/oid.js';
import { stripKey, stripSize, type EcPolicy } from '../lib/erasure-layout.js';
import type { Ring } from '../lib/ring.js';
import type { NodeInfo } from '../lib/node.js';
import { onNode, out } from './common.js';

type Node = NodeInfo;

export interface EcCheckResult {
  /** strips absent from their node */
  missing: number;
  /** fewer than X strips left: nothing to rebuild from */
  lost: boolean;
  /** strips disagree and the culprit is not clear (or the VDI is in use): not repaired */
  undecided: boolean;
}

/** Whether strips `use` (at least X+1 of them) agree: any X of them give back the others. */
function agree(ec: EcPolicy, strips: Map<number, Buffer>, use: number[]): boolean {
  const base = use.slice(0, ec.d);
  const rest = use.slice(ec.d);
  if (!rest.length) return true;
  const got = decode(ec.d, ec.p, base.map((i) => strips.get(i)!), base, rest);
  return rest.every((r, j) => got[j].equals(strips.get(r)!));
}

function at(n: Node): string {
  return `${n.host}:${n.port}`;
}

export async function checkErasureObject(
  oid: bigint, ec: EcPolicy, copyPolicy: number, objectSize: number, nodes: Node[], ring: Ring<Node>,
  lists: Array<Map<string, number>>, o: { exist?: boolean; inUse: boolean; name: string },
): Promise<EcCheckResult> {
  const total = ec.d + ec.p;
  const targets = ring.replicas(oid, total);
  const res: EcCheckResult = { missing: 0, lost: false, undecided: false };
  const holdersOf = (i: number) => nodes.filter((_, k) => lists[k].has(oidHex(stripKey(oid, i))));
  const absent: number[] = [];
  for (let i = 0; i < total; i++) {
    const t = targets[i];
    if (t && !holdersOf(i).includes(t)) {
      out(`[${at(t)}] oid ${oidHex(oid)}_${i} is missing.\n`);
      res.missing++;
      absent.push(i);
    }
  }
  if (o.exist) return res;
  // every strip from its node, else from any node holding it
  const size = stripSize(ec, objectSize);
  const strips = new Map<number, Buffer>();
  const from = new Map<number, Node>();
  for (let i = 0; i < total; i++) {
    const holders = holdersOf(i);
    const order = [...holders.filter((h) => h === targets[i]), ...holders.filter((h) => h !== targets[i])];
    for (const h of order) {
      try {
        strips.set(i, await onNode(h.host, h.port, (c) => c.peerReadStrip(oid, copyPolicy, i, 0, size)));
        from.set(i, h);
        break;
      } catch { /* the next holder */ }
    }
  }
  const have = [...strips.keys()];
  if (have.length < ec.d) {
    out(`oid ${oidHex(oid)}: only ${have.length} of ${total} strips left, ${ec.d} are needed; not repaired\n`);
    res.lost = true;
    return res;
  }
  // the strips must agree; else the one whose omission makes the rest agree is corrupt
  let bad: number | null = null;
  if (!agree(ec, strips, have)) {
    const culprits = have.length - 1 > ec.d ? have.filter((j) => agree(ec, strips, have.filter((i) => i !== j))) : [];
    if (o.inUse) {
      out(`oid ${oidHex(oid)}: strips disagree while ${o.name} is in use; not repaired (check again when it is not in use)\n`);
      res.undecided = true;
      return res;
    }
    if (culprits.length !== 1) {
      out(`oid ${oidHex(oid)}: strips disagree and no single strip explains it; not repaired\n`);
      res.undecided = true;
      return res;
    }
    bad = culprits[0];
  }
  const good = have.filter((i) => i !== bad).slice(0, ec.d);
  const rebuild = [...absent.filter((i) => targets[i]), ...(bad === null ? [] : [bad])];
  if (!rebuild.length) return res;
  // data strips first, then their parity: the whole object consistent again
  const data = decode(ec.d, ec.p, good.map((i) => strips.get(i)!), good, Array.from({ length: ec.d }, (_, i) => i).filter((i) => !good.includes(i)));
  const all = new Map<number, Buffer>(good.map((i) => [i, strips.get(i)!]));
  Array.from({ length: ec.d }, (_, i) => i).filter((i) => !good.includes(i)).forEach((i, j) => all.set(i, data[j]));
  const parity = encode(Array.from({ length: ec.d }, (_, i) => all.get(i)!), ec.p);
  parity.forEach((p, j) => all.set(ec.d + j, p));
  for (const i of rebuild) {
    const where = i === bad ? [...new Set([from.get(i)!, targets[i]].filter(Boolean))] : [targets[i]];
    for (const n of where) await onNode(n.host, n.port, (c) => c.peerCreateStrip(oid, copyPolicy, i, all.get(i)!));
    out(i === bad ? `fixed strip ${oidHex(oid)}_${i} on ${where.map(at).join(', ')}\n` : `fixed missing ${oidHex(oid)}_${i}\n`);
  }
  return res;
}
