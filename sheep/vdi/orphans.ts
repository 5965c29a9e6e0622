// Reclaims this node's copies that nothing maps any more, so that no path leaves space behind:
// objects of deleted VDIs (also when the delete happened while this node was away, full or
// restarting, or its gateway died halfway through), and data objects a write created but never
// mapped (the write failed on another replica, or the client died between the create and the
// inode update). Each node sweeps its own store; the VDI table every node shares says what is live.

import { dataOidToIdx, oidHex, oidKind, oidToVid } from '../../lib/oid.js';
import { baseOid } from '../../lib/erasure-layout.js';
import type { ObjectStore } from '../store/store.js';
import type { Logger } from '../util/log.js';
import type { VdiTable } from './vdi-table.js';

export interface SweepResult {
  /** copies in service removed */
  removed: number;
  /** set-aside copies removed */
  setAside: number;
}

export class OrphanCollector {
  private sweeping: Promise<SweepResult> | null = null;
  private again = false;

  constructor(
    private readonly store: ObjectStore,
    private readonly vdis: VdiTable,
    private readonly log: Logger,
    /**
     * An unmapped data object of a live VDI is an orphan only once it is older than this: QEMU (and
     * every client) creates an object first and maps it just after.
     */
    private readonly graceMs: number,
    /** sweeping needs a cluster that serves I/O (maps are read through the gateway) */
    private readonly canSweep: () => boolean,
  ) {}

  /** Runs a sweep now, or right after the one in progress. */
  sweep(): Promise<SweepResult> {
    if (this.sweeping) {
      this.again = true;
      return this.sweeping;
    }
    this.sweeping = (async () => {
      let total: SweepResult = { removed: 0, setAside: 0 };
      try {
        do {
          this.again = false;
          const r = await this.sweepOnce();
          total = { removed: total.removed + r.removed, setAside: total.setAside + r.setAside };
        } while (this.again);
      } finally {
        this.sweeping = null;
      }
      return total;
    })();
    return this.sweeping;
  }

  private async sweepOnce(): Promise<SweepResult> {
    const res: SweepResult = { removed: 0, setAside: 0 };
    if (!this.canSweep()) return res;
    // only copies last written before the sweep began, less the grace: a block created since (or
    // re-created: a create replaces the file) is younger, and clients map a block right after creating it,
    // so anything older that the maps read below do not show is mapped by nothing
    const cutoff = Date.now() - this.graceMs;
    const byVid = new Map<number, Array<{ oid: bigint; stale: boolean }>>();
    const add = (oid: bigint, stale: boolean) => {
      const kind = oidKind(baseOid(oid)); // a strip of an erasure-coded object goes with its object
      if (kind !== 'data' && kind !== 'vmstate') return; // inodes stay (deleted VDIs keep their id); attrs are VDI metadata
      const vid = oidToVid(oid);
      let l = byVid.get(vid);
      if (!l) byVid.set(vid, (l = []));
      l.push({ oid, stale });
    };
    for (const oid of await this.store.list()) add(oid, false);
    for (const oid of await this.store.listStale()) add(oid, true);
    for (const [vid, objs] of byVid) {
      if (!this.canSweep()) break;
      const e = this.vdis.get(vid);
      // a VDI whose creation was undone, or a deleted one nothing descends from: every copy goes
      const gone = !e || this.vdis.unreferenced(vid);
      let mapped: ((idx: number) => boolean) | null = null;
      if (!gone) {
        // which blocks of `vid` a live VDI still maps (the VDI itself, or clones/snapshots of it)
        const lineage = this.vdis.liveLineage(vid);
        try {
          const maps = await Promise.all(lineage.map((v) => this.vdis.readMap(v)));
          mapped = (idx) => maps.some((m) => idx < m.length && m[idx] === vid);
        } catch (err) {
          this.log.debug({ vid: vid.toString(16), err: (err as Error).message }, 'orphan sweep: maps unreadable now; next time');
          continue;
        }
      }
      // nothing creates objects of a deleted VDI: no age check. A live VDI's unmapped object may be
      // a create whose map update is on its way, and an undone VDI's a create still in flight
      const notAfter = e?.deleted ? Number.POSITIVE_INFINITY : cutoff;
      for (const { oid, stale } of objs) {
        // of a VDI something maps: only data objects no live map points to
        if (mapped && (oidKind(baseOid(oid)) !== 'data' || mapped(dataOidToIdx(oid)))) continue;
        const ok = await this.store.removeOrphan(oid, notAfter, stale);
        if (!ok) continue;
        if (stale) res.setAside++;
        else res.removed++;
        this.log.debug({ oid: oidHex(oid), setAside: stale }, 'orphan copy removed');
      }
    }
    if (res.removed || res.setAside) this.log.info(res, 'orphan sweep: copies nothing maps removed');
    return res;
  }
}
