//! The control channel between a device process and the process that started it: one end of a
//! stream socketpair carrying newline-delimited JSON. The device sends [`Event`]s; the parent sends
//! [`Command`]s. End of file from the parent means it is gone, which the device treats as `stop`.

use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, PartialEq, Eq)]
#[serde(tag = "event", rename_all = "camelCase")]
pub enum Event<'a> {
    Listening {
        socket: &'a str,
    },
    Connected,
    Disconnected,
    Log {
        level: &'a str,
        target: &'a str,
        message: &'a str,
    },
    Error {
        message: &'a str,
    },
    /// The answer to [`Command::Stats`] with the same id.
    Stats {
        id: u64,
        stats: &'a crate::stats::Snapshot,
    },
}

#[derive(Debug, Deserialize, PartialEq, Eq)]
#[serde(tag = "cmd", rename_all = "camelCase", deny_unknown_fields)]
pub enum Command {
    Stop,
    /// Asks for a [`Event::Stats`] reply carrying `id`.
    Stats {
        id: u64,
    },
}

/// What ended the wait for commands.
#[derive(Debug, PartialEq, Eq)]
pub enum StopReason {
    Requested,
    ParentGone,
}

pub struct ControlChannel {
    writer: Mutex<UnixStream>,
}

impl ControlChannel {
    pub fn new(stream: UnixStream) -> io::Result<(Self, UnixStream)> {
        let reader = stream.try_clone()?;
        Ok((
            ControlChannel {
                writer: Mutex::new(stream),
            },
            reader,
        ))
    }

    /// The descriptor events are written to (kept open by the sandbox).
    pub fn raw_fd(&self) -> RawFd {
        match self.writer.lock() {
            Ok(writer) => writer.as_raw_fd(),
            Err(poisoned) => poisoned.into_inner().as_raw_fd(),
        }
    }

    /// Sends one event now, blocking until the parent has room for it. Records and the
    /// lifecycle events go through the logger's writer thread instead (`crate::output`), which
    /// uses [`encode`] and [`ControlChannel::send_line`].
    pub fn send(&self, event: &Event<'_>) {
        if let Some(line) = encode(event) {
            self.send_line(&line);
        }
    }

    /// Writes one encoded line. A parent that stopped listening is not an error worth dying
    /// for: the device goes on serving its guest, and the reader side notices the parent's
    /// departure. The lock keeps lines from different writers whole.
    pub fn send_line(&self, line: &[u8]) {
        let mut writer = match self.writer.lock() {
            Ok(writer) => writer,
            Err(poisoned) => poisoned.into_inner(),
        };
        let _ = writer.write_all(line);
    }
}

/// One event as a JSON line, newline included.
pub fn encode(event: &Event<'_>) -> Option<Vec<u8>> {
    let mut line = serde_json::to_vec(event).ok()?;
    line.push(b'\n');
    Some(line)
}

/// Blocks until the parent asks the device to stop or goes away, answering `stats` commands
/// with `on_stats` on the way. Lines that are not a known command are logged (so they reach the
/// parent) and otherwise ignored, so a protocol mismatch is visible.
pub fn wait_for_stop(reader: UnixStream, on_stats: &dyn Fn(u64)) -> StopReason {
    let mut lines = BufReader::new(reader);
    let mut line = String::new();
    loop {
        line.clear();
        match lines.read_line(&mut line) {
            Ok(0) | Err(_) => return StopReason::ParentGone,
            Ok(_) => match serde_json::from_str::<Command>(line.trim_end()) {
                Ok(Command::Stop) => return StopReason::Requested,
                Ok(Command::Stats { id }) => on_stats(id),
                Err(e) => log::warn!(target: "control", "unknown control command: {e}"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn events_are_json_lines() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let (channel, _reader) = ControlChannel::new(ours).unwrap();
        channel.send(&Event::Listening {
            socket: "/tmp/x.sock",
        });
        channel.send(&Event::Log {
            level: "info",
            target: "t",
            message: "a \"quoted\"\nline",
        });
        channel.send(&Event::Connected);
        drop(channel);
        drop(_reader);
        let mut text = String::new();
        theirs.read_to_string(&mut text).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], r#"{"event":"listening","socket":"/tmp/x.sock"}"#);
        assert_eq!(
            lines[1],
            r#"{"event":"log","level":"info","target":"t","message":"a \"quoted\"\nline"}"#
        );
        assert_eq!(lines[2], r#"{"event":"connected"}"#);
    }

    #[test]
    fn stop_command_and_eof() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let (_channel, reader) = ControlChannel::new(ours).unwrap();
        theirs
            .write_all(b"{\"cmd\":\"bogus\"}\n{\"cmd\":\"stop\"}\n")
            .unwrap();
        assert_eq!(wait_for_stop(reader, &|_| ()), StopReason::Requested);

        let (ours, theirs) = UnixStream::pair().unwrap();
        let (_channel, reader) = ControlChannel::new(ours).unwrap();
        drop(theirs);
        assert_eq!(wait_for_stop(reader, &|_| ()), StopReason::ParentGone);
    }

    #[test]
    fn stats_commands_are_answered_in_order_until_stop() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let (_channel, reader) = ControlChannel::new(ours).unwrap();
        theirs
            .write_all(
                b"{\"cmd\":\"stats\",\"id\":7}\n{\"cmd\":\"stats\"}\n\
                  {\"cmd\":\"stats\",\"id\":8,\"x\":1}\n{\"cmd\":\"stats\",\"id\":9}\n\
                  {\"cmd\":\"stop\"}\n{\"cmd\":\"stats\",\"id\":10}\n",
            )
            .unwrap();
        let asked = std::cell::RefCell::new(Vec::new());
        let reason = wait_for_stop(reader, &|id| asked.borrow_mut().push(id));
        assert_eq!(reason, StopReason::Requested);
        // Without an id, or with a field too many, a command is not one.
        assert_eq!(*asked.borrow(), [7, 9]);
    }
}
