// The `local` cluster driver: no external service. In this release it forms a one-node cluster
// inside the sheep process; ordering is the order of notify() calls.

import type { ClusterDriver, ClusterHandlers, NodeInfo } from './driver.js';

export class LocalDriver implements ClusterDriver {
  readonly name = 'local';
  private me: NodeInfo | null = null;
  private handlers: ClusterHandlers | null = null;

  async join(me: NodeInfo, handlers: ClusterHandlers): Promise<void> {
    this.me = me;
    this.handlers = handlers;
    handlers.onJoin(me, [me]);
  }

  async notify(msg: Buffer): Promise<void> {
    const { me, handlers } = this;
    if (!me || !handlers) throw new Error('local driver: notify before join');
    // deliver asynchronously, like a real driver, but in call order
    await Promise.resolve();
    handlers.onNotify(me, msg);
  }

  async leave(): Promise<void> {
    const { me, handlers } = this;
    this.me = null;
    this.handlers = null;
    if (me && handlers) handlers.onLeave(me, []);
  }
}

export function createDriver(name: string): ClusterDriver {
  switch (name) {
    case 'local':
      return new LocalDriver();
    default:
      throw new Error(`unknown cluster driver '${name}' (available: local)`);
  }
}
