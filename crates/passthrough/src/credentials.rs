//! Running one filesystem operation as the guest caller, on the calling thread only.
//!
//! `setfsuid`/`setfsgid` are per-thread at the syscall level (the C library's `setuid` family
//! would broadcast to every thread), so other queues keep running as the daemon meanwhile. The
//! caller's supplementary group is applied the same way, with the raw `setgroups` syscall.

use std::io;

use virtiofsd_fuse::filesystem::{Context, FORBIDDEN_ID};

use crate::oslib;

/// Switches the calling thread's fsuid/fsgid; switching back happens on drop.
#[derive(Debug)]
pub struct ScopedCreds {
    /// False when the caller's ids were already the thread's, so nothing is restored.
    switched: bool,
    old_uid: u32,
    old_gid: u32,
    /// The thread's supplementary groups before the switch, when they were replaced.
    old_groups: Option<Vec<libc::gid_t>>,
}

impl ScopedCreds {
    /// Becomes `uid`/`gid` for filesystem checks and ownership of new files. Fails with `EPERM`
    /// when the kernel refuses (the daemon lacks `CAP_SETUID`/`CAP_SETGID`).
    pub fn new(uid: u32, gid: u32) -> io::Result<Self> {
        // Most requests come from the guest's root, which is the daemon's own identity: skip the
        // switch, since every set*id call makes the kernel allocate and install new credentials.
        // SAFETY: geteuid and getegid have no preconditions and cannot fail.
        if uid == unsafe { libc::geteuid() } && gid == unsafe { libc::getegid() } {
            return Ok(ScopedCreds {
                switched: false,
                old_uid: uid,
                old_gid: gid,
                old_groups: None,
            });
        }
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
        Ok(ScopedCreds {
            switched: true,
            old_uid,
            old_gid,
            old_groups: None,
        })
    }

    /// Becomes the caller of `ctx`, including the supplementary group the guest kernel sent
    /// (which decides whether the caller may create in a directory of that group).
    ///
    /// An id the translation rules forbid ([`FORBIDDEN_ID`]) is refused with `EPERM` before
    /// anything is switched: `(uid_t)-1` is no id at all (`setfsuid(-1)` only reports the
    /// current one), so nothing may be done as it, and the guest must learn it was refused.
    pub fn for_ctx(ctx: &Context) -> io::Result<Self> {
        if is_forbidden(ctx) {
            return Err(io::Error::from_raw_os_error(libc::EPERM));
        }
        // Anyone but root gets exactly the group the guest sent, never the daemon's own
        // supplementary groups, which would grant access the guest caller does not have.
        let groups: Vec<libc::gid_t> = ctx.supplementary_gid.into_iter().collect();
        let old_groups = if ctx.uid != 0 || !groups.is_empty() {
            let old = oslib::getgroups()?;
            oslib::setgroups_thread(&groups)?;
            Some(old)
        } else {
            None
        };
        match ScopedCreds::new(ctx.uid, ctx.gid) {
            Ok(mut c) => {
                c.old_groups = old_groups;
                Ok(c)
            }
            Err(e) => {
                if let Some(old) = old_groups {
                    let _ = oslib::setgroups_thread(&old);
                }
                Err(e)
            }
        }
    }
}

/// Whether `ctx` carries an id the guest may not act as.
fn is_forbidden(ctx: &Context) -> bool {
    ctx.uid == FORBIDDEN_ID
        || ctx.gid == FORBIDDEN_ID
        || ctx.supplementary_gid == Some(FORBIDDEN_ID)
}

impl Drop for ScopedCreds {
    fn drop(&mut self) {
        // Reverse order: the uid must be privileged again before the gid can be restored.
        if self.switched {
            oslib::setfsuid(self.old_uid);
            oslib::setfsgid(self.old_gid);
        }
        if let Some(old) = self.old_groups.take() {
            if let Err(e) = oslib::setgroups_thread(&old) {
                // The thread would keep serving with the guest's group: not survivable.
                panic!("cannot restore supplementary groups: {e}");
            }
        }
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

    #[test]
    fn supplementary_group_is_per_thread_and_restored() {
        let before = oslib::getgroups().unwrap();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let other = std::thread::spawn(move || {
            go_rx.recv().unwrap();
            oslib::getgroups().unwrap()
        });
        let ctx = Context {
            uid: 1000,
            gid: 1000,
            pid: 1,
            supplementary_gid: Some(4242),
            ..Context::default()
        };
        {
            let _g = ScopedCreds::for_ctx(&ctx).unwrap();
            assert_eq!(oslib::getgroups().unwrap(), vec![4242]);
            go_tx.send(()).unwrap();
            assert_eq!(other.join().unwrap(), before);
        }
        assert_eq!(oslib::getgroups().unwrap(), before);
    }

    #[test]
    fn forbidden_ids_are_refused_before_switching() {
        let (uid0, gid0) = (oslib::current_fsuid(), oslib::current_fsgid());
        let groups0 = oslib::getgroups().unwrap();
        let user = Context {
            uid: 1000,
            gid: 1000,
            pid: 1,
            supplementary_gid: Some(4242),
            ..Context::default()
        };
        for ctx in [
            Context {
                uid: FORBIDDEN_ID,
                ..user.clone()
            },
            Context {
                gid: FORBIDDEN_ID,
                ..user.clone()
            },
            Context {
                supplementary_gid: Some(FORBIDDEN_ID),
                ..user.clone()
            },
        ] {
            let e = ScopedCreds::for_ctx(&ctx).unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::EPERM));
            // Nothing was switched, not even for a moment that would need restoring.
            assert_eq!(
                (oslib::current_fsuid(), oslib::current_fsgid()),
                (uid0, gid0)
            );
            assert_eq!(oslib::getgroups().unwrap(), groups0);
        }
        drop(ScopedCreds::for_ctx(&user).unwrap());
    }
}
