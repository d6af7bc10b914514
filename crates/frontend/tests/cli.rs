//! The `virtiofsd-load` contract the benchmark orchestrator relies on: every workload on the
//! orchestrator's fixtures, one JSON line with the contracted fields, non-zero exit on errors.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard, OnceLock};

use common::{Daemon, Kind};

/// The orchestrator's fixtures. 11,000 files take seconds to create, so they are built once in
/// a fixed temp directory (renamed into place when complete) and reused by later runs.
fn fixtures() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let sh = std::env::temp_dir().join("virtiofsd-frontend-fixtures-v1");
        if !sh.join("data.bin").exists() {
            let tmp = std::env::temp_dir().join(format!(
                "virtiofsd-frontend-fixtures-{}",
                std::process::id()
            ));
            let _ = fs::remove_dir_all(&tmp);
            fs::create_dir_all(&tmp).unwrap();
            build_fixtures(&tmp);
            // Another run may have won the race; either copy is complete.
            if fs::rename(&tmp, &sh).is_err() {
                let _ = fs::remove_dir_all(&tmp);
            }
        }
        // A previous run killed mid-way through `create` may have left scratch files.
        for e in fs::read_dir(sh.join("scratch")).unwrap().flatten() {
            let _ = fs::remove_file(e.path());
        }
        sh
    })
}

fn build_fixtures(sh: &Path) {
    fs::create_dir(sh.join("meta")).unwrap();
    for i in 0..1000 {
        fs::write(sh.join(format!("meta/f{i}")), b"").unwrap();
    }
    fs::create_dir(sh.join("scratch")).unwrap();
    fs::create_dir(sh.join("dir10k")).unwrap();
    for i in 0..10_000 {
        fs::write(sh.join(format!("dir10k/e{i}")), b"").unwrap();
    }
    let f = fs::File::create(sh.join("data.bin")).unwrap();
    f.set_len(256 << 20).unwrap();
}

fn field(json: &str, key: &str) -> f64 {
    let k = format!("\"{key}\":");
    let at = json
        .find(&k)
        .unwrap_or_else(|| panic!("no {key} in {json}"))
        + k.len();
    let end = json[at..].find([',', '}']).unwrap() + at;
    json[at..end]
        .parse()
        .unwrap_or_else(|_| panic!("{key} is not a number in {json}"))
}

fn bench(kind: Kind, workload: &str, ops: u32, depth: u32) -> String {
    let d = Daemon::start_on(kind, Some(fixtures()));
    let out = Command::new(env!("CARGO_BIN_EXE_virtiofsd-load"))
        .args(["bench", "--socket"])
        .arg(&d.socket)
        .args([
            "--workload",
            workload,
            "--queues",
            "2",
            // A bound, not a target: the --ops count ends the run; a loaded machine must not turn
            // a slow run into a failure (speed is the bench's business), a hang still fails.
            "--seconds",
            "30",
            "--json",
        ])
        .args(["--ops", &ops.to_string(), "--depth", &depth.to_string()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{kind:?} {workload}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.lines().count(),
        1,
        "{kind:?} {workload}: one line expected: {stdout}"
    );
    let line = stdout.trim().to_string();
    assert!(
        line.starts_with(&format!("{{\"workload\":\"{workload}\",\"ops\":")),
        "{line}"
    );
    assert_eq!(field(&line, "ops"), f64::from(ops), "{line}");
    for k in ["seconds", "opsPerSec", "mbPerSec", "p50", "p99"] {
        assert!(field(&line, k) >= 0.0, "{line}");
    }
    assert!(field(&line, "p99") >= field(&line, "p50"), "{line}");
    if workload == "create" {
        assert_eq!(
            fs::read_dir(d.share.join("scratch")).unwrap().count(),
            0,
            "scratch left behind"
        );
    }
    line
}

/// The fixture's `scratch/` is checked for leftovers, so the tests that create in it take turns.
fn scratch() -> MutexGuard<'static, ()> {
    static SCRATCH: Mutex<()> = Mutex::new(());
    SCRATCH.lock().unwrap_or_else(|p| p.into_inner())
}

#[test]
fn every_workload_ours() {
    let _scratch = scratch();
    for (w, ops, depth) in [
        ("lookup", 50, 1),
        ("lookup", 50, 4),
        ("getattr", 50, 4),
        ("create", 20, 1),
        ("readdirplus", 1, 1),
        ("randread", 200, 32),
        ("randwrite", 200, 32),
        ("seqread", 10, 1),
        ("seqwrite", 10, 1),
    ] {
        let line = bench(Kind::Ours, w, ops, depth);
        if w.starts_with("rand") {
            assert_eq!(field(&line, "bytes"), f64::from(ops) * 4096.0, "{line}");
        }
        if w.starts_with("seq") {
            assert_eq!(field(&line, "bytes"), f64::from(ops) * 1048576.0, "{line}");
        }
    }
}

fn load_tool(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_virtiofsd-load"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A small `walk/` beside the other fixtures (the benchmark's is 50,000 files).
fn walk_fixture() -> &'static Path {
    let sh = fixtures();
    let dir = sh.join("walk");
    let made = load_tool(&[
        "mktree",
        "--dir",
        dir.to_str().unwrap(),
        "--files",
        "500",
        "--per-dir",
        "50",
        "--fanout",
        "4",
        "--file-bytes",
        "10",
    ]);
    assert!(made.contains("\"files\":500,\"dirs\":13,"), "{made}");
    sh
}

#[test]
fn walk_through_both_daemons() {
    walk_fixture();
    for kind in [Kind::Ours, Kind::Reference] {
        let line = bench(kind, "walk", 2, 1);
        assert_eq!(field(&line, "files"), 1000.0, "{line}");
    }
}

#[test]
fn native_runs_every_workload() {
    let _scratch = scratch();
    let sh = walk_fixture().to_str().unwrap().to_string();
    for (w, ops, depth) in [
        ("lookup", 50, 1),
        ("getattr", 50, 4),
        ("create", 20, 1),
        ("readdirplus", 1, 1),
        ("randread", 200, 8),
        ("randwrite", 200, 8),
        ("seqread", 10, 1),
        ("seqwrite", 10, 1),
        ("walk", 2, 1),
    ] {
        let (ops, depth) = (ops.to_string(), depth.to_string());
        let line = load_tool(&[
            "native",
            "--dir",
            &sh,
            "--workload",
            w,
            "--ops",
            &ops,
            "--depth",
            &depth,
            "--seconds",
            "30",
            "--json",
        ]);
        assert!(
            line.starts_with(&format!("{{\"workload\":\"{w}\",\"ops\":{ops},")),
            "{line}"
        );
        if w == "walk" {
            assert_eq!(field(&line, "files"), 1000.0, "{line}");
        }
        if w == "randread" {
            assert_eq!(field(&line, "bytes"), 200.0 * 4096.0, "{line}");
        }
    }
    assert_eq!(
        fs::read_dir(Path::new(&sh).join("scratch"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn io_workloads_reference() {
    let line = bench(Kind::Reference, "randread", 100, 32);
    assert_eq!(field(&line, "bytes"), 100.0 * 4096.0);
    bench(Kind::Reference, "lookup", 20, 1);
}

#[test]
fn missing_fixture_fails_loudly() {
    let d = Daemon::start(Kind::Ours);
    let out = Command::new(env!("CARGO_BIN_EXE_virtiofsd-load"))
        .args(["bench", "--socket"])
        .arg(&d.socket)
        .args(["--workload", "lookup", "--ops", "1", "--json"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("LOOKUP") && err.contains("No such file"),
        "{err}"
    );
}

#[test]
fn bad_arguments_are_usage_errors() {
    for args in [
        &["bench"][..],
        &["bench", "--socket", "x", "--workload", "nope"],
        &["frobnicate"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_virtiofsd-load"))
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("usage:"));
    }
}
