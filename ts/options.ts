// Hand-written parser for the upstream virtiofsd 1.13 command line. It has no dependency so that
// `--help`, `--version` and `--print-capabilities` stay cheap and never load the native binding.
import type { DeviceOptions } from './config';
import { NotSupportedError, OptionError } from './errors';
import {
  INODE_FILE_HANDLE_MODES,
  MAX_QUEUE_SIZE,
  MAX_REQUEST_QUEUES,
  MAX_RLIMIT_NOFILE,
  MAX_SOCKET_FD,
  MAX_TAG_BYTES,
  MAX_THREAD_POOL_SIZE,
  MIN_QUEUE_SIZE,
  MIN_REQUEST_QUEUES,
} from './generated/schema';
import {
  CACHE_POLICIES,
  CachePolicy,
  INODE_FILE_HANDLES,
  InodeFileHandles,
  IdRange,
  LogLevel,
  MIGRATION_MODES,
  MIGRATION_ON_ERROR,
  MigrationMode,
  MigrationOnError,
  SANDBOX_MODES,
  SECCOMP_ACTIONS,
  SandboxMode,
  SeccompAction,
  LOG_LEVELS,
  ValueCheck,
  parseEnum,
  parseFd,
  parseIdRange,
  parseLogLevel,
  parseUint,
  validateModcaps,
  validateNonEmpty,
  validateTag,
  checkIdMapsAllowed,
} from './validate';
import { parseIdTranslation, parseXattrMap } from './policy';

/** Everything the command line can say, after value validation. Absent = not given. */
export interface CliOptions {
  sharedDir?: string;
  tag?: string;
  socket?: string;
  socketPath?: string;
  socketGroup?: string;
  fd?: number;
  threadPoolSize?: number;
  maxRequestQueues?: number;
  xattr: boolean;
  posixAcl: boolean;
  /** The `--xattrmap` (or `-o xattrmap=`) rules as written, checked. */
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
  /** `--translate-uid` rules as written, each checked; compiled with the other options. */
  translateUid: string[];
  translateGid: string[];
  preserveNoatime: boolean;
  /** From `-o no_flock` / `-o no_posix_lock`. */
  noFlock: boolean;
  noPosixLock: boolean;
  migrationMode?: MigrationMode;
  migrationOnError?: MigrationOnError;
  migrationVerifyHandles: boolean;
  migrationConfirmPaths: boolean;
  reconnect: boolean;
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

/** What `--help` and the man page say about an option; both are generated from this table. */
export interface OptionHelp {
  /** The value's placeholder; the long name in capitals by default (`--log-level <LOG_LEVEL>`). */
  valueName?: string;
  /** One paragraph, wrapped by the renderer. */
  text: string;
  /** Printed as `[default: …]` on a line of its own. */
  default?: string;
  /** A flag that states the default behaviour: ` [default]` after the text. */
  isDefault?: boolean;
  deprecated?: boolean;
}

export interface OptionSpec {
  long?: string;
  short?: string;
  /** `true` when the option takes a value. */
  takesValue: boolean;
  /** Upstream declares some options `require_equals`: `--opt=value` only. */
  requireEquals?: boolean;
  /** Valid upstream but not implemented here: its syntax is checked, then `checkRunnable` refuses it. */
  notSupported?: boolean;
  help: OptionHelp;
  /** The library option (key of `DeviceOptions`) this option sets, and how a library value is checked. */
  sets?: LibraryOption;
  apply(opts: Mutable, value: string, ctx: ApplyContext): void;
}

/** A key of the library's `DeviceOptions`. */
export type LibraryKey = keyof DeviceOptions;

export interface LibraryOption {
  key: LibraryKey;
  check: ValueCheck;
  /** `null` is accepted and means "not set". */
  nullable?: boolean;
}

interface ApplyContext {
  /** The option name as shown in messages, e.g. `--cache`. */
  name: string;
  warn(message: string): void;
  compat: string[];
}

const flag = (long: string, help: OptionHelp, apply: (opts: Mutable, ctx: ApplyContext) => void, sets?: LibraryOption): OptionSpec => ({
  long,
  takesValue: false,
  help,
  sets,
  apply: (opts, _value, ctx) => apply(opts, ctx),
});

const value = (
  long: string,
  help: OptionHelp,
  apply: (opts: Mutable, value: string, ctx: ApplyContext) => void,
  sets?: LibraryOption,
): OptionSpec => ({
  long,
  takesValue: true,
  help,
  sets,
  apply,
});

// The library checks; command-line values of the same options are parsed with the same limits.
const BOOLEAN: ValueCheck = { type: 'boolean' };
const STRING: ValueCheck = { type: 'string' };
const SOCKET_FD = { type: 'integer', min: 0, max: MAX_SOCKET_FD } as const;
const THREAD_POOL_SIZE = { type: 'integer', min: 0, max: MAX_THREAD_POOL_SIZE } as const;
const REQUEST_QUEUES = { type: 'integer', min: MIN_REQUEST_QUEUES, max: MAX_REQUEST_QUEUES } as const;
const RLIMIT_NOFILE = { type: 'integer', min: 0, max: MAX_RLIMIT_NOFILE } as const;
const enumOf = (values: readonly string[]): ValueCheck => ({ type: 'enum', values });
const sets = (key: LibraryKey, check: ValueCheck, nullable?: boolean): LibraryOption => ({ key, check, nullable });

/**
 * Every option of upstream virtiofsd 1.13, in its `--help` order: the parser, `--help` and the man
 * page all read this table.
 */
export const OPTION_TABLE: readonly OptionSpec[] = [
  value(
    'shared-dir',
    { text: 'Directory to share with the guest' },
    (o, v, c) => (o.sharedDir = validateNonEmpty(c.name, v)),
    sets('sharedDir', STRING),
  ),
  value(
    'tag',
    {
      text:
        `Tag the device reports to the guest (1 to ${MAX_TAG_BYTES} bytes). The frontend may ignore it: QEMU does not ` +
        'negotiate the vhost-user CONFIG feature, so the tag set on its -device wins',
    },
    (o, v, c) => (o.tag = validateTag(c.name, v)),
    sets('tag', { type: 'tag' }, true),
  ),
  value(
    'socket',
    { text: 'Old name of --socket-path', deprecated: true },
    (o, v, c) => {
      o.socket = validateNonEmpty(c.name, v);
      c.warn("--socket is deprecated, use '--socket-path' instead");
    },
    sets('socketPath', STRING),
  ),
  value(
    'socket-path',
    { text: 'Create and listen on this vhost-user UNIX socket' },
    (o, v, c) => (o.socketPath = validateNonEmpty(c.name, v)),
    sets('socketPath', STRING),
  ),
  value(
    'socket-group',
    { text: 'Give this group ownership of the vhost-user socket' },
    (o, v, c) => (o.socketGroup = validateNonEmpty(c.name, v)),
    sets('socketGroup', STRING),
  ),
  value(
    'fd',
    { text: 'Use an inherited file descriptor that is a listening, not yet connected socket' },
    (o, v, c) => (o.fd = parseFd(c.name, v)),
    sets('fd', SOCKET_FD),
  ),
  value(
    'thread-pool-size',
    {
      text: `Upper bound of worker threads for requests, at most ${MAX_THREAD_POOL_SIZE}; 0 handles requests on the queue thread`,
      default: '0',
    },
    (o, v, c) => (o.threadPoolSize = parseUint(c.name, v, THREAD_POOL_SIZE.max, THREAD_POOL_SIZE.min)),
    sets('threadPoolSize', THREAD_POOL_SIZE),
  ),
  value(
    'max-request-queues',
    {
      text: `Offer at most this many request queues, at most ${MAX_REQUEST_QUEUES}; the frontend decides how many it uses (QEMU: num-request-queues)`,
      default: String(MAX_REQUEST_QUEUES),
    },
    (o, v, c) => (o.maxRequestQueues = parseUint(c.name, v, REQUEST_QUEUES.max, REQUEST_QUEUES.min)),
    sets('maxRequestQueues', REQUEST_QUEUES),
  ),
  flag('xattr', { text: 'Support extended attributes' }, (o) => (o.xattr = true), sets('xattr', BOOLEAN)),
  flag(
    'posix-acl',
    {
      text:
        'Support POSIX ACLs, enforced by the guest kernel; implies --xattr. With --translate-uid/--translate-gid the ' +
        'ids inside ACLs are translated too',
    },
    (o) => (o.posixAcl = true),
    sets('posixAcl', BOOLEAN),
  ),
  value(
    'xattrmap',
    {
      text:
        'Rules that rename, pass, refuse or hide extended attributes between guest and host, e.g. ' +
        ':map::user.virtiofs.: (upstream\'s rule language: :type:scope:key:prepend: with type prefix, ok, bad or ' +
        'unsupported and scope client, server or all; :map:key:prepend: as the last rule); implies --xattr. Rules ' +
        'without a catch-all get a final :bad:all::: (with a warning)',
    },
    (o, v, c) => {
      parseXattrMap(c.name, v);
      o.xattrmap = v;
    },
    sets('xattrMap', { type: 'xattrMap' }),
  ),
  value(
    'sandbox',
    {
      text:
        'How to isolate the daemon: namespace (new mount, PID and network namespaces, plus a user namespace when not ' +
        'root, with the shared directory as root), chroot (root only) or none',
      default: 'namespace',
    },
    (o, v, c) => (o.sandbox = parseEnum(c.name, v, SANDBOX_MODES)),
    sets('sandbox', enumOf(SANDBOX_MODES)),
  ),
  flag(
    'readonly',
    { text: 'Refuse every guest request that would modify the shared directory' },
    (o) => (o.readonly = true),
    sets('readonly', BOOLEAN),
  ),
  value(
    'seccomp',
    { text: 'What seccomp does on a forbidden system call: none, kill, log or trap', default: 'kill' },
    (o, v, c) => (o.seccomp = parseEnum(c.name, v, SECCOMP_ACTIONS)),
    sets('seccomp', enumOf(SECCOMP_ACTIONS)),
  ),
  flag(
    'announce-submounts',
    { text: 'Report mount points inside the shared directory to the guest', isDefault: true },
    (o) => (o.announceSubmounts = true),
    sets('announceSubmounts', BOOLEAN),
  ),
  flag(
    'no-announce-submounts',
    { text: 'Do not report mount points inside the shared directory' },
    (o) => (o.announceSubmounts = false),
    sets('announceSubmounts', BOOLEAN),
  ),
  {
    long: 'inode-file-handles',
    takesValue: true,
    requireEquals: true,
    help: {
      text:
        'Reference inodes by file handle instead of O_PATH descriptors: never, prefer (alias: fallback) or mandatory. ' +
        'Handles keep the number of open descriptors bounded however many inodes the guest has looked up; opening them ' +
        'needs CAP_DAC_READ_SEARCH. prefer uses descriptors where the filesystem makes no handles, and throughout when ' +
        'the daemon cannot open handles (unprivileged, or --modcaps=-dac_read_search), which mandatory refuses',
      default: 'prefer',
    },
    // The library takes the current names only: no `fallback`.
    sets: sets('inodeFileHandles', enumOf(INODE_FILE_HANDLE_MODES)),
    apply: (o, v, c) => {
      const mode = parseEnum(c.name, v, INODE_FILE_HANDLES);
      if (mode === 'fallback') c.warn("--inode-file-handles=fallback is deprecated, use '--inode-file-handles=prefer' instead");
      o.inodeFileHandles = mode === 'fallback' ? 'prefer' : mode;
    },
  },
  value(
    'cache',
    { text: 'Guest caching policy: auto, always, never or metadata', default: 'auto' },
    (o, v, c) => (o.cache = parseEnum(c.name, v, CACHE_POLICIES)),
    sets('cache', enumOf(CACHE_POLICIES)),
  ),
  flag(
    'allow-mmap',
    {
      text:
        'Let the guest mmap shared files even with --cache=never or --cache=metadata; only safe when nothing else ' +
        'modifies the shared directory',
    },
    (o) => (o.allowMmap = true),
    sets('allowMmap', BOOLEAN),
  ),
  flag('no-readdirplus', { text: 'Turn off READDIRPLUS' }, (o) => (o.noReaddirplus = true), sets('readdirplus', BOOLEAN)),
  flag('writeback', { text: 'Turn on the guest writeback cache' }, (o) => (o.writeback = true), sets('writeback', BOOLEAN)),
  flag(
    'allow-direct-io',
    { text: 'Honour O_DIRECT requested by guest applications' },
    (o) => (o.allowDirectIo = true),
    sets('allowDirectIo', BOOLEAN),
  ),
  flag('print-capabilities', { text: 'Print the vhost-user.json capabilities of this backend and exit' }, (o) => (o.printCapabilities = true)),
  value(
    'modcaps',
    { text: 'Add or drop capabilities, e.g. --modcaps=+sys_admin:-chown' },
    (o, v, c) => {
      o.modcaps = validateModcaps(c.name, v);
    },
    sets('modcaps', { type: 'modcaps' }),
  ),
  value(
    'log-level',
    { text: 'Most detailed messages to print: error, warn, info, debug, trace or off', default: 'info' },
    (o, v, c) => (o.logLevel = parseLogLevel(c.name, v)),
    sets('logLevel', enumOf(LOG_LEVELS)),
  ),
  flag('syslog', { text: 'Send log messages to syslog instead of stderr' }, (o) => (o.syslog = true)),
  // 0 is meaningful upstream: leave the limit unchanged.
  value(
    'rlimit-nofile',
    { text: 'Open file limit to set at start; 0 keeps the current limit', default: 'min(1000000, /proc/sys/fs/nr_open)' },
    (o, v, c) => (o.rlimitNofile = parseUint(c.name, v, RLIMIT_NOFILE.max, RLIMIT_NOFILE.min)),
    sets('rlimitNofile', RLIMIT_NOFILE, true),
  ),
  {
    short: 'o',
    takesValue: true,
    help: {
      valueName: 'COMPAT_OPTIONS',
      text: 'Comma-separated options in the syntax of the old C daemon, e.g. -o source=DIR,cache=none',
      deprecated: true,
    },
    apply: (_o, v, c) => {
      c.compat.push(v);
    },
  },
  {
    short: 'd',
    takesValue: false,
    help: { text: 'Same as --log-level=debug', deprecated: true },
    apply: (o, _v, c) => {
      o.logLevel = 'debug';
      c.warn("-d is deprecated, use '--log-level=debug' instead");
    },
  },
  flag(
    'no-killpriv-v2',
    { text: 'Do not offer FUSE KILLPRIV_V2', isDefault: true },
    (o) => (o.killprivV2 = false),
    sets('killprivV2', BOOLEAN),
  ),
  flag(
    'killpriv-v2',
    { text: 'Offer FUSE KILLPRIV_V2: the guest asks to clear setuid/setgid on write, truncate and chown' },
    (o) => (o.killprivV2 = true),
    sets('killprivV2', BOOLEAN),
  ),
  // Upstream keeps -f for old scripts; it has no effect (the daemon always stays in the foreground).
  { short: 'f', takesValue: false, help: { text: 'Accepted for compatibility; does nothing', deprecated: true }, apply: () => undefined },
  flag(
    'security-label',
    { text: 'Store the security label the guest sends at file creation; implies --xattr' },
    (o) => (o.securityLabel = true),
    sets('securityLabel', BOOLEAN),
  ),
  value(
    'uid-map',
    { text: 'User namespace UID range :inside:outside:count:, repeatable; needs newuidmap when not root' },
    (o, v, c) => {
      o.uidMap.push(parseIdRange(c.name, v));
    },
    sets('uidMap', { type: 'idRanges' }),
  ),
  value(
    'gid-map',
    { text: 'User namespace GID range :inside:outside:count:, repeatable; needs newgidmap when not root' },
    (o, v, c) => {
      o.gidMap.push(parseIdRange(c.name, v));
    },
    sets('gidMap', { type: 'idRanges' }),
  ),
  value(
    'translate-uid',
    {
      text:
        'UID translation done by the daemon, repeatable: map:<guest>:<host>:<count> (both ways), ' +
        'guest:<guest>:<host>:<count>, host:<host>:<guest>:<count>, squash-guest:<guest>:<host>:<count> (the guest ' +
        'range to one host id), squash-host:<host>:<guest>:<count> or forbid-guest:<guest>:<count>; any separator ' +
        'that is not a letter, digit, - or _. Host ids are the ids the daemon sees (inside its user namespace with ' +
        '--uid-map)',
    },
    (o, v, c) => {
      parseIdTranslation(c.name, v);
      o.translateUid.push(v);
    },
    sets('translateUid', { type: 'idTranslations' }),
  ),
  value(
    'translate-gid',
    { text: 'Like --translate-uid, for GIDs' },
    (o, v, c) => {
      parseIdTranslation(c.name, v);
      o.translateGid.push(v);
    },
    sets('translateGid', { type: 'idTranslations' }),
  ),
  flag(
    'preserve-noatime',
    { text: 'Keep O_NOATIME on opens instead of dropping it' },
    (o) => (o.preserveNoatime = true),
    sets('preserveNoatime', BOOLEAN),
  ),
  value(
    'migration-mode',
    {
      text:
        'How this daemon, as a migration source, describes its inodes to the destination: find-paths (each ' +
        'inode\'s path below the shared directory, read from /proc/self/fd; an inode without one, such as a file ' +
        'unlinked while open, cannot migrate) or ' +
        'file-handles (file handles: source and destination must share the same directory on the same filesystem, ' +
        'and the destination needs CAP_DAC_READ_SEARCH, which a root daemon keeps with this mode). A destination ' +
        'reads whichever form the state carries',
      default: 'find-paths',
    },
    (o, v, c) => {
      o.migrationMode = parseEnum(c.name, v, MIGRATION_MODES);
    },
    sets('migrationMode', enumOf(MIGRATION_MODES)),
  ),
  value(
    'migration-on-error',
    {
      text:
        'What this daemon, as a migration destination, does with an inode it cannot restore: abort (fail the ' +
        'migration; the source goes on serving) or guest-error (complete it; the guest gets errors on that inode)',
      default: 'abort',
    },
    (o, v, c) => {
      o.migrationOnError = parseEnum(c.name, v, MIGRATION_ON_ERROR);
    },
    sets('migrationOnError', enumOf(MIGRATION_ON_ERROR)),
  ),
  flag(
    'migration-verify-handles',
    {
      text:
        'With --migration-mode=find-paths: send each inode\'s file handle too, so the destination checks that the ' +
        'path it opened leads to the very same inode (source and destination must share the same filesystem)',
    },
    (o) => (o.migrationVerifyHandles = true),
    sets('migrationVerifyHandles', BOOLEAN),
  ),
  flag(
    'migration-confirm-paths',
    {
      text:
        'With --migration-mode=find-paths: check each path again at switch-over and correct it from /proc/self/fd ' +
        'if the file was moved; lengthens the switch-over when the guest holds many inodes',
    },
    (o) => (o.migrationConfirmPaths = true),
    sets('migrationConfirmPaths', BOOLEAN),
  ),
  flag(
    'reconnect',
    {
      text:
        'Keep listening after the frontend disconnects and serve the next frontend with a fresh FUSE session, ' +
        'instead of exiting (not an upstream option)',
    },
    (o) => (o.reconnect = true),
    sets('reconnect', BOOLEAN),
  ),
  { long: 'help', short: 'h', takesValue: false, help: { text: 'Print this help and exit' }, apply: (o) => (o.help = true) },
  { long: 'version', short: 'V', takesValue: false, help: { text: 'Print the version and exit' }, apply: (o) => (o.version = true) },
];

const BY_LONG = new Map(OPTION_TABLE.filter((s) => s.long).map((s) => [s.long as string, s]));
const BY_SHORT = new Map(OPTION_TABLE.filter((s) => s.short).map((s) => [s.short as string, s]));

/**
 * Library options that no command-line option sets on its own: `-o no_posix_lock` and
 * `-o no_flock` turn the lock ones off, the others only the library has.
 */
export const LIBRARY_ONLY_OPTIONS: readonly LibraryOption[] = [
  sets('posixLocks', BOOLEAN),
  sets('flock', BOOLEAN),
  sets('queueSize', { type: 'integer', min: MIN_QUEUE_SIZE, max: MAX_QUEUE_SIZE, powerOfTwo: true }),
  sets('cwd', STRING),
];

/**
 * Every key `startDevice` accepts and how its value is checked, from the option table and
 * LIBRARY_ONLY_OPTIONS; any other key is refused. Options that set the same key (`--socket` and
 * `--socket-path`, a flag and its `--no-` form) must check it the same way.
 */
export const LIBRARY_OPTIONS: ReadonlyMap<string, LibraryOption> = (() => {
  const byKey = new Map<string, LibraryOption>();
  for (const option of [...OPTION_TABLE.flatMap((spec) => (spec.sets === undefined ? [] : [spec.sets])), ...LIBRARY_ONLY_OPTIONS]) {
    const known = byKey.get(option.key);
    if (known !== undefined && JSON.stringify(known) !== JSON.stringify(option)) {
      throw new Error(`option table: '${option.key}' is checked in two ways`);
    }
    byKey.set(option.key, option);
  }
  return byKey;
})();

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
    reconnect: false,
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
  const apply = (spec: OptionSpec, optionValue: string, name: string): void => {
    spec.apply(options, optionValue, { name, warn: (message) => warnings.push(message), compat });
    // After apply, so that a malformed value is reported as such rather than as unsupported.
    if (spec.notSupported) unsupported.push(spec.long !== undefined ? `--${spec.long}` : `-${spec.short}`);
  };

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
        apply(spec, '', display);
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
      apply(spec, optionValue, display);
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
          apply(spec, '', display);
          continue;
        }
        let optionValue = arg.slice(j + 1);
        if (optionValue.startsWith('=')) optionValue = optionValue.slice(1);
        if (optionValue.length === 0) {
          if (i + 1 >= argv.length) throw new OptionError(`a value is required for '${display}'`);
          i += 1;
          optionValue = argv[i];
        }
        apply(spec, optionValue, display);
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
      case 'xattrmap':
        // As upstream, which splits the item on '=': a map holding one is not an xattrmap item.
        if (arg === null || arg.includes('=')) throw bad();
        parseXattrMap('-o xattrmap', arg);
        options.xattrmap = arg;
        break;
      case 'posix_acl':
        noValue();
        options.posixAcl = true;
        break;
      case 'no_posix_acl':
        noValue();
        options.posixAcl = false;
        break;
      case 'security_label':
        noValue();
        options.securityLabel = true;
        break;
      case 'no_security_label':
        noValue();
        options.securityLabel = false;
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
