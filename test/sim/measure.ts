// Figures of a simulated cluster (sim-cluster.ts): what one membership change costs the group and
// every member, and how the placement ring spreads and moves objects.

import { Ring } from '../../lib/ring.js';
import type { NodeInfo } from '../../lib/node.js';
import { newCounters } from './sim-group.js';
import { simNodeInfo, type SimCluster } from './sim-cluster.js';

export interface ChangeCost {
  /** epochs the change added */
  epochs: number;
  messages: number;
  bytesSent: number;
  bytesDelivered: number;
  /** the largest message multicast */
  largest: number;
  /** joiners' state fetched from the master point to point (not through the group) */
  fetchedBytes: number;
  /** CPU ms of the membership protocol, summed over the members, and the most one member spent */
  cpuSumMs: number;
  cpuMaxMs: number;
  /** CPU ms of bringing each member's placement ring up to date (the first request after the change) */
  ringSumMs: number;
  ringMaxMs: number;
  wallMs: number;
}

/**
 * Runs `change` delivering every event member by member (each applies it before the next gets it),
 * so that each member's CPU is known.
 */
export async function measureChange(c: SimCluster, change: () => Promise<void>): Promise<ChangeCost> {
  const cpu = new Map<string, number>();
  c.bus.counters = newCounters();
  c.bus.mode = 'each';
  c.bus.onApplied = (id, us) => cpu.set(id, (cpu.get(id) ?? 0) + us);
  const epoch = c.epoch;
  const t0 = performance.now();
  try {
    await change();
  } finally {
    c.bus.mode = 'all';
    c.bus.onApplied = () => undefined;
  }
  const wallMs = performance.now() - t0;
  const ring = new Map<string, number>();
  c.placement((n, us) => ring.set(n.info.nid, us));
  const k = c.bus.counters;
  const sum = (m: Map<string, number>) => [...m.values()].reduce((a, b) => a + b, 0) / 1000;
  const max = (m: Map<string, number>) => Math.max(0, ...m.values()) / 1000;
  return {
    epochs: c.epoch - epoch,
    messages: k.mcasts,
    bytesSent: k.bytesSent,
    bytesDelivered: k.bytesDelivered,
    largest: k.largest,
    fetchedBytes: k.fetchedBytes,
    cpuSumMs: sum(cpu),
    cpuMaxMs: max(cpu),
    ringSumMs: sum(ring),
    ringMaxMs: max(ring),
    wallMs,
  };
}

/** Heap and array buffers in use after a full GC (needs --expose-gc; 0 without it). */
export function memoryInUse(): number {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (!gc) return 0;
  gc();
  gc();
  const m = process.memoryUsage();
  return m.heapUsed + m.arrayBuffers;
}

export interface Placement {
  /** most copies on one node over the mean */
  maxOverMean: number;
  /** share of objects whose replica set changed, and share of copies that must move */
  joinObjects: number;
  /** share of objects whose first replica (the coordinating node) changed on a join */
  joinPrimaries: number;
  joinCopies: number;
  leaveObjects: number;
  leaveCopies: number;
  /** the ideal share of copies that move: 1/N of the larger membership */
  joinIdeal: number;
  leaveIdeal: number;
}

/** `count` object ids spread like a cluster's: many VDIs, consecutive data objects in each. */
export function objectIds(count: number): BigUint64Array {
  const out = new BigUint64Array(count);
  const perVdi = 1000;
  for (let i = 0; i < count; i++) out[i] = (BigInt(0x100000 + Math.floor(i / perVdi)) << 32n) | BigInt(i % perVdi);
  return out;
}

/** Every object's replicas on `ring`, as node indexes into `nodes` (copies per object). */
function placeAll(ring: Ring<NodeInfo>, nodes: NodeInfo[], oids: BigUint64Array, copies: number): Int32Array {
  const index = new Map(nodes.map((n, i) => [n, i]));
  const out = new Int32Array(oids.length * copies).fill(-1);
  for (let o = 0; o < oids.length; o++) {
    const r = ring.replicas(oids[o], copies);
    for (let c = 0; c < r.length; c++) out[o * copies + c] = index.get(r[c])!;
  }
  return out;
}

/** Objects whose replica set changed, and copies on nodes that did not hold them before. */
function moved(before: Int32Array, after: Int32Array, copies: number): { objects: number; copies: number; primaries: number } {
  let objects = 0, copiesMoved = 0;
  for (let o = 0; o < before.length; o += copies) {
    let changed = false;
    for (let c = 0; c < copies; c++) {
      const n = after[o + c];
      let had = false;
      for (let d = 0; d < copies; d++) if (before[o + d] === n) had = true;
      if (!had) { copiesMoved++; changed = true; }
    }
    if (changed) objects++;
  }
  let primaries = 0;
  for (let o = 0; o < before.length; o += copies) if (before[o] !== after[o]) primaries++;
  return { objects: objects / (before.length / copies), copies: copiesMoved / before.length, primaries: primaries / (before.length / copies) };
}

/**
 * Ring balance over `count` objects (3 copies) on n nodes with the default 64 vnodes, and what moves
 * when one node joins (n+1 nodes) or one leaves (n-1).
 */
export function placementFigures(n: number, count: number, copies = 3): Placement {
  const all = Array.from({ length: n + 1 }, (_, i) => simNodeInfo(i));
  const nodes = all.slice(0, n);
  const oids = objectIds(count);
  const ring = new Ring(nodes);
  const base = placeAll(ring, all, oids, copies);
  const per = new Float64Array(n);
  for (const i of base) per[i]++;
  const mean = (count * copies) / n;
  const joined = placeAll(new Ring(all, ring), all, oids, copies);
  const left = placeAll(new Ring(nodes.filter((_, i) => i !== Math.floor(n / 2)), ring), all, oids, copies);
  const j = moved(base, joined, copies);
  const l = moved(base, left, copies);
  return {
    maxOverMean: Math.max(...per) / mean,
    joinObjects: j.objects,
    joinPrimaries: j.primaries,
    joinCopies: j.copies,
    leaveObjects: l.objects,
    leaveCopies: l.copies,
    joinIdeal: 1 / (n + 1),
    leaveIdeal: 1 / n,
  };
}
