// A sheep as the cluster knows it: what membership, placement and the admin replies share.

export interface NodeInfo {
  /** "host:port": unique per sheep */
  nid: string;
  host: string;
  port: number;
  zone: number;
  vnodes: number;
}

/** A sheep's weight on the placement ring unless `--vnodes` says otherwise; `cluster reweight` scales it by disk size. */
export const DEFAULT_VNODES = 64;

/** The most vnodes a node may have (the original's u16 field). */
export const MAX_VNODES = 65535;
