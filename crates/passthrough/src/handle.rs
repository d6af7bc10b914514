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

/// Thread-safe handle table.
#[derive(Default)]
pub struct HandleStore {
    map: RwLock<HashMap<Handle, Arc<HandleData>>>,
    next: AtomicU64,
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
            _ => Err(ebadf()),
        }
    }

    /// Removes the handle; its descriptor closes once no request still uses it.
    pub fn remove(&self, id: Handle, inode: Inode) -> io::Result<()> {
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        match map.get(&id) {
            Some(h) if h.inode == inode => {
                map.remove(&id);
                Ok(())
            }
            _ => Err(ebadf()),
        }
    }

    pub fn clear(&self) {
        self.map.write().unwrap_or_else(|e| e.into_inner()).clear();
    }

    pub fn len(&self) -> usize {
        self.map.read().unwrap_or_else(|e| e.into_inner()).len()
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
