// collie vdi alter-copy: change how many copies a VDI's objects have. The sheep makes it a cluster
// decision and then copies or removes copies; collie checks what it can first, so that a refusal comes
// with the original's reason (the sheep answers only a result code).

import { Op } from '../lib/proto.js';
import { vidToVdiOid } from '../lib/oid.js';
import { decodeInodeHeader, SD_INODE_HEADER_SIZE } from '../lib/inode.js';
import type { AlterCopyReply, StatClusterReply } from '../lib/admin.js';
import { CliError, EXIT_USAGE, withClient, out, reason, confirm, type ConnOpts } from './common.js';
import { allInodes } from './vdi.js';

/** SD_DEFAULT_COPIES: what the original uses when -c is left out. */
const DEFAULT_COPIES = 3;
const MAX_COPIES = 31;

const CAUTION = "Caution! Changing VDI's redundancy level will affect\nthe VDI itself only: each of its objects gains or loses copies now.\nAre you sure you want to continue?";

/** -c N; the original's x:y (erasure coding) is refused as it refuses it. */
export function parseCopies(text: string | undefined): number {
  if (text === undefined) {
    out(`The vdi's redundancy level is not specified, use ${DEFAULT_COPIES} as default.\n`);
    return DEFAULT_COPIES;
  }
  if (/^\d+:\d+$/.test(text)) throw new CliError('Changing redundancy level of erasure coded vdi is not supported yet.', EXIT_USAGE);
  const n = Number(text);
  if (!/^\d+$/.test(text) || n < 1 || n > MAX_COPIES) throw new CliError(`Invalid number of copies '${text}': an integer 1..${MAX_COPIES}`, EXIT_USAGE);
  return n;
}

export async function vdiAlterCopy(name: string, o: ConnOpts & { copies?: string; force?: boolean }): Promise<void> {
  const copies = parseCopies(o.copies);
  await withClient(o, async (c) => {
    const st = await c.control<StatClusterReply>(Op.STAT_CLUSTER);
    if (copies > st.zones) {
      throw new CliError(`Number of copies (${copies}) is larger than number of zones (${st.zones}): each copy needs a zone of its own`);
    }
    let vid: number;
    try {
      vid = await c.getVdiInfo(name);
    } catch (e) {
      throw new CliError(`Failed to open VDI ${name} (snapshot id: 0 snapshot tag: ): ${reason(e)}`);
    }
    const h = decodeInodeHeader(await c.readObj(vidToVdiOid(vid), 0, SD_INODE_HEADER_SIZE));
    if (h.copyPolicy) throw new CliError(`${name}'s copy policy is erasure code, changing it is not supported yet.`);
    if (h.nrCopies === copies) throw new CliError(`${name}'s redundancy level is already set to ${copies}, nothing changed.`);
    // shared blocks are placed by their owner's count: only a VDI with no parent and no children
    const children = (await allInodes(c)).filter((i) => i.name !== '' && i.parentVdiId === vid);
    if (h.parentVdiId !== 0 || children.length) {
      throw new CliError(`Only standalone vdi supports changing redundancy level.\nPlease clone ${name} with -n (--no-share) option first.`);
    }
    if (!o.force && !(await confirm(CAUTION))) throw new CliError('not changed (use -f to skip the question)');
    let r: AlterCopyReply;
    try {
      r = await c.control<AlterCopyReply>(Op.ALTER_VDI_COPY, { name, copies });
    } catch (e) {
      throw new CliError(`Changing ${name}'s redundancy level failure: ${reason(e)}`);
    }
    out(`${name}'s redundancy level is set to ${r.copies}, the old one was ${r.oldCopies}.\n`);
    out(`${r.objects} objects: ${r.copied} copies made, ${r.removed} removed\n`);
    if (r.unfinished) {
      throw new CliError(`${r.unfinished} objects do not have ${r.copies} copies yet (a node was unreachable): recovery gives them their copies at the next membership change`);
    }
  });
}
