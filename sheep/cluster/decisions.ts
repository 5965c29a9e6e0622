// Cluster-wide decisions (format, shutdown, the VDI table, locks, recovery switches): broadcast
// through the cluster driver and applied by every node to its own state in delivery order, one at
// a time; the node that proposed one gets its result once it is applied here.

import { Res, SdError } from '../../lib/proto.js';
import type { NodeInfo } from '../../lib/node.js';
import { writeConfig, STORE_FORMAT_VERSION, type ClusterConfig } from '../store/config.js';
import type { GroupDriver } from './driver.js';
import type { GroupCodec } from './group-codec.js';
import type { ClusterOp, GroupMsg } from './messages.js';
import { saveVdiState, type ClusterState } from './state.js';

/** What decisions need from the membership protocol. */
export interface MembershipView {
  readonly member: string;
  readonly members: NodeInfo[];
  newEpoch(epoch: number): Promise<void>;
  /** WAIT_FOR_JOIN: resume now if the nodes are there (forced: go on without the missing ones) */
  checkResume(forced: boolean): Promise<void>;
  /** a member's disk failed: placement leaves it out from a new epoch on */
  diskFailed(nid: string, reason: string): Promise<void>;
  /** members get new weights: a new epoch when any changed (true) */
  setVnodes(weights: Array<[string, number]>): Promise<boolean>;
}

export class Decisions {
  private seq = 0;
  private readonly waiting = new Map<number, { resolve: (v: unknown) => void; reject: (e: unknown) => void }>();
  /** hooks the daemon sets: stop listeners and exit after a cluster shutdown */
  onShutdown: () => void = () => undefined;

  constructor(
    private readonly s: ClusterState,
    private readonly group: GroupDriver,
    private readonly codec: GroupCodec,
    private readonly m: MembershipView,
  ) {}

  /** Broadcasts a decision; resolves with its result on this node once delivered and applied. */
  decide<T = unknown>(op: ClusterOp): Promise<T> {
    // the driver cannot order anything now: say so at once rather than queue behind it
    if (this.s.suspended) return Promise.reject(new SdError(Res.HALT, `cluster decisions halted: ${this.s.suspended}`));
    const seq = ++this.seq;
    return new Promise<T>((resolve, reject) => {
      this.waiting.set(seq, { resolve: resolve as (v: unknown) => void, reject });
      const msg: GroupMsg = { t: 'op', seq, op };
      this.group.mcast(this.codec.encode(msg)).catch((e) => {
        this.waiting.delete(seq);
        reject(new SdError(Res.CLUSTER_ERROR, `cluster driver: ${(e as Error).message}`));
      });
    });
  }

  /** The group dropped this node: decisions it proposed will never come back to it. */
  failPending(err: Error): void {
    const w = [...this.waiting.values()];
    this.waiting.clear();
    for (const x of w) x.reject(err);
  }

  async applyOp(from: string, msg: Extract<GroupMsg, { t: 'op' }>): Promise<void> {
    let result: unknown;
    let error: unknown = null;
    try {
      result = await this.apply(msg.op);
      if (msg.op.kind !== 'format' && msg.op.kind !== 'shutdown' && this.s.config) await this.s.persist('vdi-state', () => saveVdiState(this.s.dir, this.s.vdis.exportState()));
    } catch (e) {
      error = e;
    }
    if (from !== this.m.member) return;
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
        return this.s.vdis.applyNewVdi(op.args, this.s.clusterDefaults, op.now, op.baseHdr);
      case 'undoNewVdi':
        return this.s.vdis.applyUndoNewVdi(op.decision);
      case 'delVdi':
        return this.s.vdis.applyDelete(op.name, op.tag, op.snapid);
      case 'lock':
        return this.s.vdis.lock(op.name, op.tag, op.snapid, op.shared, op.enforce ?? this.s.config?.lock ?? false, op.owner);
      case 'release':
        return this.s.vdis.release(op.vid);
      case 'forceRelease':
        return this.s.vdis.forceRelease(op.vid);
      case 'header':
        return this.s.vdis.applyHeader(op.update);
      case 'alterCopy':
        return this.s.vdis.applyAlterCopy(op.vid, op.copies);
      case 'recovered':
        return this.applyRecovered(op.nid, op.epoch);
      case 'forceRecover':
        if (this.s.status !== 'wait_join') throw new SdError(Res.INVALID_PARMS, 'the cluster is not waiting for nodes to join');
        return this.m.checkResume(true);
      case 'autoRecovery':
        return this.applyAutoRecovery(op.enabled);
      case 'diskFailed':
        return this.m.diskFailed(op.nid, op.reason);
      case 'vnodes':
        return this.m.setVnodes(op.weights);
      case 'copies':
        return this.applyCopies(op.copies);
    }
  }

  /** `collie cluster alter-copy`: the default for VDIs created from now on; existing VDIs keep theirs. */
  private async applyCopies(copies: number): Promise<{ old: number; copies: number }> {
    const cfg = this.s.config;
    if (!cfg) throw new SdError(Res.WAIT_FOR_FORMAT);
    const old = cfg.copies;
    this.s.config = { ...cfg, copies };
    await this.s.persist('config', () => writeConfig(this.s.dir, this.s.config!));
    this.s.log.info({ copies, old }, 'cluster default copies changed');
    return { old, copies };
  }


  private async applyFormat(a: Extract<ClusterOp, { kind: 'format' }>): Promise<void> {
    const cfg: ClusterConfig = {
      formatVersion: STORE_FORMAT_VERSION,
      ctime: a.ctime,
      copies: a.copies,
      copyPolicy: a.copyPolicy,
      blockSizeShift: a.blockSizeShift,
      lock: a.lock,
    };
    await this.s.store.wipe();
    this.s.vdis.clear();
    await this.s.epochLog.replace([]);
    await writeConfig(this.s.dir, cfg);
    this.s.config = cfg;
    await this.m.newEpoch(1);
    this.s.status = 'running';
    this.s.log.info({ copies: a.copies, blockSizeShift: a.blockSizeShift, lock: a.lock }, 'cluster formatted');
  }

  /**
   * A node finished recovering `epoch`. When every member has, for the current epoch, the copies
   * set aside in obj/.stale are no longer anybody's source: each node drops its own.
   */
  private async applyRecovered(nid: string, epoch: number): Promise<void> {
    if (epoch !== this.s.epoch) return;
    this.s.recoveredNodes.add(nid);
    if (!this.m.members.every((n) => this.s.recoveredNodes.has(n.nid))) return;
    this.s.recoveredNodes.clear();
    const n = await this.s.store.purgeStale();
    if (n) this.s.log.info({ epoch, objects: n }, 'recovery finished on every node: set-aside copies removed');
  }

  /** `collie cluster recover enable|disable`: enabling runs the recovery that waited meanwhile. */
  private applyAutoRecovery(enabled: boolean): void {
    this.s.autoRecovery = enabled;
    this.s.log.info({ enabled }, 'automatic recovery');
    if (enabled && this.s.recoveryDeferred && this.s.status === 'running') {
      this.s.recoveryDeferred = false;
      this.s.recovery.start();
    }
  }

  private async applyShutdown(): Promise<void> {
    this.s.status = 'shutdown';
    this.s.log.info('cluster shutdown requested');
    await this.s.store.flushAll();
    this.onShutdown();
  }
}
