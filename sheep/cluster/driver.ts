// The cluster driver interface (like Sheepdog's cluster.h): membership and totally ordered
// broadcast. Every member, the sender included, sees the same events in the same order.
// Drivers: local-group.ts (the `local` driver), corosync.ts and zookeeper.ts.

/**
 * The group-communication layer a multi-node driver provides (CPG semantics): members are opaque ids,
 * and membership changes and messages arrive in one total order at every member.
 */
export interface GroupEvents {
  /** members: current members, oldest first; joined/left: the change */
  confchg(members: string[], joined: string[], left: string[]): void;
  deliver(from: string, msg: Buffer): void;
}

export interface GroupDriver {
  readonly name: string;
  /** the members can be split into groups that do not see each other (a network partition) */
  readonly canPartition: boolean;
  /** connects; returns this member's id in the group (`preferred` where the driver lets us choose) */
  init(preferred: string): Promise<string>;
  /** joins the group; the first confchg delivered afterwards contains this member in `joined` */
  start(events: GroupEvents): Promise<void>;
  mcast(msg: Buffer): Promise<void>;
  stop(): Promise<void>;
  /** set by the owner: called when the group is lost under us (the node must stop, not diverge) */
  onLost: (why: string) => void;
  /**
   * set by the owner, for drivers that can lose their service for a while (zookeeper): the group
   * cannot order anything now (suspended, the node refuses client I/O) or can again
   */
  onSuspended?: (suspended: boolean, why: string) => void;
  /**
   * set by the owner, for drivers where the group may drop a live member (a zookeeper session that
   * expired): the node is no longer a member and may join again as a new one (init, then start)
   */
  onExpelled?: (why: string) => void;
}
