// Object I/O of erasure-coded VDIs (README "Erasure coding"): a data object is X data strips and Y
// parity strips, strip i on the i-th node of the object's placement (ring.replicas(oid, X+Y), one
// node per zone). Reads join the data strips, or decode the missing ones from any X strips; writes
// rewrite only the stripes they touch (a read first only for a partly written 512-byte stripe) and
// are acknowledged when all X+Y strips hold them. Writes and reads of one object are serialized
// here, so no reader through this gateway sees a stripe half written.

import { Res, SdError } from '../../lib/proto.js';
import type { NodeInfo } from '../../lib/node.js';
import { oidHex } from '../../lib/oid.js';
import { STRIPE_DATA, chunkSize, stripSize, stripeSpan, type EcPolicy } from '../../lib/erasure-layout.js';
import { encode, decode, splitStripes, joinStripes } from '../../native/erasure.js';
import { KeyedMutex } from '../util/mutex.js';
import { metrics } from '../util/metrics.js';
import type { Logger } from '../util/log.js';

/** One strip on one node, and what the gateway knows about placement and the cluster. */
export interface StripOps {
  readStrip(n: NodeInfo, oid: bigint, ec: EcPolicy, index: number, offset: number, length: number): Promise<Buffer>;
  writeStrip(n: NodeInfo, oid: bigint, ec: EcPolicy, index: number, offset: number, data: Buffer): Promise<void>;
  /** ifAbsent: an existing strip wins (a whole strip handed to a new owner) */
  createStrip(n: NodeInfo, oid: bigint, ec: EcPolicy, index: number, offset: number, data: Buffer, ifAbsent: boolean): Promise<void>;
  removeStrip(n: NodeInfo, oid: bigint, ec: EcPolicy, index: number): Promise<boolean>;
  targets(oid: bigint): NodeInfo[];
  nodes(): NodeInfo[];
  objectSize(oid: bigint): number;
  /** resolves when object I/O is allowed (a halt is waited out a while) */
  ioReady(): Promise<void>;
  membershipChange(ms: number): Promise<void>;
  retryable(e: unknown): boolean;
}

const RETRY_FOR_MS = 60_000;

/** The strips found for a range, by index (data and parity alike). */
type Found = Map<number, Buffer>;

export class ErasureIo {
  private readonly locks = new KeyedMutex<bigint>();

  constructor(private readonly ops: StripOps, private readonly log: Logger) {}

  private policyText(ec: EcPolicy): string {
    return `${ec.d}:${ec.p}`;
  }

  /** The object's placement, complete (X+Y nodes); waits for the membership while it is not. */
  private async fullPlacement(oid: bigint, ec: EcPolicy, deadline: number): Promise<NodeInfo[]> {
    for (;;) {
      await this.ops.ioReady();
      const t = this.ops.targets(oid);
      if (t.length >= ec.d + ec.p) return t;
      if (Date.now() > deadline) {
        throw new SdError(Res.HALT, `an erasure-coded (${this.policyText(ec)}) write needs ${ec.d + ec.p} zones; the cluster has ${t.length}`);
      }
      await this.ops.membershipChange(1000);
    }
  }

  /**
   * At least X strips' bytes [from, to), with every index of `want` among them when it can be
   * read (the others are decoded by the caller). Strips are asked of their owners first, then of
   * every node (right after a membership change a strip may still sit on its former owner).
   * `skip`: strip indexes not to use (one being rebuilt).
   */
  private async gather(oid: bigint, ec: EcPolicy, from: number, to: number, want: number[], skip: number[] = [], patient = true): Promise<Found> {
    const deadline = patient ? Date.now() + RETRY_FOR_MS : 0;
    const total = ec.d + ec.p;
    for (;;) {
      await this.ops.ioReady();
      const targets = this.ops.targets(oid);
      const found: Found = new Map();
      let retryable: unknown = null;
      let other: unknown = null;
      const asked = new Set<string>();
      const tryOn = async (n: NodeInfo, i: number): Promise<boolean> => {
        asked.add(`${n.nid}/${i}`);
        try {
          const b = await this.ops.readStrip(n, oid, ec, i, from, to - from);
          if (!found.has(i)) found.set(i, b);
          return true;
        } catch (e) {
          if (e instanceof SdError && e.result === Res.NO_OBJ) return false;
          if (this.ops.retryable(e)) retryable = e;
          else other = e;
          return false;
        }
      };
      const usable = (i: number) => !skip.includes(i);
      // the wanted strips from their owners, then parity (or other data) strips for those that failed
      await Promise.all(want.filter((i) => usable(i) && targets[i]).map((i) => tryOn(targets[i], i)));
      for (let next = 0; found.size < ec.d && next < total;) {
        const need = ec.d - found.size;
        const batch: number[] = [];
        for (; next < total && batch.length < need; next++) if (usable(next) && !found.has(next) && targets[next] && !asked.has(`${targets[next].nid}/${next}`)) batch.push(next);
        if (!batch.length) break;
        await Promise.all(batch.map((i) => tryOn(targets[i], i)));
      }
      // strips not where placement says: ask every node, one strip index at a time
      if (found.size < ec.d) {
        for (let i = 0; i < total && found.size < ec.d; i++) {
          if (!usable(i) || found.has(i)) continue;
          for (const n of this.ops.nodes()) {
            if (asked.has(`${n.nid}/${i}`)) continue;
            if (await tryOn(n, i)) break;
          }
        }
      }
      if (found.size >= ec.d) return found;
      if (other) throw other;
      if (!found.size && !retryable) throw new SdError(Res.NO_OBJ);
      if (Date.now() > deadline) {
        throw new SdError(Res.EIO, `object ${oidHex(oid)}: only ${found.size} of its ${total} strips are readable, ${ec.d} are needed`);
      }
      metrics.gatewayRetry();
      this.log.info({ oid: oidHex(oid), strips: found.size }, 'too few strips readable: waiting for the membership to settle');
      await this.ops.membershipChange(1000);
    }
  }

  /** The data strips of a range: read, or decoded from any X strips. */
  private async dataStrips(oid: bigint, ec: EcPolicy, from: number, to: number): Promise<Buffer[]> {
    const dataIdx = Array.from({ length: ec.d }, (_, i) => i);
    const found = await this.gather(oid, ec, from, to, dataIdx);
    const missing = dataIdx.filter((i) => !found.has(i));
    if (missing.length) {
      const idx = [...found.keys()].slice(0, ec.d);
      const rebuilt = decode(ec.d, ec.p, idx.map((i) => found.get(i)!), idx, missing);
      missing.forEach((m, j) => found.set(m, rebuilt[j]));
    }
    return dataIdx.map((i) => found.get(i)!);
  }

  /** Object bytes [start, end) of whole stripes. */
  private async readStripes(oid: bigint, ec: EcPolicy, start: number, end: number): Promise<Buffer> {
    const chunk = chunkSize(ec);
    const strips = await this.dataStrips(oid, ec, (start / STRIPE_DATA) * chunk, (end / STRIPE_DATA) * chunk);
    return joinStripes(strips, chunk);
  }

  read(oid: bigint, ec: EcPolicy, offset: number, length: number): Promise<Buffer> {
    return this.locks.run(oid, async () => {
      const s = stripeSpan(ec, offset, length);
      const whole = await this.readStripes(oid, ec, s.start, s.end);
      return whole.subarray(offset - s.start, offset - s.start + length);
    });
  }

  /**
   * The whole stripes a write of `data` at `offset` fills: `data` itself when it covers whole
   * stripes, else the partly written first/last stripe is read (`fresh`: a new object, zeros).
   */
  private async wholeStripes(oid: bigint, ec: EcPolicy, offset: number, data: Buffer, fresh: boolean): Promise<{ whole: Buffer; stripStart: number }> {
    const s = stripeSpan(ec, offset, data.length);
    if (s.start === offset && s.end === offset + data.length) return { whole: data, stripStart: s.stripStart };
    const whole = Buffer.alloc(s.end - s.start);
    if (!fresh) {
      const headPartial = offset > s.start;
      const tailPartial = offset + data.length < s.end;
      if (s.end - s.start === STRIPE_DATA || (headPartial && tailPartial && s.end - s.start === 2 * STRIPE_DATA)) {
        (await this.readStripes(oid, ec, s.start, s.end)).copy(whole, 0);
      } else {
        if (headPartial) (await this.readStripes(oid, ec, s.start, s.start + STRIPE_DATA)).copy(whole, 0);
        if (tailPartial) (await this.readStripes(oid, ec, s.end - STRIPE_DATA, s.end)).copy(whole, s.end - STRIPE_DATA - s.start);
      }
    }
    data.copy(whole, offset - s.start);
    return { whole, stripStart: s.stripStart };
  }

  private strips(ec: EcPolicy, whole: Buffer): Buffer[] {
    const data = splitStripes(whole, ec.d, chunkSize(ec));
    return [...data, ...encode(data, ec.p)];
  }

  /** Runs `op` for every strip on its owner; retries on a new placement after a membership change. */
  private async everyStrip(oid: bigint, ec: EcPolicy, op: (n: NodeInfo, index: number) => Promise<unknown>): Promise<void> {
    const deadline = Date.now() + RETRY_FOR_MS;
    for (;;) {
      const targets = await this.fullPlacement(oid, ec, deadline);
      const results = await Promise.allSettled(targets.slice(0, ec.d + ec.p).map((n, i) => op(n, i)));
      const errors = results.flatMap((r) => (r.status === 'rejected' ? [r.reason as unknown] : []));
      if (!errors.length) return;
      const fatal = errors.find((e) => !this.ops.retryable(e));
      if (fatal) throw fatal;
      if (Date.now() > deadline) throw errors[0];
      metrics.gatewayRetry();
      this.log.info({ oid: oidHex(oid), why: (errors[0] as Error).message }, 'a strip failed: waiting for the membership to settle');
      await this.ops.membershipChange(1000);
    }
  }

  write(oid: bigint, ec: EcPolicy, offset: number, data: Buffer): Promise<void> {
    return this.locks.run(oid, async () => {
      const { whole, stripStart } = await this.wholeStripes(oid, ec, offset, data, false);
      const all = this.strips(ec, whole);
      await this.everyStrip(oid, ec, async (n, i) => {
        try {
          await this.ops.writeStrip(n, oid, ec, i, stripStart, all[i]);
        } catch (e) {
          if (!(e instanceof SdError && e.result === Res.NO_OBJ)) throw e;
          // a new owner that recovery has not reached yet: the whole strip first, then the write
          const strip = await this.rebuildLocked(oid, ec, i);
          await this.ops.createStrip(n, oid, ec, i, 0, strip, true);
          await this.ops.writeStrip(n, oid, ec, i, stripStart, all[i]);
          this.log.debug({ oid: oidHex(oid), strip: i, node: n.nid }, 'strip rebuilt on a new owner on demand');
        }
      });
    });
  }

  /** A new object: `data` at `offset` (zeros elsewhere), or over a copy of `base` (copy-on-write). */
  create(oid: bigint, ec: EcPolicy, offset: number, data: Buffer, base?: Buffer): Promise<void> {
    return this.locks.run(oid, async () => {
      let whole: Buffer;
      let stripStart: number;
      if (base) {
        data.copy(base, offset);
        whole = base;
        stripStart = 0;
      } else {
        ({ whole, stripStart } = await this.wholeStripes(oid, ec, offset, data, true));
      }
      const all = this.strips(ec, whole);
      await this.everyStrip(oid, ec, (n, i) => this.ops.createStrip(n, oid, ec, i, stripStart, all[i], false));
    });
  }

  /** Removes every strip from every node (also from nodes that hold one only because placement moved). */
  async remove(oid: bigint, ec: EcPolicy): Promise<boolean> {
    const jobs = this.ops.nodes().flatMap((n) => Array.from({ length: ec.d + ec.p }, (_, i) => this.ops.removeStrip(n, oid, ec, i).catch(() => false)));
    return (await Promise.all(jobs)).some(Boolean);
  }

  /** Whether any node holds any strip of the object (owners asked first). */
  async exists(oid: bigint, ec: EcPolicy): Promise<boolean> {
    const probe = (n: NodeInfo, i: number) => this.ops.readStrip(n, oid, ec, i, 0, 0).then(() => true, () => false);
    const targets = this.ops.targets(oid);
    if ((await Promise.all(targets.map((n, i) => (i < ec.d + ec.p ? probe(n, i) : false)))).some(Boolean)) return true;
    for (const n of this.ops.nodes()) {
      if ((await Promise.all(Array.from({ length: ec.d + ec.p }, (_, i) => probe(n, i)))).some(Boolean)) return true;
    }
    return false;
  }

  /**
   * Strip `index` of the object, whole, decoded from X of the others (recovery, a new owner).
   * Not `patient`: fails at once when fewer than X strips are readable (recovery then looks for a
   * set-aside copy instead of waiting for strips that other nodes are restoring meanwhile).
   */
  rebuildStrip(oid: bigint, ec: EcPolicy, index: number, patient = true): Promise<Buffer> {
    return this.locks.run(oid, () => this.rebuildLocked(oid, ec, index, patient));
  }

  private async rebuildLocked(oid: bigint, ec: EcPolicy, index: number, patient = true): Promise<Buffer> {
    const size = stripSize(ec, this.ops.objectSize(oid));
    const found = await this.gather(oid, ec, 0, size, [], [index], patient);
    const idx = [...found.keys()].slice(0, ec.d);
    return decode(ec.d, ec.p, idx.map((i) => found.get(i)!), idx, [index])[0];
  }
}
