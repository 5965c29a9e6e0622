// collie cluster: format, info, shutdown.

import fs from 'node:fs/promises';
import path from 'node:path';
import { Op, Res, SdError } from '../lib/proto.js';
import { newKeyText } from '../lib/auth.js';
import type { StatClusterReply } from '../lib/admin.js';
import { nodeWarnings, checkEcZones } from './node.js';
import { redundancyText } from '../lib/erasure-layout.js';
import { CliError, EXIT_FAILURE, EXIT_SYSFAIL, withClient, out, reason, ctimeString, shortTime, renderTable, confirm, type ConnOpts } from './common.js';

export interface FormatOpts extends ConnOpts {
  copies: number;
  /** an erasure code (lib/erasure-layout.ts), with copies X+Y; 0: full copies */
  copyPolicy?: number;
  blockSizeShift: number;
  lock: boolean;
  force: boolean;
}

export async function clusterFormat(o: FormatOpts): Promise<void> {
  await withClient(o, async (c) => {
    let hasVdis = false;
    try {
      hasVdis = (await c.readVdis()).some((b) => b !== 0);
    } catch (e) {
      if (!(e instanceof SdError && e.result === Res.WAIT_FOR_FORMAT)) throw e;
    }
    if (hasVdis && !o.force) {
      const ok = await confirm('Caution! The cluster is not empty: formatting deletes every VDI.\nAre you sure you want to continue?');
      if (!ok) throw new CliError('the cluster is not empty; not formatted (use --force to format anyway)');
    }
    await checkEcZones(o, o.copyPolicy, 'Format failed');
    out('using backend plain store\n');
    try {
      await c.control(Op.MAKE_FS, { copies: o.copies, copyPolicy: o.copyPolicy ?? 0, blockSizeShift: o.blockSizeShift, lock: o.lock });
    } catch (e) {
      throw new CliError(`Format failed: ${reason(e)}`, EXIT_SYSFAIL);
    }
  });
}

export async function clusterInfo(o: ConnOpts & { verbose?: boolean }): Promise<void> {
  const st = await withClient(o, (c) => c.control<StatClusterReply>(Op.STAT_CLUSTER));
  const raw = o.raw;
  out(raw ? `${st.statusText}\n` : `Cluster status: ${st.statusText}\n`);
  if (st.status === 'wait_format') {
    out('\n');
    return;
  }
  if (o.verbose) {
    const lines = [`plain with ${redundancyText(st.copies, st.copyPolicy)} redundancy policy`, 'auto', 'node'];
    const labels = ['Cluster store: ', 'Cluster vnodes strategy: ', 'Cluster vnode mode: '];
    for (let i = 0; i < 3; i++) out(raw ? `${lines[i]}\n` : `${labels[i]}${lines[i]}\n`);
    if (st.lock) out(raw ? 'lock\n' : 'Cluster VDI locking: enforced (formatted with --lock)\n');
  } else {
    out('\n');
  }
  if (!raw) out(`Cluster created at ${ctimeString(st.ctime)}\n`);
  if (!raw && st.zones < st.copies && st.copyPolicy) {
    out(`Cluster has ${st.zones} zone(s) for ${redundancyText(st.copies, st.copyPolicy)} erasure coding: its VDIs are readable, writes to them wait for ${st.copies} zones\n`);
  } else if (!raw && st.zones < st.copies) {
    out(`Cluster has ${st.zones} zone(s) for ${st.copies} copies: every object is stored once in each zone until more zones join\n`);
  }
  if (!raw && st.status === 'running') for (const w of await nodeWarnings(o)) out(`${w}\n`);
  if (!raw) out('\n');
  const nodes = (h: StatClusterReply['history'][number]) => `[${h.nodes.map((n) => `${n.host}:${n.port}:${n.vnodes}`).join(', ')}]`;
  if (raw) {
    for (const h of st.history) out(`${Math.floor(h.time / 1000)} ${h.epoch} ${nodes(h)}\n`);
    return;
  }
  // dog's header line, which does not follow the columns below it
  out('Epoch Time           Version [Host:Port:V-Nodes,,,]\n');
  out(renderTable([{}, { width: 6, align: 'right' }, {}], st.history.map((h) => [shortTime(Math.floor(h.time / 1000), true), h.epoch, nodes(h)])));
}

export async function clusterShutdown(o: ConnOpts): Promise<void> {
  await withClient(o, async (c) => {
    try {
      await c.control(Op.SHUTDOWN);
    } catch (e) {
      throw new CliError(`failed to execute request: ${reason(e)}`);
    }
  });
}

const RECOVER_CAUTION = `Caution! Please try starting all the cluster nodes normally before
running this command.

The cluster may need to be force recovered if:
  - the master node fails to start because of epoch mismatch; or
  - some nodes fail to start after a cluster shutdown.

Are you sure you want to continue?`;

export async function clusterRecoverForce(o: ConnOpts & { force: boolean }): Promise<void> {
  // only a restarted cluster waiting for its nodes has something to force: say so rather than ask
  const st = await withClient(o, (c) => c.control<StatClusterReply>(Op.STAT_CLUSTER));
  if (st.status !== 'wait_join') {
    throw new CliError(`Nothing to force: the cluster is not waiting for nodes to join (${st.statusText}). ` +
      '`cluster recover force` is for a cluster restarted without a node of its last epoch that will not come back.');
  }
  if (!o.force && !(await confirm(RECOVER_CAUTION))) throw new CliError('not recovered (use -f to skip the question)');
  await withClient(o, async (c) => {
    try {
      await c.control(Op.FORCE_RECOVER);
    } catch (e) {
      throw new CliError(`failed to execute request: ${reason(e)}`);
    }
  });
}

export async function clusterRecoverMode(o: ConnOpts, enable: boolean): Promise<void> {
  await withClient(o, async (c) => {
    try {
      await c.control(enable ? Op.ENABLE_RECOVER : Op.DISABLE_RECOVER);
    } catch (e) {
      throw new CliError(`failed to execute request: ${reason(e)}`);
    }
  });
  out(`Cluster recovery: ${enable ? 'enable' : 'disable'}\n`);
}

/** `collie cluster keygen [FILE]`: a new random key, readable by its owner only (like corosync-keygen). */
export async function clusterKeygen(file: string, force: boolean): Promise<void> {
  await fs.mkdir(path.dirname(file), { recursive: true, mode: 0o755 });
  try {
    await fs.writeFile(file, newKeyText(), { mode: 0o600, flag: force ? 'w' : 'wx' });
    await fs.chmod(file, 0o600);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') throw new CliError(`${file} exists already (use -f to replace it)`, EXIT_FAILURE);
    throw new CliError(`cannot write ${file}: ${code ?? (e as Error).message}`, EXIT_FAILURE);
  }
  out(`wrote a new cluster key to ${file}\n`);
}
