//! Which host xattr name a guest name stands for, and which names a host list shows the guest.
//!
//! Three rules compose, in this order for a list from the host: the `--xattrmap` rules rename
//! or hide host names; the POSIX ACL names are hidden unless ACLs are negotiated; `trusted.*`
//! names are hidden from unprivileged callers. The last two look at guest names, after the map:
//! they are about what the guest kernel would make of a name (it applies no ACL it was not told
//! about; a local filesystem lists `trusted.*` only to `CAP_SYS_ADMIN`), whatever the name is
//! stored as on the host.

use std::borrow::Cow;
use std::ffi::{CStr, CString};
use std::io;

use virtiofsd_policy::acl::is_acl_name;
use virtiofsd_policy::{GuestName, XattrMap};

use crate::fs::err;

/// The attribute whose removal the host kernel makes on write, truncate and chown.
pub(crate) const CAPABILITY: &CStr = c"security.capability";

/// What the guest asks to do with a name; it decides the errno of a refused name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Access {
    /// GETXATTR: a denied name answers `ENODATA`, as for a name that does not exist.
    Read,
    /// SETXATTR, REMOVEXATTR, a security label: a denied name answers `EPERM`.
    Write,
}

/// The name policy in force for one request.
#[derive(Clone, Copy)]
pub(crate) struct XattrNames<'a> {
    pub map: Option<&'a XattrMap>,
    /// POSIX ACLs were negotiated with the guest.
    pub acl: bool,
}

impl<'a> XattrNames<'a> {
    /// The host name for the guest's `name`, or the errno that refuses it.
    pub fn host_name<'n>(&self, name: &'n CStr, access: Access) -> io::Result<Cow<'n, CStr>> {
        if !self.acl && is_acl_name(name.to_bytes()) {
            // The guest kernel would not enforce an ACL it sets or reads here (as upstream).
            return Err(err(libc::EOPNOTSUPP));
        }
        let Some(map) = self.map else {
            return Ok(Cow::Borrowed(name));
        };
        match map.to_host(name.to_bytes()) {
            GuestName::Host(Cow::Borrowed(_)) => Ok(Cow::Borrowed(name)),
            // Neither the guest's name nor a checked rule holds a NUL byte.
            GuestName::Host(Cow::Owned(host)) => CString::new(host)
                .map(Cow::Owned)
                .map_err(|_| err(libc::EINVAL)),
            GuestName::Denied => Err(err(match access {
                Access::Read => libc::ENODATA,
                Access::Write => libc::EPERM,
            })),
            GuestName::Unsupported => Err(err(libc::EOPNOTSUPP)),
        }
    }

    /// Whether a host list reaches a caller (`privileged` or not) unchanged, so the host can
    /// fill the guest's buffer directly.
    pub fn list_is_identity(&self, privileged: bool) -> bool {
        self.map.is_none() && self.acl && privileged
    }

    /// The guest's view of the NUL-terminated host name list `host`, for a caller that may see
    /// `trusted.*` names when `privileged`.
    pub fn guest_list(&self, host: &[u8], privileged: bool) -> Vec<u8> {
        let mapped = match self.map {
            Some(map) => Cow::Owned(map.list_to_guest(host)),
            None => Cow::Borrowed(host),
        };
        let mut out = Vec::with_capacity(mapped.len());
        for name in mapped.split(|&b| b == 0).filter(|n| !n.is_empty()) {
            let hidden =
                (!self.acl && is_acl_name(name)) || (!privileged && name.starts_with(b"trusted."));
            if !hidden {
                out.extend_from_slice(name);
                out.push(0);
            }
        }
        out
    }
}

/// The host name `security.capability` is stored under when the map renames it. The host kernel
/// drops the real attribute itself; a renamed one must be dropped by the daemon at the same
/// moments. A name the map refuses cannot be set by the guest, so there is nothing to drop.
pub(crate) fn mapped_capability(map: Option<&XattrMap>) -> Option<CString> {
    let names = XattrNames {
        map,
        // The capability is not an ACL name, so this does not matter.
        acl: true,
    };
    match names.host_name(CAPABILITY, Access::Write).ok()? {
        Cow::Owned(name) => Some(name).filter(|n| n.as_c_str() != CAPABILITY),
        Cow::Borrowed(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use virtiofsd_policy::{XattrRule, XattrRuleKind};

    fn rule(kind: XattrRuleKind, key: &str, prepend: &str) -> XattrRule {
        XattrRule {
            kind,
            client: true,
            server: true,
            key: key.into(),
            prepend: prepend.into(),
        }
    }

    /// `:map:trusted.:user.virtiofs.:` and `:map:security.:user.virtiofs.:` as compiled, plus
    /// an unsupported prefix.
    fn map() -> XattrMap {
        use XattrRuleKind::*;
        XattrMap::new(vec![
            rule(Unsupported, "user.nosup.", "user.nosup."),
            rule(Prefix, "trusted.", "user.virtiofs."),
            rule(Prefix, "security.", "user.virtiofs."),
            rule(Bad, "user.virtiofs.", "trusted."),
            rule(Ok, "", ""),
        ])
        .unwrap()
    }

    fn errno<T: std::fmt::Debug>(r: io::Result<T>) -> i32 {
        r.unwrap_err().raw_os_error().unwrap()
    }

    #[test]
    fn guest_names_are_renamed_or_refused_per_access() {
        let map = map();
        let n = XattrNames {
            map: Some(&map),
            acl: true,
        };
        assert_eq!(
            n.host_name(c"trusted.x", Access::Read).unwrap().as_ref(),
            c"user.virtiofs.trusted.x"
        );
        assert!(matches!(
            n.host_name(c"user.a", Access::Write).unwrap(),
            Cow::Borrowed(_)
        ));
        assert_eq!(
            errno(n.host_name(c"user.virtiofs.x", Access::Read)),
            libc::ENODATA
        );
        assert_eq!(
            errno(n.host_name(c"user.virtiofs.x", Access::Write)),
            libc::EPERM
        );
        assert_eq!(
            errno(n.host_name(c"user.nosup.x", Access::Read)),
            libc::EOPNOTSUPP
        );
        assert_eq!(
            n.host_name(c"system.posix_acl_access", Access::Write)
                .unwrap()
                .as_ref(),
            c"system.posix_acl_access"
        );
    }

    #[test]
    fn acl_names_are_refused_and_hidden_without_acls() {
        let n = XattrNames {
            map: None,
            acl: false,
        };
        for name in [c"system.posix_acl_access", c"system.posix_acl_default"] {
            assert_eq!(errno(n.host_name(name, Access::Read)), libc::EOPNOTSUPP);
            assert_eq!(errno(n.host_name(name, Access::Write)), libc::EOPNOTSUPP);
        }
        // Only the two exact names.
        assert!(n.host_name(c"system.posix_acl", Access::Read).is_ok());
        let host = b"user.a\0system.posix_acl_access\0system.posix_acl_default\0trusted.t\0";
        assert!(!n.list_is_identity(true));
        assert_eq!(n.guest_list(host, true), b"user.a\0trusted.t\0".to_vec());
        assert_eq!(n.guest_list(host, false), b"user.a\0".to_vec());
        let with_acl = XattrNames { acl: true, ..n };
        assert!(with_acl.list_is_identity(true) && !with_acl.list_is_identity(false));
        assert_eq!(
            with_acl.guest_list(host, false),
            b"user.a\0system.posix_acl_access\0system.posix_acl_default\0".to_vec()
        );
    }

    #[test]
    fn lists_are_mapped_then_filtered_by_guest_name() {
        let map = map();
        let n = XattrNames {
            map: Some(&map),
            acl: false,
        };
        let host = b"user.a\0trusted.real\0user.virtiofs.trusted.t\0user.virtiofs.security.s\0\
                     user.nosup.z\0system.posix_acl_access\0";
        assert_eq!(
            n.guest_list(host, true),
            b"user.a\0trusted.t\0security.s\0".to_vec()
        );
        // An unprivileged caller sees no guest trusted.* name, whatever the host calls it.
        assert_eq!(n.guest_list(host, false), b"user.a\0security.s\0".to_vec());
        assert_eq!(n.guest_list(b"", true), Vec::<u8>::new());
    }

    #[test]
    fn capability_is_tracked_only_when_renamed() {
        let map = map();
        assert_eq!(
            mapped_capability(Some(&map)).as_deref(),
            Some(c"user.virtiofs.security.capability")
        );
        assert_eq!(mapped_capability(None), None);
        use XattrRuleKind::*;
        let ok = XattrMap::new(vec![rule(Ok, "", "")]).unwrap();
        assert_eq!(mapped_capability(Some(&ok)), None);
        let bad = XattrMap::new(vec![rule(Bad, "", "")]).unwrap();
        assert_eq!(mapped_capability(Some(&bad)), None);
        // A prefix rule with an empty prepend renames nothing.
        let same = XattrMap::new(vec![rule(Prefix, "", "")]).unwrap();
        assert_eq!(mapped_capability(Some(&same)), None);
    }
}
