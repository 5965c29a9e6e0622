// Which copy of an object is right when replicas differ (collie vdi check).

/**
 * The copy every replica should hold when they differ: the newest last-write epoch wins (a node
 * that missed writes holds an older one); among copies of the same epoch, the most common content
 * (a damaged copy is outvoted).
 */
export function chooseReplica<T extends { digest: string; epoch: number }>(replicas: T[]): T {
  const groups = new Map<string, T[]>();
  for (const r of replicas) groups.set(r.digest, [...(groups.get(r.digest) ?? []), r]);
  let best: T[] = [];
  for (const g of groups.values()) {
    const e = Math.max(...g.map((r) => r.epoch));
    const be = best.length ? Math.max(...best.map((r) => r.epoch)) : -1;
    if (e > be || (e === be && g.length > best.length)) best = g;
  }
  return best[0];
}
