//! The open gate against every special file type, made by the guest (MKNOD, SYMLINK) and by
//! the host: no opcode that opens, truncates or syncs may open one. Each call runs on a thread
//! with a deadline, so a regression that blocks on a FIFO fails instead of hanging.

use std::sync::{mpsc, Arc};
use std::time::Duration;

use virtiofsd_fuse::filesystem::{FileLock, FileSystem, LockRequest, SetAttr, ROOT_ID};

use crate::config::FileHandleMode;
use crate::tests::{cstr, errno, lookup, setup_with, ROOT};
use crate::PassthroughFs;

/// Runs `f` with a deadline; a blocked open fails the test instead of hanging it.
fn bounded<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(5))
        .expect("the daemon blocked on a special file")
}

/// /dev/null's numbers: harmless if the gate ever let it through, and then the test says so.
const CHAR_DEV: u64 = 0x0103;

/// Makes `name` of type `kind` in the share, through the guest's MKNOD/SYMLINK or on the host.
fn make(fs: &PassthroughFs, dir: &std::path::Path, kind: &str, by_guest: bool) -> String {
    let name = format!("{kind}-{}", if by_guest { "guest" } else { "host" });
    let path = dir.join(&name);
    let c = cstr(&name);
    let mode = match kind {
        "fifo" => libc::S_IFIFO,
        "chr" => libc::S_IFCHR,
        "blk" => libc::S_IFBLK,
        "sock" => libc::S_IFSOCK,
        _ => 0,
    };
    if kind == "symlink" {
        if by_guest {
            let e = fs.symlink(ROOT, c"/etc/passwd", ROOT_ID, &c).unwrap();
            fs.forget(ROOT, e.inode, 1);
        } else {
            std::os::unix::fs::symlink("/etc/passwd", &path).unwrap();
        }
    } else if by_guest {
        let e = fs
            .mknod(ROOT, ROOT_ID, &c, mode | 0o666, CHAR_DEV as u32, 0)
            .unwrap();
        fs.forget(ROOT, e.inode, 1);
    } else {
        let p = cstr(path.to_str().unwrap());
        // SAFETY: `p` is a valid NUL-terminated path.
        assert_eq!(
            unsafe { libc::mknod(p.as_ptr(), mode | 0o666, CHAR_DEV) },
            0
        );
    }
    name
}

fn expected(kind: &str) -> i32 {
    if kind == "symlink" {
        libc::ELOOP
    } else {
        libc::EBADF
    }
}

fn every_opening_op_refuses(handles: FileHandleMode) {
    let (d, fs) = setup_with(|c| {
        c.inode_file_handles = handles;
        c.xattr = true;
    });
    let fs = Arc::new(fs);
    for kind in ["fifo", "chr", "blk", "sock", "symlink"] {
        for by_guest in [true, false] {
            let name = make(&fs, &d.0, kind, by_guest);
            let ino = lookup(&fs, &name).inode;
            let want = expected(kind);
            let what = format!("{name} ({handles:?})");
            for flags in [libc::O_RDONLY, libc::O_WRONLY, libc::O_RDWR | libc::O_TRUNC] {
                let f = fs.clone();
                let r = bounded(move || f.open(ROOT, ino, flags as u32, false).map(|_| ()));
                assert_eq!(errno(r), want, "OPEN {what} flags {flags:o}");
                let (f, c) = (fs.clone(), cstr(&name));
                let r = bounded(move || {
                    f.create(ROOT, ROOT_ID, &c, 0o644, flags as u32, 0, false)
                        .map(|_| ())
                });
                assert_eq!(errno(r), want, "CREATE {what} flags {flags:o}");
            }
            let f = fs.clone();
            let r = bounded(move || {
                let attr = SetAttr {
                    size: Some(0),
                    ..SetAttr::default()
                };
                f.setattr(ROOT, ino, attr, None).map(|_| ())
            });
            assert_eq!(errno(r), want, "SETATTR(size) {what}");
            // Directory and sync operations must not open it either.
            let f = fs.clone();
            let r = bounded(move || f.opendir(ROOT, ino, 0).map(|_| ()));
            assert_eq!(errno(r), libc::ENOTDIR, "OPENDIR {what}");
            let f = fs.clone();
            bounded(move || f.syncfs(ROOT, ino)).unwrap();
            // Nothing the refusals took is left behind: one lookup reference, no handle.
            assert_eq!(fs.handle_count(), 0, "{what}");
            fs.forget(ROOT, ino, 1);
            let t = std::fs::symlink_metadata(d.join(&name))
                .unwrap()
                .file_type();
            assert!(!t.is_file() && !t.is_dir(), "{what} changed type");
        }
    }
    // Only the root remains, and the budget is back where it started.
    assert_eq!(fs.inode_count(), 1);
    assert_eq!(fs.fds_held(), 0);
}

#[test]
fn every_opening_op_refuses_special_files() {
    every_opening_op_refuses(FileHandleMode::Never);
}

#[test]
fn every_opening_op_refuses_special_files_with_file_handles() {
    every_opening_op_refuses(FileHandleMode::Mandatory);
}

#[test]
fn create_on_an_existing_directory_is_eisdir_and_takes_nothing() {
    let (d, fs) = setup_with(|_| {});
    std::fs::create_dir(d.join("dir")).unwrap();
    for flags in [libc::O_RDONLY, libc::O_RDWR] {
        let r = fs.create(ROOT, ROOT_ID, c"dir", 0o644, flags as u32, 0, false);
        assert_eq!(errno(r), libc::EISDIR);
    }
    assert_eq!(fs.inode_count(), 1);
    assert_eq!(fs.fds_held(), 0);
}

#[test]
fn locks_need_a_handle_the_guest_opened() {
    let (_d, fs) = setup_with(|_| {});
    let (e, h, _) = fs
        .create(ROOT, ROOT_ID, c"f", 0o644, libc::O_RDWR as u32, 0, false)
        .unwrap();
    let h = h.unwrap();
    let req = |handle| LockRequest {
        handle,
        owner: 7,
        lock: FileLock {
            start: 0,
            end: 0,
            lock_type: libc::F_RDLCK as u32,
            pid: 1,
        },
        flock: false,
    };
    fs.setlk(ROOT, e.inode, req(h), false).unwrap();
    // The owner has a description now; made-up handles are still refused, and take nothing.
    let before = fs.fds_held();
    for made_up in [0, h + 1, h + 1000, u64::MAX] {
        assert_eq!(
            errno(fs.setlk(ROOT, e.inode, req(made_up), false)),
            libc::EBADF
        );
    }
    assert_eq!(fs.fds_held(), before);
    fs.release(ROOT, e.inode, 0, h, false, None).unwrap();
    assert_eq!(fs.locks.len(), 0);
}
