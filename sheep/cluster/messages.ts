// What sheep say to each other through the cluster driver, in one total order: the membership
// protocol's messages and the cluster-wide decisions every node applies.

import { pack, unpack } from 'msgpackr';
import type { NodeInfo } from '../../lib/node.js';
import type { NewVdiArgs, NewVdiDecision, BaseHeaderFields, HeaderUpdate, VdiState } from '../vdi/vdi-table.js';
import type { ClusterConfig } from '../store/config.js';
import type { EpochRecord } from './epoch-log.js';
import type { Status } from './state.js';

/**
 * A cluster-wide decision. Every node applies the same decisions in the same order to its own copy
 * of the cluster state; only the node that took the client's request does the object I/O after it.
 */
export type ClusterOp =
  | { kind: 'format'; copies: number; copyPolicy: number; blockSizeShift: number; lock: boolean; ctime: number }
  | { kind: 'shutdown' }
  | { kind: 'newVdi'; args: NewVdiArgs; now: bigint; baseHdr?: BaseHeaderFields }
  | { kind: 'undoNewVdi'; decision: NewVdiDecision }
  | { kind: 'delVdi'; name: string; tag: string; snapid: number }
  | { kind: 'lock'; name: string; tag: string; snapid: number; shared: boolean; owner: string; enforce?: boolean }
  | { kind: 'release'; vid: number }
  | { kind: 'forceRelease'; vid: number }
  | { kind: 'header'; update: HeaderUpdate }
  /** a standalone working VDI's copy count changes (`collie vdi alter-copy`); its objects are reshaped after */
  | { kind: 'alterCopy'; vid: number; copies: number }
  | { kind: 'recovered'; nid: string; epoch: number }
  | { kind: 'forceRecover' }
  | { kind: 'autoRecovery'; enabled: boolean }
  /** a node's disk failed: it stays a member (a gateway) but holds no copies from the next epoch on */
  | { kind: 'diskFailed'; nid: string; reason: string }
  /** new weights (vnodes) for members, by nid: `collie node vnodes set`, `collie cluster reweight` */
  | { kind: 'vnodes'; weights: Array<[string, number]> }
  /** the default copies of VDIs created from now on (`collie cluster alter-copy`) */
  | { kind: 'copies'; copies: number };

/** What sheep say to each other through the cluster driver, in one total order. */
export type GroupMsg =
  | { t: 'join'; node: NodeInfo; ctime: number; epoch: number }
  /**
   * The joiner `to` takes the cluster state from `master` point to point (GET_SNAPSHOT): every member
   * receives the welcome, and a snapshot in it (O(nodes) bytes to each of N members) made every join
   * cost O(N^2) bytes; `offer` names this welcome's state at the master. `snapshot` inline is still
   * read, from sheep that sent it so.
   */
  | { t: 'welcome'; to: string; node: NodeInfo; storeEpoch: number; master: NodeInfo; offer: string; snapshot?: Uint8Array }
  | { t: 'reject'; to: string; reason: string }
  | { t: 'op'; seq: number; op: ClusterOp }
  /** a side of the cluster announces itself to new group members (a halted side rejoins another) */
  | { t: 'present'; ctime: number; epoch: number; status: Status }
  /** the end of WAIT_FOR_JOIN: the member with the newest history hands its state to all */
  | { t: 'resume'; snapshot: ClusterSnapshot; forced: boolean };

/** A member of the group that the cluster accepted. */
export interface Member {
  member: string;
  info: NodeInfo;
  /** the epoch of the node's own store when it joined (chooses whose history a restart resumes) */
  storeEpoch: number;
}

/** The state a joining node takes over from the oldest member. */
export interface ClusterSnapshot {
  config: ClusterConfig | null;
  status: Status;
  epoch: number;
  history: EpochRecord[];
  nodes: Member[];
  vdis: VdiState;
  autoRecovery: boolean;
}

/** A joiner's snapshot travels packed, apart from the welcome (the master offers it, GET_SNAPSHOT). */
export function packSnapshot(s: ClusterSnapshot): Uint8Array {
  return pack(s);
}

export function unpackSnapshot(b: Uint8Array): ClusterSnapshot {
  return unpack(b) as ClusterSnapshot;
}
