// What a new VDI may be called, checked the same way by collie (before asking) and by every sheep
// (NEW_VDI from QEMU or any client): names travel in a 256-byte NUL-terminated field, are printed in
// one-line listings, and NBD reads NAME@TAG / NAME@SNAPID as a snapshot.

import { SD_MAX_VDI_LEN } from './proto.js';

/** Longest name in bytes (UTF-8): the field keeps its terminating NUL. */
export const MAX_VDI_NAME_BYTES = SD_MAX_VDI_LEN - 1;

/** Why `name` cannot name a new VDI, or null when it can. */
export function vdiNameProblem(name: string): string | null {
  const bytes = Buffer.byteLength(name, 'utf8');
  if (bytes === 0) return 'a VDI name cannot be empty';
  if (bytes > MAX_VDI_NAME_BYTES) return `a VDI name is at most ${MAX_VDI_NAME_BYTES} bytes (this one is ${bytes})`;
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f-\u009f]/.test(name)) return 'a VDI name cannot hold control characters (tab, newline, ...)';
  if (name.includes('@')) return "a VDI name cannot hold '@' (NBD reads NAME@TAG as a snapshot)";
  return null;
}
