// Control protocol between this process and a device process: newline-delimited JSON over a
// socketpair. Parsing is strict so a confused peer is noticed instead of misread.
import { LOG_LEVELS, LogLevel } from './validate';

export type DeviceMessage =
  | { event: 'listening'; socket: string }
  | { event: 'connected' }
  | { event: 'disconnected' }
  | { event: 'log'; level: Exclude<LogLevel, 'off'>; target: string; message: string }
  | { event: 'error'; message: string };

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
    default:
      throw new ProtocolError(`unknown control event '${event}'`);
  }
}

export const STOP_COMMAND = `${JSON.stringify({ cmd: 'stop' })}\n`;

/** Splits a byte stream into lines, keeping a partial tail between chunks. */
export class LineSplitter {
  private pending = '';

  push(chunk: string): string[] {
    this.pending += chunk;
    const lines = this.pending.split('\n');
    this.pending = lines.pop() ?? '';
    return lines.filter((line) => line.trim().length > 0);
  }
}
