//! Test harness: spawns our daemon (the node CLI) or the reference daemon on a fresh shared
//! directory with a sibling "outside" directory, and inspects the device process.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use virtiofsd_frontend::fuse::ROOT_ID;
use virtiofsd_frontend::{Options, Session};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Ours,
    Reference,
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repo root")
}

pub fn reference_path() -> PathBuf {
    static REF: OnceLock<PathBuf> = OnceLock::new();
    REF.get_or_init(|| {
        if let Some(p) = std::env::var_os("VIRTIOFSD_REFERENCE").filter(|p| !p.is_empty()) {
            let p = PathBuf::from(p);
            assert!(
                p.exists(),
                "VIRTIOFSD_REFERENCE={} does not exist",
                p.display()
            );
            return p;
        }
        let out = Command::new("bash")
            .arg(repo_root().join("scripts/provision.sh"))
            .stderr(Stdio::inherit())
            .output()
            .expect("cannot run scripts/provision.sh");
        assert!(
            out.status.success(),
            "scripts/provision.sh failed ({}): cannot find the reference daemon",
            out.status
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let last = stdout.lines().last().unwrap_or_default();
        let key = "\"reference\":\"";
        let start = last
            .find(key)
            .unwrap_or_else(|| panic!("no reference in provision output: {last}"))
            + key.len();
        let end = last[start..]
            .find('"')
            .expect("unterminated reference path")
            + start;
        let p = PathBuf::from(&last[start..end]);
        assert!(
            p.exists(),
            "reference daemon {} missing after provisioning",
            p.display()
        );
        p
    })
    .clone()
}

pub struct Daemon {
    pub kind: Kind,
    child: Child,
    pub dir: PathBuf,
    pub share: PathBuf,
    pub outside: PathBuf,
    pub socket: PathBuf,
    status: Option<ExitStatus>,
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

impl Daemon {
    pub fn start(kind: Kind) -> Daemon {
        Self::start_on(kind, None)
    }

    /// Serves `share` (kept when the daemon is dropped) instead of a fresh directory.
    pub fn start_on(kind: Kind, share: Option<&Path>) -> Daemon {
        Self::start_with(kind, share, &[])
    }

    /// Like [`Daemon::start_on`], with extra command-line options (both daemons take the same).
    pub fn start_with(kind: Kind, share: Option<&Path>, extra: &[&str]) -> Daemon {
        Self::start_as(kind, share, extra, None)
    }

    /// Like [`Daemon::start_with`], run as the ordinary user `uid` (its group too) when given;
    /// the test directory and a fresh share are then owned by that user.
    pub fn start_as(kind: Kind, share: Option<&Path>, extra: &[&str], user: Option<u32>) -> Daemon {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("vfsd-fe-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let share = share.map_or_else(|| dir.join("share"), Path::to_path_buf);
        let outside = dir.join("outside");
        fs::create_dir_all(&share).unwrap();
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("secret"), b"do not touch").unwrap();
        let socket = dir.join("vfs.sock");
        let log = fs::File::create(dir.join("daemon.log")).unwrap();
        let program = match kind {
            Kind::Ours => {
                let cli = repo_root().join("dist/cli.js");
                assert!(
                    cli.exists(),
                    "{} is missing: run `npm run build` first",
                    cli.display()
                );
                vec![PathBuf::from("node"), cli]
            }
            Kind::Reference => vec![reference_path()],
        };
        let mut cmd = match user {
            Some(uid) => {
                for p in [&dir, &share] {
                    std::os::unix::fs::chown(p, Some(uid), Some(uid)).unwrap();
                }
                let mut c = Command::new("setpriv");
                c.arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={uid}"))
                    .arg("--clear-groups");
                c.args(&program);
                c
            }
            None => {
                let mut c = Command::new(&program[0]);
                c.args(&program[1..]);
                c
            }
        };
        cmd.arg(format!("--socket-path={}", socket.display()))
            .arg(format!("--shared-dir={}", share.display()))
            // A Rust backtrace calls getcwd, which the reference's seccomp filter kills: with
            // RUST_BACKTRACE inherited from a developer's shell, a worker panic would end the
            // process by SIGSYS instead of the outcome these tests describe.
            .env_remove("RUST_BACKTRACE")
            .args(extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the {kind:?} daemon: {e}"));
        let mut d = Daemon {
            kind,
            child,
            dir,
            share,
            outside,
            socket,
            status: None,
        };
        let start = Instant::now();
        while !d.socket.exists() {
            if let Some(st) = d.try_status() {
                panic!(
                    "{kind:?} daemon exited with {st} before listening; log:\n{}",
                    d.log()
                );
            }
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "{kind:?} daemon did not create its socket; log:\n{}",
                d.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        d
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
    }

    pub fn connect_with(&self, opts: &Options) -> Session {
        Session::connect_retry(&self.socket, opts, Duration::from_secs(10)).unwrap_or_else(|e| {
            panic!(
                "{:?}: cannot set up the device: {e}; log:\n{}",
                self.kind,
                self.log()
            )
        })
    }

    pub fn connect(&self) -> Session {
        self.connect_with(&test_options())
    }

    /// Connected and initialised.
    pub fn session(&self) -> Session {
        let mut s = self.connect();
        s.init()
            .unwrap_or_else(|e| panic!("{:?}: INIT failed: {e}", self.kind));
        s
    }

    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("try_wait");
        }
        self.status
    }

    /// Waits (bounded) for the daemon to exit; panics if it does not.
    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(s) = self.try_status() {
                return s;
            }
            assert!(
                start.elapsed() < within,
                "{:?} daemon still running after {within:?}; log:\n{}",
                self.kind,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The pid this harness started: what a management tool would signal.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The process that serves the device: follow first children down
    /// (ours: node CLI -> forked device; reference: itself or its sandboxed child).
    pub fn device_pid(&self) -> u32 {
        let mut pid = self.child.id();
        for _ in 0..4 {
            match children(pid).first() {
                Some(c) => pid = *c,
                None => break,
            }
        }
        pid
    }

    pub fn fd_count(&self) -> usize {
        let pid = self.device_pid();
        fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|d| d.count())
            .unwrap_or_else(|e| panic!("/proc/{pid}/fd: {e}"))
    }

    /// Everything in `outside` by name and content, to prove it was not touched.
    pub fn outside_snapshot(&self) -> Vec<(String, Vec<u8>)> {
        let mut v: Vec<(String, Vec<u8>)> = fs::read_dir(&self.outside)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let data = fs::read(e.path()).unwrap_or_default();
                (e.file_name().to_string_lossy().into_owned(), data)
            })
            .collect();
        v.sort();
        v
    }

    pub fn assert_outside_untouched(&self) {
        assert_eq!(
            self.outside_snapshot(),
            vec![("secret".to_string(), b"do not touch".to_vec())],
            "{:?}: the directory next to the share was modified",
            self.kind
        );
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.try_status().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Child processes of `pid`, from every thread's children list.
pub fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    if let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            if let Ok(s) = fs::read_to_string(t.path().join("children")) {
                out.extend(s.split_whitespace().filter_map(|x| x.parse::<u32>().ok()));
            }
        }
    }
    out
}

pub fn test_options() -> Options {
    Options {
        mem_size: 64 << 20,
        queue_size: 16,
        timeout: Duration::from_secs(5),
        ..Options::default()
    }
}

/// The daemon still answers: GETATTR on the root succeeds.
pub fn assert_answers(s: &mut Session, kind: Kind) {
    let a = s
        .getattr(ROOT_ID)
        .unwrap_or_else(|e| panic!("{kind:?}: follow-up GETATTR failed: {e}"));
    assert_eq!(
        a.attr.mode & libc::S_IFMT,
        libc::S_IFDIR,
        "{kind:?}: root is not a directory"
    );
}
