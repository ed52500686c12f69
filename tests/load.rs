//! Load (SPEC "Reliability and security targets", issue 8): 2,000 runs of
//! the real git helper, 200 at a time, every one answered with the right
//! token; then 1,000 socket connections held open at once, every one
//! answered, and the daemon's file descriptors back to where they were
//! once they close.
//!
//! The daemon runs under `sh -c 'ulimit -n 4096; exec …'` so that its
//! descriptor budget is known (1,000 clients plus its own files) whatever
//! the machine's default; the test process raises its own soft limit with
//! prlimit for the same reason.

mod common;

use common::TestHome;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

const HOSTS: usize = 20;
const HELPER_RUNS: usize = 2000;
const HELPER_BATCH: usize = 200;
const CONNECTIONS: usize = 1000;

fn secret(i: usize) -> String {
    format!("load-secret-{i:02}-Vq7p")
}

/// A daemon with one token per host `hN.example`, its fd limit set to 4096.
fn loaded_home() -> TestHome {
    raise_own_fd_limit();
    let mut home = TestHome::new("file");
    home.daemon_wrapper = vec![
        "sh".into(),
        "-c".into(),
        "ulimit -n 4096 && exec \"$0\" \"$@\"".into(),
    ];
    home.set_env("TOKENWARD_NO_AUTOSTART", "1");
    // Per-request debug lines would make the log the bottleneck.
    home.set_env("TOKENWARD_LOG", "warn");
    home.start_daemon();
    for i in 0..HOSTS {
        home.add_token(
            &format!("https://h{i}.example"),
            Some(&format!("user{i}")),
            &secret(i),
            &[],
        );
    }
    home
}

/// The test itself holds 1,000 connections (and 600 pipes for 200 helpers).
fn raise_own_fd_limit() {
    let _ = Command::new("prlimit")
        .arg(format!("--pid={}", std::process::id()))
        .arg("--nofile=8192:8192")
        .status();
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|entries| entries.count())
        .unwrap_or(0)
}

fn spawn_helper(home: &TestHome, i: usize) -> Child {
    let request = format!(
        "protocol=https\nhost=h{}.example\npath=repo.git\n\n",
        i % HOSTS
    );
    home.spawn_helper("get", &request)
}

#[test]
fn two_thousand_helper_runs_two_hundred_at_a_time() {
    let home = loaded_home();
    let started = Instant::now();
    let mut answered = 0;
    for batch in 0..HELPER_RUNS / HELPER_BATCH {
        let children: Vec<(usize, Child)> = (0..HELPER_BATCH)
            .map(|k| {
                let i = batch * HELPER_BATCH + k;
                (i, spawn_helper(&home, i))
            })
            .collect();
        for (i, child) in children {
            let out = child.wait_with_output().expect("helper exits");
            let host = i % HOSTS;
            let expected = format!("username=user{host}\npassword={}\n", secret(host));
            assert_eq!(
                String::from_utf8_lossy(&out.stdout),
                expected,
                "run {i}: stderr {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(out.status.success() && out.stderr.is_empty(), "run {i}");
            answered += 1;
        }
    }
    let elapsed = started.elapsed();
    println!(
        "load: {answered} helper runs answered correctly in {:.1} s ({:.0}/s)",
        elapsed.as_secs_f64(),
        answered as f64 / elapsed.as_secs_f64()
    );
    assert_eq!(answered, HELPER_RUNS);
}

#[test]
fn a_thousand_simultaneous_connections_and_no_fd_leak() {
    let home = loaded_home();
    let pid = home.daemon_pid().expect("daemon pid");
    // One connection first, so that everything lazily opened is open.
    assert_eq!(
        home.get_secret("https", "h0.example", None).as_deref(),
        Some(secret(0).as_str())
    );
    // The warm-up connection's descriptor closes a moment after its answer.
    std::thread::sleep(Duration::from_millis(300));
    let before = fd_count(pid);
    assert!(before > 0, "cannot read /proc/{pid}/fd");

    let started = Instant::now();
    let mut streams: Vec<UnixStream> = (0..CONNECTIONS)
        .map(|i| {
            let stream =
                UnixStream::connect(&home.socket).unwrap_or_else(|e| panic!("connection {i}: {e}"));
            stream
                .set_read_timeout(Some(Duration::from_secs(30)))
                .expect("timeout");
            stream
        })
        .collect();
    // All open at once: the daemon holds them all.
    let held = common::wait_until(Duration::from_secs(10), || {
        fd_count(pid) >= before + CONNECTIONS
    });
    let peak = fd_count(pid);
    assert!(
        held,
        "the daemon holds {peak} fds, expected ≥ {}",
        before + CONNECTIONS
    );
    for (i, stream) in streams.iter_mut().enumerate() {
        let request = format!(
            "{{\"v\":1,\"op\":\"get\",\"protocol\":\"https\",\"host\":\"h{}.example\"}}\n",
            i % HOSTS
        );
        stream
            .write_all(request.as_bytes())
            .unwrap_or_else(|e| panic!("send on connection {i}: {e}"));
    }
    let mut answered = 0;
    for (i, stream) in streams.iter().enumerate() {
        let mut line = String::new();
        BufReader::new(stream)
            .read_line(&mut line)
            .unwrap_or_else(|e| panic!("answer on connection {i}: {e}"));
        let answer: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("connection {i}: {e}: {line:?}"));
        assert_eq!(answer["ok"], true, "connection {i}: {line}");
        assert_eq!(
            answer["credential"]["password"].as_str(),
            Some(secret(i % HOSTS).as_str()),
            "connection {i}"
        );
        answered += 1;
    }
    let elapsed = started.elapsed();
    drop(streams);
    let settled = common::wait_until(Duration::from_secs(10), || fd_count(pid) <= before);
    let after = fd_count(pid);
    println!(
        "load: {answered} simultaneous connections answered in {:.2} s; daemon fds {before} before, {peak} at peak, {after} after",
        elapsed.as_secs_f64()
    );
    assert!(settled, "fd leak: {before} before, {after} after");
    assert_eq!(answered, CONNECTIONS);
    // And it still serves.
    assert_eq!(
        home.get_secret("https", "h1.example", None).as_deref(),
        Some(secret(1).as_str())
    );
    assert!(
        !home.daemon_stderr().contains("ERROR"),
        "{}",
        home.daemon_stderr()
    );
}
