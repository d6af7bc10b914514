use super::*;
use std::os::fd::{AsFd, IntoRawFd, OwnedFd};
use std::os::unix::net::{UnixDatagram, UnixStream};

fn temp_path(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vfsd-sock-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir.join("s.sock")
}

fn raw_socket(family: libc::c_int, kind: libc::c_int) -> OwnedFd {
    // SAFETY: plain socket creation; the result is checked before use.
    let fd = unsafe { libc::socket(family, kind | libc::SOCK_CLOEXEC, 0) };
    assert!(fd >= 0, "socket: {}", io::Error::last_os_error());
    // SAFETY: `fd` was just created and is owned by nobody else.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn listen(fd: &OwnedFd) {
    // SAFETY: listen on a descriptor we own; the result is checked.
    assert_eq!(unsafe { libc::listen(fd.as_raw_fd(), 4) }, 0);
}

/// The error `adopt_fd` gives for `fd`, which stays owned (and closed) by the caller.
fn adopt_error(fd: impl AsFd) -> SocketError {
    match adopt_fd(fd.as_fd().as_raw_fd()) {
        Ok(bound) => {
            // Hand the descriptor back so it is not closed twice.
            let _ = bound.listener.into_raw_fd();
            panic!("adopted a descriptor that should have been refused")
        }
        Err(e) => e,
    }
}

#[test]
fn binds_and_replaces_stale_socket() {
    let path = temp_path("stale");
    let first = bind_path(&path, None).unwrap();
    drop(first);
    let second = bind_path(&path, None).unwrap();
    assert!(is_socket(&path));
    second.remove_file();
    assert!(!path.exists());
}

#[test]
fn refuses_to_replace_a_regular_file() {
    let path = temp_path("file");
    fs::write(&path, b"precious").unwrap();
    assert!(matches!(
        bind_path(&path, None),
        Err(SocketError::PathOccupied(_))
    ));
    assert_eq!(fs::read(&path).unwrap(), b"precious");
}

#[test]
fn sets_group_and_mode() {
    let path = temp_path("group");
    let bound = bind_path(&path, Some("0")).unwrap();
    let meta = fs::metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    bound.remove_file();
    drop(bound);
    assert!(matches!(
        bind_path(&path, Some("no-such-group-here")),
        Err(SocketError::UnknownGroup(_))
    ));
}

#[test]
fn pid_file_holds_our_pid_with_owner_only_mode() {
    let path = temp_path("pidfile");
    let bound = bind_path(&path, None).unwrap();
    let pid_path = path.with_file_name("s.sock.pid");
    assert_eq!(pid_file_path(&path), pid_path);
    assert_eq!(
        fs::read_to_string(&pid_path).unwrap(),
        format!("{}\n", std::process::id())
    );
    assert_eq!(fs::metadata(&pid_path).unwrap().mode() & 0o777, 0o600);
    let fds = bound.raw_fds();
    assert_eq!(fds.len(), 2, "listener and lock file: {fds:?}");
    assert!(fds.contains(&bound.listener.as_raw_fd()));
    // As upstream: removing the socket leaves the pid file; the lock dies with the descriptor.
    bound.remove_file();
    drop(bound);
    assert!(pid_path.exists());
}

#[test]
fn second_bind_on_a_locked_path_fails_and_leaves_the_first_serving() {
    let path = temp_path("locked");
    let first = bind_path(&path, None).unwrap();
    let err = match bind_path(&path, None) {
        Err(e) => e,
        Ok(_) => panic!("a second bind on a locked path succeeded"),
    };
    match &err {
        SocketError::InUse { socket, lock, pid } => {
            assert_eq!(socket, &path);
            assert_eq!(lock, &pid_file_path(&path));
            assert_eq!(*pid, Some(std::process::id()));
        }
        other => panic!("unexpected error: {other}"),
    }
    let message = err.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains(".pid"), "{message}");
    // The first socket was neither unlinked nor replaced: it still accepts on the same inode.
    assert!(is_socket(&path));
    let client = UnixStream::connect(&path).unwrap();
    let (accepted, _) = first.listener.accept().unwrap();
    drop((client, accepted));
    // Once the first daemon is gone, the path is free again.
    drop(first);
    let third = bind_path(&path, None).unwrap();
    third.remove_file();
}

#[test]
fn stale_pid_file_contents_are_replaced() {
    let path = temp_path("stalepid");
    fs::write(pid_file_path(&path), b"4194304 and more junk\n").unwrap();
    let _bound = bind_path(&path, None).unwrap();
    assert_eq!(
        fs::read_to_string(pid_file_path(&path)).unwrap(),
        format!("{}\n", std::process::id())
    );
}

#[test]
fn lock_file_in_a_missing_directory_names_the_file() {
    let path = temp_path("missing")
        .with_file_name("no-such-dir")
        .join("s.sock");
    let err = match bind_path(&path, None) {
        Err(e) => e,
        Ok(_) => panic!("bound in a missing directory"),
    };
    assert!(
        matches!(&err, SocketError::PidFile(p, e) if p == &pid_file_path(&path) && e.kind() == io::ErrorKind::NotFound),
        "{err:?}"
    );
}

#[test]
fn adopts_a_listening_unix_stream_socket() {
    let path = temp_path("adopt");
    let listener = UnixListener::bind(&path).unwrap();
    let adopted = adopt_fd(listener.into_raw_fd()).unwrap();
    assert!(adopted.path.is_none());
    assert_eq!(adopted.raw_fds(), vec![adopted.listener.as_raw_fd()]);
}

#[test]
fn refuses_an_fd_that_is_not_open() {
    // Far above any open-file limit this test runs under, so it cannot be open.
    let err = adopt_fd(1 << 30).err().unwrap();
    assert!(
        matches!(err, SocketError::FdNotOpen(fd) if fd == 1 << 30),
        "{err:?}"
    );
    assert!(err.to_string().contains("file descriptor 1073741824"));
}

#[test]
fn refuses_files_and_pipes() {
    let path = temp_path("regular");
    fs::write(&path, b"").unwrap();
    let file = File::open(&path).unwrap();
    let err = adopt_error(&file);
    assert!(
        matches!(
            err,
            SocketError::FdNotSocket {
                kind: "regular file",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("is a regular file, not a socket"));

    let dir = File::open(path.parent().unwrap()).unwrap();
    let err = adopt_error(&dir);
    assert!(
        matches!(
            err,
            SocketError::FdNotSocket {
                kind: "directory",
                ..
            }
        ),
        "{err:?}"
    );

    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into `fds`; both are owned below.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both descriptors were just created and are owned by nobody else.
    let (read, _write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let err = adopt_error(&read);
    assert!(
        matches!(err, SocketError::FdNotSocket { kind: "pipe", fd } if fd == fds[0]),
        "{err:?}"
    );
    assert!(err
        .to_string()
        .contains(&format!("file descriptor {} (--fd)", fds[0])));
}

#[test]
fn refuses_sockets_of_other_families() {
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let err = adopt_error(&tcp);
    assert!(matches!(err, SocketError::FdNotUnix { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("is an IPv4 (AF_INET) socket, not a Unix (AF_UNIX) socket"),
        "{err}"
    );
    let netlink = raw_socket(libc::AF_NETLINK, libc::SOCK_DGRAM);
    assert!(matches!(
        adopt_error(&netlink),
        SocketError::FdNotUnix { .. }
    ));
}

#[test]
fn refuses_unix_sockets_that_are_not_streams() {
    let (datagram, _peer) = UnixDatagram::pair().unwrap();
    let err = adopt_error(&datagram);
    assert!(matches!(err, SocketError::FdNotStream { .. }), "{err:?}");
    assert!(err.to_string().contains("datagram (SOCK_DGRAM)"), "{err}");

    // A listening seqpacket socket passes every other check.
    let path = temp_path("seqpacket");
    let seqpacket = raw_socket(libc::AF_UNIX, libc::SOCK_SEQPACKET);
    let name = CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: all-zero is a valid sockaddr_un; the path is copied in below, NUL-terminated.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (dst, src) in addr.sun_path.iter_mut().zip(name.as_bytes_with_nul()) {
        *dst = *src as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
    // SAFETY: `addr` is a valid sockaddr_un of `len` bytes.
    let rc = unsafe {
        libc::bind(
            seqpacket.as_raw_fd(),
            (&addr as *const libc::sockaddr_un).cast(),
            len,
        )
    };
    assert_eq!(rc, 0, "bind: {}", io::Error::last_os_error());
    listen(&seqpacket);
    let err = adopt_error(&seqpacket);
    assert!(matches!(err, SocketError::FdNotStream { .. }), "{err:?}");
    assert!(
        err.to_string().contains("seqpacket (SOCK_SEQPACKET)"),
        "{err}"
    );
}

#[test]
fn refuses_unix_streams_that_are_not_listening() {
    let (connected, _peer) = UnixStream::pair().unwrap();
    let err = adopt_error(&connected);
    assert!(
        matches!(
            err,
            SocketError::FdNotListening {
                why: "it is connected to a peer",
                ..
            }
        ),
        "{err:?}"
    );
    let fresh = raw_socket(libc::AF_UNIX, libc::SOCK_STREAM);
    let err = adopt_error(&fresh);
    assert!(
        matches!(
            err,
            SocketError::FdNotListening {
                why: "listen() was not called on it",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("not listening"), "{err}");
}

#[test]
fn the_socket_appears_only_once_it_listens_and_no_staging_name_is_left() {
    let path = temp_path("staging");
    let dir = path.parent().unwrap().to_owned();
    let bound = bind_path(&path, None).unwrap();
    // The first look at the path connects: no refusal between bind and listen.
    std::os::unix::net::UnixStream::connect(&path).unwrap();
    let names: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        names.iter().all(|n| !n.starts_with(".s.sock.")),
        "{names:?}"
    );
    drop(bound);
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn a_path_with_no_room_for_a_staging_name_is_bound_in_place() {
    let long = Path::new("/tmp").join("x".repeat(100));
    assert_eq!(long.as_os_str().len(), 105);
    assert!(staging_path(&long).is_none());
    let short = Path::new("/run/vfsd.sock");
    let staged = staging_path(short).unwrap();
    assert_eq!(staged.parent(), short.parent());
    assert!(staged
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with(".vfsd.sock."));
}
