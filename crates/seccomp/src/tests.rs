use super::*;
use crate::allowlist::THREAD_CLONE_FLAGS;
use crate::allowlist::{allowed, Args};
use crate::bpf::{evaluate, AUDIT_ARCH, RET_ALLOW, RET_ERRNO, RET_KILL_PROCESS, RET_LOG, RET_TRAP};

fn program(action: SeccompAction) -> Vec<libc::sock_filter> {
    bpf::compile(&allowed(false), action.ret_value().unwrap()).unwrap()
}

fn decide(prog: &[libc::sock_filter], nr: libc::c_long, args: [u64; 6]) -> u32 {
    evaluate(prog, nr, AUDIT_ARCH, args)
}

/// Calls a compromised device would want and that it never needs once serving.
const FORBIDDEN: &[(&str, libc::c_long)] = &[
    ("socket", libc::SYS_socket),
    ("connect", libc::SYS_connect),
    ("bind", libc::SYS_bind),
    ("execve", libc::SYS_execve),
    ("execveat", libc::SYS_execveat),
    ("ptrace", libc::SYS_ptrace),
    ("mount", libc::SYS_mount),
    ("umount2", libc::SYS_umount2),
    ("pivot_root", libc::SYS_pivot_root),
    ("chroot", libc::SYS_chroot),
    ("unshare", libc::SYS_unshare),
    ("setns", libc::SYS_setns),
    ("init_module", libc::SYS_init_module),
    ("bpf", libc::SYS_bpf),
    ("kexec_load", libc::SYS_kexec_load),
    ("process_vm_writev", libc::SYS_process_vm_writev),
    ("setuid", libc::SYS_setuid),
    ("capset", libc::SYS_capset),
    ("keyctl", libc::SYS_keyctl),
    ("userfaultfd", libc::SYS_userfaultfd),
    ("io_uring_setup", libc::SYS_io_uring_setup),
    ("perf_event_open", libc::SYS_perf_event_open),
    ("kill", libc::SYS_kill),
    ("seccomp", libc::SYS_seccomp),
];

#[test]
fn allowed_calls_are_allowed_and_others_get_the_action() {
    for (action, ret) in [
        (SeccompAction::Kill, RET_KILL_PROCESS),
        (SeccompAction::Log, RET_LOG),
        (SeccompAction::Trap, RET_TRAP),
    ] {
        let prog = program(action);
        for entry in allowed(false) {
            if let Args::Any = entry.args {
                assert_eq!(decide(&prog, entry.nr, [0; 6]), RET_ALLOW, "{}", entry.name);
            }
        }
        for (name, nr) in FORBIDDEN {
            assert_eq!(decide(&prog, *nr, [0; 6]), ret, "{name} under {action:?}");
        }
        // Numbers far outside the table, and x32-style numbers with bit 30 set.
        assert_eq!(decide(&prog, 4000, [0; 6]), ret);
        assert_eq!(decide(&prog, libc::SYS_read | 0x4000_0000, [0; 6]), ret);
    }
}

#[test]
fn forbidden_calls_are_not_in_the_list() {
    let list = allowed(false);
    for (name, nr) in FORBIDDEN {
        assert!(!list.iter().any(|a| a.nr == *nr), "{name} is allowed");
    }
}

#[test]
fn the_list_has_no_duplicates() {
    let list = allowed(false);
    for (i, a) in list.iter().enumerate() {
        assert!(
            !list[i + 1..].iter().any(|b| b.nr == a.nr),
            "{} ({}) listed twice",
            a.name,
            a.nr
        );
    }
}

#[test]
fn another_architecture_gets_the_action() {
    let prog = program(SeccompAction::Kill);
    // i386 (AUDIT_ARCH_I386), where 3 is read: a 32-bit int 0x80 call must not slip through.
    assert_eq!(evaluate(&prog, 3, 0x4000_0003, [0; 6]), RET_KILL_PROCESS);
    assert_eq!(evaluate(&prog, libc::SYS_read, 0, [0; 6]), RET_KILL_PROCESS);
}

#[test]
fn prctl_is_limited_to_thread_names() {
    let prog = program(SeccompAction::Kill);
    let name = libc::PR_SET_NAME as u64;
    assert_eq!(
        decide(&prog, libc::SYS_prctl, [name, 0, 0, 0, 0, 0]),
        RET_ALLOW
    );
    assert_eq!(
        decide(
            &prog,
            libc::SYS_prctl,
            [libc::PR_GET_NAME as u64, 0, 0, 0, 0, 0]
        ),
        RET_ALLOW
    );
    for option in [
        libc::PR_SET_DUMPABLE,
        libc::PR_SET_SECCOMP,
        libc::PR_CAP_AMBIENT,
        libc::PR_SET_PDEATHSIG,
    ] {
        let args = [option as u64, 0, 0, 0, 0, 0];
        assert_eq!(decide(&prog, libc::SYS_prctl, args), RET_KILL_PROCESS);
    }
    // The kernel reads the option as an int, so high garbage does not change the decision.
    assert_eq!(
        decide(&prog, libc::SYS_prctl, [name | (1 << 40), 0, 0, 0, 0, 0]),
        RET_ALLOW
    );
}

#[test]
// The request constants are `c_ulong` on glibc but `c_int` on musl: the casts are for the latter.
#[allow(clippy::unnecessary_cast)]
fn ioctl_is_limited_to_descriptor_flags() {
    let prog = program(SeccompAction::Trap);
    for request in [libc::FIONBIO, libc::FIOCLEX, libc::FIONCLEX] {
        let args = [3, request as u64, 0, 0, 0, 0];
        assert_eq!(decide(&prog, libc::SYS_ioctl, args), RET_ALLOW);
    }
    for request in [
        libc::TIOCSTI,
        libc::TIOCSCTTY,
        0x4004_9409, /* BTRFS_IOC_CLONE */
    ] {
        let args = [3, request as u64, 0, 0, 0, 0];
        assert_eq!(decide(&prog, libc::SYS_ioctl, args), RET_TRAP);
    }
    // The request is the second argument; the first (the fd) must not be taken for it.
    let args = [libc::FIONBIO as u64, libc::TIOCSTI as u64, 0, 0, 0, 0];
    assert_eq!(decide(&prog, libc::SYS_ioctl, args), RET_TRAP);
}

#[test]
fn none_builds_no_program() {
    let filter = Filter::new(SeccompAction::None, false).unwrap();
    assert!(filter.is_empty());
    assert_eq!(filter.len(), 0);
    assert!(Filter::new(SeccompAction::Kill, false).unwrap().len() > 100);
}

#[test]
fn actions_parse_like_upstream() {
    assert_eq!(
        "kill".parse::<SeccompAction>().unwrap(),
        SeccompAction::Kill
    );
    assert_eq!("log".parse::<SeccompAction>().unwrap(), SeccompAction::Log);
    assert_eq!(
        "trap".parse::<SeccompAction>().unwrap(),
        SeccompAction::Trap
    );
    assert_eq!(
        "none".parse::<SeccompAction>().unwrap(),
        SeccompAction::None
    );
    let err = "allow".parse::<SeccompAction>().unwrap_err();
    assert!(err.to_string().contains("\"allow\""), "{err}");
}

// ---- Filters installed for real, in forked children -------------------------------------------
//
// The test harness is multi-threaded, so a child only makes raw system calls after fork (no
// allocation, no locks); the filter is compiled in the parent.

const EXIT_OK: i32 = 0;
const EXIT_APPLY_FAILED: i32 = 10;
const EXIT_ALLOWED_CALL_FAILED: i32 = 11;
const EXIT_NOT_FILTERED: i32 = 12;
const EXIT_FORBIDDEN_FAILED: i32 = 13;
const EXIT_TRAPPED: i32 = 14;
const EXIT_FORBIDDEN_RETURNED: i32 = 15;

/// How a child ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    Exit(i32),
    Signal(i32),
}

fn in_child(child: impl FnOnce() -> i32) -> End {
    // SAFETY: the child only runs `child`, which makes raw system calls, then `_exit`s.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        let code = child();
        // SAFETY: ends the child without running the parent's exit handlers.
        unsafe { libc::_exit(code) }
    }
    let mut status = 0;
    // SAFETY: waits for our own child; `status` is a valid out pointer.
    let ret = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(ret, pid, "waitpid: {}", std::io::Error::last_os_error());
    if libc::WIFEXITED(status) {
        End::Exit(libc::WEXITSTATUS(status))
    } else {
        assert!(libc::WIFSIGNALED(status), "status {status:#x}");
        End::Signal(libc::WTERMSIG(status))
    }
}

/// The `Seccomp:` mode from `/proc/self/status` (0 none, 2 filter), read with raw calls only.
fn seccomp_mode() -> Option<u8> {
    let mut buf = [0u8; 4096];
    let path = c"/proc/self/status";
    // SAFETY: `path` is NUL-terminated.
    let fd = unsafe { libc::openat(libc::AT_FDCWD, path.as_ptr(), libc::O_RDONLY) };
    if fd < 0 {
        return None;
    }
    // SAFETY: `buf` is writable for its length; `fd` is ours and closed right after.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    // SAFETY: closes the descriptor opened above.
    unsafe { libc::close(fd) };
    let text = &buf[..usize::try_from(n).ok()?];
    let key = b"\nSeccomp:\t";
    let at = text.windows(key.len()).position(|w| w == key)?;
    text.get(at + key.len()).map(|d| d.wrapping_sub(b'0'))
}

/// A few calls of the serving path, each of which must still work under the filter.
fn allowed_calls_work() -> bool {
    // SAFETY: plain system calls on descriptors created here, buffers on the stack.
    unsafe {
        if libc::getpid() <= 0 || libc::syscall(libc::SYS_gettid) <= 0 {
            return false;
        }
        let efd = libc::eventfd(0, libc::EFD_CLOEXEC);
        let ep = libc::epoll_create1(libc::EPOLL_CLOEXEC);
        if efd < 0 || ep < 0 {
            return false;
        }
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: 7,
        };
        if libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, efd, &mut ev) != 0 {
            return false;
        }
        let one = 1u64;
        if libc::write(efd, (&one as *const u64).cast(), 8) != 8 {
            return false;
        }
        let mut out = [libc::epoll_event { events: 0, u64: 0 }];
        if libc::epoll_wait(ep, out.as_mut_ptr(), 1, 1000) != 1 || { out[0].u64 } != 7 {
            return false;
        }
        let map = libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if map == libc::MAP_FAILED || libc::munmap(map, 4096) != 0 {
            return false;
        }
        if seccomp_mode() != Some(2) {
            return false;
        }
        libc::close(efd) == 0 && libc::close(ep) == 0
    }
}

fn forbidden_socket() -> libc::c_long {
    // SAFETY: socket(2) with integer arguments; a returned descriptor is closed.
    unsafe {
        let fd = libc::syscall(libc::SYS_socket, libc::AF_INET, libc::SOCK_STREAM, 0);
        if fd >= 0 {
            libc::close(fd as libc::c_int);
        }
        fd
    }
}

#[test]
fn kill_ends_the_process_with_sigsys() {
    let filter = Filter::new(SeccompAction::Kill, false).unwrap();
    let end = in_child(|| {
        if filter.apply().is_err() {
            return EXIT_APPLY_FAILED;
        }
        if seccomp_mode() != Some(2) {
            return EXIT_NOT_FILTERED;
        }
        forbidden_socket();
        EXIT_FORBIDDEN_RETURNED
    });
    assert_eq!(end, End::Signal(libc::SIGSYS));
}

#[test]
fn kill_leaves_allowed_calls_working() {
    let filter = Filter::new(SeccompAction::Kill, false).unwrap();
    let end = in_child(|| {
        if filter.apply().is_err() {
            return EXIT_APPLY_FAILED;
        }
        if seccomp_mode() != Some(2) {
            return EXIT_NOT_FILTERED;
        }
        if !allowed_calls_work() {
            return EXIT_ALLOWED_CALL_FAILED;
        }
        EXIT_OK
    });
    assert_eq!(end, End::Exit(EXIT_OK));
}

static TRAPPED_NR: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

extern "C" fn on_sigsys(_sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // `siginfo_t` for SIGSYS carries the call number right after the address and the arch
    // (`si_call_addr`, `si_syscall`, `si_arch`); libc does not expose those fields.
    #[repr(C)]
    struct SigsysInfo {
        signo: libc::c_int,
        errno: libc::c_int,
        code: libc::c_int,
        call_addr: *mut libc::c_void,
        syscall: libc::c_int,
        arch: libc::c_uint,
    }
    // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers; for SIGSYS it has the
    // layout above.
    let nr = unsafe { (*info.cast::<SigsysInfo>()).syscall };
    TRAPPED_NR.store(nr, std::sync::atomic::Ordering::SeqCst);
}

#[test]
fn trap_raises_sigsys_that_a_handler_sees() {
    let filter = Filter::new(SeccompAction::Trap, false).unwrap();
    let end = in_child(|| {
        // SAFETY: installs a handler that only stores to an atomic.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_sigsys as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO;
            if libc::sigaction(libc::SIGSYS, &sa, std::ptr::null_mut()) != 0 {
                return EXIT_APPLY_FAILED;
            }
        }
        if filter.apply().is_err() {
            return EXIT_APPLY_FAILED;
        }
        if !allowed_calls_work() {
            return EXIT_ALLOWED_CALL_FAILED;
        }
        forbidden_socket();
        if TRAPPED_NR.load(std::sync::atomic::Ordering::SeqCst) == libc::SYS_socket as i32 {
            EXIT_TRAPPED
        } else {
            EXIT_FORBIDDEN_RETURNED
        }
    });
    assert_eq!(end, End::Exit(EXIT_TRAPPED));
}

#[test]
fn trap_without_handler_ends_the_process_with_sigsys() {
    let filter = Filter::new(SeccompAction::Trap, false).unwrap();
    let end = in_child(|| {
        if filter.apply().is_err() {
            return EXIT_APPLY_FAILED;
        }
        forbidden_socket();
        EXIT_FORBIDDEN_RETURNED
    });
    assert_eq!(end, End::Signal(libc::SIGSYS));
}

#[test]
fn log_lets_forbidden_calls_proceed() {
    let filter = Filter::new(SeccompAction::Log, false).unwrap();
    let end = in_child(|| {
        if filter.apply().is_err() {
            return EXIT_APPLY_FAILED;
        }
        if !allowed_calls_work() {
            return EXIT_ALLOWED_CALL_FAILED;
        }
        if forbidden_socket() < 0 {
            return EXIT_FORBIDDEN_FAILED;
        }
        EXIT_OK
    });
    assert_eq!(end, End::Exit(EXIT_OK));
}

#[test]
fn none_installs_nothing() {
    let filter = Filter::new(SeccompAction::None, false).unwrap();
    let end = in_child(|| {
        if filter.apply().is_err() {
            return EXIT_APPLY_FAILED;
        }
        if seccomp_mode() != Some(0) {
            return EXIT_NOT_FILTERED;
        }
        if forbidden_socket() < 0 {
            return EXIT_FORBIDDEN_FAILED;
        }
        EXIT_OK
    });
    assert_eq!(end, End::Exit(EXIT_OK));
}

/// Flags of a `clone` that creates a thread, as glibc passes them.
const THREAD: u64 = THREAD_CLONE_FLAGS as u64;

#[test]
fn clone_only_creates_threads() {
    for (action, ret) in [
        (SeccompAction::Kill, RET_KILL_PROCESS),
        (SeccompAction::Trap, RET_TRAP),
    ] {
        let prog = program(action);
        assert_eq!(
            decide(&prog, libc::SYS_clone, [THREAD, 0, 0, 0, 0, 0]),
            RET_ALLOW
        );
        for flags in [
            THREAD | libc::CLONE_NEWUSER as u64,
            THREAD | libc::CLONE_NEWNS as u64,
            libc::CLONE_NEWUSER as u64 | libc::SIGCHLD as u64,
            libc::CLONE_NEWNS as u64,
            libc::CLONE_NEWNET as u64 | libc::CLONE_NEWPID as u64,
            // A plain fork, and a thread without CLONE_THREAD (a new process sharing memory).
            libc::SIGCHLD as u64,
            THREAD & !(libc::CLONE_THREAD as u64),
            0,
        ] {
            assert_eq!(
                decide(&prog, libc::SYS_clone, [flags, 0, 0, 0, 0, 0]),
                ret,
                "clone flags {flags:#x} under {action:?}"
            );
        }
    }
}

#[test]
fn clone3_answers_enosys_under_every_action() {
    for action in [SeccompAction::Kill, SeccompAction::Log, SeccompAction::Trap] {
        let prog = program(action);
        for flags in [0, THREAD, libc::CLONE_NEWUSER as u64] {
            assert_eq!(
                decide(&prog, libc::SYS_clone3, [flags, 88, 0, 0, 0, 0]),
                RET_ERRNO | libc::ENOSYS as u32,
                "{action:?}"
            );
        }
    }
}

#[test]
fn open_by_handle_at_needs_file_handles() {
    let without = program(SeccompAction::Kill);
    assert_eq!(
        decide(&without, libc::SYS_open_by_handle_at, [3, 0, 0, 0, 0, 0]),
        RET_KILL_PROCESS
    );
    assert!(!allowed(false)
        .iter()
        .any(|a| a.nr == libc::SYS_open_by_handle_at));
    let with = bpf::compile(&allowed(true), RET_KILL_PROCESS).unwrap();
    assert_eq!(
        decide(&with, libc::SYS_open_by_handle_at, [3, 0, 0, 0, 0, 0]),
        RET_ALLOW
    );
    // name_to_handle_at only makes handles; it stays allowed either way.
    assert_eq!(
        decide(&without, libc::SYS_name_to_handle_at, [3, 0, 0, 0, 0, 0]),
        RET_ALLOW
    );
}

const EXIT_THREAD_FAILED: i32 = 40;
const EXIT_CLONE3_NOT_ENOSYS: i32 = 41;
const EXIT_CLONE_RETURNED: i32 = 42;
const EXIT_HANDLE_CALL_RETURNED: i32 = 43;

#[test]
fn threads_still_start_under_the_filter() {
    let filter = Filter::new(SeccompAction::Kill, false).unwrap();
    let end = in_child(|| {
        if filter.apply().is_err() {
            return EXIT_APPLY_FAILED;
        }
        // std::thread goes through pthread_create: clone3 first (ENOSYS here), then clone with
        // exactly the thread flags.
        let spawned = std::thread::Builder::new()
            .name("under-filter".into())
            .spawn(|| seccomp_mode() == Some(2));
        match spawned.map(|t| t.join()) {
            Ok(Ok(true)) => EXIT_OK,
            _ => EXIT_THREAD_FAILED,
        }
    });
    assert_eq!(end, End::Exit(EXIT_OK));
}

#[test]
fn clone3_fails_with_enosys() {
    let filter = Filter::new(SeccompAction::Kill, false).unwrap();
    let end = in_child(|| {
        if filter.apply().is_err() {
            return EXIT_APPLY_FAILED;
        }
        // struct clone_args asking for a new user namespace; the flags are never looked at.
        let mut args = [0u64; 11];
        args[0] = libc::CLONE_NEWUSER as u64;
        args[4] = libc::SIGCHLD as u64;
        // SAFETY: `args` is a valid clone_args of the size passed; the call fails under the
        // filter, and if it did not, the child (a fork) exits at once.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_clone3,
                args.as_mut_ptr(),
                std::mem::size_of_val(&args),
            )
        };
        if rc == 0 {
            // SAFETY: ends a child that should never have been created.
            unsafe { libc::_exit(EXIT_CLONE_RETURNED) };
        }
        let errno = std::io::Error::last_os_error().raw_os_error();
        if rc == -1 && errno == Some(libc::ENOSYS) {
            EXIT_OK
        } else {
            EXIT_CLONE3_NOT_ENOSYS
        }
    });
    assert_eq!(end, End::Exit(EXIT_OK));
}

/// A raw `clone` with `flags` (a fork: no new stack) under the Kill filter.
fn clone_in_filtered_child(flags: libc::c_int) -> End {
    let filter = Filter::new(SeccompAction::Kill, false).unwrap();
    in_child(|| {
        if filter.apply().is_err() {
            return EXIT_APPLY_FAILED;
        }
        // SAFETY: clone without CLONE_VM behaves as fork; a child that gets created exits at once.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_clone,
                (flags | libc::SIGCHLD) as libc::c_ulong,
                0usize,
                0usize,
                0usize,
                0usize,
            )
        };
        if rc == 0 {
            // SAFETY: ends the (unexpected) grandchild.
            unsafe { libc::_exit(EXIT_CLONE_RETURNED) };
        }
        EXIT_CLONE_RETURNED
    })
}

#[test]
fn clone_into_new_namespaces_is_killed() {
    for flags in [libc::CLONE_NEWUSER, libc::CLONE_NEWNS, 0] {
        assert_eq!(
            clone_in_filtered_child(flags),
            End::Signal(libc::SIGSYS),
            "clone flags {flags:#x}"
        );
    }
}

/// `open_by_handle_at` on a bogus handle; returns EXIT_OK once the call came back.
fn try_open_by_handle() -> i32 {
    // A file_handle header with an impossible size: the kernel refuses it (EINVAL, or EPERM
    // without CAP_DAC_READ_SEARCH), which is fine; only being killed is not.
    let mut handle = [0u32; 4];
    handle[0] = u32::MAX;
    // SAFETY: the buffer outlives the call; the kernel reads its header only.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_open_by_handle_at,
            libc::AT_FDCWD,
            handle.as_mut_ptr(),
            libc::O_RDONLY,
        )
    };
    if rc >= 0 {
        // SAFETY: closes the descriptor the call returned.
        unsafe { libc::close(rc as libc::c_int) };
    }
    EXIT_OK
}

#[test]
fn open_by_handle_at_is_refused_without_file_handles() {
    let filter = Filter::new(SeccompAction::Kill, false).unwrap();
    let end = in_child(|| {
        if filter.apply().is_err() {
            return EXIT_APPLY_FAILED;
        }
        try_open_by_handle();
        EXIT_HANDLE_CALL_RETURNED
    });
    assert_eq!(end, End::Signal(libc::SIGSYS));

    let filter = Filter::new(SeccompAction::Kill, true).unwrap();
    let end = in_child(|| {
        if filter.apply().is_err() {
            return EXIT_APPLY_FAILED;
        }
        try_open_by_handle()
    });
    assert_eq!(end, End::Exit(EXIT_OK), "allowed with file handles");
}
