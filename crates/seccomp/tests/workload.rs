//! Runs the device process's kinds of work under `SeccompAction::Kill` in a child process:
//! threads (created before and after the filter), the passthrough filesystem's calls on a
//! scratch directory, descriptors passed over a Unix socket, epoll and eventfds, signals. A call
//! missing from the allow list kills the child with SIGSYS, and the parent names the step that
//! was running. Own `main` (no harness): the filter must go on a process we control entirely.

use std::ffi::CString;
use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Command;

const CHILD_ENV: &str = "VIRTIOFSD_SECCOMP_WORKLOAD_DIR";

fn main() {
    match std::env::var_os(CHILD_ENV) {
        Some(dir) => child(Path::new(&dir)),
        None => parent(),
    }
}

fn parent() {
    let dir = std::env::temp_dir().join(format!("virtiofsd-seccomp-{}", std::process::id()));
    fs::create_dir_all(&dir).expect("scratch directory");
    let out = Command::new(std::env::current_exe().expect("own executable"))
        .env(CHILD_ENV, &dir)
        .output()
        .expect("spawn the workload child");
    let _ = fs::remove_dir_all(&dir);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last_step = stdout.lines().last().unwrap_or("(none)");
    if out.status.signal() == Some(libc::SIGSYS) {
        panic!("workload killed by seccomp (SIGSYS) during step: {last_step}\nstderr: {stderr}");
    }
    assert!(
        out.status.success() && last_step == "done",
        "workload failed ({}), last step: {last_step}\nstderr: {stderr}",
        out.status
    );
    println!("seccomp workload: all steps passed under kill");
}

fn step(name: &str) {
    // Unbuffered write so the parent sees the step even if the next call kills us.
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{name}");
    let _ = out.flush();
}

fn check(ret: libc::c_long, what: &str) -> libc::c_long {
    if ret < 0 {
        panic!("{what}: {}", io::Error::last_os_error());
    }
    ret
}

fn seccomp_mode(status_path: &str) -> String {
    let text = fs::read_to_string(status_path).expect(status_path);
    text.lines()
        .find_map(|l| l.strip_prefix("Seccomp:"))
        .map(|v| v.trim().to_owned())
        .expect("Seccomp field")
}

fn child(dir: &Path) {
    // A thread that exists before the filter, as the stop watchers do in the daemon: TSYNC must
    // cover it.
    step("early thread");
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    let early = std::thread::Builder::new()
        .name("early".into())
        .spawn(move || {
            // SAFETY: gettid has no arguments.
            tid_tx
                .send(unsafe { libc::syscall(libc::SYS_gettid) })
                .unwrap();
            rx.recv().unwrap();
        })
        .unwrap();
    let early_tid = tid_rx.recv().unwrap();

    // Sockets exist before the filter, as the control and vhost-user sockets do.
    let pair = UnixStream::pair().unwrap();

    step("install");
    // With file handles (--inode-file-handles=prefer|mandatory): one step opens by handle.
    virtiofsd_seccomp::install(virtiofsd_seccomp::SeccompAction::Kill, true).expect("install");
    assert_eq!(seccomp_mode("/proc/self/status"), "2");
    assert_eq!(
        seccomp_mode(&format!("/proc/self/task/{early_tid}/status")),
        "2",
        "the thread created before install is not filtered"
    );
    tx.send(()).unwrap();
    early.join().unwrap();

    step("threads");
    let workers: Vec<_> = (0..4)
        .map(|i| {
            std::thread::Builder::new()
                .name(format!("worker-{i}"))
                .spawn(move || {
                    let m = std::sync::Mutex::new(i);
                    *m.lock().unwrap() += 1;
                    std::thread::yield_now();
                    std::thread::sleep(std::time::Duration::from_millis(1));
                    let _ = std::time::Instant::now();
                    let v = *m.lock().unwrap();
                    v
                })
                .unwrap()
        })
        .collect();
    for (i, w) in workers.into_iter().enumerate() {
        assert_eq!(w.join().unwrap(), i + 1);
    }
    step("random");
    let mut map = std::collections::HashMap::new();
    map.insert(1, 2);

    files(dir);
    sockets(pair);
    signals();

    step("done");
    // SAFETY: ends the process as a device process does.
    unsafe { libc::_exit(0) }
}

fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_encoded_bytes()).unwrap()
}

fn files(dir: &Path) {
    step("std fs");
    let file = dir.join("file");
    fs::write(&file, b"hello world").unwrap();
    assert_eq!(fs::read(&file).unwrap(), b"hello world");
    let meta = fs::symlink_metadata(&file).unwrap();
    assert_eq!(meta.len(), 11);
    fs::create_dir(dir.join("sub")).unwrap();
    fs::rename(dir.join("sub"), dir.join("sub2")).unwrap();
    assert_eq!(fs::read_dir(dir).unwrap().count(), 2);
    std::os::unix::fs::symlink("file", dir.join("link")).unwrap();
    assert_eq!(fs::read_link(dir.join("link")).unwrap(), Path::new("file"));
    fs::hard_link(&file, dir.join("hard")).unwrap();
    fs::remove_file(dir.join("hard")).unwrap();
    fs::remove_dir(dir.join("sub2")).unwrap();

    let dirc = cstr(dir);
    // SAFETY: raw file system calls on descriptors opened here with valid, NUL-terminated names
    // and buffers that live across each call.
    unsafe {
        step("openat2 O_PATH");
        let dfd = check(
            libc::open(
                dirc.as_ptr(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
            .into(),
            "open dir",
        ) as i32;
        let mut how: libc::open_how = std::mem::zeroed();
        how.flags = (libc::O_RDWR | libc::O_CLOEXEC) as u64;
        how.resolve =
            libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;
        let fd = check(
            libc::syscall(
                libc::SYS_openat2,
                dfd,
                c"file".as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            ),
            "openat2",
        ) as i32;

        step("statx / fstatat / fstatfs");
        let mut stx: libc::statx = std::mem::zeroed();
        check(
            libc::statx(
                fd,
                c"".as_ptr(),
                libc::AT_EMPTY_PATH,
                libc::STATX_ALL,
                &mut stx,
            )
            .into(),
            "statx",
        );
        let mut st: libc::stat64 = std::mem::zeroed();
        check(
            libc::fstatat64(dfd, c"file".as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW).into(),
            "fstatat",
        );
        let mut sv: libc::statvfs64 = std::mem::zeroed();
        check(libc::fstatvfs64(fd, &mut sv).into(), "fstatvfs");

        step("getdents64");
        let rd = check(
            libc::openat(dfd, c".".as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY).into(),
            "open dir for reading",
        ) as i32;
        let mut buf = [0u8; 4096];
        check(
            libc::syscall(libc::SYS_getdents64, rd, buf.as_mut_ptr(), buf.len()),
            "getdents64",
        );
        check(libc::lseek64(rd, 0, libc::SEEK_SET), "lseek");

        step("preadv / pwritev");
        let mut data = [0u8; 5];
        let iov = libc::iovec {
            iov_base: data.as_mut_ptr().cast(),
            iov_len: data.len(),
        };
        assert_eq!(libc::preadv(fd, &iov, 1, 6), 5);
        assert_eq!(&data, b"world");
        assert_eq!(libc::pwritev(fd, &iov, 1, 11), 5);

        step("fallocate / ftruncate / fsync / syncfs");
        check(libc::fallocate64(fd, 0, 0, 8192).into(), "fallocate");
        check(libc::ftruncate64(fd, 16).into(), "ftruncate");
        check(libc::fsync(fd).into(), "fsync");
        check(libc::fdatasync(fd).into(), "fdatasync");
        check(libc::syncfs(fd).into(), "syncfs");

        step("copy_file_range");
        let fd2 = check(
            libc::openat(
                dfd,
                c"copy".as_ptr(),
                libc::O_CREAT | libc::O_RDWR | libc::O_CLOEXEC,
                0o600,
            )
            .into(),
            "create copy",
        ) as i32;
        let (mut off_in, mut off_out) = (0i64, 0i64);
        check(
            libc::copy_file_range(fd, &mut off_in, fd2, &mut off_out, 5, 0) as libc::c_long,
            "copy_file_range",
        );

        step("OFD lock / flock");
        let mut lk: libc::flock64 = std::mem::zeroed();
        lk.l_type = libc::F_WRLCK as i16;
        lk.l_whence = libc::SEEK_SET as i16;
        check(
            libc::fcntl(fd, libc::F_OFD_SETLK, &mut lk).into(),
            "F_OFD_SETLK",
        );
        check(
            libc::fcntl(fd, libc::F_OFD_GETLK, &mut lk).into(),
            "F_OFD_GETLK",
        );
        check(
            libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB).into(),
            "flock",
        );
        check(libc::flock(fd, libc::LOCK_UN).into(), "unflock");
        check(libc::fcntl(fd, libc::F_GETFL).into(), "F_GETFL");

        step("fchmod / fchownat / utimensat");
        check(libc::fchmod(fd, 0o640).into(), "fchmod");
        check(
            libc::fchownat(fd, c"".as_ptr(), u32::MAX, u32::MAX, libc::AT_EMPTY_PATH).into(),
            "fchownat",
        );
        check(
            libc::utimensat(
                dfd,
                c"file".as_ptr(),
                std::ptr::null(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
            .into(),
            "utimensat",
        );
        let proc_path = CString::new(format!("/proc/self/fd/{fd}")).unwrap();
        check(
            libc::fchmodat(libc::AT_FDCWD, proc_path.as_ptr(), 0o600, 0).into(),
            "fchmodat",
        );

        step("mkdirat / mknodat / symlinkat / linkat / renameat2 / unlinkat / readlinkat");
        check(libc::mkdirat(dfd, c"d".as_ptr(), 0o700).into(), "mkdirat");
        check(
            libc::mknodat(dfd, c"fifo".as_ptr(), libc::S_IFIFO | 0o600, 0).into(),
            "mknodat",
        );
        check(
            libc::symlinkat(c"file".as_ptr(), dfd, c"sl".as_ptr()).into(),
            "symlinkat",
        );
        let mut lbuf = [0u8; 64];
        check(
            libc::readlinkat(dfd, c"sl".as_ptr(), lbuf.as_mut_ptr().cast(), lbuf.len())
                as libc::c_long,
            "readlinkat",
        );
        check(
            libc::linkat(dfd, c"file".as_ptr(), dfd, c"hl".as_ptr(), 0).into(),
            "linkat",
        );
        check(
            libc::syscall(
                libc::SYS_renameat2,
                dfd,
                c"hl".as_ptr(),
                dfd,
                c"sl".as_ptr(),
                libc::RENAME_EXCHANGE,
            ),
            "renameat2",
        );
        for name in [c"d", c"fifo", c"sl", c"hl", c"copy"] {
            let flags = if name == c"d" { libc::AT_REMOVEDIR } else { 0 };
            check(libc::unlinkat(dfd, name.as_ptr(), flags).into(), "unlinkat");
        }

        step("xattrs on /proc/self/fd");
        let name = c"user.virtiofsd";
        let r = libc::setxattr(
            proc_path.as_ptr(),
            name.as_ptr(),
            b"v".as_ptr().cast(),
            1,
            0,
        );
        // tmpfs without user xattrs answers EOPNOTSUPP: the call still went through seccomp.
        if r == 0 {
            check(
                libc::getxattr(
                    proc_path.as_ptr(),
                    name.as_ptr(),
                    buf.as_mut_ptr().cast(),
                    64,
                ) as libc::c_long,
                "getxattr",
            );
            check(
                libc::listxattr(proc_path.as_ptr(), buf.as_mut_ptr().cast(), 64) as libc::c_long,
                "listxattr",
            );
            check(
                libc::removexattr(proc_path.as_ptr(), name.as_ptr()).into(),
                "removexattr",
            );
        } else {
            assert_eq!(
                io::Error::last_os_error().raw_os_error(),
                Some(libc::EOPNOTSUPP)
            );
            libc::listxattr(proc_path.as_ptr(), buf.as_mut_ptr().cast(), 64);
        }

        step("name_to_handle_at / open_by_handle_at");
        let mut fh = [0u8; 8 + 128];
        fh[0..4].copy_from_slice(&128u32.to_ne_bytes());
        let mut mount_id = 0i32;
        let r = libc::syscall(
            libc::SYS_name_to_handle_at,
            fd,
            c"".as_ptr(),
            fh.as_mut_ptr(),
            &mut mount_id,
            libc::AT_EMPTY_PATH,
        );
        if r == 0 {
            // Needs CAP_DAC_READ_SEARCH: EPERM is fine, SIGSYS is not.
            let h = libc::syscall(
                libc::SYS_open_by_handle_at,
                dfd,
                fh.as_mut_ptr(),
                libc::O_RDONLY,
            );
            if h >= 0 {
                libc::close(h as i32);
            }
        }

        step("setfsuid / setfsgid / setgroups / getgroups / umask");
        let uid = libc::syscall(libc::SYS_setfsuid, u32::MAX) as u32;
        libc::syscall(libc::SYS_setfsuid, uid);
        let gid = libc::syscall(libc::SYS_setfsgid, u32::MAX) as u32;
        libc::syscall(libc::SYS_setfsgid, gid);
        let mut groups = [0u32; 64];
        let n = check(
            libc::syscall(libc::SYS_getgroups, 64, groups.as_mut_ptr()),
            "getgroups",
        );
        // EPERM without CAP_SETGID; the call itself must be allowed.
        libc::syscall(libc::SYS_setgroups, n, groups.as_ptr());
        let old = libc::umask(0o022);
        libc::umask(old);

        step("mmap file / dup / close");
        let map = libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ,
            libc::MAP_SHARED,
            fd,
            0,
        );
        assert_ne!(map, libc::MAP_FAILED);
        libc::munmap(map, 4096);
        let d = check(libc::dup(fd).into(), "dup") as i32;
        check(
            libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0).into(),
            "F_DUPFD_CLOEXEC",
        );
        for f in [d, fd, fd2, rd, dfd] {
            check(libc::close(f).into(), "close");
        }
    }
}

fn sockets((a, b): (UnixStream, UnixStream)) {
    step("socket fd passing");
    a.set_nonblocking(true).unwrap();
    a.set_nonblocking(false).unwrap();
    let file = fs::File::open("/proc/self/status").unwrap();
    // SAFETY: sendmsg/recvmsg with one SCM_RIGHTS descriptor and buffers that outlive the calls.
    let received = unsafe {
        let mut byte = [7u8];
        let mut iov = libc::iovec {
            iov_base: byte.as_mut_ptr().cast(),
            iov_len: 1,
        };
        let mut cbuf = [0u64; 8];
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = libc::CMSG_SPACE(4) as _;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(4) as _;
        libc::CMSG_DATA(cmsg)
            .cast::<i32>()
            .write_unaligned(file.as_raw_fd());
        check(
            libc::sendmsg(a.as_raw_fd(), &msg, 0) as libc::c_long,
            "sendmsg",
        );

        let mut rbyte = [0u8];
        let mut riov = libc::iovec {
            iov_base: rbyte.as_mut_ptr().cast(),
            iov_len: 1,
        };
        let mut rcbuf = [0u64; 8];
        let mut rmsg: libc::msghdr = std::mem::zeroed();
        rmsg.msg_iov = &mut riov;
        rmsg.msg_iovlen = 1;
        rmsg.msg_control = rcbuf.as_mut_ptr().cast();
        rmsg.msg_controllen = std::mem::size_of_val(&rcbuf) as _;
        check(
            libc::recvmsg(b.as_raw_fd(), &mut rmsg, libc::MSG_CMSG_CLOEXEC) as libc::c_long,
            "recvmsg",
        );
        let rc = libc::CMSG_FIRSTHDR(&rmsg);
        assert!(!rc.is_null());
        OwnedFd::from_raw_fd(libc::CMSG_DATA(rc).cast::<i32>().read_unaligned())
    };
    let mut text = String::new();
    fs::File::from(received).read_to_string(&mut text).unwrap();
    assert!(text.contains("Seccomp:"));
    (&a).write_all(b"{\"event\":\"log\"}\n").unwrap();
    let mut line = [0u8; 16];
    (&b).read_exact(&mut line).unwrap();

    step("epoll / eventfd");
    // SAFETY: epoll on an eventfd, both created and closed here.
    unsafe {
        let efd = check(libc::eventfd(0, libc::EFD_NONBLOCK).into(), "eventfd") as i32;
        let ep = check(
            libc::epoll_create1(libc::EPOLL_CLOEXEC).into(),
            "epoll_create1",
        ) as i32;
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: 1,
        };
        check(
            libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, efd, &mut ev).into(),
            "epoll_ctl",
        );
        let one = 1u64;
        libc::write(efd, (&one as *const u64).cast(), 8);
        let mut out = [libc::epoll_event { events: 0, u64: 0 }; 4];
        assert_eq!(libc::epoll_wait(ep, out.as_mut_ptr(), 4, 100), 1);
        let mut pfd = libc::pollfd {
            fd: efd,
            events: libc::POLLIN,
            revents: 0,
        };
        assert_eq!(libc::poll(&mut pfd, 1, 0), 1);
        libc::close(efd);
        libc::close(ep);
    }
    a.shutdown(std::net::Shutdown::Both).unwrap();
}

fn signals() {
    step("sigwait");
    // SAFETY: blocks SIGUSR1 on this thread, raises it at this thread and waits for it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGUSR1);
        assert_eq!(
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()),
            0
        );
        let tid = libc::syscall(libc::SYS_gettid);
        check(
            libc::syscall(libc::SYS_tgkill, libc::getpid(), tid, libc::SIGUSR1),
            "tgkill",
        );
        let mut sig = 0;
        assert_eq!(libc::sigwait(&set, &mut sig), 0);
        assert_eq!(sig, libc::SIGUSR1);
    }
    step("panic caught");
    let r = std::panic::catch_unwind(|| panic!("a panic on a device thread"));
    assert!(r.is_err());
}
