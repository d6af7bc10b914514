//! The destination side: finding every inode again, confined to the shared directory, and
//! reopening the handles under the source's ids.

use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use virtiofsd_fuse::filesystem::{Inode, ROOT_ID};

use super::format::{self, InodeRecord, Location, Mode, State, WireHandle};
use super::save::relative;
use super::{LoadError, MAX_STATE_BYTES};
use crate::budget::FdToken;
use crate::config::{FileHandleMode, MigrationMode, MigrationOnError};
use crate::consts::{
    FUSE_HANDLE_KILLPRIV_V2, FUSE_POSIX_ACL, FUSE_SECURITY_CTX, FUSE_SUBMOUNTS,
    FUSE_WRITEBACK_CACHE,
};
use crate::fs::{check_name, err, stat_with_mount, PassthroughFs};
use crate::gate::GuestFd;
use crate::handle::RestoredHandle;
use crate::inode::{InodeData, InodeFd, InodeFile, InodeKey};
use crate::oslib::{self, FileHandle};

/// Flags whose state the filesystem keeps for the session: the destination must run with the
/// source's values.
const STATEFUL_FLAGS: u64 = FUSE_WRITEBACK_CACHE
    | FUSE_SUBMOUNTS
    | FUSE_HANDLE_KILLPRIV_V2
    | FUSE_POSIX_ACL
    | FUSE_SECURITY_CTX;

/// Why one inode or handle could not be restored.
struct ItemError {
    reason: String,
    source: Option<io::Error>,
}

impl ItemError {
    fn new(reason: impl Into<String>) -> ItemError {
        ItemError {
            reason: reason.into(),
            source: None,
        }
    }

    fn io(reason: impl Into<String>, e: io::Error) -> ItemError {
        ItemError {
            reason: format!("{}: {e}", reason.into()),
            source: Some(e),
        }
    }
}

/// A failure of one item, or one that ends the whole load whatever the policy.
enum Failure {
    Item(ItemError),
    Fatal(LoadError),
}

impl From<ItemError> for Failure {
    fn from(e: ItemError) -> Failure {
        Failure::Item(e)
    }
}

/// A mount of the source, found again on this side.
struct MountDir {
    /// A real directory descriptor, for `open_by_handle_at`.
    fd: OwnedFd,
    /// Its mount on this side: every file opened through it must be on it too.
    mnt_id: u64,
}

fn same_handle(h: &FileHandle, w: &WireHandle) -> bool {
    h.handle_type() == w.handle_type && h.bytes() == w.bytes.as_slice()
}

impl PassthroughFs {
    /// Opens `path` (already checked by [`format::check_path`]) below `root`, one component at
    /// a time with the confined lookup: no component may be a symlink, and only the last may
    /// be something other than a directory. Returns the last directory walked and the file.
    pub(super) fn resolve_path(
        &self,
        root: BorrowedFd<'_>,
        path: &[u8],
    ) -> io::Result<(Option<OwnedFd>, OwnedFd)> {
        let mut dir: Option<OwnedFd> = None;
        let mut components = path.split(|&b| b == b'/').peekable();
        while let Some(c) = components.next() {
            let name = CString::new(c).map_err(|_| err(libc::EINVAL))?;
            check_name(&name)?;
            let at = dir.as_ref().map_or(root, |d| d.as_fd());
            let fd = self.open_child_path(at, &name)?;
            if components.peek().is_none() {
                return Ok((dir, fd));
            }
            if oslib::stat_fd(fd.as_fd())?.st_mode & libc::S_IFMT != libc::S_IFDIR {
                return Err(err(libc::ENOTDIR));
            }
            dir = Some(fd);
        }
        Err(err(libc::EINVAL))
    }

    /// Restores the state a source saved. Everything is checked and opened before anything is
    /// committed, so a refused load leaves the filesystem as fresh as it was.
    pub(crate) fn load_migration_state(
        &self,
        negotiated: u64,
        data: &[u8],
    ) -> Result<(), LoadError> {
        if data.len() > MAX_STATE_BYTES {
            return Err(LoadError::TooLarge {
                len: data.len(),
                max: MAX_STATE_BYTES,
            });
        }
        let state = format::decode(data)?;
        if self.inodes.len() != 1 || self.handles.len() != 0 {
            return Err(LoadError::NotFresh);
        }
        // Opening by handle needs a capability and a system call that a device is given only
        // when it was told it would open handles and found at start-up that it can (a
        // `prefer` that fell back holds inodes as `never` does); without them the load would
        // be refused one inode at a time (or, under seccomp, end the process).
        if state.mode == Mode::FileHandles {
            if let Some(why) = &self.cannot_open_handles {
                return Err(LoadError::Session(format!(
                    "the source saved its inodes as file handles, which this device cannot \
                     open: {why}"
                )));
            }
            if self.cfg.migration_mode != MigrationMode::FileHandles
                && self.cfg.inode_file_handles == FileHandleMode::Never
            {
                return Err(LoadError::Session(
                    "the source saved its inodes as file handles: start the destination with \
                     --migration-mode=file-handles as well"
                        .into(),
                ));
            }
        }
        let session = self.check_session(negotiated, state.session_flags)?;
        let root = self
            .inodes
            .get(ROOT_ID)
            .map_err(|e| fatal("inode", ROOT_ID, e))?;
        let root_fd = root.fd().map_err(|e| fatal("inode", ROOT_ID, e))?;
        let root_path = self
            .fd_path(root_fd.as_fd())
            .map_err(|e| fatal("inode", ROOT_ID, e))?;
        let mounts = self.open_mounts(&state, root_fd.as_fd());
        let guest_error = self.cfg.migration_on_error == MigrationOnError::GuestError;

        let mut restored: Vec<InodeData> = Vec::with_capacity(state.inodes.len());
        let mut broken = HashSet::new();
        for rec in &state.inodes {
            let result = if rec.id == ROOT_ID {
                self.verify_root(rec, root_fd.as_fd()).map(|()| None)
            } else {
                self.restore_inode(rec, root_fd.as_fd(), &root_path, &mounts)
                    .map(Some)
            };
            match result {
                Ok(Some(data)) => restored.push(data),
                Ok(None) => {}
                Err(Failure::Fatal(e)) => return Err(e),
                // The root is the whole session: it never goes broken alone.
                Err(Failure::Item(e)) if guest_error && rec.id != ROOT_ID => {
                    log::warn!(
                        "migration: inode {} is broken (EIO from now on): {}",
                        rec.id,
                        e.reason
                    );
                    broken.insert(rec.id);
                    restored.push(InodeData::restored(
                        rec.id,
                        InodeFile::Broken,
                        None,
                        InodeKey {
                            dev: 0,
                            ino: 0,
                            mnt_id: 0,
                        },
                        rec.file_type,
                        rec.lookups,
                    ));
                }
                Err(Failure::Item(e)) => return Err(restore_error("inode", rec.id, e)),
            }
        }

        // Sessions keep their flags from here on; handles reopen with them in force.
        let by_id: HashMap<Inode, &InodeData> = restored.iter().map(|d| (d.id, d)).collect();
        let previous = self.session_flags();
        self.set_session(session);
        let handles = self.reopen_handles(&state, &by_id, &root, &broken, guest_error);
        let handles = match handles {
            Ok(h) => h,
            Err(e) => {
                self.set_session(previous);
                return Err(e);
            }
        };
        drop(by_id);
        self.clear_umask();
        self.inodes.restore(restored, state.next_inode);
        self.handles.restore(handles, state.next_handle);
        if !state.locks.is_empty() {
            log::warn!(
                "migration: {} guest lock(s) (POSIX owners and flocks) were held on the source; \
                 they are not restored (locks stay with the source's open files)",
                state.locks.len()
            );
        }
        log::info!(
            "migration: restored {} inode(s) ({} broken) and {} handle(s)",
            state.inodes.len(),
            broken.len(),
            state.handles.len()
        );
        Ok(())
    }

    /// The session flags to run with: the source's, which this configuration must be able to
    /// serve as it would have after its own INIT.
    fn check_session(&self, negotiated: u64, flags: u64) -> Result<u64, LoadError> {
        let session = |why: String| Err(LoadError::Session(why));
        if flags & !negotiated != 0 {
            return session(format!(
                "the source's flags {:#x} are not all in the negotiated {negotiated:#x}",
                flags
            ));
        }
        let want = match self.init_want(negotiated) {
            Ok(w) => w,
            Err(_) => {
                return session(
                    "this configuration needs INIT flags (POSIX ACLs or security labels) that \
                     the session did not negotiate"
                        .into(),
                )
            }
        };
        let missing = flags & STATEFUL_FLAGS & !want;
        if missing != 0 {
            return session(format!(
                "the session uses flags {missing:#x} this configuration does not ask for"
            ));
        }
        let unused = want & negotiated & STATEFUL_FLAGS & !flags;
        if unused != 0 {
            return session(format!(
                "this configuration would run with flags {unused:#x} the source's session lacks"
            ));
        }
        Ok(flags)
    }

    /// The directories the stream names for the source's mounts (file-handles mode); a mount
    /// that cannot be found is an error for each inode on it.
    fn open_mounts(
        &self,
        state: &State,
        root: BorrowedFd<'_>,
    ) -> HashMap<u64, Result<MountDir, String>> {
        let mut out = HashMap::new();
        if state.mode != Mode::FileHandles {
            return out;
        }
        for m in &state.mounts {
            let dir = || -> io::Result<MountDir> {
                let path_fd = if m.path.is_empty() {
                    oslib::dup(root)?
                } else {
                    self.resolve_path(root, &m.path)?.1
                };
                let (st, mnt_id) = stat_with_mount(path_fd.as_fd())?;
                if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
                    return Err(err(libc::ENOTDIR));
                }
                let fd = oslib::openat(
                    self.proc_self_fd.as_fd(),
                    &Self::proc_name(path_fd.as_fd()),
                    libc::O_RDONLY | libc::O_DIRECTORY,
                    0,
                )?;
                Ok(MountDir { fd, mnt_id })
            };
            let found = dir().map_err(|e| format!("its mount's directory: {e}"));
            out.insert(m.mnt_id, found);
        }
        out
    }

    /// The destination has its own root; with a recorded handle it must be the same directory.
    fn verify_root(&self, rec: &InodeRecord, root: BorrowedFd<'_>) -> Result<(), Failure> {
        if let Some(expected) = &rec.verify {
            self.verify(root, expected)?;
        }
        Ok(())
    }

    fn verify(&self, fd: BorrowedFd<'_>, expected: &WireHandle) -> Result<(), ItemError> {
        let (h, _) = oslib::name_to_handle(fd)
            .map_err(|e| ItemError::io("no file handle to verify it with", e))?;
        if !same_handle(&h, expected) {
            return Err(ItemError::new(
                "its path leads to another file than the source's (file handles differ)",
            ));
        }
        Ok(())
    }

    fn restore_inode(
        &self,
        rec: &InodeRecord,
        root: BorrowedFd<'_>,
        root_path: &[u8],
        mounts: &HashMap<u64, Result<MountDir, String>>,
    ) -> Result<InodeData, Failure> {
        let (near, fd) = match &rec.location {
            Location::Root => return Err(ItemError::new("a second root").into()),
            Location::Invalid(why) => {
                return Err(
                    ItemError::new(format!("the source could not describe it: {why}")).into(),
                )
            }
            Location::Path(path) => {
                let (dir, fd) = self
                    .resolve_path(root, path)
                    .map_err(|e| ItemError::io("cannot find its path", e))?;
                let near = dir.map_or_else(|| oslib::dup(root), Ok).ok();
                (near, fd)
            }
            Location::Handle { mnt_id, handle } => {
                let mount = match mounts.get(mnt_id) {
                    Some(Ok(m)) => m,
                    Some(Err(why)) => return Err(ItemError::new(why.clone()).into()),
                    None => return Err(ItemError::new("unknown mount").into()),
                };
                let handle = FileHandle::from_parts(handle.handle_type, &handle.bytes)
                    .ok_or_else(|| ItemError::new("file handle too long"))?;
                let fd = oslib::open_by_handle(
                    mount.fd.as_fd(),
                    &handle,
                    libc::O_PATH | libc::O_NOFOLLOW,
                )
                .map_err(|e| ItemError::io("cannot open its file handle", e))?;
                self.check_inside(fd.as_fd(), root_path)?;
                let on = stat_with_mount(fd.as_fd()).map(|(_, m)| m);
                if on.as_ref().ok() != Some(&mount.mnt_id) {
                    return Err(
                        ItemError::new("its file handle opened a file on another mount").into(),
                    );
                }
                // The mount's directory can serve as this side's mount descriptor too.
                (oslib::dup(mount.fd.as_fd()).ok(), fd)
            }
        };
        let (st, mnt_id) =
            stat_with_mount(fd.as_fd()).map_err(|e| ItemError::io("cannot stat it", e))?;
        let file_type = st.st_mode & libc::S_IFMT;
        if file_type != rec.file_type {
            return Err(ItemError::new(format!(
                "it is of type {file_type:#o} here, {:#o} on the source",
                rec.file_type
            ))
            .into());
        }
        if let Some(expected) = &rec.verify {
            self.verify(fd.as_fd(), expected)?;
        }
        let key = InodeKey {
            dev: st.st_dev,
            ino: st.st_ino,
            mnt_id,
        };
        let (file, token) = self.restored_file(rec.id, fd, mnt_id, file_type, near)?;
        Ok(InodeData::restored(
            rec.id,
            file,
            token,
            key,
            file_type,
            rec.lookups,
        ))
    }

    /// A file opened by handle must still be inside the shared directory: a handle names any
    /// file of its filesystem, which may extend beyond the shared directory.
    fn check_inside(&self, fd: BorrowedFd<'_>, root_path: &[u8]) -> Result<(), ItemError> {
        let path = self
            .fd_path(fd)
            .map_err(|e| ItemError::io("cannot read its path", e))?;
        match relative(&path, root_path) {
            Some(rel) if !rel.is_empty() => Ok(()),
            _ => Err(ItemError::new(
                "its file handle names a file outside the shared directory",
            )),
        }
    }

    /// How the restored inode keeps its file, following this side's `--inode-file-handles`.
    fn restored_file(
        &self,
        id: Inode,
        fd: OwnedFd,
        mnt_id: u64,
        file_type: u32,
        near: Option<OwnedFd>,
    ) -> Result<(InodeFile, Option<FdToken>), Failure> {
        if self.cfg.inode_file_handles != FileHandleMode::Never {
            let handle = oslib::name_to_handle(fd.as_fd()).and_then(|(handle, m)| {
                if m != mnt_id {
                    return Err(err(libc::EAGAIN));
                }
                let mount = self.mount_fd_near(&fd, mnt_id, file_type, || {
                    Ok(match &near {
                        Some(d) if stat_with_mount(d.as_fd())?.1 == mnt_id => {
                            Some(InodeFd::Borrowed(d.as_fd()))
                        }
                        _ => None,
                    })
                })?;
                Ok(InodeFile::Handle {
                    handle,
                    mount,
                    pinned: None,
                })
            });
            match handle {
                Ok(file) => return Ok((file, None)),
                Err(e) if self.cfg.inode_file_handles == FileHandleMode::Mandatory => {
                    return Err(ItemError::io("no file handle for it", e).into())
                }
                Err(_) => {}
            }
        }
        let token = self
            .fd_token()
            .map_err(|e| Failure::Fatal(fatal("inode", id, e)))?;
        Ok((InodeFile::Fd(fd), Some(token)))
    }

    /// Reopens every handle with its recorded flags (O_TRUNC never: a restore changes no file).
    fn reopen_handles(
        &self,
        state: &State,
        inodes: &HashMap<Inode, &InodeData>,
        root: &Arc<InodeData>,
        broken: &HashSet<Inode>,
        guest_error: bool,
    ) -> Result<Vec<RestoredHandle>, LoadError> {
        let mut out = Vec::with_capacity(state.handles.len());
        for h in &state.handles {
            if broken.contains(&h.inode) {
                out.push((h.id, h.inode, None));
                continue;
            }
            let data: &InodeData = match inodes.get(&h.inode) {
                Some(d) => d,
                None if h.inode == ROOT_ID => root,
                // decode() checked every handle's inode is in the stream.
                None => return Err(fatal("handle", h.id, err(libc::EINVAL))),
            };
            let flags = self.host_open_flags(h.flags) & !libc::O_TRUNC;
            let writes = flags & libc::O_ACCMODE != libc::O_RDONLY;
            let opened = if writes && self.cfg.readonly {
                Err(ItemError::io("open for writing", err(libc::EROFS)))
            } else if flags & libc::O_DIRECTORY != 0 && !data.is_dir() {
                Err(ItemError::io("open as a directory", err(libc::ENOTDIR)))
            } else {
                self.open_inode(data, flags)
                    .map_err(|e| ItemError::io("cannot reopen it", e))
            };
            match opened {
                Ok(GuestFd { fd, token }) => out.push((h.id, h.inode, Some((fd, token)))),
                Err(e)
                    if e.source.as_ref().and_then(io::Error::raw_os_error)
                        == Some(libc::ENFILE) =>
                {
                    return Err(restore_error("handle", h.id, e))
                }
                Err(e) if guest_error => {
                    log::warn!("migration: handle {} is broken: {}", h.id, e.reason);
                    out.push((h.id, h.inode, None));
                }
                Err(e) => return Err(restore_error("handle", h.id, e)),
            }
        }
        Ok(out)
    }
}

fn fatal(what: &'static str, id: u64, e: io::Error) -> LoadError {
    LoadError::Restore {
        what,
        id,
        reason: e.to_string(),
        source: Some(e),
    }
}

fn restore_error(what: &'static str, id: u64, e: ItemError) -> LoadError {
    LoadError::Restore {
        what,
        id,
        reason: e.reason,
        source: e.source,
    }
}
