// The cluster state machine of one sheep: status, epoch, members, cluster config, VDI table and
// locks. Cluster-wide decisions (format, shutdown, VDI create/delete/lock/release) are broadcast
// through the cluster driver and applied in delivery order, one at a time.

import fs from 'node:fs/promises';
import { pack, unpack } from 'msgpackr';
import { Res, SdError } from '../lib/proto.js';
import { ObjectStore } from './store.js';
import { Gateway } from './gateway.js';
import { KeyedMutex } from './mutex.js';
import {
  VdiTable, type ClusterDefaults, type NewVdiArgs, type NewVdiDecision, type BaseHeaderFields, type HeaderUpdate, type VdiEntry, type VdiState,
} from './vdi.js';
import { vidToVdiOid, oidToVid } from '../lib/oid.js';
import { objectSize } from './object-io.js';
import { Recovery } from './recovery.js';
import { SD_INODE_HEADER_SIZE, decodeInodeHeader, makeCtime } from '../lib/inode.js';
import { EpochLog, type EpochRecord } from './epoch-log.js';
import { readConfig, writeConfig, writeFileDurable, STORE_FORMAT_VERSION, type ClusterConfig } from './config.js';
import path from 'node:path';
import type { GroupDriver, NodeInfo } from './cluster/driver.js';
import type { Logger } from './log.js';

/**
 * wait_join: a formatted cluster restarted and waits for the nodes of its last epoch (or `collie
 * cluster recover force`); halt: this side lost the majority of the last epoch's nodes in a network
 * split and refuses I/O rather than diverge.
 */
export type Status = 'wait_format' | 'wait_join' | 'running' | 'halt' | 'shutdown';

export function statusText(s: Status, autoRecovery: boolean): string {
  switch (s) {
    case 'wait_format': return 'Waiting for cluster to be formatted';
    case 'wait_join': return 'Waiting for other nodes to join cluster';
    case 'running': return `running, auto-recovery ${autoRecovery ? 'enabled' : 'disabled'}`;
    case 'halt': return 'IO has halted as there are not enough living nodes';
    case 'shutdown': return 'System is shutting down';
  }
}

/**
 * A cluster-wide decision. Every node applies the same decisions in the same order to its own copy
 * of the cluster state; only the node that took the client's request does the object I/O after it.
 */
export type ClusterOp =
  | { kind: 'format'; copies: number; copyPolicy: number; blockSizeShift: number; lock: boolean; ctime: number }
  | { kind: 'shutdown' }
  | { kind: 'newVdi'; args: NewVdiArgs; now: bigint; baseHdr?: BaseHeaderFields }
  | { kind: 'undoNewVdi'; decision: NewVdiDecision }
  | { kind: 'delVdi'; name: string; tag: string; snapid: number }
  | { kind: 'lock'; name: string; tag: string; snapid: number; shared: boolean; owner: string; enforce?: boolean }
  | { kind: 'release'; vid: number }
  | { kind: 'forceRelease'; vid: number }
  | { kind: 'header'; update: HeaderUpdate }
  | { kind: 'recovered'; nid: string; epoch: number }
  | { kind: 'forceRecover' }
  | { kind: 'autoRecovery'; enabled: boolean };

/** What sheep say to each other through the cluster driver, in one total order. */
type GroupMsg =
  | { t: 'join'; node: NodeInfo; ctime: number; epoch: number }
  | { t: 'welcome'; to: string; node: NodeInfo; storeEpoch: number; snapshot: ClusterSnapshot }
  | { t: 'reject'; to: string; reason: string }
  | { t: 'op'; seq: number; op: ClusterOp }
  /** a side of the cluster announces itself to new group members (a halted side rejoins another) */
  | { t: 'present'; ctime: number; epoch: number; status: Status }
  /** the end of WAIT_FOR_JOIN: the member with the newest history hands its state to all */
  | { t: 'resume'; snapshot: ClusterSnapshot; forced: boolean };

/** A member of the group that the cluster accepted. */
interface Member {
  member: string;
  info: NodeInfo;
  /** the epoch of the node's own store when it joined (chooses whose history a restart resumes) */
  storeEpoch: number;
}

/** The state a joining node takes over from the oldest member. */
interface ClusterSnapshot {
  config: ClusterConfig | null;
  status: Status;
  epoch: number;
  history: EpochRecord[];
  nodes: Member[];
  vdis: VdiState;
  autoRecovery: boolean;
}

/** The VDI table as every node last applied it (DIR/vdi-state): inode objects live on other nodes. */
async function loadVdiState(dir: string): Promise<VdiState | null> {
  try {
    return unpack(await fs.readFile(path.join(dir, 'vdi-state'))) as VdiState;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw e;
  }
}

async function saveVdiState(dir: string, s: VdiState): Promise<void> {
  await writeFileDurable(path.join(dir, 'vdi-state'), pack(s));
}

export class System {
  status: Status = 'wait_format';
  config: ClusterConfig | null = null;
  epoch = 0;
  readonly vdis: VdiTable;
  readonly gateway: Gateway;
  readonly epochLog: EpochLog;
  readonly recovery: Recovery;
  /** nodes that finished recovering the current epoch */
  private readonly recoveredNodes = new Set<string>();
  /** hooks the daemon sets: stop listeners and exit after a cluster shutdown */
  onShutdown: () => void = () => undefined;

  private seq = 0;
  private readonly waiting = new Map<number, { resolve: (v: unknown) => void; reject: (e: unknown) => void }>();
  /** every group event is handled here, one after another, in delivery order */
  private chain: Promise<void> = Promise.resolve();
  /** attribute updates probe and write objects: one at a time per VDI */
  private readonly attrMutex = new KeyedMutex<string>();

  /** this node's id in the group (driver level) */
  private member = '';
  /** accepted sheep, oldest first; nodes[0] answers join requests */
  private nodes: Member[] = [];
  private accepted = false;
  /** asking to be taken back after a network split (never founds a cluster meanwhile) */
  private rejoining = false;
  /** the member whose side we asked to rejoin */
  private rejoinTarget: string | null = null;
  /** the group's members in the driver's order (the same on every member) */
  private groupMembers: string[] = [];
  /** members whose join request was delivered and not yet answered */
  private readonly joiners = new Set<string>();
  /** recovery is paused (`collie cluster recover disable`); deferred: a membership change waits for it */
  autoRecovery = true;
  private recoveryDeferred = false;
  /** this node sent the resume that ends WAIT_FOR_JOIN (start() waits for it to arrive) */
  private resumeSent = false;
  /** group members older than this node: while any is alive, it does not found a cluster itself */
  private readonly older = new Set<string>();
  private joinDelivered = false;
  private sawOwnJoin = false;
  /** events delivered after our join request and before the welcome: replayed on the snapshot */
  private pending: Array<() => Promise<void>> = [];
  private joined!: Promise<void>;
  private joinedResolve!: () => void;
  private joinedReject!: (e: Error) => void;
  /** waiters for the next membership change (the gateway retries after one) */
  private epochWaiters: Array<() => void> = [];

  constructor(
    readonly dir: string,
    readonly me: NodeInfo,
    readonly store: ObjectStore,
    private readonly group: GroupDriver,
    readonly log: Logger,
  ) {
    // what the gateway and recovery need to know about the cluster, in one place
    const placement = {
      epoch: () => this.epoch,
      me: () => this.me,
      nodes: () => this.members,
      copies: (oid: bigint) => this.vdis.get(oidToVid(oid))?.nrCopies || this.config?.copies || 1,
      objectSize: (oid: bigint) => objectSize(this, oid),
    };
    this.gateway = new Gateway(store, { ...placement, membershipChange: (ms) => this.membershipChange(ms), ioAllowed: () => this.ioAllowed() }, log);
    this.vdis = new VdiTable(this.gateway, log);
    this.vdis.onHeaderChange = async (update) => { await this.decide({ kind: 'header', update }); };
    this.epochLog = new EpochLog(dir);
    this.recovery = new Recovery(store, { ...placement, deletedVdi: (vid) => this.vdis.get(vid)?.deleted ?? false }, log);
    this.recovery.onFinished = async (epoch) => { await this.decide({ kind: 'recovered', nid: this.me.nid, epoch }); };
  }

  /** Loads this node's store, joins the group and resolves once this node is part of the cluster. */
  async start(): Promise<void> {
    await this.epochLog.init();
    this.config = await readConfig(this.dir);
    if (this.config) {
      const saved = await loadVdiState(this.dir);
      if (saved) this.vdis.importState(saved);
      else await this.vdis.load(await this.store.list()); // stores written before vdi-state existed
      this.epoch = (await this.epochLog.latest())?.epoch ?? 1;
    }
    this.joined = new Promise((res, rej) => { this.joinedResolve = res; this.joinedReject = rej; });
    this.member = await this.group.init(`${this.me.nid}#${process.pid}`);
    await this.group.start({
      confchg: (members, joined, left) => this.enqueue(() => this.onConfchg(members, joined, left)),
      deliver: (from, msg) => this.enqueue(() => this.onDeliver(from, msg)),
    });
    await this.joined;
    // a restart that finds every node of its last epoch (a single sheep, say) resumes at once
    for (const deadline = Date.now() + 3000; this.status === 'wait_join' && this.resumeSent && Date.now() < deadline;) {
      await this.membershipChange(200);
    }
  }

  private enqueue(fn: () => Promise<void>): void {
    this.chain = this.chain.then(fn).catch((e) => this.log.error({ err: e }, 'applying a cluster event failed'));
  }

  get clusterDefaults(): ClusterDefaults {
    const c = this.config;
    return { copies: c?.copies ?? 0, copyPolicy: c?.copyPolicy ?? 0, blockSizeShift: c?.blockSizeShift ?? 0 };
  }

  /** Object I/O is refused while the cluster waits for its nodes or has lost its majority. */
  ioAllowed(): void {
    if (this.status === 'wait_join') throw new SdError(Res.WAIT_FOR_JOIN);
    if (this.status === 'halt') throw new SdError(Res.HALT);
  }

  get statusText(): string {
    return statusText(this.status, this.autoRecovery);
  }

  /** The sheep of the cluster, oldest first. */
  get members(): NodeInfo[] {
    return this.nodes.map((n) => n.info);
  }

  /** Resolves at the next membership change, or after `ms`. */
  membershipChange(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(() => { this.epochWaiters = this.epochWaiters.filter((w) => w !== done); resolve(); }, ms);
      const done = () => { clearTimeout(t); resolve(); };
      this.epochWaiters.push(done);
    });
  }

  // ------------------------------------------------------------------ membership (join protocol)

  private async onConfchg(members: string[], joined: string[], left: string[]): Promise<void> {
    this.groupMembers = members;
    if (joined.includes(this.member) && !this.sawOwnJoin) {
      // our own join: who was here first decides who may found the cluster
      this.sawOwnJoin = true;
      const mine = members.indexOf(this.member);
      for (const m of members) if (!joined.includes(m) || members.indexOf(m) < mine) if (m !== this.member) this.older.add(m);
      await this.sendJoin();
      return;
    }
    for (const m of left) this.older.delete(m);
    for (const m of left) this.joiners.delete(m);
    if (!this.accepted) {
      if (this.rejoining && this.rejoinTarget && left.includes(this.rejoinTarget)) {
        // the side we asked to take us back went away before answering: stay what we were
        await this.abandonRejoin();
        return this.onConfchg(members, joined, left);
      }
      if (this.joinDelivered) {
        // the node that was to answer may be gone: ask again (a duplicate request is ignored)
        if (left.length) await this.sendJoin();
        this.pending.push(() => this.onConfchg(members, [], left));
      }
      return;
    }
    let changed = false;
    for (const m of left) {
      const i = this.nodes.findIndex((n) => n.member === m);
      if (i < 0) continue;
      const gone = this.nodes[i].info;
      this.nodes.splice(i, 1);
      this.vdis.dropLocksOf(gone.nid);
      this.log.warn({ node: gone.nid }, 'node left the cluster');
      changed = true;
    }
    if (changed) await this.membershipChanged();
    const foreign = joined.filter((m) => m !== this.member && !this.nodes.some((n) => n.member === m));
    const announce = this.status === 'running' || this.status === 'halt' || this.status === 'wait_format';
    if (foreign.length && announce && this.nodes[0]?.member === this.member) {
      // new group members may be another side of a healed split (or of groups that formed apart and
      // merged): say what runs here, so that a halted or unformatted side joins another
      await this.group.mcast(pack({ t: 'present', ctime: this.config?.ctime ?? 0, epoch: this.epoch, status: this.status } satisfies GroupMsg));
    }
  }

  private async sendJoin(): Promise<void> {
    const msg: GroupMsg = { t: 'join', node: this.me, ctime: this.config?.ctime ?? 0, epoch: this.config ? this.epoch : 0 };
    await this.group.mcast(pack(msg)).catch((e) => this.joinedReject(new Error(`cluster driver: ${(e as Error).message}`)));
  }

  /** Leaves this halted side and asks the side of `target` for a welcome. */
  private async rejoin(target: string): Promise<void> {
    this.log.warn({ epoch: this.epoch }, 'the network healed: rejoining the other side of the cluster');
    this.accepted = false;
    this.rejoining = true;
    this.rejoinTarget = target;
    this.joinDelivered = false;
    this.pending = [];
    await this.sendJoin();
  }

  /** Nobody took us back: this node is again a member of its halted side, with what happened meanwhile. */
  private async abandonRejoin(): Promise<void> {
    this.log.warn('the side this node asked to rejoin went away: staying halted');
    await this.acceptAndReplay();
  }

  /** This node is a member again: apply, in order, the events that arrived while it was not. */
  private async acceptAndReplay(): Promise<void> {
    this.accepted = true;
    this.rejoining = false;
    this.rejoinTarget = null;
    const replay = this.pending;
    this.pending = [];
    for (const ev of replay) await ev();
  }

  /** Whether a halted node should leave its side for the one that announced itself from `from`. */
  private shouldJoinSide(from: string, msg: Extract<GroupMsg, { t: 'present' }>): boolean {
    if (this.nodes.some((n) => n.member === from)) return false;
    // of two sides alike, the younger one joins the older one (group order is the same everywhere)
    const order = (m: string) => this.groupMembers.indexOf(m);
    const older = order(from) >= 0 && order(from) < order(this.nodes[0].member);
    if (this.status === 'wait_format') {
      // sheep that started apart (the driver's groups merged later): nothing stored yet, just join
      return msg.status === 'running' || (msg.status === 'wait_format' && older);
    }
    if (this.status !== 'halt' || msg.ctime !== this.config?.ctime) return false;
    if (msg.status === 'running') return msg.epoch >= this.epoch;
    if (msg.status !== 'halt') return false;
    if (msg.epoch !== this.epoch) return msg.epoch > this.epoch;
    return older;
  }

  private async onDeliver(from: string, raw: Buffer): Promise<void> {
    let msg: GroupMsg;
    try {
      msg = unpack(raw) as GroupMsg;
    } catch {
      this.log.warn({ from }, 'undecodable cluster message ignored');
      return;
    }
    if (!this.accepted) {
      // a node rejoining after a split never founds: the running side answers it
      const mayFound = this.older.size === 0 && !this.rejoining;
      if (msg.t === 'join' && from === this.member) {
        this.joinDelivered = true;
        if (mayFound) await this.found();
        return;
      }
      if (msg.t === 'join' && mayFound && this.joinDelivered) {
        await this.found(); // we are the oldest: found the cluster, then answer as its master
      } else {
        if (msg.t === 'welcome' && msg.to === this.member) return this.welcomed(msg);
        if (msg.t === 'reject' && msg.to === this.member) {
          this.log.error({ reason: msg.reason }, 'the cluster refused this node');
          this.joinedReject(new Error(`the cluster refused this node: ${msg.reason}`));
          return;
        }
        if (this.joinDelivered) this.pending.push(() => this.onDeliver(from, raw));
        return;
      }
    }
    switch (msg.t) {
      case 'join':
        this.joiners.add(from);
        if (this.status === 'halt' && msg.ctime && msg.ctime === this.config?.ctime && msg.epoch > this.epoch) {
          // a node with a newer history than this halted side (the majority restarting): wait for the
          // nodes of its last epoch as after a full restart; its history leads
          this.log.warn({ node: msg.node.nid, epoch: msg.epoch }, 'a node with a newer history joins: waiting for its epoch\'s nodes');
          this.status = 'wait_join';
          for (const n of this.nodes) n.storeEpoch = this.epoch;
        }
        return this.answerJoin(from, msg);
      case 'welcome':
        this.joiners.delete(msg.to);
        // only our side's master speaks for us (another side may coexist in the group after a split)
        if (from !== this.nodes[0]?.member) return;
        if (msg.to !== this.member && !this.nodes.some((n) => n.member === msg.to)) {
          this.nodes.push({ member: msg.to, info: msg.node, storeEpoch: msg.storeEpoch });
          this.log.info({ node: msg.node.nid }, 'node joined the cluster');
          await this.membershipChanged();
        }
        return;
      case 'reject':
        return;
      case 'op':
        return this.applyOp(from, msg);
      case 'resume':
        return this.resumed(msg);
      case 'present':
        // the network healed: join the side that runs (or the older halted one) like any returning
        // node; against a newer epoch our copies are set aside
        if (this.shouldJoinSide(from, msg)) await this.rejoin(from);
        return;
    }
  }

  /** The first sheep of a cluster starts from its own store. */
  private async found(): Promise<void> {
    this.accepted = true;
    this.nodes = [{ member: this.member, info: this.me, storeEpoch: this.config ? this.epoch : 0 }];
    // a formatted cluster that restarts waits for the nodes of its last epoch
    if (this.config) this.status = 'wait_join';
    this.log.info({ formatted: !!this.config, epoch: this.epoch }, 'this node founds the cluster');
    await this.membershipChanged();
    this.joinedResolve();
  }

  private async snapshot(): Promise<ClusterSnapshot> {
    return {
      config: this.config,
      status: this.status,
      epoch: this.epoch,
      history: this.config ? await this.epochLog.readAll() : [],
      nodes: this.nodes,
      vdis: this.vdis.exportState(),
      autoRecovery: this.autoRecovery,
    };
  }

  /** The oldest sheep answers join requests: state transfer, or a refusal with the reason. */
  private async answerJoin(from: string, msg: Extract<GroupMsg, { t: 'join' }>): Promise<void> {
    if (this.nodes[0]?.member !== this.member || this.nodes.some((n) => n.member === from)) return;
    const unknown = this.groupMembers.filter((m) => m !== this.member && !this.joiners.has(m) && !this.nodes.some((n) => n.member === m));
    if (this.status === 'halt' && unknown.length) {
      // another side of a split may be in the group too: only one side may take the node in. The
      // sides sort that out first (present), then the merged side answers the repeated join.
      this.log.info({ node: msg.node.nid }, 'halted with another side in the group: join left to the merged side');
      return;
    }
    let reason: string | null = null;
    if (this.nodes.some((n) => n.info.nid === msg.node.nid)) reason = `a node with address ${msg.node.nid} is already a member`;
    else if (this.config && msg.ctime && msg.ctime !== this.config.ctime) {
      reason = `the node belongs to another cluster (created ${new Date(msg.ctime).toISOString()}, this one ${new Date(this.config.ctime).toISOString()})`;
    } else if (this.config && msg.ctime && msg.epoch > this.epoch && this.status !== 'wait_join') {
      // while waiting for the last epoch's nodes a newer history is welcome: it is the one resumed
      reason = `conflicting epoch history: the node has epoch ${msg.epoch}, the cluster ${this.epoch}`;
    }
    if (reason) {
      this.log.warn({ node: msg.node.nid, reason }, 'join refused');
      await this.group.mcast(pack({ t: 'reject', to: from, reason } satisfies GroupMsg));
      return;
    }
    const welcome: GroupMsg = { t: 'welcome', to: from, node: msg.node, storeEpoch: msg.epoch, snapshot: await this.snapshot() };
    await this.group.mcast(pack(welcome));
  }

  /** Our welcome: take over the cluster's state, replay what happened since, then count ourselves in. */
  private async welcomed(msg: Extract<GroupMsg, { t: 'welcome' }>): Promise<void> {
    const snap = msg.snapshot;
    if (snap.status === 'wait_join') {
      // the cluster is restarting: keep our own history until the newest one is chosen (resume)
      this.status = 'wait_join';
      this.autoRecovery = snap.autoRecovery;
    } else {
      await this.adopt(snap);
    }
    this.nodes = [...snap.nodes];
    await this.acceptAndReplay();
    this.nodes.push({ member: this.member, info: this.me, storeEpoch: msg.storeEpoch });
    this.log.info({ nodes: this.nodes.map((n) => n.info.nid), epoch: this.epoch, status: this.status }, 'joined the cluster');
    await this.membershipChanged();
    if (this.config) await saveVdiState(this.dir, this.vdis.exportState());
    this.joinedResolve();
  }

  /** Takes over the cluster state of `snap` (config, epoch history, VDI table). */
  private async adopt(snap: ClusterSnapshot): Promise<void> {
    if (this.config && snap.config && this.epoch < snap.epoch) {
      // the cluster went on without us: our copies may miss writes. Never serve them; keep them aside
      // (obj/.stale) for recovery. Reads fail over to the members, writes copy the object here first.
      const n = await this.store.quarantine();
      if (n) this.log.warn({ objects: n, ours: this.epoch, cluster: snap.epoch }, 'rejoining after the cluster moved on: local copies set aside');
    }
    this.config = snap.config;
    if (snap.config) await writeConfig(this.dir, snap.config);
    await this.epochLog.replace(snap.history);
    this.epoch = snap.epoch;
    this.status = snap.status;
    this.autoRecovery = snap.autoRecovery;
    this.vdis.importState(snap.vdis);
  }

  /**
   * The end of WAIT_FOR_JOIN, applied by every member in delivery order: the newest history becomes
   * everyone's, and recovery runs (a restart may have interrupted one).
   */
  private async resumed(msg: Extract<GroupMsg, { t: 'resume' }>): Promise<void> {
    if (this.status !== 'wait_join') return;
    // still waiting until the epoch is settled: nobody may see 'running' with the old epoch
    // (recover enable/disable applied since the leader took its snapshot is newer than the snapshot's)
    await this.adopt({ ...msg.snapshot, status: 'wait_join', autoRecovery: this.autoRecovery });
    await saveVdiState(this.dir, this.vdis.exportState());
    this.log.info({ epoch: this.epoch, forced: msg.forced, nodes: this.members.map((n) => n.nid) }, 'cluster resumed after a restart');
    await this.membershipChanged(true, msg.forced);
  }

  /** The member whose store has the newest epoch history (the oldest such member on a tie). */
  private get historyLeader(): Member | undefined {
    let best: Member | undefined;
    for (const n of this.nodes) if (!best || n.storeEpoch > best.storeEpoch) best = n;
    return best;
  }

  /** WAIT_FOR_JOIN: the leader resumes the cluster once every node of its last epoch is back. */
  private async checkResume(forced: boolean): Promise<void> {
    if (this.status !== 'wait_join' || this.historyLeader?.member !== this.member || !this.config) return;
    const last = await this.epochLog.latest();
    const here = new Set(this.members.map((n) => n.nid));
    const missing = (last?.nodes ?? []).filter((n) => !here.has(n.nid)).map((n) => n.nid);
    if (missing.length && !forced) {
      this.log.info({ missing }, 'waiting for the nodes of the last epoch to join');
      return;
    }
    if (missing.length) this.log.warn({ missing }, 'recovery forced: going on without these nodes');
    const snap = await this.snapshot();
    this.resumeSent = true;
    await this.group.mcast(pack({ t: 'resume', snapshot: { ...snap, nodes: [] }, forced } satisfies GroupMsg));
  }

  /**
   * After a split, only the side with a majority of the last epoch's nodes may go on (on a tie, the
   * side with that epoch's oldest node). Drivers that cannot split (local) never halt.
   */
  private hasQuorum(last: EpochRecord | null): boolean {
    if (!this.group.canPartition || !last) return true;
    const here = new Set(this.members.map((n) => n.nid));
    const present = last.nodes.filter((n) => here.has(n.nid)).length;
    if (present * 2 !== last.nodes.length) return present * 2 > last.nodes.length;
    return here.has(last.nodes[0].nid);
  }

  /** `forced`: the operator chose to go on with the nodes present (recover force): no quorum check. */
  private async membershipChanged(resumed = false, forced = false): Promise<void> {
    if (!this.config) {
      if (this.status !== 'shutdown' && this.status !== 'wait_join') this.status = 'wait_format';
    } else if (this.status === 'wait_join' && !resumed) {
      await this.checkResume(false);
    } else if (this.status !== 'shutdown') {
      const last = await this.epochLog.latest();
      if (!forced && !this.hasQuorum(last)) {
        // no new epoch on this side: the majority's history goes on, ours must not fork from it
        if (this.status !== 'halt') this.log.error({ members: this.members.map((n) => n.nid), epoch: this.epoch }, 'lost the majority of the last epoch: I/O halted');
        this.status = 'halt';
        this.recovery.stop();
      } else {
        if (this.status === 'halt') this.log.warn('the majority of the last epoch is back: I/O resumes');
        const changed = !last || !sameNodes(last.nodes, this.members);
        if (changed) {
          await this.newEpoch((last?.epoch ?? 0) + 1);
          this.recoveredNodes.clear();
        }
        this.status = 'running';
        // every membership change moves placement: each node fills what it now owns
        if (this.accepted && (changed || resumed)) {
          if (this.autoRecovery) this.recovery.start();
          else {
            this.recoveryDeferred = true;
            this.recovery.defer();
          }
        }
      }
    }
    const w = this.epochWaiters;
    this.epochWaiters = [];
    for (const f of w) f();
  }

  private async newEpoch(epoch: number): Promise<void> {
    this.epoch = epoch;
    await this.epochLog.append({ epoch, time: Date.now(), nodes: this.members });
    this.log.info({ epoch, nodes: this.members.map((n) => n.nid) }, 'epoch changed');
  }

  // ------------------------------------------------------------------ ordered decisions

  /** Broadcasts a decision; resolves with its result on this node once delivered and applied. */
  decide<T = unknown>(op: ClusterOp): Promise<T> {
    const seq = ++this.seq;
    return new Promise<T>((resolve, reject) => {
      this.waiting.set(seq, { resolve: resolve as (v: unknown) => void, reject });
      const msg: GroupMsg = { t: 'op', seq, op };
      this.group.mcast(pack(msg)).catch((e) => {
        this.waiting.delete(seq);
        reject(new SdError(Res.CLUSTER_ERROR, `cluster driver: ${(e as Error).message}`));
      });
    });
  }

  private async applyOp(from: string, msg: Extract<GroupMsg, { t: 'op' }>): Promise<void> {
    let result: unknown;
    let error: unknown = null;
    try {
      result = await this.apply(msg.op);
      if (msg.op.kind !== 'format' && msg.op.kind !== 'shutdown' && this.config) await saveVdiState(this.dir, this.vdis.exportState());
    } catch (e) {
      error = e;
    }
    if (from !== this.member) return;
    const w = this.waiting.get(msg.seq);
    if (!w) return;
    this.waiting.delete(msg.seq);
    if (error) w.reject(error);
    else w.resolve(result);
  }

  /** Applies one decision to this node's state (the same on every node). */
  private async apply(op: ClusterOp): Promise<unknown> {
    switch (op.kind) {
      case 'format':
        return this.applyFormat(op);
      case 'shutdown':
        return this.applyShutdown();
      case 'newVdi':
        return this.vdis.applyNewVdi(op.args, this.clusterDefaults, op.now, op.baseHdr);
      case 'undoNewVdi':
        return this.vdis.applyUndoNewVdi(op.decision);
      case 'delVdi':
        return this.vdis.applyDelete(op.name, op.tag, op.snapid);
      case 'lock':
        return this.vdis.lock(op.name, op.tag, op.snapid, op.shared, op.enforce ?? this.config?.lock ?? false, op.owner);
      case 'release':
        return this.vdis.release(op.vid);
      case 'forceRelease':
        return this.vdis.forceRelease(op.vid);
      case 'header':
        return this.vdis.applyHeader(op.update);
      case 'recovered':
        return this.applyRecovered(op.nid, op.epoch);
      case 'forceRecover':
        if (this.status !== 'wait_join') throw new SdError(Res.INVALID_PARMS, 'the cluster is not waiting for nodes to join');
        return this.checkResume(true);
      case 'autoRecovery':
        return this.applyAutoRecovery(op.enabled);
    }
  }

  // ------------------------------------------------------------------ VDI operations (this node's clients)

  /** NEW_VDI: decide everywhere, then write the inode(s); a failed write undoes the decision. */
  async newVdi(args: NewVdiArgs): Promise<VdiEntry> {
    let baseHdr: BaseHeaderFields | undefined;
    if (args.snapshot && this.vdis.get(args.baseVid)) {
      // QEMU writes the snapshot's tag into the working inode just before asking for the snapshot
      const h = decodeInodeHeader(await this.gateway.read(vidToVdiOid(args.baseVid), 0, SD_INODE_HEADER_SIZE));
      baseHdr = { tag: h.tag, vmClockNsec: h.vmClockNsec, vmStateSize: h.vmStateSize };
    }
    const d = await this.decide<NewVdiDecision>({ kind: 'newVdi', args, now: makeCtime(), baseHdr });
    try {
      await this.vdis.finishNewVdi(d);
    } catch (e) {
      await this.decide({ kind: 'undoNewVdi', decision: d }).catch(() => undefined);
      throw e;
    }
    return d.entry;
  }

  async delVdi(name: string, tag: string, snapid: number): Promise<number> {
    const e = await this.decide<VdiEntry>({ kind: 'delVdi', name, tag, snapid });
    await this.vdis.finishDelete(e);
    return e.vdiId;
  }

  /** Attribute I/O, one update at a time per VDI name. */
  withAttrLock<T>(name: string, fn: () => Promise<T>): Promise<T> {
    return this.attrMutex.run(name, fn);
  }

  // ------------------------------------------------------------------ cluster decisions

  private async applyFormat(a: Extract<ClusterOp, { kind: 'format' }>): Promise<void> {
    const cfg: ClusterConfig = {
      formatVersion: STORE_FORMAT_VERSION,
      ctime: a.ctime,
      copies: a.copies,
      copyPolicy: a.copyPolicy,
      blockSizeShift: a.blockSizeShift,
      lock: a.lock,
    };
    await this.store.wipe();
    this.vdis.clear();
    await this.epochLog.replace([]);
    await writeConfig(this.dir, cfg);
    this.config = cfg;
    await this.newEpoch(1);
    this.status = 'running';
    this.log.info({ copies: a.copies, blockSizeShift: a.blockSizeShift, lock: a.lock }, 'cluster formatted');
  }

  /**
   * A node finished recovering `epoch`. When every member has, for the current epoch, the copies
   * set aside in obj/.stale are no longer anybody's source: each node drops its own.
   */
  private async applyRecovered(nid: string, epoch: number): Promise<void> {
    if (epoch !== this.epoch) return;
    this.recoveredNodes.add(nid);
    if (!this.members.every((n) => this.recoveredNodes.has(n.nid))) return;
    this.recoveredNodes.clear();
    const n = await this.store.purgeStale();
    if (n) this.log.info({ epoch, objects: n }, 'recovery finished on every node: set-aside copies removed');
  }

  /** `collie cluster recover enable|disable`: enabling runs the recovery that waited meanwhile. */
  private applyAutoRecovery(enabled: boolean): void {
    this.autoRecovery = enabled;
    this.log.info({ enabled }, 'automatic recovery');
    if (enabled && this.recoveryDeferred && this.status === 'running') {
      this.recoveryDeferred = false;
      this.recovery.start();
    }
  }

  private async applyShutdown(): Promise<void> {
    this.status = 'shutdown';
    this.log.info('cluster shutdown requested');
    await this.store.flushAll();
    this.onShutdown();
  }

  async epochHistory(): Promise<EpochRecord[]> {
    return this.epochLog.readAll();
  }

  /** Disk figures for `node info`: the store's filesystem and what the objects occupy. */
  async diskStats(): Promise<{ size: number; used: number; avail: number }> {
    const st = await fs.statfs(this.dir);
    const used = await this.store.usedBytes();
    const avail = st.bavail * st.bsize;
    return { size: used + avail, used, avail };
  }
}

function sameNodes(a: NodeInfo[], b: NodeInfo[]): boolean {
  if (a.length !== b.length) return false;
  const s = new Set(a.map((n) => n.nid));
  return b.every((n) => s.has(n.nid));
}
