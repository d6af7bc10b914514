//! POSIX record locks and flocks through `PassthroughFs`.

use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use virtiofsd_fuse::filesystem::{FileLock, FileSystem, LockRequest, ROOT_ID};

use crate::tests::{errno, lookup, setup, setup_with, ROOT};
use crate::PassthroughFs;

fn lock(start: u64, end: u64, t: libc::c_int, pid: u32) -> FileLock {
    FileLock {
        start,
        end,
        lock_type: t as u32,
        pid,
    }
}

fn req(handle: u64, owner: u64, l: FileLock) -> LockRequest {
    LockRequest {
        handle,
        owner,
        lock: l,
        flock: false,
    }
}

/// A file "f" and two read-write handles on it.
fn two_handles(fs: &PassthroughFs) -> (u64, u64, u64) {
    let (e, h1, _) = fs
        .create(ROOT, ROOT_ID, c"f", 0o644, libc::O_RDWR as u32, 0, false)
        .unwrap();
    let (h2, _) = fs.open(ROOT, e.inode, libc::O_RDWR as u32, false).unwrap();
    (e.inode, h1.unwrap(), h2.unwrap())
}

#[test]
fn owners_conflict_and_one_owner_merges() {
    let (_d, fs) = setup();
    let (ino, h1, h2) = two_handles(&fs);
    fs.setlk(ROOT, ino, req(h1, 1, lock(0, 99, libc::F_WRLCK, 10)), false)
        .unwrap();
    // Another owner, even through the same handle, conflicts.
    assert_eq!(
        errno(fs.setlk(
            ROOT,
            ino,
            req(h1, 2, lock(50, 60, libc::F_RDLCK, 20)),
            false
        )),
        libc::EAGAIN
    );
    // GETLK names the conflicting lock and its guest pid.
    let got = fs
        .getlk(ROOT, ino, req(h2, 2, lock(50, 60, libc::F_RDLCK, 20)))
        .unwrap();
    assert_eq!(got, lock(0, 99, libc::F_WRLCK, 10));
    // The owner itself sees no conflict with its own locks, and can re-lock (merge/split).
    let own = fs
        .getlk(ROOT, ino, req(h2, 1, lock(0, 10, libc::F_WRLCK, 10)))
        .unwrap();
    assert_eq!(own.lock_type, libc::F_UNLCK as u32);
    fs.setlk(
        ROOT,
        ino,
        req(h2, 1, lock(100, 199, libc::F_WRLCK, 10)),
        false,
    )
    .unwrap();
    // Unlocking the middle of owner 1's range frees just that part.
    fs.setlk(
        ROOT,
        ino,
        req(h1, 1, lock(40, 149, libc::F_UNLCK, 10)),
        false,
    )
    .unwrap();
    fs.setlk(
        ROOT,
        ino,
        req(h2, 2, lock(50, 60, libc::F_WRLCK, 20)),
        false,
    )
    .unwrap();
    assert_eq!(
        errno(fs.setlk(
            ROOT,
            ino,
            req(h2, 2, lock(150, 150, libc::F_RDLCK, 20)),
            false
        )),
        libc::EAGAIN
    );
    // Both owners lock disjoint ranges; readers share.
    fs.setlk(
        ROOT,
        ino,
        req(h1, 3, lock(55, 55, libc::F_RDLCK, 30)),
        false,
    )
    .unwrap_err();
    fs.setlk(
        ROOT,
        ino,
        req(h1, 3, lock(300, 400, libc::F_RDLCK, 30)),
        false,
    )
    .unwrap();
    fs.setlk(
        ROOT,
        ino,
        req(h1, 2, lock(300, 400, libc::F_RDLCK, 20)),
        false,
    )
    .unwrap();
}

#[test]
fn flush_and_release_drop_an_owners_locks() {
    // Descriptor inodes, so that the count below includes the inode's.
    let (_d, fs) = setup_with(|c| c.inode_file_handles = crate::FileHandleMode::Never);
    let (ino, h1, h2) = two_handles(&fs);
    fs.setlk(
        ROOT,
        ino,
        req(h1, 1, lock(0, u64::MAX, libc::F_WRLCK, 1)),
        false,
    )
    .unwrap();
    assert_eq!(fs.locks.len(), 1);
    let other = req(h2, 2, lock(0, 0, libc::F_WRLCK, 2));
    assert_eq!(errno(fs.setlk(ROOT, ino, other, false)), libc::EAGAIN);
    // Flushing for an unrelated owner keeps owner 1's lock.
    fs.flush(ROOT, ino, h2, 99).unwrap();
    assert_eq!(errno(fs.setlk(ROOT, ino, other, false)), libc::EAGAIN);
    fs.flush(ROOT, ino, h1, 1).unwrap();
    fs.setlk(ROOT, ino, other, false).unwrap();
    // RELEASE with FUSE_RELEASE_FLOCK_UNLOCK's owner drops that owner's locks too.
    fs.release(ROOT, ino, 0, h2, false, Some(2)).unwrap();
    assert_eq!(fs.locks.len(), 0);
    fs.setlk(ROOT, ino, req(h1, 1, lock(0, 0, libc::F_WRLCK, 1)), false)
        .unwrap();
    // Locks hold host descriptors, counted in the budget: handle h1 + inode fd + 1 OFD.
    assert_eq!(fs.fds_held(), 3);
}

#[test]
fn setlkw_blocks_without_blocking_other_requests() {
    let (_d, fs) = setup();
    let fs = Arc::new(fs);
    let (ino, h1, h2) = two_handles(&fs);
    fs.setlk(ROOT, ino, req(h1, 1, lock(0, 9, libc::F_WRLCK, 1)), false)
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let fs2 = fs.clone();
    let waiter = std::thread::spawn(move || {
        let r = fs2.setlk(ROOT, ino, req(h2, 2, lock(5, 5, libc::F_WRLCK, 2)), true);
        tx.send(r.map_err(|e| e.raw_os_error())).unwrap();
    });
    assert!(
        rx.recv_timeout(Duration::from_millis(300)).is_err(),
        "SETLKW returned while the lock was held"
    );
    // Meanwhile every table is usable: lookups, opens, other lock requests, releases.
    lookup(&fs, "f");
    let (h3, _) = fs.open(ROOT, ino, libc::O_RDONLY as u32, false).unwrap();
    fs.setlk(
        ROOT,
        ino,
        req(h3.unwrap(), 3, lock(20, 30, libc::F_RDLCK, 3)),
        false,
    )
    .unwrap();
    fs.release(ROOT, ino, 0, h3.unwrap(), false, Some(3))
        .unwrap();
    fs.getlk(ROOT, ino, req(h1, 4, lock(0, 0, libc::F_RDLCK, 4)))
        .unwrap();
    // Unlocking wakes the waiter.
    fs.setlk(ROOT, ino, req(h1, 1, lock(0, 9, libc::F_UNLCK, 1)), false)
        .unwrap();
    assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), Ok(()));
    waiter.join().unwrap();
    assert_eq!(
        errno(fs.setlk(ROOT, ino, req(h1, 1, lock(5, 5, libc::F_RDLCK, 1)), false)),
        libc::EAGAIN
    );
}

#[test]
fn flock_is_per_handle() {
    let (_d, fs) = setup();
    let (ino, h1, h2) = two_handles(&fs);
    let fl = |h, t| LockRequest {
        handle: h,
        owner: h,
        lock: lock(0, u64::MAX, t, 1),
        flock: true,
    };
    fs.setlk(ROOT, ino, fl(h1, libc::F_WRLCK), false).unwrap();
    assert_eq!(
        errno(fs.setlk(ROOT, ino, fl(h2, libc::F_RDLCK), false)),
        libc::EWOULDBLOCK
    );
    // The same handle converts its own lock.
    fs.setlk(ROOT, ino, fl(h1, libc::F_RDLCK), false).unwrap();
    fs.setlk(ROOT, ino, fl(h2, libc::F_RDLCK), false).unwrap();
    fs.setlk(ROOT, ino, fl(h2, libc::F_UNLCK), false).unwrap();
    // Closing the holder's handle frees the lock.
    fs.release(ROOT, ino, 0, h1, false, Some(h1)).unwrap();
    fs.setlk(ROOT, ino, fl(h2, libc::F_WRLCK), false).unwrap();
    assert_eq!(errno(fs.setlk(ROOT, ino, fl(h2, 77), false)), libc::EINVAL);
}

#[test]
fn disabled_lock_kinds_answer_enosys() {
    let (_d, fs) = setup_with(|c| {
        c.posix_locks = false;
        c.flock = false;
    });
    let (ino, h1, _h2) = two_handles(&fs);
    let r = req(h1, 1, lock(0, 0, libc::F_WRLCK, 1));
    assert_eq!(errno(fs.setlk(ROOT, ino, r, false)), libc::ENOSYS);
    assert_eq!(errno(fs.getlk(ROOT, ino, r)), libc::ENOSYS);
    let f = LockRequest { flock: true, ..r };
    assert_eq!(errno(fs.setlk(ROOT, ino, f, false)), libc::ENOSYS);
}

#[test]
fn lock_requests_on_bad_handles_or_ranges_are_errors() {
    let (_d, fs) = setup();
    let (ino, h1, _h2) = two_handles(&fs);
    assert_eq!(
        errno(fs.setlk(ROOT, ino, req(9999, 1, lock(0, 0, libc::F_WRLCK, 1)), false)),
        libc::EBADF
    );
    assert_eq!(
        errno(fs.setlk(ROOT, ino, req(h1, 1, lock(9, 0, libc::F_WRLCK, 1)), false)),
        libc::EINVAL
    );
}

#[test]
fn release_of_the_handle_drops_locks_taken_through_it() {
    // A guest OFD lock's owner is its open file; its last close sends RELEASE without a lock
    // owner, and the lock must go with it.
    let (_d, fs) = setup();
    let (ino, h1, h2) = two_handles(&fs);
    fs.setlk(
        ROOT,
        ino,
        req(h1, 7, lock(0, u64::MAX, libc::F_WRLCK, 10)),
        false,
    )
    .unwrap();
    assert_eq!(
        errno(fs.setlk(ROOT, ino, req(h2, 8, lock(0, 0, libc::F_WRLCK, 20)), false)),
        libc::EAGAIN
    );
    fs.release(ROOT, ino, 0, h1, false, None).unwrap();
    fs.setlk(ROOT, ino, req(h2, 8, lock(0, 0, libc::F_WRLCK, 20)), false)
        .unwrap();
    // Owner 8 locked through h2 only: releasing another handle leaves its lock alone.
    let (h3, _) = fs.open(ROOT, ino, libc::O_RDWR as u32, false).unwrap();
    let h3 = h3.unwrap();
    fs.release(ROOT, ino, 0, h3, false, None).unwrap();
    let (h4, _) = fs.open(ROOT, ino, libc::O_RDWR as u32, false).unwrap();
    assert_eq!(
        errno(fs.setlk(
            ROOT,
            ino,
            req(h4.unwrap(), 9, lock(0, 0, libc::F_WRLCK, 30)),
            false
        )),
        libc::EAGAIN
    );
}
