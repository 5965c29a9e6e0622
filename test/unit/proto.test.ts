import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  Op, Flag, Res, decodeObjReq, encodeObjReq, decodeVdiReq, encodeVdiReq, decodeRsp, encodeRsp, encodeNameTag,
  decodeNameTag, resultText,
} from '../../lib/proto.js';
import { oidKind, vidToVdiOid, vidToDataOid, vidToAttrOid, oidToVid, dataOidToIdx, VMSTATE_BIT } from '../../lib/oid.js';

// headers recorded from QEMU 5.0 (../shared/conformance traces)
const QEMU_NEW_VDI = '001101000000000000000000000100000000000400000000000000000000001600000000000000000000000000000000';
const QEMU_COW_WRITE = '00010700000000000000000000100000000000002c20ed00000000002b20ed0001000000000000000000000000000000';
const QEMU_MAP_WRITE = '00030500000000000100000004000000000000002b20ed80000000000000000001000000000000003812000000000000';

test('a VDI request decodes the fields QEMU sends and re-encodes byte-identically', () => {
  const b = Buffer.from(QEMU_NEW_VDI, 'hex');
  const r = decodeVdiReq(b);
  assert.equal(r.opcode, Op.NEW_VDI);
  assert.equal(r.flags, Flag.CMD_WRITE);
  assert.equal(r.dataLength, 256);
  assert.equal(r.vdiSize, 64n * 1024n * 1024n);
  assert.equal(r.blockSizeShift, 22);
  assert.equal(r.snapid, 0);
  assert.equal(encodeVdiReq(r).toString('hex'), QEMU_NEW_VDI);
});

test('an object request decodes oid, cow_oid, copies and offset and re-encodes byte-identically', () => {
  const cow = decodeObjReq(Buffer.from(QEMU_COW_WRITE, 'hex'));
  assert.equal(cow.opcode, Op.CREATE_AND_WRITE_OBJ);
  assert.equal(cow.flags, Flag.CMD_WRITE | Flag.CMD_COW | Flag.CMD_CACHE);
  assert.equal(cow.oid, 0x00ed202c00000000n);
  assert.equal(cow.cowOid, 0x00ed202b00000000n);
  assert.equal(cow.copies, 1);
  assert.equal(encodeObjReq(cow).toString('hex'), QEMU_COW_WRITE);
  const map = decodeObjReq(Buffer.from(QEMU_MAP_WRITE, 'hex'));
  assert.equal(map.oid, 0x80ed202b00000000n);
  assert.equal(map.offset, 4664n);
  assert.equal(map.id, 1);
  assert.equal(encodeObjReq(map).toString('hex'), QEMU_MAP_WRITE);
});

test('responses carry result, vdi fields and cluster defaults at their offsets', () => {
  const v = encodeRsp({ opcode: Op.NEW_VDI, id: 0, epoch: 1, result: Res.SUCCESS, vdi: { vdiId: 0xed202b, copies: 1, blockSizeShift: 22 } });
  assert.equal(v.toString('hex'), '0011000001000000000000000000000000000000000000002b20ed000000000001160000000000000000000000000000');
  const d = encodeRsp({ opcode: Op.GET_CLUSTER_DEFAULT, id: 0, epoch: 1, result: 0, clusterDefault: { nrCopies: 1, copyPolicy: 0, blockSizeShift: 22 } });
  assert.equal(d.toString('hex'), '001800000100000000000000000000000000000001001600000000000000000000000000000000000000000000000000');
  const r = decodeRsp(v);
  assert.equal(r.vdiId, 0xed202b);
  assert.equal(r.copies, 1);
  assert.equal(r.blockSizeShift, 22);
  assert.equal(decodeRsp(d).defBlockSizeShift, 22);
});

test('name and tag payloads are fixed 256-byte NUL-padded fields', () => {
  const p = encodeNameTag('alpha', 's1');
  assert.equal(p.length, 512);
  assert.deepEqual(decodeNameTag(p), { name: 'alpha', tag: 's1' });
  assert.deepEqual(decodeNameTag(Buffer.from('alpha\0')), { name: 'alpha', tag: '' });
  assert.throws(() => encodeNameTag('x'.repeat(256)));
});

test('oids are classified by their type bits and malformed ones are refused', () => {
  assert.equal(oidKind(vidToDataOid(0xed202b, 5)), 'data');
  assert.equal(oidKind(vidToVdiOid(0xed202b)), 'inode');
  assert.equal(oidKind(VMSTATE_BIT | (0xabn << 32n) | 3n), 'vmstate');
  assert.equal(oidKind(vidToAttrOid(7, 9)), 'attr');
  assert.equal(oidKind(vidToVdiOid(1) | 1n), null); // inode oids have no index
  assert.equal(oidKind(0x0100000000000000n), null); // vid wider than 24 bits
  assert.equal(oidKind(0xc000000000000000n), null); // two type bits
  assert.equal(oidToVid(0x80ed202b00000000n), 0xed202b);
  assert.equal(dataOidToIdx(0x00ed202b00000019n), 25);
});

test('every result code has a human explanation', () => {
  for (const v of Object.values(Res)) assert.doesNotMatch(resultText(v), /^Unknown result/);
  assert.equal(resultText(Res.VDI_EXIST), 'VDI exists already');
});
