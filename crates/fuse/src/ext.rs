//! Request extensions: the records the kernel appends to create-type requests, after the
//! arguments, in the `total_extlen * 8` bytes the header announces.
//!
//! Every record starts with a `fuse_ext_header { size, type }` whose `size` covers the whole
//! record and is a multiple of 8. Types `0..=FUSE_MAX_NR_SECCTX` are the security-context record
//! (`FUSE_SECURITY_CTX`), whose header is read as `fuse_secctx_header { size, nr_secctx }`: the
//! type is the number of labels. Type `FUSE_EXT_GROUPS` carries the supplementary group
//! (`FUSE_CREATE_SUPP_GROUP`). Records of kinds not negotiated, or unknown, are skipped.
//!
//! The guest controls every byte here, so every length is checked against the bytes present
//! before it is used, and nothing is allocated beyond the one label actually delivered (bounded
//! by `XATTR_NAME_MAX` and `XATTR_SIZE_MAX`). Anything malformed is `EINVAL`.

use std::ffi::CStr;
use std::mem::size_of;
use std::sync::Arc;

use crate::abi::{ExtHeader, Secctx, SuppGroups, WireStruct, FUSE_EXT_GROUPS, FUSE_MAX_NR_SECCTX};
use crate::filesystem::SecurityContext;
use crate::server::{MAX_XATTR_NAME_LEN, MAX_XATTR_SIZE};

/// Records are padded to this alignment (`FUSE_REC_ALIGN`).
const REC_ALIGN: usize = 8;

/// The namespace every LSM label lives in. The kernel sends nothing else; a name outside it
/// would let a guest set, say, a `trusted.` attribute through a create, so it is refused.
const SECURITY_PREFIX: &[u8] = b"security.";

/// Which records the negotiated flags let the kernel send.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Wanted {
    /// `FUSE_CREATE_SUPP_GROUP`.
    pub(crate) groups: bool,
    /// `FUSE_SECURITY_CTX`.
    pub(crate) security_context: bool,
}

impl Wanted {
    pub(crate) fn any(self) -> bool {
        self.groups || self.security_context
    }
}

/// What a request's extensions said.
#[derive(Debug, Default)]
pub(crate) struct Extensions {
    /// The first supplementary group of a `FUSE_EXT_GROUPS` record (guest id).
    pub(crate) supplementary_gid: Option<u32>,
    /// The label of the security-context record, if it carried one.
    pub(crate) security_context: Option<Arc<SecurityContext>>,
}

/// Parses an extension area, reading only the records `wanted` names.
pub(crate) fn parse(mut ext: &[u8], wanted: Wanted) -> Result<Extensions, i32> {
    let mut found = Extensions::default();
    let mut seen_secctx = false;
    while !ext.is_empty() {
        let (h, _) = ExtHeader::from_prefix(ext).ok_or(libc::EINVAL)?;
        let size = h.size as usize;
        if size < size_of::<ExtHeader>() || !size.is_multiple_of(REC_ALIGN) || size > ext.len() {
            return Err(libc::EINVAL);
        }
        let body = &ext[size_of::<ExtHeader>()..size];
        if h.typ <= FUSE_MAX_NR_SECCTX && wanted.security_context {
            // The kernel sends one such record per request; a second would be a second answer
            // to the same question.
            if seen_secctx {
                return Err(libc::EINVAL);
            }
            seen_secctx = true;
            found.security_context = security_context(h.typ, body)?.map(Arc::new);
        } else if h.typ == FUSE_EXT_GROUPS && wanted.groups {
            found.supplementary_gid = first_group(body)?;
        }
        ext = &ext[size..];
    }
    Ok(found)
}

/// The body of a `FUSE_EXT_GROUPS` record: a count, then that many u32 group ids.
fn first_group(body: &[u8]) -> Result<Option<u32>, i32> {
    let (g, groups) = SuppGroups::from_prefix(body).ok_or(libc::EINVAL)?;
    let count = g.nr_groups as usize;
    if groups.len() / 4 < count {
        return Err(libc::EINVAL);
    }
    if count == 0 {
        return Ok(None);
    }
    let mut first = [0u8; 4];
    first.copy_from_slice(&groups[..4]);
    Ok(Some(u32::from_ne_bytes(first)))
}

/// The body of a security-context record holding `count` labels, each
/// `fuse_secctx { size, padding }`, a NUL-terminated name and `size` value bytes, padded to
/// [`REC_ALIGN`]. The kernel sends no label (the guest has no LSM that labels) or one.
fn security_context(count: u32, body: &[u8]) -> Result<Option<SecurityContext>, i32> {
    match count {
        0 if body.is_empty() => Ok(None),
        1 => one_label(body).map(Some),
        _ => Err(libc::EINVAL),
    }
}

fn one_label(body: &[u8]) -> Result<SecurityContext, i32> {
    let (rec, rest) = Secctx::from_prefix(body).ok_or(libc::EINVAL)?;
    let value_len = rec.size as usize;
    // The kernel only sends a record for a non-empty label.
    if value_len == 0 || value_len > MAX_XATTR_SIZE as usize {
        return Err(libc::EINVAL);
    }
    // Look for the NUL only where a valid name could end.
    let window = &rest[..rest.len().min(MAX_XATTR_NAME_LEN + 1)];
    let nul = window.iter().position(|&b| b == 0).ok_or(libc::EINVAL)?;
    let name = CStr::from_bytes_with_nul(&rest[..=nul]).map_err(|_| libc::EINVAL)?;
    let value = rest[nul + 1..].get(..value_len).ok_or(libc::EINVAL)?;
    // Exactly one padded record: no bytes the parser did not account for.
    let used = size_of::<Secctx>() + nul + 1 + value_len;
    if used.next_multiple_of(REC_ALIGN) != body.len() {
        return Err(libc::EINVAL);
    }
    let n = name.to_bytes();
    if !n.starts_with(SECURITY_PREFIX) || n.len() == SECURITY_PREFIX.len() {
        return Err(libc::EINVAL);
    }
    Ok(SecurityContext {
        name: name.to_owned(),
        value: value.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: Wanted = Wanted {
        groups: true,
        security_context: true,
    };

    /// A security-context record, as the kernel builds it.
    fn label(name: &[u8], value: &[u8]) -> Vec<u8> {
        let record = (8 + name.len() + 1 + value.len()).next_multiple_of(8);
        let mut v = ExtHeader {
            size: (8 + record) as u32,
            typ: 1,
        }
        .as_bytes()
        .to_vec();
        v.extend_from_slice(
            Secctx {
                size: value.len() as u32,
                padding: 0,
            }
            .as_bytes(),
        );
        v.extend_from_slice(name);
        v.push(0);
        v.extend_from_slice(value);
        v.resize(8 + record, 0);
        v
    }

    #[test]
    fn a_label_and_a_group_are_both_found() {
        let mut ext = label(b"security.selinux", b"system_u:object_r:tmp_t:s0\0");
        ext.extend_from_slice(&[16, 0, 0, 0, 32, 0, 0, 0, 1, 0, 0, 0]);
        ext.extend_from_slice(&77u32.to_ne_bytes());
        let found = parse(&ext, ALL).unwrap();
        assert_eq!(found.supplementary_gid, Some(77));
        let l = found.security_context.unwrap();
        assert_eq!(l.name.as_bytes(), b"security.selinux");
        assert_eq!(l.value, b"system_u:object_r:tmp_t:s0\0");
    }

    #[test]
    fn records_not_negotiated_are_skipped_but_still_bounded() {
        let ext = label(b"security.selinux", b"x");
        let only_groups = Wanted {
            groups: true,
            security_context: false,
        };
        assert!(parse(&ext, only_groups).unwrap().security_context.is_none());
        // A label as long as the largest value and name is accepted; one byte more is not.
        let name = [b"security.".as_slice(), &[b'n'; 246]].concat();
        assert_eq!(name.len(), MAX_XATTR_NAME_LEN);
        let big = vec![7u8; MAX_XATTR_SIZE as usize];
        assert!(parse(&label(&name, &big), ALL).is_ok());
        let longer = [name.as_slice(), b"n"].concat();
        assert_eq!(parse(&label(&longer, b"v"), ALL).unwrap_err(), libc::EINVAL);
        let bigger = vec![7u8; MAX_XATTR_SIZE as usize + 1];
        assert_eq!(
            parse(&label(&name, &bigger), ALL).unwrap_err(),
            libc::EINVAL
        );
    }
}
