//! The ids inside POSIX ACL values (`system.posix_acl_access`, `system.posix_acl_default`).
//!
//! The value is the kernel's `posix_acl_xattr` format: a little-endian `u32` version (2), then
//! 8-byte entries `{ tag: u16, perm: u16, id: u32 }`. Only named-user and named-group entries
//! carry an id. After translation the entries are put back in the kernel's order (by tag, then
//! id), and entries that translation made equal (a squash) are merged, their permissions joined:
//! both ids act as the same id on the other side anyway.

use std::borrow::Cow;

use crate::idmap::{Forbidden, IdMapping};

/// The two names whose values are ACLs.
pub const ACCESS: &[u8] = b"system.posix_acl_access";
pub const DEFAULT: &[u8] = b"system.posix_acl_default";

const VERSION: u32 = 2;
const HEADER_LEN: usize = 4;
const ENTRY_LEN: usize = 8;
const TAG_USER: u16 = 0x02;
const TAG_GROUP: u16 = 0x08;

/// Whether `name` is one of the POSIX ACL attributes.
pub fn is_acl_name(name: &[u8]) -> bool {
    name == ACCESS || name == DEFAULT
}

/// Why a value could not be translated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AclError {
    #[error("not a POSIX ACL value (version 2, 8-byte entries)")]
    Malformed,
    #[error(transparent)]
    Forbidden(#[from] Forbidden),
}

impl AclError {
    /// The errno a guest gets: `EINVAL` as a local filesystem answers a malformed ACL, `EPERM`
    /// for an id the translation rules forbid.
    pub fn errno(&self) -> i32 {
        match self {
            AclError::Malformed => libc_einval(),
            AclError::Forbidden(_) => libc_eperm(),
        }
    }
}

// This crate has no libc dependency; the two values are fixed by the Linux ABI on every
// architecture.
const fn libc_einval() -> i32 {
    22
}
const fn libc_eperm() -> i32 {
    1
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Entry {
    tag: u16,
    id: u32,
    perm: u16,
}

fn parse(value: &[u8]) -> Result<Vec<Entry>, AclError> {
    if value.len() < HEADER_LEN || !(value.len() - HEADER_LEN).is_multiple_of(ENTRY_LEN) {
        return Err(AclError::Malformed);
    }
    let version = u32::from_le_bytes([value[0], value[1], value[2], value[3]]);
    if version != VERSION {
        return Err(AclError::Malformed);
    }
    Ok(value[HEADER_LEN..]
        .chunks_exact(ENTRY_LEN)
        .map(|e| Entry {
            tag: u16::from_le_bytes([e[0], e[1]]),
            perm: u16::from_le_bytes([e[2], e[3]]),
            id: u32::from_le_bytes([e[4], e[5], e[6], e[7]]),
        })
        .collect())
}

fn render(mut entries: Vec<Entry>) -> Vec<u8> {
    entries.sort();
    let mut merged: Vec<Entry> = Vec::with_capacity(entries.len());
    for e in entries {
        match merged.last_mut() {
            Some(last) if last.tag == e.tag && last.id == e.id && has_id(e.tag) => {
                last.perm |= e.perm;
            }
            _ => merged.push(e),
        }
    }
    let mut out = Vec::with_capacity(HEADER_LEN + merged.len() * ENTRY_LEN);
    out.extend_from_slice(&VERSION.to_le_bytes());
    for e in merged {
        out.extend_from_slice(&e.tag.to_le_bytes());
        out.extend_from_slice(&e.perm.to_le_bytes());
        out.extend_from_slice(&e.id.to_le_bytes());
    }
    out
}

fn has_id(tag: u16) -> bool {
    tag == TAG_USER || tag == TAG_GROUP
}

/// Rewrites the ids of `value` with `map`, unless `identity` says the direction has no rules:
/// then the value is neither parsed nor copied.
fn translate<'a>(
    value: &'a [u8],
    identity: bool,
    uids: &IdMapping,
    gids: &IdMapping,
    map: impl Fn(&IdMapping, u32) -> Result<u32, Forbidden>,
) -> Result<Cow<'a, [u8]>, AclError> {
    if identity {
        return Ok(Cow::Borrowed(value));
    }
    let mut entries = parse(value)?;
    for e in &mut entries {
        e.id = match e.tag {
            TAG_USER => map(uids, e.id)?,
            TAG_GROUP => map(gids, e.id)?,
            _ => e.id,
        };
    }
    Ok(Cow::Owned(render(entries)))
}

/// A value the guest set, with guest ids replaced by host ids.
pub fn to_host<'a>(
    value: &'a [u8],
    uids: &IdMapping,
    gids: &IdMapping,
) -> Result<Cow<'a, [u8]>, AclError> {
    // Only the guest-to-host tables matter here: rules that change only what the guest sees
    // leave what it sets alone.
    let identity = uids.guest_to_host().is_identity() && gids.guest_to_host().is_identity();
    translate(value, identity, uids, gids, |m, id| m.to_host(id))
}

/// A value read on the host, with host ids replaced by guest ids. Never longer than `value`.
pub fn to_guest<'a>(
    value: &'a [u8],
    uids: &IdMapping,
    gids: &IdMapping,
) -> Result<Cow<'a, [u8]>, AclError> {
    let identity = uids.host_to_guest().is_identity() && gids.host_to_guest().is_identity();
    translate(value, identity, uids, gids, |m, id| Ok(m.to_guest(id)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::idmap::{IdRule, IdRuleKind};

    const USER_OBJ: u16 = 0x01;
    const GROUP_OBJ: u16 = 0x04;
    const MASK: u16 = 0x10;
    const OTHER: u16 = 0x20;
    const UNDEFINED: u32 = u32::MAX;

    fn acl(entries: &[(u16, u16, u32)]) -> Vec<u8> {
        let mut v = VERSION.to_le_bytes().to_vec();
        for &(tag, perm, id) in entries {
            v.extend_from_slice(&tag.to_le_bytes());
            v.extend_from_slice(&perm.to_le_bytes());
            v.extend_from_slice(&id.to_le_bytes());
        }
        v
    }

    fn map(guest: u32, host: u32, count: u32) -> IdMapping {
        let r = |first, target| IdRule {
            first,
            count,
            kind: IdRuleKind::Range,
            target,
        };
        IdMapping::new(vec![r(guest, host)], vec![r(host, guest)]).unwrap()
    }

    #[test]
    fn identity_borrows_the_value() {
        let v = acl(&[(USER_OBJ, 7, UNDEFINED)]);
        let id = IdMapping::default();
        assert!(matches!(to_host(&v, &id, &id), Ok(Cow::Borrowed(_))));
        // Not parsed at all: a malformed value reaches the host, which judges it.
        assert!(matches!(to_host(b"xx", &id, &id), Ok(Cow::Borrowed(_))));
    }

    #[test]
    fn each_direction_is_free_when_its_own_tables_are_empty() {
        // Only guest-to-host rules: what the host reads back is passed as it is, not parsed
        // (a malformed value included) and not copied; what the guest sets is translated.
        let only_in = IdMapping::new(
            vec![IdRule {
                first: 0,
                count: 1,
                kind: IdRuleKind::Squash,
                target: 65534,
            }],
            vec![],
        )
        .unwrap();
        let id = IdMapping::default();
        let v = acl(&[(TAG_USER, 4, 0)]);
        assert!(matches!(to_guest(&v, &only_in, &id), Ok(Cow::Borrowed(_))));
        assert!(matches!(
            to_guest(b"xx", &only_in, &id),
            Ok(Cow::Borrowed(_))
        ));
        assert_eq!(
            to_host(&v, &only_in, &id).unwrap().as_ref(),
            acl(&[(TAG_USER, 4, 65534)])
        );
        // Only host-to-guest rules: the other way round.
        let only_out = IdMapping::new(vec![], vec![map_rule(5, 500)]).unwrap();
        let host = acl(&[(TAG_GROUP, 4, 5)]);
        assert!(matches!(
            to_host(&host, &id, &only_out),
            Ok(Cow::Borrowed(_))
        ));
        assert_eq!(
            to_guest(&host, &id, &only_out).unwrap().as_ref(),
            acl(&[(TAG_GROUP, 4, 500)])
        );
    }

    fn map_rule(first: u32, target: u32) -> IdRule {
        IdRule {
            first,
            count: 1,
            kind: IdRuleKind::Range,
            target,
        }
    }

    #[test]
    fn named_entries_are_translated_and_reordered() {
        // Guest 1000..1010 is host 101000..; guest 2000 is not mapped, so it stays 2000 and must
        // now sort before the translated entry.
        let uids = map(1000, 101000, 10);
        let gids = map(1000, 201000, 10);
        let guest = acl(&[
            (USER_OBJ, 7, UNDEFINED),
            (TAG_USER, 6, 1001),
            (TAG_USER, 4, 2000),
            (GROUP_OBJ, 5, UNDEFINED),
            (TAG_GROUP, 5, 1002),
            (MASK, 7, UNDEFINED),
            (OTHER, 0, UNDEFINED),
        ]);
        let host = to_host(&guest, &uids, &gids).unwrap();
        assert_eq!(
            host.as_ref(),
            acl(&[
                (USER_OBJ, 7, UNDEFINED),
                (TAG_USER, 4, 2000),
                (TAG_USER, 6, 101001),
                (GROUP_OBJ, 5, UNDEFINED),
                (TAG_GROUP, 5, 201002),
                (MASK, 7, UNDEFINED),
                (OTHER, 0, UNDEFINED),
            ])
        );
        let back = to_guest(&host, &uids, &gids).unwrap();
        assert_eq!(
            back.as_ref(),
            acl(&[
                (USER_OBJ, 7, UNDEFINED),
                (TAG_USER, 6, 1001),
                (TAG_USER, 4, 2000),
                (GROUP_OBJ, 5, UNDEFINED),
                (TAG_GROUP, 5, 1002),
                (MASK, 7, UNDEFINED),
                (OTHER, 0, UNDEFINED),
            ])
        );
    }

    #[test]
    fn squashed_entries_merge_and_forbidden_ids_are_refused() {
        let squash = IdMapping::new(
            vec![
                IdRule {
                    first: 1000,
                    count: 2,
                    kind: IdRuleKind::Squash,
                    target: 5,
                },
                IdRule {
                    first: 3000,
                    count: 1,
                    kind: IdRuleKind::Fail,
                    target: 0,
                },
            ],
            vec![],
        )
        .unwrap();
        let id = IdMapping::default();
        let guest = acl(&[(TAG_USER, 4, 1000), (TAG_USER, 2, 1001)]);
        let host = to_host(&guest, &squash, &id).unwrap();
        assert_eq!(host.as_ref(), acl(&[(TAG_USER, 6, 5)]));
        let forbidden = acl(&[(TAG_USER, 4, 3000)]);
        let err = to_host(&forbidden, &squash, &id).unwrap_err();
        assert_eq!(err.errno(), 1);
        assert_eq!(
            to_host(b"\x02\0\0\0\x01", &squash, &id)
                .unwrap_err()
                .errno(),
            22
        );
        assert_eq!(
            to_host(&[3, 0, 0, 0], &squash, &id).unwrap_err(),
            AclError::Malformed
        );
    }
}
