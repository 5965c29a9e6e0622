// The membership protocol of one sheep: joining (state transfer from the oldest member, or a
// refusal), nodes leaving, sides of a split announcing themselves and merging, the resume after a
// full restart (WAIT_FOR_JOIN), the majority rule on a split (HALT), and the epoch every
// membership change adds. Every group event is handled here, one after another, in delivery order;
// decisions are handed to their applier in that same order.

import type { NodeInfo } from '../../lib/node.js';
import { writeConfig } from '../store/config.js';
import type { EpochRecord } from './epoch-log.js';
import type { GroupDriver } from './driver.js';
import type { GroupCodec } from './group-codec.js';
import { packSnapshot, unpackSnapshot, type GroupMsg, type Member, type ClusterSnapshot } from './messages.js';
import { saveVdiState, type ClusterState } from './state.js';

/** Epoch changes log their node list up to this many nodes, the count beyond. */
const LOGGED_NODES = 32;

/** How long the master keeps the state it offered a joiner, for the joiner to fetch. */
const OFFER_TTL_MS = 5 * 60_000;
/** A joiner fetching its state retries this long (the master may not listen yet: it just started). */
const FETCH_FOR_MS = 20_000;
const FETCH_PAUSE_MS = 250;

/** How long a refusal sent in clear waits for a sealed welcome before it is believed. */
const CLEAR_REJECT_GRACE_MS = 3000;

export class Membership {
  /** every group event is handled here, one after another, in delivery order */
  private chain: Promise<void> = Promise.resolve();
  /** which membership in the group the events belong to (a node the group dropped joins again) */
  private gen = 0;
  /** this node's id in the group (driver level) */
  private memberId = '';
  /** accepted sheep, oldest first; nodes[0] answers join requests (after a change: nodesChanged()) */
  private nodes: Member[] = [];
  /** `nodes` by group member id (every change asks whether a member is one of them: at 1,000 nodes a scan per question was a member's largest cost of a join) */
  private byMember = new Map<string, Member>();
  /** `members`, made once per change: the gateway asks for it on every request */
  private membersCache: NodeInfo[] | null = null;
  private accepted = false;
  /** asking to be taken back after a network split (never founds a cluster meanwhile) */
  private rejoining = false;
  /** the member whose side we asked to rejoin */
  private rejoinTarget: string | null = null;
  /** the group's members in the driver's order (the same on every member) */
  private groupMembers: string[] = [];
  /** members whose join request was delivered and not yet answered */
  private readonly joiners = new Set<string>();
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
  /** group members whose messages do not prove our key (never counted as members or elders) */
  private readonly foreign = new Set<string>();
  /** group members refused for a wrong cluster key (answered once) */
  private readonly refusedForeign = new Set<string>();
  /**
   * As master: the packed state of each welcome, by offer name, until its joiner left (or
   * OFFER_TTL_MS). A joiner may be welcomed twice (it asked again when a member left): each welcome
   * names its own state, taken where its join request fell in the order, which is what the joiner
   * replays the later events on.
   */
  private readonly offers = new Map<string, { member: string; bytes: Uint8Array; timer: NodeJS.Timeout }>();
  private offerSeq = 0;
  /** set by the owner: fetches the state `master` offered this node under the name `offer` in its welcome */
  fetchSnapshot: (master: NodeInfo, offer: string) => Promise<Uint8Array> = async () => {
    throw new Error('no way to reach the master');
  };
  /** waiters for the next membership change (the gateway retries after one) */
  private epochWaiters: Array<() => void> = [];
  /** told after every membership change (the gateway drops links to nodes that left) */
  onChanged: () => void = () => undefined;

  constructor(
    private readonly s: ClusterState,
    private readonly group: GroupDriver,
    private readonly codec: GroupCodec,
    /** applies a delivered decision (every member, in delivery order) */
    private readonly applyDecision: (from: string, msg: Extract<GroupMsg, { t: 'op' }>) => Promise<void>,
  ) {}

  /** this node's id in the group (driver level) */
  get member(): string {
    return this.memberId;
  }

  /** Joins the group and resolves once this node is part of the cluster. */
  async join(): Promise<void> {
    await this.connect();
    // a restart that finds every node of its last epoch (a single sheep, say) resumes at once
    for (const deadline = Date.now() + 3000; this.s.status === 'wait_join' && this.resumeSent && Date.now() < deadline;) {
      await this.membershipChange(200);
    }
  }

  /** One membership in the group: events of an earlier one (before the group dropped us) are ignored. */
  private async connect(): Promise<void> {
    const gen = ++this.gen;
    this.joined = new Promise((res, rej) => { this.joinedResolve = res; this.joinedReject = rej; });
    this.memberId = await this.group.init(`${this.s.me.nid}#${process.pid}`);
    await this.group.start({
      confchg: (members, joined, left) => this.enqueue(gen, () => this.onConfchg(members, joined, left)),
      deliver: (from, msg) => this.enqueue(gen, () => this.onDeliver(from, msg)),
    });
    await this.joined;
  }

  /**
   * The group dropped this live node (a ZooKeeper session that expired): forget what it knew of the
   * members and join again as a returning node, which adopts the cluster's state (and sets its own
   * copies aside if the cluster moved on without it). The caller refuses client I/O meanwhile.
   */
  async rejoinGroup(): Promise<void> {
    this.gen++;
    await this.chain;
    this.accepted = false;
    this.rejoining = false;
    this.rejoinTarget = null;
    this.setNodes([]);
    this.groupMembers = [];
    this.joiners.clear();
    for (const o of this.offers.values()) clearTimeout(o.timer);
    this.offers.clear();
    this.older.clear();
    this.foreign.clear();
    this.refusedForeign.clear();
    this.joinDelivered = false;
    this.sawOwnJoin = false;
    this.resumeSent = false;
    this.pending = [];
    this.onChanged();
    await this.group.stop();
    await this.join();
  }

  private enqueue(gen: number, fn: () => Promise<void>): void {
    this.chain = this.chain.then(() => (gen === this.gen ? fn() : undefined)).catch((e) => this.s.log.error({ err: e }, 'applying a cluster event failed'));
  }

  /** Resolves once every group event delivered so far (and any it led to) is applied here. */
  async applied(): Promise<void> {
    for (let c = this.chain; ; c = this.chain) {
      await c;
      if (c === this.chain) return;
    }
  }

  /** The sheep of the cluster, oldest first (the same array until the next change: never change it). */
  get members(): NodeInfo[] {
    return (this.membersCache ??= this.nodes.map((n) => n.info));
  }

  /** `nodes` or a node's info changed: `members` is made again. */
  private nodesChanged(): void {
    this.membersCache = null;
  }

  private setNodes(list: Member[]): void {
    this.nodes = list;
    this.byMember = new Map(list.map((n) => [n.member, n]));
    this.nodesChanged();
  }

  private addNode(n: Member): void {
    this.nodes.push(n);
    this.byMember.set(n.member, n);
    this.nodesChanged();
  }

  /** Whether group member `m` is an accepted sheep. */
  private isNode(m: string): boolean {
    return this.byMember.has(m);
  }

  /** Resolves at the next membership change, or after `ms`. */
  membershipChange(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(() => { this.epochWaiters = this.epochWaiters.filter((w) => w !== done); resolve(); }, ms);
      const done = () => { clearTimeout(t); resolve(); };
      this.epochWaiters.push(done);
    });
  }

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
    for (const m of left) this.refusedForeign.delete(m);
    for (const m of left) this.foreign.delete(m);
    for (const m of left) this.older.delete(m);
    for (const m of left) this.joiners.delete(m);
    for (const m of left) this.withdraw(m);
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
      const node = this.byMember.get(m);
      if (!node) continue;
      const gone = node.info;
      this.nodes.splice(this.nodes.indexOf(node), 1);
      this.byMember.delete(m);
      this.nodesChanged();
      this.s.vdis.dropLocksOf(gone.nid);
      this.s.log.warn({ node: gone.nid }, 'node left the cluster');
      changed = true;
    }
    if (changed) await this.membershipChanged();
    const foreign = joined.filter((m) => m !== this.member && !this.isNode(m));
    const announce = this.s.status === 'running' || this.s.status === 'halt' || this.s.status === 'wait_format';
    if (foreign.length && announce && this.nodes[0]?.member === this.member) {
      // new group members may be another side of a healed split (or of groups that formed apart and
      // merged): say what runs here, so that a halted or unformatted side joins another
      await this.group.mcast(this.codec.encode({ t: 'present', ctime: this.s.config?.ctime ?? 0, epoch: this.s.epoch, status: this.s.status } satisfies GroupMsg));
    }
  }

  private async sendJoin(): Promise<void> {
    const msg: GroupMsg = { t: 'join', node: this.s.me, ctime: this.s.config?.ctime ?? 0, epoch: this.s.config ? this.s.epoch : 0 };
    await this.group.mcast(this.codec.encode(msg)).catch((e) => this.joinedReject(new Error(`cluster driver: ${(e as Error).message}`)));
  }

  /** Leaves this halted side and asks the side of `target` for a welcome. */
  private async rejoin(target: string): Promise<void> {
    this.s.log.warn({ epoch: this.s.epoch }, 'the network healed: rejoining the other side of the cluster');
    this.accepted = false;
    this.rejoining = true;
    this.rejoinTarget = target;
    this.joinDelivered = false;
    this.pending = [];
    await this.sendJoin();
  }

  /** Nobody took us back: this node is again a member of its halted side, with what happened meanwhile. */
  private async abandonRejoin(): Promise<void> {
    this.s.log.warn('the side this node asked to rejoin went away: staying halted');
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
    if (this.isNode(from)) return false;
    // of two sides alike, the younger one joins the older one (group order is the same everywhere)
    const order = (m: string) => this.groupMembers.indexOf(m);
    const older = order(from) >= 0 && order(from) < order(this.nodes[0].member);
    if (this.s.status === 'wait_format') {
      // sheep that started apart (the driver's groups merged later): nothing stored yet, just join
      return msg.status === 'running' || (msg.status === 'wait_format' && older);
    }
    if (this.s.status !== 'halt' || msg.ctime !== this.s.config?.ctime) return false;
    if (msg.status === 'running') return msg.epoch >= this.s.epoch;
    if (msg.status !== 'halt') return false;
    if (msg.epoch !== this.s.epoch) return msg.epoch > this.s.epoch;
    return older;
  }

  /**
   * A message this node cannot open (another cluster key, or none): a sheep that may not join. Our
   * master refuses it once, in clear, before it can receive any cluster state.
   */
  private async onForeign(from: string, why: string): Promise<void> {
    if (from === this.member) return;
    // Not one of us (it never counts as another side of a split). Which side is the cluster cannot be
    // told from the keys: the older members are, as for any join; a newcomer that cannot read them is
    // refused (by their master, below), and an older member without the key keeps us waiting.
    this.foreign.add(from);
    if (!this.accepted || this.nodes[0]?.member !== this.member) return;
    if (this.isNode(from) || this.refusedForeign.has(from)) return;
    this.refusedForeign.add(from);
    const reason = `wrong cluster key: ${why}`;
    this.s.log.warn({ member: from, reason }, 'join refused');
    await this.group.mcast(this.codec.encodeClear({ t: 'reject', to: from, reason }));
  }

  private async onDeliver(from: string, raw: Buffer): Promise<void> {
    const d = this.codec.decode(raw);
    if ('foreign' in d) return this.onForeign(from, d.foreign);
    const msg = d.msg;
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
          if (!d.sealed) {
            // a refusal in clear proves nothing (any member without the key could send one): it counts
            // only if no welcome sealed with our key comes meanwhile
            this.s.log.warn({ reason: msg.reason }, 'refused in clear: waiting a moment for a welcome from a member with our key');
            setTimeout(() => {
              if (this.accepted) return;
              this.s.log.error({ reason: msg.reason }, 'the cluster refused this node');
              this.joinedReject(new Error(`the cluster refused this node: ${msg.reason}`));
            }, CLEAR_REJECT_GRACE_MS).unref();
            return;
          }
          this.s.log.error({ reason: msg.reason }, 'the cluster refused this node');
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
        if (this.s.status === 'halt' && msg.ctime && msg.ctime === this.s.config?.ctime && msg.epoch > this.s.epoch) {
          // a node with a newer history than this halted side (the majority restarting): wait for the
          // nodes of its last epoch as after a full restart; its history leads
          this.s.log.warn({ node: msg.node.nid, epoch: msg.epoch }, 'a node with a newer history joins: waiting for its epoch\'s nodes');
          this.s.status = 'wait_join';
          for (const n of this.nodes) n.storeEpoch = this.s.epoch;
        }
        return this.answerJoin(from, msg);
      case 'welcome':
        this.joiners.delete(msg.to);
        // only our side's master speaks for us (another side may coexist in the group after a split)
        if (from !== this.nodes[0]?.member) return;
        if (msg.to !== this.member && !this.isNode(msg.to)) {
          this.addNode({ member: msg.to, info: msg.node, storeEpoch: msg.storeEpoch });
          this.s.log.info({ node: msg.node.nid }, 'node joined the cluster');
          await this.membershipChanged();
        }
        return;
      case 'reject':
        return;
      case 'op':
        return this.applyDecision(from, msg);
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
    this.setNodes([{ member: this.member, info: this.s.me, storeEpoch: this.s.config ? this.s.epoch : 0 }]);
    // a formatted cluster that restarts waits for the nodes of its last epoch
    if (this.s.config) this.s.status = 'wait_join';
    this.s.log.info({ formatted: !!this.s.config, epoch: this.s.epoch }, 'this node founds the cluster');
    await this.membershipChanged();
    this.joinedResolve();
  }

  /** `history`: the epoch records the receivers need (never the whole history: it grows with every change) */
  private async snapshot(history: () => Promise<EpochRecord[]>): Promise<ClusterSnapshot> {
    return {
      config: this.s.config,
      status: this.s.status,
      epoch: this.s.epoch,
      history: this.s.config ? await history() : [],
      nodes: this.nodes,
      vdis: this.s.vdis.exportState(),
      autoRecovery: this.s.autoRecovery,
    };
  }

  /** The oldest sheep answers join requests: state transfer, or a refusal with the reason. */
  private async answerJoin(from: string, msg: Extract<GroupMsg, { t: 'join' }>): Promise<void> {
    if (this.nodes[0]?.member !== this.member || this.isNode(from)) return;
    if (this.s.status === 'halt' && this.unknownGroupMembers().length) {
      // another side of a split may be in the group too: only one side may take the node in. The
      // sides sort that out first (present), then the merged side answers the repeated join.
      this.s.log.info({ node: msg.node.nid }, 'halted with another side in the group: join left to the merged side');
      return;
    }
    let reason: string | null = null;
    if (this.nodes.some((n) => n.info.nid === msg.node.nid)) reason = `a node with address ${msg.node.nid} is already a member`;
    else if (this.s.config && msg.ctime && msg.ctime !== this.s.config.ctime) {
      reason = `the node belongs to another cluster (created ${new Date(msg.ctime).toISOString()}, this one ${new Date(this.s.config.ctime).toISOString()})`;
    } else if (this.s.config && msg.ctime && msg.epoch > this.s.epoch && this.s.status !== 'wait_join') {
      // while waiting for the last epoch's nodes a newer history is welcome: it is the one resumed
      reason = `conflicting epoch history: the node has epoch ${msg.epoch}, the cluster ${this.s.epoch}`;
    }
    if (reason) {
      this.s.log.warn({ node: msg.node.nid, reason }, 'join refused');
      await this.group.mcast(this.codec.encode({ t: 'reject', to: from, reason } satisfies GroupMsg));
      return;
    }
    // the joiner gets our record of its last epoch (to check its history is ours) and the latest
    const snapshot = await this.snapshot(() => this.s.epochLog.forNodeAt(msg.epoch));
    const offer = this.offer(from, packSnapshot(snapshot));
    const welcome: GroupMsg = { t: 'welcome', to: from, node: msg.node, storeEpoch: msg.epoch, master: this.s.me, offer };
    await this.group.mcast(this.codec.encode(welcome));
  }

  /** The state offered under the name `offer` (GET_SNAPSHOT), or null. */
  snapshotOffer(offer: string): Uint8Array | null {
    return this.offers.get(offer)?.bytes ?? null;
  }

  /** Keeps `bytes` for joiner `member`; returns the name its welcome gives it. */
  private offer(member: string, bytes: Uint8Array): string {
    const name = `${++this.offerSeq}:${member}`;
    const timer = setTimeout(() => this.offers.delete(name), OFFER_TTL_MS);
    timer.unref?.();
    this.offers.set(name, { member, bytes, timer });
    return name;
  }

  /** Drops the states offered to `member` (it left the group). */
  private withdraw(member: string): void {
    if (!this.offers.size) return;
    for (const [name, o] of this.offers) {
      if (o.member !== member) continue;
      clearTimeout(o.timer);
      this.offers.delete(name);
    }
  }

  /** Fetches the state our welcome's master offered us, retrying while it may be starting up. */
  private async fetchOffered(master: NodeInfo, offer: string): Promise<Uint8Array> {
    const until = Date.now() + FETCH_FOR_MS;
    for (;;) {
      try {
        return await this.fetchSnapshot(master, offer);
      } catch (e) {
        if (Date.now() > until) throw e;
        await new Promise((r) => setTimeout(r, FETCH_PAUSE_MS));
      }
    }
  }

  /** Group members that are neither accepted, joining nor foreign (another side of a split). */
  private unknownGroupMembers(): string[] {
    return this.groupMembers.filter((m) => m !== this.member && !this.joiners.has(m) && !this.foreign.has(m) && !this.isNode(m));
  }

  /** Our welcome: take over the cluster's state, replay what happened since, then count ourselves in. */
  private async welcomed(msg: Extract<GroupMsg, { t: 'welcome' }>): Promise<void> {
    let packed = msg.snapshot;
    if (!packed) {
      try {
        packed = await this.fetchOffered(msg.master, msg.offer);
      } catch (e) {
        // every member counts this node in from the welcome on: without the state it cannot be one.
        // It stops (its leaving is a membership change like any); restarted, it joins anew
        const why = `could not fetch the cluster state from the master ${msg.master.nid}: ${(e as Error).message}`;
        this.s.log.fatal({ master: msg.master.nid }, why);
        this.joinedReject(new Error(why));
        this.group.onLost(why);
        return;
      }
    }
    const snap = unpackSnapshot(packed);
    if (snap.status === 'wait_join') {
      // the cluster is restarting: keep our own history until the newest one is chosen (resume)
      this.s.status = 'wait_join';
      this.s.autoRecovery = snap.autoRecovery;
    } else {
      await this.adopt(snap);
    }
    this.setNodes([...snap.nodes]);
    await this.acceptAndReplay();
    this.addNode({ member: this.member, info: this.s.me, storeEpoch: msg.storeEpoch });
    this.s.log.info({ nodes: this.nodes.map((n) => n.info.nid), epoch: this.s.epoch, status: this.s.status }, 'joined the cluster');
    await this.membershipChanged();
    if (this.s.config) await this.s.persist('vdi-state', () => saveVdiState(this.s.dir, this.s.vdis.exportState()));
    this.joinedResolve();
  }

  /** Takes over the cluster state of `snap` (config, epoch history, VDI table). */
  private async adopt(snap: ClusterSnapshot): Promise<void> {
    if (this.s.config && snap.config && this.s.epoch < snap.epoch) {
      // the cluster went on without us: our copies may miss writes. Never serve them; keep them aside
      // (obj/.stale) for recovery. Reads fail over to the members, writes copy the object here first.
      const n = await this.s.store.quarantine();
      if (n) this.s.log.warn({ objects: n, ours: this.s.epoch, cluster: snap.epoch }, 'rejoining after the cluster moved on: local copies set aside');
    }
    this.s.config = snap.config;
    if (snap.config) await writeConfig(this.s.dir, snap.config);
    await this.s.epochLog.adopt(snap.history);
    this.s.epoch = snap.epoch;
    this.s.status = snap.status;
    this.s.autoRecovery = snap.autoRecovery;
    this.s.vdis.importState(snap.vdis);
  }

  /**
   * The end of WAIT_FOR_JOIN, applied by every member in delivery order: the newest history becomes
   * everyone's, and recovery runs (a restart may have interrupted one).
   */
  private async resumed(msg: Extract<GroupMsg, { t: 'resume' }>): Promise<void> {
    if (this.s.status !== 'wait_join') return;
    // still waiting until the epoch is settled: nobody may see 'running' with the old epoch
    // (recover enable/disable applied since the leader took its snapshot is newer than the snapshot's)
    await this.adopt({ ...msg.snapshot, status: 'wait_join', autoRecovery: this.s.autoRecovery });
    await this.s.persist('vdi-state', () => saveVdiState(this.s.dir, this.s.vdis.exportState()));
    this.s.log.info({ epoch: this.s.epoch, forced: msg.forced, nodes: this.members.map((n) => n.nid) }, 'cluster resumed after a restart');
    await this.membershipChanged(true, msg.forced);
  }

  /** The member whose store has the newest epoch history (the oldest such member on a tie). */
  private get historyLeader(): Member | undefined {
    let best: Member | undefined;
    for (const n of this.nodes) if (!best || n.storeEpoch > best.storeEpoch) best = n;
    return best;
  }

  /** WAIT_FOR_JOIN: the leader resumes the cluster once every node of its last epoch is back. */
  async checkResume(forced: boolean): Promise<void> {
    if (this.s.status !== 'wait_join' || this.historyLeader?.member !== this.member || !this.s.config) return;
    const last = await this.s.epochLog.latest();
    const here = new Set(this.members.map((n) => n.nid));
    const missing = (last?.nodes ?? []).filter((n) => !here.has(n.nid)).map((n) => n.nid);
    if (missing.length && !forced) {
      this.s.log.info({ missing }, 'waiting for the nodes of the last epoch to join');
      return;
    }
    if (missing.length) this.s.log.warn({ missing }, 'recovery forced: going on without these nodes');
    // every member takes this history over: the records from the oldest store epoch among them on
    const from = Math.max(1, Math.min(...this.nodes.map((n) => n.storeEpoch)));
    const snap = await this.snapshot(() => this.s.epochLog.since(from));
    this.resumeSent = true;
    await this.group.mcast(this.codec.encode({ t: 'resume', snapshot: { ...snap, nodes: [] }, forced } satisfies GroupMsg));
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
    if (!this.s.config) {
      if (this.s.status !== 'shutdown' && this.s.status !== 'wait_join') this.s.status = 'wait_format';
    } else if (this.s.status === 'wait_join' && !resumed) {
      await this.checkResume(false);
    } else if (this.s.status !== 'shutdown') {
      const last = await this.s.epochLog.latest();
      if (!forced && !this.hasQuorum(last)) {
        // no new epoch on this side: the majority's history goes on, ours must not fork from it
        if (this.s.status !== 'halt') this.s.log.error({ members: this.members.map((n) => n.nid), epoch: this.s.epoch }, 'lost the majority of the last epoch: I/O halted');
        this.s.status = 'halt';
        this.s.recovery.stop();
      } else {
        if (this.s.status === 'halt') this.s.log.warn('the majority of the last epoch is back: I/O resumes');
        const changed = !last || !sameNodes(last.nodes, this.members);
        if (changed) {
          // before this node works under the new epoch: a copy it owns again after an epoch in which
          // it did not may have missed that epoch's writes; it leaves service (recovery puts it back
          // if it is current, or copies the current one)
          if (last && this.accepted) await this.s.recovery.setAsideReowned(last.nodes, this.members);
          await this.newEpoch((last?.epoch ?? 0) + 1);
          this.s.recoveredNodes.clear();
        }
        this.s.status = 'running';
        // every membership change moves placement: each node fills what it now owns
        if (this.accepted && (changed || resumed)) {
          if (this.s.autoRecovery) this.s.recovery.start();
          else {
            this.s.recoveryDeferred = true;
            this.s.recovery.defer();
          }
        }
      }
    }
    this.onChanged();
    const w = this.epochWaiters;
    this.epochWaiters = [];
    for (const f of w) f();
  }

  /**
   * A member's disk failed (a decision, so every node applies it at the same point): it keeps its
   * place in the group, serving its clients through the others, but gets no vnodes, so a new epoch
   * places its copies elsewhere and recovery re-replicates them from the other holders.
   */
  async diskFailed(nid: string, reason: string): Promise<void> {
    const m = this.nodes.find((n) => n.info.nid === nid);
    if (!m || m.info.vnodes === 0) return;
    m.info = { ...m.info, vnodes: 0 };
    this.nodesChanged();
    this.s.log.error({ node: nid, reason }, 'a node\'s disk failed: its copies are re-replicated to the other nodes');
    await this.membershipChanged();
  }

  /**
   * New weights for members (a decision, so every node applies it at the same point): the ring
   * changes with them, so a new epoch moves objects by recovery, as any membership change does. A
   * member whose disk failed keeps no vnodes; nids that are not members are ignored.
   */
  async setVnodes(weights: Array<[string, number]>): Promise<boolean> {
    let changed = false;
    for (const [nid, vnodes] of weights) {
      const m = this.nodes.find((n) => n.info.nid === nid);
      // only a failed disk takes a node to 0 (diskFailed), never a weight change
      if (!m || m.info.vnodes === 0 || vnodes < 1 || m.info.vnodes === vnodes) continue;
      this.s.log.info({ node: nid, vnodes, old: m.info.vnodes }, 'node weight (vnodes) changed');
      m.info = { ...m.info, vnodes };
      this.nodesChanged();
      // a node that joins the group again announces the weight it has now
      if (nid === this.s.me.nid) this.s.me.vnodes = vnodes;
      changed = true;
    }
    if (changed) await this.membershipChanged();
    return changed;
  }

  async newEpoch(epoch: number): Promise<void> {
    this.s.epoch = epoch;
    // members' node objects are replaced, never changed, except this node's own (`me` changes in
    // place with a weight change): the record gets its own copy of that one
    const nodes = this.members.slice();
    const mine = nodes.indexOf(this.s.me);
    if (mine >= 0) nodes[mine] = { ...this.s.me };
    await this.s.persist('epoch log', () => this.s.epochLog.append({ epoch, time: Date.now(), nodes }));
    // the whole list only where it reads as one line; a large cluster logs the count (the epoch log has the list)
    this.s.log.info({ epoch, nodes: nodes.length <= LOGGED_NODES ? nodes.map((n) => n.nid) : nodes.length }, 'epoch changed');
  }
}

/** Same nodes with the same weights (a node whose disk failed keeps its place with no vnodes). */
function sameNodes(a: NodeInfo[], b: NodeInfo[]): boolean {
  if (a.length !== b.length) return false;
  // mostly the same objects in the same order: no map of 1,000 nids per change
  let i = 0;
  while (i < a.length && a[i].nid === b[i].nid && a[i].vnodes === b[i].vnodes) i++;
  if (i === a.length) return true;
  const s = new Map(a.map((n) => [n.nid, n.vnodes]));
  return b.every((n) => s.get(n.nid) === n.vnodes);
}
