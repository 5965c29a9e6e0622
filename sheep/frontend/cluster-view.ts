// What the HTTP front end shows of the cluster: every node's state, disk, recovery and I/O rates
// (this node from its own state, the others over port 7000 with the admin opcodes collie uses), the
// epoch history, and the VDIs with their snapshot/clone families. Built at most once a second
// however many pages watch, so viewers cannot multiply the load on the cluster.

import { Op } from '../../lib/proto.js';
import { SheepClient } from '../../lib/client.js';
import { Ring } from '../../lib/ring.js';
import { ctimeSeconds } from '../../lib/inode.js';
import type { NodeInfo } from '../../lib/node.js';
import type { RecoveryStatus, StatSheepArgs, StatSheepReply } from '../../lib/admin.js';
import type { System } from '../cluster/system.js';
import type { VdiEntry } from '../vdi/vdi-table.js';
import { metrics } from '../util/metrics.js';

/** A node's answer may take this long before the node is shown unreachable. */
const NODE_TIMEOUT_MS = 2000;
/** Store usage counts (a stat per object) are reused for this long. */
const USAGE_CACHE_MS = 5000;
/** Nodes that left within this many epochs are shown as down. */
const DOWN_EPOCHS = 10;
/** Epochs listed in the history. */
const HISTORY = 20;

export interface IoRates {
  readBps: number;
  writeBps: number;
  readIops: number;
  writeIops: number;
}

export interface NodeView {
  nid: string;
  host: string;
  port: number;
  zone: number;
  vnodes: number;
  /** up: a member that answered; unreachable: a member that did not; down: left the membership */
  state: 'up' | 'unreachable' | 'down';
  me: boolean;
  /** share of the placement ring (0..1); 0 for a node that is down */
  ringShare: number;
  /** the first epoch without it, for a node that is down */
  leftAt?: number;
  disk?: { size: number; used: number; avail: number; reserve: number; full: boolean; failed?: string };
  objects?: number;
  recovery?: RecoveryStatus & { rate: number };
  io?: IoRates;
  error?: string;
}

export interface ClusterView {
  time: number;
  me: string;
  cluster: {
    status: string;
    statusText: string;
    epoch: number;
    copies: number;
    copyPolicy: number;
    blockSizeShift: number;
    ctime: number;
    autoRecovery: boolean;
  };
  nodes: NodeView[];
  epochs: Array<{ epoch: number; time: number; nodes: string[] }>;
  totals: IoRates;
}

export interface VdiView {
  vid: number;
  name: string;
  tag: string;
  snapId: number;
  snapshot: boolean;
  size: number;
  /** seconds since 1970 */
  created: number;
  copies: number;
  blockSize: number;
  /** the VDI it was cloned or snapshotted from (0: none) */
  parent: number;
}

/** A family: a root VDI and what was snapshotted or cloned from it, as a tree. */
export interface FamilyNode extends VdiView {
  children: FamilyNode[];
}

export interface VdisView {
  vdis: VdiView[];
  families: FamilyNode[];
}

interface Sample {
  at: number;
  io: NonNullable<StatSheepReply['io']>;
}

export class ClusterWatch {
  private readonly clients = new Map<string, Promise<SheepClient>>();
  /** the last I/O totals seen per node, for rates */
  private readonly samples = new Map<string, Sample>();
  private building: Promise<ClusterView> | null = null;
  private last: { at: number; view: ClusterView } | null = null;

  constructor(private readonly sys: System, private readonly key: Buffer | null) {}

  /** The cluster as of at most `maxAgeMs` ago; concurrent callers share one build. */
  cluster(maxAgeMs = 900): Promise<ClusterView> {
    if (this.last && Date.now() - this.last.at <= maxAgeMs) return Promise.resolve(this.last.view);
    this.building ??= this.build().then((view) => {
      this.last = { at: Date.now(), view };
      return view;
    }).finally(() => { this.building = null; });
    return this.building;
  }

  vdis(): VdisView {
    const live = this.sys.vdis.all().filter((e) => !e.deleted);
    const vdis = live.map(vdiView).sort((a, b) => a.name.localeCompare(b.name) || a.snapId - b.snapId);
    const byVid = new Map<number, FamilyNode>(vdis.map((v) => [v.vid, { ...v, children: [] }]));
    const families: FamilyNode[] = [];
    for (const n of byVid.values()) {
      const parent = n.parent ? byVid.get(n.parent) : undefined;
      if (parent) parent.children.push(n);
      else families.push(n);
    }
    return { vdis, families };
  }

  close(): void {
    for (const c of this.clients.values()) c.then((x) => x.close(), () => undefined);
    this.clients.clear();
  }

  private async build(): Promise<ClusterView> {
    const sys = this.sys;
    const members = sys.members;
    const shares = new Ring(members).arcShares();
    const history = sys.config ? await sys.epochHistory() : [];
    const nodes: NodeView[] = await Promise.all(members.map(async (n, i): Promise<NodeView> => {
      const base = nodeBase(n, n.nid === sys.me.nid, shares[i] ?? 0);
      try {
        const { stat, recovery } = await this.ask(n);
        return {
          ...base,
          state: 'up',
          disk: { size: stat.size, used: stat.used, avail: stat.avail, reserve: stat.reserve ?? 0, full: stat.full ?? false, failed: stat.diskFailed },
          objects: stat.objects,
          recovery: { ...recovery, rate: rateOf(recovery) },
          io: stat.io ? this.rates(n.nid, stat.io) : undefined,
        };
      } catch (e) {
        this.samples.delete(n.nid);
        return { ...base, state: 'unreachable', error: (e as Error).message };
      }
    }));
    // nodes of recent epochs that are no longer members
    const current = new Set(members.map((n) => n.nid));
    const recent = history.slice(-DOWN_EPOCHS);
    const gone = new Map<string, { node: NodeInfo; leftAt: number }>();
    for (let i = recent.length - 1; i >= 0; i--) {
      for (const n of recent[i].nodes) {
        if (current.has(n.nid) || gone.has(n.nid)) continue;
        gone.set(n.nid, { node: n, leftAt: recent[i + 1]?.epoch ?? sys.epoch });
      }
    }
    for (const { node, leftAt } of gone.values()) {
      this.samples.delete(node.nid);
      nodes.push({ ...nodeBase(node, false, 0), state: 'down', leftAt });
    }
    nodes.sort((a, b) => a.nid.localeCompare(b.nid, undefined, { numeric: true }));
    const totals: IoRates = { readBps: 0, writeBps: 0, readIops: 0, writeIops: 0 };
    for (const n of nodes) {
      if (!n.io) continue;
      totals.readBps += n.io.readBps;
      totals.writeBps += n.io.writeBps;
      totals.readIops += n.io.readIops;
      totals.writeIops += n.io.writeIops;
    }
    const c = sys.config;
    return {
      time: Date.now(),
      me: sys.me.nid,
      cluster: {
        status: sys.status,
        statusText: sys.statusText,
        epoch: sys.epoch,
        copies: c?.copies ?? 0,
        copyPolicy: c?.copyPolicy ?? 0,
        blockSizeShift: c?.blockSizeShift ?? 0,
        ctime: c?.ctime ?? 0,
        autoRecovery: sys.autoRecovery,
      },
      nodes,
      epochs: history.slice(-HISTORY).reverse().map((r) => ({ epoch: r.epoch, time: r.time, nodes: r.nodes.map((n) => n.nid) })),
      totals,
    };
  }

  /** One node's disk, I/O totals and recovery: this node from its state, others over the wire. */
  private async ask(n: NodeInfo): Promise<{ stat: StatSheepReply; recovery: RecoveryStatus }> {
    const sys = this.sys;
    if (n.nid === sys.me.nid) {
      const d = await sys.diskStats(USAGE_CACHE_MS);
      const stat: StatSheepReply = { ...d, vdiSizeTotal: 0, io: { ...metrics.io } };
      return { stat, recovery: sys.recovery.status };
    }
    const c = await this.client(n);
    try {
      const args: StatSheepArgs = { cachedMs: USAGE_CACHE_MS };
      const [stat, recovery] = await withTimeout(Promise.all([
        c.control<StatSheepReply>(Op.STAT_SHEEP, args),
        c.control<RecoveryStatus>(Op.STAT_RECOVERY),
      ]), NODE_TIMEOUT_MS, `${n.nid} did not answer within ${NODE_TIMEOUT_MS} ms`);
      return { stat, recovery };
    } catch (e) {
      this.clients.delete(n.nid);
      c.close();
      throw e;
    }
  }

  /** A connection to a node, authenticated as admin when the cluster has a key (kept between builds). */
  private client(n: NodeInfo): Promise<SheepClient> {
    let p = this.clients.get(n.nid);
    if (!p) {
      p = (async () => {
        const c = await SheepClient.connect({ host: n.host, port: n.port }, NODE_TIMEOUT_MS);
        c.onClose(() => { if (this.clients.get(n.nid) === p) this.clients.delete(n.nid); });
        if (this.key) await c.authenticate(this.key, 'admin').catch((e: unknown) => { c.close(); throw e; });
        return c;
      })();
      p.catch(() => { if (this.clients.get(n.nid) === p) this.clients.delete(n.nid); });
      this.clients.set(n.nid, p);
    }
    return p;
  }

  /** Rates since the previous sample of the same node (zero at the first). */
  private rates(nid: string, io: Sample['io']): IoRates {
    const now = Date.now();
    const prev = this.samples.get(nid);
    this.samples.set(nid, { at: now, io });
    if (!prev || now <= prev.at) return { readBps: 0, writeBps: 0, readIops: 0, writeIops: 0 };
    const secs = (now - prev.at) / 1000;
    // a restarted node starts its totals again: never a negative rate
    const per = (a: number, b: number) => Math.max(0, a - b) / secs;
    return {
      readBps: per(io.readBytes, prev.io.readBytes),
      writeBps: per(io.writtenBytes, prev.io.writtenBytes),
      readIops: per(io.reads, prev.io.reads),
      writeIops: per(io.writes, prev.io.writes),
    };
  }
}

function nodeBase(n: NodeInfo, me: boolean, ringShare: number): Omit<NodeView, 'state'> {
  return { nid: n.nid, host: n.host, port: n.port, zone: n.zone, vnodes: n.vnodes, me, ringShare };
}

function rateOf(r: RecoveryStatus): number {
  if (r.state !== 'running' || !r.startedAt) return 0;
  const secs = (Date.now() - r.startedAt) / 1000;
  return secs > 0 ? r.done / secs : 0;
}

function vdiView(e: VdiEntry): VdiView {
  return {
    vid: e.vdiId,
    name: e.name,
    tag: e.tag,
    snapId: e.snapId,
    snapshot: e.snapCtime !== 0n,
    size: Number(e.vdiSize),
    created: ctimeSeconds(e.createTime),
    copies: e.nrCopies,
    blockSize: 2 ** e.blockSizeShift,
    parent: e.parentVdiId,
  };
}

function withTimeout<T>(p: Promise<T>, ms: number, why: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p,
    new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error(why)), ms); }),
  ]).finally(() => clearTimeout(timer));
}
