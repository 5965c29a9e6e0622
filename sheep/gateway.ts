// The gateway routes object I/O to the nodes that hold an object's replicas. This release runs
// single-node clusters, so every replica is this node's store; the interface is what the VDI
// layer and the op table use, so multi-node routing slots in here.

import type { ObjectStore } from './store.js';

/** Object I/O as the VDI layer sees it: wherever the replicas are. */
export interface ObjectIo {
  read(oid: bigint, offset: number, length: number): Promise<Buffer>;
  write(oid: bigint, offset: number, data: Buffer): Promise<void>;
  create(oid: bigint, offset: number, data: Buffer, cowFrom?: bigint): Promise<void>;
  remove(oid: bigint): Promise<boolean>;
  exists(oid: bigint): Promise<boolean>;
}

export class Gateway implements ObjectIo {
  constructor(private readonly store: ObjectStore, private readonly epoch: () => number) {}

  read(oid: bigint, offset: number, length: number): Promise<Buffer> {
    return this.store.read(oid, offset, length);
  }

  write(oid: bigint, offset: number, data: Buffer): Promise<void> {
    return this.store.write(oid, offset, data, this.epoch());
  }

  create(oid: bigint, offset: number, data: Buffer, cowFrom?: bigint): Promise<void> {
    return this.store.create(oid, offset, data, this.epoch(), cowFrom);
  }

  remove(oid: bigint): Promise<boolean> {
    return this.store.remove(oid);
  }

  exists(oid: bigint): Promise<boolean> {
    return this.store.exists(oid);
  }

  flushVdi(vid: number): Promise<void> {
    return this.store.flushVdi(vid);
  }
}
