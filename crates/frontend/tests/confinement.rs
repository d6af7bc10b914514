//! Confinement: a hostile guest (played by the frontend) must not reach anything outside the
//! shared directory, whatever the host places inside it, and must not be able to exhaust the
//! daemon's descriptors or memory. Every case checks the host side: the sibling "outside"
//! directory is unchanged and no byte of its content ever came back to the guest.
//! The daemon runs with whatever defaults its CLI has (sandbox and seccomp included).

mod common;

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{assert_answers, test_options, Daemon, Kind};
use virtiofsd_frontend::fuse::{op, Writer, ROOT_ID};
use virtiofsd_frontend::ops::read_args;
use virtiofsd_frontend::{Options, Outcome, Request, Session};

const SECRET: &[u8] = b"do not touch";
const O_RDONLY: u32 = libc::O_RDONLY as u32;
const O_RDWR: u32 = libc::O_RDWR as u32;
/// fuse_attr.flags bit for a submount (FUSE_ATTR_SUBMOUNT).
const FUSE_ATTR_SUBMOUNT: u32 = 1;
const FUSE_SUBMOUNTS: u64 = 1 << 27;
const FUSE_GETXATTR: u32 = 22;
const FUSE_LISTXATTR: u32 = 23;

fn errno<T: std::fmt::Debug>(r: virtiofsd_frontend::Result<T>) -> i32 {
    match r {
        Ok(v) => panic!("expected an error reply, got {v:?}"),
        Err(e) => e
            .errno()
            .unwrap_or_else(|| panic!("expected an error reply, got transport error {e}")),
    }
}

fn is_symlink(mode: u32) -> bool {
    mode & libc::S_IFMT == libc::S_IFLNK
}

/// No reply body may contain the outside file's content.
fn assert_no_secret(data: &[u8], what: &str) {
    assert!(
        !data.windows(SECRET.len()).any(|w| w == SECRET),
        "{what}: content from outside the share came back to the guest"
    );
}

/// Opens `node` and reads it; returns the errno of the first failing step, or the data.
fn open_read(s: &mut Session, node: u64, flags: u32) -> Result<Vec<u8>, i32> {
    let fh = s.open(node, flags).map_err(|e| e.errno().unwrap_or(-1))?.fh;
    let r = s
        .read(node, fh, 0, 4096)
        .map_err(|e| e.errno().unwrap_or(-1));
    s.release(node, fh).unwrap();
    r
}

/// Host-placed symlinks (relative, absolute, to a file and to a directory) that point outside:
/// lookup returns the link itself, readlink returns its text, and nothing goes through it.
fn symlinks_to_outside(kind: Kind) {
    let d = Daemon::start(kind);
    let outside_secret = d.outside.join("secret");
    symlink("../outside/secret", d.share.join("rel")).unwrap();
    symlink(&outside_secret, d.share.join("abs")).unwrap();
    symlink(&d.outside, d.share.join("dir")).unwrap();
    let mut s = d.session();

    for name in [&b"rel"[..], b"abs", b"dir"] {
        let e = s.lookup(ROOT_ID, name).unwrap();
        assert!(
            is_symlink(e.attr.mode),
            "{kind:?}: lookup of {} gave mode {:o}, not the link itself",
            String::from_utf8_lossy(name),
            e.attr.mode
        );
        let target = s.readlink(e.nodeid).unwrap();
        assert!(target.ends_with(b"secret") || target.ends_with(b"outside"));
        for flags in [O_RDONLY, O_RDWR, O_RDONLY | libc::O_NOFOLLOW as u32] {
            match open_read(&mut s, e.nodeid, flags) {
                Ok(data) => panic!("{kind:?}: opening a symlink node succeeded: {data:?}"),
                Err(e) => assert_ne!(e, 0),
            }
        }
        // Names under the link are never resolved through it.
        assert_ne!(
            errno(s.lookup(e.nodeid, b"secret")),
            0,
            "{kind:?}: lookup under a symlink"
        );
        assert_ne!(
            errno(s.create(e.nodeid, b"planted", O_RDWR, 0o644, 0)),
            0,
            "{kind:?}: create under a symlink"
        );
        assert_ne!(errno(s.mkdir(e.nodeid, b"planted", 0o755, 0)), 0);
    }
    // A symlink the guest itself creates with an absolute target is just text in the share.
    let e = s
        .symlink(ROOT_ID, b"guestlink", outside_secret.as_os_str().as_bytes())
        .unwrap();
    assert!(is_symlink(e.attr.mode));
    assert!(open_read(&mut s, e.nodeid, O_RDONLY).is_err());
    assert!(fs::symlink_metadata(d.share.join("guestlink"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert_answers(&mut s, kind);
    d.assert_outside_untouched();
}

#[test]
fn symlinks_to_outside_are_never_followed_ours() {
    symlinks_to_outside(Kind::Ours);
}

/// A hard link the host admin made to an outside file IS the outside file: it is the same inode,
/// so the guest reads (and may write) it. Hard links are an admin decision; this pins it down.
#[test]
fn hard_link_to_outside_file_is_the_same_file_ours() {
    let d = Daemon::start(Kind::Ours);
    fs::hard_link(d.outside.join("secret"), d.share.join("hard")).unwrap();
    let mut s = d.session();
    let e = s.lookup(ROOT_ID, b"hard").unwrap();
    assert_eq!(e.attr.mode & libc::S_IFMT, libc::S_IFREG);
    assert_eq!(e.attr.nlink, 2);
    let data = open_read(&mut s, e.nodeid, O_RDONLY).expect("reading the hard link");
    assert_eq!(
        data, SECRET,
        "a hard link shares the outside inode by design"
    );
    // The guest cannot create hard links that point outside: LINK takes a node it already has.
    assert_eq!(errno(s.link(ROOT_ID, ROOT_ID, b"rootlink")), libc::EPERM);
    d.assert_outside_untouched();
}

/// Names with `/`, `.`/`..` and absolute paths, sent raw: EINVAL (or ENOENT for a lookup of a
/// name that cannot exist), and nothing is created anywhere.
fn bad_names(kind: Kind) {
    let d = Daemon::start(kind);
    fs::create_dir(d.share.join("sub")).unwrap();
    let mut s = d.session();
    let sub = s.lookup(ROOT_ID, b"sub").unwrap().nodeid;
    let outside = d.outside.join("secret");
    let abs = outside.as_os_str().as_bytes().to_vec();
    let names: Vec<Vec<u8>> = vec![
        b"..".to_vec(),
        b".".to_vec(),
        b"../outside/secret".to_vec(),
        b"../../outside".to_vec(),
        b"sub/../../outside".to_vec(),
        b"a/b".to_vec(),
        b"/".to_vec(),
        abs,
    ];
    for name in &names {
        let shown = String::from_utf8_lossy(name).into_owned();
        for parent in [ROOT_ID, sub] {
            // LOOKUP of "." or ".." must never give a node above the share.
            match s.lookup(parent, name) {
                Ok(e) => {
                    assert!(
                        name == b"." || name == b"..",
                        "{kind:?}: lookup of {shown:?} succeeded"
                    );
                    let root = s.getattr(ROOT_ID).unwrap().attr.ino;
                    let parent_ino = s.getattr(parent).unwrap().attr.ino;
                    assert!(
                        e.attr.ino == root || e.attr.ino == parent_ino,
                        "{kind:?}: lookup of {shown:?} left the share"
                    );
                }
                Err(e) => {
                    let n = e.errno().expect("error reply");
                    assert!(
                        n == libc::EINVAL || n == libc::ENOENT || n == libc::EPERM,
                        "{kind:?}: lookup {shown:?}: errno {n}"
                    );
                }
            }
            if name.contains(&b'/') {
                assert_eq!(
                    errno(s.lookup(parent, name)),
                    libc::EINVAL,
                    "{kind:?}: lookup {shown:?}"
                );
            }
            let n = errno(s.create(parent, name, O_RDWR, 0o644, 0));
            assert!(
                n == libc::EINVAL || n == libc::EEXIST || n == libc::EPERM,
                "{kind:?}: create {shown:?}: errno {n}"
            );
            assert_ne!(errno(s.mkdir(parent, name, 0o755, 0)), 0);
            assert_ne!(errno(s.symlink(parent, name, b"x")), 0);
            let n = errno(s.unlink(parent, name));
            assert!(
                n == libc::EINVAL || n == libc::ENOENT || n == libc::EISDIR || n == libc::EPERM,
                "{kind:?}: unlink {shown:?}: errno {n}"
            );
            assert_ne!(errno(s.rename(parent, b"nothing", parent, name)), 0);
        }
    }
    // The share holds exactly what it held.
    let mut names: Vec<_> = fs::read_dir(&d.share)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(names, vec![std::ffi::OsString::from("sub")]);
    assert_eq!(fs::read_dir(d.share.join("sub")).unwrap().count(), 0);
    assert_answers(&mut s, kind);
    d.assert_outside_untouched();
}

#[test]
fn dotdot_slash_and_absolute_names_are_rejected_ours() {
    bad_names(Kind::Ours);
}

/// A host process keeps exchanging a directory in the share with a symlink to the outside
/// directory while the guest creates, looks up, opens and reads inside it. Nothing may be
/// created, read or found outside.
fn rename_race(kind: Kind) {
    let d = Daemon::start(kind);
    let dir = d.share.join("d");
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join("f"), b"inside").unwrap();
    let link = d.share.join("l");
    symlink(&d.outside, &link).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let swaps = Arc::new(AtomicUsize::new(0));
    let swapper = {
        let (stop, swaps) = (stop.clone(), swaps.clone());
        let a = CString::new(dir.as_os_str().as_bytes()).unwrap();
        let b = CString::new(link.as_os_str().as_bytes()).unwrap();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                // SAFETY: both paths are valid NUL-terminated strings that outlive the call.
                let r = unsafe {
                    libc::renameat2(
                        libc::AT_FDCWD,
                        a.as_ptr(),
                        libc::AT_FDCWD,
                        b.as_ptr(),
                        libc::RENAME_EXCHANGE,
                    )
                };
                assert_eq!(r, 0, "renameat2: {}", std::io::Error::last_os_error());
                swaps.fetch_add(1, Ordering::Relaxed);
            }
        })
    };

    let mut s = d.session();
    let mut ops = 0usize;
    let mut created = Vec::new();
    let start = Instant::now();
    let mut i = 0u32;
    while ops < 3000 || start.elapsed() < Duration::from_secs(2) {
        i += 1;
        for top in [&b"d"[..], b"l"] {
            let Ok(e) = s.lookup(ROOT_ID, top) else {
                ops += 1;
                continue;
            };
            ops += 1;
            // Through a name that is a symlink at this instant, lookups fail; through the real
            // directory they succeed. Neither may ever find the outside file.
            if let Ok(x) = s.lookup(e.nodeid, b"secret") {
                panic!("{kind:?}: found the outside file through {top:?}: {x:?}");
            }
            ops += 1;
            if let Ok(f) = s.lookup(e.nodeid, b"f") {
                if let Ok(data) = open_read(&mut s, f.nodeid, O_RDONLY) {
                    assert_no_secret(&data, "read during the rename race");
                    assert_eq!(data, b"inside");
                }
                s.forget(f.nodeid, 1).unwrap();
            }
            ops += 2;
            let name = format!("c{i}");
            if let Ok((ce, o)) = s.create(e.nodeid, name.as_bytes(), O_RDWR, 0o644, 0) {
                s.release(ce.nodeid, o.fh).unwrap();
                s.forget(ce.nodeid, 1).unwrap();
                created.push(name);
            }
            ops += 1;
            if let Ok(de) = s.opendir(e.nodeid) {
                let names = s.list_dir(e.nodeid, de.fh, false, 4096).unwrap_or_default();
                assert!(
                    !names.iter().any(|n| n.name == b"secret"),
                    "{kind:?}: listed the outside directory"
                );
                s.releasedir(e.nodeid, de.fh).unwrap();
            }
            ops += 1;
            s.forget(e.nodeid, 1).unwrap();
        }
        d.assert_outside_untouched();
    }
    stop.store(true, Ordering::Relaxed);
    swapper.join().unwrap();
    assert!(
        swaps.load(Ordering::Relaxed) > 100,
        "the host did not swap often enough to race"
    );
    assert!(
        !created.is_empty(),
        "{kind:?}: no create succeeded; the race exercised nothing"
    );
    // Every file the guest created is inside the share (in whichever of the two names holds
    // the real directory now).
    let real = if fs::symlink_metadata(&dir).unwrap().is_dir() {
        &dir
    } else {
        &link
    };
    for name in &created {
        assert!(
            real.join(name).exists(),
            "{kind:?}: created file {name} is not in the share"
        );
    }
    assert_answers(&mut s, kind);
    d.assert_outside_untouched();
    eprintln!(
        "{kind:?}: {ops} ops during {} swaps, {} creates",
        swaps.load(Ordering::Relaxed),
        created.len()
    );
}

#[test]
fn rename_race_with_symlink_swaps_never_escapes_ours() {
    rename_race(Kind::Ours);
}

/// Host-placed links into /proc: the guest gets the link, never what it points to.
fn proc_magic_links(kind: Kind) {
    let d = Daemon::start(kind);
    symlink("/proc/self/root", d.share.join("selfroot")).unwrap();
    symlink("/proc/self/fd/0", d.share.join("fd0")).unwrap();
    symlink("/proc/self/cwd", d.share.join("cwd")).unwrap();
    let mut s = d.session();
    for name in [&b"selfroot"[..], b"fd0", b"cwd"] {
        let e = s.lookup(ROOT_ID, name).unwrap();
        assert!(is_symlink(e.attr.mode), "{kind:?}: {name:?} not a link");
        assert!(s.readlink(e.nodeid).unwrap().starts_with(b"/proc/self/"));
        // Ours answers ELOOP (as opening a symlink with O_NOFOLLOW would); the reference
        // answers EBADF (it tries to reopen its O_PATH descriptor). Either way, no content.
        let want = match kind {
            Kind::Ours => libc::ELOOP,
            Kind::Reference => libc::EBADF,
        };
        assert_eq!(
            open_read(&mut s, e.nodeid, O_RDONLY),
            Err(want),
            "{kind:?}: opening {}",
            String::from_utf8_lossy(name)
        );
        assert_ne!(errno(s.lookup(e.nodeid, b"etc")), 0);
        assert_ne!(errno(s.opendir(e.nodeid)), 0);
    }
    assert_answers(&mut s, kind);
    d.assert_outside_untouched();
}

#[test]
fn proc_magic_links_are_not_followed_ours() {
    proc_magic_links(Kind::Ours);
}

/// Submits OPEN without waiting, so a daemon that blocks in open(2) shows up as a timeout
/// instead of hanging the test.
fn open_bounded(s: &mut Session, node: u64, flags: u32, within: Duration) -> Outcome {
    let mut w = Writer::default();
    w.u32(flags).u32(0);
    let args = w.take();
    let slot = s.alloc_slot(256, 256).unwrap();
    let t = s
        .submit(1, slot, &Request::new(op::OPEN, node, &args))
        .unwrap();
    s.outcome(&t, within).unwrap()
}

/// FIFOs, sockets and device nodes in the share: opening them never wedges the daemon.
fn special_files(kind: Kind) {
    let d = Daemon::start(kind);
    let fifo = CString::new(d.share.join("fifo").as_os_str().as_bytes()).unwrap();
    // SAFETY: `fifo` is a valid path string.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o666) }, 0);
    let _listener = std::os::unix::net::UnixListener::bind(d.share.join("sock")).unwrap();
    let zero = CString::new(d.share.join("zero").as_os_str().as_bytes()).unwrap();
    // SAFETY: valid path; (1, 5) is /dev/zero's device number.
    let have_dev =
        unsafe { libc::mknod(zero.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 5)) } == 0;
    let mut s = d.session();

    for (name, flags) in [
        (&b"fifo"[..], O_RDONLY),
        (b"fifo", libc::O_WRONLY as u32),
        (b"fifo", O_RDWR),
        (b"sock", O_RDONLY),
    ] {
        let e = s.lookup(ROOT_ID, name).unwrap();
        // Both daemons refuse to open special files (the guest kernel serves FIFOs, sockets
        // and device nodes itself), and answer at once rather than waiting for a FIFO peer.
        match open_bounded(&mut s, e.nodeid, flags, Duration::from_secs(5)) {
            Outcome::Reply(r) => assert_eq!(
                -r.header.error,
                libc::EBADF,
                "{kind:?}: OPEN of {} (flags {flags:#o})",
                String::from_utf8_lossy(name)
            ),
            other => panic!(
                "{kind:?}: OPEN of {} (flags {flags:#o}) did not complete in 5 s: {other:?}",
                String::from_utf8_lossy(name)
            ),
        }
        assert_answers(&mut s, kind);
    }
    if have_dev {
        // A device node placed in the share (here a /dev/zero twin) is looked up, never opened:
        // the guest must not get the host device.
        let e = s.lookup(ROOT_ID, b"zero").unwrap();
        assert_eq!(e.attr.mode & libc::S_IFMT, libc::S_IFCHR);
        for flags in [O_RDONLY, O_RDWR] {
            assert_eq!(
                open_read(&mut s, e.nodeid, flags),
                Err(libc::EBADF),
                "{kind:?}"
            );
        }
    } else {
        panic!("mknod of a character device in the share failed: run the tests as root");
    }
    // The guest's root may make a device node (the daemon may have CAP_MKNOD, or the sandbox
    // may refuse), but never open one: it could name any host device (1:3 is /dev/null).
    let saved = s.creds;
    s.creds = (0, 0, saved.2);
    let made = s.mknod(ROOT_ID, b"guestdev", libc::S_IFCHR | 0o666, (1 << 8) | 3, 0);
    s.creds = saved;
    match made {
        Ok(e) => assert_eq!(
            open_read(&mut s, e.nodeid, O_RDWR),
            Err(libc::EBADF),
            "{kind:?}: opened a device node the guest made"
        ),
        Err(e) => eprintln!("{kind:?}: guest-root MKNOD of a device refused: {e}"),
    }
    assert_answers(&mut s, kind);
    d.assert_outside_untouched();
}

#[test]
fn fifos_sockets_and_devices_never_block_the_daemon_ours() {
    special_files(Kind::Ours);
}

#[test]
fn fifos_sockets_and_devices_never_block_the_daemon_reference() {
    special_files(Kind::Reference);
}

/// Mounts under the share are part of the tree the admin shares: a bind mount of a directory
/// from elsewhere IS reachable by design, and a mount of another filesystem (distinct st_dev)
/// is announced to the guest as a submount (FUSE_ATTR_SUBMOUNT) so it gets its own st_dev.
fn mounts_in_share(kind: Kind) {
    let base = std::env::temp_dir().join(format!("vfsd-bind-{}-{kind:?}", std::process::id()));
    let _ = fs::remove_dir_all(&base);
    let share = base.join("share");
    let other = base.join("other");
    fs::create_dir_all(share.join("bind")).unwrap();
    fs::create_dir_all(share.join("tmp")).unwrap();
    fs::create_dir_all(&other).unwrap();
    fs::write(other.join("visible"), b"bound").unwrap();
    // Mounted before the daemon starts: a sandboxed daemon takes a private copy of the mount
    // table at start and would not see later mounts.
    let bind = Mount::new(&other, &share.join("bind"), None, libc::MS_BIND);
    let tmp = Mount::new(Path::new("none"), &share.join("tmp"), Some(c"tmpfs"), 0);
    fs::write(share.join("tmp/t"), b"on tmpfs").unwrap();
    let d = Daemon::start_on(kind, Some(&share));
    let mut s = d.connect();
    s.init_with_flags(virtiofsd_frontend::ops::INIT_FLAGS | FUSE_SUBMOUNTS)
        .unwrap();
    let root = s.getattr(ROOT_ID).unwrap();
    assert_eq!(root.attr.flags & FUSE_ATTR_SUBMOUNT, 0);

    let b = s.lookup(ROOT_ID, b"bind").unwrap();
    let f = s.lookup(b.nodeid, b"visible").unwrap();
    assert_eq!(
        open_read(&mut s, f.nodeid, O_RDONLY).unwrap(),
        b"bound",
        "{kind:?}: a bind mount inside the share is reachable by design"
    );
    let t = s.lookup(ROOT_ID, b"tmp").unwrap();
    assert_ne!(
        t.attr.flags & FUSE_ATTR_SUBMOUNT,
        0,
        "{kind:?}: a mount of another filesystem is announced as a submount by default"
    );
    let tf = s.lookup(t.nodeid, b"t").unwrap();
    assert_eq!(open_read(&mut s, tf.nodeid, O_RDONLY).unwrap(), b"on tmpfs");
    eprintln!(
        "{kind:?}: same-filesystem bind mount announced as submount: {}",
        b.attr.flags & FUSE_ATTR_SUBMOUNT != 0
    );
    assert_answers(&mut s, kind);
    drop(s);
    drop(d);
    drop(tmp);
    drop(bind);
    let _ = fs::remove_dir_all(&base);
}

/// A mount made by the test, detached when dropped.
struct Mount {
    at: PathBuf,
}

impl Mount {
    fn new(src: &Path, at: &Path, fstype: Option<&std::ffi::CStr>, flags: libc::c_ulong) -> Mount {
        let c_src = CString::new(src.as_os_str().as_bytes()).unwrap();
        let c_at = CString::new(at.as_os_str().as_bytes()).unwrap();
        // SAFETY: valid NUL-terminated strings that outlive the call; null fstype and data are
        // allowed for a bind mount.
        let r = unsafe {
            libc::mount(
                c_src.as_ptr(),
                c_at.as_ptr(),
                fstype.map_or(std::ptr::null(), |f| f.as_ptr()),
                flags,
                std::ptr::null(),
            )
        };
        assert_eq!(
            r,
            0,
            "mounting inside the share needs root (CAP_SYS_ADMIN): {}",
            std::io::Error::last_os_error()
        );
        Mount {
            at: at.to_path_buf(),
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let c = CString::new(self.at.as_os_str().as_bytes()).unwrap();
        // SAFETY: valid path string; a failed unmount only leaves a stale temp mount.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
}

#[test]
fn mounts_inside_the_share_are_reachable_and_announced_ours() {
    mounts_in_share(Kind::Ours);
}

#[test]
fn mounts_inside_the_share_are_reachable_and_announced_reference() {
    mounts_in_share(Kind::Reference);
}

/// A daemon with extra arguments (common::Daemon takes none).
struct Custom {
    child: Child,
    dir: PathBuf,
    share: PathBuf,
    socket: PathBuf,
}

impl Custom {
    fn start(args: &[&str]) -> Custom {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("vfsd-conf-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let share = dir.join("share");
        fs::create_dir_all(&share).unwrap();
        let socket = dir.join("vfs.sock");
        let cli = common::repo_root().join("dist/cli.js");
        assert!(
            cli.exists(),
            "{} is missing: run `npm run build`",
            cli.display()
        );
        let log = fs::File::create(dir.join("daemon.log")).unwrap();
        let child = Command::new("node")
            .arg(cli)
            .arg(format!("--socket-path={}", socket.display()))
            .arg(format!("--shared-dir={}", share.display()))
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("cannot start node");
        let mut c = Custom {
            child,
            dir,
            share,
            socket,
        };
        let start = Instant::now();
        while !c.socket.exists() {
            if let Some(st) = c.child.try_wait().unwrap() {
                panic!("daemon exited with {st}; log:\n{}", c.log());
            }
            assert!(start.elapsed() < Duration::from_secs(15), "no socket");
            std::thread::sleep(Duration::from_millis(10));
        }
        c
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
    }

    fn session(&self, opts: &Options) -> Session {
        let mut s = Session::connect_retry(&self.socket, opts, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("connect: {e}; log:\n{}", self.log()));
        s.init().unwrap();
        s
    }

    fn device_pid(&self) -> u32 {
        let mut pid = self.child.id();
        for _ in 0..4 {
            let kids =
                fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
            match kids.split_whitespace().next().and_then(|k| k.parse().ok()) {
                Some(k) => pid = k,
                None => break,
            }
        }
        pid
    }
}

impl Drop for Custom {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn status_field(pid: u32, key: &str) -> u64 {
    let st = fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/status: {e}"));
    st.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
}

/// The guest opens more files than the descriptor budget allows: it gets ENFILE, the daemon
/// keeps serving, never holds more descriptors than its limit, and recovers once files close.
#[test]
fn fd_exhaustion_gives_enfile_and_daemon_keeps_serving_ours() {
    const LIMIT: usize = 256;
    let d = Custom::start(&[&format!("--rlimit-nofile={LIMIT}")]);
    for i in 0..LIMIT * 2 {
        fs::write(d.share.join(format!("f{i}")), b"x").unwrap();
    }
    let mut s = d.session(&test_options());
    let pid = d.device_pid();
    let mut open = Vec::new();
    let mut enfile = 0;
    for i in 0..LIMIT * 2 {
        let name = format!("f{i}");
        let e = match s.lookup(ROOT_ID, name.as_bytes()) {
            Ok(e) => e,
            Err(e) => {
                assert_eq!(e.errno(), Some(libc::ENFILE), "lookup {name}: {e}");
                enfile += 1;
                continue;
            }
        };
        match s.open(e.nodeid, O_RDONLY) {
            Ok(o) => open.push((e.nodeid, o.fh)),
            Err(err) => {
                assert_eq!(err.errno(), Some(libc::ENFILE), "open {name}: {err}");
                enfile += 1;
            }
        }
        let fds = fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count();
        assert!(fds <= LIMIT, "the device holds {fds} fds, limit {LIMIT}");
    }
    assert!(enfile > 0, "never ran out of the {LIMIT}-descriptor budget");
    assert!(
        open.len() >= LIMIT / 4,
        "only {} files opened before ENFILE",
        open.len()
    );
    assert_answers(&mut s, Kind::Ours);
    // Closing gives the budget back.
    for (node, fh) in open.drain(..) {
        s.release(node, fh).unwrap();
    }
    let e = s.lookup(ROOT_ID, b"f0").unwrap();
    let o = s.open(e.nodeid, O_RDONLY).expect("open after releasing");
    assert_eq!(s.read(e.nodeid, o.fh, 0, 16).unwrap(), b"x");
}

/// Many in-flight requests with huge lengths: the daemon answers them with errors (or short
/// replies bounded by the buffers) and its resident memory stays bounded.
#[test]
fn huge_lengths_in_flight_keep_memory_bounded_ours() {
    let d = Custom::start(&[]);
    fs::write(d.share.join("file"), vec![7u8; 1 << 16]).unwrap();
    let opts = Options {
        mem_size: 64 << 20,
        queue_size: 64,
        timeout: Duration::from_secs(10),
        ..Options::default()
    };
    let mut s = d.session(&opts);
    let pid = d.device_pid();
    let e = s.lookup(ROOT_ID, b"file").unwrap();
    let fh = s.open(e.nodeid, O_RDWR).unwrap().fh;
    let rss_before = status_field(pid, "VmRSS:");
    let mut peak = rss_before;
    // Slots are reused round after round; allocate them once.
    let slots: Vec<_> = (0..32).map(|_| s.alloc_slot(8192, 4096).unwrap()).collect();
    let mut replies = 0;
    for round in 0..40u32 {
        let mut tickets = Vec::new();
        for (i, slot) in slots.iter().enumerate() {
            let kind = (round as usize + i) % 5;
            let t = match kind {
                // READ asking for 4 GiB into a 4 KiB buffer.
                0 => s.submit(
                    1,
                    *slot,
                    &Request::new(op::READ, e.nodeid, &read_args(fh, 0, u32::MAX)),
                ),
                // WRITE claiming 1 GiB of payload with none present.
                1 => s.submit(
                    1,
                    *slot,
                    &Request::new(op::WRITE, e.nodeid, &read_args(fh, 0, 1 << 30)),
                ),
                // A header that says the request is 4 GiB long.
                2 => s.submit_with(
                    1,
                    *slot,
                    &Request::new(op::GETATTR, e.nodeid, &[0u8; 16]),
                    Some(u32::MAX),
                ),
                // GETXATTR / LISTXATTR with a huge size.
                3 => {
                    let mut w = Writer::default();
                    w.u32(u32::MAX).u32(0).name(b"user.x");
                    let a = w.take();
                    s.submit(1, *slot, &Request::new(FUSE_GETXATTR, e.nodeid, &a))
                }
                _ => {
                    let mut w = Writer::default();
                    w.u32(u32::MAX).u32(0);
                    let a = w.take();
                    s.submit(1, *slot, &Request::new(FUSE_LISTXATTR, e.nodeid, &a))
                }
            }
            .unwrap();
            tickets.push(t);
        }
        for t in &tickets {
            match s.outcome(t, Duration::from_secs(10)).unwrap() {
                Outcome::Reply(r) => {
                    assert!(r.used_len <= 4096 + 16, "reply overflowed its buffer");
                    replies += 1;
                }
                Outcome::Returned { .. } => {}
                other => panic!("request with a huge length: {other:?}; log:\n{}", d.log()),
            }
        }
        peak = peak.max(status_field(pid, "VmRSS:"));
    }
    assert!(replies > 0);
    let growth_kib = peak.saturating_sub(rss_before);
    assert!(
        growth_kib < 32 * 1024,
        "device RSS grew by {growth_kib} KiB (from {rss_before} KiB) under huge-length requests"
    );
    assert_answers(&mut s, Kind::Ours);
    // The data file is intact: no huge write went through.
    assert_eq!(fs::read(d.share.join("file")).unwrap(), vec![7u8; 1 << 16]);
}

// The reference daemon, where its behaviour is the same; run with the reference available
// (scripts/provision.sh or VIRTIOFSD_REFERENCE).
#[test]
fn symlinks_to_outside_are_never_followed_reference() {
    symlinks_to_outside(Kind::Reference);
}

#[test]
fn rename_race_with_symlink_swaps_never_escapes_reference() {
    rename_race(Kind::Reference);
}

#[test]
fn proc_magic_links_are_not_followed_reference() {
    proc_magic_links(Kind::Reference);
}
