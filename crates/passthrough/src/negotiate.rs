//! INIT flags that options cannot do without: the session fails rather than run without them.

use std::io;

use crate::consts::{FUSE_DONT_MASK, FUSE_POSIX_ACL, FUSE_SECURITY_CTX, FUSE_SETXATTR_EXT};
use crate::fs::{err, PassthroughFs};

/// POSIX ACLs need the guest to leave the umask to the filesystem (a default ACL overrides it)
/// and the long SETXATTR form (which says when setting an ACL must clear setgid).
pub(crate) const POSIX_ACL_FLAGS: u64 = FUSE_POSIX_ACL | FUSE_DONT_MASK | FUSE_SETXATTR_EXT;

impl PassthroughFs {
    /// The flags `Config::posix_acl` and `Config::security_label` require, or `EPROTO` when the
    /// guest kernel does not offer them all: a guest that believes it has ACLs or labels the
    /// daemon cannot give it is worse than a failed mount (as upstream).
    pub(crate) fn required_init_flags(&self, offered: u64) -> io::Result<u64> {
        let mut want = 0;
        if self.cfg.posix_acl {
            if offered & POSIX_ACL_FLAGS != POSIX_ACL_FLAGS {
                log::error!(
                    "cannot enable POSIX ACLs: the guest kernel does not offer FUSE_POSIX_ACL, \
                     FUSE_DONT_MASK and FUSE_SETXATTR_EXT (missing {:#x})",
                    POSIX_ACL_FLAGS & !offered
                );
                return Err(err(libc::EPROTO));
            }
            want |= POSIX_ACL_FLAGS;
        }
        if self.cfg.security_label {
            if offered & FUSE_SECURITY_CTX == 0 {
                log::error!(
                    "cannot enable security labels: the guest kernel does not offer \
                     FUSE_SECURITY_CTX"
                );
                return Err(err(libc::EPROTO));
            }
            want |= FUSE_SECURITY_CTX;
        }
        Ok(want)
    }
}
