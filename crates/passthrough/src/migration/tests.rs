//! Save on one `PassthroughFs`, load into a fresh one over the same directory (run as root).

use std::fs;
use std::io;
use std::os::unix::fs::symlink;

use virtiofsd_fuse::filesystem::{DirEntry, Entry, FileLock, FileSystem, LockRequest, ROOT_ID};

use super::format::{self, HandleRecord, InodeRecord, Location, LockKind, State};
use crate::tests::{cstr, errno, read_all, setup_with, write_all, TestDir, ROOT};
use crate::{Config, MigrationMode, MigrationOnError, PassthroughFs};

type Mutation = Box<dyn Fn(&mut State)>;

fn lookup(fs: &PassthroughFs, parent: u64, name: &str) -> Entry {
    fs.lookup(ROOT, parent, &cstr(name)).unwrap()
}

fn open(fs: &PassthroughFs, inode: u64, flags: i32) -> u64 {
    fs.open(ROOT, inode, flags as u32, false)
        .unwrap()
        .0
        .unwrap()
}

fn destination(dir: &TestDir, f: impl FnOnce(&mut Config)) -> PassthroughFs {
    let mut cfg = Config::new(&dir.0);
    f(&mut cfg);
    PassthroughFs::new(cfg).unwrap()
}

fn migrate(src: &PassthroughFs, dst: &PassthroughFs) -> io::Result<()> {
    let state = src.save_state()?;
    dst.load_state(src.session_flags(), &state)
}

fn names(fs: &PassthroughFs, inode: u64, handle: u64) -> Vec<String> {
    let mut out = Vec::new();
    fs.readdir(ROOT, inode, handle, 4096, 0, &mut |e: DirEntry<'_>| {
        out.push(String::from_utf8_lossy(e.name).into_owned());
        Ok(1)
    })
    .unwrap();
    out.sort();
    out
}

fn size(fs: &PassthroughFs, inode: u64) -> i64 {
    fs.getattr(ROOT, inode, None).unwrap().0.st_size
}

#[test]
fn inodes_and_handles_go_on_under_the_same_ids() {
    let (dir, src) = setup_with(|_| {});
    fs::write(dir.join("a"), b"hello").unwrap();
    fs::write(dir.join("log"), b"12345").unwrap();
    fs::create_dir(dir.join("d")).unwrap();
    fs::write(dir.join("d/f"), b"inner").unwrap();
    symlink("a", dir.join("ln")).unwrap();

    let a = lookup(&src, ROOT_ID, "a");
    lookup(&src, ROOT_ID, "a");
    let log = lookup(&src, ROOT_ID, "log");
    let d = lookup(&src, ROOT_ID, "d");
    let f = lookup(&src, d.inode, "f");
    let ln = lookup(&src, ROOT_ID, "ln");
    let ha = open(&src, a.inode, libc::O_RDWR);
    let hlog = open(&src, log.inode, libc::O_WRONLY | libc::O_APPEND);
    let (hd, _) = src.opendir(ROOT, d.inode, 0).unwrap();
    let hd = hd.unwrap();

    let dst = destination(&dir, |_| {});
    migrate(&src, &dst).unwrap();
    assert_eq!(dst.inode_count(), src.inode_count());
    assert_eq!(dst.handle_count(), 3);

    // The guest's ids work on the destination.
    assert_eq!(read_all(&dst, a.inode, ha, 100, 0), b"hello");
    write_all(&dst, a.inode, ha, b"J", 0, false);
    assert_eq!(fs::read(dir.join("a")).unwrap(), b"Jello");
    // O_APPEND travelled with the handle: the offset the guest sends does not matter.
    write_all(&dst, log.inode, hlog, b"6", 0, false);
    assert_eq!(fs::read(dir.join("log")).unwrap(), b"123456");
    assert_eq!(names(&dst, d.inode, hd), [".", "..", "f"]);
    assert_eq!(size(&dst, f.inode), 5);
    assert_eq!(dst.readlink(ROOT, ln.inode).unwrap(), b"a");
    // Handles belong to their inode there too.
    assert_eq!(errno(dst.getattr(ROOT, f.inode, Some(ha))), libc::EBADF);

    // A new lookup finds the restored inode, and lookup counts carried over.
    assert_eq!(lookup(&dst, ROOT_ID, "a").inode, a.inode);
    dst.forget(ROOT, a.inode, 2);
    assert!(dst.getattr(ROOT, a.inode, None).is_ok());
    dst.forget(ROOT, a.inode, 1);
    assert_eq!(errno(dst.getattr(ROOT, a.inode, None)), libc::EBADF);
    // New ids never collide with the source's.
    let g = {
        fs::write(dir.join("g"), b"").unwrap();
        lookup(&dst, ROOT_ID, "g")
    };
    assert!(g.inode > ln.inode);
    let hg = open(&dst, g.inode, libc::O_RDONLY);
    assert!(hg > hd);
    dst.release(ROOT, a.inode, 0, ha, false, None).unwrap_or(());
    dst.release(ROOT, log.inode, 0, hlog, false, None).unwrap();
    dst.releasedir(ROOT, d.inode, 0, hd).unwrap();
}

#[test]
fn session_flags_carry_over_and_must_fit_the_destination() {
    let (dir, src) = setup_with(|c| c.writeback = true);
    fs::write(dir.join("w"), b"").unwrap();
    lookup(&src, ROOT_ID, "w");
    let state = src.save_state().unwrap();
    let decoded = format::decode(&state).unwrap();
    assert_ne!(
        decoded.session_flags & crate::consts::FUSE_WRITEBACK_CACHE,
        0
    );
    // A destination without writeback cannot serve a writeback session.
    let dst = destination(&dir, |_| {});
    assert!(dst.load_state(src.session_flags(), &state).is_err());
    assert_eq!(dst.inode_count(), 1);
    let dst = destination(&dir, |c| c.writeback = true);
    dst.load_state(src.session_flags(), &state).unwrap();
    assert_eq!(dst.session_flags(), src.session_flags());
    // Only a fresh filesystem takes a state.
    let err = dst.load_state(src.session_flags(), &state).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ResourceBusy);
}

#[test]
fn renamed_on_the_host_is_found_under_its_new_path() {
    let (dir, src) = setup_with(|_| {});
    fs::write(dir.join("old"), b"data").unwrap();
    fs::create_dir(dir.join("sub")).unwrap();
    let e = lookup(&src, ROOT_ID, "old");
    let h = open(&src, e.inode, libc::O_RDONLY);
    fs::rename(dir.join("old"), dir.join("sub/new")).unwrap();
    let state = src.save_state().unwrap();
    let decoded = format::decode(&state).unwrap();
    let rec = decoded.inodes.iter().find(|i| i.id == e.inode).unwrap();
    assert_eq!(rec.location, Location::Path(b"sub/new".to_vec()));
    let dst = destination(&dir, |_| {});
    dst.load_state(src.session_flags(), &state).unwrap();
    assert_eq!(read_all(&dst, e.inode, h, 10, 0), b"data");
}

#[test]
fn unlinked_while_open_is_an_error_for_that_inode() {
    let (dir, src) = setup_with(|_| {});
    fs::write(dir.join("gone"), b"x").unwrap();
    fs::write(dir.join("kept"), b"y").unwrap();
    let gone = lookup(&src, ROOT_ID, "gone");
    let kept = lookup(&src, ROOT_ID, "kept");
    let hg = open(&src, gone.inode, libc::O_RDONLY);
    let hk = open(&src, kept.inode, libc::O_RDONLY);
    fs::remove_file(dir.join("gone")).unwrap();
    let state = src.save_state().unwrap();
    let decoded = format::decode(&state).unwrap();
    let rec = decoded.inodes.iter().find(|i| i.id == gone.inode).unwrap();
    assert!(matches!(rec.location, Location::Invalid(_)), "{rec:?}");

    // abort: the whole load fails and nothing is restored.
    let dst = destination(&dir, |_| {});
    assert!(dst.load_state(src.session_flags(), &state).is_err());
    assert_eq!((dst.inode_count(), dst.handle_count()), (1, 0));

    // guest-error: that inode and its handle answer EIO, the rest is served.
    let dst = destination(&dir, |c| {
        c.migration_on_error = MigrationOnError::GuestError
    });
    dst.load_state(src.session_flags(), &state).unwrap();
    assert_eq!(errno(dst.getattr(ROOT, gone.inode, None)), libc::EIO);
    assert_eq!(errno(dst.open(ROOT, gone.inode, 0, false)), libc::EIO);
    let mut w = crate::tests::VecWriter::default();
    assert_eq!(
        errno(dst.read(ROOT, gone.inode, hg, &mut w, 1, 0, 0)),
        libc::EIO
    );
    assert_eq!(read_all(&dst, kept.inode, hk, 10, 0), b"y");
    // The guest can still release and forget the broken ones.
    dst.release(ROOT, gone.inode, 0, hg, false, None).unwrap();
    dst.forget(ROOT, gone.inode, 1);
    assert_eq!(errno(dst.getattr(ROOT, gone.inode, None)), libc::EBADF);
}

#[test]
fn file_handles_mode_survives_an_unlink() {
    let (dir, src) = setup_with(|c| c.migration_mode = MigrationMode::FileHandles);
    fs::create_dir(dir.join("d")).unwrap();
    fs::write(dir.join("d/f"), b"handle").unwrap();
    let d = lookup(&src, ROOT_ID, "d");
    let f = lookup(&src, d.inode, "f");
    let h = open(&src, f.inode, libc::O_RDONLY);
    fs::remove_file(dir.join("d/f")).unwrap();
    let state = src.save_state().unwrap();
    let decoded = format::decode(&state).unwrap();
    assert!(decoded
        .inodes
        .iter()
        .all(|i| matches!(i.location, Location::Root | Location::Handle { .. })));
    let dst = destination(&dir, |c| c.migration_mode = MigrationMode::FileHandles);
    dst.load_state(src.session_flags(), &state).unwrap();
    assert_eq!(read_all(&dst, f.inode, h, 10, 0), b"handle");
    assert!(dst.getattr(ROOT, d.inode, None).is_ok());
}

#[test]
fn a_file_handles_state_needs_a_destination_that_opens_handles() {
    let (dir, src) = setup_with(|c| c.migration_mode = MigrationMode::FileHandles);
    fs::write(dir.join("f"), b"abc").unwrap();
    lookup(&src, ROOT_ID, "f");
    let state = src.save_state().unwrap();
    // A find-paths destination that holds no handles has neither the capability nor (under
    // seccomp) the system call.
    let dst = destination(&dir, |c| {
        c.migration_mode = MigrationMode::FindPaths;
        c.inode_file_handles = crate::FileHandleMode::Never;
    });
    let e = dst.load_state(src.session_flags(), &state).unwrap_err();
    assert!(
        e.to_string().contains("--migration-mode=file-handles"),
        "{e}"
    );
    assert_eq!(dst.inodes.len(), 1);
}

#[test]
fn file_handles_mode_restores_into_inode_file_handles() {
    let (dir, src) = setup_with(|c| c.migration_mode = MigrationMode::FileHandles);
    fs::write(dir.join("f"), b"abc").unwrap();
    let f = lookup(&src, ROOT_ID, "f");
    let dst = destination(&dir, |c| {
        c.inode_file_handles = crate::FileHandleMode::Mandatory;
    });
    migrate(&src, &dst).unwrap();
    assert_eq!(size(&dst, f.inode), 3);
    assert!(!dst.inodes.get(f.inode).unwrap().holds_fd());
}

#[test]
fn verify_handles_catches_a_replaced_file() {
    let (dir, src) = setup_with(|c| c.migration_verify_handles = true);
    fs::write(dir.join("f"), b"original").unwrap();
    let f = lookup(&src, ROOT_ID, "f");
    let state = src.save_state().unwrap();
    let decoded = format::decode(&state).unwrap();
    assert!(decoded.inodes.iter().all(|i| i.verify.is_some()));
    // Replaced between the save and the load: same path, another inode.
    fs::rename(dir.join("f"), dir.join("f.old")).unwrap();
    fs::write(dir.join("f"), b"impostor").unwrap();

    let dst = destination(&dir, |_| {});
    assert!(dst.load_state(src.session_flags(), &state).is_err());
    let dst = destination(&dir, |c| {
        c.migration_on_error = MigrationOnError::GuestError
    });
    dst.load_state(src.session_flags(), &state).unwrap();
    assert_eq!(errno(dst.getattr(ROOT, f.inode, None)), libc::EIO);

    // Without the handles the destination cannot tell.
    let (dir2, src2) = setup_with(|_| {});
    fs::write(dir2.join("f"), b"original").unwrap();
    let f2 = lookup(&src2, ROOT_ID, "f");
    let state = src2.save_state().unwrap();
    fs::rename(dir2.join("f"), dir2.join("f.old")).unwrap();
    fs::write(dir2.join("f"), b"impostor!").unwrap();
    let dst = destination(&dir2, |_| {});
    dst.load_state(src2.session_flags(), &state).unwrap();
    assert_eq!(size(&dst, f2.inode), 9);
}

#[test]
fn confirm_paths_accepts_true_paths_and_names_ending_in_deleted() {
    for confirm in [false, true] {
        let (dir, src) = setup_with(|c| c.migration_confirm_paths = confirm);
        fs::write(dir.join("x (deleted)"), b"still here").unwrap();
        fs::create_dir(dir.join("d")).unwrap();
        let x = lookup(&src, ROOT_ID, "x (deleted)");
        let d = lookup(&src, ROOT_ID, "d");
        let state = src.save_state().unwrap();
        let decoded = format::decode(&state).unwrap();
        for id in [x.inode, d.inode] {
            let rec = decoded.inodes.iter().find(|i| i.id == id).unwrap();
            assert!(matches!(rec.location, Location::Path(_)), "{rec:?}");
        }
        let dst = destination(&dir, |_| {});
        dst.load_state(src.session_flags(), &state).unwrap();
        assert_eq!(size(&dst, x.inode), 10);
    }
}

#[test]
fn posix_lock_owners_are_recorded_and_not_restored() {
    let (dir, src) = setup_with(|_| {});
    fs::write(dir.join("l"), b"locked").unwrap();
    let l = lookup(&src, ROOT_ID, "l");
    let h = open(&src, l.inode, libc::O_RDWR);
    let lock = FileLock {
        start: 0,
        end: 5,
        lock_type: libc::F_WRLCK as u32,
        pid: 7,
    };
    let req = LockRequest {
        handle: h,
        owner: 42,
        lock,
        flock: false,
    };
    src.setlk(ROOT, l.inode, req, false).unwrap();
    let hf = open(&src, l.inode, libc::O_RDONLY);
    let flock = LockRequest {
        handle: hf,
        owner: 43,
        lock,
        flock: true,
    };
    src.setlk(ROOT, l.inode, flock, false).unwrap();
    let state = src.save_state().unwrap();
    let decoded = format::decode(&state).unwrap();
    let locks: Vec<_> = decoded
        .locks
        .iter()
        .map(|l| (l.kind, l.inode, l.owner))
        .collect();
    assert_eq!(
        locks,
        [
            (LockKind::Posix, l.inode, 42),
            (LockKind::Flock, l.inode, hf)
        ]
    );
    let dst = destination(&dir, |_| {});
    dst.load_state(src.session_flags(), &state).unwrap();
    assert_eq!(dst.locks.len(), 0);
    // The source still holds them: the destination's new descriptions get no lock, and one
    // asked for again conflicts with the source's until the source goes away.
    let again = LockRequest {
        handle: h,
        owner: 42,
        lock: FileLock { pid: 8, ..lock },
        flock: false,
    };
    assert_eq!(errno(dst.setlk(ROOT, l.inode, again, false)), libc::EAGAIN);
}

/// A valid stream of a source holding `f`, `d/` and a symlink, to tamper with.
fn base_state(dir: &TestDir) -> (PassthroughFs, State) {
    let src = {
        let mut cfg = Config::new(&dir.0);
        cfg.migration_mode = MigrationMode::FindPaths;
        let fs = PassthroughFs::new(cfg).unwrap();
        fs.init(virtiofsd_fuse::filesystem::InitOptions { offered: u64::MAX })
            .unwrap();
        fs
    };
    fs::write(dir.join("f"), b"f").unwrap();
    fs::create_dir(dir.join("d")).unwrap();
    let f = lookup(&src, ROOT_ID, "f");
    lookup(&src, ROOT_ID, "d");
    open(&src, f.inode, libc::O_RDONLY);
    let state = format::decode(&src.save_state().unwrap()).unwrap();
    (src, state)
}

fn load(dir: &TestDir, flags: u64, state: &State) -> Result<PassthroughFs, io::Error> {
    let dst = destination(dir, |_| {});
    dst.load_state(flags, &format::encode(state))?;
    Ok(dst)
}

#[test]
fn symlinks_are_never_followed_on_the_way() {
    crate::tests::require_root();
    let dir = TestDir::new();
    let outside = TestDir::new();
    fs::write(outside.join("secret"), b"s").unwrap();
    symlink(&outside.0, dir.join("out")).unwrap();
    symlink("d", dir.join("ind")).unwrap();
    let (src, base) = base_state(&dir);
    let flags = src.session_flags();
    let f_id = base
        .inodes
        .iter()
        .find(|i| i.location == Location::Path(b"f".to_vec()))
        .unwrap()
        .id;
    for (path, ty) in [
        (&b"out/secret"[..], libc::S_IFREG),
        (b"ind/x", libc::S_IFREG),
        (b"out", libc::S_IFDIR),
        (b"f/x", libc::S_IFREG),
    ] {
        let mut s = base.clone();
        let rec = s.inodes.iter_mut().find(|i| i.id == f_id).unwrap();
        rec.location = Location::Path(path.to_vec());
        rec.file_type = ty;
        assert!(load(&dir, flags, &s).is_err(), "{path:?} accepted");
    }
    // A symlink as the last component is the symlink itself, as a lookup gives it.
    let mut s = base.clone();
    s.handles.clear();
    let rec = s.inodes.iter_mut().find(|i| i.id == f_id).unwrap();
    rec.location = Location::Path(b"out".to_vec());
    rec.file_type = libc::S_IFLNK;
    let dst = load(&dir, flags, &s).unwrap();
    assert_eq!(
        dst.readlink(ROOT, f_id).unwrap(),
        outside.0.as_os_str().as_encoded_bytes()
    );
}

#[test]
fn hostile_streams_are_refused() {
    crate::tests::require_root();
    let dir = TestDir::new();
    let (src, base) = base_state(&dir);
    let flags = src.session_flags();
    let f = base.inodes.iter().position(|i| i.id != ROOT_ID).unwrap();
    let mutations: Vec<(&str, Mutation)> = vec![
        (
            "dotdot",
            Box::new(move |s| s.inodes[f].location = Location::Path(b"../../etc/passwd".to_vec())),
        ),
        (
            "absolute",
            Box::new(move |s| s.inodes[f].location = Location::Path(b"/etc/passwd".to_vec())),
        ),
        (
            "missing",
            Box::new(move |s| s.inodes[f].location = Location::Path(b"nothing".to_vec())),
        ),
        (
            "wrong type",
            Box::new(move |s| s.inodes[f].file_type = libc::S_IFCHR),
        ),
        (
            "duplicate id",
            Box::new(move |s| {
                let dup = s.inodes[f].clone();
                s.inodes.push(dup);
            }),
        ),
        (
            "duplicate handle",
            Box::new(|s| {
                let dup = s.handles[0].clone();
                s.handles.push(dup);
            }),
        ),
        (
            "dangling handle",
            Box::new(|s| {
                s.handles.push(HandleRecord {
                    id: 1,
                    inode: 999,
                    flags: 0,
                })
            }),
        ),
        (
            "second root",
            Box::new(|s| {
                s.inodes.push(InodeRecord {
                    id: 50,
                    generation: 0,
                    lookups: 1,
                    file_type: libc::S_IFDIR,
                    location: Location::Root,
                    verify: None,
                })
            }),
        ),
        (
            "no root",
            Box::new(|s| s.inodes.retain(|i| i.id != ROOT_ID)),
        ),
        (
            "foreign handle",
            Box::new(move |s| {
                s.mode = format::Mode::FileHandles;
                s.mounts = vec![format::Mount {
                    mnt_id: 1,
                    path: vec![],
                }];
                for i in s.inodes.iter_mut().filter(|i| i.id != ROOT_ID) {
                    i.verify = None;
                    i.location = Location::Handle {
                        mnt_id: 1,
                        handle: format::WireHandle {
                            handle_type: 1,
                            bytes: vec![0xff; 8],
                        },
                    };
                }
            }),
        ),
        (
            "flags beyond the session",
            Box::new(|s| s.session_flags = u64::MAX),
        ),
    ];
    for (name, mutate) in mutations {
        let mut s = base.clone();
        mutate(&mut s);
        assert!(load(&dir, flags, &s).is_err(), "{name} accepted");
    }
    // Huge counts and truncations are refused before any allocation.
    let good = format::encode(&base);
    let dst = destination(&dir, |_| {});
    for len in 0..good.len() {
        assert!(dst.load_state(flags, &good[..len]).is_err());
    }
    let mut huge = good.clone();
    huge[37..41].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(dst.load_state(flags, &huge).is_err());
    assert_eq!(dst.inode_count(), 1);
    // A handle's O_TRUNC is never replayed.
    let mut s = base.clone();
    s.handles[0].flags |= (libc::O_TRUNC | libc::O_CREAT) as u32;
    let dst = load(&dir, flags, &s).unwrap();
    assert_eq!(fs::read(dir.join("f")).unwrap(), b"f");
    drop(dst);
}

#[test]
fn random_mutations_of_a_real_stream_never_panic() {
    crate::tests::require_root();
    let dir = TestDir::new();
    let (src, base) = base_state(&dir);
    let flags = src.session_flags();
    let good = format::encode(&base);
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for _ in 0..400 {
        let mut b = good.clone();
        for _ in 0..1 + next() % 3 {
            let i = (next() % b.len() as u64) as usize;
            match next() % 3 {
                0 => b[i] = next() as u8,
                1 => b[i] ^= 1 << (next() % 8),
                _ => b.truncate(i.max(1)),
            }
        }
        let dst = destination(&dir, |_| {});
        let _ = dst.load_state(flags, &b);
    }
    // The directory is untouched whatever got through.
    assert_eq!(fs::read(dir.join("f")).unwrap(), b"f");
}

#[test]
fn find_paths_from_a_source_that_holds_file_handles() {
    let (dir, src) = setup_with(|c| c.inode_file_handles = crate::FileHandleMode::Mandatory);
    fs::create_dir(dir.join("d")).unwrap();
    fs::write(dir.join("d/f"), b"via handle").unwrap();
    let d = lookup(&src, ROOT_ID, "d");
    let f = lookup(&src, d.inode, "f");
    assert!(!src.inodes.get(f.inode).unwrap().holds_fd());
    let h = open(&src, f.inode, libc::O_RDONLY);
    let (hd, _) = src.opendir(ROOT, d.inode, 0).unwrap();
    // The destination holds inodes as its own mode says.
    let dst = destination(&dir, |c| {
        c.inode_file_handles = crate::FileHandleMode::Never
    });
    migrate(&src, &dst).unwrap();
    assert!(dst.inodes.get(f.inode).unwrap().holds_fd());
    assert_eq!(read_all(&dst, f.inode, h, 20, 0), b"via handle");
    assert_eq!(names(&dst, d.inode, hd.unwrap()), [".", "..", "f"]);
}

#[test]
fn a_broken_directory_answers_eio_for_its_handles_and_children() {
    let (dir, src) = setup_with(|_| {});
    fs::create_dir(dir.join("d")).unwrap();
    let d = lookup(&src, ROOT_ID, "d");
    let (hd, _) = src.opendir(ROOT, d.inode, 0).unwrap();
    let hd = hd.unwrap();
    let state = src.save_state().unwrap();
    fs::remove_dir(dir.join("d")).unwrap();
    let dst = destination(&dir, |c| {
        c.migration_on_error = MigrationOnError::GuestError
    });
    dst.load_state(src.session_flags(), &state).unwrap();
    assert_eq!(errno(dst.lookup(ROOT, d.inode, &cstr("x"))), libc::EIO);
    let mut sink = |_: DirEntry<'_>| Ok(1);
    assert_eq!(
        errno(dst.readdir(ROOT, d.inode, hd, 4096, 0, &mut sink)),
        libc::EIO
    );
    dst.releasedir(ROOT, d.inode, 0, hd).unwrap();
    assert_eq!(
        errno(dst.readdir(ROOT, d.inode, hd, 4096, 0, &mut sink)),
        libc::EBADF
    );
}

#[test]
fn writeback_handles_reopen_as_the_source_held_them() {
    let (dir, src) = setup_with(|c| c.writeback = true);
    fs::write(dir.join("w"), b"abc").unwrap();
    let w = lookup(&src, ROOT_ID, "w");
    // With the writeback cache the host keeps O_RDWR without O_APPEND (the guest kernel reads
    // partial pages and sends explicit offsets for appends).
    let h = open(&src, w.inode, libc::O_WRONLY | libc::O_APPEND);
    let state = format::decode(&src.save_state().unwrap()).unwrap();
    let flags = state.handles[0].flags as i32;
    assert_eq!(flags & libc::O_ACCMODE, libc::O_RDWR);
    assert_eq!(flags & libc::O_APPEND, 0);
    let dst = destination(&dir, |c| c.writeback = true);
    dst.load_state(src.session_flags(), &format::encode(&state))
        .unwrap();
    assert_eq!(read_all(&dst, w.inode, h, 10, 0), b"abc");
    write_all(&dst, w.inode, h, b"d", 3, false);
    assert_eq!(fs::read(dir.join("w")).unwrap(), b"abcd");
}
