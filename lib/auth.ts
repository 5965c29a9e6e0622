// The cluster key and the mutual challenge-response that proves it on a connection (opcode AUTH).
//
//   1. client -> AUTH, payload: step 1, role, client nonce (32 bytes)
//      server -> SUCCESS, payload: server nonce (32) + server proof
//   2. client checks the server proof (so it never talks to an impostor), then
//      client -> AUTH, payload: step 2, role, client proof
//      server -> SUCCESS: the connection now has that role; ACCESS_DENIED otherwise
// proof = HMAC-SHA256(key, label | role | client nonce | server nonce), label "server" or "client", so
// neither side can replay the other's proof, and a proof for one role is no proof for another.

import crypto from 'node:crypto';
import fs from 'node:fs';
import { Res, SdError } from './proto.js';

export const AUTH_NONCE_LEN = 32;
export const AUTH_PROOF_LEN = 32;
export const CLUSTER_KEY_LEN = 32;
/** Where collie and the init script look for the key when no option names one. */
export const DEFAULT_KEY_FILE = '/etc/sheepdog/cluster.key';

/** What an authenticated connection may send (client: what QEMU's driver sends, no authentication). */
export type Role = 'client' | 'admin' | 'peer';
const ROLE_CODE: Record<Role, number> = { client: 0, admin: 1, peer: 2 };
const CODE_ROLE = new Map<number, Role>(Object.entries(ROLE_CODE).map(([r, c]) => [c, r as Role]));

export function roleCode(r: Role): number {
  return ROLE_CODE[r];
}

export function roleOf(code: number): Role | undefined {
  return CODE_ROLE.get(code);
}

/** A new random key in the key file's format: 64 hex digits and a newline. */
export function newKeyText(): string {
  return crypto.randomBytes(CLUSTER_KEY_LEN).toString('hex') + '\n';
}

/**
 * Reads a key file. Refused, as ssh refuses a private key, when group or others may read or write it,
 * when it is not a regular file, or when it does not hold exactly 64 hex digits.
 */
export function readKeyFile(file: string): Buffer {
  let st: fs.Stats;
  try {
    st = fs.statSync(file);
  } catch (e) {
    throw new Error(`cannot read the cluster key ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  if (!st.isFile()) throw new Error(`the cluster key ${file} is not a regular file`);
  if (st.mode & 0o077) {
    throw new Error(`the cluster key ${file} is accessible by others (mode ${(st.mode & 0o777).toString(8).padStart(4, '0')}): chmod 600 ${file}`);
  }
  const text = fs.readFileSync(file, 'utf8').trim();
  if (!/^[0-9a-fA-F]{64}$/.test(text)) throw new Error(`the cluster key ${file} is malformed (expected 64 hex digits, as collie cluster keygen writes)`);
  return Buffer.from(text, 'hex');
}

export function newNonce(): Buffer {
  return crypto.randomBytes(AUTH_NONCE_LEN);
}

export function authProof(key: Buffer, side: 'server' | 'client', role: Role, cnonce: Buffer, snonce: Buffer): Buffer {
  return crypto.createHmac('sha256', key).update(`sheepdog-auth-${side}\0${role}\0`).update(cnonce).update(snonce).digest();
}

export function proofMatches(expected: Buffer, got: Buffer): boolean {
  return got.length === expected.length && crypto.timingSafeEqual(expected, got);
}

/** The AUTH request payload: [step u8][role u8][nonce (step 1) or proof (step 2)]. */
export interface AuthStep {
  step: 1 | 2;
  role: Role;
  bytes: Buffer;
}

export function encodeAuthStep(s: AuthStep): Buffer {
  return Buffer.concat([Buffer.from([s.step, roleCode(s.role)]), s.bytes]);
}

export function decodeAuthStep(b: Buffer): AuthStep {
  const step = b[0];
  const role = roleOf(b[1]);
  if (b.length !== 2 + AUTH_NONCE_LEN || (step !== 1 && step !== 2) || !role || role === 'client') {
    throw new SdError(Res.INVALID_PARMS, 'malformed AUTH request');
  }
  return { step, role, bytes: b.subarray(2) };
}

/** An identifier of a key that reveals nothing about it (logged, compared between sheep). */
export function keyId(key: Buffer): string {
  return crypto.createHmac('sha256', key).update('sheepdog-key-id').digest('hex').slice(0, 16);
}

/**
 * Peer TLS (--peer-tls): sheep-to-sheep connections run TLS 1.3 with a pre-shared key derived from
 * the cluster key; the handshake itself proves the key on both sides, and the identity names the
 * role the connection gets.
 */
export const TLS_IDENTITY: Record<Exclude<Role, 'client'>, string> = { admin: 'sheepdog-admin', peer: 'sheepdog-peer' };
export const TLS_CIPHERS = 'TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256';

export function tlsPsk(key: Buffer): Buffer {
  return Buffer.from(crypto.hkdfSync('sha256', key, Buffer.alloc(0), 'sheepdog-peer-tls', 32));
}

export function roleOfTlsIdentity(identity: string): Role | undefined {
  if (identity === TLS_IDENTITY.admin) return 'admin';
  if (identity === TLS_IDENTITY.peer) return 'peer';
  return undefined;
}
