//! `virtiofsd`, the device executable: the only program that serves a device.
//!
//! It is not meant to be run by hand. The package's TypeScript layer parses and validates the
//! options, compiles them into a [`DaemonConfig`] and hands it over on a descriptor:
//! - the command line replaces itself with this program (execve), so the pid a management tool
//!   started and signals is the device;
//! - the library starts it as a child process with a control socket (`--control-fd`).
//!
//! `--socket-path`/`--fd` and `--shared-dir` repeat what the configuration says, so `ps` shows
//! which device a process is; they are checked against it, never trusted on their own.

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use virtiofsd_daemon::config::{ConfigError, DaemonConfig, SocketConfig};
use virtiofsd_daemon::control::{ControlChannel, Event};

/// A compiled configuration is a few hundred bytes; anything near this is not one.
const MAX_CONFIG_BYTES: u64 = 1 << 20;
/// Usage errors exit as upstream's argument parser does.
const USAGE_EXIT: i32 = 2;

#[derive(Debug, thiserror::Error)]
enum StartError {
    #[error("{0}")]
    Usage(String),
    #[error("cannot read the configuration from descriptor {fd}")]
    ReadConfig {
        fd: RawFd,
        #[source]
        source: io::Error,
    },
    #[error("descriptor {fd} ({what}) is not open")]
    NotOpen { fd: RawFd, what: &'static str },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{option} {given} does not match the configuration ({configured})")]
    Mismatch {
        option: &'static str,
        given: String,
        configured: String,
    },
}

#[derive(Debug, Default, PartialEq, Eq)]
struct Args {
    config_fd: Option<RawFd>,
    control_fd: Option<RawFd>,
    socket_path: Option<PathBuf>,
    fd: Option<RawFd>,
    shared_dir: Option<PathBuf>,
}

const ABOUT: &str = "This is the device executable of the virtiofsd package. It is started by the \
`virtiofsd` command or the package's library with a compiled configuration; run `virtiofsd --help` \
for the command-line options.";

fn parse_args(args: impl IntoIterator<Item = OsString>) -> Result<Args, StartError> {
    let mut parsed = Args::default();
    for arg in args {
        let text = arg
            .into_string()
            .map_err(|a| StartError::Usage(format!("argument {a:?} is not UTF-8")))?;
        let (name, value) = text.split_once('=').unwrap_or((text.as_str(), ""));
        let fd = |value: &str| {
            value
                .parse::<RawFd>()
                .ok()
                .filter(|fd| *fd >= 0)
                .ok_or_else(|| StartError::Usage(format!("invalid descriptor in '{text}'")))
        };
        match name {
            "--config-fd" => parsed.config_fd = Some(fd(value)?),
            "--control-fd" => parsed.control_fd = Some(fd(value)?),
            "--fd" => parsed.fd = Some(fd(value)?),
            "--socket-path" if !value.is_empty() => parsed.socket_path = Some(value.into()),
            "--shared-dir" if !value.is_empty() => parsed.shared_dir = Some(value.into()),
            _ => return Err(StartError::Usage(format!("unexpected argument '{text}'"))),
        }
    }
    if parsed.config_fd.is_none() {
        return Err(StartError::Usage("--config-fd is required".into()));
    }
    if parsed.config_fd == parsed.control_fd {
        return Err(StartError::Usage(
            "--config-fd and --control-fd must differ".into(),
        ));
    }
    Ok(parsed)
}

/// Takes ownership of an inherited descriptor after checking that it is open.
fn adopt(fd: RawFd, what: &'static str) -> Result<File, StartError> {
    // SAFETY: F_GETFD only reads the descriptor's flags.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(StartError::NotOpen { fd, what });
    }
    // SAFETY: the descriptor is open, was inherited for this purpose, and nothing else in this
    // process owns it.
    Ok(unsafe { File::from_raw_fd(fd) })
}

fn read_config(fd: RawFd) -> Result<DaemonConfig, StartError> {
    let mut text = String::new();
    adopt(fd, "configuration")?
        .take(MAX_CONFIG_BYTES)
        .read_to_string(&mut text)
        .map_err(|source| StartError::ReadConfig { fd, source })?;
    Ok(DaemonConfig::from_json(&text)?)
}

/// The labels shown by `ps` must name the device this process really is.
fn check_labels(args: &Args, config: &DaemonConfig) -> Result<(), StartError> {
    let mismatch = |option, given: String, configured: String| {
        Err(StartError::Mismatch {
            option,
            given,
            configured,
        })
    };
    match (&config.socket, &args.socket_path, args.fd) {
        (SocketConfig::Path { path, .. }, Some(given), _) if given != path => mismatch(
            "--socket-path",
            given.display().to_string(),
            path.display().to_string(),
        )?,
        (SocketConfig::Fd { fd }, _, Some(given)) if given != *fd => {
            mismatch("--fd", given.to_string(), fd.to_string())?
        }
        (SocketConfig::Path { .. }, _, Some(_)) | (SocketConfig::Fd { .. }, Some(_), _) => {
            return Err(StartError::Usage(
                "the socket label does not match the configured socket kind".into(),
            ))
        }
        _ => {}
    }
    match &args.shared_dir {
        Some(given) if *given != config.shared_dir => mismatch(
            "--shared-dir",
            given.display().to_string(),
            config.shared_dir.display().to_string(),
        ),
        _ => Ok(()),
    }
}

/// An exec keeps ignored signals ignored and the signal mask of the thread that called it; the
/// device wants the defaults (SIGPIPE stays ignored: broken sockets are errors, not deaths).
fn reset_signals() {
    // SAFETY: SIG_DFL is a valid disposition for every catchable signal; sigset_t is initialised
    // by sigemptyset before use.
    unsafe {
        for sig in 1..libc::SIGRTMAX() {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP && sig != libc::SIGPIPE {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::pthread_sigmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
    }
}

fn start() -> Result<i32, StartError> {
    let args = parse_args(std::env::args_os().skip(1))?;
    let config_fd = args.config_fd.unwrap_or_default();
    let control = args
        .control_fd
        .map(|fd| adopt(fd, "control channel").map(|file| UnixStream::from(OwnedFd::from(file))))
        .transpose()?;
    let config = match read_config(config_fd).and_then(|config| {
        check_labels(&args, &config)?;
        Ok(config)
    }) {
        Ok(config) => config,
        Err(e) => {
            // A supervising library hears why, as for any failed start; stderr gets it too.
            if let Some(stream) = &control {
                if let Ok((channel, _)) =
                    stream.try_clone().map(ControlChannel::new).and_then(|r| r)
                {
                    channel.send(&Event::Error {
                        message: &describe(&e),
                    });
                }
            }
            return Err(e);
        }
    };
    Ok(virtiofsd_daemon::run(config, control))
}

/// An error and its causes, `outer: inner: ...`.
fn describe(e: &StartError) -> String {
    let mut message = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        message.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    message
}

fn main() {
    reset_signals();
    let code = match start() {
        Ok(code) => code,
        Err(StartError::Usage(message)) => {
            eprintln!("virtiofsd: {message}\n{ABOUT}");
            USAGE_EXIT
        }
        Err(e) => {
            eprintln!("virtiofsd: {}", describe(&e));
            1
        }
    };
    std::process::exit(code);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Result<Args, StartError> {
        parse_args(list.iter().map(OsString::from))
    }

    #[test]
    fn parses_descriptors_and_labels() {
        let parsed = args(&[
            "--config-fd=5",
            "--control-fd=6",
            "--socket-path=/run/a.sock",
            "--shared-dir=/srv",
        ])
        .unwrap();
        assert_eq!(parsed.config_fd, Some(5));
        assert_eq!(parsed.control_fd, Some(6));
        assert_eq!(parsed.socket_path, Some(PathBuf::from("/run/a.sock")));
        assert_eq!(parsed.shared_dir, Some(PathBuf::from("/srv")));
    }

    #[test]
    fn refuses_what_it_does_not_know() {
        for bad in [
            &["--shared-dir=/srv"][..],
            &["--config-fd=x"],
            &["--config-fd=-1"],
            &["--config-fd=3", "--control-fd=3"],
            &["--config-fd=3", "--cache=auto"],
            &["--config-fd=3", "--socket-path"],
        ] {
            assert!(matches!(args(bad), Err(StartError::Usage(_))), "{bad:?}");
        }
    }

    #[test]
    fn a_closed_descriptor_is_named() {
        let err = adopt(987_654, "configuration").unwrap_err();
        assert_eq!(
            err.to_string(),
            "descriptor 987654 (configuration) is not open"
        );
    }
}
