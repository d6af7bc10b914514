//! The host descriptor budget: how many fds the guest can make the daemon hold.
//!
//! Every descriptor held on the guest's behalf (open handles, `O_PATH` inode descriptors, lock
//! descriptions) carries an [`FdToken`]; when none is left the operation answers `ENFILE`, so a
//! guest that opens without closing exhausts its own allowance instead of the daemon's fd table.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

#[derive(Debug)]
pub struct FdBudget {
    limit: usize,
    used: AtomicUsize,
}

/// One descriptor's worth of budget; given back on drop.
#[derive(Debug)]
pub struct FdToken(Arc<FdBudget>);

impl FdBudget {
    pub fn new(limit: usize) -> Arc<FdBudget> {
        Arc::new(FdBudget {
            limit,
            used: AtomicUsize::new(0),
        })
    }

    /// Takes one descriptor's worth, or fails with `ENFILE` when the budget is spent.
    pub fn acquire(self: &Arc<Self>) -> io::Result<FdToken> {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.limit).then_some(n + 1)
            })
            .map_err(|_| io::Error::from_raw_os_error(libc::ENFILE))?;
        Ok(FdToken(self.clone()))
    }

    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    pub fn limit(&self) -> usize {
        self.limit
    }
}

impl Drop for FdToken {
    fn drop(&mut self) {
        self.0.used.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exhausts_with_enfile_and_refills_on_drop() {
        let b = FdBudget::new(2);
        let t1 = b.acquire().unwrap();
        let _t2 = b.acquire().unwrap();
        assert_eq!(b.acquire().unwrap_err().raw_os_error(), Some(libc::ENFILE));
        assert_eq!(b.used(), 2);
        drop(t1);
        assert_eq!(b.used(), 1);
        b.acquire().unwrap();
    }
}
