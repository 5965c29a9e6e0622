// Object recovery after a membership change (DESIGN.md §4): every node works out which objects it
// must hold under the new placement, pulls the ones it lacks from the nodes that have them (its
// own set-aside copies in obj/.stale count when nobody else has a newer one), and sets aside the
// copies it no longer owns once every new owner holds them. Copies in obj/ are always current
// (a node that missed writes sets its copies aside when it rejoins), so recovery only fills gaps.
// A newer membership change restarts it from scratch on the new epoch.

import { setTimeout as sleep } from 'node:timers/promises';
import { metrics } from '../util/metrics.js';
import { pack, unpack } from 'msgpackr';
import { Op, Flag, Res, SdError, encodeObjReq, encodePlainReq, resultText } from '../../lib/proto.js';
import type { SheepClient } from '../../lib/client.js';
import { connectPeer, type PeerAuth } from './peer-connect.js';
import { Ring } from '../../lib/ring.js';
import { oidKind, oidToVid, oidHex, parseOidHex } from '../../lib/oid.js';
import type { ObjectStore } from '../store/store.js';
import type { NodeInfo } from '../../lib/node.js';
import type { ObjList, RecoveryStatus, Throttle } from '../../lib/admin.js';
import type { Logger } from '../util/log.js';
import { formatSize } from '../../lib/units.js';
import { baseOid, policyByte, stripIndexOf, stripKey, type EcPolicy } from '../../lib/erasure-layout.js';

export interface RecoveryContext {
  epoch(): number;
  me(): NodeInfo;
  nodes(): NodeInfo[];
  copies(oid: bigint): number;
  objectSize(oid: bigint): number;
  /** the erasure code of a data object's VDI; null for objects kept as full copies */
  ecPolicy(oid: bigint): EcPolicy | null;
  /** strip `index` of an erasure-coded object, decoded from X other strips; `patient`: waits a while for X to be readable */
  rebuildStrip(oid: bigint, ec: EcPolicy, index: number, patient: boolean): Promise<Buffer>;
  /** the VDI an object belongs to was deleted and nothing maps its objects: they must not come back */
  unreferencedVdi(vid: number): boolean;
  /** how connections to other sheep prove the cluster key */
  readonly peerAuth: PeerAuth;
}


const CONNECT_RETRY_MS = 15_000;
/** Objects copied at once by one node's recovery (unthrottled). */
const PARALLEL_COPIES = 4;
/**
 * Recovery yields to clients (as Ceph's osd_recovery_sleep does): while this node served a client
 * request in the last CLIENT_ACTIVE_MS, it copies one object at a time and rests CLIENT_YIELD_MS
 * after each copy. On a busy machine a full-speed recovery made 4 KiB reads wait 10x longer.
 */
const CLIENT_ACTIVE_MS = 200;
const CLIENT_YIELD_MS = 100;
const MAX_ATTEMPTS = 10;
/** How long a node waits for the new owners of its old copies before keeping them. */
const SET_ASIDE_WAIT_MS = 60_000;
/** How often a recovery blocked by a full disk looks for free space again. */
const ROOM_POLL_MS = 1000;

/** A copy this node cannot take now: its disk is under the reserve. The object waits for space. */
class NoRoom extends Error {}

/**
 * A strip that can be neither copied nor decoded yet: fewer than X strips are in service while other
 * nodes put their set-aside strips back. It waits until the rest of the run is done, then decodes.
 */
class StripLater extends Error {}


export function parseThrottle(t: Partial<Throttle>): Throttle {
  const max = Number(t.max ?? 0);
  const interval = Number(t.interval ?? 0);
  const ok = (n: number) => Number.isInteger(n) && n >= 0 && n < 2 ** 31; // setTimeout's limit
  if (!ok(max) || !ok(interval) || (max === 0) !== (interval === 0)) {
    throw new SdError(Res.INVALID_PARMS, `Invalid interval max (${t.max}), interval (${t.interval}): both 0 (no limit) or both positive`);
  }
  return { max, interval };
}


export class Recovery {
  private generation = 0;
  status: RecoveryStatus = { state: 'idle', epoch: 0, done: 0, total: 0, copied: 0 };
  /** told when this node finished recovering an epoch (the cluster counts finished nodes) */
  onFinished: (epoch: number) => Promise<void> = async () => undefined;
  /** resolves when the current run ends (tests and shutdown wait for it) */
  private running: Promise<void> = Promise.resolve();
  throttle: Throttle = { max: 0, interval: 0 };
  private window = { start: 0, count: 0 };

  /** the last ring built: the next one is derived from it (a membership change moves few points) */
  private lastRing: Ring<NodeInfo> | null = null;

  constructor(private readonly store: ObjectStore, private readonly ctx: RecoveryContext, private readonly log: Logger) {}

  /** The ring of `nodes`, derived from the last one built (or that one again when nothing changed). */
  private ringOf(nodes: readonly NodeInfo[]): Ring<NodeInfo> {
    const last = this.lastRing;
    if (last && last.nodes.length === nodes.length && last.nodes.every((n, i) => n === nodes[i])) return last;
    return (this.lastRing = new Ring(nodes, last ?? undefined));
  }

  /**
   * The nodes that should hold a store key under `ring`: a whole object's replicas, or for strip i
   * of an erasure-coded object the i-th node of its placement (none while the cluster has fewer
   * zones than strips: such a strip stays where it is).
   */
  private owners(ring: Ring<NodeInfo>, key: bigint): NodeInfo[] {
    const i = stripIndexOf(key);
    if (i === null) return ring.replicas(key, this.ctx.copies(key));
    const ec = this.ctx.ecPolicy(baseOid(key));
    if (!ec) return []; // a strip of an object no longer erasure-coded (its VDI is gone): no owner
    const t = ring.replicas(baseOid(key), ec.d + ec.p)[i];
    return t ? [t] : [];
  }

  /** The object fields of a peer request about a store key (a strip travels as oid + ec_index). */
  private objFields(key: bigint): { oid: bigint; copyPolicy: number; ecIndex: number } {
    const i = stripIndexOf(key);
    const ec = i === null ? null : this.ctx.ecPolicy(baseOid(key));
    if (i === null || !ec) return { oid: key, copyPolicy: 0, ecIndex: 0 };
    return { oid: baseOid(key), copyPolicy: policyByte(ec.d, ec.p), ecIndex: i };
  }

  /** Starts recovery for the current epoch, abandoning a run for an older one. */
  start(): void {
    const gen = ++this.generation;
    const epoch = this.ctx.epoch();
    this.status = { state: 'running', epoch, done: 0, total: 0, copied: 0, startedAt: Date.now() };
    // one run at a time: the superseded one stops at its next check, then the new one starts
    this.running = this.running.then(() => this.attempts(gen, epoch));
  }

  /** A run that fails (a holder went away mid-copy, a peer not listening yet) is tried again. */
  private async attempts(gen: number, epoch: number): Promise<void> {
    for (let attempt = 1; gen === this.generation; attempt++) {
      try {
        await this.run(gen, epoch);
        return;
      } catch (e) {
        if (gen !== this.generation) return; // a newer epoch took over
        if (attempt >= MAX_ATTEMPTS) {
          this.log.error({ epoch, err: (e as Error).message }, 'recovery failed; it runs again at the next membership change');
          this.status = { ...this.status, state: 'idle', error: e instanceof SdError ? `${resultText(e.result)}${e.message && e.message !== resultText(e.result) ? `: ${e.message}` : ''}` : (e as Error).message };
          return;
        }
        this.log.warn({ epoch, attempt, err: (e as Error).message }, 'recovery run failed; trying again');
        await new Promise((r) => setTimeout(r, 500 * attempt));
      }
    }
  }

  /** Abandons the current run (the node halted): nothing is copied until the next start(). */
  stop(): void {
    this.generation++;
    this.status = { ...this.status, state: 'idle' };
  }

  /** Automatic recovery is off: show that the epoch waits for it. */
  defer(): void {
    this.stop();
    this.status = { state: 'waiting', epoch: this.ctx.epoch(), done: 0, total: 0, copied: 0 };
  }

  setThrottle(t: Throttle): void {
    this.throttle = t;
    this.window = { start: 0, count: 0 };
    this.log.info(t, 'recovery throttle set');
  }

  /** Waits for a slot in the current throttle window (each window lets `max` objects go). */
  private async pace(gen: number): Promise<void> {
    for (;;) {
      const { max, interval } = this.throttle;
      if (!max || !interval) return;
      const now = Date.now();
      if (now - this.window.start >= interval) this.window = { start: now, count: 0 };
      if (this.window.count < max) {
        this.window.count++;
        return;
      }
      // short naps: a newer epoch (or stop) must not wait a whole interval to take over
      await new Promise((r) => setTimeout(r, Math.min(200, this.window.start + interval - now)));
      this.current(gen);
    }
  }

  whenIdle(): Promise<void> {
    return this.running;
  }

  private current(gen: number): void {
    if (gen !== this.generation) throw new Error('superseded by a newer epoch');
  }

  /**
   * One request to a node. A node that just joined may not listen yet (it serves once it has the
   * cluster state), so connection failures are retried for a while.
   */
  private async request(n: NodeInfo, header: Buffer): Promise<Buffer> {
    const deadline = Date.now() + CONNECT_RETRY_MS;
    const gen = this.generation;
    let c: SheepClient;
    for (;;) {
      this.current(gen);
      try {
        c = await connectPeer(n, this.ctx.peerAuth, 5000);
        break;
      } catch (e) {
        if (Date.now() > deadline) throw e;
        await new Promise((r) => setTimeout(r, 200));
      }
    }
    try {
      const { rsp, data } = await c.send(header);
      if (rsp.result !== Res.SUCCESS) throw new SdError(rsp.result);
      return data;
    } finally {
      c.close();
    }
  }

  private async listOf(n: NodeInfo, stale = false): Promise<ObjList> {
    if (n.nid === this.ctx.me().nid) return stale ? staleList(this.store) : localList(this.store);
    const h = encodePlainReq({ protoVer: 0, opcode: Op.GET_OBJ_LIST, flags: stale ? Flag.CMD_STALE : 0, epoch: 0, id: 0, dataLength: 0 });
    return unpack(await this.request(n, h)) as ObjList;
  }

  private async pull(n: NodeInfo, oid: bigint, stale = false): Promise<Buffer> {
    const size = this.ctx.objectSize(oid);
    const h = encodeObjReq({ protoVer: 0, opcode: Op.READ_PEER, flags: stale ? Flag.CMD_STALE : 0, epoch: 0, id: 0, dataLength: size, ...this.objFields(oid), cowOid: 0n,
      copies: 0, tgtEpoch: 0, offset: 0n });
    return this.request(n, h);
  }

  private async run(gen: number, epoch: number): Promise<void> {
    const me = this.ctx.me();
    const nodes = this.ctx.nodes();
    const ring = this.ringOf(nodes);
    // who holds what, and at which last-write epoch
    const where = new Map<string, Array<{ node: NodeInfo; epoch: number }>>();
    for (const n of nodes) {
      for (const [hex, e] of await this.listOf(n)) {
        let l = where.get(hex);
        if (!l) where.set(hex, (l = []));
        l.push({ node: n, epoch: e });
      }
      this.current(gen);
    }
    const stale = new Map(await staleList(this.store));
    // other nodes' set-aside copies: a source only when no copy in service exists anywhere (a copy
    // set aside at an epoch change may be the last one while its new owners have not pulled it yet)
    const staleElsewhere = new Map<string, Array<{ node: NodeInfo; epoch: number }>>();
    for (const n of nodes) {
      if (n.nid === me.nid) continue;
      for (const [hex, e] of await this.listOf(n, true)) {
        let l = staleElsewhere.get(hex);
        if (!l) staleElsewhere.set(hex, (l = []));
        l.push({ node: n, epoch: e });
      }
      this.current(gen);
    }
    const mine: bigint[] = [];
    const candidates = new Set([...where.keys(), ...stale.keys(), ...staleElsewhere.keys()]);
    // every strip of an erasure-coded object seen anywhere: a strip lost with its node is in no list
    for (const hex of [...candidates]) {
      const key = parseOidHex(hex)!;
      if (stripIndexOf(key) === null) continue;
      const ec = this.ctx.ecPolicy(baseOid(key));
      for (let i = 0; ec && i < ec.d + ec.p; i++) candidates.add(oidHex(stripKey(key, i)));
    }
    for (const hex of candidates) {
      const oid = parseOidHex(hex)!;
      if (this.owners(ring, oid).some((t) => t.nid === me.nid)) mine.push(oid);
    }
    this.status = { state: 'running', epoch, done: 0, total: mine.length, copied: 0, startedAt: Date.now() };
    let pulled = 0;
    let kept = 0;
    /** second pass: strips left for later wait for X readable strips */
    let patient = false;
    const recoverOne = async (oid: bigint): Promise<void> => {
      const hex = oidHex(oid);
      const holders = (where.get(hex) ?? []).filter((h) => h.node.nid !== me.nid);
      const staleEpoch = stale.get(hex);
      /** Copies the object from the first source that answers; an older set-aside copy here is then dropped. */
      const copyFrom = async (sources: Array<{ node: NodeInfo; epoch: number }>, fromSetAside: boolean): Promise<void> => {
        let lastError: unknown = null;
        await this.pace(gen);
        for (const h of sources) {
          // no pull that cannot be stored: the object waits for space instead
          if (!this.store.hasRoom(this.ctx.objectSize(oid))) throw new NoRoom();
          try {
            const data = await this.pull(h.node, oid, fromSetAside);
            this.current(gen);
            if (await this.store.createIfAbsent(oid, data, h.epoch).catch((e) => {
              if (e instanceof SdError && e.result === Res.NO_SPACE) throw new NoRoom();
              throw e;
            })) {
              pulled++;
              this.status = { ...this.status, copied: this.status.copied + 1 };
              metrics.recoveryCopy();
            }
            // an older set-aside copy is superseded: free its space now, not at the purge
            if (staleEpoch !== undefined) await this.store.dropStale(oid);
            return;
          } catch (e) {
            this.current(gen);
            if (e instanceof NoRoom) throw e;
            lastError = e;
          }
        }
        throw lastError;
      };
      // ask the store, not the list gathered at the start: a superseded run may have moved copies since
      if (!(await this.store.exists(oid))) {
        const kind = oidKind(baseOid(oid));
        const vid = oidToVid(oid);
        const best = holders.sort((a, b) => b.epoch - a.epoch)[0];
        if ((kind === 'data' || kind === 'vmstate') && this.ctx.unreferencedVdi(vid)) {
          // an object of a deleted VDI that nothing maps: it stays deleted (its copies are reclaimed)
        } else if (!best && stripIndexOf(oid) !== null && await this.rebuildStrip(oid, patient)) {
          // a strip no node holds in service: decoded from X others (strips in service are current)
          pulled++;
          this.status = { ...this.status, copied: this.status.copied + 1 };
          metrics.recoveryCopy();
          if (staleEpoch !== undefined) await this.store.dropStale(oid);
        } else if (best && staleEpoch === best.epoch && await this.sameContent(best.node, oid)) {
          // this node's set-aside copy is the current one (it missed nothing while away): back into
          // service by a rename, nothing copied
          if (await this.store.restoreStale(oid)) {
            kept++;
            this.status = { ...this.status, kept: (this.status.kept ?? 0) + 1 };
          }
        } else if (best && (staleEpoch === undefined || best.epoch >= staleEpoch)) {
          // newest copy first; a holder that fails (it may be leaving) hands over to the next
          await copyFrom(holders, false);
        } else if (!best && (staleElsewhere.get(hex) ?? []).some((h) => staleEpoch === undefined || h.epoch > staleEpoch)) {
          // no copy in service anywhere: the newest set-aside copy, from the node that has it
          await copyFrom((staleElsewhere.get(hex) ?? []).sort((x, y) => y.epoch - x.epoch), true);
        } else if (staleEpoch !== undefined) {
          if (await this.store.restoreStale(oid)) pulled++;
        } else if (!best && stripIndexOf(oid) !== null) {
          // no source at all for this strip now: decoded once the other strips are back in service
          if (!patient) throw new StripLater();
          throw new SdError(Res.EIO, `strip ${stripIndexOf(oid)} of ${oidHex(baseOid(oid))}: fewer strips readable than it takes to decode it`);
        }
      }
      this.status = { ...this.status, done: this.status.done + 1 };
    };
    // a few copies in flight keep the network and the disk busy; a throttled run goes one by one
    // so that the throttle window stays exact
    const queue = [...mine];
    /** objects that found this node's disk full: they wait for space after the others */
    const waiting: bigint[] = [];
    /** strips that could not be decoded in the first pass */
    const later: bigint[] = [];
    let failed = false;
    const worker = async (index: number): Promise<void> => {
      for (;;) {
        // clients come first: while they are served here, the other workers stand by (holding no
        // object) and the first copies one object at a time with a rest after each
        while (index > 0 && queue.length && !failed && metrics.clientsActive(CLIENT_ACTIVE_MS)) {
          await sleep(CLIENT_YIELD_MS);
          this.current(gen); // a newer membership change ends this run
        }
        const oid = queue.shift();
        if (oid === undefined || failed) break;
        this.current(gen);
        const before = pulled;
        try {
          await recoverOne(oid);
          if (pulled !== before && metrics.clientsActive(CLIENT_ACTIVE_MS)) await sleep(CLIENT_YIELD_MS);
        } catch (e) {
          if (e instanceof NoRoom) { waiting.push(oid); continue; }
          if (e instanceof StripLater) { later.push(oid); continue; }
          failed = true;
          throw e;
        }
      }
    };
    const parallel = this.throttle.max ? 1 : PARALLEL_COPIES;
    for (let dropped = false; ;) {
      // every worker has stopped before the run ends (a retry must not overlap stray copies)
      const ends = await Promise.allSettled(Array.from({ length: parallel }, (_, i) => worker(i)));
      const err = ends.find((e): e is PromiseRejectedResult => e.status === 'rejected');
      if (err) throw err.reason;
      if (later.length && !patient) {
        patient = true;
        queue.push(...later.splice(0));
        continue;
      }
      if (!waiting.length) break;
      // the disk is full: say so, free what can go (set-aside copies every owner holds), and wait for
      // space rather than fail in a loop; deletes elsewhere in the cluster free space meanwhile
      const { avail, reserve } = await this.store.refreshSpace();
      const blocked = `waiting for space: ${waiting.length} objects need copies here, but the disk has ${formatSize(Math.max(0, avail))} free with ${formatSize(reserve)} reserved (free space or add nodes; recovery resumes by itself)`;
      this.status = { ...this.status, blocked };
      if (!dropped) {
        dropped = true;
        this.log.warn({ epoch, objects: waiting.length, avail, reserve }, 'recovery waits for space: this disk is full');
        const freed = await this.dropRedundantSetAside(gen, ring);
        if (freed) this.log.info({ objects: freed }, 'set-aside copies that every owner holds removed to make room');
      }
      const need = this.ctx.objectSize(waiting[0]);
      for (;;) {
        const now = await this.store.refreshSpace();
        if (now.avail - need >= now.reserve) break;
        await new Promise((r) => setTimeout(r, ROOM_POLL_MS));
        this.current(gen);
      }
      this.log.info({ epoch, objects: waiting.length }, 'space freed: recovery goes on');
      this.status = { ...this.status, blocked: undefined };
      queue.push(...waiting.splice(0));
    }
    // copies this node no longer owns: set aside once every owner has one (the owners recover in
    // parallel, so look again for a while)
    let pending: bigint[] = [];
    for (const [hex, holders] of where) {
      if (!holders.some((h) => h.node.nid === me.nid)) continue;
      const oid = parseOidHex(hex)!;
      const owners = this.owners(ring, oid);
      // a strip with no owner (fewer zones than strips) stays: it is one of the few left
      if (owners.length && !owners.some((o) => o.nid === me.nid)) pending.push(oid);
    }
    let setAside = 0;
    const deadline = Date.now() + SET_ASIDE_WAIT_MS;
    while (pending.length) {
      const left: bigint[] = [];
      for (const oid of pending) {
        this.current(gen);
        const owners = this.owners(ring, oid);
        const ownersHave = await Promise.all(owners.map((o) => this.has(o, oid).catch(() => false)));
        this.current(gen); // placement may have changed while we asked: never act on an old view
        if (!ownersHave.every(Boolean)) left.push(oid);
        else if (await this.store.setAside(oid)) setAside++;
      }
      pending = left;
      if (!pending.length || Date.now() > deadline) break;
      await new Promise((r) => setTimeout(r, 300));
    }
    this.current(gen);
    this.status = { ...this.status, state: 'idle' };
    this.log.info({ epoch, objects: mine.length, pulled, kept, setAside }, 'recovery finished');
    await this.onFinished(epoch);
  }

  /**
   * Sets aside the copies this node owns under `now` but did not own under `before` (the previous
   * epoch): while it did not own them, writes went to their owners only, so such a copy may be
   * stale although it never left obj/. Recovery restores it by a rename when it is still current.
   */
  async setAsideReowned(before: NodeInfo[], now: NodeInfo[]): Promise<number> {
    const me = this.ctx.me().nid;
    if (!before.some((n) => n.nid === me)) return 0; // a returning node set everything aside already
    const oids = await this.store.list();
    if (!oids.length) return 0;
    const was = this.ringOf(before);
    const is = this.ringOf(now);
    let n = 0;
    for (const oid of oids) {
      if (!this.owners(is, oid).some((o) => o.nid === me)) continue;
      if (this.owners(was, oid).some((o) => o.nid === me)) continue;
      if (await this.store.setAside(oid)) n++;
    }
    if (n) this.log.info({ objects: n }, 'copies owned again after an epoch without them set aside until recovery checks them');
    return n;
  }

  /** Removes this node's set-aside copies of objects it does not own and every owner holds in service. */
  private async dropRedundantSetAside(gen: number, ring: Ring<NodeInfo>): Promise<number> {
    const me = this.ctx.me().nid;
    let n = 0;
    for (const oid of await this.store.listStale()) {
      this.current(gen);
      const owners = this.owners(ring, oid);
      if (!owners.length || owners.some((o) => o.nid === me)) continue;
      const have = await Promise.all(owners.map((o) => this.has(o, oid).catch(() => false)));
      if (have.every(Boolean)) { await this.store.dropStale(oid); n++; }
    }
    return n;
  }

  /** Decodes strip `key` from the object's other strips and stores it here; false when too few are readable. */
  private async rebuildStrip(key: bigint, patient: boolean): Promise<boolean> {
    const ec = this.ctx.ecPolicy(baseOid(key));
    if (!ec) return false;
    if (!this.store.hasRoom(this.ctx.objectSize(key))) throw new NoRoom();
    let data: Buffer;
    try {
      data = await this.ctx.rebuildStrip(baseOid(key), ec, stripIndexOf(key)!, patient);
    } catch (e) {
      this.log.warn({ oid: oidHex(baseOid(key)), strip: stripIndexOf(key), err: (e as Error).message }, 'a strip could not be decoded: looking for a set-aside copy');
      return false;
    }
    return this.store.createIfAbsent(key, data, this.ctx.epoch()).catch((e) => {
      if (e instanceof SdError && e.result === Res.NO_SPACE) throw new NoRoom();
      throw e;
    });
  }

  /** Whether this node's set-aside copy holds what `n` holds (sha256 of both, no data moved). */
  private async sameContent(n: NodeInfo, oid: bigint): Promise<boolean> {
    const size = this.ctx.objectSize(oid);
    const h = encodeObjReq({ protoVer: 0, opcode: Op.GET_HASH_PEER, flags: 0, epoch: 0, id: 0, dataLength: 32, ...this.objFields(oid), cowOid: 0n,
      copies: 0, tgtEpoch: 0, offset: 0n });
    try {
      const [theirs, mine] = await Promise.all([this.request(n, h), this.store.hashOf(oid, size, true)]);
      return theirs.equals(mine);
    } catch (e) {
      this.log.debug({ oid: oidHex(oid), err: (e as Error).message }, 'could not compare a set-aside copy: copying it again');
      return false;
    }
  }

  private async has(n: NodeInfo, oid: bigint): Promise<boolean> {
    if (n.nid === this.ctx.me().nid) return this.store.exists(oid);
    const h = encodeObjReq({ protoVer: 0, opcode: Op.READ_PEER, flags: 0, epoch: 0, id: 0, dataLength: 0, ...this.objFields(oid), cowOid: 0n,
      copies: 0, tgtEpoch: 0, offset: 0n });
    try {
      await this.request(n, h);
      return true;
    } catch (e) {
      if (e instanceof SdError && e.result === Res.NO_OBJ) return false;
      throw e;
    }
  }
}

/** This node's objects with the epoch of their last write (GET_OBJ_LIST). */
/** Epochs are read with synchronous xattr calls: let other requests in every so many objects. */
const YIELD_EVERY = 1000;
const yieldToLoop = () => new Promise<void>((r) => setImmediate(r));

export async function localList(store: ObjectStore): Promise<ObjList> {
  const out: ObjList = [];
  for (const oid of await store.list()) {
    out.push([oidHex(oid), await store.epochOf(oid)]);
    if (out.length % YIELD_EVERY === 0) await yieldToLoop();
  }
  return out;
}

/** This node's set-aside copies with the epoch of their last write (GET_OBJ_LIST with CMD_STALE). */
export async function staleList(store: ObjectStore): Promise<ObjList> {
  const out: ObjList = [];
  for (const oid of await store.listStale()) {
    out.push([oidHex(oid), await store.epochOf(oid, true)]);
    if (out.length % YIELD_EVERY === 0) await yieldToLoop();
  }
  return out;
}

export function packObjList(l: ObjList): Buffer {
  return pack(l);
}
