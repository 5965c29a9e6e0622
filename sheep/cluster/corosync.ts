// The `corosync` cluster driver: each sheep is a member of the CPG group "sheepdog" through the
// native addon; corosync (totem) orders membership changes and messages.

import { CpgGroup, cpgAvailable, type CpgMember } from '../../native/cpg.js';
import type { GroupDriver, GroupEvents } from './driver.js';

const memberId = (m: CpgMember) => `${m.nodeid}:${m.pid}`;

export class CorosyncGroup implements GroupDriver {
  readonly canPartition = true;
  readonly name = 'corosync';
  private cpg: CpgGroup | null = null;
  /** called when corosync goes away under us */
  onLost: (why: string) => void = () => undefined;

  constructor(private readonly groupName = 'sheepdog') {}

  async init(): Promise<string> {
    const a = cpgAvailable();
    if (!a.ok) throw new Error(`the corosync driver is not available: ${a.reason}`);
    this.cpg = new CpgGroup(this.groupName);
    return memberId(this.cpg.local());
  }

  async start(events: GroupEvents): Promise<void> {
    const cpg = this.cpg;
    if (!cpg) throw new Error('init() first');
    cpg.on('confchg', (members, left, joined) => events.confchg(members.map(memberId), joined.map(memberId), left.map(memberId)));
    cpg.on('deliver', (from, msg) => events.deliver(memberId(from), msg));
    cpg.on('error', (e) => this.onLost(e.message));
    cpg.join();
  }

  async mcast(msg: Buffer): Promise<void> {
    if (!this.cpg) throw new Error('not joined');
    this.cpg.mcast(msg);
  }

  async stop(): Promise<void> {
    this.cpg?.close();
    this.cpg = null;
  }
}
