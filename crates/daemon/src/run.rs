//! The life of a device process, from configuration to exit.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use virtiofsd_device::{DeviceConfig, DeviceEvents, DeviceStats};
use virtiofsd_passthrough::{CachePolicy, Config as FsConfig, FileHandleMode, PassthroughFs};

use crate::config::{CacheMode, DaemonConfig, InodeFileHandles, SocketConfig};
use crate::control::{self, ControlChannel, Event, StopReason};
use crate::logger::{self, LevelTable, Sink};
use crate::sandbox;
use crate::socket::{self, BoundSocket};
use crate::stats::{Confinement, StatsSource};

#[derive(Debug, thiserror::Error)]
enum RunError {
    #[error(transparent)]
    Socket(socket::SocketError),
    #[error("cannot open shared directory {path}", path = .0.display())]
    SharedDir(std::path::PathBuf, #[source] io::Error),
    /// The device's errors say what failed themselves ("vhost-user protocol error", "cannot
    /// accept a vhost-user frontend", ...); a prefix here would only repeat that.
    #[error(transparent)]
    Device(virtiofsd_device::Error),
    #[error("{0}")]
    Setup(&'static str, #[source] io::Error),
    #[error(transparent)]
    Sandbox(virtiofsd_sandbox::SandboxError),
    #[error("cannot install the seccomp filter")]
    Seccomp(#[source] virtiofsd_seccomp::Error),
    /// Says itself that inode file handles are mandatory, and why they cannot be used.
    #[error(transparent)]
    FileHandles(virtiofsd_passthrough::HandleProbeError),
}

/// An error and its chain of causes, `outer: inner: ...`.
fn describe(err: &dyn std::error::Error) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

/// Ends the process at once from a watcher thread: the serving threads hold nothing that needs
/// an orderly shutdown, and exit handlers must not race them.
fn exit_now(code: i32) -> ! {
    // The reason for stopping, and whatever was logged before it, should reach the reader; a
    // reader that stopped reading gets a bounded wait, not a device that never exits.
    logger::flush(logger::EXIT_FLUSH);
    // SAFETY: _exit never returns and touches no process state that could be inconsistent.
    unsafe { libc::_exit(code) }
}

struct Reporter {
    channel: Option<Arc<ControlChannel>>,
}

impl Reporter {
    /// Events go through the logger's writer, in order with the records around them and
    /// without ever making the calling thread wait for the parent.
    fn send(&self, event: &Event<'_>) {
        if self.channel.is_some() {
            logger::event(event);
        }
    }
}

impl DeviceEvents for Reporter {
    fn connected(&self) {
        self.send(&Event::Connected);
    }

    fn disconnected(&self) {
        self.send(&Event::Disconnected);
    }
}

/// Runs a device until its frontend disconnects (exit code 0), it is told to stop (the process
/// exits 0 from a watcher thread), or it fails (exit code 1, after an `error` event). With
/// `reconnect` a disconnect ends only the frontend's session: the device reports `disconnected`,
/// drops every inode, handle and lock of that session, and serves the next frontend on the same
/// socket (`connected` again) with a fresh FUSE session.
///
/// With `control`, the device is supervised: records and events go to the parent, and end of file
/// on the channel stops it. Without, it was started from the command line: it logs to stderr (or
/// the system log with `syslog`) and only signals stop it.
pub fn run(config: DaemonConfig, control: Option<UnixStream>) -> i32 {
    let (channel, commands) = match control.map(ControlChannel::new).transpose() {
        Ok(Some((channel, commands))) => (Some(Arc::new(channel)), Some(commands)),
        Ok(None) => (None, None),
        Err(_) => return 1,
    };
    let sink = match &channel {
        Some(channel) => Sink::Control(channel.clone()),
        None if config.syslog => match Sink::syslog() {
            Ok(sink) => sink,
            Err(e) => {
                logger::fatal_to_stderr(&format!("--syslog: {}", describe(&e)));
                return 1;
            }
        },
        None => Sink::Stderr,
    };
    let log_fd = sink.raw_fd();
    logger::install(sink, LevelTable::from_config(&config));
    logger::log_panics();
    let reporter = Reporter { channel };
    match serve(&config, &reporter, commands, log_fd) {
        Ok(()) => {
            // The frontend left: its `disconnected` event and the last records are still queued
            // for the log thread, and the process exits when this returns.
            logger::flush(logger::EXIT_FLUSH);
            0
        }
        Err(e) => {
            let message = describe(&e);
            match &reporter.channel {
                Some(_) => {
                    log::error!("{message}");
                    reporter.send(&Event::Error { message: &message });
                }
                // The last word of a command-line device is printed whatever the log level.
                None if config.syslog => log::error!("{message}"),
                None => logger::fatal_to_stderr(&message),
            }
            // The process exits when this returns; the error must be out first.
            logger::flush(logger::EXIT_FLUSH);
            1
        }
    }
}

fn serve(
    config: &DaemonConfig,
    reporter: &Reporter,
    commands: Option<UnixStream>,
    log_fd: Option<RawFd>,
) -> Result<(), RunError> {
    // Everything up to the watcher threads runs single-threaded: unshare and a per-thread capset
    // require it, and blocking the stop signals first means one sent during start-up stays
    // pending rather than being lost (a PID-namespace init ignores unhandled signals).
    let signals = block_stop_signals().map_err(|e| RunError::Setup("cannot block signals", e))?;
    let fd_limit = adjust_rlimit_nofile(config.rlimit_nofile)
        .map_err(|e| RunError::Setup("cannot set the open-file limit (--rlimit-nofile)", e))?;

    // The socket path lies outside the sandbox: bind before entering it.
    let mut bound = match &config.socket {
        SocketConfig::Path { path, group } => socket::bind_path(path, group.as_deref()),
        SocketConfig::Fd { fd } => socket::adopt_fd(*fd),
    }
    .map_err(RunError::Socket)?;

    let socket_path = bound.path.clone();
    let remove_socket = move || {
        if let Some(path) = &socket_path {
            socket::remove_socket_file(path);
        }
    };
    // Everything else (the embedder's stdio and any descriptor it leaked) is closed.
    let keep: Vec<RawFd> = [log_fd, commands.as_ref().map(|c| c.as_raw_fd())]
        .into_iter()
        .flatten()
        .chain(bound.raw_fds())
        .collect();
    // SAFETY: geteuid has no preconditions. Before the sandbox, which may map us to root.
    let euid_at_start = unsafe { libc::geteuid() };
    let sandboxed = sandbox::enter(config, &keep, &remove_socket).map_err(RunError::Sandbox)?;
    if !sandboxed.host_paths_visible {
        // The same path may now name a file in the share; the waiting parent removes the socket.
        bound.path = None;
    }
    let bound = Arc::new(bound);
    let mut fs_cfg = fs_config(config, fd_budget(fd_limit));
    fs_cfg.root_dir = sandboxed.root_dir.clone();
    let mut fs = PassthroughFs::with_proc_self_fd(fs_cfg, sandboxed.proc_self_fd)
        .map_err(|e| RunError::SharedDir(config.shared_dir.clone(), e))?;

    sandbox::restrict_capabilities(config).map_err(RunError::Sandbox)?;
    // Whether handles open is known only here: inside the sandbox (a user namespace takes the
    // capability away), with the capabilities the device keeps, and before the seccomp filter
    // (which allows open_by_handle_at only to a device that then uses it).
    fs.probe_file_handles().map_err(RunError::FileHandles)?;
    let file_handles = fs.opens_file_handles();
    let server = Arc::new(virtiofsd_fuse::Server::new(fs).with_id_policy(
        virtiofsd_policy::IdPolicy {
            uid: config.translate_uid.clone(),
            gid: config.translate_gid.clone(),
        },
    ));
    let confinement = Confinement::record(config, euid_at_start);
    crate::seccomp::install(config, file_handles).map_err(RunError::Seccomp)?;
    let device_stats = Arc::new(DeviceStats::new(config.max_request_queues + 1));
    let stats = Arc::new(StatsSource::new(
        Arc::clone(&server),
        Arc::clone(&device_stats),
        confinement,
        reporter.channel.clone(),
        config.syslog,
    ));

    // The first thread of the process: from here on no thread writes a record itself. Started
    // after the sandbox (which may fork: a thread would not survive into the child) and before
    // the queue threads, which must never wait for the parent to read.
    logger::start().map_err(|e| RunError::Setup("cannot start the log writer thread", e))?;

    spawn_stop_watchers(commands, signals, &bound, &stats)?;

    let device_config = DeviceConfig {
        tag: config.tag.clone(),
        max_request_queues: config.max_request_queues,
        queue_threads: 0,
        queue_size: config.queue_size,
        thread_pool_size: config.thread_pool_size,
        // The passthrough filesystem saves and restores its inodes and handles.
        migration: true,
        reconnect: config.reconnect,
    };
    let listening = match &config.socket {
        SocketConfig::Path { path, .. } => path.display().to_string(),
        SocketConfig::Fd { fd } => format!("fd:{fd}"),
    };
    // The TypeScript layer warns about --sandbox=none and --seccomp=none before it spawns us.
    log::info!("waiting for a vhost-user frontend on {listening}");
    reporter.send(&Event::Listening { socket: &listening });

    let listener = bound
        .listener
        .try_clone()
        .map_err(|e| RunError::Setup("cannot clone listener", e))?;
    let result = virtiofsd_device::serve_with_stats(
        listener,
        server,
        &device_config,
        reporter,
        device_stats,
    )
    .map_err(RunError::Device);
    bound.remove_file();
    result
}

/// Descriptors the daemon keeps for itself (sockets, eventfds, queue threads, memory regions,
/// short-lived opens) out of the open-file limit; the rest may be held on the guest's behalf.
fn fd_budget(limit: u64) -> usize {
    let reserve = (limit / 16).clamp(64, 4096);
    usize::try_from(limit.saturating_sub(reserve).max(16)).unwrap_or(usize::MAX)
}

fn fs_config(config: &DaemonConfig, fd_budget: usize) -> FsConfig {
    FsConfig {
        root_dir: config.shared_dir.clone(),
        cache: match config.cache {
            CacheMode::Auto => CachePolicy::Auto,
            CacheMode::Always => CachePolicy::Always,
            CacheMode::Never => CachePolicy::Never,
            CacheMode::Metadata => CachePolicy::Metadata,
        },
        readonly: config.readonly,
        writeback: config.writeback,
        // As upstream: with nothing cached, READDIRPLUS would only fill a cache that is never used.
        readdirplus: config.readdirplus && config.cache != CacheMode::Never,
        allow_direct_io: config.allow_direct_io,
        allow_mmap: config.allow_mmap,
        announce_submounts: config.announce_submounts,
        killpriv_v2: config.killpriv_v2,
        // As upstream: each of these needs extended attributes served.
        xattr: config.xattr
            || config.posix_acl
            || config.security_label
            || config.xattr_map.is_some(),
        xattr_map: config.xattr_map.clone(),
        posix_acl: config.posix_acl,
        security_label: config.security_label,
        inode_file_handles: match config.inode_file_handles {
            InodeFileHandles::Never => FileHandleMode::Never,
            InodeFileHandles::Prefer => FileHandleMode::Prefer,
            InodeFileHandles::Mandatory => FileHandleMode::Mandatory,
        },
        preserve_noatime: config.preserve_noatime,
        posix_locks: config.posix_locks,
        flock: config.flock,
        fd_budget,
        migration_mode: match config.migration_mode {
            crate::config::MigrationMode::FindPaths => {
                virtiofsd_passthrough::MigrationMode::FindPaths
            }
            crate::config::MigrationMode::FileHandles => {
                virtiofsd_passthrough::MigrationMode::FileHandles
            }
        },
        migration_on_error: match config.migration_on_error {
            crate::config::MigrationOnError::Abort => {
                virtiofsd_passthrough::MigrationOnError::Abort
            }
            crate::config::MigrationOnError::GuestError => {
                virtiofsd_passthrough::MigrationOnError::GuestError
            }
        },
        migration_verify_handles: config.migration_verify_handles,
        migration_confirm_paths: config.migration_confirm_paths,
    }
}

/// Blocks SIGTERM, SIGINT and SIGHUP (stop) and SIGUSR1 (print statistics) in this thread,
/// before any other thread exists, so every thread inherits the mask and only the watcher
/// thread receives them (through sigwait).
fn block_stop_signals() -> io::Result<libc::sigset_t> {
    // SAFETY: sigset_t is plain data initialised by sigemptyset before use; the pointers are valid.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGUSR1] {
            libc::sigaddset(&mut set, sig);
        }
        let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        Ok(set)
    }
}

fn spawn_stop_watchers(
    commands: Option<UnixStream>,
    signals: libc::sigset_t,
    bound: &Arc<BoundSocket>,
    stats: &Arc<StatsSource>,
) -> Result<(), RunError> {
    if let Some(commands) = commands {
        let sock = bound.clone();
        let stats = Arc::clone(stats);
        std::thread::Builder::new()
            .name("control".into())
            .spawn(move || {
                match control::wait_for_stop(commands, &|id| stats.reply(id)) {
                    StopReason::Requested => log::info!("stop requested"),
                    StopReason::ParentGone => log::info!("parent process gone; stopping"),
                }
                sock.remove_file();
                exit_now(0);
            })
            .map_err(|e| RunError::Setup("cannot start the control thread", e))?;
    }

    let sock = bound.clone();
    let stats = Arc::clone(stats);
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut sig: libc::c_int = 0;
            loop {
                // SAFETY: `signals` is an initialised set and `sig` is valid for writes.
                while unsafe { libc::sigwait(&signals, &mut sig) } != 0 {}
                if sig != libc::SIGUSR1 {
                    break;
                }
                stats.print();
            }
            log::info!("signal {sig} received; stopping");
            sock.remove_file();
            exit_now(0);
        })
        .map_err(|e| RunError::Setup("cannot start the signal thread", e))?;
    Ok(())
}

/// `None`: raise the soft and hard limits to min(1,000,000, fs.nr_open) as upstream does;
/// `Some(0)`: leave the limit alone; `Some(n)`: set both limits to n.
/// Returns the soft limit in force afterwards.
fn adjust_rlimit_nofile(requested: Option<u64>) -> io::Result<u64> {
    let target = match requested {
        Some(0) => return current_rlimit_nofile(),
        Some(n) => n,
        None => std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(1_048_576)
            .min(1_000_000),
    };
    let limit = libc::rlimit {
        rlim_cur: target,
        rlim_max: target,
    };
    // SAFETY: `limit` is a valid rlimit value.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } == 0 {
        return Ok(target);
    }
    let err = io::Error::last_os_error();
    if requested.is_some() {
        return Err(err);
    }
    // The default is best effort: without CAP_SYS_RESOURCE the hard limit cannot be raised, so
    // take as much as the hard limit allows.
    let mut current = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `current` is valid for writes; `raised` is a valid rlimit value.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut current) == 0 {
            let raised = libc::rlimit {
                rlim_cur: current.rlim_max,
                rlim_max: current.rlim_max,
            };
            libc::setrlimit(libc::RLIMIT_NOFILE, &raised);
        }
    }
    log::debug!(
        "open-file limit {} (could not raise it to {target}: {err})",
        current.rlim_max
    );
    current_rlimit_nofile()
}

fn current_rlimit_nofile() -> io::Result<u64> {
    let mut current = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `current` is valid for writes.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut current) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(current.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_reports_name_every_cause() {
        let e = RunError::Seccomp(virtiofsd_seccomp::Error::Install(
            io::Error::from_raw_os_error(libc::EINVAL),
        ));
        let message = describe(&e);
        assert!(
            message.starts_with("cannot install the seccomp filter: seccomp("),
            "{message}"
        );
        assert!(message.contains("Invalid argument"), "{message}");
        let e = RunError::Sandbox(virtiofsd_sandbox::SandboxError::ProcSelfFd(
            "mounting a procfs on /proc",
            io::Error::from_raw_os_error(libc::EPERM),
        ));
        let message = describe(&e);
        assert!(
            message.contains(
                "private /proc/self/fd: mounting a procfs on /proc: Operation not permitted"
            ),
            "{message}"
        );
    }

    /// No phrase of two words or more may appear twice in a printed chain: each error says
    /// what failed once and leaves the details to its source.
    fn assert_no_repeats(chain: &str) {
        let words: Vec<&str> = chain.split_whitespace().collect();
        for pair in words.windows(2) {
            let phrase = pair.join(" ");
            assert_eq!(
                chain.matches(&phrase).count(),
                1,
                "{phrase:?} twice in {chain:?}"
            );
        }
    }

    #[test]
    fn device_failures_read_cleanly() {
        use virtiofsd_device::VhostUserError;
        let e = RunError::Device(virtiofsd_device::Error::Protocol(
            VhostUserError::InvalidMessage,
        ));
        assert_eq!(describe(&e), "vhost-user protocol error: invalid message");

        let e = RunError::Device(virtiofsd_device::Error::Daemon(
            virtiofsd_device::DaemonError::Accept(VhostUserError::SocketBroken(
                io::Error::from_raw_os_error(libc::EPIPE),
            )),
        ));
        let message = describe(&e);
        assert!(
            message.starts_with("cannot accept a vhost-user frontend: socket is broken: "),
            "{message}"
        );
        assert_no_repeats(&message);

        let e = RunError::Device(virtiofsd_device::ConfigError::QueueSize(1000).into());
        assert_eq!(
            describe(&e),
            "invalid device configuration: queue size 1000 is not a power of two between 1 and \
             32768"
        );
    }

    #[test]
    fn every_layer_names_its_cause_once() {
        let chains = [
            RunError::Sandbox(virtiofsd_sandbox::SandboxError::IdMap(
                virtiofsd_sandbox::IdMapError::Spawn {
                    tool: "newgidmap",
                    source: io::Error::from_raw_os_error(libc::ENOENT),
                },
            )),
            RunError::Setup(
                "cannot start the log writer thread",
                io::Error::from_raw_os_error(libc::EAGAIN),
            ),
            RunError::SharedDir(
                "/srv/share".into(),
                io::Error::from_raw_os_error(libc::ENOENT),
            ),
            RunError::Device(virtiofsd_device::Error::Setup(
                "cannot start the thread pool",
                io::Error::from_raw_os_error(libc::EAGAIN),
            )),
        ];
        for e in &chains {
            let message = describe(e);
            assert_no_repeats(&message);
            // The OS's text is the last word, once.
            assert_eq!(message.matches("(os error").count(), 1, "{message}");
        }
        assert_eq!(
            describe(&chains[0]),
            "sandbox: cannot set up ID mappings: cannot run newgidmap (install package uidmap): \
             No such file or directory (os error 2)"
        );
        let e = crate::logger::SyslogError(io::Error::from_raw_os_error(libc::ENOENT));
        assert_eq!(
            describe(&e),
            "cannot connect to /dev/log: No such file or directory (os error 2)"
        );
    }
}
