//! The vhost-user listening socket: bound at a path (with an optional owning group) or adopted from
//! an inherited file descriptor.

use std::ffi::CString;
use std::fmt;
use std::fs;
use std::io;
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

#[derive(Debug)]
pub enum SocketError {
    /// Something other than a socket already exists at the path: never delete it.
    PathOccupied(PathBuf),
    Bind(PathBuf, io::Error),
    UnknownGroup(String),
    Chown(PathBuf, io::Error),
    NotAListeningSocket(RawFd),
    Fd(RawFd, io::Error),
}

impl fmt::Display for SocketError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SocketError::PathOccupied(p) => {
                write!(
                    f,
                    "{} exists and is not a socket; refusing to replace it",
                    p.display()
                )
            }
            SocketError::Bind(p, e) => write!(f, "cannot listen on {}: {e}", p.display()),
            SocketError::UnknownGroup(g) => write!(f, "socket group {g:?} does not exist"),
            SocketError::Chown(p, e) => write!(f, "cannot set the group of {}: {e}", p.display()),
            SocketError::NotAListeningSocket(fd) => {
                write!(f, "file descriptor {fd} is not a listening Unix socket")
            }
            SocketError::Fd(fd, e) => write!(f, "file descriptor {fd}: {e}"),
        }
    }
}

impl std::error::Error for SocketError {}

/// A listening socket and, when we created its file, the path to remove on exit.
pub struct BoundSocket {
    pub listener: UnixListener,
    pub path: Option<PathBuf>,
}

impl BoundSocket {
    /// Removes the socket file we created; a path bound by someone else is left alone.
    pub fn remove_file(&self) {
        if let Some(path) = &self.path {
            remove_socket_file(path);
        }
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

/// Binds at `path`, replacing a stale socket left by an earlier run (as upstream does), and
/// hands the file to `group` with mode 0660 so the group's frontends can connect.
pub fn bind_path(path: &Path, group: Option<&str>) -> Result<BoundSocket, SocketError> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            fs::remove_file(path).map_err(|e| SocketError::Bind(path.to_owned(), e))?
        }
        Ok(_) => return Err(SocketError::PathOccupied(path.to_owned())),
        Err(_) => {}
    }
    let gid = group.map(lookup_group).transpose()?;
    let listener = UnixListener::bind(path).map_err(|e| SocketError::Bind(path.to_owned(), e))?;
    let bound = BoundSocket {
        listener,
        path: Some(path.to_owned()),
    };
    if let Some(gid) = gid {
        let result = std::os::unix::fs::chown(path, None, Some(gid))
            .and_then(|()| fs::set_permissions(path, fs::Permissions::from_mode(0o660)));
        if let Err(e) = result {
            bound.remove_file();
            return Err(SocketError::Chown(path.to_owned(), e));
        }
    }
    Ok(bound)
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

/// Takes ownership of an inherited listening socket.
pub fn adopt_fd(fd: RawFd) -> Result<BoundSocket, SocketError> {
    let mut accepting: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `accepting` and `len` are valid for writes of the sizes given.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ACCEPTCONN,
            (&mut accepting as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(SocketError::Fd(fd, io::Error::last_os_error()));
    }
    let mut domain: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: as above.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_DOMAIN,
            (&mut domain as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc != 0 || accepting == 0 || domain != libc::AF_UNIX {
        return Err(SocketError::NotAListeningSocket(fd));
    }
    // SAFETY: the fd was checked to be an open listening Unix socket that this process was given
    // to own; nothing else in the device process uses it.
    let listener = unsafe { UnixListener::from_raw_fd(fd) };
    Ok(BoundSocket {
        listener,
        path: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::IntoRawFd;

    fn temp_path(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("vfsd-sock-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir.join("s.sock")
    }

    #[test]
    fn binds_and_replaces_stale_socket() {
        let path = temp_path("stale");
        let first = bind_path(&path, None).unwrap();
        drop(first.listener);
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
        assert!(matches!(
            bind_path(&path, Some("no-such-group-here")),
            Err(SocketError::UnknownGroup(_))
        ));
    }

    #[test]
    fn adopts_only_listening_unix_sockets() {
        let path = temp_path("adopt");
        let listener = UnixListener::bind(&path).unwrap();
        let adopted = adopt_fd(listener.into_raw_fd()).unwrap();
        assert!(adopted.path.is_none());

        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        assert!(matches!(
            adopt_fd(a.into_raw_fd()),
            Err(SocketError::NotAListeningSocket(_))
        ));
        assert!(matches!(adopt_fd(9999), Err(SocketError::Fd(..))));
    }
}
