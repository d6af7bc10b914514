// The device's policies where ids and extended-attribute names cross between guest and host:
// `--translate-uid`/`--translate-gid` and `--xattrmap`, in upstream virtiofsd's syntax, and their
// library forms. This module parses and checks them and compiles them into the tables the device
// applies (crates/policy); the command line and the library share every check and message.
import fs from 'node:fs';
import { OptionError, OptionErrorReason } from './errors';
import { MAX_ID, XATTR_RULE_KINDS } from './generated/schema';
import type { HostIdRule, IdMapping, IdRange, IdRule, SandboxMode, XattrRule, XattrRuleKind } from './generated/schema';

export const ID_TRANSLATION_TYPES = ['guest', 'host', 'squash-guest', 'squash-host', 'forbid-guest', 'map'] as const;
/** Upstream's translation rule types (see `IdTranslation`); `map` translates both ways. */
export type IdTranslationType = (typeof ID_TRANSLATION_TYPES)[number];

/**
 * One `--translate-uid`/`--translate-gid` rule, as the library takes it. Ids are 32-bit; a range
 * is `count` ids (at least 1) and may not pass 4294967295. Host ids are ids as the device sees
 * them: inside its user namespace when it has one.
 * - `map`: guest ids `guest ..` act as host ids `host ..`, and host ids `host ..` show in the
 *   guest as `guest ..` (`map:<guest>:<host>:<count>`).
 * - `guest`: guest ids `guest ..` act as host ids `host ..` (one way).
 * - `host`: host ids `host ..` show in the guest as `guest ..` (one way).
 * - `squash-guest`: every guest id `guest ..` acts as the one host id `host`.
 * - `squash-host`: every host id `host ..` shows in the guest as the one guest id `guest`.
 * - `forbid-guest`: requests acting as guest ids `guest ..`, or setting them, fail with EPERM.
 */
export type IdTranslation =
  | { type: 'map'; guest: number; host: number; count: number }
  | { type: 'guest'; guest: number; host: number; count: number }
  | { type: 'host'; host: number; guest: number; count: number }
  | { type: 'squash-guest'; guest: number; host: number; count: number }
  | { type: 'squash-host'; host: number; guest: number; count: number }
  | { type: 'forbid-guest'; guest: number; count: number };

export const XATTR_MAP_SCOPES = ['client', 'server', 'all'] as const;
/** Which names an `xattrMap` rule looks at: the guest's (`client`), the host's (`server`) or both. */
export type XattrMapScope = (typeof XATTR_MAP_SCOPES)[number];

/**
 * One `--xattrmap` rule, as the library takes it; the first rule that matches a name decides.
 * A guest name matches a rule of scope `client` or `all` whose `key` starts it; a host name (in
 * a LISTXATTR answer) one of scope `server` or `all` whose `prepend` starts it.
 * - `prefix`: guest names get `prepend` in front; host names lose it.
 * - `ok`: the name passes unchanged.
 * - `bad`: guest names are refused (EPERM); host names are hidden.
 * - `unsupported`: guest names are refused with EOPNOTSUPP; host names are hidden.
 * - `map` (last rule only): the common case in one rule. Guest names starting with `key` get
 *   `prepend` in front and host names starting with `prepend` lose it; guest names starting with
 *   `prepend` are refused and host names starting with `key` hidden; other names pass unchanged.
 *   With an empty `key` every guest name is prefixed and host names without `prepend` are hidden.
 */
export type XattrMapRule =
  | { type: 'prefix' | 'ok' | 'bad' | 'unsupported'; scope: XattrMapScope; key: string; prepend: string }
  | { type: 'map'; key: string; prepend: string };

// The rule types besides `map` are the device's rule kinds, no more and no fewer.
type RuleType = Exclude<XattrMapRule['type'], 'map'>;
const SAME_KINDS: [RuleType, XattrRuleKind] extends [XattrRuleKind, RuleType] ? true : never = true;
void SAME_KINDS;

const XATTR_MAP_TYPES: readonly string[] = [...XATTR_RULE_KINDS, 'map'];

/** How options are named in messages: as the user spelt them (command line or library). */
export interface PolicyNaming {
  translateUid: string;
  translateGid: string;
  xattrMap: string;
  uidMap: string;
  gidMap: string;
  /** Command-line rules are quoted as written; library rules by key and index. */
  cli: boolean;
}

export const CLI_NAMING: PolicyNaming = {
  translateUid: '--translate-uid',
  translateGid: '--translate-gid',
  xattrMap: '--xattrmap',
  uidMap: '--uid-map',
  gidMap: '--gid-map',
  cli: true,
};

export const LIBRARY_NAMING: PolicyNaming = {
  translateUid: 'translateUid',
  translateGid: 'translateGid',
  xattrMap: 'xattrMap',
  uidMap: 'uidMap',
  gidMap: 'gidMap',
  cli: false,
};

const error = (key: string, message: string, reason: OptionErrorReason, kind: 'usage' | 'environment' = 'usage'): OptionError =>
  new OptionError(message, kind, { key, reason });

const invalid = (key: string, value: string, why: string, reason: OptionErrorReason = 'invalid-value'): OptionError =>
  error(key, `invalid value '${value}' for '${key}': ${why}`, reason);

const listOf = (values: readonly string[]): string => `${values.slice(0, -1).join(', ')} or ${values[values.length - 1]}`;

// --- id translation -----------------------------------------------------------------------------

/** The fields after the type, in upstream's order. */
function fieldsOf(type: IdTranslationType): readonly ('guest' | 'host' | 'count')[] {
  switch (type) {
    case 'host':
    case 'squash-host':
      return ['host', 'guest', 'count'];
    case 'forbid-guest':
      return ['guest', 'count'];
    default:
      return ['guest', 'host', 'count'];
  }
}

/** `map:1000:101000:1000`, the rule in upstream's syntax. */
export function formatIdTranslation(rule: IdTranslation): string {
  const values = rule as unknown as Record<string, number>;
  return [rule.type, ...fieldsOf(rule.type).map((field) => String(values[field]))].join(':');
}

/** The ranges a rule covers never pass the largest id: the reason, or null. */
function rangeProblem(rule: IdTranslation): string | null {
  const values = rule as unknown as Record<string, number>;
  const ranged: ('guest' | 'host')[] =
    rule.type === 'squash-guest' ? ['guest'] : rule.type === 'squash-host' ? ['host'] : rule.type === 'forbid-guest' ? ['guest'] : ['guest', 'host'];
  for (const side of ranged) {
    const first = values[side];
    if (first + rule.count - 1 > MAX_ID) {
      return `the ${side} range ${first}-${first + rule.count - 1} passes ${MAX_ID}, the largest id`;
    }
  }
  // The sides ids are translated to: (u32)-1 is no id there (chown(2) reads it as "unchanged").
  const targets: ('guest' | 'host')[] =
    rule.type === 'map' ? ['host', 'guest'] : rule.type === 'guest' || rule.type === 'squash-guest' ? ['host'] : rule.type === 'forbid-guest' ? [] : ['guest'];
  for (const side of targets) {
    const last = rule.type.startsWith('squash') ? values[side] : values[side] + rule.count - 1;
    if (last === MAX_ID) {
      return `the ${side} side reaches ${MAX_ID}, which is no id (chown(2) reads it as "unchanged"): no rule can translate to it (forbid-guest refuses guest ids)`;
    }
  }
  return null;
}

const isTypeChar = (char: string): boolean => /^[\p{L}\p{N}_-]$/u.test(char);

/**
 * Parses `<type><sep><n><sep>...` as upstream: the type is the leading run of letters, digits,
 * `-` and `_` (case-insensitive), the separator is the next character and separates every field.
 */
export function parseIdTranslation(name: string, value: string): IdTranslation {
  const chars = [...value];
  const at = chars.findIndex((char) => !isTypeChar(char));
  const expected = `expected <type>:<id>:<id>:<count> (or forbid-guest:<id>:<count>), any separator that is not a letter, digit, '-' or '_'`;
  if (at === -1) throw invalid(name, value, `no separator after the type: ${expected}`);
  const prefix = chars.slice(0, at).join('').toLowerCase();
  const separator = chars[at];
  const type = ID_TRANSLATION_TYPES.find((candidate) => candidate === prefix);
  if (type === undefined) throw invalid(name, value, `unknown type '${prefix}', expected ${listOf(ID_TRANSLATION_TYPES)}`);
  const fields = fieldsOf(type);
  const parts = chars.slice(at + 1).join('').split(separator);
  if (parts.length !== fields.length) {
    throw invalid(name, value, `'${type}' takes ${fields.length} values (${type}${separator}${fields.map((f) => `<${f}>`).join(separator)}), got ${parts.length}`);
  }
  const rule: Record<string, unknown> = { type };
  parts.forEach((part, index) => {
    if (!/^[0-9]+$/.test(part)) throw invalid(name, value, `'${part}' is not a number (the ${fields[index]} field)`);
    const number = Number(part);
    if (number > MAX_ID) throw invalid(name, value, `${part} is larger than ${MAX_ID}, the largest id`, 'out-of-range');
    rule[fields[index]] = number;
  });
  const parsed = rule as IdTranslation;
  if (parsed.count === 0) throw invalid(name, value, 'the count must be at least 1', 'out-of-range');
  const problem = rangeProblem(parsed);
  if (problem !== null) throw invalid(name, value, problem, 'out-of-range');
  return parsed;
}

function checkIdValue(key: string, value: unknown, min: number): number {
  const why = `must be an integer between ${min} and ${MAX_ID}`;
  if (typeof value !== 'number' || !Number.isInteger(value)) throw invalid(key, String(value), why, 'invalid-type');
  if (value < min || value > MAX_ID) throw invalid(key, String(value), why, 'out-of-range');
  return value;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

const wrongType = (key: string, expected: string): OptionError => error(key, `invalid value for '${key}': expected ${expected}`, 'invalid-type');

/** A library rule object, checked strictly: its type, exactly its fields, their limits. */
function checkIdTranslationObject(key: string, item: Record<string, unknown>): IdTranslation {
  const type = ID_TRANSLATION_TYPES.find((candidate) => candidate === item.type);
  if (type === undefined) {
    const at = `${key}.type`;
    if (item.type === undefined) throw error(at, `'${at}' is required: one of ${listOf(ID_TRANSLATION_TYPES)}`, 'missing');
    throw invalid(at, String(item.type), `expected one of ${listOf(ID_TRANSLATION_TYPES)}`, typeof item.type === 'string' ? 'invalid-value' : 'invalid-type');
  }
  const fields = fieldsOf(type);
  const unknown = Object.keys(item).find((field) => field !== 'type' && !(fields as readonly string[]).includes(field));
  if (unknown !== undefined) {
    const at = `${key}.${unknown}`;
    throw error(at, `unknown option '${at}': a '${type}' rule has ${listOf(fields)}`, 'unknown-option');
  }
  const rule: Record<string, unknown> = { type };
  for (const field of fields) {
    const at = `${key}.${field}`;
    if (item[field] === undefined) throw error(at, `'${at}' is required: a '${type}' rule has ${listOf(fields)}`, 'missing');
    rule[field] = checkIdValue(at, item[field], field === 'count' ? 1 : 0);
  }
  const parsed = rule as IdTranslation;
  const problem = rangeProblem(parsed);
  if (problem !== null) throw error(key, `invalid value for '${key}' (${formatIdTranslation(parsed)}): ${problem}`, 'out-of-range');
  return parsed;
}

/** One written rule: typed, and in the user's own syntax. */
export interface WrittenIdTranslation {
  rule: IdTranslation;
  /** As written (a string) or in upstream's syntax (an object). */
  text: string;
}

/**
 * A library `translateUid`/`translateGid` value: an array of rule objects or upstream rule
 * strings (`'map:1000:101000:1000'`).
 */
export function checkIdTranslations(key: string, value: unknown): WrittenIdTranslation[] {
  if (!Array.isArray(value)) throw wrongType(key, "an array of translation rules ({ type: 'map', guest, host, count }, ... or 'map:G:H:N')");
  return value.map((item: unknown, index) => {
    const at = `${key}[${index}]`;
    if (typeof item === 'string') return { rule: parseIdTranslation(at, item), text: item };
    if (!isObject(item)) throw wrongType(at, "a translation rule ({ type: 'map', guest, host, count }, ...) or a string such as 'map:1000:101000:1000'");
    const rule = checkIdTranslationObject(at, item);
    return { rule, text: formatIdTranslation(rule) };
  });
}

// --- extended-attribute rules --------------------------------------------------------------------

/** One parsed rule with the text it came from (`:prefix:all:trusted.:user.virtiofs.:`). */
export interface WrittenXattrRule {
  rule: XattrMapRule;
  text: string;
}

const isRuleSpace = (char: string): boolean => char === ' ' || char === '\t' || char === '\n' || char === '\r' || char === '\f';

/**
 * Parses upstream's rule language: rules separated by optional whitespace, each
 * `<sep>type<sep>scope<sep>key<sep>prepend<sep>` or `<sep>map<sep>key<sep>prepend<sep>`, where
 * `<sep>` is the rule's first character. Errors name the rule (its number and text) and what was
 * expected there.
 */
export function parseXattrMap(name: string, value: string): WrittenXattrRule[] {
  const chars = [...value.trim()];
  const rules: WrittenXattrRule[] = [];
  let at = 0;
  while (at < chars.length) {
    if (isRuleSpace(chars[at])) {
      at += 1;
      continue;
    }
    const number = rules.length + 1;
    const start = at;
    const sep = chars[at];
    at += 1;
    /** The next field, up to the separator (consumed); null when the text ends first. */
    const next = (): string | null => {
      const end = chars.indexOf(sep, at);
      if (end === -1) return null;
      const field = chars.slice(at, end).join('');
      at = end + 1;
      return field;
    };
    /** The rule's text if it has `fields` fields, else everything left. */
    const textWith = (fields: number): string => {
      let end = start;
      for (let i = 0; i < fields && end !== -1; i += 1) end = chars.indexOf(sep, end + 1);
      return chars.slice(start, end === -1 ? undefined : end + 1).join('');
    };
    const shape = (type: string): string => (type === 'map' ? `${sep}map${sep}key${sep}prepend${sep}` : `${sep}type${sep}scope${sep}key${sep}prepend${sep}`);
    const fail = (fields: number, why: string): OptionError => invalid(name, value, `rule ${number} (${textWith(fields)}): ${why}`);
    const incomplete = (type: string): OptionError =>
      fail(type === 'map' ? 3 : 4, `incomplete rule: expected ${shape(type)}, closed by its separator '${sep}'`);

    const type = next();
    if (type === null) throw incomplete('');
    if (!XATTR_MAP_TYPES.includes(type)) throw fail(4, `unknown rule type '${type}', expected ${listOf(XATTR_MAP_TYPES)}`);
    let rule: XattrMapRule;
    if (type === 'map') {
      const key = next();
      const prepend = key === null ? null : next();
      if (key === null || prepend === null) throw incomplete(type);
      rule = { type, key, prepend };
    } else {
      const scope = next();
      if (scope === null) throw incomplete(type);
      const known = XATTR_MAP_SCOPES.find((candidate) => candidate === scope);
      if (known === undefined) throw fail(4, `unknown scope '${scope}', expected ${listOf(XATTR_MAP_SCOPES)}`);
      const key = next();
      const prepend = key === null ? null : next();
      if (key === null || prepend === null) throw incomplete(type);
      rule = { type: type as XattrRuleKind, scope: known, key, prepend };
    }
    const text = chars.slice(start, at).join('');
    if (rule.type === 'map' && at < chars.length) {
      throw invalid(name, value, `rule ${number} (${text}): a map rule must be the last rule`);
    }
    rules.push({ rule, text });
  }
  if (rules.length === 0) throw invalid(name, value, 'no rules given');
  return rules;
}

/** A rule in upstream's syntax, with a separator that none of its fields holds. */
export function formatXattrRule(rule: XattrMapRule): string {
  const fields = rule.type === 'map' ? [rule.type, rule.key, rule.prepend] : [rule.type, rule.scope, rule.key, rule.prepend];
  const sep = [':', '/', '|', ',', ';', '#', '%', '!', '@', '^', '~', '+', '='].find((candidate) => fields.every((field) => !field.includes(candidate)));
  // Some character is always free: at worst a control character no name uses.
  const chosen = sep ?? String.fromCodePoint(1);
  return `${chosen}${fields.join(chosen)}${chosen}`;
}

const XATTR_RULE_SHAPE = "an array of rules ({ type: 'prefix', scope: 'all', key, prepend }, ..., { type: 'map', key, prepend }) or a string of rules such as ':map::user.virtiofs.:'";

function checkXattrRuleObject(key: string, item: Record<string, unknown>, last: boolean): XattrMapRule {
  const type = XATTR_MAP_TYPES.find((candidate) => candidate === item.type);
  if (type === undefined) {
    const at = `${key}.type`;
    if (item.type === undefined) throw error(at, `'${at}' is required: one of ${listOf(XATTR_MAP_TYPES)}`, 'missing');
    throw invalid(at, String(item.type), `expected one of ${listOf(XATTR_MAP_TYPES)}`, typeof item.type === 'string' ? 'invalid-value' : 'invalid-type');
  }
  const fields = type === 'map' ? ['key', 'prepend'] : ['scope', 'key', 'prepend'];
  const unknown = Object.keys(item).find((field) => field !== 'type' && !fields.includes(field));
  if (unknown !== undefined) {
    const at = `${key}.${unknown}`;
    throw error(at, `unknown option '${at}': a '${type}' rule has ${listOf(fields)}`, 'unknown-option');
  }
  const rule: Record<string, unknown> = { type };
  for (const field of fields) {
    const at = `${key}.${field}`;
    const given = item[field];
    if (given === undefined) throw error(at, `'${at}' is required: a '${type}' rule has ${listOf(fields)}`, 'missing');
    if (typeof given !== 'string') throw wrongType(at, field === 'scope' ? `one of ${listOf(XATTR_MAP_SCOPES)}` : 'a string (it may be empty)');
    if (field === 'scope' && !(XATTR_MAP_SCOPES as readonly string[]).includes(given)) {
      throw invalid(at, given, `expected one of ${listOf(XATTR_MAP_SCOPES)}`);
    }
    if (given.includes('\0')) throw invalid(at, given, 'must not contain NUL characters');
    rule[field] = given;
  }
  if (type === 'map' && !last) throw error(key, `invalid value for '${key}': a map rule must be the last rule`, 'invalid-value');
  return rule as XattrMapRule;
}

/** A library `xattrMap` value: an array of rule objects or a string in upstream's language. */
export function checkXattrMap(key: string, value: unknown): WrittenXattrRule[] {
  if (typeof value === 'string') {
    if (value.includes('\0')) throw invalid(key, value, 'must not contain NUL characters');
    return parseXattrMap(key, value);
  }
  if (!Array.isArray(value)) throw wrongType(key, XATTR_RULE_SHAPE);
  if (value.length === 0) throw error(key, `invalid value for '${key}': no rules given`, 'invalid-value');
  return value.map((item: unknown, index) => {
    const at = `${key}[${index}]`;
    if (!isObject(item)) throw wrongType(at, "a rule ({ type, scope, key, prepend } or { type: 'map', key, prepend })");
    const rule = checkXattrRuleObject(at, item, index === value.length - 1);
    return { rule, text: formatXattrRule(rule) };
  });
}

// --- compilation -------------------------------------------------------------------------------

/** Where a compiled rule came from, in the user's terms. */
export interface PolicyRuleRef {
  /** The option holding the rule. */
  option: 'translateUid' | 'translateGid' | 'xattrMap';
  /** Its index among that option's rules (0-based); `null` for the catch-all the compiler adds. */
  index: number | null;
  /** The rule as the user wrote it: `map:1000:101000:1000`, `rule 2 (:bad:all:::)`. */
  text: string;
}

/** What the device process is, for the checks that depend on it (see `currentIdentity`). */
export interface DeviceIdentity {
  euid: number;
  egid: number;
  /** The ids a user namespace shows for ids it does not map (/proc/sys/kernel/overflowuid). */
  overflowUid: number;
  overflowGid: number;
}

function overflowId(file: string): number {
  try {
    const text = fs.readFileSync(file, 'utf8').trim();
    const id = Number(text);
    return /^[0-9]+$/.test(text) && id <= MAX_ID ? id : DEFAULT_OVERFLOW_ID;
  } catch {
    return DEFAULT_OVERFLOW_ID;
  }
}

const DEFAULT_OVERFLOW_ID = 65534;

/** This process, which a device it starts runs as; `null` where there are no POSIX ids. */
export function currentIdentity(): DeviceIdentity | null {
  const euid = process.geteuid?.();
  const egid = process.getegid?.();
  if (euid === undefined || egid === undefined) return null;
  return { euid, egid, overflowUid: overflowId('/proc/sys/kernel/overflowuid'), overflowGid: overflowId('/proc/sys/kernel/overflowgid') };
}

/** What the compiler needs to know about the device besides the rules. */
export interface PolicyContext {
  sandbox: SandboxMode;
  uidMap: readonly IdRange[];
  gidMap: readonly IdRange[];
  identity: DeviceIdentity | null;
}

export interface PolicyInput {
  translateUid?: unknown;
  translateGid?: unknown;
  xattrMap?: unknown;
}

/** The compiled tables (wire form) and, beside them, where each compiled rule came from. */
export interface CompiledPolicies {
  translateUid: IdMapping;
  translateGid: IdMapping;
  xattrMap: XattrRule[] | null;
  sources: {
    uid: { guestToHost: PolicyRuleRef[]; hostToGuest: PolicyRuleRef[] };
    gid: { guestToHost: PolicyRuleRef[]; hostToGuest: PolicyRuleRef[] };
    xattrMap: PolicyRuleRef[];
  };
  warnings: string[];
}

interface Entry {
  first: number;
  count: number;
  kind: 'range' | 'squash' | 'fail';
  target: number;
  source: number;
}

type IdKind = 'uid' | 'gid';

/** The ids a device can use on the host, as [first, count] ranges, and why only those. */
interface UsableIds {
  ranges: [number, number][];
  userNamespace: boolean;
  why: string;
}

/** Mirrors `DaemonConfig::usable_host_ids` (crates/daemon/src/config.rs). */
function usableHostIds(kind: IdKind, context: PolicyContext, naming: PolicyNaming): UsableIds | null {
  const who = context.identity;
  if (who === null || who.euid === 0) return null;
  const own = kind === 'uid' ? who.euid : who.egid;
  const ranges = kind === 'uid' ? context.uidMap : context.gidMap;
  if (context.sandbox !== 'namespace') {
    return { ranges: [[own, 1]], userNamespace: false, why: `an unprivileged device without a user namespace acts as its own ${kind} ${own} only` };
  }
  if (context.uidMap.length > 0 || context.gidMap.length > 0) {
    return {
      ranges: ranges.map((range) => [range.inside, range.count]),
      userNamespace: true,
      why: `the device's user namespace holds only the ${kind}s of its ${kind === 'uid' ? naming.uidMap : naming.gidMap} ranges (host ids in translation rules are ids inside it)`,
    };
  }
  return {
    ranges: [[0, 1]],
    userNamespace: true,
    why: `the device's user namespace holds only ${kind} 0 (your own ${kind} ${own} seen from inside; host ids in translation rules are ids inside it)`,
  };
}

function firstOutside(usable: UsableIds, first: number, count: number): number | null {
  let id = first;
  const last = first + count - 1;
  while (id <= last) {
    const holder = usable.ranges.find(([start, length]) => start <= id && id < start + length);
    if (holder === undefined) return id;
    id = holder[0] + holder[1];
  }
  return null;
}

const meets = (usable: UsableIds, first: number, count: number): boolean =>
  usable.ranges.some(([start, length]) => start <= first + count - 1 && first < start + length);

const span = (first: number, count: number): string => (count === 1 ? String(first) : `${first}-${first + count - 1}`);

function compileIds(kind: IdKind, value: unknown, context: PolicyContext, naming: PolicyNaming): {
  mapping: IdMapping;
  sources: { guestToHost: PolicyRuleRef[]; hostToGuest: PolicyRuleRef[] };
} {
  const key = kind === 'uid' ? naming.translateUid : naming.translateGid;
  const option = kind === 'uid' ? 'translateUid' : 'translateGid';
  const written = value === undefined ? [] : checkIdTranslations(key, value);
  const label = (index: number): string => (naming.cli ? `'${written[index].text}'` : `${index} (${written[index].text})`);
  const ruleKey = (index: number): string => (naming.cli ? key : `${key}[${index}]`);
  const toHost: Entry[] = [];
  const toGuest: Entry[] = [];
  written.forEach(({ rule }, source) => {
    switch (rule.type) {
      case 'map':
        toHost.push({ first: rule.guest, count: rule.count, kind: 'range', target: rule.host, source });
        toGuest.push({ first: rule.host, count: rule.count, kind: 'range', target: rule.guest, source });
        break;
      case 'guest':
        toHost.push({ first: rule.guest, count: rule.count, kind: 'range', target: rule.host, source });
        break;
      case 'squash-guest':
        toHost.push({ first: rule.guest, count: rule.count, kind: 'squash', target: rule.host, source });
        break;
      case 'forbid-guest':
        toHost.push({ first: rule.guest, count: rule.count, kind: 'fail', target: 0, source });
        break;
      case 'host':
        toGuest.push({ first: rule.host, count: rule.count, kind: 'range', target: rule.guest, source });
        break;
      case 'squash-host':
        toGuest.push({ first: rule.host, count: rule.count, kind: 'squash', target: rule.guest, source });
        break;
    }
  });
  for (const [entries, side] of [[toHost, 'guest'], [toGuest, 'host']] as const) {
    entries.sort((a, b) => a.first - b.first || a.source - b.source);
    for (let i = 1; i < entries.length; i += 1) {
      const [before, after] = [entries[i - 1], entries[i]];
      const end = before.first + before.count - 1;
      if (end >= after.first) {
        const [a, b] = [Math.min(before.source, after.source), Math.max(before.source, after.source)];
        const shared = span(after.first, Math.min(end, after.first + after.count - 1) - after.first + 1);
        throw error(
          ruleKey(b),
          `'${key}' rules ${label(a)} and ${label(b)} overlap: both translate ${side} ${kind}s ${shared}`,
          'conflict',
        );
      }
    }
  }
  const usable = usableHostIds(kind, context, naming);
  if (usable !== null) {
    for (const entry of toHost) {
      if (entry.kind === 'fail') continue;
      const outside = firstOutside(usable, entry.target, entry.kind === 'squash' ? 1 : entry.count);
      if (outside !== null) {
        throw error(
          ruleKey(entry.source),
          `'${key}' rule ${label(entry.source)} cannot work: it sends guest ${kind}s to host ${kind} ${outside}, which the device cannot act as: ${usable.why}`,
          'conflict',
          'environment',
        );
      }
    }
    if (usable.userNamespace) {
      const overflow = context.identity === null ? DEFAULT_OVERFLOW_ID : kind === 'uid' ? context.identity.overflowUid : context.identity.overflowGid;
      for (const entry of toGuest) {
        const coversOverflow = entry.first <= overflow && overflow < entry.first + entry.count;
        if (!meets(usable, entry.first, entry.count) && !coversOverflow) {
          throw error(
            ruleKey(entry.source),
            `'${key}' rule ${label(entry.source)} cannot work: the device never sees host ${kind}s ${span(entry.first, entry.count)} (${usable.why}; others appear as ${overflow})`,
            'conflict',
            'environment',
          );
        }
      }
    }
  }
  const ref = (entry: Entry): PolicyRuleRef => ({ option, index: entry.source, text: written[entry.source].text });
  const wire = ({ first, count, kind: ruleKind, target }: Entry) => ({ first, count, kind: ruleKind, target });
  return {
    mapping: {
      guestToHost: toHost.map(wire) as IdRule[],
      hostToGuest: toGuest.map(wire) as HostIdRule[],
    },
    sources: { guestToHost: toHost.map(ref), hostToGuest: toGuest.map(ref) },
  };
}

const CATCH_ALL: XattrRule = { kind: 'bad', client: true, server: true, key: '', prepend: '' };

function compileXattrMap(value: unknown, naming: PolicyNaming): { rules: XattrRule[] | null; sources: PolicyRuleRef[]; warnings: string[] } {
  if (value === undefined) return { rules: null, sources: [], warnings: [] };
  const key = naming.xattrMap;
  const written = checkXattrMap(key, value);
  const rules: XattrRule[] = [];
  const sources: PolicyRuleRef[] = [];
  written.forEach(({ rule, text }, index) => {
    const ref: PolicyRuleRef = { option: 'xattrMap', index, text: `rule ${index + 1} (${text})` };
    const push = (compiled: XattrRule): void => {
      rules.push(compiled);
      sources.push(ref);
    };
    if (rule.type !== 'map') {
      push({ kind: rule.type, client: rule.scope !== 'server', server: rule.scope !== 'client', key: rule.key, prepend: rule.prepend });
      return;
    }
    // Upstream's expansion of `:map:KEY:PREPEND:`.
    push({ kind: 'prefix', client: true, server: true, key: rule.key, prepend: rule.prepend });
    if (rule.key !== '') {
      push({ kind: 'bad', client: true, server: true, key: rule.prepend, prepend: rule.key });
      push({ kind: 'ok', client: true, server: true, key: '', prepend: '' });
    } else {
      push({ kind: 'bad', client: true, server: true, key: '', prepend: '' });
    }
  });
  const missing = [
    rules.some((rule) => rule.client && rule.key === '') ? null : 'every guest name (a client or all rule with an empty key)',
    rules.some((rule) => rule.server && rule.prepend === '') ? null : 'every host name (a server or all rule with an empty prepend)',
  ].filter((what): what is string => what !== null);
  const warnings: string[] = [];
  if (missing.length > 0) {
    rules.push({ ...CATCH_ALL });
    sources.push({ option: 'xattrMap', index: null, text: 'the catch-all :bad:all::: added after the last rule' });
    warnings.push(
      `'${key}' has no rule matching ${missing.join(' nor ')}: a final :bad:all::: rule was added, so names no rule ` +
        'matches are refused (EPERM) when the guest uses them and hidden from its listings, as the old C virtiofsd did',
    );
  }
  return { rules, sources, warnings };
}

/**
 * Checks and compiles the translation and extended-attribute rules of one device. Throws an
 * OptionError naming the option (and for the library the rule's index): a malformed rule, two
 * rules translating the same ids in one direction, or a rule that cannot work for this device
 * (host ids it cannot act as or never sees).
 */
export function compilePolicies(input: PolicyInput, context: PolicyContext, naming: PolicyNaming): CompiledPolicies {
  const uid = compileIds('uid', input.translateUid, context, naming);
  const gid = compileIds('gid', input.translateGid, context, naming);
  const xattr = compileXattrMap(input.xattrMap, naming);
  return {
    translateUid: uid.mapping,
    translateGid: gid.mapping,
    xattrMap: xattr.rules,
    sources: { uid: uid.sources, gid: gid.sources, xattrMap: xattr.sources },
    warnings: xattr.warnings,
  };
}
