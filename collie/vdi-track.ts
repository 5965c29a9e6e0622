// collie vdi track: where an object of a VDI lived at each epoch. Placement is replayed from the epoch
// history (each epoch's nodes, with their zones and vnodes) and the ring, as the sheep placed it then,
// with the VDI's copy count of today (the history does not record earlier counts; nor did the original).

import { Op } from '../lib/proto.js';
import { vidToVdiOid, vidToDataOid, oidHex } from '../lib/oid.js';
import { SD_DATA_OBJ_MAX } from '../lib/inode.js';
import { OpenVdi } from '../lib/vdi-io.js';
import { Ring, type RingNode } from '../lib/ring.js';
import type { StatClusterReply } from '../lib/admin.js';
import { CliError, withClient, out, vdiIdOf, type ConnOpts } from './common.js';

const RULE = '-'.repeat(51);

/** -o: an object id in hex, as the original reads it (0x optional). */
export function parseOid(text: string): bigint {
  const m = /^(?:0x)?([0-9a-f]{1,16})$/i.exec(text);
  if (!m) throw new CliError('object id must be a hex integer');
  return BigInt(`0x${m[1]}`);
}

export async function vdiTrack(name: string, o: ConnOpts & { index?: number; snapshot?: string; oid?: string }): Promise<void> {
  const given = o.oid === undefined ? undefined : parseOid(o.oid);
  if (given === undefined && o.index !== undefined && o.index >= SD_DATA_OBJ_MAX) {
    out('The offset is too large!\n');
    throw new CliError('', 1);
  }
  await withClient(o, async (c) => {
    const vid = await vdiIdOf(c, name, o.snapshot);
    const v = await OpenVdi.open(c, vid);
    const st = await c.control<StatClusterReply>(Op.STAT_CLUSTER);
    const copies = v.header.nrCopies;
    let oid: bigint;
    if (given !== undefined) {
      oid = given;
      out(`Tracking the object ${oidHex(oid)} (the inode vid 0x${vid.toString(16)}) with ${st.nodes} nodes\n`);
    } else if (o.index === undefined) {
      oid = vidToVdiOid(vid);
      out(`Tracking the inode object 0x${vid.toString(16)} with ${st.nodes} nodes\n`);
    } else {
      const owner = v.map[o.index] ?? 0;
      if (!owner) throw new CliError(`The inode object 0x${vid.toString(16)} idx ${o.index} is not allocated`);
      oid = vidToDataOid(owner, o.index);
      out(`Tracking the object ${oidHex(oid)} (the inode vid 0x${vid.toString(16)} idx ${o.index}) with ${st.nodes} nodes\n`);
    }
    for (const h of st.history) {
      out(`\nobj ${oidHex(oid)} locations at epoch ${h.epoch}, copies = ${copies}\n${RULE}\n`);
      const nodes: RingNode[] = h.nodes.map((n) => {
        if (n.zone === undefined) throw new CliError(`the sheep did not say the zones of the nodes of epoch ${h.epoch}`);
        return { nid: n.nid ?? `${n.host}:${n.port}`, host: n.host, port: n.port, zone: n.zone, vnodes: n.vnodes };
      });
      // fewer nodes than copies: every node holds one (the original prints them all)
      const holders = nodes.length < copies ? nodes : new Ring(nodes).replicas(oid, copies);
      for (const n of holders) out(`${n.host}:${n.port}\n`);
    }
  });
}
