//! A Prometheus `/metrics` endpoint over a live dispatcher.
//!
//! Replays the bundled trace through a [`Dispatcher`] over the default fleet (a simulated
//! backend completes each ticket from a background thread after a service time drawn from the
//! task's size) and serves `GET /metrics` on loopback in the Prometheus text format, for a
//! bounded time, then exits by itself:
//!
//! ```text
//! cargo run --release --example prometheus -- [--port N] [--seconds N] [--speed X] [--trace FILE]
//! curl -s http://127.0.0.1:PORT/metrics
//! ```
//!
//! `--port 0` (the default) takes a free port; the address is printed. `--seconds` (default 10)
//! bounds the run; `--speed` (default 100) replays the trace that many times faster than
//! recorded, from the start again when it runs out.
use std::cmp::Ordering as CmpOrdering;
use std::collections::BinaryHeap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use switchyard::prometheus::{render, CONTENT_TYPE};
use switchyard::{Backend, Completion, Dispatcher, Outcome, RouteOptions, Task, Ticket};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

type Error = Box<dyn std::error::Error>;

struct Args {
    port: u16,
    seconds: u64,
    speed: f64,
    trace: Option<PathBuf>,
}

const USAGE: &str =
    "usage: prometheus [--port N] [--seconds N] [--speed X] [--trace FILE]  (loopback only)";

fn parse_args() -> Result<Args, Error> {
    let mut args = Args {
        port: 0,
        seconds: 10,
        speed: 100.0,
        trace: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--help" || flag == "-h" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        match flag.as_str() {
            "--port" => args.port = value.parse()?,
            "--seconds" => args.seconds = value.parse()?,
            "--speed" => args.speed = value.parse()?,
            "--trace" => args.trace = Some(PathBuf::from(value)),
            _ => return Err(format!("unknown argument `{flag}`\n{USAGE}").into()),
        }
    }
    if !(args.speed.is_finite() && args.speed > 0.0) {
        return Err(format!("--speed must be positive, got {}", args.speed).into());
    }
    Ok(args)
}

/// A ticket to complete at `at`.
struct Due {
    at: Instant,
    seq: u64,
    ticket: Ticket,
    completion: Completion,
}

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl Ord for Due {
    /// Reversed: the `BinaryHeap` pops the earliest first.
    fn cmp(&self, other: &Self) -> CmpOrdering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// A stand-in for an inference backend: 10 ms + 10 µs per prompt token + 1 ms per output
/// token; about one task in 50 is rate-limited and one in 100 fails.
struct Simulated {
    tx: mpsc::Sender<(Duration, Ticket, Completion)>,
}

impl Backend for Simulated {
    type Payload = ();
    fn dispatch(&self, task: Task, _payload: (), _routes: &RouteOptions, ticket: Ticket) {
        let ms = 10.0 + task.input_tokens as f64 * 0.01 + task.output_tokens as f64;
        let completion = match task.id % 100 {
            0 | 50 => Completion::failure(Outcome::RateLimited, ms / 4.0),
            7 => Completion::failure(Outcome::ServerError, ms / 2.0),
            _ => Completion::success(ms, task.output_tokens),
        };
        let after = Duration::from_secs_f64(completion.latency_ms / 1e3);
        // The completer outlives the dispatcher; should it be gone, the dropped ticket still
        // releases its lease (counted as abandoned).
        let _ = self.tx.send((after, ticket, completion));
    }
}

/// Completes tickets when they are due, until every sender is gone and nothing is pending.
fn complete_loop(rx: mpsc::Receiver<(Duration, Ticket, Completion)>) {
    let mut pending = BinaryHeap::new();
    let mut seq = 0u64;
    let mut open = true;
    while open || !pending.is_empty() {
        let now = Instant::now();
        while pending.peek().is_some_and(|d: &Due| d.at <= now) {
            let d = pending.pop().expect("peeked");
            d.ticket.complete(d.completion);
        }
        let wait = pending
            .peek()
            .map_or(Duration::from_millis(100), |d: &Due| d.at - now);
        if !open {
            thread::sleep(wait);
            continue;
        }
        match rx.recv_timeout(wait) {
            Ok((after, ticket, completion)) => {
                seq += 1;
                pending.push(Due {
                    at: Instant::now() + after,
                    seq,
                    ticket,
                    completion,
                });
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => open = false,
        }
    }
}

/// Answers one HTTP/1.1 request: `GET /metrics` with the exposition, anything else 404/405.
fn handle(mut stream: TcpStream, d: &Dispatcher<Simulated>) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf)?;
        if n == 0 || head.len() > 8 * 1024 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&head);
    let mut request_line = head.lines().next().unwrap_or("").split(' ');
    let (method, target) = (request_line.next(), request_line.next());
    let path = target.map(|t| t.split('?').next().unwrap_or(t));
    let (status, content_type, body) = match (method, path) {
        (Some("GET"), Some("/metrics")) => (
            "200 OK",
            CONTENT_TYPE,
            render(&d.metrics(), Some(&d.decision_histogram())),
        ),
        (Some("GET"), _) => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "not found: try /metrics\n".to_string(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain; charset=utf-8",
            "only GET\n".to_string(),
        ),
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

/// Accepts connections until `stop`, one at a time (a scrape takes well under a millisecond).
fn serve(listener: TcpListener, d: Arc<Dispatcher<Simulated>>, stop: Arc<AtomicBool>) {
    // Relaxed: a plain stop flag; the join after it orders everything else.
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                if let Err(e) = handle(stream, &d) {
                    eprintln!("request failed: {e}");
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(20));
            }
            Err(e) => {
                eprintln!("accept failed: {e}");
                thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Error> {
    let args = parse_args()?;
    let router = switchyard_sim::default_fleet().router(1)?;
    let (_, rows) = switchyard_sim::open_trace(args.trace.as_deref())?;
    let tasks = switchyard_sim::synthesize(&router, &rows, "code", 1)?;

    let (tx, rx) = mpsc::channel();
    let completer = thread::Builder::new()
        .name("completer".into())
        .spawn(move || complete_loop(rx))?;
    let d = Arc::new(
        Dispatcher::builder(router)
            .workers(2)
            .build(Simulated { tx })?,
    );

    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, args.port))?;
    listener.set_nonblocking(true)?;
    println!(
        "serving http://{}/metrics for {} s (trace at {}x)",
        listener.local_addr()?,
        args.seconds,
        args.speed
    );
    let stop = Arc::new(AtomicBool::new(false));
    let server = {
        let (d, stop) = (Arc::clone(&d), Arc::clone(&stop));
        thread::Builder::new()
            .name("metrics-http".into())
            .spawn(move || serve(listener, d, stop))?
    };

    // Replay at trace time / speed, looping over the trace, until the deadline.
    let start = Instant::now();
    let deadline = start + Duration::from_secs(args.seconds);
    let span_ms = rows.last().map_or(0, |r| r.arrival_ms) + 1_000;
    let (mut submitted, mut refused) = (0u64, 0u64);
    'replay: for pass in 0u64.. {
        for (row, task) in rows.iter().zip(&tasks) {
            let at_ms = (pass * span_ms + row.arrival_ms) as f64 / args.speed;
            let at = start + Duration::from_secs_f64(at_ms / 1e3);
            if at >= deadline {
                break 'replay;
            }
            if let Some(wait) = at.checked_duration_since(Instant::now()) {
                thread::sleep(wait);
            }
            let task = Task {
                id: submitted + refused,
                ..*task
            };
            match d.submit(task, ()) {
                Ok(()) => submitted += 1,
                Err(_) => refused += 1,
            }
        }
    }
    if let Some(rest) = deadline.checked_duration_since(Instant::now()) {
        thread::sleep(rest);
    }

    // Relaxed: see `serve`.
    stop.store(true, Ordering::Relaxed);
    server.join().map_err(|_| "the HTTP thread panicked")?;
    d.shutdown();
    let drained = d.wait_for_tickets(Duration::from_secs(10));
    let m = d.metrics();
    drop(d); // drops the backend's sender: the completer finishes and exits
    completer.join().map_err(|_| "the completer panicked")?;

    println!(
        "submitted {submitted} (refused {refused}), dispatched {}, no route {}, success {}, \
         decision p50 {} ns p99 {} ns{}",
        m.dispatched,
        m.no_route_total(),
        m.outcome(Outcome::Success),
        m.decision_latency.p50_ns,
        m.decision_latency.p99_ns,
        if drained { "" } else { " (tickets still out)" }
    );
    Ok(())
}
