// The sheep's Prometheus metrics (prom-client), served at /metrics by the HTTP front end.
// One registry per process: a sheep is one process, and every part reports here through the small
// functions below, which keep the per-request cost to a map lookup and a few additions.
// State that already lives elsewhere (epoch, members, disk, recovery) is read when scraped.

import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { FrontendStat, NodeStatReply } from '../../lib/admin.js';

/** Where a request came in: QEMU and collie on port 7000, other sheep on port 7000, NBD clients. */
export type Frontend = 'sheepdog' | 'peer' | 'nbd';
/** Connections held, by the port they came in on (peer_out: this sheep's own links to other sheep). */
export type ConnKind = 'sheepdog' | 'nbd' | 'http' | 'peer_out';

/** What the scrape reads from the running daemon (bound once it started). */
export interface StateSource {
  epoch(): number;
  status(): string;
  members(): number;
  disk(): Promise<{ size: number; free: number; reserve: number; full: boolean; failed: boolean }>;
  /** objects and bytes in the store, at most a few seconds old */
  stored(): Promise<{ objects: number; bytes: number }>;
  recovery(): { state: string; done: number; total: number; startedAt?: number };
}

/** Statuses a cluster can be in: each is a series, 1 for the current one. */
const STATUSES = ['running', 'wait_format', 'wait_join', 'halt', 'shutdown'];
const RECOVERY_STATES = ['idle', 'running', 'waiting'];

/** From 50 µs (a page-cache read) to 10 s (a retry after a membership change). */
const LATENCY_BUCKETS = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10];

interface OpSeries {
  count: { inc(n?: number): void };
  errors: { inc(n?: number): void };
  latency: { observe(v: number): void };
}

/** Plain totals of client I/O (port 7000 and NBD), for STAT_SHEEP and the monitor's rates. */
export interface IoTotals {
  reads: number;
  writes: number;
  readBytes: number;
  writtenBytes: number;
}

export class Metrics {
  readonly registry = new Registry();
  private readonly requests: Counter<'frontend' | 'op'>;
  private readonly errors: Counter<'frontend' | 'op'>;
  private readonly latency: Histogram<'frontend' | 'op'>;
  private readonly inflight: Gauge<'frontend'>;
  private readonly readBytes: Counter<'frontend'>;
  private readonly writtenBytes: Counter<'frontend'>;
  private readonly connections: Gauge<'kind'>;
  private readonly peerErrors: Counter<'reason'>;
  private readonly retries: Counter;
  private readonly recoveryCopied: Counter;
  private readonly series = new Map<string, OpSeries>();
  /** requests in flight, as plain numbers: a gauge update per request costs more than the request's bookkeeping */
  private readonly inflightNow: Record<Frontend, number> = { sheepdog: 0, peer: 0, nbd: 0 };
  private readonly bytesOf: Record<Frontend, { read: { inc(n: number): void }; written: { inc(n: number): void } }>;
  readonly io: IoTotals = { reads: 0, writes: 0, readBytes: 0, writtenBytes: 0 };
  /** when the last client request (port 7000 or NBD, not peers) was answered (performance.now()) */
  private lastClientAt = -Infinity;
  private source: StateSource | null = null;

  constructor() {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry });
    // gauges that prom-client names like counters (promtool's lint refuses "_total" on a gauge)
    for (const name of ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total']) this.registry.removeSingleMetric(name);
    this.requests = new Counter({ name: 'sheep_requests_total', help: 'Requests answered, by front end and opcode (NBD: command)', labelNames: ['frontend', 'op'], registers });
    this.errors = new Counter({ name: 'sheep_request_errors_total', help: 'Requests answered with an error, by front end and opcode', labelNames: ['frontend', 'op'], registers });
    this.latency = new Histogram({ name: 'sheep_request_duration_seconds', help: 'Time from a request\'s arrival to its reply, by front end and opcode', labelNames: ['frontend', 'op'], buckets: LATENCY_BUCKETS, registers });
    const inflightNow = this.inflightNow;
    this.inflight = new Gauge({
      name: 'sheep_requests_in_flight', help: 'Requests being served now, by front end', labelNames: ['frontend'], registers,
      collect() { for (const [f, n] of Object.entries(inflightNow)) this.labels(f).set(n); },
    });
    this.readBytes = new Counter({ name: 'sheep_read_bytes_total', help: 'Data bytes sent in replies (reads), by front end', labelNames: ['frontend'], registers });
    this.writtenBytes = new Counter({ name: 'sheep_written_bytes_total', help: 'Data bytes received in write requests, by front end', labelNames: ['frontend'], registers });
    this.connections = new Gauge({ name: 'sheep_connections', help: 'Open connections, by port (peer_out: this sheep\'s links to other sheep)', labelNames: ['kind'], registers });
    this.peerErrors = new Counter({ name: 'sheep_peer_errors_total', help: 'Requests to other sheep that failed, by reason', labelNames: ['reason'], registers });
    this.retries = new Counter({ name: 'sheep_gateway_retries_total', help: 'Gateway requests retried on a new placement (a node left or a replica failed)', registers });
    this.recoveryCopied = new Counter({ name: 'sheep_recovery_objects_copied_total', help: 'Objects copied to this node by recovery', registers });
    for (const k of ['sheepdog', 'nbd', 'http', 'peer_out'] as ConnKind[]) this.connections.labels(k).set(0);
    const each = <T>(make: (f: Frontend) => T): Record<Frontend, T> => ({ sheepdog: make('sheepdog'), peer: make('peer'), nbd: make('nbd') });
    this.bytesOf = each((f) => ({ read: this.readBytes.labels(f), written: this.writtenBytes.labels(f) }));
    this.stateGauges(registers);
  }

  /** Gauges read from the daemon at scrape time. */
  private stateGauges(registers: Registry[]): void {
    const src = () => this.source;
    new Gauge({ name: 'sheep_epoch', help: 'Current epoch (membership version)', registers, collect() { const s = src(); if (s) this.set(s.epoch()); } });
    new Gauge({ name: 'sheep_cluster_members', help: 'Nodes in the current membership', registers, collect() { const s = src(); if (s) this.set(s.members()); } });
    new Gauge({
      name: 'sheep_cluster_status', help: 'Cluster status as this node sees it: 1 for the current status', labelNames: ['status'], registers,
      collect() { const s = src(); if (s) { const cur = s.status(); for (const st of STATUSES) this.labels(st).set(st === cur ? 1 : 0); } },
    });
    const disk = (name: string, help: string, pick: (d: Awaited<ReturnType<StateSource['disk']>>) => number) =>
      new Gauge({ name, help, registers, async collect() { const s = src(); if (s) this.set(pick(await s.disk())); } });
    disk('sheep_disk_size_bytes', 'Size of the filesystem holding the store', (d) => d.size);
    disk('sheep_disk_free_bytes', 'Free space on the store\'s filesystem', (d) => d.free);
    disk('sheep_disk_reserved_bytes', 'Free space kept for deletes and metadata (--reserved-space)', (d) => d.reserve);
    disk('sheep_disk_full', '1 when free space is under the reserve (new objects refused)', (d) => (d.full ? 1 : 0));
    disk('sheep_disk_failed', '1 when the store\'s disk was taken out of service after I/O errors', (d) => (d.failed ? 1 : 0));
    new Gauge({ name: 'sheep_store_objects', help: 'Objects in this node\'s store', registers, async collect() { const s = src(); if (s) this.set((await s.stored()).objects); } });
    new Gauge({ name: 'sheep_store_bytes', help: 'Bytes the store\'s objects occupy on disk', registers, async collect() { const s = src(); if (s) this.set((await s.stored()).bytes); } });
    new Gauge({
      name: 'sheep_recovery_state', help: 'Recovery on this node: 1 for the current state', labelNames: ['state'], registers,
      collect() { const s = src(); if (s) { const cur = s.recovery().state; for (const st of RECOVERY_STATES) this.labels(st).set(st === cur ? 1 : 0); } },
    });
    const rec = (name: string, help: string, pick: (r: ReturnType<StateSource['recovery']>) => number) =>
      new Gauge({ name, help, registers, collect() { const s = src(); if (s) this.set(pick(s.recovery())); } });
    rec('sheep_recovery_objects_done', 'Objects checked by the current (or last) recovery run', (r) => r.done);
    rec('sheep_recovery_objects_remaining', 'Objects the current recovery run still has to check', (r) => (r.state === 'running' ? Math.max(0, r.total - r.done) : 0));
    rec('sheep_recovery_rate_objects_per_second', 'Objects checked per second since the current recovery run started (0 when idle)', (r) => {
      if (r.state !== 'running' || !r.startedAt) return 0;
      const secs = (Date.now() - r.startedAt) / 1000;
      return secs > 0 ? r.done / secs : 0;
    });
  }

  bind(source: StateSource): void {
    this.source = source;
  }

  private opSeries(frontend: Frontend, op: string): OpSeries {
    const key = `${frontend} ${op}`;
    let s = this.series.get(key);
    if (!s) {
      s = { count: this.requests.labels(frontend, op), errors: this.errors.labels(frontend, op), latency: this.latency.labels(frontend, op) };
      this.series.set(key, s);
    }
    return s;
  }

  /** A request arrived; returns its start time for `done`. */
  begin(frontend: Frontend): number {
    this.inflightNow[frontend]++;
    return performance.now();
  }

  /**
   * A request was answered. `op` is the opcode's or NBD command's name (a bounded set: unknown
   * opcodes are reported as "unknown"); `read`/`written` are its data bytes out and in.
   */
  done(frontend: Frontend, op: string, start: number, failed: boolean, read: number, written: number): void {
    this.inflightNow[frontend]--;
    const s = this.opSeries(frontend, op);
    s.count.inc();
    if (failed) s.errors.inc();
    s.latency.observe((performance.now() - start) / 1000);
    const b = this.bytesOf[frontend];
    if (read) b.read.inc(read);
    if (written) b.written.inc(written);
    if (frontend !== 'peer') {
      // object I/O only: collie or the monitor asking for status is not a client to make room for
      if (read || written) this.lastClientAt = performance.now();
      if (read) { this.io.reads++; this.io.readBytes += read; }
      if (written) { this.io.writes++; this.io.writtenBytes += written; }
    }
  }

  /** Another sheep's gateway asked this node for object I/O on behalf of a client. */
  clientSeen(): void {
    this.lastClientAt = performance.now();
  }

  /** Whether a client request was answered in the last `ms` (recovery yields to clients). */
  clientsActive(ms: number): boolean {
    return performance.now() - this.lastClientAt < ms;
  }

  connection(kind: ConnKind, delta: 1 | -1): void {
    this.connections.labels(kind).inc(delta);
  }

  peerError(reason: string): void {
    this.peerErrors.labels(reason).inc();
  }

  gatewayRetry(): void {
    this.retries.inc();
  }

  recoveryCopy(): void {
    this.recoveryCopied.inc();
  }

  /**
   * The request counters by front end (`collie node stat`), read from the same prom-client series
   * /metrics shows, so the two never disagree.
   */
  async requestStats(): Promise<NodeStatReply> {
    const empty = (f: Frontend): FrontendStat => ({ active: this.inflightNow[f], ops: {}, errors: {}, readBytes: 0, writtenBytes: 0 });
    const r: NodeStatReply = { sheepdog: empty('sheepdog'), peer: empty('peer'), nbd: empty('nbd') };
    const of = (labels: Record<string, unknown>) => r[labels.frontend as Frontend] as FrontendStat | undefined;
    for (const v of (await this.requests.get()).values) { const f = of(v.labels); if (f) f.ops[String(v.labels.op)] = v.value; }
    for (const v of (await this.errors.get()).values) { const f = of(v.labels); if (f) f.errors[String(v.labels.op)] = v.value; }
    for (const v of (await this.readBytes.get()).values) { const f = of(v.labels); if (f) f.readBytes = v.value; }
    for (const v of (await this.writtenBytes.get()).values) { const f = of(v.labels); if (f) f.writtenBytes = v.value; }
    return r;
  }

  /** The Prometheus text exposition of every metric. */
  text(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}

export const metrics = new Metrics();
