// The client/peer listener: frames requests off TCP and Unix sockets, dispatches them through the
// op table, and answers each as soon as it completes (out of order, matched by id).

import net from 'node:net';
import { SocketServer } from './net-listen.js';
import { Flag, Res, SdError, SD_PROTO_VER, decodePrefix, encodeRsp, opName, resultName } from '../lib/proto.js';
import { FrameReader } from '../lib/frame.js';
import { OPS, type OpReply, type OpRequest } from './ops.js';
import { MAX_DATA_LENGTH } from './object-io.js';
import type { System } from './system.js';
import type { Logger } from './log.js';

/** Requests one connection may have in flight before we stop reading from it. */
const MAX_INFLIGHT_PER_CONN = 64;
/** Unsent reply bytes on one connection before we stop reading from it. */
const MAX_UNSENT_BYTES = 64 * 1024 * 1024;

export class Listener extends SocketServer {
  constructor(private readonly sys: System, private readonly log: Logger) {
    super();
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

  protected accept(sock: net.Socket): void {
    let inflight = 0;
    let paused = false;
    const peer = sock.remoteAddress ? `${sock.remoteAddress}:${sock.remotePort}` : 'unix';
    const throttle = () => {
      const over = inflight >= MAX_INFLIGHT_PER_CONN || sock.writableLength > MAX_UNSENT_BYTES;
      if (over && !paused) { paused = true; sock.pause(); }
      else if (!over && paused) { paused = false; sock.resume(); }
    };
    const reader = new FrameReader((hdr) => {
      const p = decodePrefix(hdr);
      if (!(p.flags & Flag.CMD_WRITE)) return 0;
      if (p.dataLength > MAX_DATA_LENGTH) {
        // we cannot skip a payload this large safely: answer, then drop the connection
        this.send(sock, hdr, { result: Res.INVALID_PARMS });
        throw new SdError(Res.INVALID_PARMS, `payload of ${p.dataLength} bytes over the ${MAX_DATA_LENGTH} limit`);
      }
      return p.dataLength;
    }, (hdr, data) => {
      inflight++;
      throttle();
      void this.dispatch(hdr, data).then((rep) => {
        inflight--;
        if (!sock.destroyed) this.send(sock, hdr, rep);
        throttle();
      });
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
    sock.on('error', (e) => this.log.debug({ peer, err: e.message }, 'connection error'));
  }

  private async dispatch(hdr: Buffer, data: Buffer): Promise<OpReply> {
    const prefix = decodePrefix(hdr);
    const op = OPS.get(prefix.opcode);
    if (!op) return { result: Res.UNKNOWN };
    if (prefix.protoVer > SD_PROTO_VER) return { result: Res.VER_MISMATCH };
    const sys = this.sys;
    if (sys.status === 'shutdown') return { result: Res.SHUTDOWN };
    // a peer that already applied a format this node has not yet: "I am behind", and the gateway retries
    if (op.needsFormat && sys.status === 'wait_format') return { result: op.kind === 'peer' ? Res.NEW_NODE_VER : Res.WAIT_FOR_FORMAT };
    // peers still answer each other: their requests carry epochs, and recovery needs them
    if (op.needsFormat && op.kind !== 'peer' && sys.status === 'wait_join') return { result: Res.WAIT_FOR_JOIN };
    if (op.needsFormat && op.kind !== 'peer' && sys.status === 'halt') return { result: Res.HALT };
    const req: OpRequest = { prefix, hdr, data };
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

  private send(sock: net.Socket, reqHdr: Buffer, rep: OpReply): void {
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
    if (data && data.length) {
      sock.cork();
      sock.write(hdr);
      sock.write(data);
      sock.uncork();
    } else {
      sock.write(hdr);
    }
  }
}
