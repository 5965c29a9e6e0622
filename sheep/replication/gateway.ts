// The gateway routes object I/O to the nodes that hold an object's replicas (DESIGN.md §4): writes
// go to all N replicas in parallel and succeed only when all do; reads prefer this node's copy and
// fail over; a replica that is unreachable or on another epoch makes the write wait for the
// membership to settle and retry on the new placement. A replica that lacks an object being
// written (it was placed there by a membership change and not recovered yet) gets a full copy
// first, so clients never wait for background recovery.

import type { SheepClient } from '../../lib/client.js';
import { connectPeer, type PeerAuth } from './peer-connect.js';
import { metrics } from '../util/metrics.js';
import { Op, Flag, Res, SdError, encodeObjReq } from '../../lib/proto.js';
import { Ring } from '../../lib/ring.js';
import type { ObjectStore } from '../store/store.js';
import type { NodeInfo } from '../../lib/node.js';
import type { Logger } from '../util/log.js';
import type { ObjList } from '../../lib/admin.js';
import { unpack } from 'msgpackr';
import { ErasureIo } from './erasure-io.js';
import { policyByte, stripKey, type EcPolicy } from '../../lib/erasure-layout.js';

/** Object I/O as the VDI layer sees it: wherever the replicas are. */
export interface ObjectIo {
  read(oid: bigint, offset: number, length: number): Promise<Buffer>;
  write(oid: bigint, offset: number, data: Buffer): Promise<void>;
  create(oid: bigint, offset: number, data: Buffer, cowFrom?: bigint): Promise<void>;
  remove(oid: bigint): Promise<boolean>;
  exists(oid: bigint): Promise<boolean>;
}

export interface GatewayContext {
  epoch(): number;
  me(): NodeInfo;
  /** the cluster's sheep */
  nodes(): NodeInfo[];
  /** how many copies an object has (its VDI's, else the cluster default) */
  copies(oid: bigint): number;
  objectSize(oid: bigint): number;
  /** the erasure code of a data object's VDI; null for objects kept as full copies */
  ecPolicy(oid: bigint): EcPolicy | null;
  /** resolves at the next membership change (or after ms) */
  membershipChange(ms: number): Promise<void>;
  /** throws WAIT_FOR_JOIN or HALT while the cluster may not do object I/O */
  ioAllowed(): void;
  /** how connections to other sheep prove the cluster key */
  readonly peerAuth: PeerAuth;
}

/**
 * Errors after which the same request may succeed on the next epoch. EIO is one: a node whose disk
 * fails takes itself out of placement at once (a decision and a new epoch), and the retry goes to
 * the object's new replicas.
 */
const RETRYABLE = new Set<number>([Res.NETWORK_ERROR, Res.OLD_NODE_VER, Res.NEW_NODE_VER, Res.AGAIN, Res.EIO]);
/** Payloads above this travel on a separate connection so small requests never queue behind them. */
const BIG = 256 * 1024;
const PEER_TIMEOUT_MS = 30_000;
const RETRY_FOR_MS = 60_000;
/** How long a read chases a set-aside copy that recovery keeps moving back into service. */
const MOVING_FOR_MS = 10_000;
/** Passes over every node when no copy is found at all, before NO_OBJ. */
const EMPTY_PASSES = 3;
/**
 * How long a request waits out a halt before it fails with HALT. The group can drop this node for a
 * moment (corosync forms a ring without it when its token is late, then merges it back); clients
 * should see a short stall then, not an error. A real minority stays halted longer and fails.
 */
const HALT_WAIT_MS = 10_000;

class PeerLink {
  private small: Promise<SheepClient> | null = null;
  private big: Promise<SheepClient> | null = null;
  constructor(readonly node: NodeInfo, private readonly auth: PeerAuth) {}

  private conn(big: boolean): Promise<SheepClient> {
    const make = () => connectPeer(this.node, this.auth, 5000).then((c) => {
      c.setRequestTimeout(PEER_TIMEOUT_MS);
      metrics.connection('peer_out', 1);
      c.onClose(() => metrics.connection('peer_out', -1));
      return c;
    });
    if (big) return (this.big ??= make());
    return (this.small ??= make());
  }

  /** One request; connection trouble becomes NETWORK_ERROR and drops the connection. */
  async request(header: Buffer, payload: Buffer | undefined, big: boolean): Promise<Buffer> {
    let c: SheepClient;
    try {
      c = await this.conn(big);
    } catch (e) {
      this.drop(big);
      metrics.peerError('connect');
      throw new SdError(Res.NETWORK_ERROR, `cannot reach ${this.node.nid}: ${(e as Error).message}`);
    }
    try {
      const reply = await c.send(header, payload);
      if (reply.rsp.result !== Res.SUCCESS) throw new SdError(reply.rsp.result);
      return reply.data;
    } catch (e) {
      if (e instanceof SdError) throw e;
      metrics.peerError((e as Error).message === 'timed out' ? 'timeout' : 'connection');
      this.drop(big);
      c.close();
      throw new SdError(Res.NETWORK_ERROR, `${this.node.nid}: ${(e as Error).message}`);
    }
  }

  private drop(big: boolean): void {
    if (big) this.big = null;
    else this.small = null;
  }

  close(): void {
    for (const p of [this.small, this.big]) p?.then((c) => c.close(), () => undefined);
    this.small = this.big = null;
  }
}

function sameMembers(a: readonly NodeInfo[], b: readonly NodeInfo[]): boolean {
  if (a === b) return true; // membership hands out one array per change
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Placements remembered per ring (every request needs one; computing it hashes the oid 8 times). */
const TARGET_CACHE_MAX = 65536;

export class Gateway implements ObjectIo {
  private readonly peers = new Map<string, PeerLink>();
  private ring: Ring<NodeInfo> | null = null;
  /** the members the ring was built from (NodeInfo objects are replaced, never changed in place) */
  private ringNodes: readonly NodeInfo[] = [];
  private readonly targetCache = new Map<bigint, { copies: number; nodes: NodeInfo[] }>();

  /** object I/O of erasure-coded VDIs, on strips through this gateway's links */
  readonly ec: ErasureIo;

  constructor(private readonly store: ObjectStore, private readonly ctx: GatewayContext, private readonly log: Logger) {
    this.ec = new ErasureIo({
      readStrip: (n, oid, ec, i, off, len) => {
        if (this.isMe(n)) return len === 0 ? this.store.exists(stripKey(oid, i)).then((y) => { if (!y) throw new SdError(Res.NO_OBJ); return Buffer.alloc(0); }) : this.store.read(stripKey(oid, i), off, len);
        return this.peerRequest(n, Op.READ_PEER, oid, off, len, undefined, 0, ec, i);
      },
      writeStrip: async (n, oid, ec, i, off, data) => {
        if (this.isMe(n)) await this.store.write(stripKey(oid, i), off, data, this.ctx.epoch());
        else await this.peerRequest(n, Op.WRITE_PEER, oid, off, data.length, data, 0, ec, i);
      },
      createStrip: async (n, oid, ec, i, off, data, ifAbsent) => {
        if (this.isMe(n)) {
          if (ifAbsent) await this.store.createIfAbsent(stripKey(oid, i), data, this.ctx.epoch());
          else await this.store.create(stripKey(oid, i), off, data, this.ctx.epoch());
        } else {
          await this.peerRequest(n, Op.CREATE_AND_WRITE_PEER, oid, off, data.length, data, ifAbsent ? Flag.CMD_IF_ABSENT : 0, ec, i);
        }
      },
      removeStrip: async (n, oid, ec, i) => {
        if (this.isMe(n)) return this.store.remove(stripKey(oid, i));
        await this.peerRequest(n, Op.REMOVE_PEER, oid, 0, 0, undefined, 0, ec, i);
        return true;
      },
      targets: (oid) => this.targets(oid),
      nodes: () => this.ctx.nodes(),
      objectSize: (oid) => this.ctx.objectSize(oid),
      ioReady: () => this.ioReady(),
      membershipChange: (ms) => this.ctx.membershipChange(ms),
      retryable: (e) => e instanceof SdError && RETRYABLE.has(e.result),
    }, log);
  }

  /**
   * The ring of the current members, derived from the previous one when they changed (only the
   * nodes that came or left are hashed): built by the first request after a change, not by the
   * change itself, so a burst of changes (a join storm) costs one ring.
   */
  private currentRing(): Ring<NodeInfo> {
    const nodes = this.ctx.nodes();
    if (!this.ring || !sameMembers(nodes, this.ringNodes)) {
      this.ring = new Ring(nodes, this.ring ?? undefined);
      this.ringNodes = nodes;
      this.targetCache.clear();
      this.closeLinksToGone(nodes);
    }
    return this.ring;
  }

  private closeLinksToGone(nodes: readonly NodeInfo[]): void {
    if (!this.peers.size) return;
    const here = new Set(nodes.map((n) => n.nid));
    for (const [nid, p] of this.peers) if (!here.has(nid)) { p.close(); this.peers.delete(nid); }
  }

  /**
   * After a membership change: links to nodes that left are closed at once, so requests waiting on a
   * node cut off by a partition fail now and retry on the new placement (not after the peer timeout).
   */
  membersChanged(): void {
    this.closeLinksToGone(this.ctx.nodes());
  }

  /** The nodes that should hold `oid` now. */
  targets(oid: bigint): NodeInfo[] {
    const ring = this.currentRing();
    const copies = Math.max(1, this.ctx.copies(oid));
    const hit = this.targetCache.get(oid);
    if (hit && hit.copies === copies) return hit.nodes;
    const nodes = ring.replicas(oid, copies);
    if (this.targetCache.size >= TARGET_CACHE_MAX) this.targetCache.clear();
    this.targetCache.set(oid, { copies, nodes });
    return nodes;
  }

  private isMe(n: NodeInfo): boolean {
    return n.nid === this.ctx.me().nid;
  }

  private peer(n: NodeInfo): PeerLink {
    let p = this.peers.get(n.nid);
    if (!p) this.peers.set(n.nid, (p = new PeerLink(n, this.ctx.peerAuth)));
    return p;
  }

  /** A request to one node; with `ec`, about strip `ecIndex` of the object (as Sheepdog's peer requests carry it). */
  private peerRequest(n: NodeInfo, opcode: number, oid: bigint, offset: number, length: number, payload?: Buffer, flags = 0, ec?: EcPolicy, ecIndex = 0): Promise<Buffer> {
    const h = encodeObjReq({
      protoVer: 0, opcode, flags: (payload ? Flag.CMD_WRITE : 0) | Flag.CMD_FOR_CLIENT | flags, epoch: this.ctx.epoch(), id: 0,
      dataLength: payload ? payload.length : length, oid, cowOid: 0n, copies: 0, copyPolicy: ec ? policyByte(ec.d, ec.p) : 0, ecIndex, tgtEpoch: 0,
      offset: BigInt(offset),
    });
    return this.peer(n).request(h, payload, (payload?.length ?? length) > BIG);
  }

  // ------------------------------------------------------------------ per-node operations

  private readOn(n: NodeInfo, oid: bigint, offset: number, length: number): Promise<Buffer> {
    return this.isMe(n) ? this.store.read(oid, offset, length) : this.peerRequest(n, Op.READ_PEER, oid, offset, length);
  }

  private async existsOn(n: NodeInfo, oid: bigint): Promise<boolean> {
    if (this.isMe(n)) return this.store.exists(oid);
    try {
      await this.peerRequest(n, Op.READ_PEER, oid, 0, 0);
      return true;
    } catch (e) {
      if (e instanceof SdError && e.result === Res.NO_OBJ) return false;
      throw e;
    }
  }

  private createOn(n: NodeInfo, oid: bigint, offset: number, data: Buffer): Promise<unknown> {
    return this.isMe(n) ? this.store.create(oid, offset, data, this.ctx.epoch()) : this.peerRequest(n, Op.CREATE_AND_WRITE_PEER, oid, offset, data.length, data);
  }

  private async writeOn(n: NodeInfo, oid: bigint, offset: number, data: Buffer): Promise<void> {
    const once = () => (this.isMe(n) ? this.store.write(oid, offset, data, this.ctx.epoch()) : this.peerRequest(n, Op.WRITE_PEER, oid, offset, data.length, data));
    try {
      await once();
    } catch (e) {
      if (!(e instanceof SdError && e.result === Res.NO_OBJ)) throw e;
      // this replica is new for the object: give it the whole object first, then the write. Only if
      // it is still absent: recovery (or another write) may have put a copy there meanwhile, and
      // writes may already have been applied to that copy
      const full = await this.readAnywhere(oid, 0, this.ctx.objectSize(oid), n);
      if (this.isMe(n)) await this.store.createIfAbsent(oid, full, this.ctx.epoch());
      else await this.peerRequest(n, Op.CREATE_AND_WRITE_PEER, oid, 0, full.length, full, Flag.CMD_IF_ABSENT);
      await once();
      this.log.debug({ oid: oid.toString(16), node: n.nid }, 'object copied to a new replica on demand');
    }
  }

  // ------------------------------------------------------------------ ObjectIo

  /** Resolves when this node may do object I/O; a halt is waited out for a while (HALT_WAIT_MS). */
  private async ioReady(): Promise<void> {
    const until = Date.now() + HALT_WAIT_MS;
    for (let logged = false; ;) {
      try {
        this.ctx.ioAllowed();
        return;
      } catch (e) {
        if (!(e instanceof SdError && e.result === Res.HALT) || Date.now() > until) throw e;
        if (!logged) { logged = true; this.log.info('I/O halted: a request waits for the cluster to take this node back'); }
        await this.ctx.membershipChange(500);
      }
    }
  }

  /** Runs `op` on every replica; retries on a new placement after a membership change. */
  private async replicated(oid: bigint, op: (n: NodeInfo) => Promise<unknown>): Promise<void> {
    const deadline = Date.now() + RETRY_FOR_MS;
    for (;;) {
      await this.ioReady();
      const targets = this.targets(oid);
      if (!targets.length) throw new SdError(Res.HALT, 'no node to store objects on');
      const results = await Promise.allSettled(targets.map(op));
      const errors = results.flatMap((r) => (r.status === 'rejected' ? [r.reason as unknown] : []));
      if (!errors.length) return;
      const fatal = errors.find((e) => !(e instanceof SdError) || !RETRYABLE.has(e.result));
      if (fatal) throw fatal;
      if (Date.now() > deadline) throw errors[0];
      metrics.gatewayRetry();
      this.log.info({ oid: oid.toString(16), why: (errors[0] as Error).message }, 'a replica failed: waiting for the membership to settle');
      await this.ctx.membershipChange(1000);
    }
  }

  /** Reads from this node's copy if it should have one, else another replica, else any node. */
  private async readAnywhere(oid: bigint, offset: number, length: number, except?: NodeInfo): Promise<Buffer> {
    const deadline = Date.now() + RETRY_FOR_MS;
    const movingUntil = Date.now() + MOVING_FOR_MS;
    let emptyPasses = 0;
    for (;;) {
      await this.ioReady();
      const targets = this.targets(oid);
      const order = [...targets.filter((n) => this.isMe(n)), ...targets.filter((n) => !this.isMe(n)),
        ...this.ctx.nodes().filter((n) => !targets.includes(n))].filter((n) => n.nid !== except?.nid);
      let retryable: unknown = null;
      for (const n of order) {
        try {
          return await this.readOn(n, oid, offset, length);
        } catch (e) {
          if (e instanceof SdError && e.result === Res.NO_OBJ) continue;
          if (e instanceof SdError && RETRYABLE.has(e.result)) { retryable = e; continue; }
          throw e;
        }
      }
      if (!retryable) {
        // no copy in service anywhere: right after a membership change the only copy may just have been
        // set aside (its node owns it again after an epoch without it, and recovery has not put it back
        // yet). The newest set-aside copy is then the object, as recovery itself would decide.
        const aside = await this.newestSetAside(oid, except);
        if (aside) {
          try {
            return await this.readSetAside(aside, oid, offset, length);
          } catch {
            // recovery moved it back into service meanwhile: look again
          }
        }
        // a copy moving between obj/ and obj/.stale while we asked node after node may have been seen in
        // neither: look again a few times (an object that exists nowhere is answered at once after that)
        if (aside ? Date.now() > movingUntil : ++emptyPasses >= EMPTY_PASSES) throw new SdError(Res.NO_OBJ);
        continue;
      }
      if (Date.now() > deadline) throw new SdError(Res.NO_OBJ);
      metrics.gatewayRetry();
      await this.ctx.membershipChange(1000);
    }
  }

  /** The node holding the newest set-aside copy of `oid`, if any node has one. */
  private async newestSetAside(oid: bigint, except?: NodeInfo): Promise<NodeInfo | null> {
    let best: { node: NodeInfo; epoch: number } | null = null;
    for (const n of this.ctx.nodes()) {
      if (n.nid === except?.nid) continue;
      try {
        const epoch = this.isMe(n)
          ? (await this.store.readStale(oid, 0, 0), await this.store.epochOf(oid, true))
          : (await this.peerRequest(n, Op.READ_PEER, oid, 0, 0, undefined, Flag.CMD_STALE)).readUInt32LE(0);
        if (!best || epoch > best.epoch) best = { node: n, epoch };
      } catch {
        // none there, or the node is unreachable: ask the next
      }
    }
    if (best) this.log.info({ oid: oid.toString(16), node: best.node.nid, epoch: best.epoch }, 'no copy in service: reading the newest set-aside copy');
    return best?.node ?? null;
  }

  private readSetAside(n: NodeInfo, oid: bigint, offset: number, length: number): Promise<Buffer> {
    return this.isMe(n) ? this.store.readStale(oid, offset, length) : this.peerRequest(n, Op.READ_PEER, oid, offset, length, undefined, Flag.CMD_STALE);
  }

  read(oid: bigint, offset: number, length: number): Promise<Buffer> {
    const ec = this.ctx.ecPolicy(oid);
    if (ec) return this.ec.read(oid, ec, offset, length);
    return this.readAnywhere(oid, offset, length);
  }

  write(oid: bigint, offset: number, data: Buffer): Promise<void> {
    const ec = this.ctx.ecPolicy(oid);
    if (ec) return this.ec.write(oid, ec, offset, data);
    return this.replicated(oid, (n) => this.writeOn(n, oid, offset, data));
  }

  async create(oid: bigint, offset: number, data: Buffer, cowFrom?: bigint): Promise<void> {
    const ec = this.ctx.ecPolicy(oid);
    // copy-on-write: the source may live on other nodes than the new object (and be erasure-coded
    // itself: read() decodes it), so the gateway builds the whole new object (source + payload)
    const full = cowFrom === undefined ? undefined : await this.read(cowFrom, 0, this.ctx.objectSize(oid));
    if (ec) return this.ec.create(oid, ec, offset, data, full);
    if (!full) return this.replicated(oid, (n) => this.createOn(n, oid, offset, data));
    data.copy(full, offset);
    return this.replicated(oid, (n) => this.createOn(n, oid, 0, full));
  }

  /** Removes every copy, also from nodes that hold one only because placement moved. */
  async remove(oid: bigint): Promise<boolean> {
    const ec = this.ctx.ecPolicy(oid);
    if (ec) return this.ec.remove(oid, ec);
    const results = await Promise.allSettled(this.ctx.nodes().map((n) =>
      this.isMe(n) ? this.store.remove(oid) : this.peerRequest(n, Op.REMOVE_PEER, oid, 0, 0).then(() => true)));
    return results.some((r) => r.status === 'fulfilled' && r.value);
  }

  async exists(oid: bigint): Promise<boolean> {
    const ec = this.ctx.ecPolicy(oid);
    if (ec) return this.ec.exists(oid, ec);
    for (const n of this.ctx.nodes()) {
      try {
        if (await this.existsOn(n, oid)) return true;
      } catch { /* an unreachable node: ask the others */ }
    }
    return false;
  }

  // ------------------------------------------------------------------ one node's copy (vdi alter-copy)

  /** Whether node `n` holds a copy in service. */
  holds(n: NodeInfo, oid: bigint): Promise<boolean> {
    return this.existsOn(n, oid);
  }

  /** Gives `n` a whole copy read from the other replicas, unless it has one by then (a client write may have put it there). */
  async copyTo(n: NodeInfo, oid: bigint): Promise<void> {
    const full = await this.readAnywhere(oid, 0, this.ctx.objectSize(oid), n);
    if (this.isMe(n)) await this.store.createIfAbsent(oid, full, this.ctx.epoch());
    else await this.peerRequest(n, Op.CREATE_AND_WRITE_PEER, oid, 0, full.length, full, Flag.CMD_IF_ABSENT);
  }

  /** Replaces `n`'s copy with `data` (the whole object). */
  async replaceOn(n: NodeInfo, oid: bigint, data: Buffer): Promise<void> {
    await this.createOn(n, oid, 0, data);
  }

  /** Removes `n`'s copy in service; false when it had none. */
  async removeOn(n: NodeInfo, oid: bigint): Promise<boolean> {
    if (this.isMe(n)) return this.store.remove(oid);
    await this.peerRequest(n, Op.REMOVE_PEER, oid, 0, 0);
    return true;
  }

  /** sha256 of `n`'s copy (no data moved). */
  hashOn(n: NodeInfo, oid: bigint): Promise<Buffer> {
    return this.isMe(n) ? this.store.hashOf(oid, this.ctx.objectSize(oid)) : this.peerRequest(n, Op.GET_HASH_PEER, oid, 0, 32);
  }

  /** The objects `n` holds in service (GET_OBJ_LIST). */
  async listOn(n: NodeInfo): Promise<bigint[]> {
    if (this.isMe(n)) return this.store.list();
    const list = unpack(await this.peerRequest(n, Op.GET_OBJ_LIST, 0n, 0, 0)) as ObjList;
    return list.map(([hex]) => BigInt(`0x${hex}`));
  }

  /** One node's whole copy. */
  readOnNode(n: NodeInfo, oid: bigint): Promise<Buffer> {
    return this.readOn(n, oid, 0, this.ctx.objectSize(oid));
  }

  /** Makes the VDI's writes durable on every node. */
  async flushVdi(vid: number): Promise<void> {
    const oid = BigInt(vid) << 32n;
    await this.replicatedAll((n) => (this.isMe(n) ? this.store.flushVdi(vid) : this.peerRequest(n, Op.FLUSH_PEER, oid, 0, 0)));
  }

  private async replicatedAll(op: (n: NodeInfo) => Promise<unknown>): Promise<void> {
    const results = await Promise.allSettled(this.ctx.nodes().map(op));
    const fatal = results.find((r) => r.status === 'rejected' && !(r.reason instanceof SdError && RETRYABLE.has(r.reason.result)));
    if (fatal && fatal.status === 'rejected') throw fatal.reason;
  }

  close(): void {
    for (const p of this.peers.values()) p.close();
    this.peers.clear();
  }
}
