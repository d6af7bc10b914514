//! Extended attributes, served only with `Config::xattr`.
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

use crate::fs::{err, PassthroughFs};
use crate::oslib;

/// The guest saw that the caller may not keep setgid when setting an access ACL.
pub use virtiofsd_fuse::abi::FUSE_SETXATTR_ACL_KILL_SGID;

fn proc_path(fd: BorrowedFd<'_>) -> CString {
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

    pub(crate) fn do_getxattr(
        &self,
        _ctx: Context,
        inode: Inode,
        name: &CStr,
        size: u32,
    ) -> io::Result<XattrReply> {
        self.xattr_enabled()?;
        let data = self.inodes.get(inode)?;
        let fd = data.fd()?;
        let path = proc_path(fd.as_fd());
        reply(size, |buf| oslib::getxattr(&path, name, buf))
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
        if ctx.uid == 0 {
            return reply(size, |buf| oslib::listxattr(&path, buf));
        }
        // The daemon may see trusted.* names that the caller may not: a local filesystem lists
        // them only to CAP_SYS_ADMIN, and the guest kernel does not filter FUSE's list.
        let names = visible_names(&full_list(&path)?);
        let len = u32::try_from(names.len()).map_err(|_| err(libc::E2BIG))?;
        match size {
            0 => Ok(XattrReply::Size(len)),
            s if len > s => Err(err(libc::ERANGE)),
            _ => Ok(XattrReply::Data(names)),
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
        let data = self.inodes.get(inode)?;
        let fd = data.fd()?;
        let path = proc_path(fd.as_fd());
        oslib::setxattr(&path, name, value, flags as libc::c_int)?;
        if setxattr_flags & FUSE_SETXATTR_ACL_KILL_SGID != 0
            && name.to_bytes() == b"system.posix_acl_access"
        {
            // The host (we are privileged) keeps setgid; the guest decided the caller may not.
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
        let data = self.inodes.get(inode)?;
        let fd = data.fd()?;
        oslib::removexattr(&proc_path(fd.as_fd()), name)
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

/// `list` without the names an unprivileged caller cannot see.
fn visible_names(list: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(list.len());
    for name in list.split_inclusive(|&b| b == 0) {
        if !name.starts_with(b"trusted.") {
            out.extend_from_slice(name);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::visible_names;

    #[test]
    fn trusted_names_are_hidden_from_unprivileged_callers() {
        let list = b"user.a\0trusted.t\0security.s\0trusted.u\0";
        assert_eq!(visible_names(list), b"user.a\0security.s\0".to_vec());
        assert_eq!(visible_names(b""), Vec::<u8>::new());
    }
}
