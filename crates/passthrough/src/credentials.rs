//! Running one filesystem operation as the guest caller, on the calling thread only.
//!
//! `setfsuid`/`setfsgid` are per-thread at the syscall level (the C library's `setuid` family
//! would broadcast to every thread), so other queues keep running as the daemon meanwhile.

use std::io;

use crate::oslib;

/// Switches the calling thread's fsuid/fsgid; switching back happens on drop.
#[derive(Debug)]
pub struct ScopedCreds {
    old_uid: u32,
    old_gid: u32,
}

impl ScopedCreds {
    /// Becomes `uid`/`gid` for filesystem checks and ownership of new files. Fails with `EPERM`
    /// when the kernel refuses (the daemon lacks `CAP_SETUID`/`CAP_SETGID`).
    pub fn new(uid: u32, gid: u32) -> io::Result<Self> {
        // The group goes first: once the uid is unprivileged, changing the gid may be refused.
        let old_gid = oslib::setfsgid(gid);
        if oslib::current_fsgid() != gid {
            oslib::setfsgid(old_gid);
            return Err(io::Error::from_raw_os_error(libc::EPERM));
        }
        let old_uid = oslib::setfsuid(uid);
        if oslib::current_fsuid() != uid {
            oslib::setfsuid(old_uid);
            oslib::setfsgid(old_gid);
            return Err(io::Error::from_raw_os_error(libc::EPERM));
        }
        Ok(ScopedCreds { old_uid, old_gid })
    }
}

impl Drop for ScopedCreds {
    fn drop(&mut self) {
        // Reverse order: the uid must be privileged again before the gid can be restored.
        oslib::setfsuid(self.old_uid);
        oslib::setfsgid(self.old_gid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switches_and_restores_this_thread_only() {
        let (uid0, gid0) = (oslib::current_fsuid(), oslib::current_fsgid());
        assert_eq!(
            uid0, 0,
            "this test needs to run as root (it checks fsuid switching)"
        );
        // The other thread must exist before the switch: new threads inherit credentials.
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let other = std::thread::spawn(move || {
            go_rx.recv().unwrap();
            (oslib::current_fsuid(), oslib::current_fsgid())
        });
        {
            let _g = ScopedCreds::new(1234, 4321).unwrap();
            assert_eq!(oslib::current_fsuid(), 1234);
            assert_eq!(oslib::current_fsgid(), 4321);
            go_tx.send(()).unwrap();
            assert_eq!(other.join().unwrap(), (uid0, gid0));
        }
        assert_eq!(
            (oslib::current_fsuid(), oslib::current_fsgid()),
            (uid0, gid0)
        );
    }
}
