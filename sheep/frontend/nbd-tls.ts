// TLS for the NBD export (NBD_OPT_STARTTLS, NetworkBlockDevice/nbd doc/proto.md "TLS support"):
// credentials read at start-up, and the in-place upgrade of a plain socket after the STARTTLS ACK.

import fs from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';

export type NbdTlsMode = 'off' | 'on' | 'require';

export interface NbdTls {
  /** 'on': clients may upgrade; 'require': nothing but STARTTLS/ABORT before the upgrade */
  mode: 'on' | 'require';
  context: tls.SecureContext;
  /** username -> key, or null without --nbd-tls-psk */
  psk: Map<string, Buffer> | null;
  /** client certificates must chain to --nbd-tls-ca */
  verifyClient: boolean;
}

export interface NbdTlsOptions {
  mode?: string;
  cert?: string;
  key?: string;
  ca?: string;
  psk?: string;
}

/** TLS 1.3 suites usable with a PSK (GnuTLS clients only do SHA-256 ones), AES-GCM first for AES-NI. */
const TLS13_SUITES = 'TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256';
/** TLS 1.2 PSK suites; GnuTLS offers DHE-PSK but no ECDHE-PSK with AES-GCM. */
const PSK12_SUITES = 'DHE-PSK-AES128-GCM-SHA256:DHE-PSK-AES256-GCM-SHA384:ECDHE-PSK-CHACHA20-POLY1305:PSK-AES128-GCM-SHA256:PSK-AES256-GCM-SHA384';
const CERT12_SUITES = 'ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305';

/** How long a client may take for the TLS handshake after the STARTTLS ACK. */
export const TLS_HANDSHAKE_TIMEOUT_MS = 30_000;

function readCredential(file: string, what: string): Buffer {
  try {
    return fs.readFileSync(file);
  } catch (e) {
    throw new Error(`${what} ${file} cannot be read: ${(e as Error).message}`);
  }
}

/** "username:hexkey" lines, the format of psktool, qemu's keys.psk and nbdkit --tls-psk. */
export function parsePskFile(file: string): Map<string, Buffer> {
  const text = readCredential(file, '--nbd-tls-psk').toString('utf8');
  const keys = new Map<string, Buffer>();
  for (const [i, raw] of text.split('\n').entries()) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    const colon = line.indexOf(':');
    const hex = line.slice(colon + 1);
    if (colon <= 0 || !/^(?:[0-9a-fA-F]{2})+$/.test(hex)) {
      throw new Error(`--nbd-tls-psk ${file} line ${i + 1} is not "username:hexkey"`);
    }
    keys.set(line.slice(0, colon), Buffer.from(hex, 'hex'));
  }
  if (keys.size === 0) throw new Error(`--nbd-tls-psk ${file} holds no keys`);
  return keys;
}

/** Builds the TLS settings from the command line; null when TLS is off. Throws a sentence on bad input. */
export function loadNbdTls(o: NbdTlsOptions): NbdTls | null {
  const hasCreds = Boolean(o.cert || o.psk);
  const mode = o.mode ?? (hasCreds ? 'on' : 'off');
  if (mode !== 'off' && mode !== 'on' && mode !== 'require') throw new Error(`--nbd-tls must be off, on or require, not '${mode}'`);
  if (mode === 'off') {
    if (hasCreds || o.key || o.ca) throw new Error('--nbd-tls off cannot be combined with --nbd-tls-cert/-key/-ca/-psk');
    return null;
  }
  if (!hasCreds) throw new Error(`--nbd-tls ${mode} needs --nbd-tls-cert and --nbd-tls-key, or --nbd-tls-psk`);
  if (Boolean(o.cert) !== Boolean(o.key)) throw new Error('--nbd-tls-cert and --nbd-tls-key go together');
  if (o.ca && !o.cert) throw new Error('--nbd-tls-ca needs a server certificate (--nbd-tls-cert/--nbd-tls-key)');

  const psk = o.psk ? parsePskFile(o.psk) : null;
  const opts: tls.SecureContextOptions = {
    minVersion: 'TLSv1.2',
    // a bare SecureContext has none, and OpenSSL then fails TLS 1.3 PSK handshakes with client verification
    sessionIdContext: 'sheep-nbd',
    // our order, not the client's: GnuTLS lists CHACHA20 first, which is slower on AES-NI machines
    honorCipherOrder: true,
  };
  if (o.cert && o.key) {
    opts.cert = readCredential(o.cert, '--nbd-tls-cert');
    opts.key = readCredential(o.key, '--nbd-tls-key');
    if (o.ca) opts.ca = readCredential(o.ca, '--nbd-tls-ca');
  }
  if (psk) {
    // tls.DEFAULT_CIPHERS ends in !PSK, so the list is spelt out; DHE-PSK needs DH parameters
    opts.ciphers = `${TLS13_SUITES}:${PSK12_SUITES}${o.cert ? `:${CERT12_SUITES}` : ''}`;
    opts.dhparam = 'auto';
  }
  let context: tls.SecureContext;
  try {
    context = tls.createSecureContext(opts);
  } catch (e) {
    throw new Error(`the NBD TLS credentials are unusable: ${(e as Error).message}`);
  }
  return { mode, context, psk, verifyClient: Boolean(o.ca) };
}

export interface TlsPeer {
  sock: tls.TLSSocket;
  /** PSK username, or the client certificate's CN, or null (server-authenticated only) */
  identity: string | null;
  protocol: string | null;
  cipher: string;
}

/** Upgrades the plain socket after the STARTTLS ACK; rejects on a failed, refused or slow handshake. */
export function upgradeToTls(raw: net.Socket, cfg: NbdTls): Promise<TlsPeer> {
  return new Promise((resolve, reject) => {
    let pskIdentity: string | null = null;
    let unknownIdentity: string | null = null;
    const sock = new tls.TLSSocket(raw, {
      isServer: true,
      secureContext: cfg.context,
      requestCert: cfg.verifyClient,
      rejectUnauthorized: cfg.verifyClient,
      ...(cfg.psk ? {
        pskCallback: (_s: tls.TLSSocket, identity: string): Buffer | null => {
          const key = cfg.psk!.get(identity) ?? null;
          if (key) pskIdentity = identity;
          else unknownIdentity = identity;
          return key; // null aborts the handshake
        },
      } : {}),
    });
    const timer = setTimeout(() => fail(new Error('TLS handshake timed out')), TLS_HANDSHAKE_TIMEOUT_MS);
    const fail = (e: Error): void => {
      clearTimeout(timer);
      sock.destroy();
      raw.destroy();
      // OpenSSL's message carries a file:line trailer; its reason alone reads better in the log
      const reason = (e as Error & { reason?: string }).reason;
      reject(unknownIdentity !== null ? new Error(`unknown PSK identity '${unknownIdentity}'`) : reason ? new Error(reason) : e);
    };
    sock.once('error', fail);
    sock.once('secure', () => {
      clearTimeout(timer);
      sock.off('error', fail);
      let identity = pskIdentity;
      if (cfg.verifyClient && !pskIdentity) {
        // a server-side TLSSocket outside tls.Server accepts any chain: check OpenSSL's verdict here
        const ssl = (sock as unknown as { ssl: { verifyError(): Error | string | null } | null }).ssl;
        const verdict = ssl ? ssl.verifyError() : new Error('no TLS state');
        if (verdict) {
          const code = typeof verdict === 'string' ? verdict : (verdict as NodeJS.ErrnoException).code ?? verdict.message;
          fail(new Error(`client certificate refused: ${code}`));
          return;
        }
        const cn = (sock.getPeerCertificate().subject as tls.Certificate | undefined)?.CN;
        identity = (Array.isArray(cn) ? cn.join(',') : cn) ?? null;
      }
      resolve({ sock, identity, protocol: sock.getProtocol(), cipher: sock.getCipher().name });
    });
  });
}
