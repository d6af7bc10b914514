//! Extended attributes, served only with `Config::xattr`, their names passed through the policy
//! of [`crate::xattr_names`].
//!
//! Every call names the inode by the magic link of its `O_PATH` descriptor, which reaches the file
//! itself whatever its type (a symlink's own attributes, never its target's) without opening it:
//! opening a device or FIFO could block or have side effects. The link is named relative to the
//! working directory, which `PassthroughFs` makes its private `/proc/self/fd` handle: inside the
//! sandbox an absolute `/proc/...` path would resolve in the shared directory, where the guest
//! could plant whatever it likes.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd};

use virtiofsd_fuse::filesystem::{Context, Inode, XattrReply};
use virtiofsd_policy::acl;

use crate::fs::{err, PassthroughFs};
use crate::inode::InodeData;
use crate::oslib;
use crate::xattr_names::{Access, XattrNames};

/// The guest saw that the caller may not keep setgid when setting an access ACL.
pub use virtiofsd_fuse::abi::FUSE_SETXATTR_ACL_KILL_SGID;

pub(crate) fn proc_path(fd: BorrowedFd<'_>) -> CString {
    // Decimal digits never contain NUL.
    CString::new(std::os::fd::AsRawFd::as_raw_fd(&fd).to_string()).unwrap_or_default()
}

/// Size-or-data reply for a guest buffer of `size` bytes (0 asks for the size).
fn reply(size: u32, mut f: impl FnMut(&mut [u8]) -> io::Result<usize>) -> io::Result<XattrReply> {
    if size == 0 {
        let n = f(&mut [])?;
        return Ok(XattrReply::Size(
            u32::try_from(n).map_err(|_| err(libc::E2BIG))?,
        ));
    }
    let mut buf = vec![0u8; size as usize];
    let n = f(&mut buf)?;
    buf.truncate(n);
    Ok(XattrReply::Data(buf))
}

impl PassthroughFs {
    fn xattr_enabled(&self) -> io::Result<()> {
        if self.cfg.xattr {
            Ok(())
        } else {
            // ENOSYS makes the guest kernel stop sending xattr requests for this mount.
            Err(err(libc::ENOSYS))
        }
    }

    /// The name policy in force: the configured map, and whether ACLs were negotiated.
    pub(crate) fn xattr_names(&self) -> XattrNames<'_> {
        XattrNames {
            map: self.cfg.xattr_map.as_ref(),
            acl: self.posix_acl_on(),
        }
    }

    pub(crate) fn do_getxattr(
        &self,
        _ctx: Context,
        inode: Inode,
        name: &CStr,
        size: u32,
    ) -> io::Result<XattrReply> {
        self.xattr_enabled()?;
        let name = self.xattr_names().host_name(name, Access::Read)?;
        let data = self.inodes.get(inode)?;
        let fd = data.fd()?;
        let path = proc_path(fd.as_fd());
        reply(size, |buf| oslib::getxattr(&path, &name, buf))
    }

    pub(crate) fn do_listxattr(
        &self,
        ctx: Context,
        inode: Inode,
        size: u32,
    ) -> io::Result<XattrReply> {
        self.xattr_enabled()?;
        let data = self.inodes.get(inode)?;
        let fd = data.fd()?;
        let path = proc_path(fd.as_fd());
        // The daemon may see trusted.* names that the caller may not: a local filesystem lists
        // them only to CAP_SYS_ADMIN, and the guest kernel does not filter FUSE's list.
        let privileged = ctx.uid == 0;
        let names = self.xattr_names();
        if names.list_is_identity(privileged) {
            return reply(size, |buf| oslib::listxattr(&path, buf));
        }
        // Renamed and hidden names change the length, so the size answer comes from the very
        // list the guest would get.
        let list = names.guest_list(&full_list(&path)?, privileged);
        let len = u32::try_from(list.len()).map_err(|_| err(libc::E2BIG))?;
        match size {
            0 => Ok(XattrReply::Size(len)),
            s if len > s => Err(err(libc::ERANGE)),
            _ => Ok(XattrReply::Data(list)),
        }
    }

    pub(crate) fn do_setxattr(
        &self,
        _ctx: Context,
        inode: Inode,
        name: &CStr,
        value: &[u8],
        flags: u32,
        setxattr_flags: u32,
    ) -> io::Result<()> {
        self.xattr_enabled()?;
        self.check_writable()?;
        let name = self.xattr_names().host_name(name, Access::Write)?;
        let data = self.inodes.get(inode)?;
        let fd = data.fd()?;
        let path = proc_path(fd.as_fd());
        oslib::setxattr(&path, &name, value, flags as libc::c_int)?;
        // Setting an access ACL updates the mode to match (the host kernel does it), but the
        // daemon has CAP_FSETID, so the host keeps setgid: the guest kernel says when the caller
        // could not have (it is sent only with ACLs negotiated, and heeded only then, as
        // upstream).
        if setxattr_flags & FUSE_SETXATTR_ACL_KILL_SGID != 0
            && self.posix_acl_on()
            && name.to_bytes() == acl::ACCESS
        {
            let st = oslib::stat_fd(fd.as_fd())?;
            if st.st_mode & libc::S_ISGID != 0 {
                self.chmod(&data, None, st.st_mode & 0o7777 & !libc::S_ISGID)?;
            }
        }
        Ok(())
    }

    pub(crate) fn do_removexattr(
        &self,
        _ctx: Context,
        inode: Inode,
        name: &CStr,
    ) -> io::Result<()> {
        self.xattr_enabled()?;
        self.check_writable()?;
        let name = self.xattr_names().host_name(name, Access::Write)?;
        let data = self.inodes.get(inode)?;
        let fd = data.fd()?;
        oslib::removexattr(&proc_path(fd.as_fd()), &name)
    }

    /// Drops the renamed `security.capability` of the file open as `fd` (not `O_PATH`), as the
    /// host kernel drops the real one when a file is written, truncated or chowned: a
    /// capability must not survive a change of the program it was granted to. Without a
    /// renaming map this does nothing (the host kernel does it).
    pub(crate) fn drop_mapped_capability_fd(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        match &self.mapped_capability {
            Some(name) => ignore_absent(oslib::fremovexattr(fd, name)),
            None => Ok(()),
        }
    }

    /// [`Self::drop_mapped_capability_fd`] for an inode named by its `O_PATH` descriptor. Only
    /// regular files carry file capabilities, and other types may refuse the renamed name's
    /// namespace (user.* on a symlink is `EPERM`), so they are left alone.
    pub(crate) fn drop_mapped_capability(&self, data: &InodeData) -> io::Result<()> {
        match &self.mapped_capability {
            Some(name) if data.file_type == libc::S_IFREG => {
                let fd = data.fd()?;
                ignore_absent(oslib::removexattr(&proc_path(fd.as_fd()), name))
            }
            _ => Ok(()),
        }
    }
}

/// Success for an attribute that was not there or cannot be there.
fn ignore_absent(r: io::Result<()>) -> io::Result<()> {
    match r {
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENODATA | libc::EOPNOTSUPP)) => Ok(()),
        r => r,
    }
}

/// The whole NUL-separated name list of the file at `path`, however it grows between calls.
fn full_list(path: &CStr) -> io::Result<Vec<u8>> {
    loop {
        let size = oslib::listxattr(path, &mut [])?;
        let mut buf = vec![0u8; size];
        match oslib::listxattr(path, &mut buf) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(e) if e.raw_os_error() == Some(libc::ERANGE) => continue,
            Err(e) => return Err(e),
        }
    }
}
