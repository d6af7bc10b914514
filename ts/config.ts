// Compiles library options (and, through them, command-line options) into the JSON device
// configuration understood by the Rust core. Field names of DeviceConfig are that contract.
import fs from 'node:fs';
import path from 'node:path';
import { OptionError } from './errors';
import { CliOptions } from './options';
import {
  CACHE_POLICIES,
  CachePolicy,
  IdRange,
  Modcaps,
  SANDBOX_MODES,
  SECCOMP_ACTIONS,
  SandboxMode,
  SeccompAction,
  parseModcaps,
  LOG_LEVELS,
  LogLevel,
  U32_MAX,
  checkIdMapsAllowed,
  parseEnum,
  validateNonEmpty,
  validateTag,
} from './validate';

export interface LogTarget {
  target: string;
  level: LogLevel;
}

export type SocketConfig = { kind: 'path'; path: string; group: string | null } | { kind: 'fd'; fd: number };

export interface DeviceConfig {
  sharedDir: string;
  socket: SocketConfig;
  tag: string | null;
  numRequestQueues: number;
  queueSize: number;
  threadPoolSize: number;
  cache: CachePolicy;
  readonly: boolean;
  readdirplus: boolean;
  writeback: boolean;
  allowDirectIo: boolean;
  allowMmap: boolean;
  announceSubmounts: boolean;
  killprivV2: boolean;
  xattr: boolean;
  inodeFileHandles: 'never' | 'prefer' | 'mandatory';
  preserveNoatime: boolean;
  posixLocks: boolean;
  flock: boolean;
  rlimitNofile: number | null;
  logLevel: LogLevel;
  /** Per-target overrides of `logLevel` (from `RUST_LOG` on the command line). */
  logTargets: LogTarget[];
  /** A device started from the command line logs to the system log instead of stderr. */
  syslog: boolean;
  sandbox: SandboxMode;
  seccomp: SeccompAction;
  uidMap: IdRange[];
  gidMap: IdRange[];
  /** Capabilities added to / dropped from the default set of a root device process. */
  modcaps: Modcaps;
}

/** Options accepted by `startDevice`. Exactly one of `socketPath` and `fd` is required. */
export interface DeviceOptions {
  /** Directory to share; relative paths are resolved against `cwd` (default: process.cwd()). */
  sharedDir: string;
  /** vhost-user socket to create and listen on. */
  socketPath?: string;
  /** Group that should own the socket file (name or numeric id as a string). */
  socketGroup?: string;
  /** An inherited, already listening (not yet connected) socket. */
  fd?: number;
  tag?: string | null;
  cache?: CachePolicy;
  threadPoolSize?: number;
  readonly?: boolean;
  readdirplus?: boolean;
  writeback?: boolean;
  allowDirectIo?: boolean;
  allowMmap?: boolean;
  announceSubmounts?: boolean;
  /** Handle FUSE KILLPRIV_V2: the guest asks for setuid/setgid to be cleared on write, truncate and chown. */
  killprivV2?: boolean;
  /** Serve extended attributes (default false, as upstream). */
  xattr?: boolean;
  /** Hold looked-up inodes as file handles instead of O_PATH descriptors (default 'never'). */
  inodeFileHandles?: 'never' | 'prefer' | 'mandatory';
  /** Honour the guest's O_NOATIME instead of dropping it. */
  preserveNoatime?: boolean;
  /** Serve POSIX record locks (default true). */
  posixLocks?: boolean;
  /** Serve BSD flock locks (default true). */
  flock?: boolean;
  /** `null` keeps the default; 0 leaves the limit unchanged. */
  rlimitNofile?: number | null;
  logLevel?: LogLevel;
  numRequestQueues?: number;
  queueSize?: number;
  /** Confinement of the device process (default 'namespace', as upstream). */
  sandbox?: SandboxMode;
  /** Action on a forbidden system call (default 'kill', as upstream). */
  seccomp?: SeccompAction;
  /** User-namespace UID ranges for an unprivileged start (written with newuidmap). */
  uidMap?: IdRange[];
  gidMap?: IdRange[];
  /** `+cap:-cap` list, as `--modcaps`. */
  modcaps?: string;
  cwd?: string;
}

export const DEFAULT_QUEUE_SIZE = 1024;
const FILE_HANDLE_MODES = ['never', 'prefer', 'mandatory'] as const;
export const MAX_QUEUE_SIZE = 32768;
/** One queue-to-thread mask bit each, plus the hiprio queue, in a 64-bit mask. */
export const MAX_REQUEST_QUEUES = 63;
const FD_MAX = 0x7fff_ffff;

function checkBoolean(name: string, value: unknown, fallback: boolean): boolean {
  if (value === undefined) return fallback;
  if (typeof value !== 'boolean') throw new OptionError(`invalid value for '${name}': expected a boolean`);
  return value;
}

function checkInteger(name: string, value: unknown, min: number, max: number): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw new OptionError(`invalid value '${String(value)}' for '${name}': must be an integer between ${min} and ${max}`);
  }
  return value;
}

function checkString(name: string, value: unknown): string {
  if (typeof value !== 'string') throw new OptionError(`invalid value for '${name}': expected a string`);
  return validateNonEmpty(name, value);
}

/** Resolves and checks the shared directory: it must exist and be a directory. */
export function resolveSharedDir(dir: string, cwd: string): string {
  const absolute = path.resolve(cwd, dir);
  let stat: fs.Stats;
  try {
    stat = fs.statSync(absolute);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new OptionError(`shared directory '${absolute}' does not exist`);
    throw new OptionError(`cannot access shared directory '${absolute}': ${(error as Error).message}`);
  }
  if (!stat.isDirectory()) throw new OptionError(`shared directory '${absolute}' is not a directory`);
  return absolute;
}

/** Validates library options with the same rules as the command line and builds the device config. */
export function buildDeviceConfig(options: DeviceOptions): DeviceConfig {
  if (options === null || typeof options !== 'object') {
    throw new OptionError('device options must be an object');
  }
  const cwd = options.cwd ?? process.cwd();
  const sharedDir = resolveSharedDir(checkString('sharedDir', options.sharedDir), cwd);

  let socket: SocketConfig;
  if (options.socketPath !== undefined && options.fd !== undefined) {
    throw new OptionError("'socketPath' cannot be used with 'fd'");
  } else if (options.socketPath !== undefined) {
    const group = options.socketGroup === undefined ? null : checkString('socketGroup', options.socketGroup);
    socket = { kind: 'path', path: path.resolve(cwd, checkString('socketPath', options.socketPath)), group };
  } else if (options.fd !== undefined) {
    if (options.socketGroup !== undefined) {
      throw new OptionError("'socketGroup' only applies to a socket created from 'socketPath'");
    }
    socket = { kind: 'fd', fd: checkInteger('fd', options.fd, 0, FD_MAX) };
  } else {
    throw new OptionError("a vhost-user socket is required: set 'socketPath' or 'fd'");
  }

  const tag = options.tag === undefined || options.tag === null ? null : validateTag('tag', String(options.tag));
  const rlimit = options.rlimitNofile;

  const config: DeviceConfig = {
    sharedDir,
    socket,
    tag,
    numRequestQueues: checkInteger('numRequestQueues', options.numRequestQueues ?? 1, 1, MAX_REQUEST_QUEUES),
    queueSize: checkQueueSize(options.queueSize ?? DEFAULT_QUEUE_SIZE),
    threadPoolSize: checkInteger('threadPoolSize', options.threadPoolSize ?? 0, 0, U32_MAX),
    cache: parseEnum('cache', String(options.cache ?? 'auto'), CACHE_POLICIES),
    readonly: checkBoolean('readonly', options.readonly, false),
    readdirplus: checkBoolean('readdirplus', options.readdirplus, true),
    writeback: checkBoolean('writeback', options.writeback, false),
    allowDirectIo: checkBoolean('allowDirectIo', options.allowDirectIo, false),
    allowMmap: checkBoolean('allowMmap', options.allowMmap, false),
    announceSubmounts: checkBoolean('announceSubmounts', options.announceSubmounts, true),
    killprivV2: checkBoolean('killprivV2', options.killprivV2, false),
    xattr: checkBoolean('xattr', options.xattr, false),
    inodeFileHandles: parseEnum('inodeFileHandles', String(options.inodeFileHandles ?? 'never'), FILE_HANDLE_MODES),
    preserveNoatime: checkBoolean('preserveNoatime', options.preserveNoatime, false),
    posixLocks: checkBoolean('posixLocks', options.posixLocks, true),
    flock: checkBoolean('flock', options.flock, true),
    rlimitNofile:
      rlimit === undefined || rlimit === null ? null : checkInteger('rlimitNofile', rlimit, 0, Number.MAX_SAFE_INTEGER),
    logLevel: parseEnum('logLevel', String(options.logLevel ?? 'info'), LOG_LEVELS),
    logTargets: [],
    syslog: false,
    sandbox: parseEnum('sandbox', String(options.sandbox ?? 'namespace'), SANDBOX_MODES),
    seccomp: parseEnum('seccomp', String(options.seccomp ?? 'kill'), SECCOMP_ACTIONS),
    uidMap: checkIdRanges('uidMap', options.uidMap),
    gidMap: checkIdRanges('gidMap', options.gidMap),
    modcaps: options.modcaps === undefined ? { add: [], drop: [] } : parseModcaps('modcaps', checkString('modcaps', options.modcaps)),
  };
  const idMapOption = config.uidMap.length > 0 ? 'uidMap' : config.gidMap.length > 0 ? 'gidMap' : null;
  checkIdMapsAllowed(idMapOption, config.sandbox, process.geteuid?.());
  return config;
}

function checkIdRanges(name: string, ranges: unknown): IdRange[] {
  if (ranges === undefined) return [];
  if (!Array.isArray(ranges)) throw new OptionError(`invalid value for '${name}': expected an array of {inside, outside, count}`);
  return ranges.map((r: unknown) => {
    const range = r as Partial<IdRange> | null;
    if (typeof range !== 'object' || range === null) {
      throw new OptionError(`invalid value for '${name}': expected an array of {inside, outside, count}`);
    }
    const inside = checkInteger(`${name}.inside`, range.inside, 0, U32_MAX);
    const outside = checkInteger(`${name}.outside`, range.outside, 0, U32_MAX);
    const count = checkInteger(`${name}.count`, range.count, 1, U32_MAX);
    if (inside + count - 1 > U32_MAX || outside + count - 1 > U32_MAX) {
      throw new OptionError(`invalid value for '${name}': the range exceeds the 32-bit ID space`);
    }
    return { inside, outside, count };
  });
}

function checkQueueSize(size: unknown): number {
  const checked = checkInteger('queueSize', size, 1, MAX_QUEUE_SIZE);
  // virtio split queues must have a power-of-two size.
  if ((checked & (checked - 1)) !== 0) {
    throw new OptionError(`invalid value '${checked}' for 'queueSize': must be a power of two`);
  }
  return checked;
}

/** Maps parsed command-line options (already checked by `checkRunnable`) to library options. */
export function cliToDeviceOptions(cli: CliOptions, cwd: string = process.cwd()): DeviceOptions {
  if (cli.sharedDir === undefined) throw new OptionError("the shared directory is required: use '--shared-dir <DIR>'");
  return {
    sharedDir: cli.sharedDir,
    socketPath: cli.socketPath ?? cli.socket,
    socketGroup: cli.socketGroup,
    fd: cli.fd,
    tag: cli.tag ?? null,
    cache: cli.cache,
    threadPoolSize: cli.threadPoolSize,
    readonly: cli.readonly,
    readdirplus: !cli.noReaddirplus,
    writeback: cli.writeback,
    allowDirectIo: cli.allowDirectIo,
    allowMmap: cli.allowMmap,
    announceSubmounts: cli.announceSubmounts ?? true,
    killprivV2: cli.killprivV2 ?? false,
    xattr: cli.xattr,
    inodeFileHandles: cli.inodeFileHandles === 'fallback' ? 'prefer' : cli.inodeFileHandles,
    preserveNoatime: cli.preserveNoatime,
    posixLocks: !cli.noPosixLock,
    flock: !cli.noFlock,
    rlimitNofile: cli.rlimitNofile ?? null,
    logLevel: cli.logLevel,
    sandbox: cli.sandbox,
    seccomp: cli.seccomp,
    uidMap: cli.uidMap,
    gidMap: cli.gidMap,
    modcaps: cli.modcaps,
    cwd,
  };
}

/**
 * Validates parsed command-line options and builds the device config, like the library does,
 * plus what only a command-line device has: `--syslog` and the `RUST_LOG` filter.
 */
export function cliConfig(cli: CliOptions, cwd: string = process.cwd(), env: NodeJS.ProcessEnv = process.env): DeviceConfig {
  const config = buildDeviceConfig(cliToDeviceOptions(cli, cwd));
  config.syslog = cli.syslog;
  const rustLog = env.RUST_LOG;
  if (rustLog !== undefined && rustLog.trim() !== '') {
    // As upstream: when set, RUST_LOG decides the levels instead of --log-level.
    const filter = parseRustLog(rustLog);
    config.logLevel = filter.level;
    config.logTargets = filter.targets;
  }
  return config;
}

/**
 * `RUST_LOG` in env_logger's directive syntax: `level`, `target`, `target=level`, comma
 * separated. A bare target means everything from it; the default level without a bare level is
 * `error`, as env_logger has it. The `/regex` message filter is refused, not ignored.
 */
export function parseRustLog(spec: string): { level: LogLevel; targets: LogTarget[] } {
  if (spec.includes('/')) {
    throw new OptionError(`RUST_LOG='${spec}': message filters ('/regex') are not supported`);
  }
  let level: LogLevel = 'error';
  const targets: LogTarget[] = [];
  for (const raw of spec.split(',')) {
    const directive = raw.trim();
    if (directive === '') continue;
    const [name, value, extra] = directive.split('=');
    if (extra !== undefined || name === '') throw new OptionError(`RUST_LOG: invalid directive '${directive}'`);
    const asLevel = (text: string): LogLevel | undefined => {
      const lower = text.toLowerCase();
      return (LOG_LEVELS as readonly string[]).includes(lower) ? (lower as LogLevel) : undefined;
    };
    if (value === undefined) {
      const bare = asLevel(name);
      if (bare !== undefined) level = bare;
      else targets.push({ target: name, level: 'trace' });
      continue;
    }
    const targetLevel = asLevel(value);
    if (targetLevel === undefined) {
      throw new OptionError(`RUST_LOG: invalid level '${value}' in '${directive}': expected one of ${LOG_LEVELS.join(', ')}`);
    }
    targets.push({ target: name, level: targetLevel });
  }
  return { level, targets };
}

/** `ps` shows these after the program name; the device checks them against its configuration. */
export function deviceLabels(config: DeviceConfig): string[] {
  const socket = config.socket.kind === 'path' ? `--socket-path=${config.socket.path}` : `--fd=${config.socket.fd}`;
  return [socket, `--shared-dir=${config.sharedDir}`];
}

/** What a configuration gives up, said before the device starts (by the CLI and the library). */
export function configWarnings(config: DeviceConfig): string[] {
  const warnings: string[] = [];
  if (config.sandbox === 'none') warnings.push('running without a sandbox (--sandbox=none): the daemon is not isolated from the host');
  if (config.seccomp === 'none') warnings.push('running without seccomp (--seccomp=none): every system call is allowed');
  return warnings;
}
