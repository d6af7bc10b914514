// Shared pieces of `npm run bench`: kinds of daemon, logging, statistics and number formatting.
export type Kind = 'ours' | 'reference';
export const KINDS: readonly Kind[] = ['ours', 'reference'];

export class UsageError extends Error {}

export const log = (msg: string): void => void process.stderr.write(`bench: ${msg}\n`);
export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

export function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  if (sorted.length === 0) return NaN;
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

export function num(n: number | undefined): string {
  if (n === undefined || !Number.isFinite(n)) return '–';
  if (Number.isInteger(n)) return n.toString();
  if (Math.abs(n) >= 100) return Math.round(n).toString();
  if (Math.abs(n) >= 10) return n.toFixed(1);
  return n.toFixed(2);
}

/** a / b to two decimals, or a dash when either is missing. */
export function ratio(a: number | undefined, b: number | undefined): string {
  if (a === undefined || b === undefined || !Number.isFinite(a) || !Number.isFinite(b)) return '–';
  if (b === 0) return a === 0 ? '1.00' : 'inf';
  return (a / b).toFixed(2);
}

/** `ours / reference (ratio)`, the cell of every two-daemon table. */
export function pair(ours: number | undefined, reference: number | undefined): string {
  return `${num(ours)} / ${num(reference)} (${ratio(ours, reference)})`;
}

/** One line of an error, fit for a table cell. */
export function cellText(error: string, max = 160): string {
  return error.split('\n').filter(Boolean).join(' ').slice(0, max).replace(/\|/g, '\\|');
}
