//! The umask of a new inode when POSIX ACLs are on.
//!
//! With `FUSE_POSIX_ACL` the guest kernel leaves the umask to the filesystem
//! (`FUSE_DONT_MASK`): it sends the mode unmasked, with the umask beside it, because a local
//! filesystem ignores the umask where the parent directory has a default ACL and applies the
//! ACL instead (POSIX.1e). The daemon runs with umask 0 and masks explicitly, so the host kernel
//! applies a default ACL to the mode it is given exactly as it would for a local caller; what is
//! left here is deciding, per create, whether the umask applies.
//!
//! The parent's default ACL is read just before the create, not atomically with it as a local
//! filesystem does: an ACL added or removed in between makes that one create follow the old
//! state, which a concurrent change on a local filesystem could equally have given.

use std::io;
use std::os::fd::AsFd;

use virtiofsd_policy::acl;

use crate::fs::PassthroughFs;
use crate::inode::InodeData;
use crate::oslib;
use crate::xattr::proc_path;

/// `system.posix_acl_default` as the syscalls take it.
const DEFAULT_ACL: &std::ffi::CStr = c"system.posix_acl_default";

impl PassthroughFs {
    /// The umask a create of a mode-carrying inode in `parent` applies, for the guest's `umask`.
    pub(crate) fn creation_umask(&self, parent: &InodeData, umask: u32) -> u32 {
        if !self.posix_acl_on() || umask == 0 {
            // Without ACLs the guest kernel masked the mode already (masking again changes
            // nothing), and a zero umask needs no look at the parent.
            return umask;
        }
        match has_default_acl(parent) {
            Ok(true) => 0,
            Ok(false) => umask,
            Err(e) => {
                // The umask is the narrower choice when the ACL cannot be read.
                log::debug!("cannot read the parent's default ACL, applying the umask: {e}");
                umask
            }
        }
    }
}

/// Whether the directory `dir` has a default ACL.
fn has_default_acl(dir: &InodeData) -> io::Result<bool> {
    debug_assert_eq!(DEFAULT_ACL.to_bytes(), acl::DEFAULT);
    if !dir.is_dir() {
        return Ok(false);
    }
    let fd = dir.fd()?;
    // A size query is enough: the host kernel answers ENODATA when there is no default ACL.
    match oslib::getxattr(&proc_path(fd.as_fd()), DEFAULT_ACL, &mut []) {
        Ok(n) => Ok(n > 0),
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENODATA | libc::EOPNOTSUPP)) => Ok(false),
        Err(e) => Err(e),
    }
}
