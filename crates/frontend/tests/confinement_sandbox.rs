//! The default namespace sandbox seen from the host: what a device process that a hostile guest
//! took over could still reach. Starts the real daemon (the node CLI) with its defaults, as root
//! and as an ordinary user, and inspects the serving process through /proc:
//! - no descriptor leads to a file it inherited (stdout, a leaked descriptor), except its stderr
//!   on fd 2, where a command-line device logs as upstream does;
//! - its mount table holds only the share, with nodev and nosuid, and no procfs;
//! - its /proc/self/fd handle leads nowhere with `..` (no /proc/sys, no other processes);
//! - a device node placed in the share cannot be opened through the device's mounts.

mod common;

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{children, repo_root, test_options};
use virtiofsd_frontend::fuse::ROOT_ID;
use virtiofsd_frontend::Session;

const PROC_SUPER_MAGIC: i64 = 0x9fa0;
/// Descriptor number of the extra file the CLI inherits, as an embedder might leak one.
const LEAKED_FD: i32 = 9;
const NOBODY: u32 = 65534;

struct Started {
    child: Child,
    dir: PathBuf,
    share: PathBuf,
    socket: PathBuf,
    /// The CLI's stdout and the leaked file: (dev, ino) of each.
    inherited: Vec<(u64, u64, PathBuf)>,
    /// The CLI's stderr, which a command-line device keeps as its log (as upstream), on fd 2 only.
    log_file: (u64, u64),
    /// Started with `--sandbox=chroot`.
    chroot: bool,
}

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

impl Started {
    fn log(&self) -> String {
        fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
    }

    /// The CLI became the device process (which waits) -> serving process.
    fn processes(&self) -> (u32, u32) {
        let device = self.child.id();
        assert_eq!(
            comm(device),
            "virtiofsd",
            "the CLI did not become the device; log:\n{}",
            self.log()
        );
        // The namespace sandbox forks once more; chroot serves from the device process itself.
        let server = match (self.chroot, children(device).first()) {
            (true, _) => device,
            (false, Some(server)) => *server,
            (false, None) => panic!("no serving process; log:\n{}", self.log()),
        };
        (device, server)
    }
}

fn comm(pid: u32) -> String {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_owned()
}

fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

fn dev_ino(p: &Path) -> (u64, u64) {
    let m = fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    (m.dev(), m.ino())
}

fn start(as_nobody: bool, chroot: bool) -> Started {
    let cli = repo_root().join("dist/cli.js");
    assert!(
        cli.exists(),
        "{} is missing: run `npm run build` first",
        cli.display()
    );
    let dir = std::env::temp_dir().join(format!(
        "vfsd-sbx-{}-{}-{}",
        std::process::id(),
        u8::from(as_nobody),
        u8::from(chroot)
    ));
    let _ = fs::remove_dir_all(&dir);
    let share = dir.join("share");
    fs::create_dir_all(&share).unwrap();
    let log_path = dir.join("daemon.log");
    let log = fs::File::create(&log_path).unwrap();
    let stdout_path = dir.join("stdout");
    let stdout = fs::File::create(&stdout_path).unwrap();
    let leaked_path = dir.join("leaked");
    let leaked = fs::File::create(&leaked_path).unwrap();
    if as_nobody {
        for p in [&dir, &share] {
            std::os::unix::fs::chown(p, Some(NOBODY), Some(NOBODY)).unwrap();
        }
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let socket = dir.join("vfs.sock");
    let mut cmd = if as_nobody {
        let mut c = Command::new("setpriv");
        c.args([
            format!("--reuid={NOBODY}"),
            format!("--regid={NOBODY}"),
            "--clear-groups".into(),
            "node".into(),
        ]);
        c
    } else {
        Command::new("node")
    };
    let leaked_raw = leaked.as_raw_fd();
    cmd.arg(cli)
        .arg(format!("--socket-path={}", socket.display()))
        .arg(format!("--shared-dir={}", share.display()))
        .args(chroot.then_some("--sandbox=chroot"))
        .env_remove("RUST_BACKTRACE")
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(log);
    // SAFETY: the closure only calls dup2, which is async-signal-safe, on descriptors that are
    // open in the forked child.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(leaked_raw, LEAKED_FD) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().expect("cannot start the daemon");
    drop(leaked);
    let started = Started {
        child,
        share,
        socket,
        log_file: dev_ino(&log_path),
        inherited: vec![
            {
                let (d, i) = dev_ino(&stdout_path);
                (d, i, stdout_path)
            },
            {
                let (d, i) = dev_ino(&leaked_path);
                (d, i, leaked_path)
            },
        ],
        dir,
        chroot,
    };
    let begin = Instant::now();
    // The socket is bound before the sandbox is entered: wait for the serving process's report.
    while !started.log().contains("waiting for a vhost-user frontend") {
        assert!(
            begin.elapsed() < Duration::from_secs(20),
            "daemon did not listen; log:\n{}",
            started.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    started
}

fn session(s: &Started) -> Session {
    let mut session = Session::connect_retry(&s.socket, &test_options(), Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("cannot set up the device: {e}; log:\n{}", s.log()));
    session.init().expect("INIT");
    session
}

fn statfs_type(p: &Path) -> Option<i64> {
    let c = cstr(p);
    // SAFETY: statfs is plain data, filled by the call before it is read.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid C string and out pointer.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    #[allow(clippy::unnecessary_cast)]
    Some(st.f_type as i64)
}

/// No descriptor of `pid` names the inherited stdout or the leaked file, 0-1 are /dev/null, 2 is
/// the stderr the device was started with (and no other descriptor is), and
/// every file descriptor is a socket, an anonymous inode, the proc handle or inside the share.
fn check_descriptors(s: &Started, pid: u32, what: &str) {
    let null = dev_ino(Path::new("/dev/null"));
    let share = dev_ino(&s.share);
    for entry in fs::read_dir(format!("/proc/{pid}/fd")).unwrap().flatten() {
        let fd: i32 = entry.file_name().to_string_lossy().parse().unwrap();
        let p = entry.path();
        let Ok(link) = fs::read_link(&p) else {
            continue;
        };
        let link = link.to_string_lossy().into_owned();
        let Ok(m) = fs::metadata(&p) else {
            continue;
        };
        for (dev, ino, name) in &s.inherited {
            assert!(
                !(m.dev() == *dev && m.ino() == *ino),
                "{what}: fd {fd} ({link}) is the inherited {}",
                name.display()
            );
        }
        if fd == 2 {
            assert_eq!(
                (m.dev(), m.ino()),
                s.log_file,
                "{what}: fd 2 is {link}, not the stderr the device was started with"
            );
            continue;
        }
        assert_ne!(
            (m.dev(), m.ino()),
            s.log_file,
            "{what}: fd {fd} ({link}) is a second handle on the inherited stderr"
        );
        if fd <= 1 {
            assert_eq!(
                (m.dev(), m.ino()),
                null,
                "{what}: fd {fd} is {link}, not /dev/null"
            );
            continue;
        }
        if link.starts_with("socket:") || link.starts_with("anon_inode:") {
            continue;
        }
        if statfs_type(&p) == Some(PROC_SUPER_MAGIC) {
            continue; // the /proc/self/fd handle, checked in check_proc_handle
        }
        assert_eq!(
            m.dev(),
            share.0,
            "{what}: fd {fd} ({link}) is outside the share"
        );
    }
}

fn check_mounts(pid: u32, what: &str) {
    let table = fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    let mut root_seen = false;
    for line in table.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let sep = fields.iter().position(|f| *f == "-").unwrap();
        let (mount_point, options, fstype) = (fields[4], fields[5], fields[sep + 1]);
        assert_ne!(fstype, "proc", "{what}: a procfs is mounted: {line}");
        let options: Vec<&str> = options.split(',').collect();
        assert!(
            options.contains(&"nodev"),
            "{what}: {mount_point} lacks nodev: {line}"
        );
        assert!(
            options.contains(&"nosuid"),
            "{what}: {mount_point} lacks nosuid: {line}"
        );
        if mount_point == "/" {
            root_seen = true;
        }
    }
    assert!(root_seen, "{what}: no root mount in\n{table}");
}

fn open_at(dir: &OwnedFd, name: &str, flags: i32) -> io::Result<OwnedFd> {
    let c = CString::new(name).unwrap();
    // SAFETY: valid directory descriptor and C string; the result is checked before use.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), c.as_ptr(), flags | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: just opened, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn fd_dev_ino(fd: &OwnedFd) -> (u64, u64) {
    // SAFETY: stat is plain data, filled by fstat before it is read.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid descriptor and out pointer.
    assert_eq!(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) }, 0);
    #[allow(clippy::unnecessary_cast)]
    (st.st_dev as u64, st.st_ino as u64)
}

/// The device's procfs handle, reopened from the host through its /proc/PID/fd link (which
/// yields the very same mount and directory): `..` stays put, nothing of procfs beyond the
/// device's own descriptors is reachable, and the device's root holds no procfs either.
fn check_proc_handle(pid: u32, what: &str) {
    let mut handles = Vec::new();
    for entry in fs::read_dir(format!("/proc/{pid}/fd")).unwrap().flatten() {
        if statfs_type(&entry.path()) == Some(PROC_SUPER_MAGIC) {
            handles.push(entry.path());
        }
    }
    assert_eq!(handles.len(), 1, "{what}: procfs descriptors {handles:?}");
    let c = cstr(&handles[0]);
    // SAFETY: valid C string; the result is checked before being owned.
    let raw = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    assert!(raw >= 0, "{what}: {}", io::Error::last_os_error());
    // SAFETY: just opened, owned by nobody else.
    let handle = unsafe { OwnedFd::from_raw_fd(raw) };

    // It is the device's descriptor directory: its entries are the device's descriptors.
    let listed: Vec<String> = fs::read_dir(format!("/proc/self/fd/{}", handle.as_raw_fd()))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let mut mine: Vec<String> = fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let mut listed_sorted = listed.clone();
    listed_sorted.sort();
    mine.sort();
    assert_eq!(
        listed_sorted, mine,
        "{what}: the handle is not the device's fd directory"
    );

    for up in ["..", "../..", "../../..", "./../../.."] {
        let parent = open_at(&handle, up, libc::O_PATH | libc::O_DIRECTORY).unwrap();
        assert_eq!(
            fd_dev_ino(&parent),
            fd_dev_ino(&handle),
            "{what}: {up} from the handle leads elsewhere"
        );
    }
    for target in [
        "../../sys/kernel/core_pattern",
        "../sys/kernel/core_pattern",
        "../../../proc/sys/kernel/core_pattern",
        "../../1/environ",
        "../../self/mountinfo",
        "../status",
    ] {
        for flags in [libc::O_RDONLY, libc::O_WRONLY] {
            let r = open_at(&handle, target, flags);
            assert!(
                r.is_err(),
                "{what}: opened {target} (flags {flags:#o}) through the handle"
            );
        }
    }
    // Nor is there a procfs anywhere under the device's root.
    let root_proc = PathBuf::from(format!("/proc/{pid}/root/proc"));
    assert_ne!(
        statfs_type(&root_proc),
        Some(PROC_SUPER_MAGIC),
        "{what}: the device's root holds a procfs"
    );
    assert!(!Path::new(&format!("/proc/{pid}/root/proc/sys/kernel/core_pattern")).exists());
}

/// A device node in the share opens nowhere through the device's mounts (nodev), while the
/// device still serves it by name.
fn check_nodev(s: &Started, pid: u32, what: &str) {
    let node = s.share.join("nulldev");
    let c = cstr(&node);
    // SAFETY: valid C string; (1, 3) is /dev/null's device number.
    let made = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) };
    assert_eq!(
        made,
        0,
        "mknod in the share: {}",
        io::Error::last_os_error()
    );
    // Through the device's root, the path walk stays on the device's own (nodev) mounts.
    let inside = PathBuf::from(format!("/proc/{pid}/root/nulldev"));
    let err = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&inside)
        .expect_err("opened a device node through the device's mount");
    assert_eq!(err.raw_os_error(), Some(libc::EACCES), "{what}: {err}");
    let mut sess = session(s);
    let e = sess.lookup(ROOT_ID, b"nulldev").unwrap();
    assert_eq!(e.attr.mode & libc::S_IFMT, libc::S_IFCHR);
}

fn run_checks(as_nobody: bool, chroot: bool) {
    let what = match (as_nobody, chroot) {
        (_, true) => "root, --sandbox=chroot",
        (true, false) => "ordinary user",
        (false, false) => "root",
    };
    let s = start(as_nobody, chroot);
    let (device, server) = s.processes();
    let status = fs::read_to_string(format!("/proc/{server}/status")).unwrap();
    assert!(
        status
            .lines()
            .any(|l| l.split_whitespace().eq(["Seccomp:", "2"])),
        "{what}: no seccomp filter"
    );
    check_descriptors(&s, server, &format!("{what}, serving process"));
    check_descriptors(&s, device, &format!("{what}, waiting process"));
    check_mounts(server, what);
    check_proc_handle(server, what);
    // Serves a frontend (the device serves one, then exits), with stdio on /dev/null.
    check_nodev(&s, server, what);
}

fn is_root() -> bool {
    // SAFETY: no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn default_sandbox_as_root() {
    assert!(
        is_root(),
        "run the tests as root: they inspect the device's /proc entries"
    );
    run_checks(false, false);
}

#[test]
fn default_sandbox_as_an_ordinary_user() {
    assert!(
        is_root(),
        "run the tests as root: they switch to nobody with setpriv"
    );
    run_checks(true, false);
}

#[test]
fn chroot_sandbox_as_root() {
    assert!(
        is_root(),
        "run the tests as root: --sandbox=chroot needs it"
    );
    run_checks(false, true);
}
