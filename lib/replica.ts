// Which copy of an object is right when replicas differ (collie vdi check).

/**
 * The copy every replica should hold when they differ: the newest last-write epoch wins (a node
 * that missed writes holds an older one); among copies of the same epoch, the most common content
 * (a damaged copy is outvoted). null when that does not decide (as many copies of one epoch say
 * one thing as say another): then nobody can tell which is right.
 */
export function chooseReplica<T extends { digest: string; epoch: number }>(replicas: T[]): T | null {
  const groups = new Map<string, T[]>();
  for (const r of replicas) groups.set(r.digest, [...(groups.get(r.digest) ?? []), r]);
  const rank = (g: T[]) => ({ epoch: Math.max(...g.map((r) => r.epoch)), n: g.length });
  const sorted = [...groups.values()].sort((a, b) => rank(b).epoch - rank(a).epoch || rank(b).n - rank(a).n);
  if (sorted.length > 1 && rank(sorted[0]).epoch === rank(sorted[1]).epoch && rank(sorted[0]).n === rank(sorted[1]).n) return null;
  return sorted[0][0];
}
