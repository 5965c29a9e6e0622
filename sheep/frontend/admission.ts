// Who may connect, how many, and how many request bytes the daemon holds at once: the limits every
// front end (port 7000, the Unix socket, NBD) shares, so no client can exhaust descriptors or memory.

import net from 'node:net';
import type { Logger } from '../util/log.js';

/** Parses "10.0.0.0/8,::1/128,127.0.0.2" into a BlockList; throws on malformed entries. */
export function parseCidrList(items: string[]): net.BlockList | null {
  const entries = items.flatMap((s) => s.split(',')).map((s) => s.trim()).filter(Boolean);
  if (!entries.length) return null;
  const bl = new net.BlockList();
  for (const e of entries) {
    const [addr, bits] = e.split('/');
    const type = net.isIPv6(addr) ? 'ipv6' : net.isIPv4(addr) ? 'ipv4' : null;
    if (!type) throw new Error(`'${e}' is not an IP address or CIDR network`);
    const max = type === 'ipv4' ? 32 : 128;
    const prefix = bits === undefined ? max : Number(bits);
    if (!Number.isInteger(prefix) || prefix < 0 || prefix > max) throw new Error(`'${e}' has a bad prefix length`);
    bl.addSubnet(addr, prefix, type);
  }
  return bl;
}

export function listed(list: net.BlockList, address: string): boolean {
  const v4 = address.startsWith('::ffff:') ? address.slice(7) : address;
  return net.isIPv4(v4) ? list.check(v4, 'ipv4') : list.check(address, 'ipv6');
}

/** --*-allow / --*-deny: deny is checked first; with an allow list only its networks get in. */
export class AddressFilter {
  constructor(private readonly allow: net.BlockList | null, private readonly deny: net.BlockList | null) {}

  /** null when admitted, else the reason. Unix-socket peers (no address) are admitted. */
  refuses(address: string | undefined): string | null {
    if (!address) return null;
    if (this.deny && listed(this.deny, address)) return 'address denied';
    if (this.allow && !listed(this.allow, address)) return 'address not allowed';
    return null;
  }
}

/**
 * Open connections across every front end. Above `max - reserve` a connection gets in only to
 * authenticate (collie, other sheep): a flood of clients cannot lock the cluster's own tools out.
 */
export class ConnectionBudget {
  private open = 0;
  constructor(readonly max: number, readonly reserve: number) {}

  /** 'ok', 'reserve' (must authenticate soon) or 'full' (close at once). */
  take(): 'ok' | 'reserve' | 'full' {
    if (this.open >= this.max) return 'full';
    this.open++;
    return this.open > this.max - this.reserve ? 'reserve' : 'ok';
  }

  release(): void {
    this.open--;
  }

  get count(): number {
    return this.open;
  }
}

/**
 * Request bytes held by the daemon (payloads being received or processed, replies being built):
 * a request waits, with its connection paused, until the budget has room. Authenticated
 * connections may use the whole budget, unauthenticated ones all but `reserve`.
 */
export class ByteBudget {
  private used = 0;
  private readonly waiters: Array<{ n: number; privileged: boolean; go: () => void }> = [];
  constructor(readonly limit: number, readonly reserve: number) {}

  private fits(n: number, privileged: boolean): boolean {
    const cap = privileged ? this.limit : this.limit - this.reserve;
    // a request larger than the cap still runs when nothing else holds bytes, or it would never run
    return this.used + n <= cap || this.used === 0;
  }

  /**
   * Takes `n` bytes: at once (returns null) or once room frees (returns a promise). Unauthenticated
   * requests queue in order; authenticated ones (collie, peers) go ahead of them whenever they fit, so
   * a flood of clients cannot hold up the cluster's own traffic.
   */
  acquire(n: number, privileged: boolean): Promise<void> | null {
    const queued = privileged ? this.waiters.some((w) => w.privileged) : this.waiters.length > 0;
    if (!queued && this.fits(n, privileged)) {
      this.used += n;
      return null;
    }
    return new Promise((go) => this.waiters.push({ n, privileged, go }));
  }

  release(n: number): void {
    this.used -= n;
    for (;;) {
      // the oldest authenticated waiter that fits, else the oldest waiter if it fits
      let i = this.waiters.findIndex((w) => w.privileged);
      if (i < 0 || !this.fits(this.waiters[i].n, true)) i = this.waiters.length && this.fits(this.waiters[0].n, this.waiters[0].privileged) ? 0 : -1;
      if (i < 0) break;
      const w = this.waiters.splice(i, 1)[0];
      this.used += w.n;
      w.go();
    }
  }

  get inUse(): number {
    return this.used;
  }
}

/**
 * Logs refused connections and requests with the peer's address, at most `perSecond` lines a
 * second: a flood is summarized ("N more refusals") instead of filling the disk.
 */
export class RefusalLog {
  private windowStart = 0;
  private inWindow = 0;
  private suppressed = 0;
  constructor(private readonly log: Logger, private readonly perSecond = 20) {}

  refuse(peer: string, why: string, extra: Record<string, unknown> = {}): void {
    const now = Date.now();
    if (now - this.windowStart >= 1000) {
      if (this.suppressed) this.log.warn({ refusals: this.suppressed }, 'more refusals in the last second (not logged one by one)');
      this.windowStart = now;
      this.inWindow = 0;
      this.suppressed = 0;
    }
    if (++this.inWindow > this.perSecond) {
      this.suppressed++;
      return;
    }
    this.log.warn({ peer, ...extra }, `refused: ${why}`);
  }
}
