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
