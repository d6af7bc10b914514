//! The system calls a device process makes once it serves.
//!
//! Grouped by who needs them. The sandbox (namespaces, `pivot_root`, capabilities, closing
//! inherited descriptors) is set up before the filter, so none of its calls appear here; nor do
//! `socket`, `bind`, `listen` or `connect`: the listening socket exists before the filter, and
//! a device serves a single frontend and then exits.

/// Which calls of a system call are allowed.
#[derive(Debug, Clone, Copy)]
pub enum Args {
    /// Every call.
    Any,
    /// Calls whose argument `index` (its low 32 bits) is one of `values`.
    In { index: u8, values: &'static [u32] },
    /// No call is allowed, but instead of meeting the filter's action every call fails with
    /// `errno`: for calls the C library probes and falls back from (`clone3` -> `clone`).
    Fail { errno: u16 },
}

/// One allowed system call.
#[derive(Debug, Clone, Copy)]
pub struct Allowed {
    pub name: &'static str,
    pub nr: libc::c_long,
    pub args: Args,
}

macro_rules! allow {
    ($($name:ident),* $(,)?) => {
        &[$(Allowed { name: stringify!($name), nr: nr::$name, args: Args::Any }),*]
    };
}

/// Syscall numbers under their syscall names (`libc` spells them `SYS_<name>`).
#[allow(non_upper_case_globals)]
mod nr {
    macro_rules! nrs {
        ($($name:ident => $sys:ident),* $(,)?) => { $(pub const $name: libc::c_long = libc::$sys;)* };
    }
    nrs! {
        read => SYS_read, write => SYS_write, readv => SYS_readv, writev => SYS_writev,
        pread64 => SYS_pread64, pwrite64 => SYS_pwrite64, preadv => SYS_preadv,
        pwritev => SYS_pwritev, preadv2 => SYS_preadv2, pwritev2 => SYS_pwritev2,
        lseek => SYS_lseek, close => SYS_close, dup => SYS_dup, dup3 => SYS_dup3,
        fcntl => SYS_fcntl, ioctl => SYS_ioctl,
        epoll_create1 => SYS_epoll_create1, epoll_ctl => SYS_epoll_ctl,
        epoll_pwait => SYS_epoll_pwait, epoll_pwait2 => SYS_epoll_pwait2,
        eventfd2 => SYS_eventfd2, ppoll => SYS_ppoll,
        accept4 => SYS_accept4, recvmsg => SYS_recvmsg, sendmsg => SYS_sendmsg,
        recvfrom => SYS_recvfrom, sendto => SYS_sendto, shutdown => SYS_shutdown,
        getsockopt => SYS_getsockopt,
        mmap => SYS_mmap, munmap => SYS_munmap, mremap => SYS_mremap, mprotect => SYS_mprotect,
        madvise => SYS_madvise, brk => SYS_brk,
        clone => SYS_clone, clone3 => SYS_clone3, set_robust_list => SYS_set_robust_list,
        rseq => SYS_rseq, futex => SYS_futex, sched_yield => SYS_sched_yield,
        sched_getaffinity => SYS_sched_getaffinity, getrandom => SYS_getrandom,
        gettid => SYS_gettid, getpid => SYS_getpid, getppid => SYS_getppid,
        getuid => SYS_getuid, geteuid => SYS_geteuid, getgid => SYS_getgid,
        getegid => SYS_getegid, exit => SYS_exit, exit_group => SYS_exit_group,
        prctl => SYS_prctl,
        rt_sigprocmask => SYS_rt_sigprocmask, rt_sigreturn => SYS_rt_sigreturn,
        rt_sigtimedwait => SYS_rt_sigtimedwait, rt_sigaction => SYS_rt_sigaction,
        sigaltstack => SYS_sigaltstack, tgkill => SYS_tgkill, restart_syscall => SYS_restart_syscall,
        clock_gettime => SYS_clock_gettime, clock_getres => SYS_clock_getres,
        clock_nanosleep => SYS_clock_nanosleep, nanosleep => SYS_nanosleep,
        gettimeofday => SYS_gettimeofday,
        openat => SYS_openat, openat2 => SYS_openat2, newfstatat => SYS_newfstatat,
        fstat => SYS_fstat, statx => SYS_statx, fstatfs => SYS_fstatfs,
        getdents64 => SYS_getdents64, mkdirat => SYS_mkdirat, mknodat => SYS_mknodat,
        symlinkat => SYS_symlinkat, linkat => SYS_linkat, unlinkat => SYS_unlinkat,
        renameat2 => SYS_renameat2, readlinkat => SYS_readlinkat, fchownat => SYS_fchownat,
        fchown => SYS_fchown, fchmod => SYS_fchmod, fchmodat => SYS_fchmodat,
        utimensat => SYS_utimensat, ftruncate => SYS_ftruncate, fsync => SYS_fsync,
        fdatasync => SYS_fdatasync, fallocate => SYS_fallocate,
        copy_file_range => SYS_copy_file_range, syncfs => SYS_syncfs, flock => SYS_flock,
        getxattr => SYS_getxattr, lgetxattr => SYS_lgetxattr, fgetxattr => SYS_fgetxattr,
        setxattr => SYS_setxattr, lsetxattr => SYS_lsetxattr, fsetxattr => SYS_fsetxattr,
        listxattr => SYS_listxattr, llistxattr => SYS_llistxattr, flistxattr => SYS_flistxattr,
        removexattr => SYS_removexattr, lremovexattr => SYS_lremovexattr,
        fremovexattr => SYS_fremovexattr,
        name_to_handle_at => SYS_name_to_handle_at, open_by_handle_at => SYS_open_by_handle_at,
        setfsuid => SYS_setfsuid, setfsgid => SYS_setfsgid, setgroups => SYS_setgroups,
        getgroups => SYS_getgroups, umask => SYS_umask, getcwd => SYS_getcwd,

    }
    #[cfg(target_arch = "x86_64")]
    nrs! {
        open => SYS_open, stat => SYS_stat, lstat => SYS_lstat, unlink => SYS_unlink,
        rmdir => SYS_rmdir, readlink => SYS_readlink, epoll_wait => SYS_epoll_wait,
        poll => SYS_poll, dup2 => SYS_dup2, getrlimit => SYS_getrlimit,
        mkdir => SYS_mkdir, rename => SYS_rename, symlink => SYS_symlink, link => SYS_link,

    }
}

/// Everything the serving process calls, every argument allowed.
const COMMON: &[Allowed] = allow![
    // Request path: queues, guest memory and host files, hottest first.
    epoll_pwait,
    read,
    write,
    readv,
    writev,
    preadv,
    pwritev,
    preadv2,
    pwritev2,
    pread64,
    pwrite64,
    futex,
    recvmsg,
    sendmsg,
    // vhost-user-backend and vmm-sys-util: epoll, eventfds, descriptors passed with SCM_RIGHTS,
    // mapping and unmapping guest memory regions.
    epoll_create1,
    epoll_ctl,
    epoll_pwait2,
    eventfd2,
    accept4,
    recvfrom,
    sendto,
    shutdown,
    getsockopt,
    mmap,
    munmap,
    mremap,
    mprotect,
    madvise,
    brk,
    dup,
    dup3,
    fcntl,
    close,
    lseek,
    ppoll,
    // Threads: queue workers, the thread pool, blocking-request threads, stop watchers.
    set_robust_list,
    rseq,
    sched_yield,
    sched_getaffinity,
    getrandom,
    gettid,
    getpid,
    getppid,
    getuid,
    geteuid,
    getgid,
    getegid,
    exit,
    exit_group,
    // Signals: sigwait for SIGTERM/SIGINT/SIGHUP, stack-overflow handlers, abort on panic.
    rt_sigprocmask,
    rt_sigreturn,
    rt_sigtimedwait,
    rt_sigaction,
    sigaltstack,
    tgkill,
    restart_syscall,
    // Time.
    clock_gettime,
    clock_getres,
    clock_nanosleep,
    nanosleep,
    gettimeofday,
    // The passthrough filesystem.
    openat,
    openat2,
    newfstatat,
    fstat,
    statx,
    fstatfs,
    getdents64,
    mkdirat,
    mknodat,
    symlinkat,
    linkat,
    unlinkat,
    renameat2,
    readlinkat,
    fchownat,
    fchown,
    fchmod,
    fchmodat,
    utimensat,
    ftruncate,
    fsync,
    fdatasync,
    fallocate,
    copy_file_range,
    syncfs,
    flock,
    getxattr,
    lgetxattr,
    fgetxattr,
    setxattr,
    lsetxattr,
    fsetxattr,
    listxattr,
    llistxattr,
    flistxattr,
    removexattr,
    lremovexattr,
    fremovexattr,
    name_to_handle_at,
    setfsuid,
    setfsgid,
    setgroups,
    getgroups,
    umask,
    // A panic's backtrace (RUST_BACKTRACE) shortens paths against the working directory.
    getcwd,
];

/// Legacy calls that glibc and std still make on x86-64 (other architectures never had them).
/// The path calls grant nothing new: their `*at` forms with `AT_FDCWD` are allowed anyway.
#[cfg(target_arch = "x86_64")]
const ARCH: &[Allowed] = allow![
    open, stat, lstat, unlink, rmdir, readlink, mkdir, rename, symlink, link, epoll_wait, poll,
    dup2, getrlimit,
];
#[cfg(not(target_arch = "x86_64"))]
const ARCH: &[Allowed] = &[];

/// `prctl` only to name threads (std names every thread it spawns with a name).
const PRCTL_OPTIONS: &[u32] = &[libc::PR_SET_NAME as u32, libc::PR_GET_NAME as u32];

/// `ioctl` only for what std does on sockets and descriptors (`set_nonblocking`, close-on-exec).
const IOCTL_REQUESTS: &[u32] = &[
    libc::FIONBIO as u32,
    libc::FIOCLEX as u32,
    libc::FIONCLEX as u32,
];

/// The only `clone` flags allowed: exactly what glibc's `pthread_create` (and so Rust's
/// `std::thread`) passes, exit signal 0. Anything else, such as `CLONE_NEWUSER`, `CLONE_NEWNS`
/// or a plain fork, meets the filter's action. The kernel reads `clone`'s flags as 32 bits
/// (flags above bit 31 exist only for `clone3`), so comparing the low half is exact.
pub const THREAD_CLONE_FLAGS: u32 = (libc::CLONE_VM
    | libc::CLONE_FS
    | libc::CLONE_FILES
    | libc::CLONE_SIGHAND
    | libc::CLONE_THREAD
    | libc::CLONE_SYSVSEM
    | libc::CLONE_SETTLS
    | libc::CLONE_PARENT_SETTID
    | libc::CLONE_CHILD_CLEARTID) as u32;

/// `clone`'s flags are its first argument on every supported architecture.
const CLONE_FLAGS_ARG: u8 = 0;

const FILTERED: &[Allowed] = &[
    Allowed {
        name: "clone",
        nr: nr::clone,
        args: Args::In {
            index: CLONE_FLAGS_ARG,
            values: &[THREAD_CLONE_FLAGS],
        },
    },
    // `clone3` takes its flags in memory, out of a filter's reach: it answers ENOSYS, as on a
    // kernel without it, and glibc (2.34 and later) then creates the thread with `clone`.
    Allowed {
        name: "clone3",
        nr: nr::clone3,
        args: Args::Fail {
            errno: libc::ENOSYS as u16,
        },
    },
    Allowed {
        name: "prctl",
        nr: nr::prctl,
        args: Args::In {
            index: 0,
            values: PRCTL_OPTIONS,
        },
    },
    Allowed {
        name: "ioctl",
        nr: nr::ioctl,
        args: Args::In {
            index: 1,
            values: IOCTL_REQUESTS,
        },
    },
];

/// Only for a device that opens file handles (`--inode-file-handles=prefer|mandatory` or
/// `--migration-mode=file-handles`, and able to): with a handle a process holding
/// `CAP_DAC_READ_SEARCH` may open any file of the file system, shared or not.
const FILE_HANDLES: &[Allowed] = allow![open_by_handle_at];

/// The whole allow list for this architecture; `file_handles` adds `open_by_handle_at`.
pub fn allowed(file_handles: bool) -> Vec<Allowed> {
    let handles: &[Allowed] = if file_handles { FILE_HANDLES } else { &[] };
    COMMON
        .iter()
        .chain(ARCH)
        .chain(handles)
        .chain(FILTERED)
        .copied()
        .collect()
}
