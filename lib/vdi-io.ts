// VDI-level I/O over the sheepdog protocol, the way QEMU's sheepdog driver does it: read through
// the inode's data_vdi_id map (zeros for holes), client-side copy-on-write on writes, map updates
// written back into the inode. Used by collie's vdi read/write and by the tests.

/** Object I/O as QEMU's driver uses it: SheepClient over the network, or sheep's own gateway in-process. */
export interface ObjectTransport {
  readObj(oid: bigint, offset: number, length: number): Promise<Buffer>;
  writeObj(oid: bigint, offset: number, data: Buffer): Promise<void>;
  createAndWriteObj(oid: bigint, offset: number, data: Buffer, cowOid?: bigint): Promise<void>;
}
import { decodeInodeHeader, SD_INODE_HEADER_SIZE, objectCount, mapEntryOffset, type InodeHeader } from './inode.js';
import { vidToVdiOid, vidToDataOid } from './oid.js';
import { Res, SdError } from './proto.js';

export class OpenVdi {
  /** blocks whose object is being created right now */
  private readonly allocating = new Map<number, Promise<void>>();

  private constructor(
    readonly client: ObjectTransport,
    readonly vid: number,
    public header: InodeHeader,
    /** data_vdi_id for every object the VDI spans */
    readonly map: Uint32Array,
  ) {}

  static async open(client: ObjectTransport, vid: number): Promise<OpenVdi> {
    const header = decodeInodeHeader(await client.readObj(vidToVdiOid(vid), 0, SD_INODE_HEADER_SIZE));
    const n = objectCount(header.vdiSize, header.blockSizeShift);
    const raw = n ? await client.readObj(vidToVdiOid(vid), SD_INODE_HEADER_SIZE, 4 * n) : Buffer.alloc(0);
    const map = new Uint32Array(n);
    for (let i = 0; i < n; i++) map[i] = raw.readUInt32LE(4 * i);
    return new OpenVdi(client, vid, header, map);
  }

  get objectSize(): number {
    return 2 ** this.header.blockSizeShift;
  }

  get size(): number {
    return Number(this.header.vdiSize);
  }

  /** Splits [offset, offset+length) into per-object pieces. */
  *pieces(offset: number, length: number): Generator<{ idx: number; off: number; len: number; pos: number }> {
    const os = this.objectSize;
    let pos = 0;
    while (pos < length) {
      const abs = offset + pos;
      const idx = Math.floor(abs / os);
      const off = abs % os;
      const len = Math.min(os - off, length - pos);
      yield { idx, off, len, pos };
      pos += len;
    }
  }

  /** Reads one piece inside one object; holes read as zeros without a request. */
  async readPiece(idx: number, off: number, len: number): Promise<Buffer> {
    const owner = this.map[idx];
    if (!owner) return Buffer.alloc(len);
    return this.client.readObj(vidToDataOid(owner, idx), off, len);
  }

  async read(offset: number, length: number): Promise<Buffer> {
    this.checkRange(offset, length);
    const parts = await Promise.all([...this.pieces(offset, length)].map((p) => this.readPiece(p.idx, p.off, p.len)));
    return Buffer.concat(parts, length);
  }

  /**
   * Writes one piece inside one object: WRITE_OBJ to an own object, CREATE_AND_WRITE for a hole,
   * CREATE_AND_WRITE with COW from the ancestor's object otherwise; then records the new owner in
   * the inode map. On READONLY (someone snapshotted the VDI) the caller must reopen the working VDI.
   */
  async writePiece(idx: number, off: number, data: Buffer): Promise<void> {
    // A create replaces the whole object, so two at once on one block would lose one write:
    // later writes to a block being allocated wait for it and then write in place (as QEMU does).
    for (let pending = this.allocating.get(idx); pending; pending = this.allocating.get(idx)) {
      await pending.catch(() => undefined);
    }
    const owner = this.map[idx];
    const oid = vidToDataOid(this.vid, idx);
    if (owner === this.vid) {
      await this.client.writeObj(oid, off, data);
      return;
    }
    const alloc = (async () => {
      await this.client.createAndWriteObj(oid, off, data, owner ? vidToDataOid(owner, idx) : 0n);
      const entry = Buffer.alloc(4);
      entry.writeUInt32LE(this.vid);
      await this.client.writeObj(vidToVdiOid(this.vid), mapEntryOffset(idx), entry);
      this.map[idx] = this.vid;
    })();
    this.allocating.set(idx, alloc);
    try {
      await alloc;
    } finally {
      this.allocating.delete(idx);
    }
  }

  async write(offset: number, data: Buffer): Promise<void> {
    this.checkRange(offset, data.length);
    await Promise.all([...this.pieces(offset, data.length)].map((p) => this.writePiece(p.idx, p.off, data.subarray(p.pos, p.pos + p.len))));
  }

  private checkRange(offset: number, length: number): void {
    if (offset < 0 || length < 0 || offset + length > this.size) {
      throw new SdError(Res.INVALID_PARMS, `range ${offset}+${length} outside the ${this.size}-byte VDI`);
    }
  }

  /** Objects this VDI owns and objects it shares with ancestors. */
  usage(): { own: number; shared: number } {
    let own = 0;
    let shared = 0;
    for (const v of this.map) {
      if (v === this.vid) own++;
      else if (v) shared++;
    }
    return { own, shared };
  }
}
