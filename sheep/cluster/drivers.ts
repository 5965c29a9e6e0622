// Cluster driver selection: `-c local[:DIR]` (sheep on one machine, no external service; DIR is
// shared by the sheep of one cluster, default /run/sheepdog/local for root) or `-c corosync`.

import { LocalGroup, defaultLocalDir } from './local-group.js';
import { CorosyncGroup } from './corosync.js';
import type { GroupDriver } from './driver.js';

export function createDriver(spec: string): GroupDriver {
  const [name, arg] = spec.split(/:(.*)/s, 2);
  switch (name) {
    case 'local':
      return new LocalGroup(arg || defaultLocalDir());
    case 'corosync':
      return new CorosyncGroup(arg || 'sheepdog');
    default:
      throw new Error(`unknown cluster driver '${spec}' (available: local[:DIR], corosync[:GROUP])`);
  }
}
