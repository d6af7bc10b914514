//! The systemd socket-activation recipe of docs/recipes.md: systemd owns the listening socket and
//! starts the daemon with it as descriptor 3 (LISTEN_FDS=1) on the first connection; the daemon
//! serves that frontend, exits 0 when it leaves, and leaves the socket file to systemd. Run with
//! `systemd-socket-activate`, which does what a `.socket` unit with `Accept=no` does.

mod common;

use std::fs;
use std::os::unix::fs::FileTypeExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{assert_answers, reference_path, repo_root, test_options, Kind};
use virtiofsd_frontend::Session;

fn socket_activated(kind: Kind) {
    let dir = std::env::temp_dir().join(format!("vfsd-activate-{}-{kind:?}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    let share = dir.join("share");
    fs::create_dir_all(&share).unwrap();
    fs::write(share.join("hello"), b"hi").unwrap();
    let socket = dir.join("vfs.sock");
    let log = fs::File::create(dir.join("log")).unwrap();

    let mut cmd = Command::new("systemd-socket-activate");
    cmd.arg("-l").arg(&socket);
    match kind {
        Kind::Ours => cmd.arg("node").arg(repo_root().join("dist/cli.js")),
        Kind::Reference => cmd.arg(reference_path()),
    };
    let mut child = cmd
        .arg("--fd=3")
        .arg(format!("--shared-dir={}", share.display()))
        .env_remove("RUST_BACKTRACE")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run systemd-socket-activate (package systemd): {e}"));
    let log = || fs::read_to_string(dir.join("log")).unwrap_or_default();

    let start = Instant::now();
    while !socket.exists() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "{kind:?}: exited early:\n{}",
            log()
        );
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{kind:?}: no socket:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut session = Session::connect_retry(&socket, &test_options(), Duration::from_secs(10))
        .unwrap_or_else(|e| {
            panic!(
                "{kind:?}: no device behind the activated socket: {e}\n{}",
                log()
            )
        });
    session.init().unwrap();
    assert_answers(&mut session, kind);
    drop(session);

    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!(
                "{kind:?}: still running after the frontend left:\n{}",
                log()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(status.code(), Some(0), "{kind:?}:\n{}", log());
    // Ours never removes a socket it did not create.
    if kind == Kind::Ours {
        let meta = fs::symlink_metadata(&socket).expect("the activated socket file was removed");
        assert!(meta.file_type().is_socket());
        assert!(!PathBuf::from(format!("{}.pid", socket.display())).exists());
    }
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn ours_serves_a_systemd_activated_socket() {
    socket_activated(Kind::Ours);
}

#[test]
fn reference_serves_a_systemd_activated_socket() {
    socket_activated(Kind::Reference);
}
