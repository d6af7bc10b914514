//! Handing the process over to the device executable.

use std::convert::Infallible;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("{0} contains a NUL byte")]
    Argument(&'static str),
    #[error("cannot pass the configuration to the device: {0}")]
    Config(#[source] io::Error),
    #[error("descriptor {0} (--fd) is not open")]
    NotOpen(RawFd),
    #[error("descriptor {0} cannot be inherited: {1}")]
    Descriptor(RawFd, #[source] io::Error),
    #[error("cannot run the device executable {0}: {1}")]
    Exec(String, #[source] io::Error),
}

fn c_string(text: &str, what: &'static str) -> Result<CString, ExecError> {
    CString::new(text).map_err(|_| ExecError::Argument(what))
}

/// A sealed, inheritable memfd holding `content`, positioned at its start.
fn config_memfd(content: &str) -> io::Result<OwnedFd> {
    // SAFETY: a valid C string and flags; the result is checked before being owned. No
    // MFD_CLOEXEC: the descriptor is meant to survive the exec.
    let fd = unsafe { libc::memfd_create(c"virtiofsd-config".as_ptr(), libc::MFD_ALLOW_SEALING) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just created and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut written = 0;
    let bytes = content.as_bytes();
    while written < bytes.len() {
        // SAFETY: the pointer and length describe the unwritten rest of `bytes`.
        let n = unsafe {
            libc::write(
                fd.as_raw_fd(),
                bytes[written..].as_ptr().cast(),
                bytes.len() - written,
            )
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        written += n as usize;
    }
    let seals = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
    // SAFETY: fcntl and lseek on a descriptor we own, with constant arguments.
    unsafe {
        if libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) < 0
            || libc::lseek(fd.as_raw_fd(), 0, libc::SEEK_SET) < 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(fd)
}

fn clear_flag(fd: RawFd, get: libc::c_int, set: libc::c_int, flag: libc::c_int) -> io::Result<()> {
    // SAFETY: F_GETFD/F_GETFL and F_SETFD/F_SETFL only read and change descriptor flags.
    unsafe {
        let flags = libc::fcntl(fd, get);
        if flags < 0 || libc::fcntl(fd, set, flags & !flag) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

pub fn exec_device(
    executable: &str,
    argv: &[String],
    env: &[String],
    config_json: &str,
    keep_fds: &[i32],
) -> ExecError {
    match prepare_and_exec(executable, argv, env, config_json, keep_fds) {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

fn prepare_and_exec(
    executable: &str,
    argv: &[String],
    env: &[String],
    config_json: &str,
    keep_fds: &[i32],
) -> Result<Infallible, ExecError> {
    let path = c_string(executable, "the executable path")?;
    let envp = env
        .iter()
        .map(|e| c_string(e, "the environment"))
        .collect::<Result<Vec<_>, _>>()?;
    let config = config_memfd(config_json).map_err(ExecError::Config)?;
    let mut args = Vec::with_capacity(argv.len() + 1);
    let mut rest = argv.iter();
    args.push(c_string(rest.next().map_or("virtiofsd", |s| s), "argv")?);
    args.push(c_string(
        &format!("--config-fd={}", config.as_raw_fd()),
        "argv",
    )?);
    for arg in rest {
        args.push(c_string(arg, "argv")?);
    }
    for &fd in keep_fds {
        clear_flag(fd, libc::F_GETFD, libc::F_SETFD, libc::FD_CLOEXEC).map_err(|e| {
            match e.raw_os_error() {
                Some(libc::EBADF) => ExecError::NotOpen(fd),
                _ => ExecError::Descriptor(fd, e),
            }
        })?;
    }
    // Node's event loop marks its standard streams close-on-exec and non-blocking. The device
    // logs to the same stderr, and the non-blocking flag lives in the open file, shared with
    // whoever started us, where it would turn the device's log writes into EAGAIN.
    for fd in 0..=2 {
        let _ = clear_flag(fd, libc::F_GETFD, libc::F_SETFD, libc::FD_CLOEXEC);
        let _ = clear_flag(fd, libc::F_GETFL, libc::F_SETFL, libc::O_NONBLOCK);
    }
    let mut argp: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argp.push(std::ptr::null());
    let mut envpp: Vec<*const libc::c_char> = envp.iter().map(|e| e.as_ptr()).collect();
    envpp.push(std::ptr::null());
    // SAFETY: every pointer refers to a NUL-terminated string kept alive until the call
    // returns, and both arrays end with a null pointer. On success nothing of this process
    // survives; other threads (Node's) end with the exec.
    unsafe { libc::execve(path.as_ptr(), argp.as_ptr(), envpp.as_ptr()) };
    let err = io::Error::last_os_error();
    drop(config);
    Err(ExecError::Exec(executable.to_string(), err))
}
