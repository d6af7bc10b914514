// Statistics of one device, as its `stats` control reply (and its SIGUSR1 line) carries them.
// Parsing is strict and bounded: every field is checked, maps and arrays have a ceiling, so a
// confused or hostile device cannot hand the embedder something else under this type.
import { SANDBOX_MODES, SECCOMP_ACTIONS, SandboxMode, SeccompAction } from './validate';

/** One virtqueue: index 0 of `DeviceStats.queues` is the hiprio queue, then the request queues. */
export interface QueueStats {
  /** Descriptor chains popped from the queue. */
  requests: number;
  /** Popped and not answered yet. */
  inFlight: number;
  /** Sum of the answered chains' latencies (pop to used element), in microseconds. */
  latencyUsSum: number;
  /**
   * Answered chains by latency: entry 0 counts those under 1 µs, entry `i` those from
   * `2^(i-1)` µs to under `2^i` µs. Trailing empty buckets are left out.
   */
  latencyBuckets: number[];
}

/** What `Device.stats()` returns. Counters run from the start of the device process. */
export interface DeviceStats {
  /** FUSE requests by opcode name (`LOOKUP`, `CREATE`, ...; `UNKNOWN` for unknown numbers); opcodes never seen are absent. */
  requests: Record<string, number>;
  /** Error replies by opcode name, likewise sparse. */
  errors: Record<string, number>;
  /** Error replies by errno name (`ENOENT`, ...; `other` beyond the Linux table). */
  errno: Record<string, number>;
  /** READ payload bytes sent to the guest. */
  bytesRead: number;
  /** WRITE payload bytes written to host files. */
  bytesWritten: number;
  /** Requests no reply could be produced for (malformed, or no room for the reply). */
  unanswered: number;
  /** Requests popped from any queue and not answered yet. */
  inFlight: number;
  queues: QueueStats[];
  /** Inodes the guest knows, the root included. */
  inodes: number;
  /** Open file and directory handles. */
  handles: number;
  /** Host descriptors held for the guest, counted against `fdBudget`. */
  fdsHeld: number;
  /** How many host descriptors the guest may make the device hold. */
  fdBudget: number;
  /** Descriptors open in the device process; `null` if they could not be counted. */
  hostFds: number | null;
  /** Confinement the device serves in, fixed at start-up. */
  sandbox: SandboxMode;
  /** Whether the namespace sandbox runs in a user namespace of its own. */
  userNamespace: boolean;
  /** The seccomp filter's action on a forbidden system call (`none`: no filter). */
  seccomp: SeccompAction;
  /** Effective capabilities, lower case without `cap_` (`chown`, `dac_override`, ...). */
  capabilities: string[];
}

/** The stats payload does not have the expected shape. */
export class StatsFormatError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'StatsFormatError';
  }
}

/** Ceilings, comfortably above what a device can report (53 opcode slots, 134 errno slots, 64 queues, 32 buckets, 64 capabilities). */
const MAX_MAP_ENTRIES = 256;
const MAX_QUEUES = 64;
const MAX_BUCKETS = 64;
const MAX_CAPABILITIES = 64;
const NAME = /^[A-Za-z0-9_]{1,32}$/;
const FIELDS = [
  'requests',
  'errors',
  'errno',
  'bytesRead',
  'bytesWritten',
  'unanswered',
  'inFlight',
  'queues',
  'inodes',
  'handles',
  'fdsHeld',
  'fdBudget',
  'hostFds',
  'sandbox',
  'userNamespace',
  'seccomp',
  'capabilities',
] as const;
const QUEUE_FIELDS = ['requests', 'inFlight', 'latencyUsSum', 'latencyBuckets'] as const;

function object(value: unknown, what: string): Record<string, unknown> {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw new StatsFormatError(`${what} is not an object`);
  return value as Record<string, unknown>;
}

function exactly(record: Record<string, unknown>, fields: readonly string[], what: string): void {
  for (const key of Object.keys(record)) {
    if (!fields.includes(key)) throw new StatsFormatError(`${what} has unknown field '${key.slice(0, 40)}'`);
  }
  for (const key of fields) {
    if (!(key in record)) throw new StatsFormatError(`${what} lacks field '${key}'`);
  }
}

function count(value: unknown, what: string): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0) throw new StatsFormatError(`${what} is not a count`);
  return value;
}

function countMap(value: unknown, what: string): Record<string, number> {
  const record = object(value, what);
  const keys = Object.keys(record);
  if (keys.length > MAX_MAP_ENTRIES) throw new StatsFormatError(`${what} has ${keys.length} entries`);
  // No prototype: a key such as `__proto__` stays a plain entry.
  const out: Record<string, number> = Object.create(null) as Record<string, number>;
  for (const key of keys) {
    if (!NAME.test(key)) throw new StatsFormatError(`${what} has a bad key`);
    out[key] = count(record[key], `${what}.${key}`);
  }
  return out;
}

function list<T>(value: unknown, max: number, what: string, item: (v: unknown, what: string) => T): T[] {
  if (!Array.isArray(value)) throw new StatsFormatError(`${what} is not an array`);
  if (value.length > max) throw new StatsFormatError(`${what} has ${value.length} entries`);
  return value.map((v, i) => item(v, `${what}[${i}]`));
}

function oneOf<T extends string>(value: unknown, allowed: readonly T[], what: string): T {
  const found = allowed.find((candidate) => candidate === value);
  if (found === undefined) throw new StatsFormatError(`${what} is not one of ${allowed.join(', ')}`);
  return found;
}

function queue(value: unknown, what: string): QueueStats {
  const record = object(value, what);
  exactly(record, QUEUE_FIELDS, what);
  return {
    requests: count(record.requests, `${what}.requests`),
    inFlight: count(record.inFlight, `${what}.inFlight`),
    latencyUsSum: count(record.latencyUsSum, `${what}.latencyUsSum`),
    latencyBuckets: list(record.latencyBuckets, MAX_BUCKETS, `${what}.latencyBuckets`, count),
  };
}

/** Checks a device's stats payload field by field; throws StatsFormatError. */
export function parseDeviceStats(value: unknown): DeviceStats {
  const record = object(value, 'stats');
  exactly(record, FIELDS, 'stats');
  if (typeof record.userNamespace !== 'boolean') throw new StatsFormatError('stats.userNamespace is not a boolean');
  return {
    requests: countMap(record.requests, 'stats.requests'),
    errors: countMap(record.errors, 'stats.errors'),
    errno: countMap(record.errno, 'stats.errno'),
    bytesRead: count(record.bytesRead, 'stats.bytesRead'),
    bytesWritten: count(record.bytesWritten, 'stats.bytesWritten'),
    unanswered: count(record.unanswered, 'stats.unanswered'),
    inFlight: count(record.inFlight, 'stats.inFlight'),
    queues: list(record.queues, MAX_QUEUES, 'stats.queues', queue),
    inodes: count(record.inodes, 'stats.inodes'),
    handles: count(record.handles, 'stats.handles'),
    fdsHeld: count(record.fdsHeld, 'stats.fdsHeld'),
    fdBudget: count(record.fdBudget, 'stats.fdBudget'),
    hostFds: record.hostFds === null ? null : count(record.hostFds, 'stats.hostFds'),
    sandbox: oneOf<SandboxMode>(record.sandbox, SANDBOX_MODES, 'stats.sandbox'),
    userNamespace: record.userNamespace,
    seccomp: oneOf<SeccompAction>(record.seccomp, SECCOMP_ACTIONS, 'stats.seccomp'),
    capabilities: list(record.capabilities, MAX_CAPABILITIES, 'stats.capabilities', (v, what) => {
      if (typeof v !== 'string' || !NAME.test(v)) throw new StatsFormatError(`${what} is not a capability name`);
      return v;
    }),
  };
}

/** The request id a `stats` reply carries: what this process sent, a positive safe integer. */
export function parseStatsId(value: unknown): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 1) throw new StatsFormatError('stats reply has a bad id');
  return value;
}

export function statsCommand(id: number): string {
  return `${JSON.stringify({ cmd: 'stats', id })}\n`;
}

export const DEFAULT_STATS_TIMEOUT_MS = 5_000;
/** Requests one device may have outstanding; more are refused rather than queued without bound. */
export const MAX_PENDING_STATS = 64;

interface Waiter {
  resolve: (stats: DeviceStats) => void;
  reject: (error: Error) => void;
  timer: NodeJS.Timeout;
}

/** The `stats` requests of one device waiting for their replies, by id. */
export class StatsRequests {
  private nextId = 1;
  private readonly waiting = new Map<number, Waiter>();

  /**
   * Sends a request with `send` and resolves with the matching reply; rejects with what
   * `fail('timeout')` makes after `timeoutMs`, or when `rejectAll` is called.
   */
  request(send: (line: string) => void, timeoutMs: number, fail: (why: 'timeout' | 'busy') => Error): Promise<DeviceStats> {
    if (this.waiting.size >= MAX_PENDING_STATS) return Promise.reject(fail('busy'));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting.delete(id);
        reject(fail('timeout'));
      }, timeoutMs);
      this.waiting.set(id, { resolve, reject, timer });
      send(statsCommand(id));
    });
  }

  /** A reply arrived; one nobody waits for (any more) is dropped. */
  settle(id: number, stats: DeviceStats): void {
    const waiter = this.waiting.get(id);
    if (waiter === undefined) return;
    this.waiting.delete(id);
    clearTimeout(waiter.timer);
    waiter.resolve(stats);
  }

  /** The device is gone: every request fails with `error`. */
  rejectAll(error: Error): void {
    for (const waiter of this.waiting.values()) {
      clearTimeout(waiter.timer);
      waiter.reject(error);
    }
    this.waiting.clear();
  }
}
