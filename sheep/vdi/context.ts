// What the VDI layer's object rules need from the running sheep: the VDI table, the replicated
// object I/O and the cluster's defaults. The cluster's System provides it; the VDI layer never
// imports the cluster layer above it.

import type { Gateway } from '../replication/gateway.js';
import type { VdiTable, ClusterDefaults } from './vdi-table.js';

export interface VdiContext {
  readonly vdis: VdiTable;
  readonly gateway: Gateway;
  readonly clusterDefaults: ClusterDefaults;
}
