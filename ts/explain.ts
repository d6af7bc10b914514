// `explainPolicy`: what a device would do with one id or extended-attribute name, for
// orchestrators checking a configuration. The options are compiled exactly as for a device; the
// answer comes from the device's own policy code (crates/policy, through the addon, loaded here
// on first use), and the compiled rule indexes it gives are mapped back to the rules as written.
import { DeviceOptions, checkDeviceOptions, compileDeviceOptionsPolicies } from './config';
import { OptionError } from './errors';
import { MAX_ID } from './generated/schema';
import { nativeAddon } from './native';
import { CompiledPolicies, PolicyRuleRef } from './policy';
import { checkIdMapsAllowed } from './validate';

export type { PolicyRuleRef };

/**
 * What to explain: one guest or host uid or gid, or one guest or host extended-attribute name.
 * A guest name is one the guest uses (GETXATTR, SETXATTR, REMOVEXATTR, a security label); a host
 * name one the host's LISTXATTR answers with.
 */
export type PolicyQuery =
  | { guestUid: number }
  | { hostUid: number }
  | { guestGid: number }
  | { hostGid: number }
  | { guestXattr: string }
  | { hostXattr: string };

/** What a device does with one uid or gid. */
export interface IdExplanation {
  kind: 'uid' | 'gid';
  /** The side the id was given for; the result is on the other side. */
  from: 'guest' | 'host';
  id: number;
  /**
   * The id on the other side: the host id a guest id acts as, or the guest id a host id shows as.
   * `null` when a `forbid-guest` rule refuses the guest id (requests acting as it, or setting it,
   * fail with EPERM).
   */
  result: number | null;
  /** The rule that decided, or `null` when no rule covers the id (it is the same number). */
  rule: PolicyRuleRef | null;
  /** `result` translated back to the side it came from (`id` is `null` when refused there). */
  back: { id: number | null; rule: PolicyRuleRef | null } | null;
  /** The way back returns `id`. */
  roundTrip: boolean;
  /** One sentence for people. */
  summary: string;
}

/**
 * What happens to a name: `renamed` or `unchanged` on its way, `denied` (EPERM; ENODATA for a
 * read) or `unsupported` (EOPNOTSUPP) for a guest name, `hidden` for a host name the guest's
 * listings leave out, `not-served` when the device serves no extended attributes at all. Without
 * `posixAcl` the POSIX ACL names (`system.posix_acl_access`, `system.posix_acl_default`) are
 * `unsupported` from the guest and `hidden` in listings. Not modelled: `trusted.*` names are
 * listed only to guest callers with CAP_SYS_ADMIN, as by a local filesystem.
 */
export type XattrOutcome = 'renamed' | 'unchanged' | 'denied' | 'unsupported' | 'hidden' | 'not-served';

/** What a device does with one extended-attribute name. */
export interface XattrExplanation {
  kind: 'xattr';
  from: 'guest' | 'host';
  name: string;
  outcome: XattrOutcome;
  /** The name on the other side, `null` when it has none. */
  result: string | null;
  /** The rule that decided, or `null` without `xattrMap` (names pass unchanged). */
  rule: PolicyRuleRef | null;
  /**
   * `result` on its way back: for a guest name, how the host lists the stored name to the guest;
   * for a host name, which host name the guest's name stands for.
   */
  back: { outcome: XattrOutcome; name: string | null; rule: PolicyRuleRef | null } | null;
  /** The way back returns `name`. */
  roundTrip: boolean;
  summary: string;
}

/** The answer of `explainPolicy`: `kind` tells an id's from a name's. */
export type PolicyExplanation = IdExplanation | XattrExplanation;

const QUERIES = {
  guestUid: ['uid', 'guest'],
  hostUid: ['uid', 'host'],
  guestGid: ['gid', 'guest'],
  hostGid: ['gid', 'host'],
  guestXattr: ['xattr', 'guest'],
  hostXattr: ['xattr', 'host'],
} as const;
type QueryKey = keyof typeof QUERIES;

interface WireQuery {
  kind: 'uid' | 'gid' | 'xattr';
  from: 'guest' | 'host';
  id?: number;
  name?: string;
}

function checkQuery(query: unknown): { key: QueryKey; wire: WireQuery } {
  const names = Object.keys(QUERIES).join(', ');
  if (typeof query !== 'object' || query === null || Array.isArray(query)) {
    throw new OptionError(`the query must be an object with one of ${names}`, 'usage', { key: 'query', reason: 'invalid-type' });
  }
  const keys = Object.keys(query).filter((key) => (query as Record<string, unknown>)[key] !== undefined);
  const unknown = keys.find((key) => !Object.hasOwn(QUERIES, key));
  if (unknown !== undefined) {
    throw new OptionError(`unknown query '${unknown}': ask for one of ${names}`, 'usage', { key: `query.${unknown}`, reason: 'unknown-option' });
  }
  if (keys.length !== 1) {
    throw new OptionError(`the query names ${keys.length === 0 ? 'nothing' : keys.join(' and ')}: ask for exactly one of ${names}`, 'usage', {
      key: 'query',
      reason: keys.length === 0 ? 'missing' : 'conflict',
    });
  }
  const key = keys[0] as QueryKey;
  const [kind, from] = QUERIES[key];
  const value = (query as Record<string, unknown>)[key];
  const at = `query.${key}`;
  if (kind === 'xattr') {
    if (typeof value !== 'string') throw new OptionError(`invalid value for '${at}': expected a name`, 'usage', { key: at, reason: 'invalid-type' });
    if (value === '' || value.includes('\0')) {
      throw new OptionError(`invalid value '${value}' for '${at}': a name is non-empty, without NUL`, 'usage', { key: at, reason: 'invalid-value' });
    }
    return { key, wire: { kind, from, name: value } };
  }
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > MAX_ID) {
    throw new OptionError(`invalid value '${String(value)}' for '${at}': must be an integer between 0 and ${MAX_ID}`, 'usage', {
      key: at,
      reason: typeof value === 'number' && Number.isInteger(value) ? 'out-of-range' : 'invalid-type',
    });
  }
  return { key, wire: { kind, from, id: value } };
}

interface IdAnswer {
  result: number | null;
  rule: number | null;
  back: { result: number | null; rule: number | null } | null;
}

interface NameStep {
  outcome: 'renamed' | 'unchanged' | 'denied' | 'unsupported' | 'hidden';
  name: string | null;
  rule: number | null;
  /** Decided by the ACL names being refused without `posixAcl`. */
  aclOff: boolean;
}

interface NameAnswer {
  result: NameStep;
  back: NameStep | null;
}

const other = (side: 'guest' | 'host'): 'guest' | 'host' => (side === 'guest' ? 'host' : 'guest');
const described = (rule: PolicyRuleRef | null, none: string): string =>
  rule === null ? none : rule.option === 'xattrMap' ? `xattrMap ${rule.text}` : `${rule.option} rule ${rule.index} (${rule.text})`;

function explainId(wire: WireQuery, answer: IdAnswer, sources: CompiledPolicies['sources']): IdExplanation {
  const kind = wire.kind as 'uid' | 'gid';
  const from = wire.from;
  const id = wire.id as number;
  const tables = kind === 'uid' ? sources.uid : sources.gid;
  const table = (side: 'guest' | 'host'): PolicyRuleRef[] => (side === 'guest' ? tables.guestToHost : tables.hostToGuest);
  const ref = (side: 'guest' | 'host', index: number | null): PolicyRuleRef | null => (index === null ? null : table(side)[index]);
  const rule = ref(from, answer.rule);
  const back = answer.back === null ? null : { id: answer.back.result, rule: ref(other(from), answer.back.rule) };
  const option = kind === 'uid' ? 'translateUid' : 'translateGid';
  const none = `no ${option} rule covers it`;
  let summary: string;
  if (answer.result === null) {
    summary = `guest ${kind} ${id} is refused by ${described(rule, none)}: requests acting as it, or setting it, fail with EPERM`;
  } else {
    const there = from === 'guest' ? `acts as host ${kind} ${answer.result}` : `shows in the guest as ${kind} ${answer.result}`;
    summary = `${from} ${kind} ${id} ${there} (${described(rule, none)})`;
    if (back !== null) {
      const returned = back.id === null ? 'is refused' : from === 'guest' ? `shows in the guest as ${kind} ${back.id}` : `acts as host ${kind} ${back.id}`;
      const coming = from === 'guest' ? `host ${kind} ${answer.result}` : `guest ${kind} ${answer.result}`;
      summary += `; ${coming} ${returned} (${described(back.rule, `no ${option} rule covers it`)})`;
      summary += back.id === id ? ', the id it started as' : `, not ${id}`;
    }
  }
  return { kind, from, id, result: answer.result, rule, back, roundTrip: back?.id === id, summary };
}

function explainName(wire: WireQuery, answer: NameAnswer, sources: CompiledPolicies['sources']): XattrExplanation {
  const from = wire.from;
  const name = wire.name as string;
  const ref = (index: number | null): PolicyRuleRef | null => (index === null ? null : sources.xattrMap[index]);
  const rule = ref(answer.result.rule);
  const back = answer.back === null ? null : { outcome: answer.back.outcome, name: answer.back.name, rule: ref(answer.back.rule) };
  const none = 'no xattrMap: names pass unchanged';
  const aclOff = 'because posixAcl is off (the guest kernel would not apply POSIX ACLs, so their names are refused and not listed)';
  const step = (side: 'guest' | 'host', text: string, s: { outcome: XattrOutcome; name: string | null; rule: PolicyRuleRef | null }, acl: boolean): string => {
    // A refusal or hiding says who decided: the rule, the ACL gate, or the rule and then the gate.
    const by = acl ? (s.rule === null ? aclOff : `after ${described(s.rule, none)}, ${aclOff}`) : `by ${described(s.rule, none)}`;
    const why = described(s.rule, none);
    if (side === 'guest') {
      switch (s.outcome) {
        case 'denied':
          return `guest name ${text} is refused with EPERM (ENODATA when read) ${by}`;
        case 'unsupported':
          return `guest name ${text} is refused with EOPNOTSUPP ${by}`;
        default:
          return `guest name ${text} is stored on the host as ${s.name} (${why})`;
      }
    }
    return s.outcome === 'hidden' ? `host name ${text} is hidden from the guest's listings ${by}` : `host name ${text} is listed to the guest as ${s.name} (${why})`;
  };
  const result = { outcome: answer.result.outcome as XattrOutcome, name: answer.result.name, rule };
  let summary = step(from, name, result, answer.result.aclOff);
  if (back !== null && result.name !== null && answer.back !== null) {
    summary += `; ${step(other(from), result.name, back, answer.back.aclOff)}`;
    summary += back.name === name ? ', the name it started as' : `, not ${name}`;
  }
  return { kind: 'xattr', from, name, outcome: result.outcome, result: result.name, rule, back, roundTrip: back?.name === name, summary };
}

/**
 * Explains what a device started with `options` does with one uid, gid or extended-attribute
 * name: what it becomes on the other side, which rule decided (as the user wrote it), and what it
 * becomes on the way back. The options are checked exactly as `startDevice` checks them (only
 * `sharedDir` and the socket may be left out) and rejected with the same OptionErrors; the
 * answer is computed by the device's own policy code, so this needs the platform's native addon
 * (a DeviceError with reason `native` where it is missing), loaded on the first call.
 */
export function explainPolicy(options: Partial<DeviceOptions>, query: PolicyQuery): PolicyExplanation {
  const checked = checkDeviceOptions(options) as Partial<DeviceOptions>;
  const sandbox = checked.sandbox ?? 'namespace';
  const uidMap = checked.uidMap ?? [];
  const gidMap = checked.gidMap ?? [];
  checkIdMapsAllowed(uidMap.length > 0 ? 'uidMap' : gidMap.length > 0 ? 'gidMap' : null, sandbox, process.geteuid?.());
  const { compiled, xattr } = compileDeviceOptionsPolicies(checked, { sandbox, uidMap, gidMap });
  const { wire } = checkQuery(query);
  if (wire.kind === 'xattr' && !xattr) {
    return {
      kind: 'xattr',
      from: wire.from,
      name: wire.name as string,
      outcome: 'not-served',
      result: null,
      rule: null,
      back: null,
      roundTrip: false,
      summary: 'the device serves no extended attributes (xattr is off): every request about them fails with ENOSYS',
    };
  }
  const tables = {
    translateUid: compiled.translateUid,
    translateGid: compiled.translateGid,
    xattrMap: compiled.xattrMap,
    posixAcl: checked.posixAcl ?? false,
  };
  const answer: unknown = JSON.parse(nativeAddon().explainPolicy(JSON.stringify(tables), JSON.stringify(wire)));
  return wire.kind === 'xattr' ? explainName(wire, answer as NameAnswer, compiled.sources) : explainId(wire, answer as IdAnswer, compiled.sources);
}
