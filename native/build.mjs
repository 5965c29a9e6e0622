#!/usr/bin/env node
// Builds the native addons: the corosync CPG addon (native/build/Release/cpg.node) and the
// ISA-L erasure codec (native/erasure/build/Release/erasure.node). Run by `npm ci` / `npm install`
// / `npm rebuild` as this package's own "install" script, or by hand: `node native/build.mjs`.
//
// Each addon is optional: the local cluster driver needs no native code, and without the codec
// only erasure-coded VDIs are refused. So a missing libcpg-dev
// or a failed compile prints the reason and exits 0, unless SHEEP_REQUIRE_CPG=1 asks for the
// corosync driver to be mandatory (then a failure exits 1).
//
// The last reason is also written to native/build/cpg-unavailable.txt, which cpgAvailable() in
// native/cpg.ts reports (npm hides the output of install scripts that succeed).

import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
let exitCode = 0;

const ADDONS = [
  {
    name: 'corosync driver', dir: here, header: '/usr/include/corosync/cpg.h', node: 'cpg.node', reasonName: 'cpg-unavailable.txt', source: 'native/cpg.cc',
    required: process.env.SHEEP_REQUIRE_CPG === '1', pkg: 'libcpg-dev', fallback: 'the local driver works without it',
  },
  {
    name: 'erasure coding', dir: path.join(here, 'erasure'), header: '/usr/include/isa-l/erasure_code.h', node: 'erasure.node', reasonName: 'erasure-unavailable.txt', source: 'native/erasure/erasure.cc',
    required: process.env.SHEEP_REQUIRE_ISAL === '1', pkg: 'libisal-dev', fallback: 'only erasure-coded VDIs need it',
  },
];

for (const a of ADDONS) buildAddon(a);
process.exit(exitCode);

function buildAddon(a) {
  const buildDir = path.join(a.dir, 'build');
  const reasonFile = path.join(buildDir, a.reasonName);
  const addon = path.join(buildDir, 'Release', a.node);
  const unavailable = (reason) => {
    try {
      fs.mkdirSync(buildDir, { recursive: true });
      fs.writeFileSync(reasonFile, reason + '\n');
    } catch {
      // best effort: the message below is what matters
    }
    console.error(reason);
    if (a.required) exitCode = 1;
  };
  if (!fs.existsSync(a.header)) {
    unavailable(`${a.name} unavailable: install Debian's ${a.pkg} (apt-get install ${a.pkg}) and run npm rebuild; ${a.fallback}`);
    return;
  }
  let lastError = 'node-gyp not found';
  for (const [cmd, pre] of nodeGypCommands()) {
    const res = spawnSync(cmd, [...pre, ...gypArgs()], { cwd: a.dir, stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8' });
    if (res.error) {
      lastError = `${cmd}: ${res.error.message}`;
      continue; // could not start this one: try the next way
    }
    if (res.status === 0 && fs.existsSync(addon)) {
      fs.rmSync(reasonFile, { force: true });
      console.log(`${a.name}: built ${path.relative(process.cwd(), addon) || addon}`);
      return;
    }
    const out = `${res.stdout ?? ''}${res.stderr ?? ''}`.trim().split('\n');
    const errLines = out.filter((l) => /error|not found|cannot|No such/i.test(l)).slice(0, 8);
    unavailable(
      `${a.name} unavailable: compiling ${a.source} failed (exit ${res.status ?? res.signal}):\n` +
        (errLines.length > 0 ? errLines : out.slice(-8)).join('\n') +
        `\n${a.fallback}; rerun \`npm rebuild\` once fixed`,
    );
    return;
  }
  unavailable(`${a.name} unavailable: cannot run node-gyp (${lastError}); ${a.fallback}`);
}

// How to run node-gyp, best first. Under npm, npm_config_node_gyp points at npm's own copy and
// node-gyp is on PATH; by hand, fall back to the copy bundled with npm.
function nodeGypCommands() {
  const cmds = [];
  const fromEnv = process.env.npm_config_node_gyp;
  if (fromEnv && fs.existsSync(fromEnv)) cmds.push([process.execPath, [fromEnv]]);
  const onPath = (process.env.PATH ?? '')
    .split(path.delimiter)
    .map((d) => path.join(d, 'node-gyp'))
    .find((p) => {
      try {
        fs.accessSync(p, fs.constants.X_OK);
        return true;
      } catch {
        return false;
      }
    });
  if (onPath) cmds.push([onPath, []]);
  const npmRoots = [];
  if (process.env.npm_execpath) npmRoots.push(path.resolve(path.dirname(process.env.npm_execpath), '..'));
  npmRoots.push(path.resolve(path.dirname(process.execPath), '../lib/node_modules/npm'));
  for (const root of npmRoots) {
    const js = path.join(root, 'node_modules/node-gyp/bin/node-gyp.js');
    if (fs.existsSync(js)) cmds.push([process.execPath, [js]]);
  }
  cmds.push(['npm', ['exec', '--no', '--', 'node-gyp']]);
  return cmds;
}

// Build against the headers installed with node when npm has not said where they are, so a
// build by hand never tries to download them.
function gypArgs() {
  const args = ['rebuild'];
  if (!process.env.npm_config_nodedir) {
    const prefix = path.resolve(path.dirname(process.execPath), '..');
    if (fs.existsSync(path.join(prefix, 'include/node/node_api.h'))) args.push(`--nodedir=${prefix}`);
  }
  return args;
}

