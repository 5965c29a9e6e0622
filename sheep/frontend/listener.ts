// The client/peer listener: frames requests off TCP and Unix sockets, dispatches them through the
// op table, and answers each as soon as it completes (out of order, matched by id).

import net from 'node:net';
import tls from 'node:tls';
import { TLS_CIPHERS, roleOfTlsIdentity, tlsPsk, type Role } from '../../lib/auth.js';
import { SocketServer, type Admission, type Admitted } from './net-listen.js';
import { ByteBudget } from './admission.js';
import { Flag, Res, SdError, SD_PROTO_VER, decodePrefix, encodeRsp, opName, resultName } from '../../lib/proto.js';
import { FrameReader } from '../../lib/frame.js';
import { metrics, type Frontend } from '../util/metrics.js';
import { batchWrites } from '../../lib/batch-writes.js';
import { OPS, mayUse, type Access, type Conn, type OpReply, type OpRequest } from './ops.js';
import { MAX_DATA_LENGTH } from '../vdi/object-io.js';
import type { System } from '../cluster/system.js';
import type { Logger } from '../util/log.js';

/** Requests one connection may have in flight before we stop reading from it. */
const MAX_INFLIGHT_PER_CONN = 64;
/** Unsent reply bytes on one connection before we stop reading from it. */
const MAX_UNSENT_BYTES = 64 * 1024 * 1024;

/** A connection that sends nothing for this long is closed (it holds a descriptor for nothing). */
export const IDLE_TIMEOUT_MS = 120_000;
const TLS_HANDSHAKE = 0x16;
const TLS_HANDSHAKE_MS = 10_000;
/** Request and reply bytes one connection may hold: a client that stops reading holds no more. */
const PER_CONNECTION_BYTES = 64 * 1024 * 1024;
/** A connection let in on the reserve must authenticate within this time. */
const RESERVE_AUTH_MS = 5_000;
/** A payload that stops arriving half way holds budget: the connection is closed after this. */
const PAYLOAD_TIMEOUT_MS = 60_000;

export interface ListenerOptions {
  access: Access;
  admission: Admission;
  /** request bytes held at once, shared with the NBD export */
  budget: ByteBudget;
}

export class Listener extends SocketServer {
  private readonly access: Access;
  private readonly budget: ByteBudget;
  /** the TLS pre-shared key derived from the cluster key (peer TLS) */
  private readonly tlsKey: Buffer | null;

  constructor(private readonly sys: System, private readonly log: Logger, o: ListenerOptions) {
    super(o.admission, 'sheepdog');
    this.access = o.access;
    this.budget = o.budget;
    this.tlsKey = o.access.key ? tlsPsk(o.access.key) : null;
  }

  async listenTcp(host: string | undefined, port: number): Promise<number> {
    const addr = await this.bindTcp(host, port);
    this.log.info({ host: addr.address, port: addr.port }, 'listening');
    return addr.port;
  }

  async listenUnix(path: string): Promise<void> {
    await this.bindUnix(path);
    this.log.info({ path }, 'listening on unix socket');
  }

  protected accept(raw: net.Socket, admitted: Admitted): void {
    const peer = raw.remoteAddress ? `${raw.remoteAddress.replace(/^::ffff:/, '')}:${raw.remotePort}` : 'unix';
    const key = this.access.key;
    if (!key) return this.serve(raw, raw, admitted, peer, 'admin');
    // with a key, a connection may open with a TLS handshake (peer TLS) instead of a request: a
    // request starts with proto_ver (0..2), a TLS record with 0x16
    const silent = () => { this.admission.refusals.refuse(peer, 'idle connection closed'); raw.destroy(); };
    raw.setTimeout(IDLE_TIMEOUT_MS, silent);
    raw.once('data', (first: Buffer) => {
      raw.off('timeout', silent);
      raw.setTimeout(0);
      raw.pause();
      raw.unshift(first);
      if (first[0] !== TLS_HANDSHAKE) return this.serve(raw, raw, admitted, peer, 'client');
      let identity = '';
      // pskCallback is a TLSSocket option at run time; @types/node lists it for tls.Server only
      const opts: tls.TLSSocketOptions & { pskCallback: (s: tls.TLSSocket, id: string) => Buffer | null } = {
        isServer: true, minVersion: 'TLSv1.3', ciphers: TLS_CIPHERS,
        pskCallback: (_s, id) => { identity = id; return roleOfTlsIdentity(id) ? this.tlsKey : null; },
      };
      const t = new tls.TLSSocket(raw, opts);
      const timer = setTimeout(() => t.destroy(new Error('TLS handshake timed out')), TLS_HANDSHAKE_MS);
      t.once('error', (e) => {
        clearTimeout(timer);
        this.admission.refusals.refuse(peer, `TLS handshake failed: ${e.message}`, { identity });
        raw.destroy();
      });
      t.once('secure', () => {
        clearTimeout(timer);
        t.removeAllListeners('error');
        // the handshake proved the cluster key on both sides: the identity names the role
        const role = roleOfTlsIdentity(identity) ?? 'client';
        if (role !== 'client') this.promote(raw);
        this.log.debug({ peer, role, cipher: t.getCipher().name }, 'TLS connection authenticated');
        this.serve(t, raw, admitted, peer, role);
      });
    });
  }

  /** Serves requests on `sock` (the TLS socket over `raw`, or `raw` itself) for a connection of `role`. */
  private serve(sock: net.Socket, raw: net.Socket, admitted: Admitted, peer: string, role: Role): void {
    const conn: Conn = { peer, role, challenge: null, onAuthenticated: () => this.promote(raw) };
    let inflight = 0;
    let paused = false;
    /** requests whose bytes wait for room in the budget: nothing more is read while any does */
    let unfunded = 0;
    let payloadTimer: NodeJS.Timeout | null = null;
    const throttle = () => {
      const over = unfunded > 0 || inflight >= MAX_INFLIGHT_PER_CONN || sock.writableLength > MAX_UNSENT_BYTES;
      if (over && !paused) { paused = true; sock.pause(); }
      else if (!over && paused) { paused = false; sock.resume(); }
    };
    const drop = (why: string) => {
      this.admission.refusals.refuse(peer, why);
      sock.destroy();
    };
    // a connection that never sends a request is closed; one let in on the reserve must authenticate soon
    // (idle: nothing read or written for that long; a client that stopped reading its replies is idle too)
    sock.setTimeout(IDLE_TIMEOUT_MS, () => {
      if (inflight === 0) drop('idle connection closed');
      else if (sock.writableLength > 0) drop('client stopped reading its replies');
    });
    /** this connection's share of the budget: one slow reader cannot hold all of it */
    const own = new ByteBudget(PER_CONNECTION_BYTES, 0);
    const privileged = () => conn.role !== 'client';
    const reserveTimer = admitted === 'reserve'
      ? setTimeout(() => { if (conn.role === 'client') drop('connection on the reserve did not authenticate'); }, RESERVE_AUTH_MS)
      : null;
    /**
     * One request's bytes: waiting for the budget, held, or given back. Given back exactly once,
     * whichever comes first of the reply leaving, the connection dying, or a grant after it died.
     */
    interface Charge { bytes: number; state: 'waiting' | 'held' | 'released'; granted: Promise<void> }
    const give = (c: Charge) => {
      if (c.state === 'held') { own.release(c.bytes); this.budget.release(c.bytes); }
      c.state = 'released';
    };
    const charge = (bytes: number): Charge => {
      const c: Charge = { bytes, state: 'held', granted: Promise.resolve() };
      if (!bytes) return c;
      const mine = own.acquire(bytes, true);
      const wait = mine ? mine.then(() => this.budget.acquire(bytes, privileged()) ?? undefined) : this.budget.acquire(bytes, privileged());
      if (!wait) return c;
      c.state = 'waiting';
      unfunded++;
      c.granted = wait.then(() => {
        unfunded--;
        // the connection died meanwhile: the bytes go straight back
        if (c.state === 'released') { own.release(bytes); this.budget.release(bytes); } else c.state = 'held';
        throttle();
      });
      return c;
    };
    const startPayloadTimer = () => {
      payloadTimer = setTimeout(() => drop('payload did not arrive in time'), PAYLOAD_TIMEOUT_MS);
    };
    /** the request whose header arrived and whose payload has not yet */
    let current: Charge | null = null;
    const reader = new FrameReader((hdr) => {
      const p = decodePrefix(hdr);
      const payload = p.flags & Flag.CMD_WRITE ? p.dataLength : 0;
      if (payload > MAX_DATA_LENGTH) {
        // we cannot skip a payload this large safely: answer, then drop the connection
        this.send(sock, hdr, { result: Res.INVALID_PARMS });
        throw new SdError(Res.INVALID_PARMS, `payload of ${payload} bytes over the ${MAX_DATA_LENGTH} limit`);
      }
      // the bytes this request holds: its payload, or the reply it asks for (bounded by the op's checks)
      const c = charge(Math.min(Math.max(payload, p.dataLength), MAX_DATA_LENGTH));
      current = c;
      throttle();
      // the payload clock runs once the budget let the connection be read again
      if (payload) {
        if (c.state === 'held') startPayloadTimer();
        else void c.granted.then(() => { if (current === c && !sock.destroyed) startPayloadTimer(); });
      }
      return payload;
    }, (hdr, data) => {
      if (payloadTimer) { clearTimeout(payloadTimer); payloadTimer = null; }
      const c = current!;
      current = null;
      inflight++;
      throttle();
      const answer = () => this.dispatch(hdr, data, conn)
        .then((rep) => {
          inflight--;
          // the bytes stay charged until the reply left for the kernel: unread replies count too
          if (!sock.destroyed) this.send(sock, hdr, rep, () => { give(c); rep.afterSent?.(); });
          else { give(c); rep.afterSent?.(); }
          throttle();
        })
        .catch((e) => {
          give(c);
          this.log.error({ peer, err: e }, 'answering a request failed');
          sock.destroy();
        });
      // funded already (the usual case): no extra turn through the microtask queue
      if (c.state === 'held') void answer();
      else void c.granted.then(answer);
    });
    sock.on('data', (chunk: Buffer) => {
      try {
        reader.push(chunk);
      } catch (e) {
        this.log.warn({ peer, err: (e as Error).message }, 'closing connection after a malformed request');
        sock.end();
        sock.destroy();
      }
    });
    sock.on('drain', throttle);
    sock.on('close', () => {
      if (reserveTimer) clearTimeout(reserveTimer);
      if (payloadTimer) clearTimeout(payloadTimer);
      // a request whose payload never came gives its bytes back (now, or when its grant comes)
      if (current) give(current);
      current = null;
    });
    sock.on('error', (e) => this.log.debug({ peer, err: e.message }, 'connection error'));
    sock.resume();
  }

  /** Answers one request, timed and counted (peer-kind opcodes as the peer front end). */
  private async dispatch(hdr: Buffer, data: Buffer, conn: Conn): Promise<OpReply> {
    const op = OPS.get(hdr[1]);
    const front: Frontend = op?.kind === 'peer' ? 'peer' : 'sheepdog';
    if (front === 'peer' && hdr.readUInt16LE(2) & Flag.CMD_FOR_CLIENT) metrics.clientSeen();
    const start = metrics.begin(front);
    let rep: OpReply | undefined;
    try {
      rep = await this.answer(hdr, data, conn);
      return rep;
    } finally {
      const failed = (rep?.result ?? Res.SUCCESS) !== Res.SUCCESS;
      // object I/O counts as read and written data; control payloads do not
      const io = !failed && (op?.kind === 'gateway' || op?.kind === 'peer');
      metrics.done(front, op?.name ?? 'unknown', start, !rep || failed, io ? rep?.data?.length ?? 0 : 0, io ? data.length : 0);
    }
  }

  private async answer(hdr: Buffer, data: Buffer, conn: Conn): Promise<OpReply> {
    const prefix = decodePrefix(hdr);
    const op = OPS.get(prefix.opcode);
    if (!op) return { result: Res.UNKNOWN };
    if (prefix.protoVer > SD_PROTO_VER) return { result: Res.VER_MISMATCH };
    if (!mayUse(conn.role, op.role)) {
      this.admission.refusals.refuse(conn.peer, `${op.name} needs an authenticated ${op.role} connection`, { role: conn.role });
      return { result: Res.ACCESS_DENIED };
    }
    const sys = this.sys;
    if (sys.status === 'shutdown') return { result: Res.SHUTDOWN };
    // a peer that already applied a format this node has not yet: "I am behind", and the gateway retries
    if (op.needsFormat && sys.status === 'wait_format') return { result: op.kind === 'peer' ? Res.NEW_NODE_VER : Res.WAIT_FOR_FORMAT };
    // peers still answer each other: their requests carry epochs, and recovery needs them
    if (op.needsFormat && op.kind !== 'peer' && sys.status === 'wait_join') return { result: Res.WAIT_FOR_JOIN };
    if (op.needsFormat && op.kind !== 'peer' && sys.status === 'halt') return { result: Res.HALT };
    const req: OpRequest = { prefix, hdr, data, conn, access: this.access };
    try {
      return await op.handler(sys, req);
    } catch (e) {
      if (e instanceof SdError) {
        this.log.debug({ op: op.name, result: resultName(e.result), why: e.message }, 'request failed');
        return { result: e.result };
      }
      this.log.error({ op: opName(prefix.opcode), err: e }, 'request failed unexpectedly');
      return { result: Res.SYSTEM_ERROR };
    }
  }

  /** Writes a reply; `written` runs once it left for the kernel (or the connection died). */
  private send(sock: net.Socket, reqHdr: Buffer, rep: OpReply, written?: () => void): void {
    const result = rep.result ?? Res.SUCCESS;
    const data = result === Res.SUCCESS ? rep.data : undefined;
    const hdr = encodeRsp({
      opcode: reqHdr[1],
      id: reqHdr.readUInt32LE(8),
      epoch: this.sys.epoch,
      result,
      dataLength: data ? data.length : 0,
      vdi: rep.vdi,
      clusterDefault: rep.clusterDefault,
    });
    batchWrites(sock);
    if (data && data.length) {
      sock.write(hdr);
      sock.write(data, written && (() => written()));
    } else {
      sock.write(hdr, written && (() => written()));
    }
  }
}
