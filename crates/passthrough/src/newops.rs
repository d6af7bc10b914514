//! Data-range, sync, statx and O_TMPFILE operations.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use virtiofsd_fuse::filesystem::{Context, Entry, Handle, Inode, OpenOptions};

use crate::credentials::ScopedCreds;
use crate::fs::{err, PassthroughFs};
use crate::oslib;

impl PassthroughFs {
    pub(crate) fn do_fallocate(
        &self,
        inode: Inode,
        handle: Handle,
        mode: u32,
        offset: u64,
        length: u64,
    ) -> io::Result<()> {
        self.check_writable()?;
        let h = self.handles.get(handle, inode)?;
        oslib::fallocate(h.fd(), mode, offset, length)
    }

    pub(crate) fn do_lseek(
        &self,
        inode: Inode,
        handle: Handle,
        offset: u64,
        whence: u32,
    ) -> io::Result<u64> {
        let h = self.handles.get(handle, inode)?;
        // The handle's position is shared with directory reads; keep them from interleaving.
        let _pos = h.lock_position();
        oslib::lseek(h.fd(), offset, whence)
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn do_copy_file_range(
        &self,
        inode_in: Inode,
        handle_in: Handle,
        offset_in: u64,
        inode_out: Inode,
        handle_out: Handle,
        offset_out: u64,
        length: u64,
        flags: u64,
    ) -> io::Result<usize> {
        self.check_writable()?;
        let hin = self.handles.get(handle_in, inode_in)?;
        let hout = self.handles.get(handle_out, inode_out)?;
        let flags = u32::try_from(flags).map_err(|_| err(libc::EINVAL))?;
        oslib::copy_file_range(hin.fd(), offset_in, hout.fd(), offset_out, length, flags)
    }

    pub(crate) fn do_syncfs(&self, inode: Inode) -> io::Result<()> {
        let data = self.inodes.get(inode)?;
        // syncfs(2) refuses O_PATH descriptors; any real descriptor on the filesystem will do,
        // and only the gate opens one.
        let target = if matches!(data.file_type, libc::S_IFDIR | libc::S_IFREG) {
            data
        } else {
            self.inodes.get(virtiofsd_fuse::filesystem::ROOT_ID)?
        };
        let flags = if target.is_dir() {
            libc::O_RDONLY | libc::O_DIRECTORY
        } else {
            libc::O_RDONLY | libc::O_NONBLOCK
        };
        let fd = self.open_inode(&target, flags)?.fd;
        oslib::syncfs(fd.as_fd())
    }

    pub(crate) fn do_statx(
        &self,
        inode: Inode,
        handle: Option<Handle>,
        flags: u32,
        mask: u32,
    ) -> io::Result<(libc::statx, Duration)> {
        let sync = flags as libc::c_int & libc::AT_STATX_SYNC_TYPE;
        let stx = match handle {
            Some(h) => oslib::statx_full(self.handles.get(h, inode)?.fd(), sync, mask)?,
            None => {
                let data = self.inodes.get(inode)?;
                let fd = data.fd()?;
                oslib::statx_full(fd.as_fd(), sync, mask)?
            }
        };
        Ok((stx, self.timeout))
    }

    pub(crate) fn do_tmpfile(
        &self,
        ctx: Context,
        parent: Inode,
        mode: u32,
        flags: u32,
        umask: u32,
    ) -> io::Result<(Entry, Option<Handle>, OpenOptions)> {
        self.check_writable()?;
        let parent = self.inodes.get(parent)?;
        let excl = flags as i32 & libc::O_EXCL;
        let mut flags = self.host_open_flags(flags) | libc::O_TMPFILE | excl;
        if flags & libc::O_ACCMODE == libc::O_RDONLY {
            // O_TMPFILE needs write access; the guest always sends it, a confused one may not.
            return Err(err(libc::EINVAL));
        }
        flags &= !libc::O_NOFOLLOW;
        let mode = mode & 0o7777 & !self.creation_umask(&parent, umask);
        let label = self.label_for(&ctx)?;
        let token = self.fd_token()?;
        let fd: OwnedFd = {
            let pfd = parent.fd()?;
            let _creds = ScopedCreds::for_ctx(&ctx)?;
            oslib::openat(pfd.as_fd(), c".", flags, mode)?
        };
        if let Some(label) = label {
            // Nameless: closing the descriptor on the way out is all the undo it needs.
            label.set_fd(fd.as_fd())?;
        }
        // The file has no name to look up: its O_PATH descriptor comes from the magic link.
        let path_token = self.fd_token()?;
        let path_fd = oslib::openat(
            self.proc_self_fd.as_fd(),
            &Self::proc_name(fd.as_fd()),
            libc::O_PATH,
            0,
        )?;
        let entry = self.register_inode(&parent, path_fd, path_token)?;
        let h = self.handles.insert(entry.inode, fd, Some(token));
        Ok((entry, Some(h), self.cfg.cache.open_options(false)))
    }
}
