//! `virtiofsd-load`: drives a virtio-fs daemon's vhost-user socket without a VM.
//!
//! virtiofsd-load bench --socket PATH --workload W [--queues N] [--depth D] [--seconds S] [--ops N] [--json]
//! virtiofsd-load probe --socket PATH

use std::process::ExitCode;
use std::time::Duration;

use virtiofsd_frontend::fuse::ROOT_ID;
use virtiofsd_frontend::load::{self, Params, Workload};
use virtiofsd_frontend::{Options, Session};

const USAGE: &str = "usage:
  virtiofsd-load bench --socket PATH --workload W [--queues N] [--depth D] [--seconds S] [--ops N] [--json]
      W: lookup | create | readdirplus | randread | randwrite | seqread | seqwrite
  virtiofsd-load probe --socket PATH";

struct Args {
    command: String,
    socket: Option<String>,
    workload: Option<Workload>,
    queues: usize,
    depth: usize,
    seconds: f64,
    ops: Option<u64>,
    json: bool,
}

fn parse(argv: &[String]) -> Result<Args, String> {
    let mut it = argv.iter();
    let command = it.next().ok_or("missing command")?.clone();
    if command != "bench" && command != "probe" {
        return Err(format!("unknown command '{command}'"));
    }
    let mut a = Args {
        command,
        socket: None,
        workload: None,
        queues: 1,
        depth: 1,
        seconds: 5.0,
        ops: None,
        json: false,
    };
    while let Some(arg) = it.next() {
        let (key, inline) = match arg.split_once('=') {
            Some((k, v)) => (k, Some(v.to_string())),
            None => (arg.as_str(), None),
        };
        if key == "--json" {
            a.json = true;
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
            "--workload" => {
                let v = value()?;
                a.workload = Some(Workload::parse(&v).ok_or(format!("unknown workload '{v}'"))?);
            }
            "--queues" => a.queues = num(value()?)? as usize,
            "--depth" => a.depth = num(value()?)? as usize,
            "--ops" => a.ops = Some(num(value()?)?),
            "--seconds" => {
                let v = value()?;
                a.seconds = v
                    .parse::<f64>()
                    .ok()
                    .filter(|s| s.is_finite() && *s > 0.0)
                    .ok_or(format!("--seconds: '{v}' is not a positive number"))?;
            }
            _ => return Err(format!("unknown option '{arg}'")),
        }
    }
    if a.socket.is_none() {
        return Err("--socket is required".into());
    }
    if a.command == "bench" && a.workload.is_none() {
        return Err("--workload is required".into());
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

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let a = match parse(&argv) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("virtiofsd-load: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let socket = a.socket.clone().unwrap_or_default();
    let opts = Options {
        request_queues: a.queues,
        queue_size: 256,
        ..Options::default()
    };
    let result =
        Session::connect_retry(&socket, &opts, Duration::from_secs(5)).and_then(|mut s| {
            if a.command == "probe" {
                return probe(&mut s);
            }
            s.init()?;
            let workload = a.workload.expect("checked in parse");
            if s.request_queues() < a.queues {
                eprintln!(
                    "virtiofsd-load: the backend offers {} request queue(s); using them",
                    s.request_queues()
                );
            }
            let warmup = Duration::from_secs_f64((a.seconds / 10.0).min(0.5));
            let p = Params {
                workload,
                depth: a.depth,
                seconds: a.seconds,
                max_ops: a.ops,
                warmup,
            };
            let stats = load::run(&mut s, &p)?;
            if a.json {
                println!("{}", stats.json());
            } else {
                println!("{stats}");
            }
            Ok(())
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("virtiofsd-load: {e}");
            ExitCode::FAILURE
        }
    }
}
