//! Security labels on new inodes (`Config::security_label`).
//!
//! With `FUSE_SECURITY_CTX` the guest's LSM sends, with each create-type request, the label
//! the new inode must carry (an xattr such as `security.selinux`). A guest LSM that finds a new
//! inode unlabelled may deny access to it or fall back to a default label, so the label is set
//! right after the inode is made, as the daemon, before the guest learns of it; if it cannot be
//! set, what was made is removed again and the request fails. The name goes through the xattr
//! map like any guest name; a refused name fails the request before anything is made.

use std::borrow::Cow;
use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use virtiofsd_fuse::filesystem::{Context, Entry};

use crate::budget::FdToken;
use crate::fs::PassthroughFs;
use crate::inode::InodeData;
use crate::oslib;
use crate::xattr::proc_path;
use crate::xattr_names::Access;

/// The label a create must set, its name already the host's.
pub(crate) struct Label<'a> {
    name: Cow<'a, CStr>,
    value: &'a [u8],
}

impl Label<'_> {
    /// Sets the label on a new inode open for real as `fd`.
    pub fn set_fd(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        oslib::fsetxattr(fd, &self.name, self.value, 0)
    }

    /// Sets the label on a new inode held as the `O_PATH` descriptor `fd`: directories,
    /// symlinks and device nodes must not be opened for this (a device open has effects).
    pub fn set_path_fd(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        oslib::setxattr(&proc_path(fd), &self.name, self.value, 0)
    }
}

impl PassthroughFs {
    /// The label what `ctx` creates must carry, or `None` without labels configured or sent.
    pub(crate) fn label_for<'a>(&self, ctx: &'a Context) -> io::Result<Option<Label<'a>>> {
        if !self.cfg.security_label {
            return Ok(None);
        }
        let Some(sc) = ctx.security_context.as_deref() else {
            return Ok(None);
        };
        let name = self.xattr_names().host_name(&sc.name, Access::Write)?;
        Ok(Some(Label {
            name,
            value: &sc.value,
        }))
    }

    /// Labels the inode just made as `name` in `parent`, then takes a lookup reference on it
    /// with `token` (taken before the create, so the budget cannot fail in between). On failure
    /// the inode is removed again.
    pub(crate) fn label_new(
        &self,
        parent: &InodeData,
        name: &CStr,
        label: &Label<'_>,
        token: FdToken,
    ) -> io::Result<Entry> {
        let pfd = parent.fd()?;
        // A concurrent rename or unlink in the guest may have taken the name already; then
        // nothing of ours is left to label or to remove.
        let fd = self.open_child_path(pfd.as_fd(), name)?;
        if let Err(e) = label.set_path_fd(fd.as_fd()) {
            remove_new(pfd.as_fd(), name, &fd);
            return Err(e);
        }
        self.register_inode(parent, fd, token)
    }
}

/// Removes the entry `name` of `dir` that was just made, if it still names the inode `made`
/// (an `O_PATH` or open descriptor of it): a concurrent rename may have put another file there.
/// Failures are logged; the caller is already failing the request with the reason it could not
/// keep the inode.
pub(crate) fn remove_new(dir: BorrowedFd<'_>, name: &CStr, made: &OwnedFd) {
    let result = (|| {
        let ours = oslib::stat_fd(made.as_fd())?;
        let now = oslib::fstatat(dir, name, libc::AT_SYMLINK_NOFOLLOW)?;
        if (now.st_dev, now.st_ino) != (ours.st_dev, ours.st_ino) {
            return Ok(());
        }
        let flags = if ours.st_mode & libc::S_IFMT == libc::S_IFDIR {
            libc::AT_REMOVEDIR
        } else {
            0
        };
        oslib::unlinkat(dir, name, flags)
    })();
    if let Err(e) = result {
        log::warn!("cannot remove a new inode that could not be labelled: {e}");
    }
}
