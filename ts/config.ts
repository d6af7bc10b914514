// Compiles library options (and, through them, command-line options) into the JSON device
// configuration understood by the Rust core. Field names of DeviceConfig are that contract.
import fs from 'node:fs';
import path from 'node:path';
import { OptionError } from './errors';
import { DEFAULT_QUEUE_SIZE, MAX_REQUEST_QUEUES } from './generated/schema';
import type { DeviceConfig, InodeFileHandleMode, LogTarget, MigrationMode, MigrationOnError, SocketConfig } from './generated/schema';
import { CliOptions, LIBRARY_OPTIONS } from './options';
import { CLI_NAMING, CompiledPolicies, IdTranslation, LIBRARY_NAMING, PolicyNaming, XattrMapRule, compilePolicies, currentIdentity } from './policy';
import {
  CachePolicy,
  IdRange,
  SandboxMode,
  SeccompAction,
  parseModcaps,
  LOG_LEVELS,
  LogLevel,
  checkIdMapsAllowed,
  checkLibraryValue,
} from './validate';

// The wire types are generated from the Rust configuration types (crates/daemon/src/config/schema.rs).
export type { DeviceConfig, LogTarget, SocketConfig };

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
  /**
   * Serve extended attributes (default false, as upstream; true when any of `posixAcl`,
   * `securityLabel` and `xattrMap` is set, which `xattr: false` contradicts).
   */
  xattr?: boolean;
  /**
   * Offer POSIX ACLs, enforced by the guest kernel (default false). With `translateUid` /
   * `translateGid` the ids inside ACLs are translated too.
   */
  posixAcl?: boolean;
  /** Store the security label (e.g. SELinux context) the guest sends with a new file (default false). */
  securityLabel?: boolean;
  /**
   * Extended-attribute name rules, as `--xattrmap`: rule objects, or a string in upstream's rule
   * language (`':map::user.virtiofs.:'`). Rules that lack a catch-all for guest or host names get
   * a final `bad` rule for all names, with a warning.
   */
  xattrMap?: XattrMapRule[] | string;
  /**
   * UID translation done by the device, as `--translate-uid`: rule objects, or rule strings in
   * upstream's syntax (`'map:1000:101000:1000'`). Two rules may not translate the same ids in one
   * direction; host ids are ids as the device sees them (inside its user namespace when `uidMap`
   * is set, or as an unprivileged namespace device).
   */
  translateUid?: (IdTranslation | string)[];
  /** GID translation done by the device, as `--translate-gid`; see `translateUid`. */
  translateGid?: (IdTranslation | string)[];
  /**
   * Hold looked-up inodes as file handles instead of O_PATH descriptors, so the descriptors the
   * device holds stay bounded however many inodes the guest looks up (default 'prefer', as
   * upstream). 'prefer' uses descriptors where the filesystem makes no handles, and throughout
   * when the device cannot open handles (they need CAP_DAC_READ_SEARCH in the initial user
   * namespace, which an unprivileged device or `modcaps: '-dac_read_search'` lacks), saying so
   * once at info level; 'mandatory' refuses to start then.
   */
  inodeFileHandles?: InodeFileHandleMode;
  /** Honour the guest's O_NOATIME instead of dropping it. */
  preserveNoatime?: boolean;
  /** Serve POSIX record locks (default true). */
  posixLocks?: boolean;
  /** Serve BSD flock locks (default true). */
  flock?: boolean;
  /** `null` keeps the default; 0 leaves the limit unchanged. */
  rlimitNofile?: number | null;
  logLevel?: LogLevel;
  /** The most request queues offered (default: `MAX_REQUEST_QUEUES`, the most there can be); the frontend decides how many it uses. */
  maxRequestQueues?: number;
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
  /**
   * How this device, as a migration source, describes its inodes in the state it sends (default
   * 'find-paths'). 'file-handles' needs source and destination on the same filesystem and
   * CAP_DAC_READ_SEARCH on the destination, which a root device keeps with this mode. A
   * destination reads whichever form the state carries.
   */
  migrationMode?: MigrationMode;
  /** What this device, as a migration destination, does with an inode it cannot restore (default 'abort'). */
  migrationOnError?: MigrationOnError;
  /** With 'find-paths': send each inode's file handle too, so the destination checks it opened the same inode. */
  migrationVerifyHandles?: boolean;
  /** With 'find-paths': check each path again at switch-over and correct moved ones from /proc/self/fd. */
  migrationConfirmPaths?: boolean;
  /**
   * Keep the device up when the frontend disconnects, and serve the next frontend with a fresh
   * FUSE session (default false: the disconnect ends the device). The device emits
   * `disconnected` and `connected` events.
   */
  reconnect?: boolean;
  cwd?: string;
}

export { DEFAULT_QUEUE_SIZE };

/** Close spellings of `key` among the known keys (case or up to two edits apart), for the message. */
function closestKey(key: string): string | undefined {
  const distance = (a: string, b: string): number => {
    let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
    for (let i = 1; i <= a.length; i += 1) {
      const current = [i];
      for (let j = 1; j <= b.length; j += 1) {
        current[j] = Math.min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
      }
      previous = current;
    }
    return previous[b.length];
  };
  const known = [...LIBRARY_OPTIONS.keys()];
  return known.find((name) => name.toLowerCase() === key.toLowerCase()) ?? known.find((name) => distance(name, key) <= 2);
}

/**
 * Refuses, before anything else happens, keys that no option has (a misspelt `readOnly` must not
 * start a read-write share) and values of the wrong type or outside the device's limits. The keys
 * and checks come from the option table (./options). `undefined` means "not set".
 */
export function checkDeviceOptions(options: unknown): DeviceOptions {
  if (options === null || typeof options !== 'object' || Array.isArray(options)) {
    throw new OptionError('device options must be an object', 'usage', { reason: 'invalid-type' });
  }
  for (const [key, value] of Object.entries(options)) {
    const option = LIBRARY_OPTIONS.get(key);
    if (option === undefined) {
      const close = closestKey(key);
      throw new OptionError(`unknown option '${key}'${close === undefined ? '' : ` (did you mean '${close}'?)`}`, 'usage', {
        key,
        reason: 'unknown-option',
      });
    }
    if (value === undefined || (value === null && option.nullable === true)) continue;
    checkLibraryValue(key, value, option.check);
  }
  return options as DeviceOptions;
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

/** A compiled device configuration, what its options give up, and where each policy rule came from. */
export interface CompiledDevice {
  config: DeviceConfig;
  /** Said before the device starts, by the CLI and the library. */
  warnings: string[];
  sources: CompiledPolicies['sources'];
}

/** Validates library options with the same rules as the command line and builds the device config. */
export function buildDeviceConfig(input: DeviceOptions): DeviceConfig {
  return compileDevice(input).config;
}

/**
 * `buildDeviceConfig` with its warnings; `naming` says how messages name the options (the
 * command line's names for a command-line device).
 */
export function compileDevice(input: DeviceOptions, naming: PolicyNaming = LIBRARY_NAMING): CompiledDevice {
  const options = checkDeviceOptions(input);
  const cwd = options.cwd ?? process.cwd();
  if (options.sharedDir === undefined) {
    throw new OptionError("the shared directory is required: set 'sharedDir'", 'usage', { key: 'sharedDir', reason: 'missing' });
  }
  const sharedDir = resolveSharedDir(options.sharedDir, cwd);

  let socket: SocketConfig;
  if (options.socketPath !== undefined && options.fd !== undefined) {
    throw new OptionError("'socketPath' cannot be used with 'fd'", 'usage', { key: 'fd', reason: 'conflict' });
  } else if (options.socketPath !== undefined) {
    socket = { kind: 'path', path: path.resolve(cwd, options.socketPath), group: options.socketGroup ?? null };
  } else if (options.fd !== undefined) {
    if (options.socketGroup !== undefined) {
      throw new OptionError("'socketGroup' only applies to a socket created from 'socketPath'", 'usage', {
        key: 'socketGroup',
        reason: 'conflict',
      });
    }
    socket = { kind: 'fd', fd: options.fd };
  } else {
    throw new OptionError("a vhost-user socket is required: set 'socketPath' or 'fd'", 'usage', { key: 'socketPath', reason: 'missing' });
  }

  const sandbox = options.sandbox ?? 'namespace';
  const uidMap = (options.uidMap ?? []).map(copyRange);
  const gidMap = (options.gidMap ?? []).map(copyRange);
  const idMapOption = uidMap.length > 0 ? 'uidMap' : gidMap.length > 0 ? 'gidMap' : null;
  checkIdMapsAllowed(idMapOption, sandbox, process.geteuid?.());
  const policies = compileDeviceOptionsPolicies(options, { sandbox, uidMap, gidMap }, naming);
  const migrationMode = options.migrationMode ?? 'find-paths';
  checkMigrationOptions(options, migrationMode, naming);
  const modcaps = options.modcaps === undefined ? { add: [], drop: [] } : parseModcaps('modcaps', options.modcaps);
  checkFileHandleCapability(options, migrationMode, modcaps.drop, naming);

  const config: DeviceConfig = {
    sharedDir,
    socket,
    tag: options.tag ?? null,
    maxRequestQueues: options.maxRequestQueues ?? MAX_REQUEST_QUEUES,
    queueSize: options.queueSize ?? DEFAULT_QUEUE_SIZE,
    threadPoolSize: options.threadPoolSize ?? 0,
    cache: options.cache ?? 'auto',
    readonly: options.readonly ?? false,
    readdirplus: options.readdirplus ?? true,
    writeback: options.writeback ?? false,
    allowDirectIo: options.allowDirectIo ?? false,
    allowMmap: options.allowMmap ?? false,
    announceSubmounts: options.announceSubmounts ?? true,
    killprivV2: options.killprivV2 ?? false,
    xattr: policies.xattr,
    posixAcl: options.posixAcl ?? false,
    securityLabel: options.securityLabel ?? false,
    xattrMap: policies.compiled.xattrMap,
    inodeFileHandles: options.inodeFileHandles ?? 'prefer',
    preserveNoatime: options.preserveNoatime ?? false,
    posixLocks: options.posixLocks ?? true,
    flock: options.flock ?? true,
    rlimitNofile: options.rlimitNofile ?? null,
    logLevel: options.logLevel ?? 'info',
    logTargets: [],
    syslog: false,
    sandbox,
    seccomp: options.seccomp ?? 'kill',
    // Copies: the caller's objects stay theirs.
    uidMap,
    gidMap,
    translateUid: policies.compiled.translateUid,
    translateGid: policies.compiled.translateGid,
    modcaps,
    migrationMode,
    migrationOnError: options.migrationOnError ?? 'abort',
    migrationVerifyHandles: options.migrationVerifyHandles ?? false,
    migrationConfirmPaths: options.migrationConfirmPaths ?? false,
    reconnect: options.reconnect ?? false,
  };
  return { config, warnings: [...policies.compiled.warnings, ...configWarnings(config)], sources: policies.compiled.sources };
}

/**
 * The policy part of checked library options: the compiled tables, and whether extended
 * attributes are served (`posixAcl`, `securityLabel` and `xattrMap` need them: they imply `xattr`,
 * and an explicit `xattr: false` beside them is refused rather than overridden).
 */
export function compileDeviceOptionsPolicies(
  options: Partial<DeviceOptions>,
  device: { sandbox: DeviceConfig['sandbox']; uidMap: IdRange[]; gidMap: IdRange[] },
  naming: PolicyNaming = LIBRARY_NAMING,
): { compiled: CompiledPolicies; xattr: boolean } {
  const needing = [
    options.posixAcl === true ? 'posixAcl' : null,
    options.securityLabel === true ? 'securityLabel' : null,
    options.xattrMap !== undefined ? 'xattrMap' : null,
  ].filter((key): key is string => key !== null);
  if (options.xattr === false && needing.length > 0) {
    throw new OptionError(`'${needing[0]}' needs extended attributes, which 'xattr: false' turns off: leave 'xattr' unset or true`, 'usage', {
      key: 'xattr',
      reason: 'conflict',
    });
  }
  const compiled = compilePolicies(options, { ...device, identity: currentIdentity() }, naming);
  return { compiled, xattr: options.xattr === true || needing.length > 0 };
}

/**
 * As upstream: the path checks only mean something when inodes travel as paths; file handles
 * already name the very inodes.
 */
function checkMigrationOptions(options: DeviceOptions, mode: MigrationMode, naming: PolicyNaming): void {
  if (mode !== 'file-handles') return;
  for (const [key, cliName] of [
    ['migrationVerifyHandles', '--migration-verify-handles'],
    ['migrationConfirmPaths', '--migration-confirm-paths'],
  ] as const) {
    if (options[key] !== true) continue;
    const message = naming.cli
      ? `'${cliName}' cannot be used with '--migration-mode=file-handles' (because it is unnecessary: file handles name the very inodes)`
      : `'${key}' cannot be used with migrationMode 'file-handles' (because it is unnecessary: file handles name the very inodes)`;
    throw new OptionError(message, 'usage', { key: naming.cli ? cliName : key, reason: 'conflict' });
  }
}

/**
 * A device that must open file handles (mandatory inode file handles, or a file-handle
 * migration) keeps CAP_DAC_READ_SEARCH, so `modcaps` may not drop it. 'prefer', the default,
 * falls back to descriptors without it instead.
 */
function checkFileHandleCapability(options: DeviceOptions, mode: MigrationMode, dropped: readonly string[], naming: PolicyNaming): void {
  if (!dropped.includes('dac_read_search')) return;
  const modcaps = naming.cli ? '--modcaps' : 'modcaps';
  let needing: string | null = null;
  if (options.inodeFileHandles === 'mandatory') {
    needing = naming.cli ? '--inode-file-handles=mandatory' : "inodeFileHandles 'mandatory'";
  } else if (mode === 'file-handles') {
    needing = naming.cli ? '--migration-mode=file-handles' : "migrationMode 'file-handles'";
  }
  if (needing === null) return;
  throw new OptionError(`'${modcaps}' cannot drop dac_read_search with ${needing}, which opens file handles`, 'usage', {
    key: modcaps,
    reason: 'conflict',
  });
}

function copyRange({ inside, outside, count }: IdRange): IdRange {
  return { inside, outside, count };
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
    maxRequestQueues: cli.maxRequestQueues,
    readonly: cli.readonly,
    readdirplus: !cli.noReaddirplus,
    writeback: cli.writeback,
    allowDirectIo: cli.allowDirectIo,
    allowMmap: cli.allowMmap,
    announceSubmounts: cli.announceSubmounts ?? true,
    killprivV2: cli.killprivV2 ?? false,
    // As upstream, each of these implies --xattr, also after `-o no_xattr`.
    xattr: cli.xattr || cli.posixAcl || cli.securityLabel || cli.xattrmap !== undefined,
    posixAcl: cli.posixAcl,
    securityLabel: cli.securityLabel,
    xattrMap: cli.xattrmap,
    translateUid: cli.translateUid,
    translateGid: cli.translateGid,
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
    migrationMode: cli.migrationMode,
    migrationOnError: cli.migrationOnError,
    migrationVerifyHandles: cli.migrationVerifyHandles,
    migrationConfirmPaths: cli.migrationConfirmPaths,
    reconnect: cli.reconnect,
    cwd,
  };
}

/**
 * Validates parsed command-line options and builds the device config, like the library does,
 * plus what only a command-line device has: `--syslog` and the `RUST_LOG` filter.
 */
export function cliConfig(cli: CliOptions, cwd: string = process.cwd(), env: NodeJS.ProcessEnv = process.env): DeviceConfig {
  return cliCompile(cli, cwd, env).config;
}

/** `cliConfig` with its warnings, which name the command-line options. */
export function cliCompile(cli: CliOptions, cwd: string = process.cwd(), env: NodeJS.ProcessEnv = process.env): CompiledDevice {
  const compiled = compileDevice(cliToDeviceOptions(cli, cwd), CLI_NAMING);
  const { config } = compiled;
  config.syslog = cli.syslog;
  const rustLog = env.RUST_LOG;
  if (rustLog !== undefined && rustLog.trim() !== '') {
    // As upstream: when set, RUST_LOG decides the levels instead of --log-level.
    const filter = parseRustLog(rustLog);
    config.logLevel = filter.level;
    config.logTargets = filter.targets;
  }
  return compiled;
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

/**
 * What a configuration gives up, said before the device starts (by the CLI and the library);
 * `euid` is the user the device runs as.
 */
export function configWarnings(config: DeviceConfig, euid: number | undefined = process.geteuid?.()): string[] {
  const warnings: string[] = [];
  if (config.sandbox === 'none') warnings.push('running without a sandbox (--sandbox=none): the daemon is not isolated from the host');
  if (config.seccomp === 'none') warnings.push('running without seccomp (--seccomp=none): every system call is allowed');
  if (config.migrationMode === 'file-handles' && euid !== 0) {
    // The mode is the source's; a destination opens whatever handles the state carries.
    warnings.push(
      'migration with file handles (--migration-mode=file-handles): this unprivileged daemon can send such a state, ' +
        'but as a migration destination it could not open the handles (that needs CAP_DAC_READ_SEARCH)',
    );
  }
  return warnings;
}
