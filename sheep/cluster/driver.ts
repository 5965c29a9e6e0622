// The cluster driver interface (like Sheepdog's cluster.h): membership and totally ordered
// broadcast. Every member, the sender included, sees the same events in the same order.

export interface NodeInfo {
  /** "host:port": unique per sheep */
  nid: string;
  host: string;
  port: number;
  zone: number;
  vnodes: number;
}

export interface ClusterHandlers {
  /** `node` joined; `members` is the membership after the join, oldest first */
  onJoin(node: NodeInfo, members: NodeInfo[]): void;
  onLeave(node: NodeInfo, members: NodeInfo[]): void;
  /** an ordered message from `from` */
  onNotify(from: NodeInfo, msg: Buffer): void;
}

export interface ClusterDriver {
  readonly name: string;
  /** joins the cluster as `me`; resolves once this node's join event was delivered */
  join(me: NodeInfo, handlers: ClusterHandlers): Promise<void>;
  /** broadcasts `msg` in total order to every member including this one */
  notify(msg: Buffer): Promise<void>;
  leave(): Promise<void>;
}
