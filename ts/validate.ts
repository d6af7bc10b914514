// Value validators shared by the command line parser and the library API, so both reject the
// same inputs with the same messages.
import { OptionError } from './errors';

export const CACHE_POLICIES = ['auto', 'always', 'never', 'metadata'] as const;
export type CachePolicy = (typeof CACHE_POLICIES)[number];

export const LOG_LEVELS = ['error', 'warn', 'info', 'debug', 'trace', 'off'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export const SANDBOX_MODES = ['namespace', 'chroot', 'none'] as const;
export type SandboxMode = (typeof SANDBOX_MODES)[number];

export const SECCOMP_ACTIONS = ['none', 'kill', 'log', 'trap'] as const;
export type SeccompAction = (typeof SECCOMP_ACTIONS)[number];

export const INODE_FILE_HANDLES = ['never', 'prefer', 'mandatory', 'fallback'] as const;
export type InodeFileHandles = (typeof INODE_FILE_HANDLES)[number];

export const MIGRATION_MODES = ['find-paths', 'file-handles'] as const;
export type MigrationMode = (typeof MIGRATION_MODES)[number];

export const MIGRATION_ON_ERROR = ['abort', 'guest-error'] as const;
export type MigrationOnError = (typeof MIGRATION_ON_ERROR)[number];

export const TRANSLATE_TYPES = ['guest', 'host', 'squash-guest', 'squash-host', 'forbid-guest', 'map'] as const;
export type TranslateType = (typeof TRANSLATE_TYPES)[number];

/** virtio-fs config space reserves 36 bytes for the tag. */
export const MAX_TAG_BYTES = 36;
export const U32_MAX = 0xffff_ffff;
const FD_MAX = 0x7fff_ffff;

function invalid(name: string, value: string, why: string): OptionError {
  return new OptionError(`invalid value '${value}' for '${name}': ${why}`);
}

export function parseEnum<T extends string>(name: string, value: string, allowed: readonly T[]): T {
  const found = allowed.find((candidate) => candidate === value);
  if (found === undefined) {
    throw invalid(name, value, `expected one of ${allowed.join(', ')}`);
  }
  return found;
}

/** Unsigned decimal integer in [min, max]; no sign, no spaces, no exponent, like Rust's `u64::from_str`. */
export function parseUint(name: string, value: string, max: number, min = 0): number {
  if (!/^[0-9]+$/.test(value)) {
    throw invalid(name, value, 'expected a non-negative integer');
  }
  const parsed = Number(value);
  if (!Number.isSafeInteger(parsed) || parsed > max || parsed < min) {
    throw invalid(name, value, `must be between ${min} and ${max}`);
  }
  return parsed;
}

export function parseFd(name: string, value: string): number {
  return parseUint(name, value, FD_MAX);
}

export function parseLogLevel(name: string, value: string): LogLevel {
  // The Rust `log` crate accepts level names case-insensitively; keep that compatibility.
  return parseEnum(name, value.toLowerCase(), LOG_LEVELS);
}

export function validateTag(name: string, value: string): string {
  const bytes = Buffer.byteLength(value, 'utf8');
  if (bytes === 0 || bytes > MAX_TAG_BYTES) {
    throw invalid(name, value, `the tag must be 1 to ${MAX_TAG_BYTES} bytes long (UTF-8)`);
  }
  if (value.includes('\0')) {
    throw invalid(name, value, 'the tag must not contain NUL characters');
  }
  return value;
}

export function validateNonEmpty(name: string, value: string): string {
  if (value.length === 0) {
    throw invalid(name, value, 'must not be empty');
  }
  if (value.includes('\0')) {
    throw invalid(name, value, 'must not contain NUL characters');
  }
  return value;
}

/** A user-namespace ID range, as given to `--uid-map`/`--gid-map`. */
export interface IdRange {
  inside: number;
  outside: number;
  count: number;
}

/**
 * Parses `:inside:outside:count:`. The first character is the delimiter (any character), which must
 * also close the map; this mirrors the upstream syntax.
 */
export function parseIdRange(name: string, value: string): IdRange {
  const delimiter = value.charAt(0);
  if (value.length < 2 || !value.endsWith(delimiter) || /[0-9]/.test(delimiter)) {
    throw invalid(name, value, 'expected :inside:outside:count: (the map must start and end with the same delimiter)');
  }
  const fields = value.slice(1, -1).split(delimiter);
  if (fields.length !== 3) {
    throw invalid(name, value, `expected 3 values, got ${fields.length}`);
  }
  const [inside, outside, count] = fields.map((field) => parseUint(name, field, U32_MAX));
  if (count === 0) {
    throw invalid(name, value, 'the count must be at least 1');
  }
  if (inside + count - 1 > U32_MAX || outside + count - 1 > U32_MAX) {
    throw invalid(name, value, 'the range exceeds the 32-bit ID space');
  }
  return { inside, outside, count };
}

/** An in-daemon ID translation rule, as given to `--translate-uid`/`--translate-gid`. */
export interface IdTranslation {
  type: TranslateType;
  source: number;
  /** Absent for `forbid-guest`, which only names a range. */
  target: number | null;
  count: number;
}

export function parseIdTranslation(name: string, value: string): IdTranslation {
  const [prefix, ...rest] = value.split(':');
  const type = TRANSLATE_TYPES.find((candidate) => candidate === prefix);
  if (type === undefined) {
    throw invalid(name, value, `unknown mapping type '${prefix}' (expected one of ${TRANSLATE_TYPES.join(', ')})`);
  }
  const expected = type === 'forbid-guest' ? 2 : 3;
  if (rest.length !== expected) {
    throw invalid(name, value, `'${type}' takes ${expected} values, got ${rest.length}`);
  }
  const numbers = rest.map((field) => parseUint(name, field, U32_MAX));
  const count = numbers[numbers.length - 1];
  if (count === 0) {
    throw invalid(name, value, 'the count must be at least 1');
  }
  return {
    type,
    source: numbers[0],
    target: type === 'forbid-guest' ? null : numbers[1],
    count,
  };
}

/**
 * Checks `--modcaps` syntax: `+cap` / `-cap` items separated by `:`, capability names without the
 * `CAP_` prefix, case-insensitive.
 */
export function validateModcaps(name: string, value: string): string {
  parseModcaps(name, value);
  return value;
}

/** Capability names (lower case, without `cap_`) in kernel numbering order. */
export const CAPABILITY_NAMES = [
  'chown', 'dac_override', 'dac_read_search', 'fowner', 'fsetid', 'kill', 'setgid', 'setuid', 'setpcap',
  'linux_immutable', 'net_bind_service', 'net_broadcast', 'net_admin', 'net_raw', 'ipc_lock', 'ipc_owner',
  'sys_module', 'sys_rawio', 'sys_chroot', 'sys_ptrace', 'sys_pacct', 'sys_admin', 'sys_boot', 'sys_nice',
  'sys_resource', 'sys_time', 'sys_tty_config', 'mknod', 'lease', 'audit_write', 'audit_control', 'setfcap',
  'mac_override', 'mac_admin', 'syslog', 'wake_alarm', 'block_suspend', 'audit_read', 'perfmon', 'bpf',
  'checkpoint_restore',
] as const;

export interface Modcaps {
  add: string[];
  drop: string[];
}

/**
 * Parses `--modcaps=+name:-name` (names case-insensitive, `cap_` prefix optional). Later items
 * win, so `+x:-x` drops x.
 */
export function parseModcaps(name: string, value: string): Modcaps {
  const add = new Set<string>();
  const drop = new Set<string>();
  for (const item of value.split(':')) {
    if (!/^[+-][A-Za-z_]+$/.test(item)) {
      throw invalid(name, value, `'${item}' is not +capability or -capability`);
    }
    const cap = item.slice(1).toLowerCase().replace(/^cap_/, '');
    if (!(CAPABILITY_NAMES as readonly string[]).includes(cap)) {
      throw invalid(name, value, `unknown capability '${item.slice(1)}'`);
    }
    if (item.startsWith('+')) {
      drop.delete(cap);
      add.add(cap);
    } else {
      add.delete(cap);
      drop.add(cap);
    }
  }
  return { add: [...add], drop: [...drop] };
}

/**
 * Checks the rule structure of an `--xattrmap` string: each rule is `<sep>type<sep>scope<sep>key<sep>
 * prepend<sep>` or `<sep>map<sep>key<sep>prepend<sep>` where the first character is the separator.
 */
export function validateXattrmap(name: string, value: string): string {
  const ruleTypes = ['prefix', 'ok', 'bad', 'unsupported'];
  const scopes = ['client', 'server', 'all'];
  let rest = value.trim();
  let rule = 0;
  while (rest.length > 0) {
    rule += 1;
    const sep = rest.charAt(0);
    const parts = rest.slice(1).split(sep);
    const kind = parts[0];
    const fieldCount = kind === 'map' ? 3 : 4;
    if (!ruleTypes.includes(kind) && kind !== 'map') {
      throw invalid(name, value, `rule ${rule}: unknown rule type '${kind}'`);
    }
    // parts: type, fields..., then the remainder after the closing separator.
    if (parts.length < fieldCount + 1) {
      throw invalid(name, value, `rule ${rule}: incomplete rule`);
    }
    if (kind !== 'map' && !scopes.includes(parts[1])) {
      throw invalid(name, value, `rule ${rule}: unknown scope '${parts[1]}'`);
    }
    const consumed = 1 + parts.slice(0, fieldCount).reduce((sum, part) => sum + part.length + 1, 0);
    rest = rest.slice(consumed).trimStart();
  }
  if (rule === 0) {
    throw invalid(name, value, 'no rules given');
  }
  return value;
}

export const ID_MAP_NEEDS_UNPRIVILEGED_NAMESPACE =
  '--uid-map/--gid-map can only be used by an unprivileged user with --sandbox=namespace';

/**
 * ID ranges are set up only for the user namespace of an unprivileged namespace sandbox: as root,
 * or with `--sandbox=chroot|none`, they would be silently ignored (root's device keeps every ID).
 * `option` names the option that carries ranges; `euid` is the effective UID the device will run
 * with (undefined where the platform has none).
 */
export function checkIdMapsAllowed(option: string | null, sandbox: SandboxMode, euid: number | undefined): void {
  if (option === null) return;
  if (sandbox !== 'namespace') {
    throw new OptionError(`'${option}' cannot be used with '--sandbox=${sandbox}': ${ID_MAP_NEEDS_UNPRIVILEGED_NAMESPACE}`, 'environment');
  }
  if (euid === 0) {
    throw new OptionError(`'${option}' cannot be used when running as root: ${ID_MAP_NEEDS_UNPRIVILEGED_NAMESPACE}`, 'environment');
  }
}
