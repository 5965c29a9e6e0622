// TypeScript face of the corosync CPG addon (native/cpg.cc, built by native/build.mjs).
//
// A CpgGroup is one corosync CPG handle bound to one group name. After join(), every message
// that any member sends with mcast() is delivered ('deliver') to every member, in the same total
// order everywhere (CPG_TYPE_AGREED), and membership changes arrive as 'confchg' events ordered
// with respect to those messages. Events are emitted from the Node event loop (the handle's fd is
// polled by libuv), never from another thread.
//
// Needs a running corosync; the Debian packages are corosync (daemon) and libcpg-dev (to build).

import { EventEmitter } from 'node:events';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** A CPG group member: a process (pid) on a corosync node (nodeid). */
export interface CpgMember {
  nodeid: number;
  pid: number;
}

/** Why a member joined or left (corosync's cpg_reason_t). */
export type CpgReason = 'undefined' | 'join' | 'leave' | 'nodedown' | 'nodeup' | 'procdown';

/** A member in the `left` / `joined` lists of a 'confchg' event. */
export interface CpgChange extends CpgMember {
  reason: CpgReason;
}

interface NativeChange {
  nodeid: number;
  pid: number;
  reason: number;
}

interface NativeCpgHandle {
  join(): void;
  mcast(msg: Buffer): void;
  localGet(): CpgMember;
  leave(): void;
  finalize(): void;
}

interface NativeModule {
  CpgHandle: new (
    groupName: string,
    onDeliver: (nodeid: number, pid: number, msg: Buffer) => void,
    onConfchg: (members: CpgMember[], left: NativeChange[], joined: NativeChange[]) => void,
    onError: (reason: string) => void,
  ) => NativeCpgHandle;
}

const here = path.dirname(fileURLToPath(import.meta.url));
// Compiled, this file is dist/native/cpg.js while the addon stays in native/build/Release/;
// run from source (native/cpg.ts) it sits next to build/.
const addonCandidates = [
  path.join(here, '../../native/build/Release/cpg.node'),
  path.join(here, 'build/Release/cpg.node'),
];
const HEADER = '/usr/include/corosync/cpg.h';

let loaded: { ok: true; mod: NativeModule } | { ok: false; reason: string } | undefined;

function load(): { ok: true; mod: NativeModule } | { ok: false; reason: string } {
  if (loaded) return loaded;
  const addon = addonCandidates.find((p) => fs.existsSync(p));
  if (addon === undefined) {
    const expected = addonCandidates[0];
    let reason: string;
    const recorded = path.join(path.dirname(path.dirname(expected)), 'cpg-unavailable.txt');
    if (!fs.existsSync(HEADER)) {
      reason =
        "corosync driver unavailable: install Debian's libcpg-dev (apt-get install libcpg-dev) " +
        'and run npm rebuild';
    } else if (fs.existsSync(recorded)) {
      reason = fs.readFileSync(recorded, 'utf8').trim();
    } else {
      reason = `corosync driver unavailable: the addon was not built (${expected} is missing); run npm rebuild`;
    }
    loaded = { ok: false, reason };
    return loaded;
  }
  try {
    const require = createRequire(import.meta.url);
    loaded = { ok: true, mod: require(addon) as NativeModule };
  } catch (err) {
    const msg = err instanceof Error ? err.message : String(err);
    const hint = /libcpg/.test(msg)
      ? "; install Debian's libcpg4 (apt-get install libcpg4) or rebuild with npm rebuild"
      : '; rebuild it with npm rebuild';
    loaded = { ok: false, reason: `corosync driver unavailable: cannot load ${addon}: ${msg}${hint}` };
  }
  return loaded;
}

/**
 * Whether the CPG addon is built and loadable. Does not check that corosync is running: that
 * shows as an error from `new CpgGroup()` ("cpg_initialize failed: CS_ERR_LIBRARY (is corosync
 * running?)").
 */
export function cpgAvailable(): { ok: true } | { ok: false; reason: string } {
  const l = load();
  return l.ok ? { ok: true } : { ok: false, reason: l.reason };
}

const REASONS: readonly CpgReason[] = ['undefined', 'join', 'leave', 'nodedown', 'nodeup', 'procdown'];

function toChange(c: NativeChange): CpgChange {
  return { nodeid: c.nodeid, pid: c.pid, reason: REASONS[c.reason] ?? 'undefined' };
}

/** Listener signatures of CpgGroup's events. */
export interface CpgGroupEvents {
  /** A message multicast by `from`, in the group's total order (own messages included). */
  deliver: (from: CpgMember, msg: Buffer) => void;
  /** The group's membership changed; `members` is the full new membership. */
  confchg: (members: CpgMember[], left: CpgChange[], joined: CpgChange[]) => void;
  /**
   * The connection to corosync was lost (corosync stopped or crashed). The group is unusable
   * afterwards; close() it. Like any 'error' event it throws if nobody listens.
   */
  error: (err: Error) => void;
}

export class CpgGroup extends EventEmitter {
  readonly groupName: string;
  #handle: NativeCpgHandle | null;

  constructor(groupName: string) {
    super();
    this.groupName = groupName;
    const l = load();
    if (!l.ok) throw new Error(l.reason);
    this.#handle = new l.mod.CpgHandle(
      groupName,
      (nodeid, pid, msg) => {
        this.emit('deliver', { nodeid, pid }, msg);
      },
      (members, left, joined) => {
        this.emit('confchg', members, left.map(toChange), joined.map(toChange));
      },
      (reason) => {
        this.emit('error', new Error(`cpg group "${groupName}": connection to corosync lost: ${reason}`));
      },
    );
  }

  #live(op: string): NativeCpgHandle {
    if (this.#handle === null) throw new Error(`cpg group "${this.groupName}": ${op}() after close()`);
    return this.#handle;
  }

  /**
   * Joins the group; a 'confchg' with this process in `joined` follows. corosync names a member
   * by (nodeid, pid), so a process can be a member of a given group through one handle only
   * (a second join throws, with code CS_ERR_EXIST).
   */
  join(): void {
    this.#live('join').join();
  }

  /** Multicasts msg to every member (this one included), totally ordered. Requires join(). */
  mcast(msg: Buffer): void {
    this.#live('mcast').mcast(msg);
  }

  /** This process as the group sees it: the local corosync nodeid and our pid. */
  local(): CpgMember {
    return this.#live('local').localGet();
  }

  /**
   * Leaves the group. A 'confchg' listing this process in `left` follows if the group stays
   * open. corosync does not let a handle join twice, and a handle that left still blocks this
   * process from joining the same group through another handle until it is closed: to rejoin,
   * close() and create a new CpgGroup.
   */
  leave(): void {
    this.#live('leave').leave();
  }

  /** Leaves (implicitly) and releases the handle. Safe to call more than once. */
  close(): void {
    const h = this.#handle;
    if (h === null) return;
    this.#handle = null;
    h.finalize();
  }

  override on<K extends keyof CpgGroupEvents>(event: K, listener: CpgGroupEvents[K]): this;
  override on(event: string | symbol, listener: (...args: never[]) => void): this {
    return super.on(event, listener as (...args: unknown[]) => void);
  }

  override once<K extends keyof CpgGroupEvents>(event: K, listener: CpgGroupEvents[K]): this;
  override once(event: string | symbol, listener: (...args: never[]) => void): this {
    return super.once(event, listener as (...args: unknown[]) => void);
  }

  override off<K extends keyof CpgGroupEvents>(event: K, listener: CpgGroupEvents[K]): this;
  override off(event: string | symbol, listener: (...args: never[]) => void): this {
    return super.off(event, listener as (...args: unknown[]) => void);
  }

  override emit<K extends keyof CpgGroupEvents>(event: K, ...args: Parameters<CpgGroupEvents[K]>): boolean;
  override emit(event: string | symbol, ...args: unknown[]): boolean {
    return super.emit(event, ...args);
  }
}
