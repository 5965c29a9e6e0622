// The `zookeeper` cluster driver: `-c zookeeper:HOST:PORT[,HOST:PORT...][/CHROOT][,timeout=SECONDS]`.
// For clusters past one corosync ring: a ZooKeeper ensemble orders membership changes and messages.
//
// Under the base path (CHROOT, default /sheepdog):
//   members/m-NNNNNNNNNN  ephemeral sequential, one per sheep session ({name, applied}): age = sequence
//   queue/q-NNNNNNNNNN    persistent sequential: join | leave | msg | part, THE total order
//   view                  the membership after the last join or leave ({members}); the leader's
//
// Only the leader (the member whose znode is oldest) writes joins and leaves, each in one ZooKeeper
// transaction that also checks the leader's own znode (a leader whose session expired cannot write)
// and the view's version (no two writers). A join entry carries the whole member list, so a joining
// sheep needs nothing before it; every member applies entries in name order. Entries every member
// has applied (each reports how far it got in its znode) are pruned by the leader.
//
// Session expiry means the sheep left: ZooKeeper drops its znode, the leader writes its leave, and the
// sheep is told (onExpelled) to join again as a returning node. While the connection is lost the
// sheep is told (onSuspended) and refuses client I/O: ZooKeeper's quorum decides which side goes on.

import zk from 'node-zookeeper-client';
import { pack, unpack } from 'msgpackr';
import type { GroupDriver, GroupEvents } from './driver.js';

const DEFAULT_BASE = '/sheepdog';
const DEFAULT_SESSION_S = 10;
const CONNECT_TIMEOUT_MS = 10_000;
/** ZooKeeper refuses znodes over 1 MB (jute.maxbuffer): larger messages travel in parts */
const PART_BYTES = 512 * 1024;
const REPORT_MS = 500;
const PRUNE_MS = 5_000;
/** a message of at most 64 MiB, and at most 8 of them half-arrived: what a writer to the ensemble can make us hold */
const MAX_PARTS = 128;
const MAX_PARTIAL = 8;
/** queue entries read at once */
const READ_BATCH = 64;

export interface ZkSpec {
  hosts: string;
  base: string;
  sessionTimeoutMs: number;
}

/** Parses `HOST:PORT[,HOST:PORT...][/CHROOT][,timeout=SECONDS]`; throws with what is wrong. */
export function parseZkSpec(spec: string): ZkSpec {
  const usage = 'expected zookeeper:HOST:PORT[,HOST:PORT...][/CHROOT][,timeout=SECONDS]';
  let rest = spec.trim();
  let sessionTimeoutMs = DEFAULT_SESSION_S * 1000;
  const t = /,timeout=([^,/]*)$/.exec(rest);
  if (t) {
    const s = Number(t[1]);
    if (!Number.isFinite(s) || s < 1 || s > 300) throw new Error(`zookeeper: timeout must be 1-300 seconds, not '${t[1]}'`);
    sessionTimeoutMs = Math.round(s * 1000);
    rest = rest.slice(0, t.index);
  }
  let base = DEFAULT_BASE;
  const slash = rest.indexOf('/');
  if (slash >= 0) {
    base = rest.slice(slash).replace(/\/+$/, '');
    rest = rest.slice(0, slash);
    if (!/^(\/[A-Za-z0-9._-]+)+$/.test(base)) throw new Error(`zookeeper: bad chroot '${spec.slice(spec.indexOf('/'))}' (${usage})`);
  }
  if (!rest) throw new Error(`zookeeper: no ensemble address (${usage})`);
  for (const hp of rest.split(',')) {
    const m = /^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9._-]+):(\d{1,5})$/.exec(hp);
    if (!m || Number(m[2]) < 1 || Number(m[2]) > 65535) throw new Error(`zookeeper: bad server address '${hp}' (${usage})`);
  }
  return { hosts: rest, base, sessionTimeoutMs };
}

/** What travels in queue entries. */
type Entry =
  | { t: 'join'; id: string; members: string[] }
  | { t: 'leave'; ids: string[] }
  | { t: 'msg'; from: string; data: Uint8Array }
  /** part i of n of one large message; delivered where its last part stands */
  | { t: 'part'; from: string; key: number; i: number; n: number; data: Uint8Array };

interface View {
  members: Array<{ id: string; znode: string }>;
}

/** What a member's znode says: its name and how far it has applied the queue. */
interface MemberData {
  name: string;
  applied?: string;
}

// Whoever can write to the ensemble can put anything in these znodes: what does not decode to our
// shapes is ignored (an entry) or named (the view), never trusted. Messages themselves are sealed
// with the cluster key when there is one (group-codec.ts).

function decode(raw: Buffer): unknown {
  try {
    return unpack(raw);
  } catch {
    return null;
  }
}

const isStr = (x: unknown): x is string => typeof x === 'string';
const isBytes = (x: unknown): x is Uint8Array => x instanceof Uint8Array;

function decodeEntry(raw: Buffer): Entry | null {
  const e = decode(raw) as Record<string, unknown> | null;
  if (!e || typeof e !== 'object') return null;
  switch (e.t) {
    case 'join': return isStr(e.id) && Array.isArray(e.members) && e.members.every(isStr) ? (e as Entry) : null;
    case 'leave': return Array.isArray(e.ids) && e.ids.every(isStr) ? (e as Entry) : null;
    case 'msg': return isStr(e.from) && isBytes(e.data) ? (e as Entry) : null;
    case 'part': {
      const ok = isStr(e.from) && isBytes(e.data) && [e.key, e.i, e.n].every((x) => Number.isSafeInteger(x)) && (e.i as number) >= 0 && (e.i as number) < (e.n as number) && (e.n as number) <= MAX_PARTS;
      return ok ? (e as Entry) : null;
    }
    default: return null;
  }
}

function decodeMember(raw: Buffer): MemberData {
  const d = decode(raw) as Record<string, unknown> | null;
  return { name: isStr(d?.name) ? d.name : 'unnamed', applied: isStr(d?.applied) ? d.applied : undefined };
}

type Cb<T> = (err: Error | zk.Exception | null, v: T) => void;

function call<T>(fn: (cb: Cb<T>) => void): Promise<T> {
  return new Promise((resolve, reject) => fn((err, v) => (err ? reject(err) : resolve(v))));
}

function code(e: unknown): number | undefined {
  return e instanceof zk.Exception ? e.getCode() : undefined;
}

/** The member id: the sheep's own name and its session's znode sequence (unique for ever). */
function memberId(name: string, znode: string): string {
  return `${name}@${Number(znode.slice(2))}`;
}

export class ZooKeeperGroup implements GroupDriver {
  readonly canPartition = false; // ZooKeeper's quorum keeps one view: a cut-off sheep halts, never forms a side
  readonly name = 'zookeeper';
  onLost: (why: string) => void = () => undefined;
  onSuspended: (suspended: boolean, why: string) => void = () => undefined;
  onExpelled: ((why: string) => void) | undefined;
  private readonly spec: ZkSpec;
  /** one per membership: a sheep the group dropped joins again through a new session */
  private session: ZkSession | null = null;

  constructor(spec: string) {
    this.spec = parseZkSpec(spec);
  }

  async init(preferred: string): Promise<string> {
    await this.session?.close();
    const s: ZkSession = new ZkSession(this.spec, preferred, {
      lost: (why) => { if (this.session === s) this.onLost(why); },
      suspended: (down, why) => { if (this.session === s) this.onSuspended(down, why); },
      expelled: (why) => {
        if (this.session !== s) return;
        if (this.onExpelled) this.onExpelled(why);
        else this.onLost(why);
      },
    });
    this.session = s;
    return s.open();
  }

  async start(events: GroupEvents): Promise<void> {
    if (!this.session) throw new Error('init() first');
    this.session.start(events);
  }

  async mcast(msg: Buffer): Promise<void> {
    if (!this.session) throw new Error('not connected to ZooKeeper');
    await this.session.mcast(msg);
  }

  async stop(): Promise<void> {
    const s = this.session;
    this.session = null;
    await s?.close();
  }
}

interface SessionHooks {
  lost(why: string): void;
  suspended(down: boolean, why: string): void;
  expelled(why: string): void;
}

/** One ZooKeeper session: its member znode, its place in the queue and, while oldest, the leader's duty. */
class ZkSession {
  private client: zk.Client | null = null;
  private events: GroupEvents | null = null;
  private id = '';
  private znode = '';
  /** the last queue entry applied (or skipped before our join) */
  private cursor = '';
  private joined = false;
  private members: string[] = [];
  private readonly parts = new Map<string, Uint8Array[]>();
  private partKey = 0;
  private closed = false;
  private pumping = false;
  private pumpAgain = false;
  private leading = false;
  private leadAgain = false;
  private lastPrune = 0;
  private reported = '';
  private reportTimer: NodeJS.Timeout | null = null;
  private pruneTimer: NodeJS.Timeout | null = null;
  private suspendTimer: NodeJS.Timeout | null = null;
  private suspended = false;
  /** mcasts waiting for their answer: failed when the connection is given up */
  private readonly waitingSends = new Set<(e: Error) => void>();
  private watchdog: NodeJS.Timeout | null = null;
  /** when ZooKeeper last answered us */
  private heard = Date.now();
  private probing = false;
  // watchers are stable functions: the client registers one per path and re-sets them after a reconnect
  private readonly onQueue = () => this.pump();
  private readonly onMembers = () => this.lead();

  constructor(private readonly spec: ZkSpec, private readonly sheepName: string, private readonly hooks: SessionHooks) {}

  private p(...parts: string[]): string {
    return [this.spec.base, ...parts].join('/');
  }

  async open(): Promise<string> {
    const c = zk.createClient(this.spec.hosts, { sessionTimeout: this.spec.sessionTimeoutMs, spinDelay: 200, retries: 0 });
    this.client = c;
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => {
        c.close();
        reject(new Error(`cannot reach the ZooKeeper ensemble at ${this.spec.hosts}: no server answered within ${CONNECT_TIMEOUT_MS / 1000} s`));
      }, CONNECT_TIMEOUT_MS);
      c.once('connected', () => { clearTimeout(t); resolve(); });
      c.connect();
    });
    c.on('state', (s: zk.State) => this.stateChanged(s));
    for (const d of ['members', 'queue']) await call<string>((cb) => c.mkdirp(this.p(d), cb));
    this.cursor = ''; // our join entry is somewhere in the queue after our znode: read from the start
    const path = await call<string>((cb) => c.create(this.p('members', 'm-'), this.memberData(), zk.CreateMode.EPHEMERAL_SEQUENTIAL, cb));
    this.znode = path.slice(path.lastIndexOf('/') + 1);
    this.id = memberId(this.sheepName, this.znode);
    return this.id;
  }

  start(events: GroupEvents): void {
    this.events = events;
    this.watchdog = setInterval(() => this.checkAlive(), this.spec.sessionTimeoutMs / 8);
    this.watchdog.unref();
    this.pruneTimer = setInterval(() => this.lead(), PRUNE_MS);
    this.pruneTimer.unref();
    this.lead();
    this.pump();
  }

  async mcast(msg: Buffer): Promise<void> {
    const c = this.client;
    if (!c || this.closed) throw new Error('not connected to ZooKeeper');
    // the client would hold the request until a server takes it back, however long that is
    if (this.suspended) throw new Error('the ZooKeeper ensemble is unreachable');
    const entries: Entry[] = [];
    if (msg.length <= PART_BYTES) entries.push({ t: 'msg', from: this.id, data: msg });
    else {
      const n = Math.ceil(msg.length / PART_BYTES), key = ++this.partKey;
      for (let i = 0; i < n; i++) entries.push({ t: 'part', from: this.id, key, i, n, data: msg.subarray(i * PART_BYTES, (i + 1) * PART_BYTES) });
    }
    // issued back to back on one session: ZooKeeper keeps their order (and a message's parts together
    // before any later message of ours)
    const sent = Promise.all(entries.map((e) => call<string>((cb) => c.create(this.p('queue', 'q-'), pack(e), zk.CreateMode.PERSISTENT_SEQUENTIAL, cb))));
    // a request made while the connection is down waits for it: once we give up on the connection,
    // the sender hears so (the message may still be ordered if the session comes back, like any
    // request whose answer was lost: every member then applies it alike)
    let giveUp!: (e: Error) => void;
    const abandoned = new Promise<never>((_, reject) => { giveUp = reject; });
    this.waitingSends.add(giveUp);
    try {
      await Promise.race([sent, abandoned]);
    } finally {
      this.waitingSends.delete(giveUp);
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.reportTimer) clearTimeout(this.reportTimer);
    if (this.pruneTimer) clearInterval(this.pruneTimer);
    if (this.suspendTimer) clearTimeout(this.suspendTimer);
    this.suspendTimer = null;
    if (this.watchdog) clearInterval(this.watchdog);
    // closing ends the session: our znode goes at once and the leader writes our leave
    this.client?.close();
    this.client = null;
    this.events = null;
  }

  private memberData(): Buffer {
    const d: MemberData = { name: this.sheepName };
    if (this.joined && this.cursor) d.applied = this.cursor;
    return pack(d);
  }

  private stateChanged(s: zk.State): void {
    if (this.closed) return;
    if (s === zk.State.DISCONNECTED) {
      // the session lives on until it expires, which cannot happen sooner than its timeout after
      // our last contact: another server (or a new leader's election) usually takes us back well
      // before half of it, and I/O goes on; past that, client I/O halts rather than risk serving a
      // membership that moved on (noticing a silent server takes at most 3/8 of it: checkAlive)
      if (!this.suspendTimer) {
        this.suspendTimer = setTimeout(() => {
          this.suspendTimer = null;
          this.suspend('lost the connection to the ZooKeeper ensemble');
        }, this.spec.sessionTimeoutMs / 2);
        this.suspendTimer.unref();
      }
    } else if (s === zk.State.SYNC_CONNECTED) {
      this.heard = Date.now();
      if (this.suspendTimer) clearTimeout(this.suspendTimer);
      this.suspendTimer = null;
      if (this.suspended) {
        this.suspended = false;
        this.hooks.suspended(false, 'connected to the ZooKeeper ensemble again');
      }
      this.pump();
      this.lead();
    } else if (s === zk.State.EXPIRED) {
      void this.close();
      this.hooks.expelled('the ZooKeeper session expired: the cluster counts this sheep as gone');
    }
  }

  private suspend(why: string): void {
    this.suspended = true;
    for (const f of this.waitingSends) f(new Error(`${why}: the message may or may not be delivered`));
    this.waitingSends.clear();
    this.hooks.suspended(true, why);
  }

  /**
   * The client notices a server that closes the connection, not one that stops answering (a hung
   * server, a silent network: it sends pings but never times them out). We ask ourselves: silent
   * for a quarter of the session timeout while the client thinks it is connected, client I/O halts
   * and the connection is dropped, so that the client moves to another server with the same session
   * (or learns that it expired).
   */
  private checkAlive(): void {
    const c = this.client;
    if (!c || this.closed) return;
    const silent = Date.now() - this.heard;
    if (silent >= this.spec.sessionTimeoutMs / 4 && c.getState() === zk.State.SYNC_CONNECTED) {
      if (!this.suspended) this.suspend(`the ZooKeeper server has not answered for ${silent} ms`);
      // the library has no call for this: its connection manager reconnects when its socket closes
      (c as unknown as { connectionManager?: { socket?: { destroy(): void } } }).connectionManager?.socket?.destroy();
      this.heard = Date.now(); // one reconnect per quarter timeout at most
      return;
    }
    if (this.probing) return;
    this.probing = true;
    c.exists(this.spec.base, (e) => {
      this.probing = false;
      if (e || this.closed) return;
      this.heard = Date.now();
      if (this.suspended && !this.suspendTimer && c.getState() === zk.State.SYNC_CONNECTED) {
        this.suspended = false;
        this.hooks.suspended(false, 'the ZooKeeper ensemble answers again');
      }
    });
  }

  private async readView(): Promise<{ view: View; version: number }> {
    const c = this.client!;
    try {
      const [data, stat] = await new Promise<[Buffer, zk.Stat]>((resolve, reject) =>
        c.getData(this.p('view'), (e, d, st) => (e ? reject(e) : resolve([d, st]))));
      const v = decode(data) as View | null;
      if (!v || !Array.isArray(v.members) || !v.members.every((m) => isStr(m?.id) && isStr(m?.znode))) {
        throw new Error(`${this.p('view')} does not hold a sheepdog membership view: is another program using this path?`);
      }
      return { view: v, version: stat.version };
    } catch (e) {
      if (code(e) === zk.Exception.NO_NODE) return { view: { members: [] }, version: -1 };
      throw e;
    }
  }

  // ------------------------------------------------------------------ every member: apply the queue

  /** Reads and applies queue entries past the cursor, in order; one run at a time. */
  private pump(): void {
    if (this.pumping) { this.pumpAgain = true; return; }
    this.pumping = true;
    void (async () => {
      do {
        this.pumpAgain = false;
        try {
          await this.pumpOnce();
        } catch (e) {
          // connection loss: the reconnect runs us again; a closed client ends here
          if (!this.closed && code(e) !== zk.Exception.CONNECTION_LOSS) this.fail(`reading the ZooKeeper queue: ${(e as Error).message}`);
        }
      } while (this.pumpAgain && !this.closed);
      this.pumping = false;
    })();
  }

  private async pumpOnce(): Promise<void> {
    const c = this.client;
    if (!c || this.closed) return;
    const names = (await call<string[]>((cb) => c.getChildren(this.p('queue'), this.onQueue, cb))).filter((n) => n > this.cursor).sort();
    for (let i = 0; i < names.length && !this.closed; i += READ_BATCH) {
      const batch = names.slice(i, i + READ_BATCH);
      const datas = await Promise.all(batch.map((n) => call<Buffer>((cb) => c.getData(this.p('queue', n), cb)).catch((e) => {
        if (code(e) === zk.Exception.NO_NODE && !this.joined) return null; // pruned before our join: not ours to apply
        throw e;
      })));
      for (let j = 0; j < batch.length && !this.closed; j++) {
        const d = datas[j];
        const e = d && decodeEntry(d);
        if (e) this.apply(e);
        this.cursor = batch[j];
      }
    }
    if (names.length) this.scheduleReport();
  }

  private apply(e: Entry): void {
    const ev = this.events;
    if (!ev) return;
    if (!this.joined) {
      if (e.t === 'join' && e.id === this.id) {
        this.joined = true;
        this.members = [...e.members];
        ev.confchg([...this.members], [this.id], []);
      }
      return;
    }
    switch (e.t) {
      case 'join':
        this.members = [...e.members];
        ev.confchg([...this.members], [e.id], []);
        return;
      case 'leave': {
        if (e.ids.includes(this.id)) {
          // the others saw our session end before we did: whatever we know is stale
          void this.close();
          this.hooks.expelled('the cluster counted this sheep as gone (its ZooKeeper session ended)');
          return;
        }
        this.members = this.members.filter((m) => !e.ids.includes(m));
        for (const k of [...this.parts.keys()]) if (e.ids.some((id) => k.startsWith(`${id}/`))) this.parts.delete(k);
        ev.confchg([...this.members], [], e.ids);
        return;
      }
      case 'msg':
        ev.deliver(e.from, Buffer.from(e.data.buffer, e.data.byteOffset, e.data.byteLength));
        return;
      case 'part': {
        const k = `${e.from}/${e.key}`;
        const got = this.parts.get(k) ?? [];
        got[e.i] = e.data;
        if (e.i < e.n - 1) {
          this.parts.set(k, got);
          // the oldest half-arrived message goes first (Map keeps insertion order)
          if (this.parts.size > MAX_PARTIAL) this.parts.delete(this.parts.keys().next().value as string);
          return;
        }
        this.parts.delete(k);
        if (got.length !== e.n || got.some((x) => !x)) return; // a part never arrived (the sender lost its connection)
        ev.deliver(e.from, Buffer.concat(got));
        return;
      }
    }
  }

  /** Tells the leader how far we got (it prunes what everyone has applied); at most twice a second. */
  private scheduleReport(): void {
    if (this.reportTimer || !this.joined) return;
    this.reportTimer = setTimeout(() => {
      this.reportTimer = null;
      const c = this.client;
      if (!c || this.closed || this.cursor === this.reported) return;
      const at = this.cursor;
      c.setData(this.p('members', this.znode), this.memberData(), -1, (e) => { if (!e) this.reported = at; });
    }, REPORT_MS);
    this.reportTimer.unref();
  }

  // ------------------------------------------------------------------ the leader: joins, leaves, pruning

  private lead(): void {
    if (this.leading) { this.leadAgain = true; return; }
    this.leading = true;
    void (async () => {
      do {
        this.leadAgain = false;
        try {
          await this.leadOnce();
        } catch (e) {
          const k = code(e);
          if (k === zk.Exception.BAD_VERSION) this.leadAgain = true; // the view moved under us: look again
          else if (!this.closed && k !== zk.Exception.CONNECTION_LOSS && k !== zk.Exception.SESSION_EXPIRED && k !== zk.Exception.NO_NODE) {
            this.fail(`ZooKeeper leader duty: ${(e as Error).message}`);
          }
        }
      } while (this.leadAgain && !this.closed);
      this.leading = false;
    })();
  }

  private async leadOnce(): Promise<void> {
    const c = this.client;
    if (!c || this.closed || !this.znode) return;
    const live = (await call<string[]>((cb) => c.getChildren(this.p('members'), this.onMembers, cb))).sort();
    if (live[0] !== this.znode) return; // an older member leads
    const { view, version } = await this.readView();
    const liveSet = new Set(live);
    const gone = view.members.filter((m) => !liveSet.has(m.znode));
    if (gone.length) {
      await this.write({ t: 'leave', ids: gone.map((m) => m.id) }, { members: view.members.filter((m) => liveSet.has(m.znode)) }, version);
      this.leadAgain = true;
      return;
    }
    const known = new Set(view.members.map((m) => m.znode));
    const newcomer = live.find((z) => !known.has(z));
    if (newcomer) {
      let d: MemberData;
      try {
        d = decodeMember(await call<Buffer>((cb) => c.getData(this.p('members', newcomer), cb)));
      } catch (e) {
        if (code(e) === zk.Exception.NO_NODE) { this.leadAgain = true; return; } // gone before it joined
        throw e;
      }
      const id = memberId(d.name, newcomer);
      const members = [...view.members, { id, znode: newcomer }];
      await this.write({ t: 'join', id, members: members.map((m) => m.id) }, { members }, version);
      this.leadAgain = true;
      return;
    }
    if (Date.now() - this.lastPrune >= PRUNE_MS) await this.prune(live);
  }

  /** One join or leave: the entry and the new view in one transaction, valid only while we lead. */
  private async write(e: Entry, next: View, viewVersion: number): Promise<void> {
    const c = this.client!;
    const tx = c.transaction()
      .check(this.p('members', this.znode), -1) // fails once our session is gone: a new leader writes
      .create(this.p('queue', 'q-'), pack(e), zk.CreateMode.PERSISTENT_SEQUENTIAL);
    if (viewVersion < 0) tx.create(this.p('view'), pack(next), zk.CreateMode.PERSISTENT);
    else tx.setData(this.p('view'), pack(next), viewVersion); // fails if anyone else wrote meanwhile
    await call<unknown>((cb) => tx.commit(cb));
  }

  /** Deletes queue entries every live member has applied (all must have reported). */
  private async prune(live: string[]): Promise<void> {
    const c = this.client!;
    this.lastPrune = Date.now();
    let min: string | null = null;
    const applied = await Promise.all(live.map((z) => call<Buffer>((cb) => c.getData(this.p('members', z), cb)).then(
      (raw) => decodeMember(raw).applied ?? '',
      (e) => { if (code(e) === zk.Exception.NO_NODE) return null; throw e; },
    )));
    for (const a of applied) {
      if (a === null) continue; // gone meanwhile
      if (a === '') return; // a member still joining needs the entries up to its join
      if (min === null || a < min) min = a;
    }
    if (min === null) return;
    const old = (await call<string[]>((cb) => c.getChildren(this.p('queue'), cb))).filter((n) => n < min!);
    await Promise.all(old.map((n) => call<void>((cb) => c.remove(this.p('queue', n), -1, (e) => cb(e, undefined))).catch((e) => {
      if (code(e) !== zk.Exception.NO_NODE) throw e;
    })));
  }

  private fail(why: string): void {
    if (this.closed) return;
    void this.close();
    this.hooks.lost(why);
  }
}
