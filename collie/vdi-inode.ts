// collie vdi object dump-inode: the inode's header fields and its data map, in the original's layout.
// The original reads an inode file from a store; this reads the VDI's inode through the cluster.

import { vidToVdiOid } from '../lib/oid.js';
import { decodeInodeHeader, SD_INODE_HEADER_SIZE, InodeOff } from '../lib/inode.js';
import { OpenVdi } from '../lib/vdi-io.js';
import { withClient, out, vdiIdOf, type ConnOpts } from './common.js';

export async function vdiDumpInode(name: string, o: ConnOpts & { snapshot?: string }): Promise<void> {
  await withClient(o, async (c) => {
    const vid = await vdiIdOf(c, name, o.snapshot);
    const raw = await c.readObj(vidToVdiOid(vid), 0, SD_INODE_HEADER_SIZE);
    const h = decodeInodeHeader(raw);
    const v = await OpenVdi.open(c, vid);
    const lines = [
      `name: ${h.name}`,
      `tag: ${h.tag}`,
      `create_time: ${h.createTime.toString(16)}`,
      `snap_ctime: ${h.snapCtime.toString(16)}`,
      `vm_clock_nsec: ${h.vmClockNsec.toString(16)}`,
      `vdi_size: ${h.vdiSize}`,
      `vm_state_size: ${h.vmStateSize}`,
      `copy_policy: ${h.copyPolicy}`,
      `store_policy: ${h.storePolicy}`,
      `nr_copies: ${h.nrCopies}`,
      `block_size_shift: ${h.blockSizeShift}`,
      `snap_id: ${h.snapId}`,
      `vdi_id: ${h.vdiId.toString(16)}`,
      `parent_vdi_id: ${h.parentVdiId.toString(16)}`,
      // Sheepdog 1.0 keeps its B-tree counter in the first word of the old child list (hyper volumes
      // use it); this store has no hyper volumes, so it reads what is there
      `btree_counter: ${raw.readUInt32LE(InodeOff.childVdiId)}`,
      'data_vdi_id:',
    ];
    for (let i = 0; i < v.map.length; i++) if (v.map[i]) lines.push(`${i}: ${v.map[i].toString(16)}`);
    out(`${lines.join('\n')}\n`);
  });
}
