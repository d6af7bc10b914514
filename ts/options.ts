// Hand-written parser for the upstream virtiofsd 1.13 command line. It has no dependency so that
// `--help`, `--version` and `--print-capabilities` stay cheap and never load the native binding.
import { NotSupportedError, OptionError } from './errors';
import {
  CACHE_POLICIES,
  CachePolicy,
  INODE_FILE_HANDLES,
  InodeFileHandles,
  IdRange,
  IdTranslation,
  LogLevel,
  MIGRATION_MODES,
  MIGRATION_ON_ERROR,
  MigrationMode,
  MigrationOnError,
  SANDBOX_MODES,
  SECCOMP_ACTIONS,
  SandboxMode,
  SeccompAction,
  U32_MAX,
  parseEnum,
  parseFd,
  parseIdRange,
  parseIdTranslation,
  parseLogLevel,
  parseUint,
  validateModcaps,
  validateNonEmpty,
  validateTag,
  validateXattrmap,
  checkIdMapsAllowed,
} from './validate';

/** Everything the command line can say, after value validation. Absent = not given. */
export interface CliOptions {
  sharedDir?: string;
  tag?: string;
  socket?: string;
  socketPath?: string;
  socketGroup?: string;
  fd?: number;
  threadPoolSize?: number;
  xattr: boolean;
  posixAcl: boolean;
  xattrmap?: string;
  sandbox?: SandboxMode;
  readonly: boolean;
  seccomp?: SeccompAction;
  announceSubmounts?: boolean;
  inodeFileHandles?: InodeFileHandles;
  cache?: CachePolicy;
  allowMmap: boolean;
  noReaddirplus: boolean;
  writeback: boolean;
  allowDirectIo: boolean;
  printCapabilities: boolean;
  modcaps?: string;
  logLevel?: LogLevel;
  syslog: boolean;
  rlimitNofile?: number;
  killprivV2?: boolean;
  securityLabel: boolean;
  uidMap: IdRange[];
  gidMap: IdRange[];
  translateUid: IdTranslation[];
  translateGid: IdTranslation[];
  preserveNoatime: boolean;
  /** From `-o no_flock` / `-o no_posix_lock`. */
  noFlock: boolean;
  noPosixLock: boolean;
  migrationMode?: MigrationMode;
  migrationOnError?: MigrationOnError;
  migrationVerifyHandles: boolean;
  migrationConfirmPaths: boolean;
  help: boolean;
  version: boolean;
}

/** Result of parsing argv: the options, deprecation warnings, and options we cannot honour yet. */
export interface ParsedArgs {
  options: CliOptions;
  warnings: string[];
  /** Canonical spelling of each option that is valid but not implemented, in command-line order. */
  unsupported: string[];
}

type Mutable = CliOptions;

interface OptionSpec {
  long?: string;
  short?: string;
  /** `true` when the option takes a value. */
  takesValue: boolean;
  /** Upstream declares some options `require_equals`: `--opt=value` only. */
  requireEquals?: boolean;
  apply(opts: Mutable, value: string, ctx: ApplyContext): void;
}

interface ApplyContext {
  /** The option name as shown in messages, e.g. `--cache`. */
  name: string;
  warn(message: string): void;
  unsupported(option: string): void;
  compat: string[];
}

const flag = (long: string, apply: (opts: Mutable, ctx: ApplyContext) => void): OptionSpec => ({
  long,
  takesValue: false,
  apply: (opts, _value, ctx) => apply(opts, ctx),
});

const value = (long: string, apply: (opts: Mutable, value: string, ctx: ApplyContext) => void): OptionSpec => ({
  long,
  takesValue: true,
  apply,
});

/** Flags whose only effect is to be refused until they are implemented. */
const unsupportedFlag = (long: string, set: (opts: Mutable) => void): OptionSpec =>
  flag(long, (opts, ctx) => {
    set(opts);
    ctx.unsupported(`--${long}`);
  });

const SPECS: OptionSpec[] = [
  value('shared-dir', (o, v, c) => (o.sharedDir = validateNonEmpty(c.name, v))),
  value('tag', (o, v, c) => (o.tag = validateTag(c.name, v))),
  value('socket', (o, v, c) => {
    o.socket = validateNonEmpty(c.name, v);
    c.warn("--socket is deprecated, use '--socket-path' instead");
  }),
  value('socket-path', (o, v, c) => (o.socketPath = validateNonEmpty(c.name, v))),
  value('socket-group', (o, v, c) => (o.socketGroup = validateNonEmpty(c.name, v))),
  value('fd', (o, v, c) => (o.fd = parseFd(c.name, v))),
  value('thread-pool-size', (o, v, c) => (o.threadPoolSize = parseUint(c.name, v, U32_MAX))),
  flag('xattr', (o) => (o.xattr = true)),
  unsupportedFlag('posix-acl', (o) => (o.posixAcl = true)),
  value('xattrmap', (o, v, c) => {
    o.xattrmap = validateXattrmap(c.name, v);
    c.unsupported('--xattrmap');
  }),
  value('sandbox', (o, v, c) => {
    o.sandbox = parseEnum(c.name, v, SANDBOX_MODES);
  }),
  flag('readonly', (o) => (o.readonly = true)),
  value('seccomp', (o, v, c) => {
    o.seccomp = parseEnum(c.name, v, SECCOMP_ACTIONS);
  }),
  flag('announce-submounts', (o) => (o.announceSubmounts = true)),
  flag('no-announce-submounts', (o) => (o.announceSubmounts = false)),
  {
    long: 'inode-file-handles',
    takesValue: true,
    requireEquals: true,
    apply: (o, v, c) => {
      const mode = parseEnum(c.name, v, INODE_FILE_HANDLES);
      if (mode === 'fallback') c.warn("--inode-file-handles=fallback is deprecated, use '--inode-file-handles=prefer' instead");
      o.inodeFileHandles = mode === 'fallback' ? 'prefer' : mode;
    },
  },
  value('cache', (o, v, c) => (o.cache = parseEnum(c.name, v, CACHE_POLICIES))),
  flag('allow-mmap', (o) => (o.allowMmap = true)),
  flag('no-readdirplus', (o) => (o.noReaddirplus = true)),
  flag('writeback', (o) => (o.writeback = true)),
  flag('allow-direct-io', (o) => (o.allowDirectIo = true)),
  flag('print-capabilities', (o) => (o.printCapabilities = true)),
  value('modcaps', (o, v, c) => {
    o.modcaps = validateModcaps(c.name, v);
  }),
  value('log-level', (o, v, c) => (o.logLevel = parseLogLevel(c.name, v))),
  unsupportedFlag('syslog', (o) => (o.syslog = true)),
  // 0 is meaningful upstream: leave the limit unchanged.
  value('rlimit-nofile', (o, v, c) => (o.rlimitNofile = parseUint(c.name, v, Number.MAX_SAFE_INTEGER))),
  {
    short: 'o',
    takesValue: true,
    apply: (_o, v, c) => {
      c.compat.push(v);
    },
  },
  {
    short: 'd',
    takesValue: false,
    apply: (o, _v, c) => {
      o.logLevel = 'debug';
      c.warn("-d is deprecated, use '--log-level=debug' instead");
    },
  },
  flag('no-killpriv-v2', (o) => (o.killprivV2 = false)),
  flag('killpriv-v2', (o) => (o.killprivV2 = true)),
  // Upstream keeps -f for old scripts; it has no effect (the daemon always stays in the foreground).
  { short: 'f', takesValue: false, apply: () => undefined },
  unsupportedFlag('security-label', (o) => (o.securityLabel = true)),
  value('uid-map', (o, v, c) => {
    o.uidMap.push(parseIdRange(c.name, v));
  }),
  value('gid-map', (o, v, c) => {
    o.gidMap.push(parseIdRange(c.name, v));
  }),
  value('translate-uid', (o, v, c) => {
    o.translateUid.push(parseIdTranslation(c.name, v));
    c.unsupported('--translate-uid');
  }),
  value('translate-gid', (o, v, c) => {
    o.translateGid.push(parseIdTranslation(c.name, v));
    c.unsupported('--translate-gid');
  }),
  flag('preserve-noatime', (o) => (o.preserveNoatime = true)),
  value('migration-mode', (o, v, c) => {
    o.migrationMode = parseEnum(c.name, v, MIGRATION_MODES);
    c.unsupported('--migration-mode');
  }),
  value('migration-on-error', (o, v, c) => {
    o.migrationOnError = parseEnum(c.name, v, MIGRATION_ON_ERROR);
    c.unsupported('--migration-on-error');
  }),
  unsupportedFlag('migration-verify-handles', (o) => (o.migrationVerifyHandles = true)),
  unsupportedFlag('migration-confirm-paths', (o) => (o.migrationConfirmPaths = true)),
  { long: 'help', short: 'h', takesValue: false, apply: (o) => (o.help = true) },
  { long: 'version', short: 'V', takesValue: false, apply: (o) => (o.version = true) },
];

const BY_LONG = new Map(SPECS.filter((s) => s.long).map((s) => [s.long as string, s]));
const BY_SHORT = new Map(SPECS.filter((s) => s.short).map((s) => [s.short as string, s]));

/** Every long option name, for help-text completeness tests. */
export const LONG_OPTIONS: readonly string[] = [...BY_LONG.keys()];
export const SHORT_OPTIONS: readonly string[] = [...BY_SHORT.keys()];

function defaults(): CliOptions {
  return {
    xattr: false,
    posixAcl: false,
    readonly: false,
    allowMmap: false,
    noReaddirplus: false,
    writeback: false,
    allowDirectIo: false,
    printCapabilities: false,
    syslog: false,
    securityLabel: false,
    uidMap: [],
    gidMap: [],
    translateUid: [],
    translateGid: [],
    preserveNoatime: false,
    noFlock: false,
    noPosixLock: false,
    migrationVerifyHandles: false,
    migrationConfirmPaths: false,
    help: false,
    version: false,
  };
}

/**
 * Parses argv (without the node and script entries). Throws OptionError on the first syntax or
 * value error. Unsupported-but-valid options are collected, not thrown, so that `--help` and
 * `--print-capabilities` still work next to them; `checkRunnable` refuses them.
 */
export function parseArgs(argv: readonly string[]): ParsedArgs {
  const options = defaults();
  const warnings: string[] = [];
  const unsupported: string[] = [];
  const compat: string[] = [];
  const context = (name: string): ApplyContext => ({
    name,
    warn: (message) => warnings.push(message),
    unsupported: (option) => unsupported.push(option),
    compat,
  });

  for (let i = 0; i < argv.length; i += 1) {
    const arg = argv[i];
    if (arg === '--') {
      // No positional arguments exist, so anything after `--` is unexpected.
      if (i + 1 < argv.length) throw new OptionError(`unexpected argument '${argv[i + 1]}'`);
      continue;
    }
    if (arg.startsWith('--')) {
      const eq = arg.indexOf('=');
      const name = eq === -1 ? arg.slice(2) : arg.slice(2, eq);
      const spec = BY_LONG.get(name);
      if (spec === undefined) throw new OptionError(`unexpected argument '--${name}'`);
      const display = `--${name}`;
      if (!spec.takesValue) {
        if (eq !== -1) throw new OptionError(`unexpected value '${arg.slice(eq + 1)}' for '${display}'`);
        spec.apply(options, '', context(display));
        continue;
      }
      let optionValue: string;
      if (eq !== -1) {
        optionValue = arg.slice(eq + 1);
      } else if (spec.requireEquals) {
        throw new OptionError(`'${display}' needs its value after an equal sign (${display}=VALUE)`);
      } else {
        if (i + 1 >= argv.length) throw new OptionError(`a value is required for '${display}'`);
        i += 1;
        optionValue = argv[i];
      }
      spec.apply(options, optionValue, context(display));
      continue;
    }
    if (arg.startsWith('-') && arg.length > 1) {
      // A cluster of short flags (`-df`); a value-taking short consumes the rest or the next arg.
      for (let j = 1; j < arg.length; j += 1) {
        const letter = arg.charAt(j);
        const spec = BY_SHORT.get(letter);
        const display = `-${letter}`;
        if (spec === undefined) throw new OptionError(`unexpected argument '${display}'`);
        if (!spec.takesValue) {
          spec.apply(options, '', context(display));
          continue;
        }
        let optionValue = arg.slice(j + 1);
        if (optionValue.startsWith('=')) optionValue = optionValue.slice(1);
        if (optionValue.length === 0) {
          if (i + 1 >= argv.length) throw new OptionError(`a value is required for '${display}'`);
          i += 1;
          optionValue = argv[i];
        }
        spec.apply(options, optionValue, context(display));
        break;
      }
      continue;
    }
    throw new OptionError(`unexpected argument '${arg}'`);
  }

  if (compat.length > 0) {
    warnings.push("the '-o' option format is deprecated; use the long options instead (e.g. '--cache=auto' for '-o cache=auto')");
    // Upstream applies legacy options after the regular ones, so they win.
    for (const list of compat) applyCompat(options, list, unsupported);
  }
  return { options, warnings, unsupported };
}

/** Upstream spells `--cache=never` as `none` in legacy syntax. */
const COMPAT_CACHE: Record<string, CachePolicy> = { none: 'never', auto: 'auto', always: 'always', metadata: 'metadata' };

/**
 * Applies one `-o a,b=c` list with upstream 1.13 semantics. Options that the old C daemon had but
 * upstream 1.13 rejects (`log_level=`, `timeout=`, `flock`, `posix_lock`, ...) are rejected here too,
 * so scripts behave the same with either daemon.
 */
function applyCompat(options: CliOptions, list: string, unsupported: string[]): void {
  for (const item of list.split(',')) {
    const eq = item.indexOf('=');
    const key = eq === -1 ? item : item.slice(0, eq);
    const arg = eq === -1 ? null : item.slice(eq + 1);
    const bad = (): OptionError => new OptionError(`invalid compat argument '-o ${item}'`);
    const badValue = (): OptionError => new OptionError(`invalid compat value '${arg}' for '-o ${key}'`);
    const noValue = (): void => {
      if (arg !== null) throw bad();
    };
    switch (key) {
      case 'source':
        if (arg === null) throw bad();
        options.sharedDir = validateNonEmpty('-o source', arg);
        break;
      case 'cache': {
        if (arg === null) throw bad();
        if (!Object.hasOwn(COMPAT_CACHE, arg)) throw badValue();
        options.cache = COMPAT_CACHE[arg];
        break;
      }
      case 'sandbox':
        if (arg === null) throw bad();
        if (arg !== 'namespace' && arg !== 'chroot') throw badValue();
        options.sandbox = arg;
        break;
      case 'modcaps':
        if (arg === null) throw bad();
        options.modcaps = validateModcaps('-o modcaps', arg);
        break;
      case 'xattr':
        noValue();
        options.xattr = true;
        break;
      case 'no_xattr':
        noValue();
        options.xattr = false;
        break;
      case 'no_flock':
        // Upstream accepts these for old scripts and serves no locks at all; here they turn off
        // the lock support that is on by default.
        noValue();
        options.noFlock = true;
        break;
      case 'no_posix_lock':
        noValue();
        options.noPosixLock = true;
        break;
      case 'readdirplus':
        noValue();
        options.noReaddirplus = false;
        break;
      case 'no_readdirplus':
        noValue();
        options.noReaddirplus = true;
        break;
      case 'writeback':
        noValue();
        options.writeback = true;
        break;
      case 'no_writeback':
        noValue();
        options.writeback = false;
        break;
      case 'allow_direct_io':
        noValue();
        options.allowDirectIo = true;
        break;
      case 'no_allow_direct_io':
        noValue();
        options.allowDirectIo = false;
        break;
      case 'announce_submounts':
        noValue();
        options.announceSubmounts = true;
        break;
      case 'killpriv_v2':
        noValue();
        options.killprivV2 = true;
        break;
      case 'no_killpriv_v2':
        noValue();
        options.killprivV2 = false;
        break;
      default:
        throw bad();
    }
  }
}

/**
 * Refuses what a daemon run cannot honour: unsupported options first (the most actionable message),
 * then missing or conflicting required options.
 */
export function checkRunnable(parsed: ParsedArgs): void {
  if (parsed.unsupported.length > 0) throw new NotSupportedError(parsed.unsupported[0]);
  const { options } = parsed;
  if (options.sharedDir === undefined) {
    throw new OptionError("the shared directory is required: use '--shared-dir <DIR>'");
  }
  const endpoints = [
    options.socketPath !== undefined ? '--socket-path' : null,
    options.socket !== undefined ? '--socket' : null,
    options.fd !== undefined ? '--fd' : null,
  ].filter((name): name is string => name !== null);
  if (endpoints.length === 0) {
    throw new OptionError("a vhost-user socket is required: use '--socket-path <PATH>' or '--fd <FD>'");
  }
  if (endpoints.length > 1) {
    throw new OptionError(`'${endpoints[0]}' cannot be used with '${endpoints[1]}'`);
  }
  if (options.socketGroup !== undefined && options.fd !== undefined) {
    throw new OptionError("'--socket-group' only applies to a socket created with '--socket-path'");
  }
  const idMapOption = options.uidMap.length > 0 ? '--uid-map' : options.gidMap.length > 0 ? '--gid-map' : null;
  checkIdMapsAllowed(idMapOption, options.sandbox ?? 'namespace', process.geteuid?.());
}
