// A sheep as the cluster knows it: what membership, placement and the admin replies share.

export interface NodeInfo {
  /** "host:port": unique per sheep */
  nid: string;
  host: string;
  port: number;
  zone: number;
  vnodes: number;
}
