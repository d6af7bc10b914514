//! ID translation (`--translate-uid`, `--translate-gid`).
//!
//! Each id kind has two independent tables, guest-to-host and host-to-guest; an id no rule covers
//! is the same number on both sides. The configuration layer compiles upstream's rule types into
//! them: `guest` and `squash-guest` and `forbid-guest` fill the guest-to-host table, `host` and
//! `squash-host` the host-to-guest table, and `map` both.

use serde::Deserialize;

/// What a rule does with the ids it covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum IdRuleKind {
    /// `first + k` becomes `target + k`.
    Range,
    /// Every covered id becomes `target`.
    Squash,
    /// Covered ids may not be used: a request that would act as one, or set one, fails with
    /// `EPERM`. Only in a guest-to-host table.
    Fail,
}

/// The ids `first ..= first + count - 1` and what they become.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IdRule {
    pub first: u32,
    pub count: u32,
    pub kind: IdRuleKind,
    /// The first id of the target range (`Range`), the single target (`Squash`); 0 for `Fail`.
    pub target: u32,
}

impl IdRule {
    fn last(&self) -> u32 {
        // `IdTable::new` has checked that this does not overflow.
        self.first + (self.count - 1)
    }
}

/// Why a table was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdTableError {
    #[error("rule {index}: the count must be at least 1")]
    EmptyRange { index: usize },
    #[error("rule {index}: the range starting at {first} with {count} ids passes the largest id")]
    SourceOverflow {
        index: usize,
        first: u32,
        count: u32,
    },
    #[error("rule {index}: the target range starting at {target} with {count} ids passes the largest id")]
    TargetOverflow {
        index: usize,
        target: u32,
        count: u32,
    },
    #[error("rule {index} overlaps the rule before it, or the rules are not in ascending order")]
    Overlap { index: usize },
    #[error("rule {index}: a host-to-guest table cannot refuse ids")]
    FailTowardsGuest { index: usize },
}

/// One direction of one id kind: rules sorted by `first`, not overlapping.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdTable {
    rules: Vec<IdRule>,
}

/// The id a guest may not use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("id {0} is forbidden by the translation rules")]
pub struct Forbidden(pub u32);

impl IdTable {
    /// Checks `rules` (ascending, disjoint, no overflow) and makes a table of them.
    pub fn new(rules: Vec<IdRule>, allow_fail: bool) -> Result<Self, IdTableError> {
        for (index, rule) in rules.iter().enumerate() {
            if rule.count == 0 {
                return Err(IdTableError::EmptyRange { index });
            }
            if rule.first.checked_add(rule.count - 1).is_none() {
                return Err(IdTableError::SourceOverflow {
                    index,
                    first: rule.first,
                    count: rule.count,
                });
            }
            if rule.kind == IdRuleKind::Range && rule.target.checked_add(rule.count - 1).is_none() {
                return Err(IdTableError::TargetOverflow {
                    index,
                    target: rule.target,
                    count: rule.count,
                });
            }
            if rule.kind == IdRuleKind::Fail && !allow_fail {
                return Err(IdTableError::FailTowardsGuest { index });
            }
            if index > 0 && rules[index - 1].last() >= rule.first {
                return Err(IdTableError::Overlap { index });
            }
        }
        Ok(IdTable { rules })
    }

    /// No rules: every id is itself.
    pub fn is_identity(&self) -> bool {
        self.rules.is_empty()
    }

    /// The rules, in ascending order.
    pub fn rules(&self) -> &[IdRule] {
        &self.rules
    }

    /// The rule covering `id`, if any.
    pub fn rule_for(&self, id: u32) -> Option<&IdRule> {
        // The last rule starting at or below `id`; it covers `id` unless it ends before.
        let after = self.rules.partition_point(|r| r.first <= id);
        let rule = self.rules.get(after.checked_sub(1)?)?;
        (id <= rule.last()).then_some(rule)
    }

    /// What `id` becomes; `None` when a `Fail` rule covers it.
    pub fn map(&self, id: u32) -> Option<u32> {
        if self.rules.is_empty() {
            return Some(id);
        }
        match self.rule_for(id) {
            None => Some(id),
            Some(rule) => match rule.kind {
                IdRuleKind::Range => Some(rule.target + (id - rule.first)),
                IdRuleKind::Squash => Some(rule.target),
                IdRuleKind::Fail => None,
            },
        }
    }
}

/// Both directions of one id kind, as the device configuration carries them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(
    rename_all = "camelCase",
    deny_unknown_fields,
    try_from = "IdMappingWire"
)]
pub struct IdMapping {
    guest_to_host: IdTable,
    host_to_guest: IdTable,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct IdMappingWire {
    guest_to_host: Vec<IdRule>,
    host_to_guest: Vec<IdRule>,
}

/// A table of an [`IdMapping`] was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdMappingError {
    #[error("guest-to-host table: {0}")]
    GuestToHost(#[source] IdTableError),
    #[error("host-to-guest table: {0}")]
    HostToGuest(#[source] IdTableError),
}

impl TryFrom<IdMappingWire> for IdMapping {
    type Error = IdMappingError;

    fn try_from(wire: IdMappingWire) -> Result<Self, Self::Error> {
        IdMapping::new(wire.guest_to_host, wire.host_to_guest)
    }
}

impl IdMapping {
    pub fn new(
        guest_to_host: Vec<IdRule>,
        host_to_guest: Vec<IdRule>,
    ) -> Result<Self, IdMappingError> {
        Ok(IdMapping {
            guest_to_host: IdTable::new(guest_to_host, true)
                .map_err(IdMappingError::GuestToHost)?,
            host_to_guest: IdTable::new(host_to_guest, false)
                .map_err(IdMappingError::HostToGuest)?,
        })
    }

    /// Neither direction has rules.
    pub fn is_identity(&self) -> bool {
        self.guest_to_host.is_identity() && self.host_to_guest.is_identity()
    }

    pub fn guest_to_host(&self) -> &IdTable {
        &self.guest_to_host
    }

    pub fn host_to_guest(&self) -> &IdTable {
        &self.host_to_guest
    }

    /// The host id acting for guest id `id`.
    pub fn to_host(&self, id: u32) -> Result<u32, Forbidden> {
        self.guest_to_host.map(id).ok_or(Forbidden(id))
    }

    /// The guest id shown for host id `id` (never refused: the table holds no `Fail` rule).
    pub fn to_guest(&self, id: u32) -> u32 {
        self.host_to_guest.map(id).unwrap_or(id)
    }
}

/// The uid and gid translations of one device.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdPolicy {
    pub uid: IdMapping,
    pub gid: IdMapping,
}

impl IdPolicy {
    /// Neither uids nor gids are translated.
    pub fn is_identity(&self) -> bool {
        self.uid.is_identity() && self.gid.is_identity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(first: u32, count: u32, kind: IdRuleKind, target: u32) -> IdRule {
        IdRule {
            first,
            count,
            kind,
            target,
        }
    }

    #[test]
    fn unmapped_ids_are_themselves() {
        let m = IdMapping::default();
        assert!(m.is_identity());
        assert_eq!(m.to_host(1000), Ok(1000));
        assert_eq!(m.to_guest(u32::MAX), u32::MAX);
    }

    #[test]
    fn ranges_squashes_and_failures() {
        let m = IdMapping::new(
            vec![
                rule(0, 1, IdRuleKind::Squash, 65534),
                rule(1000, 10, IdRuleKind::Range, 101000),
                rule(5000, 2, IdRuleKind::Fail, 0),
            ],
            vec![rule(101000, 10, IdRuleKind::Range, 1000)],
        )
        .unwrap();
        assert_eq!(m.to_host(0), Ok(65534));
        assert_eq!(m.to_host(1000), Ok(101000));
        assert_eq!(m.to_host(1009), Ok(101009));
        assert_eq!(m.to_host(1010), Ok(1010));
        assert_eq!(m.to_host(999), Ok(999));
        assert_eq!(m.to_host(5001), Err(Forbidden(5001)));
        assert_eq!(m.to_host(5002), Ok(5002));
        assert_eq!(m.to_guest(101005), 1005);
        assert_eq!(m.to_guest(0), 0);
    }

    #[test]
    fn the_largest_id_can_be_covered() {
        let t = IdTable::new(vec![rule(u32::MAX, 1, IdRuleKind::Squash, 7)], true).unwrap();
        assert_eq!(t.map(u32::MAX), Some(7));
        assert_eq!(t.map(u32::MAX - 1), Some(u32::MAX - 1));
    }

    #[test]
    fn bad_tables_are_refused() {
        let e = |rules, allow| IdTable::new(rules, allow).unwrap_err();
        assert_eq!(
            e(vec![rule(1, 0, IdRuleKind::Range, 1)], true),
            IdTableError::EmptyRange { index: 0 }
        );
        assert!(matches!(
            e(vec![rule(u32::MAX, 2, IdRuleKind::Range, 1)], true),
            IdTableError::SourceOverflow { .. }
        ));
        assert!(matches!(
            e(vec![rule(1, 2, IdRuleKind::Range, u32::MAX)], true),
            IdTableError::TargetOverflow { .. }
        ));
        assert_eq!(
            e(
                vec![
                    rule(10, 5, IdRuleKind::Range, 1),
                    rule(14, 1, IdRuleKind::Squash, 1)
                ],
                true
            ),
            IdTableError::Overlap { index: 1 }
        );
        assert_eq!(
            e(
                vec![
                    rule(10, 1, IdRuleKind::Range, 1),
                    rule(5, 1, IdRuleKind::Squash, 1)
                ],
                true
            ),
            IdTableError::Overlap { index: 1 }
        );
        assert_eq!(
            e(vec![rule(1, 1, IdRuleKind::Fail, 0)], false),
            IdTableError::FailTowardsGuest { index: 0 }
        );
    }

    #[test]
    fn wire_form_is_checked_on_load() {
        let ok: IdMapping = serde_json::from_str(
            r#"{"guestToHost":[{"first":1000,"count":1,"kind":"range","target":2000}],"hostToGuest":[]}"#,
        )
        .unwrap();
        assert_eq!(ok.to_host(1000), Ok(2000));
        let bad = serde_json::from_str::<IdMapping>(
            r#"{"guestToHost":[],"hostToGuest":[{"first":1,"count":1,"kind":"fail","target":0}]}"#,
        );
        assert!(bad.unwrap_err().to_string().contains("cannot refuse"));
    }
}
