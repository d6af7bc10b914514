//! The open gate: the one way a file the guest can reach is opened for I/O.
//!
//! Opening a device node hands the guest the host device; opening a FIFO can block a queue
//! thread forever; either may have side effects in a driver. So nothing is ever opened for real
//! until its type is known from a descriptor that cannot have an effect (`O_PATH`), and only
//! regular files and directories pass. New files are made with `O_EXCL`, so a CREATE can only
//! ever open what it made itself; an existing name goes through the gate like OPEN does.
//!
//! Every descriptor the gate opens comes with its [`FdToken`], taken before the open, so a guest
//! cannot make the daemon hold descriptors beyond its budget even transiently.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use virtiofsd_fuse::filesystem::{Context, Entry};

use crate::budget::FdToken;
use crate::credentials::ScopedCreds;
use crate::fs::{err, PassthroughFs};
use crate::inode::{InodeData, InodeFile};
use crate::label::remove_new;
use crate::oslib;

/// What may be opened for the guest, by file type; the errno for everything else.
pub(crate) fn check_openable(file_type: u32) -> io::Result<()> {
    match file_type {
        libc::S_IFREG | libc::S_IFDIR => Ok(()),
        // The magic link would be followed to the symlink's target.
        libc::S_IFLNK => Err(err(libc::ELOOP)),
        // Block and character devices, FIFOs, sockets: the Linux driver serves them itself and
        // never sends OPEN for them, so only a hostile guest (or a race) gets here.
        _ => Err(err(libc::EBADF)),
    }
}

/// A descriptor opened through the gate, with its share of the budget.
pub(crate) struct GuestFd {
    pub fd: OwnedFd,
    pub token: FdToken,
}

/// How many times CREATE retries when the name it found existing vanished before it could be
/// looked up (a concurrent unlink); each round is a fresh, confined attempt.
const CREATE_RACE_RETRIES: usize = 4;

impl PassthroughFs {
    /// Opens the file behind `data` with `flags` after checking its type on an `O_PATH`
    /// descriptor. Creation flags are stripped: the gate only opens what exists.
    pub(crate) fn open_inode(&self, data: &InodeData, flags: i32) -> io::Result<GuestFd> {
        self.open_inode_as(data, flags, None)
    }

    /// [`PassthroughFs::open_inode`], the final open made with `ctx`'s credentials when given.
    /// A handle is opened before the switch, as the daemon: the caller's fsuid takes
    /// CAP_DAC_READ_SEARCH, which `open_by_handle_at` needs, out of the effective set.
    fn open_inode_as(
        &self,
        data: &InodeData,
        flags: i32,
        ctx: Option<&Context>,
    ) -> io::Result<GuestFd> {
        let token = self.fd_token()?;
        let flags = flags
            & !(libc::O_NOFOLLOW
                | libc::O_CREAT
                | libc::O_EXCL
                | libc::O_PATH
                | libc::O_TMPFILE
                | libc::O_NOCTTY);
        let by_handle;
        let path_fd = match &data.file {
            // The descriptor pins the inode, so its type is the one recorded at lookup.
            InodeFile::Fd(path_fd) => {
                check_openable(data.file_type)?;
                path_fd.as_fd()
            }
            // A handle names whatever has it now; a recycled inode number with a generation-less
            // handle could be another file, of another type. Check the file itself.
            InodeFile::Handle {
                pinned: Some(p), ..
            } => {
                check_openable(data.file_type)?;
                p.fd.as_fd()
            }
            InodeFile::Handle { handle, mount, .. } => {
                by_handle =
                    oslib::open_by_handle(mount.as_fd(), handle, libc::O_PATH | libc::O_NOFOLLOW)?;
                check_openable(oslib::stat_fd(by_handle.as_fd())?.st_mode & libc::S_IFMT)?;
                by_handle.as_fd()
            }
            InodeFile::Broken => return Err(io::Error::from_raw_os_error(libc::EIO)),
        };
        let _creds = ctx.map(ScopedCreds::for_ctx).transpose()?;
        let fd = self.open_path_fd(path_fd, flags)?;
        Ok(GuestFd { fd, token })
    }

    /// Reopens an `O_PATH` descriptor whose type was checked, through `/proc/self/fd`.
    fn open_path_fd(&self, path_fd: BorrowedFd<'_>, flags: i32) -> io::Result<OwnedFd> {
        oslib::openat(
            self.proc_self_fd.as_fd(),
            &Self::proc_name(path_fd),
            flags | libc::O_NOCTTY,
            0,
        )
    }

    /// CREATE's open: a new regular file made with `O_EXCL`, or, when the guest did not ask for
    /// `O_EXCL` and the name exists, that file opened through the gate, both with the caller's
    /// credentials. Returns the entry (one lookup reference taken) and the open descriptor.
    pub(crate) fn create_or_open(
        &self,
        ctx: &Context,
        parent: &InodeData,
        name: &CStr,
        flags: i32,
        mode: u32,
    ) -> io::Result<(Entry, GuestFd)> {
        let guest_excl = flags & libc::O_EXCL != 0;
        let create_flags = flags | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW;
        // Only a file made here is labelled; an existing one keeps its label, as it would on a
        // local filesystem.
        let label = self.label_for(ctx)?;
        for _ in 0..CREATE_RACE_RETRIES {
            let made = {
                let token = self.fd_token()?;
                let pfd = parent.fd()?;
                let _creds = ScopedCreds::for_ctx(ctx)?;
                oslib::openat(pfd.as_fd(), name, create_flags, mode).map(|fd| GuestFd { fd, token })
            };
            match made {
                Ok(new) => {
                    if let Some(label) = &label {
                        if let Err(e) = label.set_fd(new.fd.as_fd()) {
                            remove_new(parent.fd()?.as_fd(), name, &new.fd);
                            return Err(e);
                        }
                    }
                    // Named by the descriptor, not looked up again: a concurrent rename cannot
                    // make the reply describe another file.
                    let path_token = self.fd_token()?;
                    let path_fd = oslib::openat(
                        self.proc_self_fd.as_fd(),
                        &Self::proc_name(new.fd.as_fd()),
                        libc::O_PATH,
                        0,
                    )?;
                    return Ok((self.register_inode(parent, path_fd, path_token)?, new));
                }
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) && !guest_excl => {}
                Err(e) => return Err(e),
            }
            let mut entry = match self.do_lookup(parent, name) {
                Ok(entry) => entry,
                // Unlinked since: create it again.
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
                Err(e) => return Err(e),
            };
            let opened = self.inodes.get(entry.inode).and_then(|existing| {
                // open(2) with O_CREAT refuses directories, whatever the access mode.
                if existing.is_dir() {
                    return Err(err(libc::EISDIR));
                }
                let opened = self.open_inode_as(&existing, flags, Some(ctx))?;
                // O_TRUNC may have changed what the lookup saw.
                entry.attr = oslib::stat_fd(opened.fd.as_fd())?;
                Ok(opened)
            });
            return match opened {
                Ok(g) => Ok((entry, g)),
                Err(e) => {
                    self.inodes.forget(entry.inode, 1);
                    Err(e)
                }
            };
        }
        Err(err(libc::ENOENT))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_and_directories_are_openable() {
        assert!(check_openable(libc::S_IFREG).is_ok());
        assert!(check_openable(libc::S_IFDIR).is_ok());
        let errno = |t| check_openable(t).unwrap_err().raw_os_error();
        assert_eq!(errno(libc::S_IFLNK), Some(libc::ELOOP));
        for t in [
            libc::S_IFBLK,
            libc::S_IFCHR,
            libc::S_IFIFO,
            libc::S_IFSOCK,
            0,
        ] {
            assert_eq!(errno(t), Some(libc::EBADF), "type {t:o}");
        }
    }
}
