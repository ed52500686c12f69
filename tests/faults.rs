//! Faults (SPEC "Reliability and security targets", issue 8), beyond those
//! tests/core.rs (no bus, never-unlocked keyring), tests/git_e2e.rs (helper
//! with no daemon at all) and tests/relay.rs (upstream killed mid-upload)
//! already cover:
//!
//! - SIGKILL of the daemon, three times, while 200 `token add`s run four at
//!   a time: every add that was acknowledged (exit 0) is listed after a
//!   restart and its secret is served; the index parses;
//! - the helper while the daemon is dead (a stale socket left behind) or
//!   frozen (SIGSTOP): exit 0, nothing on stdout, one line on stderr,
//!   within the client's answer timeout;
//! - a locked vault asked through the helper: one clear line, at once;
//! - a full disk (a small tmpfs mounted over the data directory) when the
//!   index is written: the add fails with one line, the old index is
//!   intact, and adds work again once there is room;
//! - the relay's memory after an upstream dies mid-push returns to its
//!   baseline (the relay test checks the client's error, not the memory).

mod common;

use common::TestHome;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const ADDS: usize = 200;
const WORKERS: usize = 4;
/// The daemon is killed after this many acknowledged adds, each time.
const KILL_AT: [usize; 3] = [40, 100, 160];

fn secret_for(n: usize) -> String {
    format!("fault-secret-{n:03}-Hx2")
}

fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .expect("kill");
    assert!(status.success(), "kill -{name} {pid}");
}

/// Runs the helper's `get` with `input`; returns its output and how long it took.
fn helper_get(home: &TestHome, input: &str) -> (Output, Duration) {
    let started = Instant::now();
    let out = home
        .spawn_helper("get", input)
        .wait_with_output()
        .expect("helper exits");
    (out, started.elapsed())
}

fn assert_soft_failure(out: &Output, what: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{what}: {stderr}");
    assert!(out.stdout.is_empty(), "{what}: answered {:?}", out.stdout);
    assert_eq!(stderr.lines().count(), 1, "{what}: {stderr:?}");
    assert!(
        stderr.starts_with("git-credential-tokenward: "),
        "{what}: {stderr}"
    );
}

/// Stops whatever daemon serves the socket now: an add that raced the kill
/// may have autostarted a detached one, which is no child of ours.
fn stop_any_daemon(home: &mut TestHome) {
    home.stop_daemon();
    if std::os::unix::net::UnixStream::connect(&home.socket).is_ok() {
        let _ = home.tokenward(&["stop"]);
        assert!(
            common::wait_until(Duration::from_secs(10), || {
                std::os::unix::net::UnixStream::connect(&home.socket).is_err()
            }),
            "an autostarted daemon did not stop"
        );
    }
}

#[test]
fn sigkill_during_adds_loses_no_acknowledged_token() {
    let mut home = TestHome::new("file");
    home.set_env("TOKENWARD_LOG", "info");
    home.start_daemon();
    let home = Arc::new(Mutex::new(home));
    // (number, id) of every add that exited 0.
    let acknowledged = Arc::new(Mutex::new(Vec::<(usize, String)>::new()));
    let next = Arc::new(AtomicUsize::new(0));
    let mut kills = 0;
    let mut failed_adds = 0;

    for (round, &kill_at) in KILL_AT.iter().enumerate() {
        let stop = Arc::new(AtomicBool::new(false));
        let failed = Arc::new(AtomicUsize::new(0));
        // The workers run adds until told to stop; they share a snapshot of
        // the environment, so the daemon may be killed under them.
        let template = home.lock().expect("lock").command(common::tokenward_bin());
        let envs: Vec<(std::ffi::OsString, std::ffi::OsString)> = template
            .get_envs()
            .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v.to_owned())))
            .collect();
        let removed: Vec<std::ffi::OsString> = template
            .get_envs()
            .filter(|(_, v)| v.is_none())
            .map(|(k, _)| k.to_owned())
            .collect();
        let workers: Vec<_> = (0..WORKERS)
            .map(|_| {
                let (stop, next, acknowledged, failed) = (
                    stop.clone(),
                    next.clone(),
                    acknowledged.clone(),
                    failed.clone(),
                );
                let (envs, removed) = (envs.clone(), removed.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::SeqCst) {
                        let n = next.fetch_add(1, Ordering::SeqCst);
                        if n >= ADDS {
                            return;
                        }
                        let mut command = Command::new(common::tokenward_bin());
                        for key in &removed {
                            command.env_remove(key);
                        }
                        command.envs(envs.iter().map(|(k, v)| (k, v)));
                        let url = format!("https://h{n}.example");
                        let mut child = command
                            .args(["token", "add", &url, "--user", "u"])
                            .stdin(Stdio::piped())
                            .stdout(Stdio::piped())
                            .stderr(Stdio::piped())
                            .spawn()
                            .expect("spawn token add");
                        let _ = child
                            .stdin
                            .take()
                            .expect("stdin")
                            .write_all(secret_for(n).as_bytes());
                        let out = child.wait_with_output().expect("token add exits");
                        let stdout = String::from_utf8_lossy(&out.stdout);
                        match stdout.split_whitespace().nth(1) {
                            Some(id) if out.status.success() && id.starts_with("tw_") => {
                                acknowledged.lock().expect("lock").push((n, id.to_owned()))
                            }
                            _ => {
                                assert!(!out.status.success(), "exit 0 without an id: {stdout}");
                                failed.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                    }
                })
            })
            .collect();
        let reached = common::wait_until(Duration::from_secs(120), || {
            acknowledged.lock().expect("lock").len() >= kill_at
                || next.load(Ordering::SeqCst) >= ADDS
        });
        assert!(reached, "round {round}: adds stalled");
        let pid = home.lock().expect("lock").daemon_pid().expect("daemon pid");
        // Adds are in flight right now: kill under them.
        signal(pid, "KILL");
        stop.store(true, Ordering::SeqCst);
        kills += 1;
        for worker in workers {
            worker.join().expect("worker");
        }
        failed_adds += failed.load(Ordering::SeqCst);
        let mut guard = home.lock().expect("lock");
        stop_any_daemon(&mut guard);
        if round == 0 {
            // While it is down (its socket file left behind), the helper fails soft.
            guard.set_env("TOKENWARD_NO_AUTOSTART", "1");
            let (out, took) = helper_get(&guard, "protocol=https\nhost=h0.example\n\n");
            assert_soft_failure(&out, "helper with a dead daemon");
            assert!(took < Duration::from_secs(5), "took {took:?}");
            guard.remove_env("TOKENWARD_NO_AUTOSTART");
        }
        guard.start_daemon();
        verify(&guard, &acknowledged.lock().expect("lock"));
    }
    // The rest of the 200, with no kill.
    while next.load(Ordering::SeqCst) < ADDS {
        let n = next.fetch_add(1, Ordering::SeqCst);
        let guard = home.lock().expect("lock");
        let id = guard.add_token(
            &format!("https://h{n}.example"),
            Some("u"),
            &secret_for(n),
            &[],
        );
        acknowledged.lock().expect("lock").push((n, id));
    }
    let guard = home.lock().expect("lock");
    let acknowledged = acknowledged.lock().expect("lock");
    verify(&guard, &acknowledged);
    println!(
        "faults: {kills} SIGKILLs during {ADDS} adds: {} acknowledged, {failed_adds} refused while down, 0 acknowledged tokens lost",
        acknowledged.len()
    );
}

/// Every acknowledged token is listed and served, and the index parses.
fn verify(home: &TestHome, acknowledged: &[(usize, String)]) {
    let index = std::fs::read(home.home.join("data/index.json")).expect("index exists");
    let parsed: serde_json::Value = serde_json::from_slice(&index).expect("the index is JSON");
    assert!(parsed.is_object() || parsed.is_array(), "{parsed}");
    let listed: Vec<String> = home
        .list_json(true)
        .iter()
        .filter_map(|t| t["id"].as_str().map(str::to_owned))
        .collect();
    for (n, id) in acknowledged {
        assert!(
            listed.contains(id),
            "acknowledged token {id} (add {n}) was lost"
        );
        assert_eq!(
            home.get_secret("https", &format!("h{n}.example"), None)
                .as_deref(),
            Some(secret_for(*n).as_str()),
            "the secret of acknowledged token {id} (add {n}) was lost"
        );
    }
}

#[test]
fn helper_fails_soft_and_in_time_when_the_daemon_is_frozen() {
    let mut home = TestHome::new("file");
    home.set_env("TOKENWARD_NO_AUTOSTART", "1");
    home.start_daemon();
    home.add_token("https://h.example", Some("u"), "frozen-secret-1", &[]);
    let pid = home.daemon_pid().expect("pid");
    signal(pid, "STOP");
    let (out, took) = helper_get(&home, "protocol=https\nhost=h.example\n\n");
    signal(pid, "CONT");
    assert_soft_failure(&out, "helper with a frozen daemon");
    let limit = tokenward::client::ANSWER_TIMEOUT + Duration::from_secs(5);
    assert!(took < limit, "took {took:?}");
    // Thawed, it serves again.
    let (out, _) = helper_get(&home, "protocol=https\nhost=h.example\n\n");
    assert!(String::from_utf8_lossy(&out.stdout).contains("password=frozen-secret-1"));
}

#[test]
fn a_locked_vault_through_the_helper_is_one_clear_line_at_once() {
    let mut home = TestHome::new("file");
    home.start_daemon();
    home.add_token("https://h.example", Some("u"), "locked-secret-1", &[]);
    home.stop_daemon();
    // Without the passphrase the file vault starts locked.
    home.remove_env("TOKENWARD_PASSPHRASE");
    home.set_env("TOKENWARD_NO_AUTOSTART", "1");
    home.start_daemon();
    let (out, took) = helper_get(&home, "protocol=https\nhost=h.example\n\n");
    assert_soft_failure(&out, "helper with a locked vault");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("locked") && stderr.contains("tokenward unlock"),
        "{stderr}"
    );
    assert!(!stderr.contains("locked-secret-1"));
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

/// A tmpfs mounted at `path`, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(path).expect("mount point");
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tokenward-test",
            ])
            .arg(path)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mount -t tmpfs needs root (CAP_SYS_ADMIN): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(path.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Writes zeros to `file` until the file system is full.
fn fill(file: &Path) {
    let mut out = std::fs::File::create(file).expect("filler");
    let block = vec![0u8; 4096];
    loop {
        if out.write_all(&block).is_err() {
            break;
        }
    }
    let _ = out.sync_all();
}

#[test]
fn full_disk_on_index_write_fails_cleanly_and_keeps_the_old_index() {
    let mut home = TestHome::new("keyutils");
    // The secret goes to the kernel keyring, not the disk: the index write
    // is what meets the full disk.
    home.daemon_wrapper = vec![
        "keyctl".into(),
        "session".into(),
        format!("tokenward-faults-{}", std::process::id()),
    ];
    let data = home.home.join("data");
    let tmpfs = Tmpfs::mount(&data, "512k");
    home.start_daemon();
    let kept = home.add_token("https://kept.example", Some("u"), "disk-secret-kept", &[]);
    let index = data.join("index.json");
    let before = std::fs::read(&index).expect("index");

    let filler = data.join("filler");
    fill(&filler);
    let started = Instant::now();
    let out = home.tokenward_with_stdin(
        &["token", "add", "https://new.example", "--user", "u"],
        "disk-secret-new",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "an add on a full disk succeeded");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(
        stderr.to_lowercase().contains("space"),
        "the error should say the disk is full: {stderr}"
    );
    assert!(!stderr.contains("disk-secret"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(
        std::fs::read(&index).expect("index"),
        before,
        "the old index changed"
    );
    let listed = home.list_json(true);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["id"], kept.as_str());
    assert_eq!(
        home.get_secret("https", "new.example", None),
        None,
        "the failed add is served"
    );
    // No temp file left behind by the failed atomic write.
    let leftovers: Vec<_> = std::fs::read_dir(&data)
        .expect("data dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| {
            !matches!(
                name.as_str(),
                "filler" | "index.json" | "fingerprint.key" | "daemon.lock"
            )
        })
        .collect();
    assert!(leftovers.is_empty(), "left behind: {leftovers:?}");

    // Room again: adds work, the daemon never had to restart.
    std::fs::remove_file(&filler).expect("remove filler");
    home.add_token("https://new.example", Some("u"), "disk-secret-new", &[]);
    assert_eq!(home.list_json(true).len(), 2);
    home.stop_daemon();
    drop(tmpfs);
}

fn vm_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// An upstream that reads part of each request's body, then drops the
/// connection; `answers` of them answer 200 instead.
fn dying_upstream(listener: TcpListener, cut_after: usize, answers: usize) {
    std::thread::spawn(move || {
        let mut answered = 0;
        for stream in listener.incoming().flatten() {
            let mut stream = stream;
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let mut seen = 0;
            let mut buffer = vec![0u8; 64 * 1024];
            if answered < answers {
                let _ = stream.read(&mut buffer);
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\nconnection: close\r\n\r\nok\n",
                );
                answered += 1;
                continue;
            }
            while seen < cut_after {
                match stream.read(&mut buffer) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => seen += n,
                }
            }
            // Dropped mid-body: a reset, as when the server dies.
        }
    });
}

#[test]
fn relay_memory_returns_to_baseline_after_the_upstream_dies_mid_push() {
    let upstream = TcpListener::bind("127.0.0.1:0").expect("bind");
    let upstream_port = upstream.local_addr().expect("addr").port();
    let home = TestHome::new("file");
    let listen_port = common::free_port();
    let mut relay = home
        .command(common::tokenward_bin())
        .args([
            "relay",
            "serve",
            &format!("http://127.0.0.1:{upstream_port}"),
        ])
        .args(["--listen", &format!("127.0.0.1:{listen_port}")])
        .env("TOKENWARD_TOKEN", "relay-fault-secret")
        .env("TOKENWARD_URL", format!("http://127.0.0.1:{upstream_port}"))
        .env("TOKENWARD_USERNAME", "u")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("relay serve");
    let up = common::wait_until(Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", listen_port)).is_ok()
    });
    assert!(up, "the relay did not come up");
    dying_upstream(upstream, 8 * 1024 * 1024, 1);
    let url = format!("http://127.0.0.1:{listen_port}/repo.git/git-receive-pack");
    let curl = |extra: &[&str]| {
        Command::new("curl")
            .args([
                "-sS",
                "--max-time",
                "60",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
            ])
            .args(extra)
            .arg(&url)
            .output()
            .expect("curl")
    };
    // A first request warms the relay up (its baseline includes one exchange).
    let out = curl(&[]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200");
    let baseline = vm_rss_kib(relay.id());

    let work = tempfile::tempdir().expect("tempdir");
    let body = work.path().join("push.bin");
    std::fs::write(&body, vec![7u8; 64 * 1024 * 1024]).expect("body");
    let body_arg = format!("@{}", body.display());
    let mut peak = 0;
    for chunked in [true, false] {
        let mut args = vec!["--data-binary", body_arg.as_str()];
        if chunked {
            args.extend(["-H", "Transfer-Encoding: chunked"]);
        }
        let out = curl(&args);
        let status = String::from_utf8_lossy(&out.stdout).to_string();
        assert_ne!(status, "200", "a push whose upstream died succeeded");
        peak = peak.max(vm_rss_kib(relay.id()));
    }
    let settled = common::wait_until(Duration::from_secs(10), || {
        vm_rss_kib(relay.id()) <= baseline + 8 * 1024
    });
    let after = vm_rss_kib(relay.id());
    common::stop_pid(&mut relay);
    println!("faults: relay RSS {baseline} KiB before, {peak} KiB after the failed pushes, {after} KiB settled");
    assert!(
        settled,
        "relay RSS {baseline} KiB before, {after} KiB after the upstream died"
    );
}
