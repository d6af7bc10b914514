//! The source side: describing every inode and handle the guest holds.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use virtiofsd_fuse::filesystem::ROOT_ID;

use super::format::{
    self, HandleRecord, InodeRecord, Location, LockKind, LockRecord, Mode, Mount, State,
    WireHandle, MAX_ENTRIES, MAX_REASON,
};
use super::SaveError;
use crate::config::MigrationMode;
use crate::fs::PassthroughFs;
use crate::inode::{InodeData, InodeFile};
use crate::oslib::{self, FileHandle};

/// What the kernel appends to the path of a descriptor whose name was unlinked.
const DELETED: &[u8] = b" (deleted)";

/// `path` relative to the shared directory at `root` (both as `/proc/self/fd` shows them), or
/// `None` when it is not strictly inside. An empty result is the root itself.
pub(super) fn relative<'a>(path: &'a [u8], root: &[u8]) -> Option<&'a [u8]> {
    if root == b"/" {
        return path.strip_prefix(b"/");
    }
    let rest = path.strip_prefix(root)?;
    if rest.is_empty() {
        return Some(rest);
    }
    rest.strip_prefix(b"/")
}

impl From<FileHandle> for WireHandle {
    fn from(h: FileHandle) -> WireHandle {
        WireHandle {
            handle_type: h.handle_type(),
            bytes: h.bytes().to_vec(),
        }
    }
}

/// A reason within the format's limit.
fn reason(mut s: String) -> String {
    if s.len() > MAX_REASON {
        let mut end = MAX_REASON;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

fn bounded(what: &'static str, count: usize) -> Result<(), SaveError> {
    if count > MAX_ENTRIES {
        return Err(SaveError::TooMany { what, count });
    }
    Ok(())
}

impl PassthroughFs {
    /// The kernel's current path of `fd`, read from its `/proc/self/fd` entry.
    pub(super) fn fd_path(&self, fd: BorrowedFd<'_>) -> std::io::Result<Vec<u8>> {
        oslib::readlinkat(self.proc_self_fd.as_fd(), &Self::proc_name(fd))
    }

    /// The state to hand to a destination: called with the queues stopped, so nothing changes
    /// the tables meanwhile.
    pub(crate) fn save_migration_state(&self) -> Result<Vec<u8>, SaveError> {
        let mode = match self.cfg.migration_mode {
            MigrationMode::FindPaths => Mode::FindPaths,
            MigrationMode::FileHandles => Mode::FileHandles,
        };
        let (inodes, next_inode) = self.inodes.snapshot();
        let (handles, next_handle) = self.handles.snapshot();
        let owners = self.locks.owners();
        bounded("inodes", inodes.len())?;
        bounded("handles", handles.len())?;
        bounded("lock owners", owners.len())?;
        let mut locks: Vec<LockRecord> = owners
            .into_iter()
            .map(|(inode, owner)| LockRecord {
                kind: LockKind::Posix,
                inode,
                owner,
            })
            .collect();

        let root = inodes
            .iter()
            .find(|d| d.id == ROOT_ID)
            .ok_or_else(|| SaveError::RootPath(crate::fs::err(libc::EBADF)))?;
        let root_fd = root.fd().map_err(SaveError::RootPath)?;
        let root_path = self.fd_path(root_fd.as_fd()).map_err(SaveError::RootPath)?;

        let mut mounts = BTreeMap::new();
        if mode == Mode::FileHandles {
            mounts.insert(root.key.mnt_id, Vec::new());
        }
        let mut records = Vec::with_capacity(inodes.len());
        for data in &inodes {
            let location = if data.id == ROOT_ID {
                Ok(Location::Root)
            } else {
                match mode {
                    Mode::FindPaths => self.describe_by_path(data, &root_path, root_fd.as_fd()),
                    Mode::FileHandles => self.describe_by_handle(data, &root_path, &mut mounts),
                }
            };
            let location = location.unwrap_or_else(|why| {
                log::warn!("migration: inode {} cannot be described: {why}", data.id);
                Location::Invalid(reason(why))
            });
            let verify = match (&location, mode) {
                (Location::Path(_) | Location::Root, Mode::FindPaths)
                    if self.cfg.migration_verify_handles =>
                {
                    // A filesystem without handles leaves nothing to compare; the destination
                    // then trusts the path alone.
                    data.fd()
                        .and_then(|fd| oslib::name_to_handle(fd.as_fd()))
                        .ok()
                        .map(|(h, _)| h.into())
                }
                _ => None,
            };
            records.push(InodeRecord {
                id: data.id,
                generation: 0,
                lookups: data.lookups().max(1),
                file_type: data.file_type,
                location,
                verify,
            });
        }

        let mut handle_records = Vec::with_capacity(handles.len());
        for (id, h) in &handles {
            // The description's flags as the host keeps them: access mode, O_APPEND, O_DIRECT,
            // O_NOATIME, O_DIRECTORY, ... (never O_CREAT, O_EXCL or O_TRUNC). Reads and writes
            // carry their own offsets, so the flags are all a reopened handle needs.
            let flags = oslib::get_fl(h.fd()).unwrap_or_else(|e| {
                log::warn!("migration: flags of handle {id}: {e}");
                libc::O_RDONLY
            });
            if self.holds_flock(h.fd()) {
                locks.push(LockRecord {
                    kind: LockKind::Flock,
                    inode: h.inode,
                    owner: *id,
                });
            }
            handle_records.push(HandleRecord {
                id: *id,
                inode: h.inode,
                flags: flags as u32,
            });
        }
        bounded("locks", locks.len())?;
        if !locks.is_empty() {
            log::warn!(
                "migration: {} guest lock(s) (POSIX owners and flocks) stay with this process and \
                 are not restored on the destination",
                locks.len()
            );
        }
        let state = State {
            mode,
            session_flags: self.session_flags(),
            next_inode,
            next_handle,
            mounts: mounts
                .into_iter()
                .map(|(mnt_id, path)| Mount { mnt_id, path })
                .collect(),
            inodes: records,
            handles: handle_records,
            locks,
        };
        Ok(format::encode(&state))
    }

    /// Whether the open file description of `fd` holds a flock: its `/proc/self/fdinfo` entry
    /// lists the locks it holds ("lock:" lines). Unreadable counts as none.
    fn holds_flock(&self, fd: BorrowedFd<'_>) -> bool {
        let Ok(name) = CString::new(format!("../fdinfo/{}", fd.as_raw_fd())) else {
            return false;
        };
        let Ok(info) = oslib::openat(self.proc_self_fd.as_fd(), &name, libc::O_RDONLY, 0) else {
            return false;
        };
        let mut text = String::new();
        if std::fs::File::from(info).read_to_string(&mut text).is_err() {
            return false;
        }
        text.lines()
            .any(|l| l.starts_with("lock:") && l.contains("FLOCK"))
    }

    /// find-paths: the inode's current path inside the shared directory.
    fn describe_by_path(
        &self,
        data: &InodeData,
        root_path: &[u8],
        root_fd: BorrowedFd<'_>,
    ) -> Result<Location, String> {
        if matches!(data.file, InodeFile::Broken) {
            return Err("broken since an earlier migration".into());
        }
        let fd = data.fd().map_err(|e| format!("cannot open it: {e}"))?;
        let st = oslib::stat_fd(fd.as_fd()).map_err(|e| format!("cannot stat it: {e}"))?;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let path = self
                .fd_path(fd.as_fd())
                .map_err(|e| format!("cannot read its path: {e}"))?;
            let deleted = path.ends_with(DELETED);
            if deleted && st.st_nlink == 0 {
                return Err("unlinked while the guest holds it".into());
            }
            let rel = relative(&path, root_path)
                .filter(|r| !r.is_empty())
                .ok_or_else(|| "its path is outside the shared directory".to_string())?;
            format::check_path(rel).map_err(|e| e.to_string())?;
            // A path that may be stale is checked by walking it as the destination will: a
            // name that really ends in " (deleted)", or every path with --migration-confirm-paths.
            if !deleted && !self.cfg.migration_confirm_paths {
                return Ok(Location::Path(rel.to_vec()));
            }
            match self.resolve_path(root_fd, rel) {
                Ok((_, found)) => match oslib::stat_fd(found.as_fd()) {
                    Ok(f) if f.st_dev == st.st_dev && f.st_ino == st.st_ino => {
                        return Ok(Location::Path(rel.to_vec()))
                    }
                    _ => {}
                },
                Err(_) if deleted => return Err("its name was unlinked".into()),
                Err(_) => {}
            }
            // Renamed between reading the path and walking it: read the fd's path once more.
            if attempts == 2 {
                return Err("its path does not lead to it (renamed or replaced)".into());
            }
        }
    }

    /// file-handles: the inode's file handle, and a path to a directory on its mount.
    fn describe_by_handle(
        &self,
        data: &InodeData,
        root_path: &[u8],
        mounts: &mut BTreeMap<u64, Vec<u8>>,
    ) -> Result<Location, String> {
        let (handle, mnt_id) = match &data.file {
            InodeFile::Handle { handle, .. } => (handle.clone(), data.key.mnt_id),
            InodeFile::Fd(fd) => oslib::name_to_handle(fd.as_fd())
                .map_err(|e| format!("no file handle for it: {e}"))?,
            InodeFile::Broken => return Err("broken since an earlier migration".into()),
        };
        if let std::collections::btree_map::Entry::Vacant(slot) = mounts.entry(mnt_id) {
            let path = self
                .mount_path(data, mnt_id, root_path)
                .ok_or("no directory of its mount is known in the shared directory")?;
            slot.insert(path);
        }
        Ok(Location::Handle {
            mnt_id,
            handle: handle.into(),
        })
    }

    /// A path in the shared directory of a directory on mount `mnt_id`: the mount's cached
    /// descriptor, the inode itself when it is a directory, or its parent.
    fn mount_path(&self, data: &InodeData, mnt_id: u64, root_path: &[u8]) -> Option<Vec<u8>> {
        let usable = |path: Vec<u8>| -> Option<Vec<u8>> {
            if path.ends_with(DELETED) {
                return None;
            }
            let rel = relative(&path, root_path)?.to_vec();
            (rel.is_empty() || format::check_path(&rel).is_ok()).then_some(rel)
        };
        let cached = self
            .mount_fds
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&mnt_id)
            .cloned();
        if let Some(path) = cached
            .and_then(|m| self.fd_path(m.as_fd()).ok())
            .and_then(usable)
        {
            return Some(path);
        }
        let fd = data.fd().ok()?;
        let path = usable(self.fd_path(fd.as_fd()).ok()?)?;
        if data.is_dir() {
            return Some(path);
        }
        match path.iter().rposition(|&b| b == b'/') {
            Some(i) => Some(path[..i].to_vec()),
            None => Some(Vec::new()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths() {
        assert_eq!(relative(b"/srv/x/a/b", b"/srv/x"), Some(&b"a/b"[..]));
        assert_eq!(relative(b"/srv/x", b"/srv/x"), Some(&b""[..]));
        assert_eq!(relative(b"/srv/xy/a", b"/srv/x"), None);
        assert_eq!(relative(b"/etc/passwd", b"/srv/x"), None);
        assert_eq!(relative(b"/a/b", b"/"), Some(&b"a/b"[..]));
        assert_eq!(reason("é".repeat(200)).len(), 256);
    }
}
