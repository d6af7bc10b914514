//! The namespace sandbox: new mount, PID and network namespaces (plus a user namespace when
//! unprivileged), the shared directory as root, the old root detached.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use crate::idmap::{self, IdMapError, IdRange};
use crate::sys;
use crate::{Options, SandboxError, Sandboxed};

pub fn enter(opts: &Options<'_>, on_exit: &dyn Fn()) -> Result<Sandboxed, SandboxError> {
    let (uid, gid) = (sys::geteuid(), sys::getegid());
    let privileged = uid == 0;
    let mut flags = libc::CLONE_NEWPID | libc::CLONE_NEWNS | libc::CLONE_NEWNET;
    if !privileged {
        flags |= libc::CLONE_NEWUSER;
    }
    let ranges = !opts.uid_map.is_empty() || !opts.gid_map.is_empty();
    if !privileged && ranges {
        // Only a process outside the new user namespace can run the setuid map helpers on it.
        unshare_in_child_mapped_by_parent(flags, opts.uid_map, opts.gid_map, on_exit)?;
    } else {
        sys::unshare(flags).map_err(|e| SandboxError::Sys("unshare", e))?;
        if !privileged {
            idmap::map_self(uid, gid).map_err(|e| SandboxError::IdMap(IdMapError::Own(e)))?;
        }
    }
    // CLONE_NEWPID applies to children only: the serving process is the next one.
    fork_and_wait(on_exit)?;
    setup_root(opts.shared_dir)
}

/// Forks; the parent waits for the child and never returns, the child returns, bound to die
/// with its parent.
fn fork_and_wait(on_exit: &dyn Fn()) -> Result<(), SandboxError> {
    // Closes the window between the fork and the child's PR_SET_PDEATHSIG (getppid cannot tell:
    // across a PID namespace it reads 0 whoever the parent is). The child arms the signal, then
    // checks that the parent's end is still open, then says so; the parent keeps its end until
    // then, and holds nothing afterwards.
    let (armed_child, armed_parent) = socket_pair()?;
    // Blocked before the fork so a child that ends at once still leaves SIGCHLD pending.
    let old = block(&waiter_signals()).map_err(|e| SandboxError::Sys("sigprocmask", e))?;
    let pid = sys::fork().map_err(|e| SandboxError::Sys("fork", e));
    match pid {
        Ok(0) => {
            drop(armed_parent);
            sys::set_parent_death_signal(libc::SIGKILL);
            if peer_gone(&armed_child) || write_byte(&armed_child).is_err() {
                // SAFETY: ends this forked child at once; nobody waits for it any more.
                unsafe { libc::_exit(1) };
            }
            drop(armed_child);
            set_mask(&old).map_err(|e| SandboxError::Sys("sigprocmask", e))?;
            Ok(())
        }
        Ok(child) => {
            drop(armed_child);
            // A byte once armed, end of file if the child died first: either way, go on waiting.
            let _ = read_byte(&armed_parent);
            drop(armed_parent);
            wait_forwarding(child, on_exit)
        }
        Err(e) => {
            let _ = set_mask(&old);
            Err(e)
        }
    }
}

fn unshare_in_child_mapped_by_parent(
    flags: libc::c_int,
    uid_map: &[IdRange],
    gid_map: &[IdRange],
    on_exit: &dyn Fn(),
) -> Result<(), SandboxError> {
    let (ready_r, ready_w) = pipe()?;
    let (go_r, go_w) = pipe()?;
    let old = block(&waiter_signals()).map_err(|e| SandboxError::Sys("sigprocmask", e))?;
    match sys::fork().map_err(|e| SandboxError::Sys("fork", e))? {
        0 => {
            drop((ready_r, go_w));
            // Before the handshake: a parent that dies after this kills us, one that died
            // before never sends the go byte.
            sys::set_parent_death_signal(libc::SIGKILL);
            set_mask(&old).map_err(|e| SandboxError::Sys("sigprocmask", e))?;
            sys::unshare(flags).map_err(|e| SandboxError::Sys("unshare", e))?;
            write_byte(&ready_w).map_err(|e| SandboxError::Sys("sync", e))?;
            // End of file instead of a byte: the parent could not map us, and reports why
            // (which helper failed and how) on the shared control channel. Leave quietly, so
            // that report is the one the user sees.
            if !read_byte(&go_r) {
                // SAFETY: ends this forked child at once; it holds nothing to flush or release.
                unsafe { libc::_exit(1) };
            }
            Ok(())
        }
        child => {
            drop((ready_w, go_r));
            let mapped = if read_byte(&ready_r) {
                idmap::map_with_helpers(child, uid_map, gid_map)
            } else {
                Err(IdMapError::NoNamespaces)
            };
            match mapped {
                Ok(()) => {
                    let _ = write_byte(&go_w);
                    drop(go_w);
                    wait_forwarding(child, on_exit)
                }
                Err(e) => {
                    drop(go_w);
                    // The child gives up on end of file; reap it so no zombie is left.
                    let mut status = 0;
                    // SAFETY: waiting for our own child; `status` is valid for writes.
                    unsafe { libc::waitpid(child, &mut status, 0) };
                    let _ = set_mask(&old);
                    Err(SandboxError::IdMap(e))
                }
            }
        }
    }
}

/// Mounts and root change in the serving process. It takes a mount namespace of its own first,
/// so the waiting parent keeps seeing host paths (it removes the socket file at the end).
fn setup_root(shared_dir: &Path) -> Result<Sandboxed, SandboxError> {
    private_mounts()?;
    let proc_self_fd = private_proc_self_fd()?;
    bind_share(shared_dir)?;
    sys::chdir(shared_dir).map_err(|e| SandboxError::Path("chdir", shared_dir.to_owned(), e))?;
    sys::pivot_root_here()
        .map_err(|e| SandboxError::Path("pivot_root", shared_dir.to_owned(), e))?;
    // The old root now sits on top of "."; detaching it leaves only the share.
    sys::umount_detach(Path::new("."))
        .map_err(|e| SandboxError::Sys("detaching the old root", e))?;
    sys::chdir(Path::new("/")).map_err(|e| SandboxError::Sys("chdir /", e))?;
    Ok(Sandboxed {
        proc_self_fd,
        root_dir: PathBuf::from("/"),
        host_paths_visible: false,
    })
}

/// A mount namespace of this process's own, with every mount private to it.
pub(crate) fn private_mounts() -> Result<(), SandboxError> {
    sys::unshare(libc::CLONE_NEWNS).map_err(|e| SandboxError::Sys("unshare", e))?;
    sys::mount(None, Path::new("/"), None, libc::MS_REC | libc::MS_PRIVATE)
        .map_err(|e| SandboxError::Sys("making mounts private", e))
}

/// Bind-mounts the share onto itself, `nodev,nosuid`: the new root of `pivot_root` or `chroot`.
pub(crate) fn bind_share(shared_dir: &Path) -> Result<(), SandboxError> {
    // pivot_root wants the new root to be a mount point.
    sys::mount(
        Some(shared_dir),
        shared_dir,
        None,
        libc::MS_BIND | libc::MS_REC,
    )
    .map_err(|e| SandboxError::Path("bind mount", shared_dir.to_owned(), e))?;
    // A bind mount takes no other flags: add them afterwards, to the share and every mount in
    // it. nodev makes device nodes in the share inert for the device (the guest may still make
    // them with CAP_MKNOD, as upstream allows, but opening one fails here). nosuid changes
    // nothing the device does (it executes nothing: execve is outside the seccomp allow list)
    // and is kept as defence in depth; neither flag changes what the guest sees of a file.
    sys::make_nodev_nosuid(shared_dir)
        .map_err(|e| SandboxError::Path("nodev,nosuid on", shared_dir.to_owned(), e))?;
    Ok(())
}

/// The device's handle on its own `/proc/self/fd`, and nothing else of procfs.
///
/// A fresh procfs of the process's PID namespace is mounted on `/proc` (in this process's private
/// mount namespace, so the host's is untouched), its `self/fd` (this process's, resolved now) is
/// bind-mounted on top, and the handle is the root of that bind mount. Both mounts are then
/// detached: the bind mount stays alive through the handle alone, with no parent mount, so `..`
/// from the handle stays in the descriptor directory instead of climbing to the rest of procfs
/// (`../../sys/kernel/core_pattern`). Upstream virtiofsd binds `/proc/self/fd` the same way.
/// Any failure ends start-up: the host's full procfs is never used instead.
pub(crate) fn private_proc_self_fd() -> Result<OwnedFd, SandboxError> {
    let proc = Path::new("/proc");
    sys::mount(
        Some(Path::new("proc")),
        proc,
        Some("proc"),
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
    )
    .map_err(|e| SandboxError::ProcSelfFd("mounting a procfs on /proc", e))?;
    sys::mount(Some(Path::new("/proc/self/fd")), proc, None, libc::MS_BIND)
        .map_err(|e| SandboxError::ProcSelfFd("bind-mounting /proc/self/fd on /proc", e))?;
    let handle = sys::open_path(proc)
        .map_err(|e| SandboxError::ProcSelfFd("opening the bound /proc/self/fd", e))?;
    // First the bind mount (kept alive by `handle`), then the procfs under it.
    for what in [
        "detaching the /proc/self/fd bind mount",
        "unmounting the procfs",
    ] {
        sys::umount_detach(proc).map_err(|e| SandboxError::ProcSelfFd(what, e))?;
    }
    Ok(handle)
}

/// SIGCHLD, the stop signals, and SIGUSR1 (print statistics), which the waiter passes on: a
/// management tool signals the pid it started, and that is the waiter.
fn waiter_signals() -> [libc::c_int; 5] {
    [
        libc::SIGCHLD,
        libc::SIGTERM,
        libc::SIGINT,
        libc::SIGHUP,
        libc::SIGUSR1,
    ]
}

fn sigset(signals: &[libc::c_int]) -> libc::sigset_t {
    // SAFETY: sigset_t is plain data, initialised by sigemptyset before use.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &s in signals {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

fn block(signals: &[libc::c_int]) -> io::Result<libc::sigset_t> {
    let set = sigset(signals);
    // SAFETY: all-zero is a valid sigset_t to be overwritten.
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid.
    let rc = unsafe { libc::sigprocmask(libc::SIG_BLOCK, &set, &mut old) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(old)
}

fn set_mask(mask: &libc::sigset_t) -> io::Result<()> {
    // SAFETY: `mask` is an initialised set.
    let rc = unsafe { libc::sigprocmask(libc::SIG_SETMASK, mask, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The waiting parent: holds no descriptor (so the control socket's end of file is the serving
/// process's alone), forwards stop signals and SIGUSR1, and exits as the child did.
fn wait_forwarding(child: libc::pid_t, on_exit: &dyn Fn()) -> ! {
    sys::close_from(3);
    // Signalling its own child needs no capability; removing the socket file may need to get
    // past directory permissions and a sticky bit.
    let waiter_caps = (1 << 1) | (1 << 3);
    if let Err(e) = crate::caps::restrict(waiter_caps) {
        log::debug!("cannot drop the waiting process's capabilities: {e}");
    }
    let set = sigset(&waiter_signals());
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: waiting for our own child; `status` is valid for writes.
        let rc = unsafe { libc::waitpid(child, &mut status, libc::WNOHANG) };
        if rc == child
            || (rc < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD))
        {
            on_exit();
            exit_like(status);
        }
        let mut sig: libc::c_int = 0;
        // SAFETY: `set` is initialised and `sig` valid for writes.
        if unsafe { libc::sigwait(&set, &mut sig) } != 0 || sig == libc::SIGCHLD {
            continue;
        }
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child, sig) };
    }
}

fn exit_like(status: libc::c_int) -> ! {
    if libc::WIFEXITED(status) {
        sys::exit_now(libc::WEXITSTATUS(status));
    }
    if libc::WIFSIGNALED(status) {
        let sig = libc::WTERMSIG(status);
        // SAFETY: restoring the default action and raising the same signal on ourselves.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
            let set = sigset(&[sig]);
            libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            libc::raise(sig);
        }
        sys::exit_now(128 + sig);
    }
    sys::exit_now(1)
}

fn pipe() -> Result<(OwnedFd, OwnedFd), SandboxError> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(SandboxError::Sys("pipe", io::Error::last_os_error()));
    }
    // SAFETY: pipe2 just created both descriptors; each is owned once.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Whether the peer of `fd`, which never sends anything, has closed its end.
fn peer_gone(fd: &OwnedFd) -> bool {
    let mut pollfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd; a zero timeout only samples the state.
    let n = unsafe { libc::poll(&mut pollfd, 1, 0) };
    // End of file reads as POLLIN (and POLLHUP once both directions are shut).
    n > 0 && pollfd.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0
}

fn socket_pair() -> Result<(OwnedFd, OwnedFd), SandboxError> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for two descriptors.
    let rc = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return Err(SandboxError::Sys("socketpair", io::Error::last_os_error()));
    }
    // SAFETY: socketpair just created both descriptors; each is owned once.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn write_byte(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: one byte from a valid buffer.
    let n = unsafe { libc::write(fd.as_raw_fd(), [1u8].as_ptr().cast(), 1) };
    if n != 1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn read_byte(fd: &OwnedFd) -> bool {
    let mut b = [0u8; 1];
    loop {
        // SAFETY: one byte into a valid buffer.
        let n = unsafe { libc::read(fd.as_raw_fd(), b.as_mut_ptr().cast(), 1) };
        if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        }
        return n == 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_is_gone_once_it_closed_its_end() {
        let (ours, theirs) = socket_pair().unwrap();
        assert!(!peer_gone(&ours), "the peer is still there");
        // Our own byte towards the peer changes nothing on our side.
        write_byte(&ours).unwrap();
        assert!(!peer_gone(&ours));
        drop(theirs);
        assert!(peer_gone(&ours));
    }
}
