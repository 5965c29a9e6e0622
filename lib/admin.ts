// The msgpack payloads of the admin and internal opcodes (collie <-> sheep, sheep <-> sheep):
// one definition that the daemon's handlers and the CLI share.

import type { NodeInfo } from './node.js';

/** MAKE_FS */
export interface MakeFsArgs {
  copies: number;
  copyPolicy?: number;
  blockSizeShift?: number;
  lock?: boolean;
}

/** GET_NODE_LIST */
export interface NodeListReply {
  nodes: NodeInfo[];
  /** the nid of the node that answered */
  me: string;
}

/** STAT_SHEEP */
export interface StatSheepReply {
  size: number;
  used: number;
  avail: number;
  vdiSizeTotal: number;
  /** bytes the sheep keeps free (--reserved-space) */
  reserve?: number;
  /** free space is under the reserve: new objects and recovery copies to this node are refused */
  full?: boolean;
  /** why the store's disk was taken out of service (I/O errors), if it was */
  diskFailed?: string;
  /** objects in the store */
  objects?: number;
  /** client I/O served by this node since it started (port 7000 and NBD; peers not counted) */
  io?: { reads: number; writes: number; readBytes: number; writtenBytes: number };
  /** bytes of erasure-coded strips on this node, per copy_policy byte of their VDIs (`node info`'s space saved) */
  /** bytes of erasure-coded strips here, per copy policy (only when the request asked: StatSheepArgs.strips) */
  ecStrips?: Array<[copyPolicy: number, bytes: number]>;
}

/** STAT_SHEEP's optional argument */
export interface StatSheepArgs {
  /** a store usage counted this long ago is good enough (the monitor asks every second); default 0 */
  cachedMs?: number;
  /** count the bytes of erasure-coded strips (ecStrips): a stat of every strip file, so only on request */
  strips?: boolean;
}

/** STAT_CLUSTER */
export interface StatClusterReply {
  status: string;
  statusText: string;
  autoRecovery: boolean;
  ctime: number;
  epoch: number;
  copies: number;
  copyPolicy: number;
  blockSizeShift: number;
  lock: boolean;
  nodes: number;
  /** distinct zones among the nodes: replicas go to distinct zones */
  zones: number;
  /** newest first; a node's zone places replicas (`vdi track` replays placement per epoch) */
  history: Array<{ epoch: number; time: number; nodes: Array<{ host: string; port: number; vnodes: number; zone?: number; nid?: string }> }>;
}

/** STAT_RECOVERY */
export interface RecoveryStatus {
  /** waiting: a membership change needs recovery but automatic recovery is disabled */
  state: 'idle' | 'running' | 'waiting';
  epoch: number;
  done: number;
  total: number;
  /** objects copied to this node in this run (the throttle counts these) */
  copied: number;
  /** set-aside copies found current and put back into service without copying */
  kept?: number;
  /** why the last run failed (it runs again at the next membership change) */
  error?: string;
  /** why the running recovery cannot finish now (a full disk), while it waits */
  blocked?: string;
  /** when the current run started (ms since 1970): with `done`, its rate */
  startedAt?: number;
}

/** SET/GET_RECOVERY_THROTTLE: at most `max` objects copied per `interval` ms (0, 0: no limit), as Sheepdog's `-R max=,interval=`. */
export interface Throttle {
  max: number;
  interval: number;
}

/** GET_OBJ_LIST: [oid as 16 hex digits, epoch of its last write] */
export type ObjList = Array<[string, number]>;

/** GET_VDI_ATTR */
export type AttrMode = 'get' | 'set' | 'exclusive' | 'delete';

export interface AttrRequest {
  name: string;
  tag?: string;
  snapid?: number;
  key: string;
  value?: Uint8Array;
  mode: AttrMode;
}

export interface AttrReply {
  vid: number;
  attrId: number;
  value?: Uint8Array;
}

/** LOCK_LIST */
export interface LockInfo {
  vid: number;
  name: string;
  tag: string;
  snapId: number;
  exclusive: boolean;
  holders: number;
  owners: string[];
}

/** LOCK_FORCE_RELEASE */
export interface ForceReleaseArgs {
  vid: number;
}

/** ALTER_VDI_COPY: give the working VDI `name` this many copies of every object. */
export interface AlterCopyArgs {
  name: string;
  copies: number;
}

export interface AlterCopyReply {
  vid: number;
  oldCopies: number;
  copies: number;
  /** objects of the VDI (inode included) */
  objects: number;
  /** copies made on the nodes that hold one under the new count */
  copied: number;
  /** copies removed from the nodes that no longer hold one */
  removed: number;
  /** objects left for recovery to finish (a node unreachable meanwhile); 0 when the change is complete */
  unfinished: number;
}

/** MD_INFO: one disk of a sheep (`collie node md info`); a sheep without disks shows its store directory */
export interface MdDiskInfo {
  idx: number;
  path: string;
  /** bytes the disk gives the store: what its objects use plus what is free */
  size: number;
  /** bytes its objects occupy (allocated blocks) */
  used: number;
  avail: number;
  objects: number;
  /** ok: in service; draining: being unplugged (objects moving off); failed: taken out after an I/O error */
  status: 'ok' | 'draining' | 'failed';
  /** why a failed disk was taken out */
  failure?: string;
}

/** MD_INFO's reply */
export interface MdInfoReply {
  /** false: the sheep keeps objects in its store directory alone (no disks given) */
  md: boolean;
  disks: MdDiskInfo[];
}

/** MD_PLUG and MD_UNPLUG */
export interface MdPathsArgs {
  paths: string[];
}

/** STAT: one front end's request counters, as the sheep's Prometheus metrics count them. */
export interface FrontendStat {
  /** requests being served now (sheep_requests_in_flight) */
  active: number;
  /** requests answered, by opcode or NBD command name (sheep_requests_total) */
  ops: Record<string, number>;
  /** requests answered with an error, by opcode or NBD command (sheep_request_errors_total) */
  errors: Record<string, number>;
  /** data bytes sent in replies (sheep_read_bytes_total) */
  readBytes: number;
  /** data bytes received in write requests (sheep_written_bytes_total) */
  writtenBytes: number;
}

/** STAT: where requests came in: port 7000 clients (QEMU, collie), other sheep, NBD clients. */
export interface NodeStatReply {
  sheepdog: FrontendStat;
  peer: FrontendStat;
  nbd: FrontendStat;
}

/** GET_LOGLEVEL's reply and SET_LOGLEVEL's argument: a pino level name. */
export interface LogLevelArgs {
  level: string;
  /** pino's number for it (replies only) */
  value?: number;
}

/** SET_VNODES */
export interface SetVnodesArgs {
  vnodes: number;
}

/** SET_VNODES and REWEIGHT: the weights after the decision, and whether it added an epoch. */
export interface VnodesReply {
  /** [nid, vnodes] of every member */
  nodes: Array<[string, number]>;
  changed: boolean;
  epoch: number;
}

/** ALTER_CLUSTER_COPY: the default copies of VDIs created from now on */
export interface ClusterCopiesArgs {
  copies: number;
}

export interface ClusterCopiesReply {
  old: number;
  copies: number;
}
