// The HTTP front end (--http): Prometheus metrics, a JSON API and the live cluster monitor page.
// Read-only: nothing here changes the cluster. It faces the same network as the other ports: its
// connections count against the sheep's connection budget, requests are GET/HEAD on known paths
// only, headers and bodies are bounded in size and time, and live streams are capped.

import http from 'node:http';
import fs from 'node:fs/promises';
import path from 'node:path';
import type net from 'node:net';
import { fileURLToPath } from 'node:url';
import { SocketServer, type Admission, type Admitted } from './net-listen.js';
import { ClusterWatch } from './cluster-view.js';
import { metrics } from '../util/metrics.js';
import type { System } from '../cluster/system.js';
import type { Logger } from '../util/log.js';

/** The monitor page's files: plain ES modules, served as they are (no build step, no CDN). */
const PAGE_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../sheep/frontend/monitor');
const FILES: Record<string, { file: string; type: string }> = {
  '/': { file: 'index.html', type: 'text/html; charset=utf-8' },
  '/index.html': { file: 'index.html', type: 'text/html; charset=utf-8' },
  '/monitor.js': { file: 'monitor.js', type: 'text/javascript; charset=utf-8' },
  '/family-tree.js': { file: 'family-tree.js', type: 'text/javascript; charset=utf-8' },
  '/monitor.css': { file: 'monitor.css', type: 'text/css; charset=utf-8' },
};
/** Live streams (the monitor page) open at once; more are refused with 503. */
const MAX_STREAMS = 32;
/** How often a live stream gets a new view. */
const STREAM_INTERVAL_MS = 1000;

/** Pages may not be framed or pull anything from elsewhere. */
const SECURITY_HEADERS = {
  'X-Content-Type-Options': 'nosniff',
  'X-Frame-Options': 'DENY',
  'Content-Security-Policy': "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'",
  'Cache-Control': 'no-store',
};

export class HttpServer extends SocketServer {
  private readonly http: http.Server;
  private readonly watch: ClusterWatch;
  private readonly streams = new Set<http.ServerResponse>();
  private streamTimer: NodeJS.Timeout | null = null;
  private lastVdis = '';

  constructor(private readonly sys: System, key: Buffer | null, private readonly log: Logger, admission: Admission) {
    super(admission, 'http');
    this.watch = new ClusterWatch(sys, key);
    this.http = http.createServer({
      maxHeaderSize: 16 * 1024,
      requestTimeout: 30_000,
      headersTimeout: 10_000,
      keepAliveTimeout: 5_000,
    }, (req, res) => void this.handle(req, res));
    this.http.on('clientError', (err, sock) => {
      this.admission.refusals.refuse(peerOf(sock as net.Socket), `bad HTTP request: ${err.message}`);
      if (sock.writable) sock.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n');
      sock.destroy();
    });
  }

  async listen(host: string | undefined, port: number): Promise<number> {
    const addr = await this.bindTcp(host, port);
    this.log.info({ host: host ?? '*', port: addr.port }, 'HTTP: metrics at /metrics, monitor at /');
    return addr.port;
  }

  protected accept(sock: net.Socket, _admitted: Admitted): void {
    this.http.emit('connection', sock);
  }

  override async close(): Promise<void> {
    for (const s of this.streams) s.destroy();
    this.streams.clear();
    if (this.streamTimer) clearInterval(this.streamTimer);
    this.watch.close();
    await super.close();
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const peer = peerOf(req.socket);
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      this.admission.refusals.refuse(peer, `HTTP ${String(req.method).slice(0, 16)} refused (read-only)`);
      return send(res, 405, 'text/plain', 'read-only: GET and HEAD only\n', { Allow: 'GET, HEAD' });
    }
    // a request with a body is not one this server sends: do not read it
    if (req.headers['content-length'] && req.headers['content-length'] !== '0') {
      this.admission.refusals.refuse(peer, 'HTTP request with a body refused');
      res.shouldKeepAlive = false;
      return send(res, 400, 'text/plain', 'no request bodies\n');
    }
    const url = (req.url ?? '/').split('?')[0];
    try {
      if (url === '/metrics') return send(res, 200, metrics.contentType, await metrics.text());
      if (url === '/api/cluster') return sendJson(res, await this.watch.cluster());
      if (url === '/api/vdis') return sendJson(res, this.watch.vdis());
      if (url === '/api/events') return this.stream(req, res, peer);
      const f = FILES[url];
      if (f) return send(res, 200, f.type, await fs.readFile(path.join(PAGE_DIR, f.file)), SECURITY_HEADERS);
      return send(res, 404, 'text/plain', `no such page: ${url.slice(0, 200)}\n`);
    } catch (e) {
      this.log.warn({ peer, url: url.slice(0, 200), err: (e as Error).message }, 'HTTP request failed');
      if (!res.headersSent) send(res, 500, 'text/plain', `error: ${(e as Error).message}\n`);
      else res.destroy();
    }
  }

  /** Server-sent events: a cluster view every second, the VDIs when they changed. */
  private stream(req: http.IncomingMessage, res: http.ServerResponse, peer: string): void {
    if (this.streams.size >= MAX_STREAMS) {
      this.admission.refusals.refuse(peer, `too many live monitor streams (${MAX_STREAMS})`);
      return send(res, 503, 'text/plain', 'too many live streams\n', { 'Retry-After': '5' });
    }
    res.writeHead(200, { 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-store', Connection: 'keep-alive' });
    req.socket.setTimeout(0);
    this.streams.add(res);
    res.on('close', () => {
      this.streams.delete(res);
      if (!this.streams.size && this.streamTimer) { clearInterval(this.streamTimer); this.streamTimer = null; }
    });
    // the newcomer gets the VDIs at once, the others only when they change
    void this.push([res], true);
    this.streamTimer ??= setInterval(() => void this.push([...this.streams], false), STREAM_INTERVAL_MS);
  }

  private async push(to: http.ServerResponse[], withVdis: boolean): Promise<void> {
    let view;
    try {
      view = await this.watch.cluster();
    } catch (e) {
      this.log.warn({ err: (e as Error).message }, 'cluster view failed');
      return;
    }
    const vdis = JSON.stringify(this.watch.vdis());
    const changed = vdis !== this.lastVdis;
    this.lastVdis = vdis;
    const msg = `event: cluster\ndata: ${JSON.stringify(view)}\n\n`;
    for (const res of to) {
      // a viewer that stopped reading is dropped rather than buffered without bound
      if (res.writableLength > 4 * 1024 * 1024) { res.destroy(); continue; }
      res.write(msg);
      if (withVdis || changed) res.write(`event: vdis\ndata: ${vdis}\n\n`);
    }
  }
}

function peerOf(sock: net.Socket | { remoteAddress?: string; remotePort?: number }): string {
  const a = sock.remoteAddress?.replace(/^::ffff:/, '');
  return a ? `${a}:${sock.remotePort}` : 'unix';
}

function send(res: http.ServerResponse, status: number, type: string, body: string | Buffer, headers: Record<string, string> = {}): void {
  res.writeHead(status, { 'Content-Type': type, 'Content-Length': Buffer.byteLength(body), ...headers });
  res.end(res.req.method === 'HEAD' ? undefined : body);
}

function sendJson(res: http.ServerResponse, v: unknown): void {
  send(res, 200, 'application/json', JSON.stringify(v), { 'Cache-Control': 'no-store' });
}
