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
  VdiTable, type ClusterDefaults, type NewVdiArgs, type NewVdiDecision, type BaseHeaderFields, type HeaderUpdate, type VdiEntry,
} from './vdi.js';
import { vidToVdiOid } from '../lib/oid.js';
import { SD_INODE_HEADER_SIZE, decodeInodeHeader, makeCtime } from '../lib/inode.js';
import { EpochLog, type EpochRecord } from './epoch-log.js';
import { readConfig, writeConfig, STORE_FORMAT_VERSION, type ClusterConfig } from './config.js';
import type { ClusterDriver, NodeInfo } from './cluster/driver.js';
import type { Logger } from './log.js';

export type Status = 'wait_format' | 'running' | 'shutdown';

export const STATUS_TEXT: Record<Status, string> = {
  wait_format: 'Waiting for cluster to be formatted',
  running: 'running, auto-recovery enabled',
  shutdown: 'System is shutting down',
};

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
  | { kind: 'header'; update: HeaderUpdate };

interface OpMsg {
  origin: string;
  seq: number;
  op: ClusterOp;
}

export class System {
  status: Status = 'wait_format';
  config: ClusterConfig | null = null;
  epoch = 0;
  members: NodeInfo[] = [];
  readonly vdis: VdiTable;
  readonly gateway: Gateway;
  readonly epochLog: EpochLog;
  /** hooks the daemon sets: stop listeners and exit after a cluster shutdown */
  onShutdown: () => void = () => undefined;

  private seq = 0;
  private readonly waiting = new Map<number, { resolve: (v: unknown) => void; reject: (e: unknown) => void }>();
  private applyChain: Promise<void> = Promise.resolve();
  /** attribute updates probe and write objects: one at a time per VDI */
  private readonly attrMutex = new KeyedMutex<string>();
  private membership: Promise<void> = Promise.resolve();

  constructor(
    readonly dir: string,
    readonly me: NodeInfo,
    readonly store: ObjectStore,
    private readonly driver: ClusterDriver,
    readonly log: Logger,
  ) {
    this.gateway = new Gateway(store, () => this.epoch);
    this.vdis = new VdiTable(this.gateway, log);
    this.vdis.onHeaderChange = async (update) => { await this.decide({ kind: 'header', update }); };
    this.epochLog = new EpochLog(dir);
  }

  async start(): Promise<void> {
    await this.epochLog.init();
    this.config = await readConfig(this.dir);
    if (this.config) {
      await this.vdis.load(await this.store.list());
      const last = await this.epochLog.latest();
      this.epoch = last?.epoch ?? 1;
    }
    await this.driver.join(this.me, {
      onJoin: (_node, members) => this.setMembers(members),
      onLeave: (_node, members) => this.setMembers(members),
      onNotify: (from, msg) => this.deliver(from, msg),
    });
    await this.membership;
  }

  private setMembers(members: NodeInfo[]): void {
    this.members = members;
    this.membership = this.membership.then(() => this.membershipChanged()).catch((e) => {
      this.log.error({ err: e }, 'applying a membership change failed');
    });
  }

  get clusterDefaults(): ClusterDefaults {
    const c = this.config;
    return { copies: c?.copies ?? 0, copyPolicy: c?.copyPolicy ?? 0, blockSizeShift: c?.blockSizeShift ?? 0 };
  }

  private async membershipChanged(): Promise<void> {
    if (!this.config) {
      this.status = 'wait_format';
      return;
    }
    const last = await this.epochLog.latest();
    const same = last && sameNodes(last.nodes, this.members);
    if (!same) await this.newEpoch((last?.epoch ?? 0) + 1);
    this.status = 'running';
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
      const msg: OpMsg = { origin: this.me.nid, seq, op };
      this.driver.notify(pack(msg)).catch((e) => {
        this.waiting.delete(seq);
        reject(new SdError(Res.CLUSTER_ERROR, `cluster driver: ${(e as Error).message}`));
      });
    });
  }

  private deliver(_from: NodeInfo, raw: Buffer): void {
    const msg = unpack(raw) as OpMsg;
    this.applyChain = this.applyChain.then(async () => {
      let result: unknown;
      let error: unknown = null;
      try {
        result = await this.apply(msg.op);
      } catch (e) {
        error = e;
      }
      if (msg.origin !== this.me.nid) return;
      const w = this.waiting.get(msg.seq);
      if (!w) return;
      this.waiting.delete(msg.seq);
      if (error) w.reject(error);
      else w.resolve(result);
    });
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
    await this.epochLog.clear();
    await writeConfig(this.dir, cfg);
    this.config = cfg;
    await this.newEpoch(1);
    this.status = 'running';
    this.log.info({ copies: a.copies, blockSizeShift: a.blockSizeShift, lock: a.lock }, 'cluster formatted');
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
