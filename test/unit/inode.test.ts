import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  SD_INODE_SIZE, SD_INODE_HEADER_SIZE, decodeInodeHeader, encodeInodeHeader, objectCount, maxVdiSize, mapEntryOffset, makeCtime, ctimeSeconds,
} from '../../lib/inode.js';

// the first bytes of an inode QEMU read back from Sheepdog 1.0 (trace c_snapshot_cow #69)
function recordedSnapshotInode(): Buffer {
  const b = Buffer.alloc(SD_INODE_HEADER_SIZE);
  Buffer.from('alpha').copy(b, 0);
  Buffer.from('s1').copy(b, 256);
  Buffer.from('d85bbe032766026b38b67b272766026b00000000000000000000000400000000000000000000000000000116010000002b20ed', 'hex').copy(b, 512);
  return b;
}

test('the inode header decodes every field at its DESIGN offset', () => {
  const h = decodeInodeHeader(recordedSnapshotInode());
  assert.equal(h.name, 'alpha');
  assert.equal(h.tag, 's1');
  assert.equal(h.vdiSize, 64n << 20n);
  assert.equal(h.nrCopies, 1);
  assert.equal(h.blockSizeShift, 22);
  assert.equal(h.snapId, 1);
  assert.equal(h.vdiId, 0xed202b);
  assert.equal(h.parentVdiId, 0);
  assert.notEqual(h.snapCtime, 0n);
});

test('the inode header re-encodes byte-identically', () => {
  const b = recordedSnapshotInode();
  assert.deepEqual(encodeInodeHeader(decodeInodeHeader(b)), b);
});

test('inode geometry: 4,198,968 bytes, 2^20 map entries, 4 TiB at 4 MiB objects', () => {
  assert.equal(SD_INODE_SIZE, 4198968);
  assert.equal(maxVdiSize(22), 4n << 40n);
  assert.equal(objectCount(64n << 20n, 22), 16);
  assert.equal(objectCount(1n, 22), 1);
  assert.equal(objectCount(0n, 22), 0);
  assert.equal(mapEntryOffset(25), 4764);
});

test('creation times keep seconds in the high 32 bits', () => {
  const t = makeCtime(1795318732123);
  assert.equal(ctimeSeconds(t), 1795318732);
  assert.equal(Number(t & 0xffffffffn), 123_000_000);
});
