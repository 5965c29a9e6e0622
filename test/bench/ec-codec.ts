// npm run bench:ec: GB/s of Reed-Solomon encode and decode on this machine, 4 MiB objects, 4:2
// (the figures behind the codec choice in README "Erasure coding"). Compares the ISA-L addon
// (native/erasure.ts) with @ronomon/reed-solomon when that package can be loaded (it is not a
// dependency: install it anywhere and point RONOMON at its folder, or have it in node_modules).

import { createRequire } from 'node:module';
import crypto from 'node:crypto';
import { encode, decode, erasureUnavailable } from '../../native/erasure.js';

const K = 4;
const P = 2;
const OBJECT = 4 * 1024 * 1024;
const STRIP = OBJECT / K;
const SECONDS = Number(process.env.SECONDS_PER_CASE ?? 2);

function rate(fn: () => void): number {
  fn(); // warm up
  let n = 0;
  const start = process.hrtime.bigint();
  const until = start + BigInt(SECONDS * 1e9);
  let now = start;
  while (now < until) { fn(); n++; now = process.hrtime.bigint(); }
  return (n * OBJECT) / (Number(now - start) / 1e9) / 1e9;
}

async function rateAsync(fn: () => Promise<void>): Promise<number> {
  await fn();
  let n = 0;
  const start = process.hrtime.bigint();
  const until = start + BigInt(SECONDS * 1e9);
  let now = start;
  while (now < until) { await fn(); n++; now = process.hrtime.bigint(); }
  return (n * OBJECT) / (Number(now - start) / 1e9) / 1e9;
}

interface Ronomon {
  create(k: number, m: number): unknown;
  encode(ctx: unknown, sources: number, targets: number, buffer: Buffer, bufferOffset: number, bufferSize: number,
    parity: Buffer, parityOffset: number, paritySize: number, cb: (e?: Error) => void): void;
}

function loadRonomon(): Ronomon | null {
  const req = createRequire(import.meta.url);
  for (const where of [process.env.RONOMON, '@ronomon/reed-solomon'].filter(Boolean) as string[]) {
    try { return req(where) as Ronomon; } catch { /* try the next */ }
  }
  return null;
}

async function main(): Promise<void> {
  const rows: Array<[string, string, string]> = [];
  const data = Array.from({ length: K }, () => crypto.randomBytes(STRIP));
  const why = erasureUnavailable();
  if (why) {
    rows.push(['ISA-L (native/erasure)', 'n/a', why]);
  } else {
    const parity = encode(data, P);
    const present = [data[1], data[3], parity[0], parity[1]];
    // into buffers allocated once, as the other codec is measured; then with fresh output buffers
    // per object, as the gateway uses it (the page faults of new 1 MiB buffers are the difference)
    const outs = [Buffer.alloc(STRIP), Buffer.alloc(STRIP)];
    const enc = rate(() => { encode(data, P, outs); });
    const dec = rate(() => { decode(K, P, present, [1, 3, 4, 5], [0, 2], outs); });
    const encFresh = rate(() => { encode(data, P); });
    const decFresh = rate(() => { decode(K, P, present, [1, 3, 4, 5], [0, 2]); });
    const back = decode(K, P, present, [1, 3, 4, 5], [0, 2]);
    if (!back[0].equals(data[0]) || !back[1].equals(data[2])) throw new Error('ISA-L decode gave wrong data');
    rows.push(['ISA-L (native/erasure)', enc.toFixed(2), dec.toFixed(2)]);
    rows.push(['ISA-L, fresh output', encFresh.toFixed(2), decFresh.toFixed(2)]);
  }
  const ro = loadRonomon();
  if (!ro) {
    rows.push(['@ronomon/reed-solomon', 'n/a', 'not installed (set RONOMON=<its folder>)']);
  } else {
    const ctx = ro.create(K, P);
    const buffer = Buffer.concat(data);
    const parity = Buffer.alloc(STRIP * P);
    const run = (sources: number, targets: number) => new Promise<void>((res, rej) =>
      ro.encode(ctx, sources, targets, buffer, 0, buffer.length, parity, 0, parity.length, (e) => (e ? rej(e) : res())));
    const enc = await rateAsync(() => run(0b001111, 0b110000));
    // decode: data strips 0 and 2 lost, rebuilt from 1, 3 and both parity strips
    const dec = await rateAsync(() => run(0b111010, 0b000101));
    rows.push(['@ronomon/reed-solomon', enc.toFixed(2), dec.toFixed(2)]);
  }
  console.log(`Reed-Solomon ${K}:${P}, ${OBJECT / 1048576} MiB objects, one core, GB/s of object data`);
  console.log('codec                     encode  decode (2 data strips lost)');
  for (const [name, e, d] of rows) console.log(`${name.padEnd(26)}${e.padStart(6)}  ${d}`);
}

await main();
