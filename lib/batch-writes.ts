// Coalesces what a socket is asked to write during one turn of the event loop into one writev.
// A pipelining peer (QEMU's driver, the gateway's links) gets many replies or requests ready in the
// same turn (completions of the file-I/O pool arrive in batches): one system call instead of one each.

import type net from 'node:net';

const corked = new WeakSet<net.Socket>();

/** Holds `sock`'s writes until the end of this event-loop turn (setImmediate), then sends them at once. */
export function batchWrites(sock: net.Socket): void {
  if (process.env.SHEEP_NO_BATCH) return;
  if (corked.has(sock)) return;
  corked.add(sock);
  sock.cork();
  setImmediate(() => {
    corked.delete(sock);
    sock.uncork();
  });
}
