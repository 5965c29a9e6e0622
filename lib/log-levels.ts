// Log level names a running sheep accepts (`collie node log level set`, `sheep --log-level`): pino's
// own, and the original Sheepdog's syslog names, each taken as the pino level that keeps the same
// messages (pino has no emerg/alert/crit or notice: those fold into fatal and info).

export const PINO_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace'] as const;
export type PinoLevel = (typeof PINO_LEVELS)[number];

/** The original's levels (syslog order, as `dog node log level list` shows them) and what they mean here. */
export const ORIGINAL_LEVELS: ReadonlyArray<readonly [string, PinoLevel]> = [
  ['emerg', 'fatal'], ['alert', 'fatal'], ['crit', 'fatal'], ['err', 'error'],
  ['warning', 'warn'], ['notice', 'info'], ['info', 'info'], ['debug', 'debug'],
];

/** The pino level a name stands for (case-insensitive), or null for a name that is neither. */
export function toPinoLevel(name: string): PinoLevel | null {
  const n = name.trim().toLowerCase();
  if ((PINO_LEVELS as readonly string[]).includes(n)) return n as PinoLevel;
  return ORIGINAL_LEVELS.find(([o]) => o === n)?.[1] ?? null;
}

/** The accepted names, one a line, for error messages and `collie node log level list`. */
export function levelList(): string {
  const aliases = (p: PinoLevel) => ORIGINAL_LEVELS.filter(([o, q]) => q === p && o !== p).map(([o]) => o);
  return PINO_LEVELS.map((p) => {
    const a = aliases(p);
    return a.length ? `${p}\t(also: ${a.join(', ')})` : p;
  }).join('\n');
}
