// `collie cluster reweight`: every node's weight (vnodes) from the capacity of its store, as the
// original's automatic vnodes: the default weight scaled by the node's capacity over the average.

import { Op, Res, SdError } from '../../lib/proto.js';
import { DEFAULT_VNODES, MAX_VNODES } from '../../lib/node.js';
import type { StatSheepReply } from '../../lib/admin.js';
import { connectPeer } from '../replication/peer-connect.js';
import type { System } from './system.js';

/** C's rint(): to the nearest integer, halves to the even one (the original rounds with rintf). */
function rint(x: number): number {
  const r = Math.round(x);
  return Math.abs(x - Math.trunc(x)) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/**
 * vnodes = rint(base * capacity / average capacity), the average over nodes that have a disk. A node
 * without capacity (its disk failed) keeps none; any other node gets at least one and at most the
 * protocol's u16.
 */
export function autoVnodes(capacities: Array<[string, number]>, base = DEFAULT_VNODES): Array<[string, number]> {
  const withDisk = capacities.filter(([, c]) => c > 0);
  if (!withDisk.length) return capacities.map(([nid]) => [nid, 0]);
  const avg = withDisk.reduce((a, [, c]) => a + c, 0) / withDisk.length;
  return capacities.map(([nid, c]) => [nid, c > 0 ? Math.min(MAX_VNODES, Math.max(1, rint((base * c) / avg))) : 0]);
}

/**
 * The capacity of every member's store (free space plus what its objects use: what `node info`
 * calls Size), asked of each node now. A node that does not answer fails the whole reweight: a
 * weight guessed for it would move data for nothing.
 */
export async function memberCapacities(sys: System): Promise<Array<[string, number]>> {
  return Promise.all(sys.members.map(async (n): Promise<[string, number]> => {
    if (n.nid === sys.me.nid) {
      const d = await sys.diskStats();
      return [n.nid, d.diskFailed ? 0 : d.size];
    }
    let c;
    try {
      c = await connectPeer(n, sys.peerAuth, 5000);
    } catch (e) {
      throw new SdError(Res.NETWORK_ERROR, `cannot reach ${n.nid} for its disk size: ${(e as Error).message}`);
    }
    try {
      const s = await c.control<StatSheepReply>(Op.STAT_SHEEP);
      return [n.nid, s.diskFailed ? 0 : s.size];
    } finally {
      c.close();
    }
  }));
}
