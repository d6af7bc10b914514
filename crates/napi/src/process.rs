//! Forking a device process out of the embedding Node process.
//!
//! The child is a single-threaded copy of Node that immediately becomes a plain Rust program: it
//! resets signal handling that Node installed, closes every file descriptor it does not need,
//! detaches from the terminal's process group (the parent decides when it stops), and runs the
//! daemon. It never returns into JavaScript and ends with `_exit`, so Node's exit handlers and
//! buffers, which belong to the parent, are never run twice.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::Mutex;

use virtiofsd_daemon::config::{DaemonConfig, SocketConfig};

/// Device processes started by this addon that have not been reaped, by pid. The pidfd makes
/// signals safe against pid reuse.
static CHILDREN: Mutex<Option<HashMap<i32, OwnedFd>>> = Mutex::new(None);

pub struct Spawned {
    pub pid: i32,
    /// The parent's end of the control socketpair (close-on-exec).
    pub control_fd: RawFd,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Status {
    Running,
    Exited(i32),
    Signaled(i32),
}

pub fn spawn(config: DaemonConfig) -> io::Result<Spawned> {
    let (parent_end, child_end) = UnixStream::pair()?;
    // SAFETY: getpid has no preconditions.
    let parent_pid = unsafe { libc::getpid() };
    // SAFETY: the child only runs `child_main`, which never returns; see its comments for why
    // what it does is sound in a forked copy of a multi-threaded process on glibc and musl.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        drop(parent_end);
        child_main(config, child_end, parent_pid);
    }
    drop(child_end);
    // SAFETY: pidfd_open takes a pid and flags; the returned fd (if any) is ours to own.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if pidfd >= 0 {
        // SAFETY: pidfd_open returned a new, open file descriptor.
        let fd = unsafe { OwnedFd::from_raw_fd(pidfd as RawFd) };
        lock_children()
            .get_or_insert_with(HashMap::new)
            .insert(pid, fd);
    }
    Ok(Spawned {
        pid,
        control_fd: parent_end.into_raw_fd(),
    })
}

fn lock_children() -> std::sync::MutexGuard<'static, Option<HashMap<i32, OwnedFd>>> {
    CHILDREN
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Non-blocking wait for a device process started by [`spawn`].
pub fn reap(pid: i32) -> io::Result<Status> {
    let mut status: libc::c_int = 0;
    // SAFETY: `status` is valid for writes; WNOHANG keeps the call from blocking the event loop.
    let rc = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    if rc == 0 {
        return Ok(Status::Running);
    }
    if let Some(children) = lock_children().as_mut() {
        children.remove(&pid);
    }
    if libc::WIFEXITED(status) {
        Ok(Status::Exited(libc::WEXITSTATUS(status)))
    } else if libc::WIFSIGNALED(status) {
        Ok(Status::Signaled(libc::WTERMSIG(status)))
    } else {
        Ok(Status::Running)
    }
}

/// Sends `signal` through the process's pidfd, so a reaped pid reused by another process is never
/// hit. A device already reaped is left alone.
pub fn signal(pid: i32, signal: i32) -> io::Result<()> {
    let children = lock_children();
    let Some(fd) = children.as_ref().and_then(|c| c.get(&pid)) else {
        return Ok(());
    };
    // SAFETY: the pidfd is open for as long as the lock is held; a null siginfo is allowed.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if rc < 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::ESRCH) {
            return Ok(());
        }
        return Err(err);
    }
    Ok(())
}

/// Runs in the forked child. Only this thread exists here; other threads' locks that were held at
/// fork time are never touched: the C library's allocator re-initialises its locks across fork,
/// and nothing below uses Node or V8.
fn child_main(config: DaemonConfig, control: UnixStream, parent_pid: i32) -> ! {
    let code = prepare_child(&config, &control, parent_pid)
        .map(|()| {
            std::panic::set_hook(Box::new(|info| {
                eprintln!("virtiofsd device process panicked: {info}");
                // SAFETY: _exit ends the process at once; any thread may call it.
                unsafe { libc::_exit(101) }
            }));
            std::panic::catch_unwind(move || virtiofsd_daemon::run(config, control)).unwrap_or(101)
        })
        .unwrap_or_else(|e| {
            eprintln!("virtiofsd: cannot prepare the device process: {e}");
            1
        });
    // SAFETY: _exit ends the process without running the parent's exit handlers.
    unsafe { libc::_exit(code) }
}

fn prepare_child(config: &DaemonConfig, control: &UnixStream, parent_pid: i32) -> io::Result<()> {
    reset_signals()?;
    // SAFETY: plain syscalls on this process with constant arguments.
    unsafe {
        // Terminal signals (Ctrl-C) go to the parent, which stops its devices in order.
        libc::setpgid(0, 0);
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGTERM as libc::c_ulong,
            0,
            0,
            0,
        );
        libc::prctl(
            libc::PR_SET_NAME,
            c"virtiofsd".as_ptr() as libc::c_ulong,
            0,
            0,
            0,
        );
        // The parent died between fork and PR_SET_PDEATHSIG: nobody would ever stop us.
        if libc::getppid() != parent_pid {
            return Err(io::Error::other("parent exited during start-up"));
        }
    }
    redirect_stdio()?;
    let mut keep = vec![0, 1, 2, control.as_raw_fd()];
    if let SocketConfig::Fd { fd } = config.socket {
        keep.push(fd);
    }
    close_fds_except(&mut keep);
    Ok(())
}

/// Node installs handlers and blocks signals for its own threads; the device wants the defaults.
fn reset_signals() -> io::Result<()> {
    // SAFETY: sigset_t is initialised by sigemptyset; SIG_DFL is a valid disposition for every
    // signal that can be caught (SIGKILL and SIGSTOP are skipped).
    unsafe {
        for sig in 1..libc::SIGRTMAX() {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        let rc = libc::pthread_sigmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
    }
    Ok(())
}

/// Standard input and output are the embedder's; stderr stays for last-resort panic messages.
fn redirect_stdio() -> io::Result<()> {
    // SAFETY: open/dup2/close on fds this process owns; the path is a valid C string.
    unsafe {
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
        if null < 0 {
            return Err(io::Error::last_os_error());
        }
        libc::dup2(null, 0);
        libc::dup2(null, 1);
        if null > 2 {
            libc::close(null);
        }
    }
    Ok(())
}

/// Closes every descriptor inherited from Node (its epoll instance, pipes, sockets, files) except
/// those in `keep`, so the device holds nothing of the parent's.
fn close_fds_except(keep: &mut [RawFd]) {
    keep.sort_unstable();
    let mut next: u32 = 0;
    for &fd in keep.iter() {
        let fd = fd as u32;
        if fd > next {
            close_range(next, fd - 1);
        }
        next = next.max(fd + 1);
    }
    close_range(next, u32::MAX);
}

fn close_range(first: u32, last: u32) {
    // SAFETY: closing descriptors this process owns; nothing in this single-threaded child
    // refers to them any more.
    let rc = unsafe { libc::syscall(libc::SYS_close_range, first, last, 0) };
    if rc != 0 {
        // Kernels before 5.9 lack close_range: close one by one, bounded by the fd limit.
        // SAFETY: sysconf has no preconditions.
        let max = unsafe { libc::sysconf(libc::_SC_OPEN_MAX) }.max(1024) as u32;
        for fd in first..=last.min(max) {
            // SAFETY: as above; EBADF for unused numbers is harmless.
            unsafe { libc::close(fd as RawFd) };
        }
    }
}
