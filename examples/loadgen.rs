//! Load generator for the daemon's socket, run by `benches/compare.sh`
//! (a benchmark, not a test).
//!
//! ```text
//! loadgen get   --socket PATH [--clients 64] [--requests 200000] [--reconnect] [--rate R]
//! loadgen conns --socket PATH [--count 1000]
//! ```
//!
//! `get`: CLIENTS threads, each on its own connection (or, with
//! `--reconnect`, a new connection per request, as the git helper does),
//! share REQUESTS `get`s for `https://h.example/team/repo.git`; prints
//! requests/s, p50/p99/max latency and the error count. Without `--rate`
//! each client sends its next request as soon as it has the answer (the
//! daemon's saturation throughput, where latency is mostly queueing behind
//! the other 63 clients). With `--rate R` the clients together offer R
//! requests/s on a fixed schedule, and a request's latency counts from when
//! it was due, not from when a late client got round to sending it (so a
//! stall is not hidden by the requests it delayed).
//!
//! `conns`: COUNT threads each open a connection, wait until all are open,
//! then each sends one `get` and reads its answer; prints how many failed.
//!
//! It uses std threads and raw `UnixStream`s with a request line encoded
//! once, so that on a 2-core machine as little CPU as possible goes to the
//! load generator instead of the daemon. An answer counts as good when it
//! says `"ok":true` and carries a password (a cheap byte check rather than a
//! JSON parse, for the same reason). One output line, `key=value` pairs, for
//! the script to read.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};
use tokenward::protocol::{encode_line, CredentialQuery, Request, RequestEnvelope};

/// A client waits at most this long for one answer; longer is an error.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Small stacks: `conns` starts a thread per connection.
const STACK: usize = 64 * 1024;

struct Options {
    socket: PathBuf,
    clients: usize,
    requests: usize,
    reconnect: bool,
    /// Offered requests/s over all clients; 0 = as fast as answered.
    rate: f64,
    count: usize,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(mode) = args.first().cloned() else {
        return usage();
    };
    let Some(options) = parse(&args[1..]) else {
        return usage();
    };
    let line = encode_line(&RequestEnvelope::new(Request::Get(CredentialQuery {
        protocol: "https".into(),
        host: "h.example".into(),
        path: Some("team/repo.git".into()),
        username: None,
    })));
    match mode.as_str() {
        "get" => get_load(&options, Arc::new(line)),
        "conns" => connections(&options, Arc::new(line)),
        _ => return usage(),
    }
    ExitCode::SUCCESS
}

fn usage() -> ExitCode {
    eprintln!(
        "usage: loadgen get --socket PATH [--clients N] [--requests N] [--reconnect] [--rate R]\n       \
         loadgen conns --socket PATH [--count N]"
    );
    ExitCode::from(2)
}

fn parse(args: &[String]) -> Option<Options> {
    let mut options = Options {
        socket: PathBuf::new(),
        clients: 64,
        requests: 200_000,
        reconnect: false,
        rate: 0.0,
        count: 1000,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--socket" => options.socket = PathBuf::from(it.next()?),
            "--clients" => options.clients = it.next()?.parse().ok()?,
            "--requests" => options.requests = it.next()?.parse().ok()?,
            "--count" => options.count = it.next()?.parse().ok()?,
            "--reconnect" => options.reconnect = true,
            "--rate" => options.rate = it.next()?.parse().ok().filter(|r: &f64| *r >= 0.0)?,
            _ => return None,
        }
    }
    let valid = !options.socket.as_os_str().is_empty() && options.clients > 0;
    valid.then_some(options)
}

fn connect(socket: &Path) -> std::io::Result<BufReader<UnixStream>> {
    let stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    Ok(BufReader::new(stream))
}

/// Sends one request and reads its answer; true when the answer is good.
fn call(conn: &mut BufReader<UnixStream>, line: &[u8], answer: &mut Vec<u8>) -> bool {
    answer.clear();
    if conn.get_mut().write_all(line).is_err() {
        return false;
    }
    match conn.read_until(b'\n', answer) {
        Ok(n) if n > 0 => good(answer),
        _ => false,
    }
}

fn good(answer: &[u8]) -> bool {
    let has = |needle: &[u8]| answer.windows(needle.len()).any(|w| w == needle);
    has(b"\"ok\":true") && has(b"\"password\":")
}

/// What one thread measured.
#[derive(Default)]
struct Tally {
    micros: Vec<u32>,
    errors: usize,
}

fn get_load(options: &Options, line: Arc<Vec<u8>>) {
    let per_client = options.requests.div_ceil(options.clients);
    let start_line = Arc::new(Barrier::new(options.clients + 1));
    let mut handles = Vec::with_capacity(options.clients);
    // With a rate, each client sends every `interval`, the clients spread
    // evenly over one interval.
    let interval = (options.rate > 0.0)
        .then(|| Duration::from_secs_f64(options.clients as f64 / options.rate));
    for index in 0..options.clients {
        let (line, start_line) = (Arc::clone(&line), Arc::clone(&start_line));
        let socket = options.socket.clone();
        let reconnect = options.reconnect;
        let pace = interval.map(|every| Pace {
            every,
            offset: every.mul_f64(index as f64 / options.clients as f64),
        });
        let spawned = std::thread::Builder::new()
            .stack_size(STACK)
            .spawn(move || client(&socket, &line, per_client, reconnect, pace, &start_line));
        match spawned {
            Ok(handle) => handles.push(handle),
            Err(e) => {
                eprintln!("loadgen: cannot start a client thread: {e}");
                std::process::exit(1);
            }
        }
    }
    start_line.wait();
    let began = Instant::now();
    let mut all = Tally::default();
    for handle in handles {
        let tally = handle.join().unwrap_or_else(|_| Tally {
            micros: Vec::new(),
            errors: per_client,
        });
        all.micros.extend(tally.micros);
        all.errors += tally.errors;
    }
    let elapsed = began.elapsed().as_secs_f64();
    let done = all.micros.len();
    report(
        &format!(
            "mode=get clients={} reconnect={} offered={} requests={} rps={:.0} secs={elapsed:.2}",
            options.clients,
            options.reconnect,
            if options.rate > 0.0 {
                format!("{:.0}", options.rate)
            } else {
                "max".to_owned()
            },
            done + all.errors,
            done as f64 / elapsed
        ),
        &mut all,
    );
}

/// A client's schedule under `--rate`.
#[derive(Clone, Copy)]
struct Pace {
    every: Duration,
    offset: Duration,
}

/// One client's share of the load. Connection errors count once per
/// request that could not be sent.
fn client(
    socket: &Path,
    line: &[u8],
    n: usize,
    reconnect: bool,
    pace: Option<Pace>,
    start: &Barrier,
) -> Tally {
    let mut tally = Tally {
        micros: Vec::with_capacity(n),
        errors: 0,
    };
    let mut answer = Vec::with_capacity(512);
    let mut conn = if reconnect {
        None
    } else {
        connect(socket).ok()
    };
    start.wait();
    let first = Instant::now();
    for k in 0..n {
        let began = match pace {
            Some(pace) => {
                let due = first + pace.offset + pace.every.mul_f64(k as f64);
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                due
            }
            None => Instant::now(),
        };
        if reconnect {
            conn = connect(socket).ok();
        }
        let ok = match conn.as_mut() {
            Some(c) => call(c, line, &mut answer),
            None => false,
        };
        if ok {
            let micros = began.elapsed().as_micros();
            tally.micros.push(u32::try_from(micros).unwrap_or(u32::MAX));
        } else {
            tally.errors += 1;
            // A broken connection is replaced, so one failure is not n.
            conn = connect(socket).ok();
        }
    }
    tally
}

fn connections(options: &Options, line: Arc<Vec<u8>>) {
    // Every thread holds its connection open until all are open, so the
    // daemon has `count` live connections at once.
    let all_open = Arc::new(Barrier::new(options.count + 1));
    let mut handles = Vec::with_capacity(options.count);
    let began = Instant::now();
    for _ in 0..options.count {
        let (line, all_open) = (Arc::clone(&line), Arc::clone(&all_open));
        let socket = options.socket.clone();
        let spawned = std::thread::Builder::new()
            .stack_size(STACK)
            .spawn(move || {
                let conn = connect(&socket);
                all_open.wait();
                let mut answer = Vec::with_capacity(512);
                let started = Instant::now();
                let ok = match conn {
                    Ok(mut c) => call(&mut c, &line, &mut answer),
                    Err(_) => false,
                };
                ok.then(|| started.elapsed())
            });
        match spawned {
            Ok(handle) => handles.push(handle),
            Err(e) => {
                eprintln!("loadgen: cannot start a connection thread: {e}");
                std::process::exit(1);
            }
        }
    }
    all_open.wait();
    let mut all = Tally::default();
    for handle in handles {
        match handle.join() {
            Ok(Some(took)) => all
                .micros
                .push(u32::try_from(took.as_micros()).unwrap_or(u32::MAX)),
            _ => all.errors += 1,
        }
    }
    let elapsed = began.elapsed().as_secs_f64();
    report(
        &format!(
            "mode=conns count={} ok={} secs={elapsed:.2}",
            options.count,
            all.micros.len()
        ),
        &mut all,
    );
}

fn report(head: &str, tally: &mut Tally) {
    tally.micros.sort_unstable();
    let pct = |p: f64| -> String {
        if tally.micros.is_empty() {
            return "nan".to_owned();
        }
        let rank = ((tally.micros.len() - 1) as f64 * p).round() as usize;
        format!("{:.3}", f64::from(tally.micros[rank]) / 1000.0)
    };
    println!(
        "{head} errors={} p50_ms={} p99_ms={} max_ms={}",
        tally.errors,
        pct(0.5),
        pct(0.99),
        pct(1.0)
    );
}
