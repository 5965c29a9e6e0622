// Connections to other sheep: with a cluster key every one proves it (as a peer) before any request,
// and checks that the other side proves it too.

import { SheepClient } from '../../lib/client.js';
import type { NodeInfo } from '../../lib/node.js';

export async function connectPeer(node: NodeInfo, key: Buffer | null, timeoutMs: number): Promise<SheepClient> {
  const c = await SheepClient.connect({ host: node.host, port: node.port }, timeoutMs);
  if (!key) return c;
  try {
    await c.authenticate(key, 'peer');
  } catch (e) {
    c.close();
    throw e;
  }
  return c;
}
