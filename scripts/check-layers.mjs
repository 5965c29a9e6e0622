#!/usr/bin/env node
// Fails (exit 1) when the source tree breaks its layering: an import circle anywhere, an import from
// a lower layer of sheep/ to a higher one, or collie/ or lib/ reaching into daemon code.
// Layers of sheep/, lowest first (a module may import its own folder and anything lower):
//   lib/, native/  <  sheep/util  <  sheep/cluster drivers, sheep/store  <  sheep/replication
//   <  sheep/vdi  <  sheep/cluster (membership, decisions, system)  <  sheep/frontend  <  sheep/main.ts
// Run by scripts/test.sh (so CI fails on a violation) and by `npm run check:layers`.

import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const DRIVERS = new Set(['driver', 'drivers', 'local-group', 'local-sequencer', 'corosync', 'zookeeper'].map((f) => `sheep/cluster/${f}.ts`));

/** [layer rank, group name]; imports inside one group are always allowed (circles are checked apart). */
function layerOf(file) {
  if (file.startsWith('lib/') || file.startsWith('native/')) return [0, 'lib'];
  if (file.startsWith('sheep/util/')) return [1, 'util'];
  if (DRIVERS.has(file)) return [2, 'cluster drivers'];
  if (file.startsWith('sheep/store/')) return [2, 'store'];
  if (file.startsWith('sheep/replication/')) return [3, 'replication'];
  if (file.startsWith('sheep/vdi/')) return [4, 'vdi'];
  if (file.startsWith('sheep/cluster/')) return [5, 'cluster'];
  if (file.startsWith('sheep/frontend/')) return [6, 'frontend'];
  if (file === 'sheep/main.ts') return [7, 'main'];
  if (file.startsWith('collie/')) return [7, 'collie'];
  return null;
}

function walk(dir, out) {
  for (const e of fs.readdirSync(path.join(root, dir), { withFileTypes: true })) {
    const rel = `${dir}/${e.name}`;
    if (e.isDirectory()) { if (e.name !== 'build' && e.name !== 'node_modules') walk(rel, out); }
    else if (e.name.endsWith('.ts') && !e.name.endsWith('.d.ts')) out.push(rel);
  }
  return out;
}

const files = ['lib', 'sheep', 'collie', 'native'].flatMap((d) => walk(d, []));
const graph = new Map();
const problems = [];
const IMPORT = /(?:^|\n)\s*(?:import|export)\s[^'"]*?from\s*['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)/g;

for (const file of files) {
  const src = fs.readFileSync(path.join(root, file), 'utf8');
  const deps = [];
  for (const m of src.matchAll(IMPORT)) {
    const spec = m[1] ?? m[2];
    if (!spec.startsWith('.')) continue;
    const target = path.posix.normalize(path.posix.join(path.posix.dirname(file), spec)).replace(/\.js$/, '.ts');
    if (!fs.existsSync(path.join(root, target))) { problems.push(`${file}: imports ${spec}, which does not exist`); continue; }
    deps.push(target);
    const from = layerOf(file);
    const to = layerOf(target);
    if (!from || !to) continue;
    if (from[1] === 'collie' && to[1] !== 'lib' && to[1] !== 'collie') problems.push(`${file}: the CLI imports daemon code ${target} (collie/ may import only lib/)`);
    else if (from[1] === 'lib' && to[1] !== 'lib') problems.push(`${file}: lib/ imports ${target} (lib/ is shared code and imports only lib/)`);
    else if (from[1] !== 'collie' && from[1] !== to[1] && to[0] >= from[0]) {
      problems.push(`${file} (${from[1]}) imports ${target} (${to[1]}): an import may only go down the layers`);
    }
  }
  graph.set(file, deps);
}

// Tarjan's strongly connected components: every component of more than one module is a circle
let index = 0;
const idx = new Map(), low = new Map(), onStack = new Set(), stack = [];
function strong(v) {
  idx.set(v, index); low.set(v, index); index++;
  stack.push(v); onStack.add(v);
  for (const w of graph.get(v) ?? []) {
    if (!idx.has(w)) { strong(w); low.set(v, Math.min(low.get(v), low.get(w))); }
    else if (onStack.has(w)) low.set(v, Math.min(low.get(v), idx.get(w)));
  }
  if (low.get(v) === idx.get(v)) {
    const comp = [];
    let w;
    do { w = stack.pop(); onStack.delete(w); comp.push(w); } while (w !== v);
    if (comp.length > 1 || (graph.get(v) ?? []).includes(v)) problems.push(`import circle: ${comp.sort().join(' <-> ')}`);
  }
}
for (const f of graph.keys()) if (!idx.has(f)) strong(f);

if (problems.length) {
  for (const p of problems) console.error(`check-layers: ${p}`);
  process.exit(1);
}
console.log(`check-layers: ${files.length} modules, no import circle, no upward import`);
