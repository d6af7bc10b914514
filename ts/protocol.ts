// Control protocol between this process and a device process: newline-delimited JSON over a
// socketpair. Parsing is strict so a confused peer is noticed instead of misread.
import { LOG_LEVELS, LogLevel } from './validate';
import { DeviceStats, StatsFormatError, parseDeviceStats, parseStatsId } from './stats';

export type DeviceMessage =
  | { event: 'listening'; socket: string }
  | { event: 'connected' }
  | { event: 'disconnected' }
  | { event: 'log'; level: Exclude<LogLevel, 'off'>; target: string; message: string }
  | { event: 'error'; message: string }
  | { event: 'stats'; id: number; stats: DeviceStats };

export class ProtocolError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ProtocolError';
  }
}

const RECORD_LEVELS = LOG_LEVELS.filter((level): level is Exclude<LogLevel, 'off'> => level !== 'off');

function field(record: Record<string, unknown>, name: string): string {
  const value = record[name];
  if (typeof value !== 'string') throw new ProtocolError(`control message lacks string field '${name}'`);
  return value;
}

export function parseDeviceMessage(line: string): DeviceMessage {
  let parsed: unknown;
  try {
    parsed = JSON.parse(line);
  } catch {
    throw new ProtocolError(`control message is not JSON: ${line.slice(0, 200)}`);
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw new ProtocolError('control message is not an object');
  }
  const record = parsed as Record<string, unknown>;
  const event = field(record, 'event');
  switch (event) {
    case 'listening':
      return { event, socket: field(record, 'socket') };
    case 'connected':
    case 'disconnected':
      return { event };
    case 'log': {
      const level = RECORD_LEVELS.find((candidate) => candidate === field(record, 'level'));
      if (level === undefined) throw new ProtocolError(`unknown log level '${String(record.level)}'`);
      const target = typeof record.target === 'string' ? record.target : 'virtiofsd';
      return { event, level, target, message: field(record, 'message') };
    }
    case 'error':
      return { event, message: field(record, 'message') };
    case 'stats':
      try {
        return { event, id: parseStatsId(record.id), stats: parseDeviceStats(record.stats) };
      } catch (error) {
        if (error instanceof StatsFormatError) throw new ProtocolError(error.message);
        throw error;
      }
    default:
      throw new ProtocolError(`unknown control event '${event}'`);
  }
}

export const STOP_COMMAND = `${JSON.stringify({ cmd: 'stop' })}\n`;

/** Longest control line (bytes, newline excluded) a device may send; longer kills the device. */
export const MAX_CONTROL_LINE_BYTES = 64 * 1024;

export class LineTooLongError extends ProtocolError {
  constructor(limit: number) {
    super(`control line longer than ${limit} bytes`);
    this.name = 'LineTooLongError';
  }
}

const NEWLINE = 0x0a;

/**
 * Splits a byte stream into lines, keeping the partial tail between chunks as a list of chunks.
 * Only new bytes are scanned for newlines and a line is concatenated once, so the cost is linear.
 * Throws LineTooLongError as soon as the unfinished line exceeds the limit (and on every push after).
 */
export class LineSplitter {
  private readonly limit: number;
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private failed = false;

  constructor(limit: number = MAX_CONTROL_LINE_BYTES) {
    this.limit = limit;
  }

  push(chunk: Buffer | string): string[] {
    if (this.failed) throw new LineTooLongError(this.limit);
    const bytes = typeof chunk === 'string' ? Buffer.from(chunk, 'utf8') : chunk;
    const lines: string[] = [];
    let start = 0;
    for (;;) {
      const end = bytes.indexOf(NEWLINE, start);
      const piece = end === -1 ? bytes.subarray(start) : bytes.subarray(start, end);
      if (this.pendingBytes + piece.length > this.limit) {
        this.failed = true;
        this.pending = [];
        this.pendingBytes = 0;
        throw new LineTooLongError(this.limit);
      }
      if (end === -1) {
        if (piece.length > 0) {
          this.pending.push(piece);
          this.pendingBytes += piece.length;
        }
        return lines;
      }
      this.pending.push(piece);
      const line = Buffer.concat(this.pending, this.pendingBytes + piece.length).toString('utf8');
      this.pending = [];
      this.pendingBytes = 0;
      if (line.trim().length > 0) lines.push(line);
      start = end + 1;
    }
  }
}
