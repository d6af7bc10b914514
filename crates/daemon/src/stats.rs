//! A device's statistics as one JSON document, on request: the `stats` control command, or
//! SIGUSR1 for a device started from the command line.
//!
//! Nothing here runs on the request path. The request counters are kept by the FUSE server
//! (per thread) and the device (per queue) as relaxed atomics; this module sums them when asked,
//! reads the inode and handle tables and counts the open descriptors then, and adds what was
//! fixed at start-up (sandbox, seccomp, capabilities).

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;

use serde::Serialize;
use virtiofsd_device::{DeviceStats, QueueSnapshot};
use virtiofsd_fuse::stats::{errno_name, opcode_name};
use virtiofsd_fuse::Server;
use virtiofsd_passthrough::PassthroughFs;

use crate::config::{DaemonConfig, SandboxMode, SeccompMode};
use crate::control::{ControlChannel, Event};

/// Log target of the records that carry statistics (SIGUSR1 with a control channel or syslog).
pub const TARGET: &str = "virtiofsd::stats";

/// How the device was confined at start-up; it does not change afterwards.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Confinement {
    /// `namespace`, `chroot` or `none`.
    pub sandbox: &'static str,
    /// Whether the namespace sandbox created a user namespace (it does when not started as
    /// root).
    pub user_namespace: bool,
    /// The seccomp filter's action on a forbidden system call: `kill`, `log`, `trap`, or
    /// `none` without a filter.
    pub seccomp: &'static str,
    /// The effective capabilities the device serves with (lower case, without `cap_`).
    pub capabilities: Vec<String>,
}

impl Confinement {
    /// Records the confinement; call it after the capabilities were trimmed and before the
    /// seccomp filter is installed (reading the capability set is a system call the filter
    /// does not allow). `euid_at_start` is the effective uid before the sandbox was entered.
    pub fn record(config: &DaemonConfig, euid_at_start: u32) -> Self {
        let capabilities = virtiofsd_sandbox::caps::effective()
            .map(virtiofsd_sandbox::caps::names)
            .unwrap_or_default();
        Self {
            sandbox: match config.sandbox {
                SandboxMode::Namespace => "namespace",
                SandboxMode::Chroot => "chroot",
                SandboxMode::None => "none",
            },
            user_namespace: config.sandbox == SandboxMode::Namespace && euid_at_start != 0,
            seccomp: match config.seccomp {
                SeccompMode::Kill => "kill",
                SeccompMode::Log => "log",
                SeccompMode::Trap => "trap",
                SeccompMode::None => "none",
            },
            capabilities,
        }
    }
}

/// One queue in a [`Snapshot`].
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct QueueStats {
    /// Chains popped from the queue.
    pub requests: u64,
    /// Popped and not completed yet.
    pub in_flight: u64,
    /// Sum of the completed chains' latencies, in microseconds.
    pub latency_us_sum: u64,
    /// Completed chains by latency: entry 0 counts those under 1 µs, entry `i` those from
    /// `2^(i-1)` µs to under `2^i` µs. Trailing empty buckets are left out.
    pub latency_buckets: Vec<u64>,
}

impl From<&QueueSnapshot> for QueueStats {
    fn from(q: &QueueSnapshot) -> Self {
        let used = q.buckets.iter().rposition(|&n| n != 0).map_or(0, |i| i + 1);
        Self {
            requests: q.started,
            in_flight: q.in_flight(),
            latency_us_sum: q.latency_ns_sum / 1000,
            latency_buckets: q.buckets[..used].to_vec(),
        }
    }
}

/// Everything `stats` reports, as it is sent (camelCase JSON).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    /// Requests by opcode (`LOOKUP`, `CREATE`, ..., `UNKNOWN` for numbers the device does not
    /// know); opcodes never seen are left out.
    pub requests: BTreeMap<&'static str, u64>,
    /// Error replies by opcode, likewise sparse.
    pub errors: BTreeMap<&'static str, u64>,
    /// Error replies by errno name (`ENOENT`, ...; `other` beyond the Linux table).
    pub errno: BTreeMap<&'static str, u64>,
    /// READ payload bytes sent to the guest.
    pub bytes_read: u64,
    /// WRITE payload bytes written to host files.
    pub bytes_written: u64,
    /// Requests no reply could be produced for.
    pub unanswered: u64,
    /// Requests popped from any queue and not completed yet.
    pub in_flight: u64,
    /// Per queue: index 0 is the hiprio queue, then the request queues, up to the last one
    /// that carried a request (the device offers more than a frontend usually sets up).
    pub queues: Vec<QueueStats>,
    /// Inodes the guest knows (the root included).
    pub inodes: u64,
    /// Open file and directory handles.
    pub handles: u64,
    /// Host descriptors held for the guest, against `fdBudget`.
    pub fds_held: u64,
    /// How many host descriptors the guest may make the device hold.
    pub fd_budget: u64,
    /// Descriptors open in the device process; `null` if they could not be counted.
    pub host_fds: Option<u64>,
    #[serde(flatten)]
    pub confinement: Confinement,
}

/// Where a statistics line goes when SIGUSR1 asks for one.
enum Output {
    Control,
    Syslog,
    Stderr,
}

/// What a statistics snapshot is made from.
pub struct StatsSource {
    server: Arc<Server<PassthroughFs>>,
    device: Arc<DeviceStats>,
    confinement: Confinement,
    channel: Option<Arc<ControlChannel>>,
    output: Output,
}

fn count(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

impl StatsSource {
    pub fn new(
        server: Arc<Server<PassthroughFs>>,
        device: Arc<DeviceStats>,
        confinement: Confinement,
        channel: Option<Arc<ControlChannel>>,
        syslog: bool,
    ) -> Self {
        let output = match (&channel, syslog) {
            (Some(_), _) => Output::Control,
            (None, true) => Output::Syslog,
            (None, false) => Output::Stderr,
        };
        Self {
            server,
            device,
            confinement,
            channel,
            output,
        }
    }

    /// The statistics now.
    pub fn snapshot(&self) -> Snapshot {
        let counts = self.server.stats().snapshot();
        let sparse = |slots: &[u64]| {
            slots
                .iter()
                .enumerate()
                .filter(|(_, &n)| n != 0)
                .map(|(slot, &n)| (opcode_name(slot), n))
                .collect::<BTreeMap<_, _>>()
        };
        let mut errno = BTreeMap::new();
        for (slot, &n) in counts.errno.iter().enumerate().filter(|(_, &n)| n != 0) {
            *errno
                .entry(errno_name(slot).unwrap_or("other"))
                .or_insert(0) += n;
        }
        let mut queues: Vec<QueueStats> = self.device.snapshot().iter().map(Into::into).collect();
        queues.truncate(queues_in_use(&queues));
        let fs = self.server.fs();
        let census = fs.census();
        Snapshot {
            requests: sparse(&counts.requests),
            errors: sparse(&counts.errors),
            errno,
            bytes_read: counts.bytes_read,
            bytes_written: counts.bytes_written,
            unanswered: counts.unanswered,
            in_flight: queues.iter().map(|q| q.in_flight).sum(),
            queues,
            inodes: count(census.inodes),
            handles: count(census.handles),
            fds_held: count(census.fds_held),
            fd_budget: count(census.fd_budget),
            host_fds: fs.open_fds().ok().map(count),
            confinement: self.confinement.clone(),
        }
    }

    /// Answers the `stats` command `id` on the control channel. Written from the control
    /// thread itself: a parent that asks and does not read then holds up only its own further
    /// commands, never a queue, and cannot make the device queue replies without bound.
    pub fn reply(&self, id: u64) {
        if let Some(channel) = &self.channel {
            channel.send(&Event::Stats {
                id,
                stats: &self.snapshot(),
            });
        }
    }

    /// SIGUSR1: one JSON line on the device's log. On stderr it is the bare line
    /// `{"event":"stats","stats":{...}}`, whatever the log level; with a control channel or
    /// the system log it is a record at level info with target [`TARGET`].
    pub fn print(&self) {
        let snapshot = self.snapshot();
        let Ok(json) = serde_json::to_string(&Printed { stats: &snapshot }) else {
            return;
        };
        match self.output {
            Output::Stderr => {
                let line = format!("{json}\n");
                let _ = std::io::stderr().lock().write_all(line.as_bytes());
            }
            Output::Control | Output::Syslog => log::info!(target: TARGET, "{json}"),
        }
    }
}

/// The shape of a printed line, the same as the control channel's reply without its id.
#[derive(Serialize)]
#[serde(tag = "event", rename = "stats")]
struct Printed<'a> {
    stats: &'a Snapshot,
}

/// How many queues to report: the hiprio queue and the request queues up to the last one that
/// carried a request, and at least the first request queue, which every frontend sets up.
fn queues_in_use(queues: &[QueueStats]) -> usize {
    let last_used = queues.iter().rposition(|q| q.requests > 0).unwrap_or(0);
    (last_used + 1).max(2).min(queues.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn confinement() -> Confinement {
        Confinement {
            sandbox: "namespace",
            user_namespace: true,
            seccomp: "kill",
            capabilities: vec!["chown".into()],
        }
    }

    #[test]
    fn only_the_queues_up_to_the_last_used_one_are_reported() {
        let q = |requests| QueueStats {
            requests,
            in_flight: 0,
            latency_us_sum: 0,
            latency_buckets: Vec::new(),
        };
        assert_eq!(queues_in_use(&[q(0), q(0), q(0), q(0)]), 2);
        assert_eq!(queues_in_use(&[q(1), q(5), q(0), q(3), q(0)]), 4);
        assert_eq!(queues_in_use(&[q(0)]), 1);
    }

    #[test]
    fn queues_trim_their_histograms() {
        let mut buckets = [0u64; virtiofsd_device::LATENCY_BUCKETS];
        buckets[3] = 5;
        buckets[1] = 2;
        let q = QueueStats::from(&QueueSnapshot {
            started: 9,
            completed: 7,
            latency_ns_sum: 12_345_678,
            buckets,
        });
        assert_eq!(q.latency_buckets, [0, 2, 0, 5]);
        assert_eq!((q.requests, q.in_flight, q.latency_us_sum), (9, 2, 12_345));
    }

    #[test]
    fn a_snapshot_of_a_fresh_device_is_small_and_names_its_fields() {
        let dir = std::env::temp_dir();
        let fs = PassthroughFs::new(virtiofsd_passthrough::Config::new(&dir)).unwrap();
        let source = StatsSource::new(
            Arc::new(Server::new(fs)),
            Arc::new(DeviceStats::new(2)),
            confinement(),
            None,
            false,
        );
        let snapshot = source.snapshot();
        assert!(snapshot.requests.is_empty());
        assert_eq!(snapshot.inodes, 1);
        assert!(snapshot.host_fds.is_some_and(|n| n > 2));
        let json = serde_json::to_value(&snapshot).unwrap();
        assert_eq!(json["queues"][1]["latencyBuckets"], serde_json::json!([]));
        assert_eq!(json["sandbox"], "namespace");
        assert_eq!(json["userNamespace"], true);
        assert_eq!(json["seccomp"], "kill");
        assert_eq!(json["capabilities"], serde_json::json!(["chown"]));
        assert_eq!(json["bytesRead"], 0);
        let printed = serde_json::to_value(Printed { stats: &snapshot }).unwrap();
        assert_eq!(printed["event"], "stats");
        assert_eq!(printed["stats"], json);
    }

    #[test]
    fn the_largest_snapshot_fits_a_control_line() {
        // Every opcode and errno slot used, 64 queues with full histograms of huge counts.
        let snapshot = Snapshot {
            requests: (0..virtiofsd_fuse::stats::OPCODE_SLOTS)
                .map(|s| (opcode_name(s), u64::MAX))
                .collect(),
            errors: (0..virtiofsd_fuse::stats::OPCODE_SLOTS)
                .map(|s| (opcode_name(s), u64::MAX))
                .collect(),
            errno: (0..virtiofsd_fuse::stats::ERRNO_SLOTS)
                .map(|s| (errno_name(s).unwrap_or("other"), u64::MAX))
                .collect(),
            bytes_read: u64::MAX,
            bytes_written: u64::MAX,
            unanswered: u64::MAX,
            in_flight: u64::MAX,
            queues: (0..=virtiofsd_device::MAX_REQUEST_QUEUES)
                .map(|_| QueueStats {
                    requests: u64::MAX,
                    in_flight: u64::MAX,
                    latency_us_sum: u64::MAX,
                    latency_buckets: vec![u64::MAX; virtiofsd_device::LATENCY_BUCKETS],
                })
                .collect(),
            inodes: u64::MAX,
            handles: u64::MAX,
            fds_held: u64::MAX,
            fd_budget: u64::MAX,
            host_fds: Some(u64::MAX),
            confinement: Confinement {
                capabilities: virtiofsd_sandbox::caps::names(u64::MAX),
                ..confinement()
            },
        };
        let line = crate::control::encode(&Event::Stats {
            id: u64::MAX,
            stats: &snapshot,
        })
        .unwrap();
        // The TypeScript reader's limit (MAX_CONTROL_LINE_BYTES) is 64 KiB.
        assert!(line.len() < 64 * 1024, "{} bytes", line.len());
    }
}
