//! SIGUSR1 on a device started from the command line prints its statistics as one JSON line on
//! stderr, and the counts are those of the requests a frontend made. The device runs with its
//! defaults (namespace sandbox, `--seccomp=kill`), so the signal goes through the sandbox's
//! waiting process and the statistics path runs under the filter.

mod common;

use std::time::{Duration, Instant};

use common::{Daemon, Kind};
use virtiofsd_frontend::fuse::ROOT_ID;

const STATS_PREFIX: &str = "{\"event\":\"stats\",\"stats\":";

/// Sends SIGUSR1 to the pid the harness started and returns the stats line it makes the device
/// print (the `seen`-th such line of its log, counting from 0).
fn signal_stats(d: &Daemon, seen: usize) -> String {
    // SAFETY: signalling a child process of this test.
    assert_eq!(unsafe { libc::kill(d.pid() as i32, libc::SIGUSR1) }, 0);
    let start = Instant::now();
    loop {
        let log = d.log();
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| l.starts_with(STATS_PREFIX))
            .collect();
        if let Some(line) = lines.get(seen) {
            return (*line).to_owned();
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no stats line after SIGUSR1; log:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The `{...}` object after `"key":` (objects in a stats line hold no nested objects but the
/// queue entries, which are not looked into this way).
fn object<'a>(json: &'a str, key: &str) -> &'a str {
    let at = json
        .find(&format!("\"{key}\":{{"))
        .unwrap_or_else(|| panic!("no object {key} in {json}"));
    let rest = &json[at + key.len() + 3..];
    &rest[..=rest.find('}').expect("object closes")]
}

/// The number after `"key":` in `json`, if the key is there.
fn number(json: &str, key: &str) -> Option<u64> {
    let at = json.find(&format!("\"{key}\":"))? + key.len() + 3;
    let digits: String = json[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

#[test]
fn sigusr1_prints_the_counts_of_the_requests_made() {
    let mut d = Daemon::start(Kind::Ours);
    let mut s = d.session();
    let mut files = Vec::new();
    for i in 0..7 {
        let name = format!("created-{i}");
        files.push(
            s.create(ROOT_ID, name.as_bytes(), libc::O_RDWR as u32, 0o644, 0)
                .unwrap(),
        );
    }
    let (entry, open) = &files[0];
    for i in 0..3u64 {
        s.write(entry.nodeid, open.fh, i * 4096, &[7u8; 4096])
            .unwrap();
    }
    let data = s.read(entry.nodeid, open.fh, 0, 5000).unwrap();
    assert_eq!(data.len(), 5000);
    for i in 0..4 {
        let name = format!("missing-{i}");
        let err = s.lookup(ROOT_ID, name.as_bytes()).unwrap_err();
        assert_eq!(err.errno(), Some(libc::ENOENT));
    }
    for (entry, open) in &files[1..] {
        s.release(entry.nodeid, open.fh).unwrap();
    }

    let line = signal_stats(&d, 0);
    let requests = object(&line, "requests");
    assert_eq!(number(requests, "INIT"), Some(1), "{line}");
    assert_eq!(number(requests, "CREATE"), Some(7), "{line}");
    assert_eq!(number(requests, "WRITE"), Some(3), "{line}");
    assert_eq!(number(requests, "READ"), Some(1), "{line}");
    assert_eq!(number(requests, "LOOKUP"), Some(4), "{line}");
    assert_eq!(number(requests, "RELEASE"), Some(6), "{line}");
    let errors = object(&line, "errors");
    assert_eq!(number(errors, "LOOKUP"), Some(4), "{line}");
    assert_eq!(number(errors, "CREATE"), None, "{line}");
    assert_eq!(number(object(&line, "errno"), "ENOENT"), Some(4), "{line}");
    assert_eq!(number(&line, "bytesWritten"), Some(3 * 4096), "{line}");
    assert_eq!(number(&line, "bytesRead"), Some(5000), "{line}");
    assert_eq!(number(&line, "inodes"), Some(8), "{line}");
    assert_eq!(number(&line, "handles"), Some(1), "{line}");
    assert_eq!(number(&line, "inFlight"), Some(0), "{line}");
    let host_fds = number(&line, "hostFds").expect("host fds counted");
    // The root, 7 inodes and a handle at least, on top of the daemon's own.
    assert!((12..500).contains(&host_fds), "{line}");
    // Every request went through request queue 1: 1 + 7 + 3 + 1 + 4 + 6.
    assert!(line.contains("\"queues\":[{\"requests\":0,"), "{line}");
    assert!(
        line.contains("},{\"requests\":22,\"inFlight\":0,"),
        "{line}"
    );
    assert!(line.contains("\"sandbox\":\"namespace\""), "{line}");
    assert!(line.contains("\"seccomp\":\"kill\""), "{line}");

    // The signal did not stop the device; the counters go on from where they were.
    for i in 0..2 {
        let name = format!("missing-again-{i}");
        assert!(s.lookup(ROOT_ID, name.as_bytes()).is_err());
    }
    let line = signal_stats(&d, 1);
    assert_eq!(
        number(object(&line, "requests"), "LOOKUP"),
        Some(6),
        "{line}"
    );
    assert_eq!(number(object(&line, "errno"), "ENOENT"), Some(6), "{line}");

    drop(s);
    let status = d.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "{status}; log:\n{}", d.log());
}
