// Value validators shared by the command line parser and the library API, so both reject the
// same inputs with the same messages.
import { OptionError, OptionErrorReason } from './errors';
import { checkIdTranslations, checkXattrMap } from './policy';
import {
  CACHE_MODES,
  CAPABILITY_NAMES,
  CacheMode,
  CapabilityName,
  IdRange,
  INODE_FILE_HANDLE_MODES,
  LOG_LEVELS,
  LogLevel,
  MAX_ID,
  MAX_SOCKET_FD,
  MAX_TAG_BYTES,
  MIGRATION_MODES,
  MIGRATION_ON_ERROR_ACTIONS,
  MigrationMode,
  MigrationOnError,
  Modcaps,
  SANDBOX_MODES,
  SECCOMP_ACTIONS,
  SandboxMode,
  SeccompAction,
} from './generated/schema';

// The values the device accepts come from the Rust schema (./generated/schema); the names below
// are the command line's.
export {
  CACHE_MODES as CACHE_POLICIES,
  CAPABILITY_NAMES,
  LOG_LEVELS,
  MAX_TAG_BYTES,
  MIGRATION_MODES,
  MIGRATION_ON_ERROR_ACTIONS as MIGRATION_ON_ERROR,
  SANDBOX_MODES,
  SECCOMP_ACTIONS,
};
export type { CacheMode as CachePolicy, IdRange, LogLevel, MigrationMode, MigrationOnError, Modcaps, SandboxMode, SeccompAction };

/** `--inode-file-handles` also takes upstream's deprecated `fallback` (= `prefer`). */
export const INODE_FILE_HANDLES = [...INODE_FILE_HANDLE_MODES, 'fallback'] as const;
export type InodeFileHandles = (typeof INODE_FILE_HANDLES)[number];

function invalid(name: string, value: string, why: string, reason: OptionErrorReason = 'invalid-value'): OptionError {
  return new OptionError(`invalid value '${value}' for '${name}': ${why}`, 'usage', { key: name, reason });
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
    throw invalid(name, value, `must be between ${min} and ${max}`, 'out-of-range');
  }
  return parsed;
}

export function parseFd(name: string, value: string): number {
  return parseUint(name, value, MAX_SOCKET_FD);
}

export function parseLogLevel(name: string, value: string): LogLevel {
  // The Rust `log` crate accepts level names case-insensitively; keep that compatibility.
  return parseEnum(name, value.toLowerCase(), LOG_LEVELS);
}

export function validateTag(name: string, value: string): string {
  const bytes = Buffer.byteLength(value, 'utf8');
  if (bytes === 0 || bytes > MAX_TAG_BYTES) {
    throw invalid(name, value, `the tag must be 1 to ${MAX_TAG_BYTES} bytes long (UTF-8)`, 'out-of-range');
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
  const [inside, outside, count] = fields.map((field) => parseUint(name, field, MAX_ID));
  if (count === 0) {
    throw invalid(name, value, 'the count must be at least 1');
  }
  if (inside + count - 1 > MAX_ID || outside + count - 1 > MAX_ID) {
    throw invalid(name, value, 'the range exceeds the 32-bit ID space');
  }
  return { inside, outside, count };
}

/**
 * Checks `--modcaps` syntax: `+cap` / `-cap` items separated by `:`, capability names without the
 * `CAP_` prefix, case-insensitive.
 */
export function validateModcaps(name: string, value: string): string {
  parseModcaps(name, value);
  return value;
}

/**
 * Parses `--modcaps=+name:-name` (names case-insensitive, `cap_` prefix optional). Later items
 * win, so `+x:-x` drops x.
 */
export function parseModcaps(name: string, value: string): Modcaps {
  const add = new Set<CapabilityName>();
  const drop = new Set<CapabilityName>();
  for (const item of value.split(':')) {
    if (!/^[+-][A-Za-z_]+$/.test(item)) {
      throw invalid(name, value, `'${item}' is not +capability or -capability`);
    }
    const cap = CAPABILITY_NAMES.find((known) => known === item.slice(1).toLowerCase().replace(/^cap_/, ''));
    if (cap === undefined) {
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
    throw new OptionError(`'${option}' cannot be used with '--sandbox=${sandbox}': ${ID_MAP_NEEDS_UNPRIVILEGED_NAMESPACE}`, 'environment', {
      key: option,
      reason: 'conflict',
    });
  }
  if (euid === 0) {
    throw new OptionError(`'${option}' cannot be used when running as root: ${ID_MAP_NEEDS_UNPRIVILEGED_NAMESPACE}`, 'environment', {
      key: option,
      reason: 'conflict',
    });
  }
}

/** How a library option's value is checked; the limits are the device's (./generated/schema). */
export type ValueCheck =
  | { type: 'boolean' }
  | { type: 'integer'; min: number; max: number; powerOfTwo?: boolean }
  /** Non-empty, without NUL. */
  | { type: 'string' }
  | { type: 'tag' }
  | { type: 'enum'; values: readonly string[] }
  /** A `--modcaps` string, `+cap:-cap`. */
  | { type: 'modcaps' }
  /** An array of `{ inside, outside, count }`. */
  | { type: 'idRanges' }
  /** An array of id translation rules (objects or upstream strings), see ./policy. */
  | { type: 'idTranslations' }
  /** Extended-attribute rules: an array of rule objects or a string in upstream's language. */
  | { type: 'xattrMap' };

const wrongType = (key: string, expected: string): OptionError =>
  new OptionError(`invalid value for '${key}': expected ${expected}`, 'usage', { key, reason: 'invalid-type' });

function checkInteger(key: string, value: unknown, min: number, max: number): number {
  const why = `must be an integer between ${min} and ${max}`;
  if (typeof value !== 'number' || !Number.isInteger(value)) throw invalid(key, String(value), why, 'invalid-type');
  if (value < min || value > max) throw invalid(key, String(value), why, 'out-of-range');
  return value;
}

function checkString(key: string, value: unknown): string {
  if (typeof value !== 'string') throw wrongType(key, 'a string');
  return value;
}

const ID_RANGE_KEYS = ['inside', 'outside', 'count'] as const;

function checkIdRanges(key: string, value: unknown): IdRange[] {
  const shape = 'an array of {inside, outside, count}';
  if (!Array.isArray(value)) throw wrongType(key, shape);
  return value.map((item: unknown, index) => {
    if (typeof item !== 'object' || item === null || Array.isArray(item)) throw wrongType(key, shape);
    const range = item as Record<string, unknown>;
    const unknown = Object.keys(range).find((name) => !(ID_RANGE_KEYS as readonly string[]).includes(name));
    if (unknown !== undefined) {
      const at = `${key}[${index}].${unknown}`;
      throw new OptionError(`unknown option '${at}': an ID range has inside, outside and count`, 'usage', { key: at, reason: 'unknown-option' });
    }
    const inside = checkInteger(`${key}.inside`, range.inside, 0, MAX_ID);
    const outside = checkInteger(`${key}.outside`, range.outside, 0, MAX_ID);
    const count = checkInteger(`${key}.count`, range.count, 1, MAX_ID);
    if (inside + count - 1 > MAX_ID || outside + count - 1 > MAX_ID) {
      throw new OptionError(`invalid value for '${key}': the range exceeds the 32-bit ID space`, 'usage', { key, reason: 'out-of-range' });
    }
    return { inside, outside, count };
  });
}

/**
 * Checks one library option's value (never `undefined`): its type, then its limits. Throws an
 * OptionError whose `key` names the option and whose `reason` says what is wrong.
 */
export function checkLibraryValue(key: string, value: unknown, check: ValueCheck): unknown {
  switch (check.type) {
    case 'boolean':
      if (typeof value !== 'boolean') throw wrongType(key, 'a boolean');
      return value;
    case 'integer': {
      const checked = checkInteger(key, value, check.min, check.max);
      // virtio split queues must have a power-of-two size.
      if (check.powerOfTwo === true && (checked & (checked - 1)) !== 0) throw invalid(key, String(checked), 'must be a power of two');
      return checked;
    }
    case 'string':
      return validateNonEmpty(key, checkString(key, value));
    case 'tag':
      return validateTag(key, checkString(key, value));
    case 'enum':
      return parseEnum(key, checkString(key, value), check.values);
    case 'modcaps':
      return parseModcaps(key, checkString(key, value));
    case 'idRanges':
      return checkIdRanges(key, value);
    case 'idTranslations':
      return checkIdTranslations(key, value);
    case 'xattrMap':
      return checkXattrMap(key, value);
  }
}
