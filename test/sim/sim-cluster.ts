// A simulated cluster: N sheep in one process, each running the real cluster code (System:
// ClusterState, Membership, Decisions, the epoch log in its own directory, VdiTable, the gateway's
// placement ring) over one SimBus. No object I/O happens anywhere. What is stubbed, exactly:
//   - the object store (NullStore): it holds no objects (list() is empty, nothing is read or written);
//   - Recovery.start(): it would list and copy objects from peers over the network; it is a no-op
//     (Recovery.setAsideReowned runs for real and finds no objects to set aside);
//   - the gateway's peer links are never opened (no object requests are made); its ring is real and
//     is brought up to date after each change as the first request would (placement());
//   - a joiner fetches the state its master offered (GET_SNAPSHOT) by a call to the master's System
//     instead of a peer connection (the bytes are counted: SimBus.fetched).
// Epoch logs and vdi-state are written for real (fsync included) under the given directory.

import fs from 'node:fs/promises';
import path from 'node:path';
import pino from 'pino';
import type { Logger } from '../../sheep/util/log.js';
import type { NodeInfo } from '../../lib/node.js';
import type { ObjectStore } from '../../sheep/store/store.js';
import { writeConfig, STORE_FORMAT_VERSION, type ClusterConfig } from '../../sheep/store/config.js';
import { EpochLog } from '../../sheep/cluster/epoch-log.js';
import { System } from '../../sheep/cluster/system.js';
import type { GroupDriver } from '../../sheep/cluster/driver.js';
import { SimBus, SimGroup, quiet } from './sim-group.js';

/** The store surface the cluster code touches when no object exists: all of it answers "nothing". */
class NullStore {
  readonly failed: string | undefined = undefined;
  onDiskFailure: (reason: string) => void = () => undefined;
  fsError(e: unknown): unknown { return e; }
  async list(): Promise<bigint[]> { return []; }
  async listStale(): Promise<bigint[]> { return []; }
  async quarantine(): Promise<number> { return 0; }
  async purgeStale(): Promise<number> { return 0; }
  async wipe(): Promise<void> { /* nothing stored */ }
  async flushAll(): Promise<void> { /* nothing stored */ }
}

export interface SimNode {
  info: NodeInfo;
  group: SimGroup;
  sys: System;
  /** resolves when the node is part of the cluster */
  joined: Promise<void>;
}

/** A distinct address per simulated sheep (10.x.y.z:7000), one zone each as on separate machines. */
export function simNodeInfo(i: number): NodeInfo {
  const host = `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`;
  return { nid: `${host}:7000`, host, port: 7000, zone: i, vnodes: 64 };
}

/** The group member id of a simulated sheep. */
export function simMemberId(info: NodeInfo): string {
  return `${info.nid}#sim`;
}

/**
 * A simulated sheep's store directory: empty (a new node), or with `config` a store of the formatted
 * cluster stopped at epoch 1 with all `seed` nodes.
 */
export async function simStore(dir: string, config: ClusterConfig | null, seed: NodeInfo[]): Promise<void> {
  await fs.mkdir(dir, { recursive: true });
  if (!config) return;
  await writeConfig(dir, config);
  const log = new EpochLog(dir);
  await log.init();
  await log.append({ epoch: 1, time: Date.now(), nodes: seed });
}

/** One simulated sheep: the real System over `group`, with the stubs the file comment lists. */
export function simSystem(dir: string, info: NodeInfo, group: GroupDriver, log: Logger): System {
  const sys = new System(dir, info, new NullStore() as unknown as ObjectStore, group, log.child({ node: info.nid }));
  // recovery's object copying is the object I/O left out (see the file comment)
  sys.recovery.start = () => undefined;
  return sys;
}

/** Waits until every node has loaded its store and handed its group handlers over (then it may enter). */
async function started(nodes: SimNode[]): Promise<void> {
  while (nodes.some((x) => !x.group.events)) await quiet();
}

export class SimCluster {
  readonly bus = new SimBus();
  /** live nodes, oldest first */
  nodes: SimNode[] = [];
  private next = 0;
  private readonly log: Logger;
  /** every node made, by nid: a joiner's master is looked up here */
  private readonly byNid = new Map<string, System>();
  readonly config: ClusterConfig = { formatVersion: STORE_FORMAT_VERSION, ctime: Date.now(), copies: 3, copyPolicy: 0, blockSizeShift: 22, lock: false };

  /** `dir`: where the nodes' stores go; `logLevel`: as a sheep's (info by default: the cost of logging counts) */
  constructor(private readonly dir: string, logLevel = 'info') {
    // every node logs like a sheep does, to one discarded stream (SIM_LOG=/dev/stderr to read it)
    this.log = pino({ level: logLevel }, pino.destination({ dest: process.env.SIM_LOG ?? '/dev/null', sync: false, minLength: 8192 }));
  }

  private async makeNode(seed: NodeInfo[] | null): Promise<SimNode> {
    const info = simNodeInfo(this.next++);
    const dir = path.join(this.dir, `n${this.next}`);
    await simStore(dir, seed ? this.config : null, seed ?? []);
    const group = new SimGroup(this.bus, simMemberId(info));
    const sys = simSystem(dir, info, group, this.log);
    this.byNid.set(info.nid, sys);
    sys.fetchSnapshot = async (master, offer) => {
      const bytes = this.byNid.get(master.nid)?.snapshotOffer(offer);
      if (!bytes) throw new Error(`${master.nid} offers no state named ${offer}`);
      this.bus.fetched(simMemberId(info), bytes);
      return bytes;
    };
    group.applied = () => sys.clusterEventsApplied();
    const joined = sys.start();
    joined.catch(() => undefined);
    return { info, group, sys, joined };
  }

  /**
   * Brings up `n` nodes as after a full restart of a formatted cluster: every store holds epoch 1
   * with all n nodes; they join at once, wait for each other and the leader resumes them (the real
   * WAIT_FOR_JOIN path; n joins one by one would cost n epochs at up to n members each).
   */
  async boot(n: number): Promise<void> {
    const seed = Array.from({ length: n }, (_, i) => simNodeInfo(this.next + i));
    const fresh: SimNode[] = [];
    for (let i = 0; i < n; i++) fresh.push(await this.makeNode(seed));
    await started(fresh);
    this.bus.join(fresh.map((x) => x.group));
    await this.bus.settle();
    await Promise.all(fresh.map((x) => x.joined));
    this.nodes.push(...fresh);
    await this.bus.settle();
  }

  /** `count` new (unformatted) nodes enter the group in one configuration change. */
  async join(count: number): Promise<void> {
    const fresh: SimNode[] = [];
    for (let i = 0; i < count; i++) fresh.push(await this.makeNode(null));
    await started(fresh);
    this.bus.join(fresh.map((x) => x.group));
    await this.bus.settle();
    await Promise.all(fresh.map((x) => x.joined));
    this.nodes.push(...fresh);
  }

  /** `count` nodes (the newest but one onwards... picked from the middle) leave in one change. */
  async leave(count: number): Promise<void> {
    const from = Math.max(1, Math.floor(this.nodes.length / 2) - Math.floor(count / 2));
    const gone = this.nodes.splice(from, count);
    for (const g of gone) this.byNid.delete(g.info.nid);
    this.bus.leave(gone.map((x) => x.group.id));
    await this.bus.settle();
  }

  /** Every node brings its placement up to date, as its first object request after a change does. */
  placement(onNode?: (n: SimNode, cpuMicros: number) => void): void {
    for (const n of this.nodes) {
      const t = process.cpuUsage();
      n.sys.gateway.targets(1n);
      const d = process.cpuUsage(t);
      onNode?.(n, d.user + d.system);
    }
  }

  /** Problems in the nodes' agreement: members, epoch and status must be the same everywhere. */
  disagreement(): string | null {
    const want = this.nodes.map((n) => n.info.nid).join(',');
    const epoch = this.nodes[0]?.sys.epoch;
    for (const n of this.nodes) {
      if (n.sys.members.map((m) => m.nid).join(',') !== want) return `${n.info.nid} sees other members`;
      if (n.sys.epoch !== epoch) return `${n.info.nid} is at epoch ${n.sys.epoch}, ${this.nodes[0].info.nid} at ${epoch}`;
      if (n.sys.status !== 'running') return `${n.info.nid} is ${n.sys.status}`;
    }
    return null;
  }

  get epoch(): number {
    return this.nodes[0]?.sys.epoch ?? 0;
  }
}
