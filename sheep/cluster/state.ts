// What one sheep knows of the cluster (status, config, epoch, the VDI table) and the local parts
// that act on it: the one state the membership protocol and the decisions both change.

import fs from 'node:fs/promises';
import path from 'node:path';
import { pack, unpack } from 'msgpackr';
import { Res, SdError } from '../../lib/proto.js';
import type { NodeInfo } from '../../lib/node.js';
import type { ObjectStore } from '../store/store.js';
import { readConfig, writeFileDurable, type ClusterConfig } from '../store/config.js';
import type { VdiTable, ClusterDefaults, VdiState } from '../vdi/vdi-table.js';
import type { Recovery } from '../replication/recovery.js';
import type { EpochLog } from './epoch-log.js';
import type { Logger } from '../util/log.js';

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

/** The VDI table as every node last applied it (DIR/vdi-state): inode objects live on other nodes. */
export async function loadVdiState(dir: string): Promise<VdiState | null> {
  try {
    return unpack(await fs.readFile(path.join(dir, 'vdi-state'))) as VdiState;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw e;
  }
}

export async function saveVdiState(dir: string, s: VdiState): Promise<void> {
  await writeFileDurable(path.join(dir, 'vdi-state'), pack(s));
}

export class ClusterState {
  status: Status = 'wait_format';
  config: ClusterConfig | null = null;
  epoch = 0;
  /** recovery is paused (`collie cluster recover disable`); deferred: a membership change waits for it */
  autoRecovery = true;
  recoveryDeferred = false;
  /** nodes that finished recovering the current epoch */
  readonly recoveredNodes = new Set<string>();
  /**
   * why the cluster driver cannot order anything now (its service unreachable, or this node joining
   * again after it was dropped): client I/O is refused meanwhile, whatever the status says
   */
  suspended: string | null = null;

  constructor(
    readonly dir: string,
    readonly me: NodeInfo,
    readonly store: ObjectStore,
    readonly vdis: VdiTable,
    readonly epochLog: EpochLog,
    readonly recovery: Recovery,
    readonly log: Logger,
  ) {}

  /** Loads what this node's store remembers: config, VDI table, last epoch. */
  async load(): Promise<void> {
    await this.epochLog.init();
    this.config = await readConfig(this.dir);
    if (this.config) {
      const saved = await loadVdiState(this.dir);
      if (saved) this.vdis.importState(saved);
      else await this.vdis.load(await this.store.list()); // stores written before vdi-state existed
      this.epoch = (await this.epochLog.latest())?.epoch ?? 1;
    }
  }

  get clusterDefaults(): ClusterDefaults {
    const c = this.config;
    return { copies: c?.copies ?? 0, copyPolicy: c?.copyPolicy ?? 0, blockSizeShift: c?.blockSizeShift ?? 0 };
  }

  /**
   * Writes this node's copy of cluster state (epoch log, VDI table). On a failed disk there is none
   * to keep: the node goes on in memory as a gateway, and a restart needs a working disk anyway.
   */
  async persist(what: string, fn: () => Promise<void>): Promise<void> {
    if (this.store.failed) return;
    try {
      await fn();
    } catch (e) {
      this.store.fsError(e);
      if (!this.store.failed) throw e;
      this.log.warn({ what, err: (e as Error).message }, 'cluster state not saved: the disk failed');
    }
  }

  /** Object I/O is refused while the cluster waits for its nodes or has lost its majority. */
  ioAllowed(): void {
    if (this.suspended) throw new SdError(Res.HALT, `I/O halted: ${this.suspended}`);
    if (this.status === 'wait_join') throw new SdError(Res.WAIT_FOR_JOIN);
    if (this.status === 'halt') throw new SdError(Res.HALT);
  }

  get statusText(): string {
    if (this.suspended && this.status === 'running') return `IO has halted: ${this.suspended}`;
    return statusText(this.status, this.autoRecovery);
  }
}
