// Log level ordering and the stderr line format (the upstream env_logger look).
import { LogLevel } from './validate';

const SEVERITY: Record<LogLevel, number> = { off: 0, error: 1, warn: 2, info: 3, debug: 4, trace: 5 };

/** Whether a record of `level` passes a `threshold` filter. */
export function levelEnabled(level: Exclude<LogLevel, 'off'>, threshold: LogLevel): boolean {
  return SEVERITY[level] <= SEVERITY[threshold];
}

/** `[2026-11-27T19:00:00Z INFO  virtiofsd] message` */
export function formatLogLine(level: Exclude<LogLevel, 'off'>, target: string, message: string, time = new Date()): string {
  const stamp = time.toISOString().replace(/\.\d{3}Z$/, 'Z');
  return `[${stamp} ${level.toUpperCase().padEnd(5)} ${target}] ${message}\n`;
}
