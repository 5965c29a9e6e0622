// One sheep's view of the cluster, wired together: the shared state (state.ts), the membership
// protocol (membership.ts) and the ordered decisions (decisions.ts), over the replication layer and
// the VDI table. The front ends talk to this class only.

import { oidKind, oidToVid, vidToVdiOid } from '../../lib/oid.js';
import { policyOf } from '../../lib/erasure-layout.js';
import { Flag, Op, Res, SdError, encodePlainReq, resultName } from '../../lib/proto.js';
import { SD_INODE_HEADER_SIZE, decodeInodeHeader, makeCtime } from '../../lib/inode.js';
import type { NodeInfo } from '../../lib/node.js';
import type { ObjectStore } from '../store/store.js';
import type { ClusterConfig } from '../store/config.js';
import { Gateway } from '../replication/gateway.js';
import { Recovery } from '../replication/recovery.js';
import { VdiTable, type ClusterDefaults, type NewVdiArgs, type NewVdiDecision, type BaseHeaderFields, type VdiEntry } from '../vdi/vdi-table.js';
import { objectSize } from '../vdi/object-io.js';
import { OrphanCollector } from '../vdi/orphans.js';
import { KeyedMutex } from '../util/mutex.js';
import type { Logger } from '../util/log.js';
import { EpochLog, type EpochRecord } from './epoch-log.js';
import { ClusterState, type Status } from './state.js';
import { Membership } from './membership.js';
import { Decisions } from './decisions.js';
import { GroupCodec } from './group-codec.js';
import type { ClusterOp } from './messages.js';
import type { GroupDriver } from './driver.js';
import { connectPeer, type PeerAuth } from '../replication/peer-connect.js';

export type { Status } from './state.js';

export class System {
  readonly vdis: VdiTable;
  readonly gateway: Gateway;
  readonly epochLog: EpochLog;
  readonly recovery: Recovery;
  readonly orphans: OrphanCollector;
  private readonly state: ClusterState;
  private readonly membership: Membership;
  private readonly decisions: Decisions;
  /** attribute updates probe and write objects: one at a time per VDI */
  private readonly attrMutex = new KeyedMutex<string>();
  /** how this node proves itself to other sheep (admin ops that ask every member use it too) */
  readonly peerAuth: PeerAuth;
  /** hook the daemon sets: stop this sheep as on SIGTERM, a clean leave (`collie node kill`) */
  onKill: () => void = () => undefined;

  constructor(
    readonly dir: string,
    readonly me: NodeInfo,
    readonly store: ObjectStore,
    group: GroupDriver,
    readonly log: Logger,
    /** the cluster key: peer connections prove it, and cluster messages are sealed with it */
    clusterKey: Buffer | null = null,
    /** peer connections run TLS keyed from the cluster key */
    peerTls = false,
    /** how old an unmapped data object of a live VDI must be before it is reclaimed */
    orphanGraceMs = 10 * 60_000,
  ) {
    // what the gateway and recovery need to know about the cluster, in one place
    const placement = {
      epoch: () => this.epoch,
      me: () => this.me,
      nodes: () => this.members,
      copies: (oid: bigint) => this.vdis.get(oidToVid(oid))?.nrCopies || this.config?.copies || 1,
      objectSize: (oid: bigint) => objectSize(this, oid),
      // only data objects are erasure-coded: inodes, attributes and vmstate stay full copies
      ecPolicy: (oid: bigint) => (oidKind(oid) === 'data' ? policyOf(this.vdis.get(oidToVid(oid))?.copyPolicy ?? 0) : null),
      peerAuth: { key: clusterKey, tls: peerTls },
    };
    this.peerAuth = placement.peerAuth;
    this.gateway = new Gateway(store, { ...placement, membershipChange: (ms) => this.membershipChange(ms), ioAllowed: () => this.ioAllowed() }, log);
    this.vdis = new VdiTable(this.gateway, log);
    this.vdis.onHeaderChange = async (update) => { await this.decide({ kind: 'header', update }); };
    this.epochLog = new EpochLog(dir);
    this.recovery = new Recovery(store, {
      ...placement, unreferencedVdi: (vid) => this.vdis.unreferenced(vid),
      rebuildStrip: (oid, ec, index, patient) => this.gateway.ec.rebuildStrip(oid, ec, index, patient),
    }, log);
    this.orphans = new OrphanCollector(store, this.vdis, log, orphanGraceMs, () => this.status === 'running');
    this.vdis.onDeleted = () => this.sweepSoon();
    store.onDiskFailure = (reason) => {
      this.decide({ kind: 'diskFailed', nid: this.me.nid, reason }).catch((err) =>
        this.log.error({ err: (err as Error).message }, 'could not tell the cluster about the failed disk'));
    };
    store.onDiskLost = (disk, reason) => this.recoverLostDisk(disk, reason);
    this.recovery.onFinished = async (epoch) => {
      this.sweepSoon();
      await this.decide({ kind: 'recovered', nid: this.me.nid, epoch });
    };
    this.state = new ClusterState(dir, me, store, this.vdis, this.epochLog, this.recovery, log);
    const codec = new GroupCodec(clusterKey);
    this.membership = new Membership(this.state, group, codec, (from, msg) => this.decisions.applyOp(from, msg));
    this.decisions = new Decisions(this.state, group, codec, this.membership);
    this.membership.onChanged = () => this.gateway.membersChanged();
    this.membership.fetchSnapshot = (master, offer) => this.fetchSnapshot(master, offer);
    group.onSuspended = (down, why) => {
      this.driverDown = down ? why : null;
      if (down) this.log.error({ why }, 'client I/O halted until the cluster driver is back');
      else this.log.warn({ why }, 'the cluster driver is back');
      this.updateSuspended();
    };
    group.onExpelled = (why) => void this.rejoinGroup(group, why);
  }

  /** the cluster driver's service is unreachable (zookeeper) */
  private driverDown: string | null = null;
  /** the group dropped this node, which is joining again */
  private rejoining: string | null = null;

  private updateSuspended(): void {
    this.state.suspended = this.rejoining ?? this.driverDown;
  }

  /** The group counts this node as gone (its session expired): halt client I/O and join again. */
  private async rejoinGroup(group: GroupDriver, why: string): Promise<void> {
    this.log.error({ why }, 'dropped from the cluster: client I/O halted, joining again as a returning node');
    this.rejoining = why;
    this.driverDown = null;
    this.updateSuspended();
    this.recovery.stop();
    this.decisions.failPending(new SdError(Res.CLUSTER_ERROR, `cluster driver: ${why}`));
    try {
      await this.membership.rejoinGroup();
    } catch (e) {
      group.onLost(`could not join the cluster again: ${(e as Error).message}`);
      return;
    }
    this.rejoining = null;
    this.updateSuspended();
    this.log.warn({ epoch: this.epoch, status: this.status }, 'joined the cluster again: client I/O resumes');
  }

  /** The cluster state this node, as master, offered a joiner under the name `offer` (GET_SNAPSHOT), or null. */
  snapshotOffer(offer: string): Uint8Array | null {
    return this.membership.snapshotOffer(offer);
  }

  /**
   * Fetches from `master` the state it offered this node under the name `offer` in its welcome,
   * over a peer connection (the simulation, which has no network, replaces it).
   */
  fetchSnapshot = async (master: NodeInfo, offer: string): Promise<Uint8Array> => {
    const c = await connectPeer(master, this.peerAuth, 5000);
    try {
      const name = Buffer.from(offer, 'utf8');
      const h = encodePlainReq({ protoVer: 0, opcode: Op.GET_SNAPSHOT, flags: Flag.CMD_WRITE, epoch: 0, id: 0, dataLength: name.length });
      const { rsp, data } = await c.send(h, name);
      if (rsp.result !== Res.SUCCESS) throw new SdError(rsp.result, `the master answered ${resultName(rsp.result)}`);
      return data;
    } finally {
      c.close();
    }
  };

  /** Loads this node's store, joins the group and resolves once this node is part of the cluster. */
  async start(): Promise<void> {
    await this.state.load();
    await this.membership.join();
  }

  /**
   * One of several disks failed (multi-disk): the node keeps its place and vnodes, and recovery runs
   * again on the same epoch, which copies every object this node owns but no longer holds from the
   * other nodes onto its remaining disks. Reads and writes meanwhile go to the other replicas (a write
   * gives this node a full copy first).
   */
  private recoverLostDisk(disk: string, reason: string): void {
    if (this.state.status !== 'running') return; // the next membership change recovers
    this.log.warn({ disk, reason }, 'recovering the copies of the failed disk from other nodes');
    if (this.state.autoRecovery) this.recovery.start();
    else {
      this.state.recoveryDeferred = true;
      this.recovery.defer();
    }
  }

  /** Reclaims this node's orphan copies in the background (errors are the next sweep's). */
  sweepSoon(): void {
    this.orphans.sweep().catch((err) => this.log.warn({ err: (err as Error).message }, 'orphan sweep failed'));
  }

  get status(): Status {
    return this.state.status;
  }

  get config(): ClusterConfig | null {
    return this.state.config;
  }

  get epoch(): number {
    return this.state.epoch;
  }

  get autoRecovery(): boolean {
    return this.state.autoRecovery;
  }

  get statusText(): string {
    return this.state.statusText;
  }

  get clusterDefaults(): ClusterDefaults {
    return this.state.clusterDefaults;
  }

  /** Object I/O is refused while the cluster waits for its nodes or has lost its majority. */
  ioAllowed(): void {
    this.state.ioAllowed();
  }

  /** The sheep of the cluster, oldest first. */
  get members(): NodeInfo[] {
    return this.membership.members;
  }

  /** Resolves at the next membership change, or after `ms`. */
  membershipChange(ms: number): Promise<void> {
    return this.membership.membershipChange(ms);
  }

  /** Resolves once every cluster event delivered so far is applied on this node (simulations wait on it). */
  clusterEventsApplied(): Promise<void> {
    return this.membership.applied();
  }

  /** hook the daemon sets: stop listeners and exit after a cluster shutdown */
  set onShutdown(fn: () => void) {
    this.decisions.onShutdown = fn;
  }

  /** Broadcasts a decision; resolves with its result on this node once delivered and applied. */
  decide<T = unknown>(op: ClusterOp): Promise<T> {
    return this.decisions.decide<T>(op);
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

  /**
   * DEL_VDI: the decision is the delete (applied on every node, which then drops its own copies of
   * objects nothing maps). Freeing objects that clones still share, or copies on nodes the sweep has
   * not reached, is finished later if it fails now: the client is told the VDI is gone, as it is.
   */
  async delVdi(name: string, tag: string, snapid: number): Promise<number> {
    const e = await this.decide<VdiEntry>({ kind: 'delVdi', name, tag, snapid });
    try {
      await this.vdis.finishDelete(e);
    } catch (err) {
      this.log.warn({ vid: e.vdiId.toString(16), err: (err as Error).message }, 'VDI deleted; freeing its objects is left to the orphan sweeps');
    }
    return e.vdiId;
  }

  /** Attribute I/O, one update at a time per VDI name. */
  withAttrLock<T>(name: string, fn: () => Promise<T>): Promise<T> {
    return this.attrMutex.run(name, fn);
  }

  async epochHistory(): Promise<EpochRecord[]> {
    return this.epochLog.readAll();
  }

  /**
   * Disk figures for `node info`: the store's filesystem and what the objects occupy (a count at most
   * `cachedMs` old will do).
   */
  async diskStats(cachedMs = 0): Promise<{ size: number; used: number; avail: number; reserve: number; full: boolean; objects: number; diskFailed?: string }> {
    if (this.store.failed) return { size: 0, used: 0, avail: 0, reserve: 0, full: false, objects: 0, diskFailed: this.store.failed };
    const { objects, bytes: used } = await this.store.usage(cachedMs);
    const { avail, reserve, full } = await this.store.refreshSpace();
    return { size: used + avail, used, avail, reserve, full, objects };
  }
}
