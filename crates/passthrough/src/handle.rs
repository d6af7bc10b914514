//! The handle table: FUSE file handles to open host descriptors.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use virtiofsd_fuse::filesystem::{Handle, Inode};

use crate::budget::FdToken;

/// An open file or directory.
#[derive(Debug)]
pub struct HandleData {
    pub inode: Inode,
    file: OwnedFd,
    _token: Option<FdToken>,
    /// Serialises seek + getdents on directories, whose position lives in the shared fd.
    dir_pos: Mutex<()>,
}

impl HandleData {
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// Exclusive use of the directory position until the guard is dropped.
    pub fn lock_position(&self) -> MutexGuard<'_, ()> {
        self.dir_pos.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A handle restored by a migration: its id, inode and reopened descriptor (`None`: broken).
pub type RestoredHandle = (Handle, Inode, Option<(OwnedFd, FdToken)>);

/// Thread-safe handle table.
#[derive(Default)]
pub struct HandleStore {
    map: RwLock<HashMap<Handle, Arc<HandleData>>>,
    /// Handles a migration could not reopen (`--migration-on-error=guest-error`), with their
    /// inode: they answer `EIO` until released.
    broken: RwLock<HashMap<Handle, Inode>>,
    next: AtomicU64,
}

fn eio() -> io::Error {
    io::Error::from_raw_os_error(libc::EIO)
}

fn ebadf() -> io::Error {
    io::Error::from_raw_os_error(libc::EBADF)
}

impl HandleStore {
    pub fn insert(&self, inode: Inode, file: OwnedFd, token: Option<FdToken>) -> Handle {
        // Handle 0 is skipped so a zeroed `fh` from a confused guest never matches.
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let data = Arc::new(HandleData {
            inode,
            file,
            _token: token,
            dir_pos: Mutex::new(()),
        });
        self.map
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, data);
        id
    }

    /// The handle `id`, which must belong to `inode`; `EBADF` otherwise.
    pub fn get(&self, id: Handle, inode: Inode) -> io::Result<Arc<HandleData>> {
        let map = self.map.read().unwrap_or_else(|e| e.into_inner());
        match map.get(&id) {
            Some(h) if h.inode == inode => Ok(h.clone()),
            Some(_) => Err(ebadf()),
            None => match self.broken_read().get(&id) {
                Some(&i) if i == inode => Err(eio()),
                _ => Err(ebadf()),
            },
        }
    }

    fn broken_read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<Handle, Inode>> {
        self.broken.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Every open handle and the last id handed out (for a migration).
    pub fn snapshot(&self) -> (Vec<(Handle, Arc<HandleData>)>, u64) {
        let map = self.map.read().unwrap_or_else(|e| e.into_inner());
        let mut all: Vec<_> = map.iter().map(|(&id, h)| (id, h.clone())).collect();
        all.sort_by_key(|(id, _)| *id);
        (all, self.next.load(Ordering::Relaxed))
    }

    /// Adds handles restored by a migration under the source's ids (`None`: broken) and
    /// continues ids after `last`.
    pub fn restore(&self, handles: Vec<RestoredHandle>, last: u64) {
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        let mut broken = self.broken.write().unwrap_or_else(|e| e.into_inner());
        for (id, inode, file) in handles {
            match file {
                Some((file, token)) => {
                    map.insert(
                        id,
                        Arc::new(HandleData {
                            inode,
                            file,
                            _token: Some(token),
                            dir_pos: Mutex::new(()),
                        }),
                    );
                }
                None => {
                    broken.insert(id, inode);
                }
            }
        }
        self.next.fetch_max(last, Ordering::Relaxed);
    }

    /// Removes the handle; its descriptor closes once no request still uses it.
    pub fn remove(&self, id: Handle, inode: Inode) -> io::Result<()> {
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        match map.get(&id) {
            Some(h) if h.inode == inode => {
                map.remove(&id);
                Ok(())
            }
            Some(_) => Err(ebadf()),
            None => {
                let mut broken = self.broken.write().unwrap_or_else(|e| e.into_inner());
                match broken.get(&id) {
                    Some(&i) if i == inode => {
                        broken.remove(&id);
                        Ok(())
                    }
                    _ => Err(ebadf()),
                }
            }
        }
    }

    pub fn clear(&self) {
        self.map.write().unwrap_or_else(|e| e.into_inner()).clear();
        self.broken
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Open handles, broken ones included.
    pub fn len(&self) -> usize {
        self.map.read().unwrap_or_else(|e| e.into_inner()).len() + self.broken_read().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_get_remove() {
        let store = HandleStore::default();
        let h = store.insert(5, OwnedFd::from(std::fs::File::open("/").unwrap()), None);
        assert_ne!(h, 0);
        assert!(store.get(h, 5).is_ok());
        assert_eq!(
            store.get(h, 6).unwrap_err().raw_os_error(),
            Some(libc::EBADF)
        );
        assert_eq!(
            store.remove(h, 6).unwrap_err().raw_os_error(),
            Some(libc::EBADF)
        );
        store.remove(h, 5).unwrap();
        assert!(store.get(h, 5).is_err());
        assert_eq!(store.len(), 0);
    }
}
