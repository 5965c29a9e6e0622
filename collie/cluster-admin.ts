// collie cluster reweight, alter-copy, check: administration of the whole cluster.

import { Op } from '../lib/proto.js';
import type { ClusterCopiesReply, StatClusterReply, VnodesReply } from '../lib/admin.js';
import { allInodes } from './vdi.js';
import { vdiCheck } from './vdi-admin.js';
import { CliError, EXIT_SYSFAIL, confirm, out, reason, withClient, type ConnOpts } from './common.js';

/**
 * `cluster reweight`: the sheep collie talks to asks every node for its store's capacity and decides
 * new weights for all of them at once (one new epoch; recovery moves objects to match).
 */
export async function clusterReweight(o: ConnOpts): Promise<void> {
  let r: VnodesReply;
  try {
    r = await withClient(o, (c) => c.control<VnodesReply>(Op.REWEIGHT));
  } catch (e) {
    if (e instanceof CliError) throw e;
    throw new CliError(`Failed to execute request: ${reason(e)}`);
  }
  // dog says nothing when it worked; weights that already match add no epoch, which is worth knowing
  if (!r.changed) process.stderr.write(`every node's vnodes already match its disk size: nothing changed (epoch ${r.epoch})\n`);
}

/** The original's default when -c is left out (SD_DEFAULT_COPIES). */
const DEFAULT_COPIES = 3;

const ALTER_CLUSTER_COPY_CAUTION = `    __
   ()'\`;
   /\\|\`  Caution! Changing cluster's redundancy level will affect
  /  |   all the VDIs to be created later.
(/_)_|_  Are you sure you want to continue?`;

/** `cluster alter-copy -c N`: the default copies of VDIs created from now on (existing ones keep theirs). */
export async function clusterAlterCopy(o: ConnOpts & { copies?: number; force: boolean }): Promise<void> {
  let copies = o.copies;
  if (copies === undefined) {
    copies = DEFAULT_COPIES;
    out(`The cluster's redundancy level is not specified, use ${copies} as default.\n`);
  }
  const st = await withClient(o, (c) => c.control<StatClusterReply>(Op.STAT_CLUSTER));
  if (st.status === 'wait_format') throw new CliError('the cluster is not formatted: set the copies with `collie cluster format -c N`');
  if (!o.force && copies > st.nodes &&
      !(await confirm(`Number of copies (${copies}) is larger than number of nodes (${st.nodes}).\nAre you sure you want to continue?`))) {
    throw new CliError('not changed (use -f to skip the questions)');
  }
  if (st.copies === copies) throw new CliError(`The cluster's redundancy level is already set to ${copies}, nothing changed.`);
  if (!o.force && !(await confirm(ALTER_CLUSTER_COPY_CAUTION))) throw new CliError('not changed (use -f to skip the question)');
  let r: ClusterCopiesReply;
  try {
    r = await withClient(o, (c) => c.control<ClusterCopiesReply>(Op.ALTER_CLUSTER_COPY, { copies }));
  } catch (e) {
    if (e instanceof CliError) throw e;
    throw new CliError(`Failed to execute request: ${reason(e)}`);
  }
  // the original says this on stderr
  process.stderr.write(`The cluster's redundancy level is set to ${r.copies}, the old one was ${r.old}.\n`);
}

/**
 * `cluster check`: `vdi check` of every VDI and snapshot (missing copies rebuilt, differing copies
 * made the same), one after another; a VDI that cannot be repaired does not stop the others.
 */
export async function clusterCheck(o: ConnOpts): Promise<void> {
  const damaged: string[] = [];
  const inodes = await withClient(o, (c) => allInodes(c, (vid, why) => damaged.push(`VDI ${vid.toString(16)}: its inode cannot be read (${reason(why)})`)));
  const failed: string[] = [];
  for (const h of inodes) {
    const snapshot = h.snapCtime !== 0n;
    out(snapshot ? `fix snapshot ${h.name} (id: ${h.snapId}, tag: "${h.tag}")\n` : `fix vdi ${h.name}\n`);
    try {
      await vdiCheck(h.name, { ...o, snapshot: snapshot ? String(h.snapId) : undefined });
    } catch (e) {
      const why = e instanceof CliError ? e.message : reason(e);
      if (why) process.stderr.write(`${why}\n`);
      failed.push(snapshot ? `${h.name} (snapshot ${h.snapId})` : h.name);
      if (e instanceof CliError && e.exitCode === EXIT_SYSFAIL) throw new CliError('cluster check stopped: a node cannot be asked', EXIT_SYSFAIL);
    }
  }
  for (const d of damaged) process.stderr.write(`${d}\n`);
  if (failed.length || damaged.length) {
    throw new CliError(`cluster check: ${failed.length + damaged.length} VDI(s) not fully repaired${failed.length ? `: ${failed.join(', ')}` : ''}`);
  }
}
