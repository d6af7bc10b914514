//! The inode table: guest inode ids to host files held open with `O_PATH`, or named by file
//! handles so the daemon's descriptor count does not grow with the guest's inode cache.
//!
//! A host file is identified by (device, inode number, mount id), and, for inodes named by file
//! handles, by the handle too (inode numbers are reused after an unlink), so looking up the same
//! file twice, or through a hard link, gives the guest the same inode id. Each id carries the guest's
//! lookup count; it is freed when FORGET brings the count to zero (the root never is).

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use virtiofsd_fuse::filesystem::{Inode, ROOT_ID};

use crate::budget::FdToken;
use crate::oslib::{self, FileHandle};

/// How an inode reaches its host file.
#[derive(Debug)]
pub enum InodeFile {
    /// An `O_PATH | O_NOFOLLOW` descriptor.
    Fd(OwnedFd),
    /// A file handle, opened on demand against a real descriptor on the same mount, unless
    /// the inode is one of the few that also keep the `O_PATH` descriptor they were looked up
    /// with (see [`Pinned`]).
    Handle {
        handle: FileHandle,
        mount: Arc<OwnedFd>,
        pinned: Option<Pinned>,
    },
    /// Restored by a migration that could not find the file again
    /// (`--migration-on-error=guest-error`): every request on it answers `EIO`.
    Broken,
}

/// The `O_PATH` descriptor a handle-held inode keeps so that requests on it need not open
/// the handle each time: counted against the fd budget and against the few such slots the
/// filesystem has, so the descriptors held stay bounded however many inodes the guest knows.
#[derive(Debug)]
pub struct Pinned {
    pub fd: OwnedFd,
    _budget: FdToken,
    _slot: FdToken,
}

impl Pinned {
    pub fn new(fd: OwnedFd, budget: FdToken, slot: FdToken) -> Self {
        Self {
            fd,
            _budget: budget,
            _slot: slot,
        }
    }
}

impl InodeFile {
    /// Whether `other`, found under the same key, is this inode's file. A descriptor pins its
    /// inode, so its key cannot name another file while it is held; a handle pins nothing, and
    /// after an unlink the inode number may be reused: only an equal handle is the same file.
    fn same_file(&self, other: &InodeFile) -> bool {
        match (self, other) {
            (InodeFile::Fd(_), _) => true,
            (InodeFile::Handle { handle: a, .. }, InodeFile::Handle { handle: b, .. }) => a == b,
            (InodeFile::Handle { .. }, _) | (InodeFile::Broken, _) => false,
        }
    }
}

/// A descriptor of an inode's file: borrowed from the table or opened for this request.
pub enum InodeFd<'a> {
    Borrowed(BorrowedFd<'a>),
    Owned(OwnedFd),
}

impl AsFd for InodeFd<'_> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            InodeFd::Borrowed(b) => *b,
            InodeFd::Owned(o) => o.as_fd(),
        }
    }
}
/// What makes two host files the same file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct InodeKey {
    pub dev: u64,
    pub ino: u64,
    pub mnt_id: u64,
}

/// One guest-visible inode.
#[derive(Debug)]
pub struct InodeData {
    pub id: Inode,
    /// The host file (never a followed symlink).
    pub file: InodeFile,
    /// The budget share of `file` when it is a descriptor.
    _token: Option<FdToken>,
    pub key: InodeKey,
    /// `S_IFMT` bits, which never change for a given host inode.
    pub file_type: u32,
    /// Lookup count; only changed with the table's write lock held.
    refcount: AtomicU64,
}

impl InodeData {
    /// An `O_PATH` descriptor of the file. With a file handle this opens one, which the caller
    /// closes by dropping it.
    pub fn fd(&self) -> io::Result<InodeFd<'_>> {
        match &self.file {
            InodeFile::Fd(fd) => Ok(InodeFd::Borrowed(fd.as_fd())),
            InodeFile::Handle {
                pinned: Some(p), ..
            } => Ok(InodeFd::Borrowed(p.fd.as_fd())),
            InodeFile::Handle { handle, mount, .. } => Ok(InodeFd::Owned(oslib::open_by_handle(
                mount.as_fd(),
                handle,
                libc::O_PATH | libc::O_NOFOLLOW,
            )?)),
            InodeFile::Broken => Err(io::Error::from_raw_os_error(libc::EIO)),
        }
    }

    /// An inode restored by a migration under the source's id and lookup count.
    pub fn restored(
        id: Inode,
        file: InodeFile,
        token: Option<FdToken>,
        key: InodeKey,
        file_type: u32,
        lookups: u64,
    ) -> InodeData {
        InodeData {
            id,
            file,
            _token: token,
            key,
            file_type,
            refcount: AtomicU64::new(lookups),
        }
    }

    /// The guest's lookup count.
    pub fn lookups(&self) -> u64 {
        self.refcount.load(Ordering::Acquire)
    }

    /// Whether the inode holds a descriptor (rather than a file handle).
    #[cfg(test)]
    pub fn holds_fd(&self) -> bool {
        matches!(self.file, InodeFile::Fd(_))
    }

    pub fn is_symlink(&self) -> bool {
        self.file_type == libc::S_IFLNK
    }

    pub fn is_dir(&self) -> bool {
        self.file_type == libc::S_IFDIR
    }

    #[cfg(test)]
    pub fn refcount(&self) -> u64 {
        self.refcount.load(Ordering::Acquire)
    }
}

#[derive(Default)]
struct Maps {
    by_id: HashMap<Inode, Arc<InodeData>>,
    by_key: HashMap<InodeKey, Inode>,
}

/// Thread-safe inode table.
pub struct InodeStore {
    maps: RwLock<Maps>,
    next_id: AtomicU64,
}

fn ebadf() -> io::Error {
    io::Error::from_raw_os_error(libc::EBADF)
}

impl InodeStore {
    /// A table holding only the root directory.
    pub fn new(root: OwnedFd, key: InodeKey) -> Self {
        let data = Arc::new(InodeData {
            id: ROOT_ID,
            file: InodeFile::Fd(root),
            _token: None,
            key,
            file_type: libc::S_IFDIR,
            refcount: AtomicU64::new(1),
        });
        let mut maps = Maps::default();
        maps.by_key.insert(key, ROOT_ID);
        maps.by_id.insert(ROOT_ID, data);
        InodeStore {
            maps: RwLock::new(maps),
            next_id: AtomicU64::new(ROOT_ID + 1),
        }
    }

    // A poisoned lock only means another thread panicked mid-operation; the maps themselves are
    // always left consistent, so carrying on is safe.
    fn read(&self) -> RwLockReadGuard<'_, Maps> {
        self.maps.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Maps> {
        self.maps.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The inode `id`, or `EBADF` when the guest names one it does not hold.
    pub fn get(&self, id: Inode) -> io::Result<Arc<InodeData>> {
        self.read().by_id.get(&id).cloned().ok_or_else(ebadf)
    }

    /// Takes one lookup reference on an existing inode with this key, if there is one.
    pub fn ref_existing(&self, key: &InodeKey) -> Option<Arc<InodeData>> {
        let maps = self.write();
        let existing = maps.by_key.get(key).and_then(|id| maps.by_id.get(id))?;
        existing.refcount.fetch_add(1, Ordering::AcqRel);
        Some(existing.clone())
    }

    /// The inode the key names now, without taking a reference (see [`Self::ref_held`]).
    pub fn find(&self, key: &InodeKey) -> Option<Arc<InodeData>> {
        let maps = self.read();
        maps.by_key
            .get(key)
            .and_then(|id| maps.by_id.get(id))
            .cloned()
    }

    /// Takes one lookup reference on `data` if the table still holds it (the guest may have
    /// forgotten it since [`Self::find`]); ids are never reused, so the id alone tells.
    pub fn ref_held(&self, data: &Arc<InodeData>) -> bool {
        let maps = self.write();
        match maps.by_id.get(&data.id) {
            Some(held) if Arc::ptr_eq(held, data) => {
                held.refcount.fetch_add(1, Ordering::AcqRel);
                true
            }
            _ => false,
        }
    }

    /// Takes one lookup reference on the file `file` refers to: an existing inode with the same
    /// key (then `file` and `token` are dropped), or a new one.
    pub fn insert_or_ref(
        &self,
        file: InodeFile,
        token: Option<FdToken>,
        key: InodeKey,
        file_type: u32,
    ) -> Arc<InodeData> {
        let mut maps = self.write();
        if let Some(existing) = maps.by_key.get(&key).and_then(|id| maps.by_id.get(id)) {
            if existing.file.same_file(&file) {
                existing.refcount.fetch_add(1, Ordering::AcqRel);
                return existing.clone();
            }
            // A reused inode number: the old id lives on until the guest forgets it, but the
            // key now names the new file.
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let data = Arc::new(InodeData {
            id,
            file,
            _token: token,
            key,
            file_type,
            refcount: AtomicU64::new(1),
        });
        maps.by_key.insert(key, id);
        maps.by_id.insert(id, data.clone());
        data
    }

    /// Drops `count` lookup references; the inode goes away at zero unless it is the root.
    pub fn forget(&self, id: Inode, count: u64) {
        let mut maps = self.write();
        let Some(data) = maps.by_id.get(&id) else {
            return;
        };
        let old = data.refcount.load(Ordering::Acquire);
        let new = old.saturating_sub(count);
        data.refcount.store(new, Ordering::Release);
        if new == 0 && id != ROOT_ID {
            let key = data.key;
            maps.by_id.remove(&id);
            if maps.by_key.get(&key) == Some(&id) {
                maps.by_key.remove(&key);
            }
        }
    }

    /// Drops every inode except the root (FUSE_DESTROY).
    pub fn clear(&self) {
        let mut maps = self.write();
        maps.by_id.retain(|&id, _| id == ROOT_ID);
        maps.by_key.retain(|_, id| *id == ROOT_ID);
    }

    /// Every inode held, root included, and the next id to hand out (for a migration).
    pub fn snapshot(&self) -> (Vec<Arc<InodeData>>, u64) {
        let maps = self.read();
        let mut all: Vec<_> = maps.by_id.values().cloned().collect();
        all.sort_by_key(|d| d.id);
        (all, self.next_id.load(Ordering::Relaxed))
    }

    /// Adds inodes restored by a migration (never the root, whose id must not be among them)
    /// and continues ids from `next_id`. A broken inode, or one whose key an earlier one took,
    /// is reachable by id only.
    pub fn restore(&self, inodes: Vec<InodeData>, next_id: u64) {
        let mut maps = self.write();
        for data in inodes {
            let (id, key) = (data.id, data.key);
            if !matches!(data.file, InodeFile::Broken) {
                maps.by_key.entry(key).or_insert(id);
            }
            maps.by_id.insert(id, Arc::new(data));
        }
        self.next_id.fetch_max(next_id, Ordering::Relaxed);
    }

    /// Number of inodes held, root included.
    pub fn len(&self) -> usize {
        self.read().by_id.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fd() -> OwnedFd {
        OwnedFd::from(std::fs::File::open("/").unwrap())
    }

    fn key(ino: u64) -> InodeKey {
        InodeKey {
            dev: 1,
            ino,
            mnt_id: 1,
        }
    }

    #[test]
    fn same_key_same_inode_and_forget_frees() {
        let store = InodeStore::new(fd(), key(1));
        let a = store.insert_or_ref(InodeFile::Fd(fd()), None, key(7), libc::S_IFREG);
        let b = store.insert_or_ref(InodeFile::Fd(fd()), None, key(7), libc::S_IFREG);
        assert_eq!(a.id, b.id);
        assert_ne!(a.id, ROOT_ID);
        assert_eq!(a.refcount(), 2);
        store.forget(a.id, 1);
        assert!(store.get(a.id).is_ok());
        store.forget(a.id, 1);
        assert_eq!(
            store.get(a.id).unwrap_err().raw_os_error(),
            Some(libc::EBADF)
        );
        // A later lookup of the same file gets a fresh id.
        let c = store.insert_or_ref(InodeFile::Fd(fd()), None, key(7), libc::S_IFREG);
        assert_ne!(c.id, a.id);
    }

    #[test]
    fn a_found_inode_is_referenced_only_while_held() {
        let store = InodeStore::new(fd(), key(1));
        let a = store.insert_or_ref(InodeFile::Fd(fd()), None, key(7), libc::S_IFREG);
        let found = store.find(&key(7)).expect("the key names the inode");
        assert_eq!(found.id, a.id);
        assert_eq!(found.refcount(), 1);
        assert!(store.ref_held(&found));
        assert_eq!(found.refcount(), 2);
        assert!(store.find(&key(8)).is_none());
        store.forget(a.id, 2);
        assert!(!store.ref_held(&found));
        // A new inode under the same key is another inode: the stale one is not revived.
        let b = store.insert_or_ref(InodeFile::Fd(fd()), None, key(7), libc::S_IFREG);
        assert!(!store.ref_held(&found));
        assert_eq!(b.refcount(), 1);
    }

    #[test]
    fn root_survives_forget_and_clear() {
        let store = InodeStore::new(fd(), key(1));
        store.insert_or_ref(InodeFile::Fd(fd()), None, key(2), libc::S_IFREG);
        store.forget(ROOT_ID, 100);
        assert!(store.get(ROOT_ID).is_ok());
        store.clear();
        assert_eq!(store.len(), 1);
        assert!(store.get(ROOT_ID).is_ok());
    }
}
