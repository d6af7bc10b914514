//! Id translation at the wire boundary (`--translate-uid`, `--translate-gid`).
//!
//! The dispatcher is the one place where guest ids and host ids meet: every id a request carries
//! (the caller's credentials, a new owner, the ids inside a POSIX ACL) is turned into a host id
//! before the filesystem sees it, and every id a reply carries (attributes, ACLs) back into a
//! guest id. Filesystems only ever see host ids. The encoders in `server` take a [`WireIds`] as
//! an argument, so a reply that carries attributes cannot be written without it.
//!
//! With no translation rules (the default) each of these is one well-predicted branch: nothing
//! is parsed or allocated. With rules, each id is one binary search over its table.

use std::borrow::Cow;
use std::ffi::CStr;

use virtiofsd_policy::{acl, IdMapping, IdPolicy};

use crate::filesystem::{Context, SetAttr, XattrReply, FORBIDDEN_ID};

/// An [`IdPolicy`] with its identity test done once, not per request.
#[derive(Debug, Default)]
pub(crate) struct WireIds {
    policy: IdPolicy,
    identity: bool,
}

/// The host id for guest `id`, or [`FORBIDDEN_ID`] if the rules forbid it.
fn host_or_forbidden(map: &IdMapping, id: u32) -> u32 {
    map.to_host(id).unwrap_or(FORBIDDEN_ID)
}

/// The host id a guest asks a file to be owned by; `EPERM` if the rules forbid it, or if it
/// would become the sentinel (which chown(2) would silently read as "no change").
fn new_owner(map: &IdMapping, id: u32) -> Result<u32, i32> {
    match map.to_host(id) {
        Ok(host) if host != FORBIDDEN_ID => Ok(host),
        _ => Err(libc::EPERM),
    }
}

impl WireIds {
    pub(crate) fn new(policy: IdPolicy) -> Self {
        let identity = policy.is_identity();
        WireIds { policy, identity }
    }

    pub(crate) fn policy(&self) -> &IdPolicy {
        &self.policy
    }

    /// Replaces the guest uid and gid of a request's header with host ones. The supplementary
    /// group arrives later, in the extension area: [`Self::supplementary_gid_to_host`].
    pub(crate) fn credentials_to_host(&self, ctx: &mut Context) {
        if self.identity {
            return;
        }
        ctx.uid = host_or_forbidden(&self.policy.uid, ctx.uid);
        ctx.gid = host_or_forbidden(&self.policy.gid, ctx.gid);
    }

    /// The host id of a request's supplementary group, [`FORBIDDEN_ID`] if the rules forbid it.
    pub(crate) fn supplementary_gid_to_host(&self, gid: u32) -> u32 {
        if self.identity {
            return gid;
        }
        host_or_forbidden(&self.policy.gid, gid)
    }

    /// Replaces the guest owner and group SETATTR asks for with host ones; `EPERM` for an id the
    /// guest may not give away a file to.
    pub(crate) fn owner_to_host(&self, attr: &mut SetAttr) -> Result<(), i32> {
        if self.identity {
            return Ok(());
        }
        if let Some(uid) = attr.uid {
            attr.uid = Some(new_owner(&self.policy.uid, uid)?);
        }
        if let Some(gid) = attr.gid {
            attr.gid = Some(new_owner(&self.policy.gid, gid)?);
        }
        Ok(())
    }

    /// The guest uid shown for host uid `uid`.
    pub(crate) fn uid_to_guest(&self, uid: u32) -> u32 {
        if self.identity {
            return uid;
        }
        self.policy.uid.to_guest(uid)
    }

    /// The guest gid shown for host gid `gid`.
    pub(crate) fn gid_to_guest(&self, gid: u32) -> u32 {
        if self.identity {
            return gid;
        }
        self.policy.gid.to_guest(gid)
    }

    /// The value SETXATTR stores: for the two POSIX ACL names (as the guest spelled them) the
    /// ACL's guest ids become host ids; every other value is passed as it came.
    pub(crate) fn xattr_value_to_host<'a>(
        &self,
        name: &CStr,
        value: &'a [u8],
    ) -> Result<Cow<'a, [u8]>, i32> {
        if self.identity || !acl::is_acl_name(name.to_bytes()) {
            return Ok(Cow::Borrowed(value));
        }
        acl::to_host(value, &self.policy.uid, &self.policy.gid).map_err(|e| {
            crate::guest_log!(log::Level::Debug, "setxattr {name:?}: {e}");
            e.errno()
        })
    }

    /// The GETXATTR answer the guest gets for a buffer of `size` bytes: for the two POSIX ACL
    /// names the ACL's host ids become guest ids. A size query (`size` 0) is left alone:
    /// translation only ever keeps or shortens a value, so the host's size is enough room for
    /// the translated one.
    pub(crate) fn xattr_reply_to_guest(
        &self,
        name: &CStr,
        size: u32,
        reply: XattrReply,
    ) -> Result<XattrReply, i32> {
        if self.identity || size == 0 || !acl::is_acl_name(name.to_bytes()) {
            return Ok(reply);
        }
        let XattrReply::Data(data) = reply else {
            return Ok(reply);
        };
        let translated = match acl::to_guest(&data, &self.policy.uid, &self.policy.gid) {
            Ok(Cow::Owned(v)) => Some(v),
            Ok(Cow::Borrowed(_)) => None,
            Err(e) => {
                // The host kernel only hands out well-formed ACLs; anything else is the
                // filesystem's fault, reported as other malformed answers are.
                crate::guest_log!(log::Level::Debug, "getxattr {name:?}: host value: {e}");
                return Err(libc::EIO);
            }
        };
        Ok(XattrReply::Data(translated.unwrap_or(data)))
    }
}
