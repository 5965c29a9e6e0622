// Connections to other sheep: with a cluster key every one proves it (as a peer) before any request,
// and checks that the other side proves it too: by the AUTH challenge-response, or, with --peer-tls,
// by a TLS 1.3 handshake keyed from the cluster key, which also encrypts everything after it.

import { SheepClient } from '../../lib/client.js';
import { TLS_IDENTITY, tlsPsk } from '../../lib/auth.js';
import type { NodeInfo } from '../../lib/node.js';

export interface PeerAuth {
  /** the cluster key (null: no authentication) */
  key: Buffer | null;
  /** encrypt peer connections (needs a key) */
  tls: boolean;
}

export async function connectPeer(node: NodeInfo, auth: PeerAuth, timeoutMs: number): Promise<SheepClient> {
  const { key } = auth;
  if (key && auth.tls) {
    return SheepClient.connect({ host: node.host, port: node.port, tls: { psk: tlsPsk(key), identity: TLS_IDENTITY.peer } }, timeoutMs);
  }
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
