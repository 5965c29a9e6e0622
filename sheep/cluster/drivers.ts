// Cluster driver selection: `-c local[:DIR]` (sheep on one machine, no external service; DIR is
// shared by the sheep of one cluster, default /run/sheepdog/local for root), `-c corosync` (a
// rack: corosync's totem ring) or `-c zookeeper:HOST:PORT,...` (past one ring: a ZooKeeper ensemble).

import { LocalGroup, defaultLocalDir } from './local-group.js';
import { CorosyncGroup } from './corosync.js';
import { ZooKeeperGroup } from './zookeeper.js';
import type { GroupDriver } from './driver.js';

export function createDriver(spec: string): GroupDriver {
  const [name, arg] = spec.split(/:(.*)/s, 2);
  switch (name) {
    case 'local':
      return new LocalGroup(arg || defaultLocalDir());
    case 'corosync':
      return new CorosyncGroup(arg || 'sheepdog');
    case 'zookeeper':
      return new ZooKeeperGroup(arg ?? '');
    default:
      throw new Error(`unknown cluster driver '${spec}' (available: local[:DIR], corosync[:GROUP], zookeeper:HOST:PORT[,HOST:PORT...][/CHROOT][,timeout=SECONDS])`);
  }
}
