//! The vhost-user listening socket: bound at a path (with an optional owning group) or adopted from
//! an inherited file descriptor.
//!
//! A bound path is guarded, as upstream virtiofsd guards it, by an exclusive `flock` on
//! `<socket-path>.pid`: a second daemon started on the same path fails instead of unlinking the
//! first one's socket and silently taking its place.

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// Something other than a socket already exists at the path: never delete it.
    #[error("{} exists and is not a socket; refusing to replace it", .0.display())]
    PathOccupied(PathBuf),
    #[error("cannot listen on {}", .0.display())]
    Bind(PathBuf, #[source] io::Error),
    #[error("socket group {0:?} does not exist")]
    UnknownGroup(String),
    #[error("cannot set the group of {}", .0.display())]
    Chown(PathBuf, #[source] io::Error),
    /// Another process holds the lock on `<socket>.pid`: it serves this socket path.
    #[error(
        "another virtiofsd{} is already serving {}: it holds the lock on {}",
        pid.map(|p| format!(" (pid {p})")).unwrap_or_default(),
        socket.display(),
        lock.display()
    )]
    InUse {
        socket: PathBuf,
        lock: PathBuf,
        pid: Option<u32>,
    },
    #[error("cannot create the lock file {}", .0.display())]
    PidFile(PathBuf, #[source] io::Error),
    #[error(
        "file descriptor {0} (--fd) is not open in the daemon: whoever starts it must pass the \
         listening socket without close-on-exec"
    )]
    FdNotOpen(RawFd),
    #[error("file descriptor {fd} (--fd) is a {kind}, not a socket")]
    FdNotSocket { fd: RawFd, kind: &'static str },
    #[error("file descriptor {fd} (--fd) is {family} socket, not a Unix (AF_UNIX) socket")]
    FdNotUnix { fd: RawFd, family: String },
    #[error("file descriptor {fd} (--fd) is a Unix {kind} socket, not a stream (SOCK_STREAM) one")]
    FdNotStream { fd: RawFd, kind: String },
    #[error(
        "file descriptor {fd} (--fd) is a Unix stream socket that is not listening ({why}); \
         pass a socket after bind() and listen(), before any connection"
    )]
    FdNotListening { fd: RawFd, why: &'static str },
    #[error("cannot inspect file descriptor {0} (--fd)")]
    Fd(RawFd, #[source] io::Error),
}

/// A listening socket; when we created its file, the path to remove on exit and the lock that
/// keeps other daemons off that path.
pub struct BoundSocket {
    pub listener: UnixListener,
    pub path: Option<PathBuf>,
    /// The locked `<socket>.pid`. The lock lasts as long as some process holds this open file
    /// description, so it must survive the sandbox's closing of inherited descriptors.
    pid_file: Option<File>,
}

impl BoundSocket {
    /// Removes the socket file we created; a path bound by someone else is left alone. The pid
    /// file stays, as upstream leaves it: the lock, not the file, says whether a daemon runs.
    pub fn remove_file(&self) {
        if let Some(path) = &self.path {
            remove_socket_file(path);
        }
    }

    /// Every descriptor the socket layer needs for the rest of the daemon's life.
    pub fn raw_fds(&self) -> Vec<RawFd> {
        let mut fds = vec![self.listener.as_raw_fd()];
        fds.extend(self.pid_file.as_ref().map(AsRawFd::as_raw_fd));
        fds
    }
}

/// Removes `path` if it is a socket; anything else there is not ours.
pub fn remove_socket_file(path: &Path) {
    if is_socket(path) {
        let _ = fs::remove_file(path);
    }
}

fn is_socket(path: &Path) -> bool {
    fs::symlink_metadata(path)
        .map(|m| m.file_type().is_socket())
        .unwrap_or(false)
}

/// The lock file guarding `socket`: the socket path with `.pid` appended, as upstream names it.
pub fn pid_file_path(socket: &Path) -> PathBuf {
    let mut name = socket.as_os_str().to_owned();
    name.push(".pid");
    PathBuf::from(name)
}

/// Opens `<socket>.pid` (mode 0600), takes an exclusive non-blocking `flock` on it and writes our
/// pid into it.
fn lock_pid_file(socket: &Path) -> Result<File, SocketError> {
    let path = pid_file_path(socket);
    let failed = |e: io::Error| SocketError::PidFile(path.clone(), e);
    loop {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(&path)
            .map_err(failed)?;
        // SAFETY: flock on a descriptor we own; the result is checked.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                return Err(SocketError::InUse {
                    socket: socket.to_owned(),
                    pid: read_pid(file),
                    lock: path,
                });
            }
            return Err(failed(e));
        }
        // The holder we raced with may have unlinked or replaced the file between our open and
        // our lock: a lock on an inode no longer at the path guards nothing, so start again.
        let locked = file.metadata().map_err(failed)?;
        match fs::metadata(&path) {
            Ok(now) if now.dev() == locked.dev() && now.ino() == locked.ino() => {}
            _ => continue,
        }
        // A stale file may hold a longer pid from an earlier run.
        file.set_len(0).map_err(failed)?;
        (&file)
            .write_all(format!("{}\n", std::process::id()).as_bytes())
            .map_err(failed)?;
        return Ok(file);
    }
}

/// The pid a lock holder wrote, if it has written one yet.
fn read_pid(mut file: File) -> Option<u32> {
    let mut text = String::new();
    file.rewind().ok()?;
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

/// Binds at `path`, replacing a stale socket left by an earlier run (as upstream does), and
/// hands the file to `group` with mode 0660 so the group's frontends can connect. Fails with
/// [`SocketError::InUse`] while another daemon holds `<path>.pid`.
pub fn bind_path(path: &Path, group: Option<&str>) -> Result<BoundSocket, SocketError> {
    // Lock first: only the lock holder may decide that a socket at the path is stale.
    let pid_file = lock_pid_file(path)?;
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            fs::remove_file(path).map_err(|e| SocketError::Bind(path.to_owned(), e))?
        }
        Ok(_) => return Err(SocketError::PathOccupied(path.to_owned())),
        Err(_) => {}
    }
    let gid = group.map(lookup_group).transpose()?;
    // Bound under a name of its own and renamed into place once it listens and has its group:
    // a frontend that connects as soon as the path appears (as orchestrators do) never finds a
    // socket that refuses it between bind() and listen(). A path too long for a longer name
    // is bound in place.
    let staging = staging_path(path);
    let at = staging.as_deref().unwrap_or(path);
    let listener = UnixListener::bind(at).map_err(|e| SocketError::Bind(path.to_owned(), e))?;
    let placed = || -> Result<(), SocketError> {
        if let Some(gid) = gid {
            std::os::unix::fs::chown(at, None, Some(gid))
                .and_then(|()| fs::set_permissions(at, fs::Permissions::from_mode(0o660)))
                .map_err(|e| SocketError::Chown(path.to_owned(), e))?;
        }
        if at != path {
            fs::rename(at, path).map_err(|e| SocketError::Bind(path.to_owned(), e))?;
        }
        Ok(())
    };
    if let Err(e) = placed() {
        let _ = fs::remove_file(at);
        return Err(e);
    }
    Ok(BoundSocket {
        listener,
        path: Some(path.to_owned()),
        pid_file: Some(pid_file),
    })
}

/// A sibling of `path` to bind at before the rename, if it fits in `sun_path`.
fn staging_path(path: &Path) -> Option<PathBuf> {
    // sun_path holds 108 bytes with the terminating NUL.
    const SUN_PATH_MAX: usize = 107;
    let name = path.file_name()?;
    let mut staged = std::ffi::OsString::from(".");
    staged.push(name);
    staged.push(format!(".{}", std::process::id()));
    let staging = path.with_file_name(staged);
    (staging.as_os_str().len() <= SUN_PATH_MAX).then_some(staging)
}

fn lookup_group(name: &str) -> Result<u32, SocketError> {
    let unknown = || SocketError::UnknownGroup(name.to_owned());
    let cname = CString::new(name).map_err(|_| unknown())?;
    let mut buf = vec![0u8; 16384];
    // SAFETY: all-zero is a valid `group` value; getgrnam_r fills it in.
    let mut group: libc::group = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::group = std::ptr::null_mut();
    // SAFETY: every pointer refers to live memory of the advertised size for the whole call.
    let rc = unsafe {
        libc::getgrnam_r(
            cname.as_ptr(),
            &mut group,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 || result.is_null() {
        // A numeric group, as `chgrp` accepts.
        return name.parse::<u32>().map_err(|_| unknown());
    }
    Ok(group.gr_gid)
}

fn socket_option(fd: RawFd, option: libc::c_int) -> Result<libc::c_int, SocketError> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` and `len` are valid for writes of the sizes given.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            option,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(SocketError::Fd(fd, io::Error::last_os_error()));
    }
    Ok(value)
}

fn file_kind(mode: libc::mode_t) -> &'static str {
    match mode & libc::S_IFMT {
        libc::S_IFREG => "regular file",
        libc::S_IFDIR => "directory",
        libc::S_IFIFO => "pipe",
        libc::S_IFCHR => "character device",
        libc::S_IFBLK => "block device",
        libc::S_IFLNK => "symbolic link",
        // Anonymous inodes (eventfd, epoll, pidfd, ...) have no file type bits.
        _ => "non-file descriptor",
    }
}

fn family_name(family: libc::c_int) -> String {
    match family {
        libc::AF_INET => "an IPv4 (AF_INET)".to_owned(),
        libc::AF_INET6 => "an IPv6 (AF_INET6)".to_owned(),
        libc::AF_NETLINK => "a netlink (AF_NETLINK)".to_owned(),
        libc::AF_PACKET => "a packet (AF_PACKET)".to_owned(),
        libc::AF_VSOCK => "a vsock (AF_VSOCK)".to_owned(),
        other => format!("an address family {other}"),
    }
}

fn type_name(kind: libc::c_int) -> String {
    match kind {
        libc::SOCK_DGRAM => "datagram (SOCK_DGRAM)".to_owned(),
        libc::SOCK_SEQPACKET => "seqpacket (SOCK_SEQPACKET)".to_owned(),
        other => format!("type {other}"),
    }
}

/// Whether the socket has a peer: a connected socket is someone's conversation, not ours to serve.
fn has_peer(fd: RawFd) -> bool {
    // SAFETY: all-zero is a valid sockaddr_un; getpeername writes at most `len` bytes into it.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
    // SAFETY: `addr` and `len` are valid for writes of the sizes given.
    unsafe { libc::getpeername(fd, (&mut addr as *mut libc::sockaddr_un).cast(), &mut len) == 0 }
}

/// Checks that `fd` is an open, listening, not yet connected Unix stream socket, saying which of
/// these it is not. Upstream adopts whatever it is given and fails later with a vaguer error.
fn check_listening_unix_stream(fd: RawFd) -> Result<(), SocketError> {
    // SAFETY: F_GETFD only reads the descriptor's flags.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
        let e = io::Error::last_os_error();
        return Err(if e.raw_os_error() == Some(libc::EBADF) {
            SocketError::FdNotOpen(fd)
        } else {
            SocketError::Fd(fd, e)
        });
    }
    // SAFETY: all-zero is a valid `stat`; fstat fills it in.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is valid for writes of a whole `stat`.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return Err(SocketError::Fd(fd, io::Error::last_os_error()));
    }
    if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return Err(SocketError::FdNotSocket {
            fd,
            kind: file_kind(st.st_mode),
        });
    }
    let family = socket_option(fd, libc::SO_DOMAIN)?;
    if family != libc::AF_UNIX {
        return Err(SocketError::FdNotUnix {
            fd,
            family: family_name(family),
        });
    }
    let kind = socket_option(fd, libc::SO_TYPE)?;
    if kind != libc::SOCK_STREAM {
        return Err(SocketError::FdNotStream {
            fd,
            kind: type_name(kind),
        });
    }
    if socket_option(fd, libc::SO_ACCEPTCONN)? == 0 {
        let why = if has_peer(fd) {
            "it is connected to a peer"
        } else {
            "listen() was not called on it"
        };
        return Err(SocketError::FdNotListening { fd, why });
    }
    Ok(())
}

/// Takes ownership of an inherited listening socket. Nothing guards an adopted socket's path: its
/// owner (systemd, a VM manager) decided who listens on it.
pub fn adopt_fd(fd: RawFd) -> Result<BoundSocket, SocketError> {
    check_listening_unix_stream(fd)?;
    // SAFETY: the fd was checked to be an open listening Unix stream socket that this process was
    // given to own; nothing else in the device process uses it.
    let listener = unsafe { UnixListener::from_raw_fd(fd) };
    Ok(BoundSocket {
        listener,
        path: None,
        pid_file: None,
    })
}

#[cfg(test)]
#[path = "socket_tests.rs"]
mod tests;
