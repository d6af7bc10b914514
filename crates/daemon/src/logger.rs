//! The device's `log` backend. A supervised device forwards records to its parent as control
//! events, so the TypeScript layer decides how they are shown; a device started from the command
//! line (no parent left) writes them itself, to stderr in the upstream `env_logger` look or to
//! the system log. Whichever it is, records reach it through [`crate::output`], so a thread that
//! logs never waits for whoever reads them.

use std::io::{self, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use log::{Level, LevelFilter, Log, Metadata, Record};

use crate::config::{DaemonConfig, LogTarget};
use crate::control::{self, ControlChannel, Event};
use crate::output::{LineSink, Output, QUEUE_RECORDS};

/// How long a process about to exit waits for its last records and events to be written: long
/// enough for a busy embedder's event loop to come round, short enough that a parent that
/// stopped reading cannot keep a stopped device alive.
pub const EXIT_FLUSH: Duration = Duration::from_secs(2);

/// The socket the system logger listens on (syslog(3) uses the same).
const SYSLOG_SOCKET: &str = "/dev/log";
/// `LOG_USER`, as upstream's `--syslog`.
const SYSLOG_FACILITY_USER: u8 = 1;

/// Levels per target: the default, overridden by the longest matching target prefix.
#[derive(Debug, Clone)]
pub struct LevelTable {
    default: LevelFilter,
    /// Longest target first, so the first match is the most specific.
    targets: Vec<(String, LevelFilter)>,
}

impl LevelTable {
    pub fn new(default: LevelFilter, targets: &[LogTarget]) -> Self {
        let mut targets: Vec<(String, LevelFilter)> = targets
            .iter()
            .map(|t| (t.target.clone(), t.level.to_filter()))
            .collect();
        targets.sort_by_key(|(target, _)| std::cmp::Reverse(target.len()));
        LevelTable { default, targets }
    }

    pub fn from_config(config: &DaemonConfig) -> Self {
        Self::new(config.log_level.to_filter(), &config.log_targets)
    }

    pub fn level_for(&self, target: &str) -> LevelFilter {
        self.targets
            .iter()
            .find(|(prefix, _)| target.starts_with(prefix.as_str()))
            .map_or(self.default, |(_, level)| *level)
    }

    /// The most verbose level any target may log at, for `log::set_max_level`.
    pub fn max(&self) -> LevelFilter {
        self.targets
            .iter()
            .map(|(_, level)| *level)
            .fold(self.default, std::cmp::Ord::max)
    }
}

/// `/dev/log` could not be reached for `--syslog`.
#[derive(Debug, thiserror::Error)]
#[error("cannot connect to {SYSLOG_SOCKET}")]
pub struct SyslogError(#[source] pub io::Error);

/// Where records go.
pub enum Sink {
    Control(Arc<ControlChannel>),
    Stderr,
    Syslog { socket: UnixDatagram, pid: u32 },
}

impl Sink {
    /// Connects to the system logger now, before the sandbox hides `/dev/log`; the connected
    /// socket keeps working inside it.
    pub fn syslog() -> Result<Sink, SyslogError> {
        let socket = UnixDatagram::unbound().map_err(SyslogError)?;
        socket.connect(SYSLOG_SOCKET).map_err(SyslogError)?;
        Ok(Sink::Syslog {
            socket,
            pid: std::process::id(),
        })
    }

    /// The descriptor the sandbox must keep open for this sink, if any.
    pub fn raw_fd(&self) -> Option<RawFd> {
        match self {
            Sink::Control(channel) => Some(channel.raw_fd()),
            Sink::Stderr => Some(libc::STDERR_FILENO),
            Sink::Syslog { socket, .. } => Some(socket.as_raw_fd()),
        }
    }

    /// One record as this sink's line (a JSON event, a stderr line, a syslog datagram), made
    /// by the thread that logs it so the time stamp is the record's.
    fn encode(&self, level: Level, target: &str, message: &str) -> Vec<u8> {
        match self {
            Sink::Control(_) => control::encode(&Event::Log {
                level: level_name(level),
                target,
                message,
            })
            .unwrap_or_default(),
            Sink::Stderr => format_line(SystemTime::now(), level, target, message).into_bytes(),
            Sink::Syslog { pid, .. } => {
                // The syslog daemon adds the time stamp and host name.
                format!(
                    "<{}>virtiofsd[{pid}]: {}",
                    SYSLOG_FACILITY_USER * 8 + syslog_severity(level),
                    escape(message)
                )
                .into_bytes()
            }
        }
    }
}

impl LineSink for Sink {
    fn write_line(&self, line: &[u8]) {
        if line.is_empty() {
            return;
        }
        match self {
            Sink::Control(channel) => channel.send_line(line),
            Sink::Stderr => write_stderr(line),
            Sink::Syslog { socket, .. } => {
                let _ = socket.send(line);
            }
        }
    }

    fn dropped_notice(&self, dropped: u64) -> Vec<u8> {
        self.encode(
            Level::Warn,
            "virtiofsd",
            &format!("{dropped} log records dropped"),
        )
    }
}

/// The process's output, once [`install`]ed.
static OUTPUT: OnceLock<Arc<Output<Sink>>> = OnceLock::new();

struct DeviceLogger {
    output: Arc<Output<Sink>>,
    levels: LevelTable,
}

impl Log for DeviceLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= self.levels.level_for(metadata.target())
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let message = record.args().to_string();
        let line = self
            .output
            .sink()
            .encode(record.level(), record.target(), &message);
        self.output.record(line);
    }

    fn flush(&self) {
        self.output.flush(EXIT_FLUSH);
    }
}

/// Installs the logger for this process. Only the first call in a process takes effect.
/// Records are written synchronously until [`start`].
pub fn install(sink: Sink, levels: LevelTable) {
    let max = levels.max();
    let output = Output::new(sink, QUEUE_RECORDS);
    if OUTPUT.set(Arc::clone(&output)).is_err() {
        return;
    }
    if log::set_boxed_logger(Box::new(DeviceLogger { output, levels })).is_ok() {
        log::set_max_level(max);
    }
}

/// Starts the writer thread. Call it in the process that serves, after the sandbox (which may
/// fork) and before the queue threads exist.
pub fn start() -> io::Result<()> {
    OUTPUT.get().map_or(Ok(()), Output::start)
}

/// Waits, at most `timeout`, until every record and event so far has been written; returns
/// whether they were. Call it before the process exits.
pub fn flush(timeout: Duration) -> bool {
    match OUTPUT.get() {
        Some(output) => output.flush(timeout),
        None => true,
    }
}

/// Sends a control event to the parent, in order with the records around it; never dropped.
/// Without a control channel there is no one to tell.
pub fn event(event: &Event<'_>) {
    if let Some(output) = OUTPUT.get() {
        if let (Sink::Control(_), Some(line)) = (output.sink(), control::encode(event)) {
            output.event(line);
        }
    }
}

/// The last word of a device started from the command line: written to stderr whatever the log
/// level, after the records before it, then flushed (the caller exits next).
pub fn fatal_to_stderr(message: &str) {
    let line = format_line(SystemTime::now(), Level::Error, "virtiofsd", message);
    match OUTPUT.get() {
        Some(output) if matches!(output.sink(), Sink::Stderr) => {
            output.event(line.into_bytes());
            output.flush(EXIT_FLUSH);
        }
        _ => write_stderr(line.as_bytes()),
    }
}

/// Reports panics through the log before the panic hook already installed runs: inside the
/// sandbox, stderr may point at /dev/null.
pub fn log_panics() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        log::error!("device process panicked: {info}");
        // The process ends right after this hook: the record must be out first.
        flush(EXIT_FLUSH);
        previous(info);
    }));
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::Error => "error",
        Level::Warn => "warn",
        Level::Info => "info",
        Level::Debug => "debug",
        Level::Trace => "trace",
    }
}

fn syslog_severity(level: Level) -> u8 {
    match level {
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    }
}

/// One write per record, so lines from several threads never interleave.
fn write_stderr(line: &[u8]) {
    let _ = io::stderr().lock().write_all(line);
}

/// `[2026-11-27T19:00:00Z INFO  virtiofsd] message`, as the TypeScript layer prints records.
fn format_line(now: SystemTime, level: Level, target: &str, message: &str) -> String {
    format!(
        "[{} {:<5} {}] {}\n",
        utc_stamp(now),
        level.as_str(),
        escape(target),
        escape(message)
    )
}

/// Control characters (C0, DEL, C1) become visible escapes, so device text that came from a
/// guest can neither forge log lines nor drive a terminal.
fn escape(text: &str) -> std::borrow::Cow<'_, str> {
    let is_control = |c: char| c.is_control();
    if !text.chars().any(is_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if is_control(c) => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// `YYYY-MM-DDTHH:MM:SSZ` without a calendar library: days since the epoch to a civil date.
fn utc_stamp(now: SystemTime) -> String {
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The proleptic Gregorian date of day `z` after 1970-01-01, counting in 400-year eras.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LogLevel;
    use std::time::Duration;

    #[test]
    fn stamps_are_utc_civil_dates() {
        let at = |secs| utc_stamp(UNIX_EPOCH + Duration::from_secs(secs));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_795_806_000), "2026-11-27T19:00:00Z");
        assert_eq!(at(4_107_542_399), "2100-02-28T23:59:59Z");
    }

    #[test]
    fn lines_look_like_upstream_and_escape_controls() {
        let line = format_line(
            UNIX_EPOCH + Duration::from_secs(1_795_806_000),
            Level::Info,
            "virtiofsd",
            "a\nb\x1b[31m\u{9b}",
        );
        assert_eq!(
            line,
            "[2026-11-27T19:00:00Z INFO  virtiofsd] a\\nb\\x1b[31m\\x9b\n"
        );
    }

    #[test]
    fn the_longest_target_prefix_wins() {
        let table = LevelTable::new(
            LevelFilter::Warn,
            &[
                LogTarget {
                    target: "virtiofsd".into(),
                    level: LogLevel::Debug,
                },
                LogTarget {
                    target: "virtiofsd_fuse".into(),
                    level: LogLevel::Error,
                },
            ],
        );
        assert_eq!(table.level_for("vhost_user_backend"), LevelFilter::Warn);
        assert_eq!(table.level_for("virtiofsd_daemon::run"), LevelFilter::Debug);
        assert_eq!(
            table.level_for("virtiofsd_fuse::server"),
            LevelFilter::Error
        );
        assert_eq!(table.max(), LevelFilter::Debug);
    }

    #[test]
    fn syslog_lines_carry_facility_severity_and_pid() {
        let (ours, theirs) = UnixDatagram::pair().unwrap();
        let sink = Sink::Syslog {
            socket: ours,
            pid: 42,
        };
        sink.write_line(&sink.encode(Level::Warn, "t", "disk\nfull"));
        let mut buf = [0u8; 128];
        let n = theirs.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"<12>virtiofsd[42]: disk\\nfull");
    }
}
