// Size parsing and printing in the style of Sheepdog's CLI.

const SUFFIX: Record<string, number> = { '': 0, B: 0, K: 10, M: 20, G: 30, T: 40, P: 50 };

/**
 * Parses "10G", "512k", "1.5M", "4096": binary multiples, case-insensitive suffix (an optional
 * trailing B/iB is accepted: "10GB", "10GiB"). Returns null when the text is not a size.
 */
export function parseSize(text: string): number | null {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([bkmgtp]?)(?:i?b)?\s*$/i.exec(text);
  if (!m) return null;
  const shift = SUFFIX[m[2].toUpperCase()];
  const value = Number(m[1]) * 2 ** shift;
  if (!Number.isFinite(value) || !Number.isSafeInteger(Math.floor(value))) return null;
  if (m[1].includes('.') && shift === 0) return null;
  return Math.floor(value);
}

const UNITS = ['MB', 'GB', 'TB', 'PB', 'EB', 'ZB', 'YB'];

/**
 * Human size like Sheepdog's size_to_str: megabytes and up, one decimal below 10,
 * none from 10 on ("0.0 MB", "64 MB", "1.0 GB", "4.0 TB").
 */
export function formatSize(bytes: number): string {
  let v = bytes / (1024 * 1024);
  let i = 0;
  while (v >= 1024 && i < UNITS.length - 1) {
    v /= 1024;
    i++;
  }
  return v < 10 ? `${v.toFixed(1)} ${UNITS[i]}` : `${Math.round(v)} ${UNITS[i]}`;
}
