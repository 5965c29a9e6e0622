// A port-7000 load generator that sends exactly what QEMU's sheepdog driver sends once a VDI is open:
// READ_OBJ / WRITE_OBJ on the VDI's data objects with flags CMD_DIRECT (| CMD_WRITE), the VDI's copy
// count in the header, request ids counting up, `depth` requests in flight on one connection (QEMU
// pipelines every request of a disk on its one socket). Reports IOPS, MB/s and per-request latency
// percentiles. Writes go to blocks the VDI already owns (as QEMU's do after the first touch).
// Usage: node dist/test/bench/qemu-load.js PORT VDI read|write BLOCK_BYTES DEPTH SECONDS

import net from 'node:net';
import { Op, Flag, SD_HEADER_SIZE, encodeObjReq } from '../../lib/proto.js';
import { SheepClient } from '../../lib/client.js';
import { OpenVdi } from '../../lib/vdi-io.js';
import { vidToDataOid } from '../../lib/oid.js';

export interface LoadResult { iops: number; mbps: number; p50us: number; p99us: number; errors: number }

export async function qemuLoad(port: number, vdi: string, rw: 'read' | 'write', bs: number, depth: number, seconds: number): Promise<LoadResult> {
  // open the VDI as QEMU does (lock, read its inode) with the ordinary client
  const ctl = await SheepClient.connect({ port });
  const vid = await ctl.getVdiInfo(vdi);
  const v = await OpenVdi.open(ctl, vid);
  ctl.close();
  const blocks = Math.floor(v.size / bs);
  const perObject = v.objectSize / bs;
  const copies = v.header.nrCopies;
  for (let i = 0; i < v.map.length; i++) if (!v.map[i]) throw new Error(`${vdi}: block ${i} is not allocated (write the VDI once first)`);

  const sock = net.connect({ host: '127.0.0.1', port, noDelay: true });
  await new Promise<void>((resolve, reject) => { sock.once('connect', () => resolve()); sock.once('error', reject); });
  const payload = Buffer.alloc(rw === 'write' ? bs : 0, 0x5a);
  const sent = new Map<number, bigint>();
  const lat: number[] = [];
  let id = 0;
  let errors = 0;
  let done = 0;
  let stopAt = 0;
  let inflight = 0;
  let finish: () => void = () => undefined;
  const finished = new Promise<void>((r) => { finish = r; });
  let rnd = 0x12345678;
  const nextBlock = () => {
    // xorshift: cheap, reproducible
    rnd ^= rnd << 13; rnd ^= rnd >>> 17; rnd ^= rnd << 5;
    return (rnd >>> 0) % blocks;
  };
  const issue = () => {
    const b = nextBlock();
    const idx = Math.floor(b / perObject);
    const hdr = encodeObjReq({
      protoVer: 0, opcode: rw === 'read' ? Op.READ_OBJ : Op.WRITE_OBJ,
      flags: rw === 'read' ? Flag.CMD_DIRECT : Flag.CMD_WRITE | Flag.CMD_DIRECT,
      epoch: 0, id: id, dataLength: bs,
      oid: vidToDataOid(v.map[idx], idx), cowOid: 0n, copies, copyPolicy: 0, ecIndex: 0, tgtEpoch: 0,
      offset: BigInt((b % perObject) * bs),
    });
    sent.set(id, process.hrtime.bigint());
    id = (id + 1) >>> 0;
    inflight++;
    if (rw === 'write') { sock.cork(); sock.write(hdr); sock.write(payload); sock.uncork(); } else sock.write(hdr);
  };
  // replies: a header, then data_length bytes for reads
  let buf: Buffer = Buffer.alloc(0);
  sock.on('data', (chunk: Buffer) => {
    buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
    for (;;) {
      if (buf.length < SD_HEADER_SIZE) return;
      const len = buf.readUInt32LE(12);
      if (buf.length < SD_HEADER_SIZE + len) return;
      const rid = buf.readUInt32LE(8);
      if (buf.readUInt32LE(16) !== 0) errors++;
      buf = buf.subarray(SD_HEADER_SIZE + len);
      const t0 = sent.get(rid);
      sent.delete(rid);
      inflight--;
      if (t0 !== undefined && stopAt) lat.push(Number(process.hrtime.bigint() - t0) / 1000);
      done++;
      if (!stopAt || Date.now() < stopAt) issue();
      else if (!inflight) finish();
    }
  });
  // a short warm-up, then the measured run
  const warm = Date.now() + 500;
  for (let i = 0; i < depth; i++) issue();
  await new Promise((r) => setTimeout(r, Math.max(0, warm - Date.now())));
  const startDone = done;
  const t0 = Date.now();
  stopAt = t0 + seconds * 1000;
  await finished;
  const secs = (Date.now() - t0) / 1000;
  sock.destroy();
  lat.sort((a, b) => a - b);
  const n = done - startDone;
  const pct = (p: number) => (lat.length ? lat[Math.min(lat.length - 1, Math.floor(p * lat.length))] : 0);
  return { iops: n / secs, mbps: (n * bs) / secs / 1e6, p50us: pct(0.5), p99us: pct(0.99), errors };
}

if (process.argv[1]?.endsWith('qemu-load.js') && process.argv.length >= 8) {
  const [port, vdi, rw, bs, depth, secs] = process.argv.slice(2);
  const r = await qemuLoad(Number(port), vdi, rw as 'read' | 'write', Number(bs), Number(depth), Number(secs));
  process.stdout.write(`${JSON.stringify(r)}\n`);
}
