// Listening sockets for the sheep protocol and the NBD export: TCP, or a Unix socket path
// (a stale socket file from a previous run is replaced).

import net from 'node:net';
import fs from 'node:fs/promises';

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

  /** Handles one accepted connection (already tracked, Nagle off). */
  protected abstract accept(sock: net.Socket): void;

  private take(sock: net.Socket): void {
    this.sockets.add(sock);
    sock.setNoDelay?.(true);
    sock.on('close', () => this.sockets.delete(sock));
    this.accept(sock);
  }

  protected async bindTcp(host: string | undefined, port: number): Promise<net.AddressInfo> {
    const srv = await listenTcp((s) => this.take(s), host, port);
    this.servers.push(srv);
    return srv.address() as net.AddressInfo;
  }

  protected async bindUnix(path: string): Promise<void> {
    this.servers.push(await listenUnix((s) => this.take(s), path));
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await Promise.all(this.servers.map((srv) => new Promise<void>((r) => srv.close(() => r()))));
  }
}
