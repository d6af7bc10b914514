//! A `log` backend that forwards records to the parent as control events, so the TypeScript
//! layer decides how logs are shown (stderr, syslog, an embedding application's logger).

use std::sync::Arc;

use log::{Log, Metadata, Record};

use crate::control::{ControlChannel, Event};

struct ControlLogger {
    channel: Arc<ControlChannel>,
    filter: log::LevelFilter,
}

impl Log for ControlLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= self.filter
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let message = record.args().to_string();
        let level = match record.level() {
            log::Level::Error => "error",
            log::Level::Warn => "warn",
            log::Level::Info => "info",
            log::Level::Debug => "debug",
            log::Level::Trace => "trace",
        };
        self.channel.send(&Event::Log {
            level,
            target: record.target(),
            message: &message,
        });
    }

    fn flush(&self) {}
}

/// Installs the logger for this process. Only the first call in a process takes effect, which is
/// what a freshly forked device process needs.
pub fn install(channel: Arc<ControlChannel>, filter: log::LevelFilter) {
    if log::set_boxed_logger(Box::new(ControlLogger { channel, filter })).is_ok() {
        log::set_max_level(filter);
    }
}

/// Reports panics through the log (and so the control channel) before the panic hook already
/// installed runs: stderr points at /dev/null inside the sandbox.
pub fn log_panics() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        log::error!("device process panicked: {info}");
        previous(info);
    }));
}
