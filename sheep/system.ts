// The cluster state machine of one sheep: status, epoch, members, cluster config, VDI table and
// locks. Cluster-wide decisions (format, shutdown, VDI create/delete/lock/release) are broadcast
// through the cluster driver and applied in delivery order, one at a time.

import fs from 'node:fs/promises';
import { pack, unpack } from 'msgpackr';
import { Res, SdError } from '../lib/proto.js';
import { ObjectStore } from './store.js';
import { Gateway } from './gateway.js';
import { VdiTable, type ClusterDefaults } from './vdi.js';
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

export interface FormatArgs {
  copies: number;
  copyPolicy: number;
  blockSizeShift: number;
  lock: boolean;
}

interface OrderedMsg {
  origin: string;
  seq: number;
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
  private readonly waiting = new Map<number, { work: () => Promise<unknown>; resolve: (v: unknown) => void; reject: (e: unknown) => void }>();
  private applyChain: Promise<void> = Promise.resolve();
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

  // ------------------------------------------------------------------ ordered execution

  /**
   * Runs `work` as a cluster-wide decision: broadcast through the driver, executed when the message
   * is delivered, strictly one decision at a time in delivery order.
   */
  ordered<T>(work: () => Promise<T>): Promise<T> {
    const seq = ++this.seq;
    return new Promise<T>((resolve, reject) => {
      this.waiting.set(seq, { work, resolve: resolve as (v: unknown) => void, reject });
      const msg: OrderedMsg = { origin: this.me.nid, seq };
      this.driver.notify(pack(msg)).catch((e) => {
        this.waiting.delete(seq);
        reject(new SdError(Res.CLUSTER_ERROR, `cluster driver: ${(e as Error).message}`));
      });
    });
  }

  private deliver(_from: NodeInfo, raw: Buffer): void {
    const msg = unpack(raw) as OrderedMsg;
    if (msg.origin !== this.me.nid) return;
    const w = this.waiting.get(msg.seq);
    if (!w) return;
    this.waiting.delete(msg.seq);
    this.applyChain = this.applyChain.then(() => w.work().then(w.resolve, w.reject));
  }

  // ------------------------------------------------------------------ cluster decisions

  async format(a: FormatArgs): Promise<void> {
    const cfg: ClusterConfig = {
      formatVersion: STORE_FORMAT_VERSION,
      ctime: Date.now(),
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

  async shutdown(): Promise<void> {
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
