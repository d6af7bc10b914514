//! Every opcode that opens, truncates or syncs a file, against every special file type (block
//! and character devices, FIFOs, sockets, symlinks), made by the guest (MKNOD, SYMLINK as guest
//! root) and by the host, against both daemons, with the default sandbox and with
//! `--sandbox=none`, and ours also as an ordinary user. The block device is a loop device over a
//! file beside the share: after every attempt that file must be byte for byte what it was. No
//! request may succeed, block (each has a 5 s deadline), or leave the daemon unable to answer;
//! after the frontend goes, the daemon exits.

mod common;

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{assert_answers, Daemon, Kind};
use virtiofsd_frontend::fuse::{op, Writer, ROOT_ID};
use virtiofsd_frontend::{Outcome, Request, Session};

const DEADLINE: Duration = Duration::from_secs(5);
use virtiofsd_frontend::fuse::setattr::SIZE as FATTR_SIZE;

/// A loop device over a file of a known pattern; detached on drop.
struct LoopDev {
    dev: PathBuf,
    backing: PathBuf,
    pattern: Vec<u8>,
}

impl LoopDev {
    fn new(backing: &Path) -> LoopDev {
        let pattern: Vec<u8> = (0..64 * 1024).map(|i| (i % 251) as u8).collect();
        fs::write(backing, &pattern).unwrap();
        let out = Command::new("losetup")
            .args(["--find", "--show"])
            .arg(backing)
            .output()
            .expect("losetup (util-linux) is needed for the block device test");
        assert!(
            out.status.success(),
            "losetup failed (run the tests as root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let dev = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim().to_string());
        LoopDev {
            dev,
            backing: backing.to_path_buf(),
            pattern,
        }
    }

    fn rdev(&self) -> u64 {
        fs::metadata(&self.dev).unwrap().rdev()
    }

    fn assert_untouched(&self, what: &str) {
        // Through the device too: a write may still sit in its page cache.
        let via_dev = fs::read(&self.dev).unwrap();
        assert!(
            via_dev[..self.pattern.len()] == self.pattern[..],
            "{what}: the host block device was written"
        );
        assert!(
            fs::read(&self.backing).unwrap() == self.pattern,
            "{what}: the file behind the host block device changed"
        );
    }
}

impl Drop for LoopDev {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
    }
}

fn host_mknod(path: &Path, mode: u32, rdev: u64) {
    let p = CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: `p` is a valid NUL-terminated path.
    let r = unsafe { libc::mknod(p.as_ptr(), mode | 0o666, rdev) };
    assert_eq!(
        r,
        0,
        "mknod {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

/// Submits one request and waits for it with a deadline: the errno of its reply, 0 for success.
fn bounded(s: &mut Session, opcode: u32, node: u64, args: &[u8], what: &str) -> i32 {
    let slot = s.alloc_slot(4096, 4096).unwrap();
    let t = s
        .submit(1, slot, &Request::new(opcode, node, args))
        .unwrap();
    match s.outcome(&t, DEADLINE).unwrap() {
        Outcome::Reply(r) => -r.header.error,
        other => panic!("{what}: no reply within {DEADLINE:?}: {other:?}"),
    }
}

fn open_args(flags: u32) -> Vec<u8> {
    let mut w = Writer::default();
    w.u32(flags).u32(0);
    w.take()
}

fn create_args(name: &[u8], flags: u32) -> Vec<u8> {
    let mut w = Writer::default();
    w.u32(flags).u32(0o644).u32(0).u32(0).name(name);
    w.take()
}

fn truncate_args() -> Vec<u8> {
    let mut w = Writer::default();
    w.u32(FATTR_SIZE).u32(0).u64(0).u64(0).u64(0);
    w.u64(0).u64(0).u64(0).u32(0).u32(0).u32(0);
    w.u32(0).u32(0).u32(0).u32(0).u32(0);
    w.take()
}

/// The special files of the matrix: (name, how it was made).
fn make_nodes(d: &Daemon, s: &mut Session, blk: &LoopDev) -> Vec<String> {
    let mut names = Vec::new();
    // By the host.
    host_mknod(&d.share.join("blk-host"), libc::S_IFBLK, blk.rdev());
    host_mknod(
        &d.share.join("chr-host"),
        libc::S_IFCHR,
        libc::makedev(1, 5),
    );
    host_mknod(&d.share.join("fifo-host"), libc::S_IFIFO, 0);
    let _ = std::os::unix::net::UnixListener::bind(d.share.join("sock-host")).unwrap();
    symlink(&blk.dev, d.share.join("symlink-host")).unwrap();
    names.extend(
        [
            "blk-host",
            "chr-host",
            "fifo-host",
            "sock-host",
            "symlink-host",
        ]
        .map(String::from),
    );
    // By the guest's root; a daemon may refuse MKNOD of devices (then there is nothing to open).
    let saved = s.creds;
    s.creds = (0, 0, saved.2);
    let rdev = blk.rdev();
    let dev32 = (libc::major(rdev) << 8 | (libc::minor(rdev) & 0xff)) as u32;
    for (name, mode, rdev) in [
        ("blk-guest", libc::S_IFBLK, dev32),
        ("chr-guest", libc::S_IFCHR, (1 << 8) | 5),
        ("fifo-guest", libc::S_IFIFO, 0),
        ("sock-guest", libc::S_IFSOCK, 0),
    ] {
        match s.mknod(ROOT_ID, name.as_bytes(), mode | 0o666, rdev, 0) {
            Ok(e) => {
                s.forget(e.nodeid, 1).unwrap();
                names.push(name.to_string());
            }
            Err(e) => eprintln!("{:?}: guest MKNOD {name} refused: {e}", d.kind),
        }
    }
    let mut w = Writer::default();
    w.name(b"symlink-guest")
        .name(blk.dev.as_os_str().as_bytes());
    let body = w.take();
    match bounded(s, op::SYMLINK, ROOT_ID, &body, "SYMLINK") {
        0 => names.push("symlink-guest".into()),
        // An unprivileged daemon without a sandbox cannot take the guest root's identity.
        e => eprintln!("{:?}: guest SYMLINK refused: errno {e}", d.kind),
    }
    s.creds = saved;
    names
}

/// The unprivileged user the ordinary-user cases run the daemon as.
const NOBODY: u32 = 65534;

fn matrix(kind: Kind, extra: &[&str]) {
    matrix_as(kind, extra, None);
}

fn matrix_as(kind: Kind, extra: &[&str], user: Option<u32>) {
    let d = Daemon::start_as(kind, None, extra, user);
    let blk = LoopDev::new(&d.dir.join("disk.img"));
    let mut s = d.session();
    let names = make_nodes(&d, &mut s, &blk);
    let saved = s.creds;
    s.creds = (0, 0, saved.2);
    for name in &names {
        let what =
            |op: &str, flags: i32| format!("{kind:?} {extra:?}: {op} {name} flags {flags:#o}");
        let e = s.lookup(ROOT_ID, name.as_bytes()).unwrap();
        for flags in [
            libc::O_RDONLY,
            libc::O_WRONLY,
            libc::O_RDWR,
            libc::O_RDWR | libc::O_TRUNC,
        ] {
            let r = bounded(
                &mut s,
                op::OPEN,
                e.nodeid,
                &open_args(flags as u32),
                &what("OPEN", flags),
            );
            assert_ne!(r, 0, "{}: opened", what("OPEN", flags));
            let args = create_args(name.as_bytes(), flags as u32);
            let r = bounded(&mut s, op::CREATE, ROOT_ID, &args, &what("CREATE", flags));
            assert_ne!(r, 0, "{}: opened", what("CREATE", flags));
        }
        let r = bounded(
            &mut s,
            op::SETATTR,
            e.nodeid,
            &truncate_args(),
            &what("SETATTR(size)", 0),
        );
        assert_ne!(r, 0, "{}: truncated", what("SETATTR(size)", 0));
        // SYNCFS may succeed (it syncs the filesystem, not the file), but must not block.
        if kind == Kind::Ours {
            const SYNCFS: u32 = 50;
            bounded(&mut s, SYNCFS, e.nodeid, &[0u8; 8], &what("SYNCFS", 0));
        }
        blk.assert_untouched(&what("any", 0));
        assert_answers(&mut s, kind);
        s.forget(e.nodeid, 1).unwrap();
    }
    s.creds = saved;
    d.assert_outside_untouched();
    drop(s);
    let mut d = d;
    let st = d.wait_exit(Duration::from_secs(10));
    assert!(
        st.success(),
        "{kind:?} {extra:?}: exit after disconnect: {st}"
    );
    blk.assert_untouched(&format!("{kind:?} {extra:?} after exit"));
}

#[test]
fn special_files_are_never_opened_ours() {
    matrix(Kind::Ours, &[]);
}

#[test]
fn special_files_are_never_opened_ours_without_sandbox() {
    matrix(Kind::Ours, &["--sandbox=none"]);
}

#[test]
fn special_files_are_never_opened_ours_with_file_handles() {
    matrix(
        Kind::Ours,
        &["--sandbox=none", "--inode-file-handles=mandatory"],
    );
}

#[test]
fn special_files_are_never_opened_reference() {
    matrix(Kind::Reference, &[]);
}

#[test]
fn special_files_are_never_opened_reference_without_sandbox() {
    matrix(Kind::Reference, &["--sandbox=none"]);
}

#[test]
fn special_files_are_never_opened_ours_as_an_ordinary_user() {
    matrix_as(Kind::Ours, &[], Some(NOBODY));
}

#[test]
fn special_files_are_never_opened_ours_as_an_ordinary_user_without_sandbox() {
    matrix_as(Kind::Ours, &["--sandbox=none"], Some(NOBODY));
}
