//! Guest file locks on the host.
//!
//! POSIX record locks become open-file-description (OFD) locks: the host keeps one open file
//! description per (inode, guest lock owner), so two guest owners conflict on the host exactly
//! as two processes would, and one owner's locks merge and split among themselves. BSD flocks
//! belong to an open file description already, as the guest's handle does, so they go on the
//! handle's own descriptor.
//!
//! A blocking request (SETLKW) waits with only `Arc`s in hand: no table lock of the filesystem
//! is held while the host call sleeps.

use std::collections::{HashMap, HashSet};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use virtiofsd_fuse::filesystem::{Context, FileLock, Inode, LockRequest};

use crate::budget::FdToken;
use crate::fs::{err, PassthroughFs};
use crate::oslib;

/// One guest owner's host open file description on one inode.
#[derive(Debug)]
pub struct LockOfd {
    fd: OwnedFd,
    /// The guest pid that last locked through this owner, reported to GETLK callers.
    pid: AtomicU32,
    /// Guest handles this owner has locked through. A guest OFD lock's owner is its open file,
    /// whose only trace in FUSE is the handle, and whose locks must go with its last close
    /// (RELEASE), which names no lock owner. Only handles open on the inode are recorded, so
    /// the set is bounded by the handle table (itself bounded by the fd budget).
    handles: Mutex<HashSet<u64>>,
    _token: FdToken,
}

/// Owners' descriptions, indexed by inode so that the per-inode operations (RELEASE, GETLK's
/// conflict search) never scan other files' owners. Every description holds an fd token, so
/// the table is bounded by the fd budget.
#[derive(Default)]
pub struct LockTable {
    map: Mutex<HashMap<Inode, HashMap<u64, Arc<LockOfd>>>>,
}

type Owners = HashMap<Inode, HashMap<u64, Arc<LockOfd>>>;

impl LockTable {
    fn map(&self) -> MutexGuard<'_, Owners> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self, inode: Inode, owner: u64) -> Option<Arc<LockOfd>> {
        self.map().get(&inode)?.get(&owner).cloned()
    }

    /// `owner`'s description on `inode`: the existing one, or `new`.
    fn get_or_insert(&self, inode: Inode, owner: u64, new: Arc<LockOfd>) -> Arc<LockOfd> {
        self.map()
            .entry(inode)
            .or_default()
            .entry(owner)
            .or_insert(new)
            .clone()
    }

    /// Drops `owner`'s description on `inode`, which releases all its locks there.
    pub fn release_owner(&self, inode: Inode, owner: u64) {
        let mut map = self.map();
        let Some(owners) = map.get_mut(&inode) else {
            return;
        };
        let removed = owners.remove(&owner);
        if owners.is_empty() {
            map.remove(&inode);
        }
        drop(map);
        drop(removed);
    }

    /// Drops the descriptions of every owner that locked `inode` through `handle`, now being
    /// released. POSIX owners lose nothing they still had: the guest's close already sent a
    /// FLUSH that released them.
    pub fn release_handle(&self, inode: Inode, handle: u64) {
        let mut map = self.map();
        let Some(owners) = map.get_mut(&inode) else {
            return;
        };
        let removed: Vec<_> = owners
            .extract_if(|_, ofd| ofd.handles.lock().is_ok_and(|h| h.contains(&handle)))
            .collect();
        if owners.is_empty() {
            map.remove(&inode);
        }
        drop(map);
        drop(removed);
    }

    /// The descriptions of owners other than `owner` on `inode`.
    fn others(&self, inode: Inode, owner: u64) -> Vec<Arc<LockOfd>> {
        self.map()
            .get(&inode)
            .map(|owners| {
                owners
                    .iter()
                    .filter(|(o, _)| **o != owner)
                    .map(|(_, v)| v.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn clear(&self) {
        self.map().clear();
    }

    /// Every (inode, owner) holding a host description, for a migration's record.
    pub fn owners(&self) -> Vec<(Inode, u64)> {
        let mut all: Vec<_> = self
            .map()
            .iter()
            .flat_map(|(&inode, owners)| owners.keys().map(move |&o| (inode, o)))
            .collect();
        all.sort_unstable();
        all
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.map().values().map(HashMap::len).sum()
    }
}

/// The host `flock64` for a guest lock; `EINVAL` for ranges the host cannot express.
fn to_host(lock: &FileLock) -> io::Result<libc::flock64> {
    let lock_type = match lock.lock_type as libc::c_int {
        t @ (libc::F_RDLCK | libc::F_WRLCK | libc::F_UNLCK) => t as libc::c_short,
        _ => return Err(err(libc::EINVAL)),
    };
    if lock.start > lock.end || lock.start > i64::MAX as u64 {
        return Err(err(libc::EINVAL));
    }
    let len = if lock.end == u64::MAX || lock.end >= i64::MAX as u64 {
        0 // to the end of the file, however it grows
    } else {
        (lock.end - lock.start + 1) as i64
    };
    // SAFETY: `flock64` is plain old data; all-zero is a valid value.
    let mut fl: libc::flock64 = unsafe { std::mem::zeroed() };
    fl.l_type = lock_type;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = lock.start as i64;
    fl.l_len = len;
    Ok(fl)
}

fn from_host(fl: &libc::flock64, pid: u32) -> FileLock {
    // The guest kernel refuses (EIO) a lock reaching past the largest file offset, so "to the
    // end of the file" is that offset, not u64::MAX.
    const OFFSET_MAX: u64 = i64::MAX as u64;
    let start = (fl.l_start.max(0) as u64).min(OFFSET_MAX);
    let end = if fl.l_len <= 0 {
        OFFSET_MAX
    } else {
        start.saturating_add(fl.l_len as u64 - 1).min(OFFSET_MAX)
    };
    FileLock {
        start,
        end,
        lock_type: fl.l_type as u32,
        pid,
    }
}

impl PassthroughFs {
    /// A new description of the file the guest handle has open, with the same access mode
    /// (never more: a writable description of a running program would make exec fail).
    fn lock_ofd(&self, inode: Inode, handle: u64) -> io::Result<LockOfd> {
        let h = self.handles.get(handle, inode)?;
        let token = self.fd_token()?;
        let mode = oslib::get_fl(h.fd())? & libc::O_ACCMODE;
        let fd = oslib::openat(
            self.proc_self_fd.as_fd(),
            &Self::proc_name(h.fd()),
            mode | libc::O_NONBLOCK | libc::O_NOCTTY,
            0,
        )?;
        Ok(LockOfd {
            fd,
            pid: AtomicU32::new(0),
            handles: Mutex::new(HashSet::new()),
            _token: token,
        })
    }

    fn owner_ofd(&self, inode: Inode, req: &LockRequest) -> io::Result<Arc<LockOfd>> {
        // The handle must be one the guest opened on this inode, whether or not the owner has
        // a description already: made-up handles would otherwise pile up in it.
        self.handles.get(req.handle, inode)?;
        let ofd = match self.locks.get(inode, req.owner) {
            Some(o) => o,
            None => {
                // Opened outside the table lock; a concurrent request of the same owner may win
                // the race, and then this description is simply dropped.
                let new = Arc::new(self.lock_ofd(inode, req.handle)?);
                self.locks.get_or_insert(inode, req.owner, new)
            }
        };
        ofd.handles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(req.handle);
        Ok(ofd)
    }

    pub(crate) fn do_getlk(
        &self,
        _ctx: Context,
        inode: Inode,
        req: LockRequest,
    ) -> io::Result<FileLock> {
        if req.flock {
            // The guest kernel answers flock queries itself; nothing sends this.
            return Err(err(libc::EINVAL));
        }
        if !self.cfg.posix_locks {
            return Err(err(libc::ENOSYS));
        }
        let mut fl = to_host(&req.lock)?;
        let ofd = match self.locks.get(inode, req.owner) {
            Some(o) => o,
            None => Arc::new(self.lock_ofd(inode, req.handle)?),
        };
        oslib::ofd_lock(ofd.fd.as_fd(), libc::F_OFD_GETLK, &mut fl)?;
        if fl.l_type == libc::F_UNLCK as libc::c_short {
            return Ok(FileLock {
                lock_type: libc::F_UNLCK as u32,
                ..req.lock
            });
        }
        // OFD locks carry no pid; when exactly one other guest owner holds locks here, the
        // conflict must be theirs.
        let others = self.locks.others(inode, req.owner);
        let pid = match others.as_slice() {
            [one] => one.pid.load(Ordering::Relaxed),
            _ => 0,
        };
        Ok(from_host(&fl, pid))
    }

    pub(crate) fn do_setlk(
        &self,
        _ctx: Context,
        inode: Inode,
        req: LockRequest,
        wait: bool,
    ) -> io::Result<()> {
        if req.flock {
            return self.do_flock(inode, &req, wait);
        }
        if !self.cfg.posix_locks {
            return Err(err(libc::ENOSYS));
        }
        let mut fl = to_host(&req.lock)?;
        if fl.l_type == libc::F_UNLCK as libc::c_short {
            // An owner without a description holds nothing to unlock.
            return match self.locks.get(inode, req.owner) {
                Some(o) => oslib::ofd_lock(o.fd.as_fd(), libc::F_OFD_SETLK, &mut fl),
                None => Ok(()),
            };
        }
        let ofd = self.owner_ofd(inode, &req)?;
        ofd.pid.store(req.lock.pid, Ordering::Relaxed);
        let cmd = if wait {
            libc::F_OFD_SETLKW
        } else {
            libc::F_OFD_SETLK
        };
        oslib::ofd_lock(ofd.fd.as_fd(), cmd, &mut fl)
    }

    fn do_flock(&self, inode: Inode, req: &LockRequest, wait: bool) -> io::Result<()> {
        if !self.cfg.flock {
            return Err(err(libc::ENOSYS));
        }
        let h = self.handles.get(req.handle, inode)?;
        let mut op = match req.lock.lock_type as libc::c_int {
            libc::F_RDLCK => libc::LOCK_SH,
            libc::F_WRLCK => libc::LOCK_EX,
            libc::F_UNLCK => libc::LOCK_UN,
            _ => return Err(err(libc::EINVAL)),
        };
        if !wait {
            op |= libc::LOCK_NB;
        }
        oslib::flock(h.fd(), op)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_convert_both_ways() {
        let l = FileLock {
            start: 10,
            end: 19,
            lock_type: libc::F_WRLCK as u32,
            pid: 7,
        };
        let fl = to_host(&l).unwrap();
        assert_eq!((fl.l_start, fl.l_len), (10, 10));
        assert_eq!(from_host(&fl, 7), l);
        let whole = FileLock {
            start: 0,
            end: u64::MAX,
            lock_type: libc::F_RDLCK as u32,
            pid: 0,
        };
        let fl = to_host(&whole).unwrap();
        assert_eq!(fl.l_len, 0);
        // Back towards the guest, "to the end" is the largest offset: the guest kernel answers
        // EIO to a conflicting lock that ends past it.
        let to_end = FileLock {
            end: i64::MAX as u64,
            ..whole
        };
        assert_eq!(from_host(&fl, 0), to_end);
        assert_eq!(to_host(&to_end).unwrap().l_len, 0);
    }

    #[test]
    fn bad_ranges_and_types_are_einval() {
        let bad = |start, end, t: libc::c_int| {
            to_host(&FileLock {
                start,
                end,
                lock_type: t as u32,
                pid: 0,
            })
            .unwrap_err()
            .raw_os_error()
        };
        assert_eq!(bad(5, 4, libc::F_RDLCK), Some(libc::EINVAL));
        assert_eq!(
            bad(u64::MAX - 1, u64::MAX, libc::F_RDLCK),
            Some(libc::EINVAL)
        );
        assert_eq!(bad(0, 1, 99), Some(libc::EINVAL));
    }
}
