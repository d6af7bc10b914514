// Log level ordering and the stderr line format (the upstream env_logger look).
import { LogLevel } from './validate';

const SEVERITY: Record<LogLevel, number> = { off: 0, error: 1, warn: 2, info: 3, debug: 4, trace: 5 };

/** Whether a record of `level` passes a `threshold` filter. */
export function levelEnabled(level: Exclude<LogLevel, 'off'>, threshold: LogLevel): boolean {
  return SEVERITY[level] <= SEVERITY[threshold];
}

const CONTROL_CHARS = /[\x00-\x1f\x7f-\x9f]/g;
const NAMED_ESCAPES: Record<string, string> = { '\n': '\\n', '\r': '\\r', '\t': '\\t' };

/**
 * Makes text from a device safe to print: C0 controls, DEL and C1 controls become visible escapes
 * (`\n`, `\x1b`, `\x9b`), so it can neither add log lines nor drive a terminal. Other characters,
 * including non-ASCII, are kept; the result contains no control characters, so escaping is idempotent.
 */
export function escapeLogText(text: string): string {
  return text.replace(CONTROL_CHARS, (char) => NAMED_ESCAPES[char] ?? `\\x${char.charCodeAt(0).toString(16).padStart(2, '0')}`);
}

/** `[2026-11-27T19:00:00Z INFO  virtiofsd] message` */
export function formatLogLine(level: Exclude<LogLevel, 'off'>, target: string, message: string, time = new Date()): string {
  const stamp = time.toISOString().replace(/\.\d{3}Z$/, 'Z');
  return `[${stamp} ${level.toUpperCase().padEnd(5)} ${escapeLogText(target)}] ${escapeLogText(message)}\n`;
}
