//! Inodes kept as file handles, and the host descriptor budget.

use std::fs;
use std::path::Path;

use virtiofsd_fuse::filesystem::{FileSystem, SetAttr, ROOT_ID};

use crate::config::FileHandleMode;
use crate::tests::{cstr, errno, lookup, read_all, setup_with, TestDir, ROOT};

/// Descriptors of this process that point inside `dir` (immune to other tests' descriptors).
fn fds_under(dir: &Path) -> usize {
    let prefix = dir.to_str().unwrap().to_string();
    fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| fs::read_link(e.ok()?.path()).ok())
        .filter(|t| t.to_str().is_some_and(|s| s.starts_with(&prefix)))
        .count()
}

/// A mount of procfs, whose files have no file handles; detached on drop.
struct ProcMount(std::ffi::CString);

impl ProcMount {
    fn new(at: &Path) -> ProcMount {
        let target = cstr(at.to_str().unwrap());
        // SAFETY: all pointers are valid NUL-terminated strings or null (no mount data).
        let ret = unsafe {
            libc::mount(
                c"proc".as_ptr(),
                target.as_ptr(),
                c"proc".as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        assert_eq!(
            ret,
            0,
            "mounting procfs for the file handle test failed ({}); it needs CAP_SYS_ADMIN",
            std::io::Error::last_os_error()
        );
        ProcMount(target)
    }
}

impl Drop for ProcMount {
    fn drop(&mut self) {
        // SAFETY: `self.0` is a valid NUL-terminated path.
        unsafe { libc::umount2(self.0.as_ptr(), libc::MNT_DETACH) };
    }
}

#[test]
fn mandatory_file_handles_keep_the_fd_count_flat() {
    // A budget of 400 leaves 100 slots for inodes that keep their descriptor as well.
    let (d, fs) = setup_with(|c| {
        c.inode_file_handles = FileHandleMode::Mandatory;
        c.fd_budget = 400;
    });
    for i in 0..2000 {
        fs::write(d.join(&format!("f{i}")), format!("{i}")).unwrap();
    }
    let before = fds_under(&d.0);
    let entries: Vec<_> = (0..2000).map(|i| lookup(&fs, &format!("f{i}"))).collect();
    let after = fds_under(&d.0);
    assert!(
        after <= before + 100 + 1,
        "2000 lookups left {} more descriptors open",
        after - before
    );
    assert_eq!(fs.fds_held(), 100);
    assert_eq!(fs.inode_count(), 2001);
    // Same file looked up again: same inode (dedup by dev, ino, mount).
    assert_eq!(lookup(&fs, "f7").inode, entries[7].inode);
    // Every operation still reaches the file.
    let e = &entries[1234];
    let (h, _) = fs.open(ROOT, e.inode, libc::O_RDWR as u32, false).unwrap();
    assert_eq!(read_all(&fs, e.inode, h.unwrap(), 10, 0), b"1234");
    fs.release(ROOT, e.inode, 0, h.unwrap(), false, None)
        .unwrap();
    let attr = SetAttr {
        mode: Some(0o600),
        ..Default::default()
    };
    assert_eq!(
        fs.setattr(ROOT, e.inode, attr, None).unwrap().0.st_mode & 0o777,
        0o600
    );
    fs.link(ROOT, e.inode, ROOT_ID, c"hard").unwrap();
    assert_eq!(lookup(&fs, "hard").inode, e.inode);
    std::os::unix::fs::symlink("f1", d.join("sl")).unwrap();
    let sl = lookup(&fs, "sl");
    assert_eq!(fs.readlink(ROOT, sl.inode).unwrap(), b"f1");
    let sub = fs.mkdir(ROOT, ROOT_ID, c"sub", 0o755, 0).unwrap();
    fs.mknod(ROOT, sub.inode, c"x", libc::S_IFREG | 0o644, 0, 0)
        .unwrap();
    assert!(d.join("sub/x").exists());
    assert!(!fs.inodes.get(sub.inode).unwrap().holds_fd());
}

#[test]
fn mandatory_fails_and_prefer_falls_back_without_handles() {
    let d = TestDir::new();
    fs::create_dir(d.join("p")).unwrap();
    let _m = ProcMount::new(&d.join("p"));
    for (mode, ok) in [
        (FileHandleMode::Mandatory, false),
        (FileHandleMode::Prefer, true),
    ] {
        let mut cfg = crate::Config::new(&d.0);
        cfg.inode_file_handles = mode;
        let fs = crate::PassthroughFs::new(cfg).unwrap();
        let r = fs.lookup(ROOT, ROOT_ID, c"p");
        match (r, ok) {
            (Ok(e), true) => assert!(fs.inodes.get(e.inode).unwrap().holds_fd()),
            (Err(e), false) => assert_eq!(e.raw_os_error(), Some(libc::EOPNOTSUPP)),
            (r, _) => panic!("{mode:?}: unexpected {:?}", r.map(|e| e.inode)),
        }
    }
}

#[test]
fn fd_budget_answers_enfile_when_spent() {
    let (d, fs) = setup_with(|c| {
        c.fd_budget = 3;
        c.inode_file_handles = FileHandleMode::Never;
    });
    for n in ["a", "b", "c", "d"] {
        fs::write(d.join(n), b"").unwrap();
    }
    let a = lookup(&fs, "a").inode;
    lookup(&fs, "b");
    // Looking up a known inode needs no new descriptor.
    lookup(&fs, "a");
    let (h, _) = fs.open(ROOT, a, libc::O_RDONLY as u32, false).unwrap();
    assert_eq!(fs.fds_held(), 3);
    assert_eq!(errno(fs.lookup(ROOT, ROOT_ID, c"c")), libc::ENFILE);
    assert_eq!(
        errno(fs.open(ROOT, a, libc::O_RDONLY as u32, false)),
        libc::ENFILE
    );
    assert_eq!(errno(fs.opendir(ROOT, ROOT_ID, 0)), libc::ENFILE);
    assert_eq!(
        errno(fs.create(ROOT, ROOT_ID, c"new", 0o644, libc::O_RDWR as u32, 0, false)),
        libc::ENFILE
    );
    // Closing gives the descriptor back.
    fs.release(ROOT, a, 0, h.unwrap(), false, None).unwrap();
    lookup(&fs, "c");
    assert_eq!(errno(fs.lookup(ROOT, ROOT_ID, c"d")), libc::ENFILE);
    fs.forget(ROOT, a, 2);
    lookup(&fs, "d");
    assert_eq!(fs.fds_held(), 3);

    // With file handles, lookups cost nothing and the budget goes to open handles.
    let (d2, fs2) = setup_with(|c| {
        c.fd_budget = 1;
        c.inode_file_handles = FileHandleMode::Mandatory;
    });
    for i in 0..10 {
        fs::write(d2.join(&format!("{i}")), b"").unwrap();
        lookup(&fs2, &format!("{i}"));
    }
    let x = lookup(&fs2, "0").inode;
    fs2.open(ROOT, x, libc::O_RDONLY as u32, false).unwrap();
    assert_eq!(
        errno(fs2.open(ROOT, x, libc::O_RDONLY as u32, false)),
        libc::ENFILE
    );
}

/// Runs in a forked child of `emfile_is_an_error_reply`: it lowers the fd limit, which would
/// disturb the other tests of this process.
fn emfile_scenario() {
    // Descriptor inodes: each lookup holds one more.
    let (d, fs) = setup_with(|c| c.inode_file_handles = FileHandleMode::Never);
    for i in 0..64 {
        fs::write(d.join(&format!("{i}")), b"").unwrap();
    }
    let open_now = fs::read_dir("/proc/self/fd").unwrap().count() as u64;
    let lim = libc::rlimit {
        rlim_cur: open_now + 8,
        rlim_max: open_now + 8,
    };
    // SAFETY: `lim` is a valid rlimit for the call.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0);
    let mut got_emfile = false;
    for i in 0..64 {
        match fs.lookup(ROOT, ROOT_ID, &cstr(&format!("{i}"))) {
            Ok(_) => {}
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(libc::EMFILE));
                got_emfile = true;
                break;
            }
        }
    }
    assert!(got_emfile, "the fd limit was never reached");
    // Still serving: operations that need no new descriptor work.
    fs.getattr(ROOT, ROOT_ID, None).unwrap();
}

#[test]
fn emfile_is_an_error_reply() {
    // SAFETY: the child only runs `emfile_scenario` (which allocates and takes locks of objects it
    // creates itself; the C library's allocator is fork-safe) and leaves with `_exit`.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let ok = std::panic::catch_unwind(emfile_scenario).is_ok();
        // SAFETY: ends the child without running the test harness's exit path.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    let mut status = 0;
    // SAFETY: `status` is valid for writes; `pid` is our child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the EMFILE scenario failed in the child (status {status:#x}); its panic message is above"
    );
}

#[test]
fn a_caller_creates_and_opens_through_inodes_held_as_handles() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    // Not root: its fsuid takes CAP_DAC_READ_SEARCH out of the thread's effective set, so
    // the handles must be opened before the switch.
    let user = virtiofsd_fuse::filesystem::Context {
        uid: 1000,
        gid: 1000,
        ..ROOT
    };
    let (d, fs) = setup_with(|c| c.inode_file_handles = FileHandleMode::Mandatory);
    fs::create_dir(d.join("sub")).unwrap();
    fs::set_permissions(d.join("sub"), fs::Permissions::from_mode(0o777)).unwrap();
    fs::write(d.join("sub/f"), b"x").unwrap();
    fs::set_permissions(d.join("sub/f"), fs::Permissions::from_mode(0o666)).unwrap();
    let sub = lookup(&fs, "sub").inode;
    assert!(!fs.inodes.get(sub).unwrap().holds_fd());
    let made = fs.mkdir(user.clone(), sub, c"made", 0o755, 0).unwrap();
    assert_eq!(made.attr.st_uid, 1000);
    // CREATE of an existing name opens that file, as the caller.
    let f = fs.lookup(ROOT, sub, c"f").unwrap();
    let (e, h, _) = fs
        .create(
            user.clone(),
            sub,
            c"f",
            0o644,
            libc::O_RDWR as u32,
            0,
            false,
        )
        .unwrap();
    assert_eq!(e.inode, f.inode);
    fs.release(user.clone(), e.inode, 0, h.unwrap(), false, None)
        .unwrap();
    // Still the caller's permissions: a root-only file is refused.
    fs::set_permissions(d.join("sub/f"), fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(
        errno(fs.create(user, sub, c"f", 0o644, libc::O_RDWR as u32, 0, false)),
        libc::EACCES
    );
    assert_eq!(fs::metadata(d.join("sub/made")).unwrap().uid(), 1000);
}

#[test]
fn the_first_handle_inodes_keep_their_descriptor_while_slots_last() {
    let (d, fs) = setup_with(|c| {
        c.inode_file_handles = FileHandleMode::Mandatory;
        c.fd_budget = 8;
    });
    for i in 0..4 {
        fs::write(d.join(&format!("f{i}")), format!("{i}")).unwrap();
    }
    let pinned = |e: &virtiofsd_fuse::filesystem::Entry| {
        matches!(
            fs.inodes.get(e.inode).unwrap().file,
            crate::inode::InodeFile::Handle {
                pinned: Some(_),
                ..
            }
        )
    };
    // A budget of 8 leaves 2 slots.
    let entries: Vec<_> = (0..4).map(|i| lookup(&fs, &format!("f{i}"))).collect();
    assert_eq!(
        entries.iter().map(pinned).collect::<Vec<_>>(),
        [true, true, false, false]
    );
    assert_eq!(fs.fds_held(), 2);
    // Pinned or not, requests reach the file.
    for (i, e) in entries.iter().enumerate() {
        let (h, _) = fs
            .open(ROOT, e.inode, libc::O_RDONLY as u32, false)
            .unwrap();
        assert_eq!(
            read_all(&fs, e.inode, h.unwrap(), 10, 0),
            format!("{i}").as_bytes()
        );
        fs.release(ROOT, e.inode, 0, h.unwrap(), false, None)
            .unwrap();
        assert_eq!(fs.getattr(ROOT, e.inode, None).unwrap().0.st_size, 1);
    }
    // A forgotten pinned inode gives its slot back to the next inode looked up.
    fs.forget(ROOT, entries[0].inode, 1);
    assert_eq!(fs.fds_held(), 1);
    fs::write(d.join("g"), b"g").unwrap();
    assert!(pinned(&lookup(&fs, "g")));
    assert_eq!(fs.fds_held(), 2);
}
