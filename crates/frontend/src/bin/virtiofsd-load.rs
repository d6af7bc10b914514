//! `virtiofsd-load`: drives a virtio-fs daemon's vhost-user socket without a VM.
//!
//! virtiofsd-load bench --socket PATH --workload W [--queues N] [--depth D] [--seconds S] [--ops N] [--json]
//! virtiofsd-load native --dir PATH --workload W [--depth D] [--seconds S] [--ops N] [--json]
//! virtiofsd-load mktree --dir PATH --files N [--per-dir M] [--fanout K] [--file-bytes B]
//! virtiofsd-load tree --socket PATH [--hold]
//! virtiofsd-load probe --socket PATH
//! virtiofsd-load hold --socket PATH [--creates N] [--write-bytes B] [--missing-lookups K]
//!
//! `hold`, and `tree --hold`, print their result as one JSON line and keep the connection until
//! stdin closes: the device exits when its frontend goes away, so whatever is to be read of the
//! device process (statistics, descriptors, memory) must be read while the connection lasts.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use virtiofsd_frontend::fuse::ROOT_ID;
use virtiofsd_frontend::load::{self, Params, Workload};
use virtiofsd_frontend::tree::{self, TreeSpec};
use virtiofsd_frontend::{native, Options, Session};

const USAGE: &str = "usage:
  virtiofsd-load bench --socket PATH --workload W [--queues N] [--depth D] [--seconds S] [--ops N] [--json]
      W: lookup | getattr | create | readdirplus | randread | randwrite | seqread | seqwrite | walk
      (--depth above 1: lookup, getattr, randread, randwrite only)
  virtiofsd-load native --dir PATH --workload W [--depth D] [--seconds S] [--ops N] [--json]
  virtiofsd-load mktree --dir PATH --files N [--per-dir M] [--fanout K] [--file-bytes B]
  virtiofsd-load tree --socket PATH [--hold]
  virtiofsd-load probe --socket PATH
  virtiofsd-load hold --socket PATH [--creates N] [--write-bytes B] [--missing-lookups K]";

#[derive(Debug, PartialEq)]
struct Args {
    command: String,
    socket: Option<String>,
    dir: Option<PathBuf>,
    workload: Option<Workload>,
    queues: usize,
    depth: usize,
    seconds: f64,
    ops: Option<u64>,
    json: bool,
    hold: bool,
    creates: u64,
    write_bytes: u64,
    missing_lookups: u64,
    files: Option<u64>,
    per_dir: u64,
    fanout: u64,
    file_bytes: u64,
}

const COMMANDS: [&str; 6] = ["bench", "native", "mktree", "tree", "probe", "hold"];

/// Options each command takes, besides `--json` and `--hold` where it applies.
fn allowed(command: &str) -> &'static [&'static str] {
    match command {
        "bench" => &[
            "--socket",
            "--workload",
            "--queues",
            "--depth",
            "--seconds",
            "--ops",
            "--json",
        ],
        "native" => &[
            "--dir",
            "--workload",
            "--depth",
            "--seconds",
            "--ops",
            "--json",
        ],
        "mktree" => &["--dir", "--files", "--per-dir", "--fanout", "--file-bytes"],
        "tree" => &["--socket", "--hold"],
        "probe" => &["--socket"],
        _ => &[
            "--socket",
            "--creates",
            "--write-bytes",
            "--missing-lookups",
        ],
    }
}

fn parse(argv: &[String]) -> Result<Args, String> {
    let mut it = argv.iter();
    let command = it.next().ok_or("missing command")?.clone();
    if !COMMANDS.contains(&command.as_str()) {
        return Err(format!("unknown command '{command}'"));
    }
    let mut a = Args {
        command,
        socket: None,
        dir: None,
        workload: None,
        queues: 1,
        depth: 1,
        seconds: 5.0,
        ops: None,
        json: false,
        hold: false,
        creates: 1,
        write_bytes: 0,
        missing_lookups: 0,
        files: None,
        per_dir: 1000,
        fanout: 0,
        file_bytes: 0,
    };
    while let Some(arg) = it.next() {
        let (key, inline) = match arg.split_once('=') {
            Some((k, v)) => (k, Some(v.to_string())),
            None => (arg.as_str(), None),
        };
        if !allowed(&a.command).contains(&key) {
            return Err(format!("unknown option '{arg}' for {}", a.command));
        }
        if key == "--json" || key == "--hold" {
            if inline.is_some() {
                return Err(format!("{key} takes no value"));
            }
            *(if key == "--json" {
                &mut a.json
            } else {
                &mut a.hold
            }) = true;
            continue;
        }
        let mut value = || {
            inline
                .clone()
                .or_else(|| it.next().cloned())
                .ok_or(format!("{key} needs a value"))
        };
        let num = |v: String| {
            v.parse::<u64>()
                .map_err(|_| format!("{key}: '{v}' is not a non-negative integer"))
        };
        match key {
            "--socket" => a.socket = Some(value()?),
            "--dir" => a.dir = Some(PathBuf::from(value()?)),
            "--workload" => {
                let v = value()?;
                a.workload = Some(Workload::parse(&v).ok_or(format!("unknown workload '{v}'"))?);
            }
            "--queues" => a.queues = num(value()?)? as usize,
            "--depth" => a.depth = num(value()?)? as usize,
            "--ops" => a.ops = Some(num(value()?)?),
            "--creates" => a.creates = num(value()?)?,
            "--write-bytes" => a.write_bytes = num(value()?)?,
            "--missing-lookups" => a.missing_lookups = num(value()?)?,
            "--files" => a.files = Some(num(value()?)?),
            "--per-dir" => a.per_dir = num(value()?)?,
            "--fanout" => a.fanout = num(value()?)?,
            "--file-bytes" => a.file_bytes = num(value()?)?,
            "--seconds" => {
                let v = value()?;
                a.seconds = v
                    .parse::<f64>()
                    .ok()
                    .filter(|s| s.is_finite() && *s > 0.0)
                    .ok_or(format!("--seconds: '{v}' is not a positive number"))?;
            }
            _ => unreachable!("every allowed option is handled"),
        }
    }
    let needs_socket = !matches!(a.command.as_str(), "native" | "mktree");
    if needs_socket && a.socket.is_none() {
        return Err("--socket is required".into());
    }
    if !needs_socket && a.dir.is_none() {
        return Err("--dir is required".into());
    }
    if matches!(a.command.as_str(), "bench" | "native") {
        let w = a.workload.ok_or("--workload is required")?;
        if a.depth > 1 && !w.pipelined() {
            return Err(format!(
                "--depth above 1 is for lookup, getattr, randread and randwrite, not {}",
                w.name()
            ));
        }
    }
    if a.command == "mktree" {
        let files = a.files.ok_or("--files is required")?;
        if files == 0 || a.per_dir == 0 || a.fanout == 1 || a.file_bytes > 1 << 20 {
            return Err(
                "--files and --per-dir must be positive, --fanout 0 or at least 2, --file-bytes at most 1 MiB"
                    .into(),
            );
        }
    }
    if a.command == "hold" && a.creates == 0 && a.write_bytes > 0 {
        return Err("--write-bytes needs a file: --creates must be at least 1".into());
    }
    if a.queues == 0 || a.depth == 0 || a.depth > 64 {
        return Err("--queues must be at least 1 and --depth between 1 and 64".into());
    }
    Ok(a)
}

fn probe(s: &mut Session) -> virtiofsd_frontend::Result<()> {
    println!(
        "features {:#x}, protocol features {:#x}, backend queues {}",
        s.features(),
        s.protocol_features(),
        s.backend_queues()
    );
    let init = s.init()?;
    println!(
        "INIT: {}.{} max_write {} max_pages {} flags {:#x}",
        init.major, init.minor, init.max_write, init.max_pages, init.flags
    );
    let root = s.getattr(ROOT_ID)?;
    println!(
        "GETATTR /: mode {:o} ino {} nlink {}",
        root.attr.mode, root.attr.ino, root.attr.nlink
    );
    let st = s.statfs(ROOT_ID)?;
    println!(
        "STATFS: bsize {} blocks {} namelen {}",
        st.bsize, st.blocks, st.namelen
    );
    let dir = s.opendir(ROOT_ID)?;
    let entries = s.list_dir(ROOT_ID, dir.fh, false, 4096)?;
    s.releasedir(ROOT_ID, dir.fh)?;
    let names: Vec<String> = entries
        .iter()
        .take(20)
        .map(|e| String::from_utf8_lossy(&e.name).into_owned())
        .collect();
    println!("READDIR /: {} entries: {}", entries.len(), names.join(" "));
    Ok(())
}

/// Bytes per WRITE and READ of `hold`.
const HOLD_CHUNK: u64 = 64 * 1024;

/// Flushes stdout and blocks until stdin reaches its end (the caller closes it).
fn wait_for_stdin_close() {
    use std::io::{Read, Write};
    let _ = std::io::stdout().flush();
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
}

/// `hold`: CREATE `creates` files (RELEASE all but the first), WRITE `write_bytes` into the
/// first and READ them back in [`HOLD_CHUNK`] pieces, LOOKUP `missing_lookups` names that do
/// not exist (each ENOENT); then print the request counts and wait for stdin to close.
fn hold(s: &mut Session, a: &Args) -> virtiofsd_frontend::Result<()> {
    s.init()?;
    let tag = std::process::id();
    let mut first = None;
    for i in 0..a.creates {
        let name = format!("stats-{tag}-{i}");
        let (entry, open) = s.create(ROOT_ID, name.as_bytes(), libc::O_RDWR as u32, 0o644, 0)?;
        match first {
            None => first = Some((entry.nodeid, open.fh)),
            Some(_) => s.release(entry.nodeid, open.fh)?,
        }
    }
    let (mut writes, mut reads, mut read_bytes) = (0u64, 0u64, 0u64);
    if let Some((node, fh)) = first {
        let mut offset = 0;
        while offset < a.write_bytes {
            let len = HOLD_CHUNK.min(a.write_bytes - offset);
            let data = vec![0x5a; len as usize];
            let n = s.write(node, fh, offset, &data)?;
            offset += u64::from(n);
            writes += 1;
        }
        let mut offset = 0;
        while offset < a.write_bytes {
            let len = HOLD_CHUNK.min(a.write_bytes - offset) as u32;
            read_bytes += s.read(node, fh, offset, len)?.len() as u64;
            offset += u64::from(len);
            reads += 1;
        }
    }
    let mut enoent = 0u64;
    for i in 0..a.missing_lookups {
        let name = format!("missing-{tag}-{i}");
        match s.lookup(ROOT_ID, name.as_bytes()) {
            Err(e) if e.errno() == Some(libc::ENOENT) => enoent += 1,
            Err(e) => return Err(e),
            Ok(_) => {}
        }
    }
    println!(
        "{{\"creates\":{},\"releases\":{},\"writes\":{writes},\"bytesWritten\":{},\"reads\":{reads},\"bytesRead\":{read_bytes},\"lookups\":{},\"enoent\":{enoent}}}",
        a.creates,
        a.creates.saturating_sub(1),
        a.write_bytes,
        a.missing_lookups
    );
    wait_for_stdin_close();
    Ok(())
}

fn params(a: &Args) -> Params {
    Params {
        workload: a.workload.expect("checked in parse"),
        depth: a.depth,
        seconds: a.seconds,
        max_ops: a.ops,
        warmup: Duration::from_secs_f64((a.seconds / 10.0).min(0.5)),
    }
}

fn print_stats(stats: &load::Stats, json: bool) {
    if json {
        println!("{}", stats.json());
    } else {
        println!("{stats}");
    }
}

fn offline(a: &Args, dir: &Path) -> virtiofsd_frontend::Result<()> {
    if a.command == "native" {
        print_stats(&native::run(dir, &params(a))?, a.json);
        return Ok(());
    }
    let spec = TreeSpec {
        files: a.files.expect("checked in parse"),
        per_dir: a.per_dir,
        fanout: a.fanout,
        file_bytes: a.file_bytes as usize,
    };
    println!("{}", tree::make_tree(dir, &spec)?.json());
    Ok(())
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let a = match parse(&argv) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("virtiofsd-load: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let result = match &a.dir {
        Some(dir) if a.socket.is_none() => offline(&a, dir),
        _ => online(&a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("virtiofsd-load: {e}");
            ExitCode::FAILURE
        }
    }
}

fn online(a: &Args) -> virtiofsd_frontend::Result<()> {
    let socket = a.socket.clone().unwrap_or_default();
    let opts = Options {
        request_queues: a.queues,
        queue_size: 256,
        ..Options::default()
    };
    let mut s = Session::connect_retry(&socket, &opts, Duration::from_secs(5))?;
    match a.command.as_str() {
        "probe" => return probe(&mut s),
        "hold" => return hold(&mut s, a),
        _ => {}
    }
    s.init()?;
    if a.command == "tree" {
        println!("{}", load::lookup_tree(&mut s)?.json());
        if a.hold {
            wait_for_stdin_close();
        }
        return Ok(());
    }
    if s.request_queues() < a.queues {
        eprintln!(
            "virtiofsd-load: the backend offers {} request queue(s); using them",
            s.request_queues()
        );
    }
    print_stats(&load::run(&mut s, &params(a))?, a.json);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Result<Args, String> {
        parse(&s.split_whitespace().map(String::from).collect::<Vec<_>>())
    }

    #[test]
    fn bench_and_native_take_their_options() {
        let a = args("bench --socket s --workload getattr --queues 4 --depth=32 --json").unwrap();
        assert_eq!(a.workload, Some(Workload::Getattr));
        assert_eq!((a.queues, a.depth, a.json), (4, 32, true));
        let a = args("native --dir /x --workload walk --seconds 0.5 --ops 3").unwrap();
        assert_eq!(a.dir.as_deref(), Some(Path::new("/x")));
        assert_eq!((a.seconds, a.ops), (0.5, Some(3)));
        assert!(args("native --workload walk").is_err(), "--dir is required");
        assert!(args("native --dir /x --workload walk --queues 2").is_err());
        assert!(args("bench --socket s --workload walk --depth 2").is_err());
        assert!(args("bench --socket s --workload create --depth 4").is_err());
        assert!(args("bench --socket s --workload lookup --depth 65").is_err());
    }

    #[test]
    fn mktree_and_tree() {
        let a = args("mktree --dir t --files 1000000").unwrap();
        assert_eq!((a.files, a.per_dir, a.fanout), (Some(1_000_000), 1000, 0));
        let a =
            args("mktree --dir t --files 50000 --per-dir 200 --fanout 8 --file-bytes 100").unwrap();
        assert_eq!((a.per_dir, a.fanout, a.file_bytes), (200, 8, 100));
        assert!(args("mktree --dir t").is_err(), "--files is required");
        assert!(args("mktree --dir t --files 10 --fanout 1").is_err());
        assert!(args("mktree --dir t --files 0").is_err());
        assert!(args("mktree --socket s --files 10").is_err());
        let a = args("tree --socket s --hold").unwrap();
        assert!(a.hold);
        assert!(args("tree --socket s --hold=1").is_err());
        assert!(args("tree --socket s --workload lookup").is_err());
    }

    #[test]
    fn unknown_commands_and_options() {
        assert!(args("frobnicate").is_err());
        assert!(args("").is_err());
        assert!(args("bench --socket s --workload nope").is_err());
        assert!(args("probe --socket s --hold").is_err());
        assert!(args("hold --socket s --creates 0 --write-bytes 5").is_err());
        assert!(args("hold --socket s --creates 2 --missing-lookups 3").is_ok());
    }
}
