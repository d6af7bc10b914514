//! The `<socket-path>.pid` lock: a second daemon started on the socket path of a running one
//! exits 1 instead of unlinking its socket and taking the path over, and the first keeps serving.
//! Ours and the reference, which takes the same lock.

mod common;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{assert_answers, children, reference_path, repo_root, Daemon, Kind};

fn pid_file(socket: &Path) -> PathBuf {
    let mut name = socket.as_os_str().to_owned();
    name.push(".pid");
    PathBuf::from(name)
}

/// Runs a second daemon of `kind` on `socket` with a share of its own; bounded, so a second
/// daemon that wrongly starts serving fails the test instead of hanging it.
fn second_daemon(kind: Kind, socket: &Path, share: &Path, extra: &[&str]) -> Output {
    fs::create_dir_all(share).unwrap();
    let mut cmd = match kind {
        Kind::Ours => {
            let mut c = Command::new("node");
            c.arg(repo_root().join("dist/cli.js"));
            c
        }
        Kind::Reference => Command::new(reference_path()),
    };
    let mut child = cmd
        .arg(format!("--socket-path={}", socket.display()))
        .arg(format!("--shared-dir={}", share.display()))
        .args(extra)
        .env_remove("RUST_BACKTRACE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(15) {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{kind:?}: the second daemon on a locked socket path is still running; stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().unwrap()
}

/// `pid` and every process below it.
fn process_tree(pid: u32) -> Vec<u32> {
    let mut all = vec![pid];
    let mut i = 0;
    while i < all.len() {
        all.extend(children(all[i]));
        i += 1;
    }
    all
}

/// `pid` and its ancestors, as the host sees them.
fn ancestry(pid: u32) -> Vec<u32> {
    let mut all = vec![pid];
    while let Some(parent) = fs::read_to_string(format!("/proc/{}/status", all[all.len() - 1]))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("PPid:"))
                .and_then(|v| v.trim().parse::<u32>().ok())
        })
        .filter(|p| *p > 1)
    {
        all.push(parent);
    }
    all
}

fn second_daemon_is_refused(kind: Kind, extra: &[&str]) {
    let d = Daemon::start_with(kind, None, extra);
    // A session first: the first daemon is then past its sandbox set-up, which closes every
    // descriptor it does not keep, so the lock must have survived that.
    let mut session = d.session();
    let socket_inode = fs::metadata(&d.socket).unwrap().ino();

    let lock = fs::metadata(pid_file(&d.socket)).expect("no pid file next to the socket");
    assert_eq!(lock.mode() & 0o777, 0o600, "{kind:?}: pid file mode");
    let text = fs::read_to_string(pid_file(&d.socket)).unwrap();
    assert!(text.ends_with('\n'), "{kind:?}: pid file {text:?}");
    let pid: u32 = text
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("{kind:?}: pid file {text:?}"));
    assert!(
        ancestry(d.device_pid()).contains(&pid),
        "{kind:?}: pid file names {pid}, not a process of the daemon"
    );

    let out = second_daemon(kind, &d.socket, &d.dir.join("share2"), extra);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{kind:?}: second daemon; stderr:\n{stderr}"
    );
    let expected = match kind {
        Kind::Ours => format!(
            "another virtiofsd (pid {pid}) is already serving {}: it holds the lock on {}",
            d.socket.display(),
            pid_file(&d.socket).display()
        ),
        Kind::Reference => format!(
            "Error creating pid file '{}': Resource temporarily unavailable",
            pid_file(&d.socket).display()
        ),
    };
    assert!(stderr.contains(&expected), "{kind:?}: stderr:\n{stderr}");

    // The first socket was not replaced, and the first daemon still answers on its session.
    let meta = fs::symlink_metadata(&d.socket).unwrap();
    assert!(meta.file_type().is_socket(), "{kind:?}: socket file gone");
    assert_eq!(meta.ino(), socket_inode, "{kind:?}: socket file replaced");
    assert_eq!(fs::read_to_string(pid_file(&d.socket)).unwrap(), text);
    assert_answers(&mut session, kind);
}

#[test]
fn ours_refuses_a_second_daemon_on_the_same_socket_path() {
    second_daemon_is_refused(Kind::Ours, &[]);
}

#[test]
fn ours_refuses_a_second_daemon_without_a_sandbox() {
    second_daemon_is_refused(Kind::Ours, &["--sandbox=none"]);
}

#[test]
fn ours_refuses_a_second_daemon_with_the_chroot_sandbox() {
    second_daemon_is_refused(Kind::Ours, &["--sandbox=chroot"]);
}

#[test]
fn reference_refuses_a_second_daemon_on_the_same_socket_path() {
    second_daemon_is_refused(Kind::Reference, &[]);
}

/// After the frontend leaves, the daemon exits and releases the lock; the pid file stays (as
/// upstream leaves it) and does not stop the next daemon on that path.
fn path_is_free_after_exit(kind: Kind) {
    let mut d = Daemon::start(kind);
    drop(d.session());
    let status = d.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "{kind:?}: log:\n{}", d.log());
    assert!(
        pid_file(&d.socket).exists(),
        "{kind:?}: the pid file was removed on exit"
    );
    let mut next = Command::new(match kind {
        Kind::Ours => PathBuf::from("node"),
        Kind::Reference => reference_path(),
    });
    if kind == Kind::Ours {
        next.arg(repo_root().join("dist/cli.js"));
    }
    let mut next = next
        .arg(format!("--socket-path={}", d.socket.display()))
        .arg(format!("--shared-dir={}", d.share.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let listening = loop {
        if let Some(st) = next.try_wait().unwrap() {
            panic!("{kind:?}: the next daemon exited with {st} on a free path");
        }
        let ours = fs::read_to_string(pid_file(&d.socket))
            .ok()
            .and_then(|t| t.trim().parse::<u32>().ok())
            .is_some_and(|p| process_tree(next.id()).contains(&p));
        if ours && d.socket.exists() {
            break true;
        }
        if start.elapsed() > Duration::from_secs(15) {
            break false;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let _ = next.kill();
    let _ = next.wait();
    assert!(listening, "{kind:?}: the next daemon did not take the path");
}

#[test]
fn ours_frees_the_path_on_exit() {
    path_is_free_after_exit(Kind::Ours);
}

#[test]
fn reference_frees_the_path_on_exit() {
    path_is_free_after_exit(Kind::Reference);
}
