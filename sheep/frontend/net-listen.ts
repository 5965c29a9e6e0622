// Listening sockets for the sheep protocol and the NBD export: TCP, or a Unix socket path
// (a stale socket file from a previous run is replaced).

import net from 'node:net';
import fs from 'node:fs/promises';
import type { AddressFilter, ConnectionBudget, RefusalLog } from './admission.js';
import { metrics, type ConnKind } from '../util/metrics.js';

/** Who may connect to a server, and how many connections all servers together may hold. */
export interface Admission {
  /** shared by every front end */
  conns: ConnectionBudget;
  refusals: RefusalLog;
  /** checked at accept; null: every address */
  filter: AddressFilter | null;
  /** connections of this server may use the reserve kept for authenticating tools and peers */
  useReserve: boolean;
  /** a socket file mode for Unix sockets (0660 by default) */
  socketMode?: number;
}

/** A connection on the reserve may be evicted for a newcomer once it had this long to authenticate. */
const RESERVE_GRACE_MS = 200;

/** How a connection got in: 'reserve' connections must authenticate soon or are closed. */
export type Admitted = 'ok' | 'reserve';

function listen(handler: (s: net.Socket) => void, where: net.ListenOptions): Promise<net.Server> {
  const srv = net.createServer(handler);
  return new Promise((resolve, reject) => {
    srv.once('error', reject);
    srv.listen(where, () => { srv.off('error', reject); resolve(srv); });
  });
}

export function listenTcp(handler: (s: net.Socket) => void, host: string | undefined, port: number): Promise<net.Server> {
  return listen(handler, { host, port });
}

export async function listenUnix(handler: (s: net.Socket) => void, path: string): Promise<net.Server> {
  await fs.rm(path, { force: true });
  return listen(handler, { path });
}

/** A server on several listening sockets that can drop every connection when it stops. */
export abstract class SocketServer {
  private readonly servers: net.Server[] = [];
  private readonly sockets = new Set<net.Socket>();

  /** @param kind the port's name in the connection metrics */
  constructor(protected readonly admission: Admission, private readonly kind: ConnKind) {}

  /** Handles one accepted connection (already tracked, Nagle off). */
  protected abstract accept(sock: net.Socket, admitted: Admitted): void;

  private take(sock: net.Socket): void {
    const a = this.admission;
    const addr = sock.remoteAddress?.replace(/^::ffff:/, '');
    const peer = addr ? `${addr}:${sock.remotePort}` : 'unix';
    sock.on('error', () => undefined); // a reset before the handler's own listener must not crash us
    const why = a.filter?.refuses(sock.remoteAddress) ?? null;
    if (why) {
      a.refusals.refuse(peer, why);
      sock.destroy();
      return;
    }
    let got = a.conns.take();
    if (got === 'full' && a.useReserve && this.evictOnReserve()) got = a.conns.take();
    if (got === 'full' || (got === 'reserve' && !a.useReserve)) {
      if (got !== 'full') a.conns.release();
      a.refusals.refuse(peer, `too many connections (${a.conns.count} open, limit ${a.conns.max}, ${a.conns.reserve} kept for collie and peers)`);
      sock.destroy();
      return;
    }
    this.sockets.add(sock);
    metrics.connection(this.kind, 1);
    sock.setNoDelay?.(true);
    if (got === 'reserve') this.onReserve.set(sock, Date.now());
    sock.on('close', () => {
      metrics.connection(this.kind, -1);
      this.sockets.delete(sock);
      this.onReserve.delete(sock);
      if (this.evicted.delete(sock)) return; // released when it was evicted
      a.conns.release();
    });
    this.accept(sock, got);
  }

  /** Connections let in on the reserve that have not authenticated yet, with when they came. */
  private readonly onReserve = new Map<net.Socket, number>();
  private readonly evicted = new Set<net.Socket>();

  /** The connection authenticated: it keeps its place. */
  protected promote(sock: net.Socket): void {
    this.onReserve.delete(sock);
  }

  /**
   * Every descriptor is taken: the oldest connection on the reserve that has had time to authenticate
   * and did not makes room, so a flood cannot keep collie or a peer out.
   */
  private evictOnReserve(): boolean {
    const now = Date.now();
    for (const [sock, since] of this.onReserve) {
      if (now - since < RESERVE_GRACE_MS) break;
      this.onReserve.delete(sock);
      this.evicted.add(sock);
      this.admission.conns.release();
      sock.destroy();
      return true;
    }
    return false;
  }

  protected async bindTcp(host: string | undefined, port: number): Promise<net.AddressInfo> {
    const srv = await listenTcp((s) => this.take(s), host, port);
    this.servers.push(srv);
    return srv.address() as net.AddressInfo;
  }

  protected async bindUnix(path: string): Promise<void> {
    this.servers.push(await listenUnix((s) => this.take(s), path));
    await fs.chmod(path, this.admission.socketMode ?? 0o660);
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await Promise.all(this.servers.map((srv) => new Promise<void>((r) => srv.close(() => r()))));
  }
}
