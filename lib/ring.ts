// Placement: consistent hashing on a ring of virtual nodes (DESIGN.md §4). Each node contributes
// `vnodes` points; an object's replicas are the owners of its N closest probes (below), distinct
// nodes in distinct zones when zones differ.
//
// Position: multi-probe consistent hashing. With 64 random points per node a node's share of the ring
// varies by ~12% (one standard deviation), so 8 nodes commonly end up 20-30% apart. The object is
// hashed PROBES times (FNV-1a-64 of [probe, oid as 8 bytes LE]) and each probe meets the point that
// follows it; the closest such point is the object's position (its first copy), the next closest
// probes give the other copies (replicas()). A new node's point can only shorten a probe's
// distance, so a join moves copies only to the new node, and one per object it takes.
// Measured with 3 copies (16 probes, 64 vnodes): 100 nodes within 8% of the mean; a join moves 1.01x
// the ideal 1/N of the copies (following the first copy around the ring, as before, moved 1.5x).
// Lookup stays O(PROBES x log points).
//
// A point is FNV-1a-64 of "host:port:i", hashed once more as 8 bytes: names that differ only in their
// last characters (ports, vnode numbers) give FNV values that differ mostly in low bits, which would
// cluster each node's points; the second pass spreads them (measured: ±3% instead of ±30% per node).

import { fnv1a64Words, prefixWords, vnodePointWords } from './fnv.js';

export interface RingNode {
  nid: string;
  host: string;
  port: number;
  zone: number;
  vnodes: number;
}

const PROBES = 16;

/**
 * Points per block of a ring built from scratch. A ring is a list of blocks of sorted points, never
 * changed once made: a ring derived from another shares every block the change does not touch, so
 * a change of one node's 64 vnodes copies at most 64 blocks, not every point (at 1,000 nodes x 64
 * vnodes a whole copy was 768 KB per member per change, and the garbage of it dominated). A block
 * that grows past twice this is split; an empty one is dropped.
 */
const BLOCK = 64;

/** Consecutive ring points, sorted: 3 words each (hash high, hash low, slot). */
type Block = Uint32Array;

/** What a ring is made of: its blocks and the slot table (slot -> node index, -1: none). */
interface Layout {
  blocks: readonly Block[];
  /** starts[b]: the index of blocks[b]'s first point among all points; starts[blocks.length]: the count */
  starts: Int32Array;
  slotNode: Int32Array;
  nodeSlot: Uint32Array;
}

/**
 * The points of `nodes[i]` for i in `which`, sorted by (hash, node index): the order every ring
 * uses, flat (3 words each). Point k of the result belongs to slot slotOf(node index).
 */
function pointsOf(nodes: readonly RingNode[], which: readonly number[], slotOf: (i: number) => number): Uint32Array {
  let total = 0;
  for (const i of which) total += nodes[i].vnodes;
  const hi = new Uint32Array(total), lo = new Uint32Array(total), own = new Uint32Array(total);
  const prefix = new Uint32Array(2), w = new Uint32Array(2);
  let k = 0;
  for (const i of which) {
    const n = nodes[i];
    // vnode v of a node is "host:port:v"
    prefixWords(`${n.host}:${n.port}:`, prefix);
    for (let v = 0; v < n.vnodes; v++, k++) {
      vnodePointWords(prefix, v, w);
      lo[k] = w[0];
      hi[k] = w[1];
      own[k] = i;
    }
  }
  const order = sortedOrder(hi, lo, own);
  const out = new Uint32Array(3 * total);
  for (let j = 0; j < total; j++) {
    const o = order[j];
    out[3 * j] = hi[o];
    out[3 * j + 1] = lo[o];
    out[3 * j + 2] = slotOf(own[o]);
  }
  return out;
}

/** Point indexes in (hi, lo, own) order. */
function sortedOrder(hi: Uint32Array, lo: Uint32Array, own: Uint32Array): Uint32Array {
  const total = hi.length;
  const order = new Uint32Array(total);
  const byAll = (a: number, b: number) => hi[a] - hi[b] || lo[a] - lo[b] || own[a] - own[b];
  if (total > INDEX_SPAN) {
    for (let j = 0; j < total; j++) order[j] = j;
    return order.sort(byAll);
  }
  // by the high word first, in the typed array's own sort (no comparator: a new node's ring from
  // scratch sorts 64,000 points at 1,000 nodes, and a comparator call per step was most of it);
  // hi * INDEX_SPAN + index is exact in a double
  const keys = new Float64Array(total);
  for (let j = 0; j < total; j++) keys[j] = hi[j] * INDEX_SPAN + j;
  keys.sort();
  for (let j = 0; j < total; j++) order[j] = keys[j] % INDEX_SPAN;
  // points sharing a high word (rare) go by the low word, then the node
  for (let a = 0; a < total;) {
    let b = a + 1;
    while (b < total && hi[order[b]] === hi[order[a]]) b++;
    if (b - a > 1) order.subarray(a, b).sort(byAll);
    a = b;
  }
  return order;
}

/** Points a ring sorts with sortedOrder's fast path: 2^21 (hi * 2^21 + index stays below 2^53). */
const INDEX_SPAN = 2 ** 21;

/** Sorted flat points cut into blocks of BLOCK (and a shorter last one). */
function chunk(flat: Uint32Array, size = BLOCK): Block[] {
  const out: Block[] = [];
  for (let i = 0; i < flat.length; i += 3 * size) out.push(flat.slice(i, Math.min(flat.length, i + 3 * size)));
  return out;
}

function startsOf(blocks: readonly Block[]): Int32Array {
  const s = new Int32Array(blocks.length + 1);
  for (let b = 0; b < blocks.length; b++) s[b + 1] = s[b] + blocks[b].length / 3;
  return s;
}

/** (hi, lo) < (h, l) as unsigned 64-bit values */
function below(hi: number, lo: number, h: number, l: number): boolean {
  return hi < h || (hi === h && lo < l);
}

/** The block holding point g (0 <= g < count). */
function blockOf(starts: Int32Array, g: number): number {
  let a = 0, b = starts.length - 2;
  while (a < b) {
    const m = (a + b + 1) >>> 1;
    if (starts[m] <= g) a = m;
    else b = m - 1;
  }
  return a;
}

/** Where seek() found its point: the block, and the point's index in it. */
let seekBlock = 0, seekIndex = 0;

/**
 * Finds the first point >= (h, l): its block and index in seekBlock/seekIndex (no global index to
 * map back to a block with another search). false when every point is below (h, l).
 */
function seek(layout: Layout, h: number, l: number): boolean {
  const blocks = layout.blocks;
  let a = 0, b = blocks.length;
  while (a < b) {
    const m = (a + b) >>> 1;
    const blk = blocks[m], e = blk.length - 3;
    if (below(blk[e], blk[e + 1], h, l)) a = m + 1;
    else b = m;
  }
  if (a === blocks.length) return false;
  const blk = blocks[a];
  let x = 0, y = blk.length / 3;
  while (x < y) {
    const m = (x + y) >>> 1;
    if (below(blk[3 * m], blk[3 * m + 1], h, l)) x = m + 1;
    else y = m;
  }
  seekBlock = a;
  seekIndex = x;
  return true;
}

/** Word w (0: hash high, 1: hash low, 2: slot) of point g. */
function word(layout: Layout, g: number, w: number): number {
  const b = blockOf(layout.starts, g);
  return layout.blocks[b][3 * (g - layout.starts[b]) + w];
}

/** Edits of one block: local indexes of points to drop (ascending), points to insert before local indexes. */
interface BlockEdit {
  drop: number[];
  /** [local index it goes before, index into the fresh points], in order */
  put: Array<[number, number]>;
}

/** Block `blk` with its edit applied (`fresh`: flat points the edit inserts from), split when large. */
function editBlock(blk: Block, e: BlockEdit, fresh: Uint32Array): Block[] {
  const len = blk.length / 3;
  const out = new Uint32Array(blk.length + 3 * (e.put.length - e.drop.length));
  // a change edits a block in one or two places: the runs between edits are copied
  let k = 0, d = 0, p = 0, from = 0;
  // word by word: a subarray per run allocates a typed array, dearer than copying a few dozen words
  const copyTo = (until: number): void => {
    for (let x = 3 * from, end = 3 * until; x < end; x++) out[k++] = blk[x];
    if (until > from) from = until;
  };
  while (d < e.drop.length || p < e.put.length) {
    const nextDrop = d < e.drop.length ? e.drop[d] : len + 1;
    const nextPut = p < e.put.length ? e.put[p][0] : len + 1;
    if (nextPut <= nextDrop) {
      copyTo(nextPut);
      const f = 3 * e.put[p++][1];
      out[k++] = fresh[f];
      out[k++] = fresh[f + 1];
      out[k++] = fresh[f + 2];
    } else {
      copyTo(nextDrop);
      from = nextDrop + 1;
      d++;
    }
  }
  copyTo(len);
  if (!out.length) return [];
  return out.length > 6 * BLOCK ? chunk(out) : [out];
}

/**
 * Which nodes of `prev` are still in `next` (the same objects, in the same order) and where:
 * kept[i] is the index in `next` of prev[i], -1 when it left. A merge of the two lists that
 * resynchronises at each difference by looking ahead (nodes leave from anywhere, a weight change
 * replaces a node's object in place, joiners come last): O(N) pointer compares, no map of every
 * node per change. A node taken for gone that is in fact still there comes back as added, and the
 * derivation then finds its points already on the ring and builds from scratch: never a wrong ring.
 * null when the lists differ too much for a merge (then too: from scratch).
 */
function matchNodes(prev: readonly RingNode[], next: readonly RingNode[]): { kept: Int32Array; gone: number[] } | null {
  const kept = new Int32Array(prev.length).fill(-1);
  const gone: number[] = [];
  let i = 0, j = 0, budget = 4 * (prev.length + next.length) + 64;
  const find = (list: readonly RingNode[], from: number, x: RingNode): number => {
    for (let k = from; k < list.length && budget > 0; k++, budget--) if (list[k] === x) return k;
    return -1;
  };
  while (i < prev.length && j < next.length) {
    if (prev[i] === next[j]) { kept[i++] = j++; continue; }
    const t = find(prev, i + 1, next[j]);
    if (t >= 0) { while (i < t) gone.push(i++); continue; } // prev[i..t) left
    const u = find(next, j + 1, prev[i]);
    if (u >= 0) { j = u; continue; } // next[j..u) came
    if (budget <= 0) return null;
    gone.push(i++); // replaced (a weight change): it left and its new self comes
    j++;
  }
  while (i < prev.length) gone.push(i++);
  return { kept, gone };
}

/**
 * The ring of `nodes` derived from a ring of an earlier membership: only the vnodes of nodes that
 * left or came are hashed, their points are cut out of / put into the blocks they fall in, and
 * every other block is shared with the earlier ring. The result places every object as a build
 * from scratch would. null (build from scratch) when the node order changed, the earlier ring has
 * no points, or two points hash alike (ties go by node index, which an edit cannot see).
 */
function derive(base: Ring<RingNode>, nodes: readonly RingNode[]): Layout | null {
  const old = base.layout;
  if (!old.blocks.length) return null;
  const m = matchNodes(base.nodes, nodes);
  if (!m) return null;
  const slotOf = new Int32Array(nodes.length).fill(-1);
  for (let i = 0; i < base.nodes.length; i++) if (m.kept[i] >= 0) slotOf[m.kept[i]] = old.nodeSlot[i];
  const gone = m.gone;
  // new nodes take the slots of nodes that left, then fresh ones
  const free = gone.map((i) => old.nodeSlot[i]);
  let nextSlot = old.slotNode.length;
  const added: number[] = [];
  for (let j = 0; j < nodes.length; j++) {
    if (slotOf[j] >= 0) continue;
    slotOf[j] = free.length ? free.pop()! : nextSlot++;
    added.push(j);
  }
  const edits = new Map<number, BlockEdit>();
  const editOf = (b: number): BlockEdit => {
    let e = edits.get(b);
    if (!e) edits.set(b, (e = { drop: [], put: [] }));
    return e;
  };
  // the points of the nodes that left: where they are
  const leaving = pointsOf(base.nodes, gone, (i) => old.nodeSlot[i]);
  for (let d = 0; d < leaving.length; d += 3) {
    const h = leaving[d], l = leaving[d + 1], s = leaving[d + 2];
    if (!seek(old, h, l)) return null;
    // points that hash alike sit together: step to the one of this slot (into the next block if need be)
    let b = seekBlock, x = seekIndex;
    for (;;) {
      const blk = old.blocks[b];
      if (blk[3 * x] !== h || blk[3 * x + 1] !== l) return null;
      if (blk[3 * x + 2] === s) break;
      if (++x === blk.length / 3) {
        if (++b === old.blocks.length) return null;
        x = 0;
      }
    }
    editOf(b).drop.push(x);
  }
  // the points of the nodes that came: where they go (before the first point above them)
  const fresh = pointsOf(nodes, added, (j) => slotOf[j]);
  for (let f = 0; f < fresh.length; f += 3) {
    const h = fresh[f], l = fresh[f + 1];
    if (f > 0 && fresh[f - 3] === h && fresh[f - 2] === l) return null;
    if (seek(old, h, l)) {
      const blk = old.blocks[seekBlock];
      if (blk[3 * seekIndex] === h && blk[3 * seekIndex + 1] === l) return null;
      editOf(seekBlock).put.push([seekIndex, f / 3]);
    } else {
      // past the last point: at the end of the last block
      const last = old.blocks.length - 1;
      editOf(last).put.push([old.blocks[last].length / 3, f / 3]);
    }
  }
  const blocks: Block[] = [];
  for (let b = 0; b < old.blocks.length; b++) {
    const e = edits.get(b);
    if (!e) { blocks.push(old.blocks[b]); continue; }
    e.drop.sort((x, y) => x - y);
    for (const piece of editBlock(old.blocks[b], e, fresh)) blocks.push(piece);
  }
  const slotNode = new Int32Array(nextSlot).fill(-1);
  for (let j = 0; j < nodes.length; j++) slotNode[slotOf[j]] = j;
  return { blocks, starts: startsOf(blocks), slotNode, nodeSlot: new Uint32Array(slotOf) };
}

/** A ring built from every vnode of every node. */
function build(nodes: readonly RingNode[]): Layout {
  const blocks = chunk(pointsOf(nodes, nodes.map((_, i) => i), (i) => i));
  return {
    blocks,
    starts: startsOf(blocks),
    slotNode: Int32Array.from(nodes, (_, i) => i),
    nodeSlot: Uint32Array.from(nodes, (_, i) => i),
  };
}

export class Ring<N extends RingNode = RingNode> {
  /** what the next ring is derived from */
  readonly layout: Layout;
  /** the number of points */
  private readonly count: number;
  /** probe scratch: the key hashed and its hash */
  private readonly key = Buffer.alloc(9);
  private readonly hash = new Uint32Array(2);

  /**
   * `base`: the ring in use before a membership change: the new ring is derived from it (the cost
   * of the nodes that changed and of the blocks their points fall in, instead of hashing and sorting
   * every vnode again).
   */
  constructor(readonly nodes: readonly N[], base?: Ring<RingNode>) {
    this.layout = (base && derive(base, nodes)) ?? build(nodes);
    this.count = this.layout.starts[this.layout.blocks.length];
  }

  /** zones seen so far by zonesUpTo (a set of all zones of 1,000 nodes per change is not needed) */
  private seenZones = new Set<number>();
  private zoneScan = 0;

  /** The number of distinct zones, or `k` when there are at least k: what placement needs. */
  private zonesUpTo(k: number): number {
    while (this.seenZones.size < k && this.zoneScan < this.nodes.length) this.seenZones.add(this.nodes[this.zoneScan++].zone);
    return Math.min(k, this.seenZones.size);
  }

  /** The number of distinct zones. */
  get zones(): number {
    return this.zonesUpTo(Infinity);
  }

  /** The node index of point g. */
  private owner(g: number): number {
    return this.layout.slotNode[word(this.layout, g, 2)];
  }

  /**
   * Each node's share of the hash ring (the arcs that end at its points), in node order; the shares
   * sum to 1. With equal vnodes they differ only by the hashes' spread.
   */
  arcShares(): number[] {
    const shares = new Array<number>(this.nodes.length).fill(0);
    const n = this.count;
    if (!n) return shares;
    if (n === 1) {
      shares[this.owner(0)] = 1;
      return shares;
    }
    const { blocks, slotNode } = this.layout;
    const lastBlk = blocks[blocks.length - 1];
    let ph = lastBlk[lastBlk.length - 3], pl = lastBlk[lastBlk.length - 2];
    for (const blk of blocks) {
      for (let i = 0; i < blk.length; i += 3) {
        const h = blk[i], l = blk[i + 1];
        // the arc from the previous point (exclusive) to this one, wrapping around 2^64
        const dl = (l - pl) >>> 0;
        const dh = (h - ph - (l < pl ? 1 : 0)) >>> 0;
        shares[slotNode[blk[i + 2]]] += (dh * 2 ** 32 + dl) / 2 ** 64;
        ph = h;
        pl = l;
      }
    }
    return shares;
  }

  /** The point an object's walk starts from: the closest successor over all probes. */
  position(oid: bigint): number {
    return this.probes(oid)[0];
  }

  /**
   * The point that follows each probe of the object, closest first (ties: lower probe first), in a
   * scratch array reused by every call: placement runs on every gateway request, and an insertion
   * sort of 16 typed entries allocates nothing (3.5x faster than arrays and a sort, measured).
   */
  private probes(oid: bigint): Int32Array {
    const key = this.key, w = this.hash;
    key.writeBigUInt64LE(oid, 1);
    const idx = this.probeIdx, dh = this.probeDh, dl = this.probeDl, slot = this.probeSlot;
    const { blocks, starts } = this.layout;
    for (let k = 0; k < PROBES; k++) {
      key[0] = k;
      fnv1a64Words(key, w);
      const h = w[1], l = w[0];
      // past the last point: the walk wraps to the first
      let b = 0, x = 0;
      if (seek(this.layout, h, l)) { b = seekBlock; x = seekIndex; }
      const blk = blocks[b];
      const g = starts[b] + x, ph = blk[3 * x], pl = blk[3 * x + 1], s = blk[3 * x + 2];
      // distance from the probe to the point, modulo 2^64
      const lo = (pl - l) >>> 0;
      const hi = (ph - h - (pl < l ? 1 : 0)) >>> 0;
      let j = k;
      while (j > 0 && (dh[j - 1] > hi || (dh[j - 1] === hi && dl[j - 1] > lo))) {
        idx[j] = idx[j - 1]; dh[j] = dh[j - 1]; dl[j] = dl[j - 1]; slot[j] = slot[j - 1];
        j--;
      }
      idx[j] = g; dh[j] = hi; dl[j] = lo; slot[j] = s;
    }
    return idx;
  }

  /** the slot of each probe's point, in probeIdx's order (its owner without another search) */
  private readonly probeSlot = new Int32Array(PROBES);
  private readonly probeIdx = new Int32Array(PROBES);
  private readonly probeDh = new Uint32Array(PROBES);
  private readonly probeDl = new Uint32Array(PROBES);

  /**
   * The nodes that hold an object: `copies` distinct nodes, in distinct zones while there are enough
   * zones. With fewer nodes (or zones) than copies, every node (one per zone) holds a copy.
   *
   * Copy k is the owner of the k-th closest probe (skipping nodes and zones already chosen), then
   * the walk clockwise from the closest one fills what the probes did not. A node that joins takes
   * over a probe (or ranks in before the last one used): one copy moves to it, not the whole set,
   * as it would if the other copies followed the first around the ring (measured: copies moved on a
   * join 1.0x the ideal 1/N instead of 1.4-1.6x).
   */
  replicas(oid: bigint, copies: number): N[] {
    const n = this.nodes.length;
    if (n === 0 || this.count === 0) return [];
    const want = this.zonesUpTo(copies);
    const out: N[] = [];
    // copies are few: a scan of those taken beats two Sets per lookup
    const take = (idx: number): void => {
      const node = this.nodes[idx];
      for (const o of out) if (o === node || o.zone === node.zone) return;
      out.push(node);
    };
    const probes = this.probes(oid);
    const { blocks, starts, slotNode } = this.layout;
    for (let k = 0; k < probes.length && out.length < want; k++) take(slotNode[this.probeSlot[k]]);
    // the walk: block by block from the closest point
    let b = blockOf(starts, probes[0]), i = 3 * (probes[0] - starts[b]);
    for (let k = 1; k < this.count && out.length < want; k++) {
      i += 3;
      if (i >= blocks[b].length) { b = (b + 1) % blocks.length; i = 0; }
      take(slotNode[blocks[b][i + 2]]);
    }
    return out;
  }

  /** The first replica: the node that coordinates the object (used for placement statistics). */
  primary(oid: bigint): N | undefined {
    return this.replicas(oid, 1)[0];
  }
}
