// Deleted snapshots that live VDIs still descend from ("ghosts"): deleting the oldest snapshot of a
// chain, or the snapshot a clone came from, leaves its children pointing at a deleted inode whose
// blocks they still share. A cluster snapshot saves such a ghost (its place in the family and the
// blocks it owned that its descendants map) so that load can rebuild it, build its children from it
// (a sheep allows one root per name: the second root of a name must descend from something) and
// delete it again, which gives the same family, the same sharing and the same snapshot ids.

import type { SheepClient } from '../lib/client.js';
import { vidToVdiOid } from '../lib/oid.js';
import { SD_INODE_HEADER_SIZE, decodeInodeHeader, objectCount, type InodeHeader } from '../lib/inode.js';

export interface Ghost {
  header: InodeHeader;
  /** the name it most likely had: deleting a VDI clears its name */
  name: string;
  /** the smallest size of its live descendants: what a rebuilt ghost may span */
  size: bigint;
  /** idx -> owner vid: the blocks of its own or of ghost ancestors that descendants map */
  map: Map<number, number>;
}

/** Reads the deleted ancestors of `live` (each VDI with its map) up to a live VDI or a root. */
export async function findGhosts(c: SheepClient, live: Array<{ header: InodeHeader; map: Uint32Array }>): Promise<Ghost[]> {
  const liveIds = new Map(live.map((v) => [v.header.vdiId, v]));
  const headers = new Map<number, InodeHeader>();
  for (const v of live) {
    for (let p = v.header.parentVdiId; p && !liveIds.has(p) && !headers.has(p);) {
      let h: InodeHeader;
      try {
        h = decodeInodeHeader(await c.readObj(vidToVdiOid(p), 0, SD_INODE_HEADER_SIZE));
      } catch {
        break; // the inode is gone too: the child is a root as far as anyone can tell
      }
      if (h.name !== '' || h.vdiId !== p) break; // not a deleted inode (nothing to rebuild)
      headers.set(p, h);
      p = h.parentVdiId;
    }
  }
  if (!headers.size) return [];

  const parentOf = (vid: number) => liveIds.get(vid)?.header.parentVdiId ?? headers.get(vid)?.parentVdiId ?? 0;
  /** ghost ancestors of `vid` (itself first when it is a ghost), nearest first */
  const ghostChain = (vid: number): number[] => {
    const out: number[] = [];
    for (let p = vid; headers.has(p); p = parentOf(p)) out.push(p);
    return out;
  };
  const liveBelow = (g: number) => live.filter((v) => ghostChain(v.header.parentVdiId).includes(g));

  const ghosts = new Map<number, Ghost>();
  // parents first, so a ghost below a ghost takes its name
  const depth = (vid: number) => ghostChain(vid).length;
  for (const g of [...headers.keys()].sort((a, b) => depth(a) - depth(b))) {
    const h = headers.get(g)!;
    const below = liveBelow(g);
    const size = below.reduce((m, v) => (v.header.vdiSize < m ? v.header.vdiSize : m), below[0]?.header.vdiSize ?? 0n);
    const parent = h.parentVdiId;
    let name: string;
    if (liveIds.has(parent)) name = liveIds.get(parent)!.header.name;
    else if (ghosts.has(parent)) name = ghosts.get(parent)!.name;
    else {
      // a deleted root: a descendant whose snapshot id went past the ghost's continued its name;
      // one that did not (id 1) was a clone of another name, so the ghost gets a name of its own
      const heir = below.filter((v) => v.header.snapId > h.snapId).sort((a, b) => a.header.vdiId - b.header.vdiId)[0];
      name = heir ? heir.header.name : `.deleted-${g.toString(16)}`;
    }
    // the blocks descendants map that this ghost or a ghost above it owned; the nearest owner wins
    const chain = ghostChain(g);
    const rank = new Map(chain.map((v, i) => [v, i]));
    const map = new Map<number, number>();
    const limit = objectCount(size, h.blockSizeShift);
    for (const v of below) {
      v.map.forEach((owner, idx) => {
        if (idx >= limit || !rank.has(owner)) return;
        const cur = map.get(idx);
        if (cur === undefined || rank.get(owner)! < rank.get(cur)!) map.set(idx, owner);
      });
    }
    ghosts.set(g, { header: h, name, size, map });
  }
  return [...ghosts.values()];
}
