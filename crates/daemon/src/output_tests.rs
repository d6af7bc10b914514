use super::*;
use crate::control::{self, ControlChannel, Event};
use crate::logger::Sink;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};

/// A sink that collects lines in memory.
#[derive(Default)]
struct Lines(Mutex<Vec<String>>);

impl LineSink for Lines {
    fn write_line(&self, line: &[u8]) {
        self.0
            .lock()
            .unwrap()
            .push(String::from_utf8_lossy(line).into_owned());
    }

    fn dropped_notice(&self, dropped: u64) -> Vec<u8> {
        format!("{dropped} dropped").into_bytes()
    }
}

fn control_output(capacity: usize) -> (Arc<Output<Sink>>, UnixStream, UnixStream) {
    let (ours, theirs) = UnixStream::pair().unwrap();
    let (channel, commands) = ControlChannel::new(ours).unwrap();
    (
        Output::new(Sink::Control(Arc::new(channel)), capacity),
        theirs,
        commands,
    )
}

fn log_line(message: &str) -> Vec<u8> {
    control::encode(&Event::Log {
        level: "info",
        target: "t",
        message,
    })
    .unwrap()
}

#[test]
fn before_start_the_caller_writes_in_order() {
    let output = Output::new(Lines::default(), 2);
    for i in 0..5 {
        output.record(format!("r{i}").into_bytes());
    }
    // Nothing is dropped while writes are synchronous, however small the queue.
    let lines = output.sink().0.lock().unwrap().clone();
    assert_eq!(lines, ["r0", "r1", "r2", "r3", "r4"]);
    assert_eq!(output.dropped_total(), 0);
    assert!(output.flush(Duration::ZERO));
}

#[test]
fn the_writer_keeps_order_and_flush_waits_for_it() {
    let output = Output::new(Lines::default(), 64);
    output.record(b"before".to_vec());
    output.start().unwrap();
    output.start().unwrap();
    for i in 0..50 {
        output.record(format!("r{i}").into_bytes());
    }
    output.event(b"event".to_vec());
    assert!(output.flush(Duration::from_secs(10)));
    let lines = output.sink().0.lock().unwrap().clone();
    let mut expected = vec!["before".to_owned()];
    expected.extend((0..50).map(|i| format!("r{i}")));
    expected.push("event".to_owned());
    assert_eq!(lines, expected);
}

/// The reader of the control channel stops reading (an embedder's event loop that is busy):
/// threads that log a flood must not wait for it. Records beyond the queue are dropped and
/// counted, events are kept, and once the reader reads again it learns how many were dropped.
#[test]
fn a_stalled_reader_never_blocks_loggers_and_learns_the_drop_count() {
    let (output, theirs, _commands) = control_output(64);
    output.start().unwrap();

    const THREADS: usize = 8;
    const PER_THREAD: usize = 4000;
    // Lines large enough to fill the socket buffer many times over.
    let filler = "x".repeat(512);
    let slowest = Arc::new(AtomicU64::new(0));
    let began = Instant::now();
    let loggers: Vec<_> = (0..THREADS)
        .map(|t| {
            let output = Arc::clone(&output);
            let slowest = Arc::clone(&slowest);
            let filler = filler.clone();
            std::thread::spawn(move || {
                for i in 0..PER_THREAD {
                    let line = log_line(&format!("{t}/{i} {filler}"));
                    let at = Instant::now();
                    output.record(line);
                    let took = u64::try_from(at.elapsed().as_micros()).unwrap_or(u64::MAX);
                    slowest.fetch_max(took, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for logger in loggers {
        logger.join().unwrap();
    }
    // A blocking write would never return here: nobody reads.
    let elapsed = began.elapsed();
    assert!(elapsed < Duration::from_secs(20), "flood took {elapsed:?}");
    assert!(
        slowest.load(Ordering::Relaxed) < 1_000_000,
        "one record took {} µs",
        slowest.load(Ordering::Relaxed)
    );
    let dropped = output.dropped_total();
    assert!(
        dropped > 0,
        "nothing was dropped although nobody read {} records",
        THREADS * PER_THREAD
    );
    // The peer reads nothing: the writer is stuck, so a flush gives up in time.
    let at = Instant::now();
    assert!(!output.flush(Duration::from_millis(200)));
    assert!(at.elapsed() < Duration::from_secs(5));
    output.event(control::encode(&Event::Connected).unwrap());

    // The reader comes back: every record written is whole, the notices add up to what was
    // dropped, and the event queued while it was away arrives after them.
    let reader = std::thread::spawn(move || {
        let mut lines = BufReader::new(theirs);
        let (mut records, mut reported, mut connected) = (0usize, 0u64, false);
        let mut line = String::new();
        while !connected || reported < dropped {
            line.clear();
            if lines.read_line(&mut line).unwrap() == 0 {
                break;
            }
            let value: serde_json::Value = serde_json::from_str(&line).expect("a whole JSON line");
            match value["event"].as_str() {
                Some("connected") => connected = true,
                Some("log") => {
                    let message = value["message"].as_str().unwrap();
                    if let Some(n) = message.strip_suffix(" log records dropped") {
                        assert_eq!(value["level"], "warn");
                        reported += n.parse::<u64>().unwrap();
                    } else {
                        assert!(!connected, "a record after the later event: {message}");
                        records += 1;
                    }
                }
                other => panic!("unexpected line {other:?}: {line}"),
            }
        }
        (records, reported, connected)
    });
    assert!(output.flush(Duration::from_secs(20)));
    let (records, reported, connected) = reader.join().unwrap();
    assert!(connected);
    assert_eq!(reported, dropped);
    assert_eq!(records as u64 + dropped, (THREADS * PER_THREAD) as u64);
}

#[test]
fn events_are_never_dropped() {
    let (output, mut theirs, _commands) = control_output(1);
    output.start().unwrap();
    let filler = "y".repeat(4096);
    // Fill the socket until the writer blocks, then queue events behind a full queue.
    for i in 0..2000 {
        output.record(log_line(&format!("{i} {filler}")));
    }
    for _ in 0..10 {
        output.event(control::encode(&Event::Disconnected).unwrap());
    }
    assert!(output.dropped_total() > 0);
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            let mut text = Vec::new();
            let mut buf = [0u8; 65536];
            theirs
                .set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            loop {
                match theirs.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => text.extend_from_slice(&buf[..n]),
                    Err(_) if done.load(Ordering::SeqCst) => break,
                    Err(_) => {}
                }
            }
            String::from_utf8(text).unwrap()
        })
    };
    assert!(output.flush(Duration::from_secs(20)));
    done.store(true, Ordering::SeqCst);
    let text = reader.join().unwrap();
    assert_eq!(text.matches(r#"{"event":"disconnected"}"#).count(), 10);
}
