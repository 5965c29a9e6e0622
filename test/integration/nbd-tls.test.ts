// NBD over TLS (NBD_OPT_STARTTLS) with real clients: qemu-img/qemu-io (GnuTLS) and nbdinfo/nbdcopy
// (libnbd), with pre-shared keys and with X.509 certificates made here by openssl.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { startSheep, destroySheep, stopSequencer, collie, freePort, tempDir, run, SHEEP, type SheepProcess } from '../helpers/sheep.js';

const MB = 1 << 20;
const TOOLS = ['openssl', 'qemu-img', 'qemu-io', 'nbdinfo', 'nbdcopy'];
let missing: string | null = null;
let sheep: SheepProcess | null = null; // --nbd-tls require, certificates + client CA + PSK
let optional: SheepProcess | null = null; // PSK only: TLS offered, not required
let port = 0;
let optPort = 0;
let work = '';
let pki = '';
let pskDir = '';
let clientDir = ''; // ca-cert.pem client-cert.pem client-key.pem, as qemu and libnbd want them
let rogueDir = '';

async function have(cmd: string): Promise<boolean> {
  return run('sh', ['-c', `command -v ${cmd}`]).then((r) => r.code === 0, () => false);
}

async function openssl(args: string[]): Promise<void> {
  const r = await run('openssl', args, undefined, 60000);
  assert.equal(r.code, 0, `openssl ${args.join(' ')}: ${r.stderr}`);
}

/** A CA, and a certificate signed by it: CA:TRUE + keyCertSign on the CA, as GnuTLS insists. */
async function makeCa(dir: string, name: string): Promise<void> {
  await openssl(['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', path.join(dir, `${name}-key.pem`),
    '-out', path.join(dir, `${name}-cert.pem`), '-days', '30', '-subj', `/CN=${name}`,
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
}

async function makeCert(dir: string, ca: string, name: string, cn: string, ext: string): Promise<void> {
  const p = (s: string) => path.join(dir, s);
  await fs.writeFile(p(`${name}.ext`), ext);
  await openssl(['req', '-newkey', 'rsa:2048', '-nodes', '-keyout', p(`${name}-key.pem`), '-out', p(`${name}.csr`), '-subj', `/CN=${cn}`]);
  await openssl(['x509', '-req', '-in', p(`${name}.csr`), '-CA', p(`${ca}-cert.pem`), '-CAkey', p(`${ca}-key.pem`),
    '-CAcreateserial', '-days', '30', '-extfile', p(`${name}.ext`), '-out', p(`${name}-cert.pem`)]);
}

const SERVER_EXT = 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n' +
  'extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n';
const CLIENT_EXT = 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n';

before(async () => {
  for (const t of TOOLS) if (!(await have(t))) { missing = t; return; }
  work = await tempDir('nbd-tls-test-');
  pki = path.join(work, 'pki');
  pskDir = path.join(work, 'psk');
  clientDir = path.join(work, 'client');
  rogueDir = path.join(work, 'rogue');
  for (const d of [pki, pskDir, clientDir, rogueDir]) await fs.mkdir(d);
  await makeCa(pki, 'ca');
  await makeCa(pki, 'rogue-ca');
  await Promise.all([
    makeCert(pki, 'ca', 'server', 'localhost', SERVER_EXT),
    makeCert(pki, 'ca', 'client', 'nbd-client', CLIENT_EXT),
    makeCert(pki, 'rogue-ca', 'rogue', 'rogue-client', CLIENT_EXT),
  ]);
  await fs.copyFile(path.join(pki, 'ca-cert.pem'), path.join(clientDir, 'ca-cert.pem'));
  await fs.copyFile(path.join(pki, 'client-cert.pem'), path.join(clientDir, 'client-cert.pem'));
  await fs.copyFile(path.join(pki, 'client-key.pem'), path.join(clientDir, 'client-key.pem'));
  // the rogue client trusts our server but presents a certificate from another CA
  await fs.copyFile(path.join(pki, 'ca-cert.pem'), path.join(rogueDir, 'ca-cert.pem'));
  await fs.copyFile(path.join(pki, 'rogue-cert.pem'), path.join(rogueDir, 'client-cert.pem'));
  await fs.copyFile(path.join(pki, 'rogue-key.pem'), path.join(rogueDir, 'client-key.pem'));
  await fs.writeFile(path.join(pskDir, 'keys.psk'), `alice:${crypto.randomBytes(32).toString('hex')}\n`, { mode: 0o600 });

  port = await freePort();
  optPort = await freePort();
  [sheep, optional] = await Promise.all([
    startSheep({
      copies: 1,
      args: ['--nbd', `127.0.0.1:${port}`, '--nbd-tls', 'require',
        '--nbd-tls-cert', path.join(pki, 'server-cert.pem'), '--nbd-tls-key', path.join(pki, 'server-key.pem'),
        '--nbd-tls-ca', path.join(pki, 'ca-cert.pem'), '--nbd-tls-psk', path.join(pskDir, 'keys.psk')],
    }),
    startSheep({ copies: 1, args: ['--nbd', `127.0.0.1:${optPort}`, '--nbd-tls-psk', path.join(pskDir, 'keys.psk')] }),
  ]);
  for (const [s, name] of [[sheep, 'psk'], [sheep, 'x509'], [sheep, 'copy'], [optional, 'either']] as const) {
    const r = await collie(s.port, ['vdi', 'create', name, '64M']);
    assert.equal(r.code, 0, r.stderr);
  }
});

after(async () => {
  if (sheep) await destroySheep(sheep);
  if (optional) await destroySheep(optional);
  if (work) await fs.rm(work, { recursive: true, force: true });
});

async function sh(cmd: string, args: string[]): Promise<string> {
  const r = await run(cmd, args, undefined, 60000);
  assert.equal(r.code, 0, `${cmd} ${args.join(' ')}: ${r.stderr}${r.stdout.toString().slice(-2000)}`);
  return r.stdout.toString();
}

const pskUri = (p: number, name: string) => `nbds://alice@127.0.0.1:${p}/${name}?tls-psk-file=${path.join(pskDir, 'keys.psk')}`;
const x509Uri = (name: string, dir = clientDir) => `nbds://127.0.0.1:${port}/${name}?tls-certificates=${dir}`;
const qemuPsk = () => ['--object', `tls-creds-psk,id=tls0,endpoint=client,dir=${pskDir},username=alice`];
const qemuX509 = () => ['--object', `tls-creds-x509,id=tls0,endpoint=client,dir=${clientDir}`];
const qemuImage = (p: number, name: string) => `driver=nbd,host=127.0.0.1,port=${p},export=${name},tls-creds=tls0`;

test('qemu-io over TLS with a pre-shared key writes a pattern and reads it back', async (t) => {
  if (missing) return t.skip(`${missing} is not installed`);
  const out = await sh('qemu-io', [...qemuPsk(), '--image-opts',
    '-c', 'write -P 0x5a 0 1M', '-c', 'write -P 0xa5 8M 64k', '-c', 'flush',
    '-c', 'read -P 0x5a 0 1M', '-c', 'read -P 0xa5 8M 64k', '-c', 'read -P 0 16M 4k', qemuImage(port, 'psk')]);
  assert.doesNotMatch(out, /Pattern verification failed|failed/);
  const info = await sh('qemu-img', ['info', ...qemuPsk(), '--image-opts', qemuImage(port, 'psk')]);
  assert.match(info, /virtual size: 64 MiB/);
});

test('qemu-img over TLS with X.509 certificates writes and compares an image', async (t) => {
  if (missing) return t.skip(`${missing} is not installed`);
  const src = path.join(work, 'x509.raw');
  await fs.writeFile(src, crypto.randomBytes(8 * MB));
  await sh('qemu-img', ['convert', '-n', ...qemuX509(), '-f', 'raw', '--target-image-opts', src, qemuImage(port, 'x509')]);
  const readBack = path.join(work, 'x509.back');
  await sh('qemu-img', ['convert', ...qemuX509(), '--image-opts', qemuImage(port, 'x509'), '-O', 'raw', readBack]);
  const head = (await fs.readFile(readBack)).subarray(0, 8 * MB);
  assert.ok(head.equals(await fs.readFile(src)), 'the first 8 MiB read back over TLS equal what was written');
});

async function sha256(file: string): Promise<string> {
  return crypto.createHash('sha256').update(await fs.readFile(file)).digest('hex');
}

test('nbdcopy round-trips identical data over nbds:// with a PSK and with X.509, and nbdinfo sees the export', async (t) => {
  if (missing) return t.skip(`${missing} is not installed`);
  const src = path.join(work, 'copy.raw');
  await fs.writeFile(src, crypto.randomBytes(64 * MB));
  await sh('nbdcopy', [src, pskUri(port, 'copy')]);
  const viaPsk = path.join(work, 'copy.psk');
  await sh('nbdcopy', [pskUri(port, 'copy'), viaPsk]);
  const viaX509 = path.join(work, 'copy.x509');
  await sh('nbdcopy', [x509Uri('copy'), viaX509]);
  const want = await sha256(src);
  assert.equal(await sha256(viaPsk), want);
  assert.equal(await sha256(viaX509), want);
  const info = JSON.parse(await sh('nbdinfo', ['--json', x509Uri('copy')])) as { exports: Array<{ 'export-size': number }> };
  assert.equal(info.exports[0]['export-size'], 64 * MB);
  assert.match(await sh('nbdinfo', ['--size', pskUri(port, 'copy')]), /^67108864/);
});

test('a plaintext client is refused when TLS is required', async (t) => {
  if (missing) return t.skip(`${missing} is not installed`);
  const r = await run('nbdinfo', [`nbd://127.0.0.1:${port}/copy`], undefined, 30000);
  assert.notEqual(r.code, 0, 'nbdinfo without TLS must fail');
  const q = await run('qemu-img', ['info', `nbd://127.0.0.1:${port}/copy`], undefined, 30000);
  assert.notEqual(q.code, 0, 'qemu-img without TLS must fail');
});

test('a client certificate from another CA, a wrong PSK and no client certificate are all refused', async (t) => {
  if (missing) return t.skip(`${missing} is not installed`);
  const rogue = await run('nbdinfo', ['--size', x509Uri('copy', rogueDir)], undefined, 30000);
  assert.notEqual(rogue.code, 0, 'a certificate from another CA must be refused');
  const wrongDir = path.join(work, 'wrong-psk');
  await fs.mkdir(wrongDir, { recursive: true });
  await fs.writeFile(path.join(wrongDir, 'keys.psk'), `alice:${crypto.randomBytes(32).toString('hex')}\n`, { mode: 0o600 });
  const wrong = await run('nbdinfo', ['--size', `nbds://alice@127.0.0.1:${port}/copy?tls-psk-file=${path.join(wrongDir, 'keys.psk')}`], undefined, 30000);
  assert.notEqual(wrong.code, 0, 'a wrong key must be refused');
  const caOnly = path.join(work, 'ca-only');
  await fs.mkdir(caOnly, { recursive: true });
  await fs.copyFile(path.join(pki, 'ca-cert.pem'), path.join(caOnly, 'ca-cert.pem'));
  const none = await run('nbdinfo', ['--size', x509Uri('copy', caOnly)], undefined, 30000);
  assert.notEqual(none.code, 0, 'no client certificate must be refused when --nbd-tls-ca is set');
  // the sheep is still serving
  assert.match(await sh('nbdinfo', ['--size', x509Uri('copy')]), /^67108864/);
});

test('with TLS offered but not required both plaintext and TLS clients are served', async (t) => {
  if (missing) return t.skip(`${missing} is not installed`);
  const out = await sh('qemu-io', ['-f', 'raw', '-c', 'write -P 0x42 0 64k', `nbd://127.0.0.1:${optPort}/either`]);
  assert.doesNotMatch(out, /failed/);
  const back = await sh('qemu-io', [...qemuPsk(), '--image-opts', '-c', 'read -P 0x42 0 64k', qemuImage(optPort, 'either')]);
  assert.doesNotMatch(back, /Pattern verification failed|failed/);
  assert.match(await sh('nbdinfo', ['--size', pskUri(optPort, 'either')]), /^67108864/);
});

test('bad TLS settings stop the sheep at start-up with a clear message', async (t) => {
  if (missing) return t.skip(`${missing} is not installed`);
  const bad = path.join(work, 'bad.psk');
  await fs.writeFile(bad, 'alice:not-hex\n');
  const cases: Array<[string[], RegExp]> = [
    [['--nbd-tls-psk', bad], /line 1 is not "username:hexkey"/],
    [['--nbd-tls-psk', path.join(work, 'absent.psk')], /cannot be read/],
    [['--nbd-tls', 'require'], /needs --nbd-tls-cert and --nbd-tls-key, or --nbd-tls-psk/],
    [['--nbd-tls-cert', path.join(pki, 'server-cert.pem')], /go together/],
  ];
  for (const [args, msg] of cases) {
    const dir = await tempDir('nbd-tls-bad-');
    const r = await run(process.execPath, [SHEEP, '-f', '-l', 'warn', '-p', String(await freePort()), '-b', '127.0.0.1',
      '-c', `local:${dir}.cluster`, '--nbd', `127.0.0.1:${await freePort()}`, ...args, dir], undefined, 30000);
    assert.equal(r.code, 1, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, msg);
    await fs.rm(dir, { recursive: true, force: true });
    await stopSequencer(`${dir}.cluster`);
  }
});
