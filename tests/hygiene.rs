//! Secret hygiene (SPEC "The daemon and its socket", issue 8): with
//! TOKENWARD_LOG=trace everywhere, add tokens, get one through the git
//! helper, store and erase it, push a chunked body through a relay served
//! by the daemon (answered 411 once, so the body is spooled to the relay's
//! temp dir), remove a token; all the while a watcher reads
//! /proc/*/cmdline. Then no secret (nor the Basic header that carries it)
//! may appear in any log, error message, argv, the index, any file of the
//! install, or the relay's temp dir.
//!
//! Also: the daemon is not dumpable (no core dumps, no same-user ptrace).
//! The observable: for a non-dumpable process the kernel makes its /proc
//! files root's, so a daemon run as uid 65534 must have /proc/PID/environ
//! owned by 0, where a dumpable process of the same uid has its own.

mod common;

use common::TestHome;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const GIT_SECRET: &str = "hyg-git-secret-Wb3n8Q";
const RELAY_SECRET: &str = "hyg-relay-secret-Zt5m1R";
const TYPED_SECRET: &str = "hyg-typed-secret-Pf6k2D";

fn base64(input: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(TABLE[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Every form a secret could leak in.
fn needles() -> Vec<String> {
    let mut needles = vec![
        GIT_SECRET.to_owned(),
        RELAY_SECRET.to_owned(),
        TYPED_SECRET.to_owned(),
    ];
    needles.push(base64(format!("relayer:{RELAY_SECRET}").as_bytes()));
    needles
}

fn leaks(text: &[u8]) -> Vec<String> {
    needles()
        .into_iter()
        .filter(|n| text.windows(n.len()).any(|w| w == n.as_bytes()))
        .collect()
}

/// Reads every process's argv until stopped; returns the argvs with a secret.
fn watch_argv(stop: Arc<AtomicBool>) -> std::thread::JoinHandle<(usize, Vec<String>)> {
    std::thread::spawn(move || {
        let mut scans = 0;
        let mut found = Vec::new();
        while !stop.load(Ordering::SeqCst) {
            if let Ok(entries) = std::fs::read_dir("/proc") {
                for entry in entries.flatten() {
                    if let Ok(argv) = std::fs::read(entry.path().join("cmdline")) {
                        if !leaks(&argv).is_empty() {
                            found.push(String::from_utf8_lossy(&argv).replace('\0', " "));
                        }
                    }
                }
            }
            scans += 1;
            std::thread::sleep(Duration::from_millis(2));
        }
        (scans, found)
    })
}

fn helper(home: &TestHome, action: &str, input: &str) -> Output {
    let mut child = home
        .command(common::helper_bin())
        .arg(action)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("helper");
    let _ = child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes());
    child.wait_with_output().expect("helper exits")
}

/// An upstream that answers 411 to the first chunked upload, then 200 to
/// everything, and keeps what it received.
fn upstream() -> (u16, Arc<Mutex<Vec<u8>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let received = Arc::new(Mutex::new(Vec::new()));
    let seen = received.clone();
    std::thread::spawn(move || {
        let mut refused_once = false;
        for mut stream in listener.incoming().flatten() {
            let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
            let mut request = Vec::new();
            let mut buffer = [0u8; 65536];
            loop {
                match stream.read(&mut buffer) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buffer[..n]),
                }
                let text = String::from_utf8_lossy(&request).to_lowercase();
                if text.contains("transfer-encoding: chunked") && !refused_once {
                    break;
                }
                if text.ends_with("0\r\n\r\n") || request.ends_with(b"payload-end") {
                    break;
                }
            }
            let chunked = String::from_utf8_lossy(&request)
                .to_lowercase()
                .contains("transfer-encoding: chunked");
            seen.lock().expect("lock").extend_from_slice(&request);
            let answer: &[u8] = if chunked && !refused_once {
                refused_once = true;
                b"HTTP/1.1 411 Length Required\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            } else {
                b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\nconnection: close\r\n\r\nok\n"
            };
            let _ = stream.write_all(answer);
        }
    });
    (port, received)
}

#[test]
fn no_secret_in_logs_errors_argv_index_or_temp_files() {
    let mut home = TestHome::new("file");
    home.set_env("TOKENWARD_LOG", "trace");
    let relay_tmp = tempfile::tempdir().expect("relay tmp");
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = watch_argv(stop.clone());
    let mut outputs: Vec<(String, Output)> = Vec::new();

    home.start_daemon();
    let (port, received) = upstream();
    let upstream_url = format!("http://127.0.0.1:{port}");
    home.add_token("https://code.example", Some("alice"), GIT_SECRET, &[]);
    home.add_token(
        &upstream_url,
        Some("relayer"),
        RELAY_SECRET,
        &["--role", "all"],
    );
    // A refused add: its error must not quote the secret.
    let refused =
        home.tokenward_with_stdin(&["token", "add", "ftp://x", "--user", "u"], GIT_SECRET);
    assert!(!refused.status.success());
    outputs.push(("refused add".into(), refused));

    // git's get, store (of the answer, and of a typed credential), erase.
    let get = helper(
        &home,
        "get",
        "protocol=https\nhost=code.example\npath=r.git\n\n",
    );
    assert!(String::from_utf8_lossy(&get.stdout).contains(GIT_SECRET));
    assert!(leaks(&get.stderr).is_empty());
    let stored = helper(
        &home,
        "store",
        &format!("protocol=https\nhost=code.example\nusername=alice\npassword={GIT_SECRET}\n\n"),
    );
    outputs.push(("store".into(), stored));
    let typed = helper(
        &home,
        "store",
        &format!("protocol=https\nhost=typed.example\nusername=bob\npassword={TYPED_SECRET}\n\n"),
    );
    outputs.push(("typed store".into(), typed));
    let erased = helper(
        &home,
        "erase",
        &format!("protocol=https\nhost=code.example\nusername=alice\npassword={GIT_SECRET}\n\n"),
    );
    outputs.push(("erase".into(), erased));
    // A malformed request that carries a password: refused without quoting it.
    let bad = helper(
        &home,
        "get",
        &format!("protocol=https\nhost=x\rpassword={GIT_SECRET}\n\n"),
    );
    outputs.push(("bad get".into(), bad));

    // The relay, asking the daemon; a chunked upload answered 411 is spooled.
    let listen = common::free_port();
    let relay_stderr = home.root.path().join("relay.stderr");
    let mut relay = home
        .command(common::tokenward_bin())
        .args(["relay", "serve", &upstream_url, "--listen"])
        .arg(format!("127.0.0.1:{listen}"))
        .env("TMPDIR", relay_tmp.path())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&relay_stderr).expect("relay stderr"))
        .spawn()
        .expect("relay serve");
    assert!(common::wait_until(Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", listen)).is_ok()
    }));
    let body = home.root.path().join("body.bin");
    let mut payload = vec![b'p'; 256 * 1024];
    payload.extend_from_slice(b"payload-end");
    std::fs::write(&body, &payload).expect("body");
    let push = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "30",
            "-H",
            "Transfer-Encoding: chunked",
        ])
        .arg("--data-binary")
        .arg(format!("@{}", body.display()))
        .arg(format!("http://127.0.0.1:{listen}/r.git/git-receive-pack"))
        .output()
        .expect("curl");
    assert_eq!(
        String::from_utf8_lossy(&push.stdout),
        "ok\n",
        "{}",
        String::from_utf8_lossy(&push.stderr)
    );
    outputs.push(("curl".into(), push));
    common::stop_pid(&mut relay);
    // The credential did reach the upstream: the checks below are not vacuous.
    let upstream_saw = received.lock().expect("lock").clone();
    assert!(
        !leaks(&upstream_saw).is_empty(),
        "the relay sent no credential upstream"
    );

    // Remove a token and stop.
    let list = home.list_json(true);
    let id = list[0]["id"].as_str().expect("id").to_owned();
    outputs.push(("rm".into(), home.tokenward(&["token", "rm", &id])));
    outputs.push(("list".into(), home.tokenward(&["token", "list", "--all"])));
    outputs.push(("status".into(), home.tokenward(&["status", "--json"])));
    home.stop_daemon();
    stop.store(true, Ordering::SeqCst);
    let (scans, argv_leaks) = watcher.join().expect("watcher");

    assert!(scans > 10, "the argv watcher hardly ran ({scans} scans)");
    assert!(argv_leaks.is_empty(), "secret in argv: {argv_leaks:?}");
    for (what, out) in &outputs {
        let mut text = out.stdout.clone();
        text.extend_from_slice(&out.stderr);
        assert!(
            leaks(&text).is_empty(),
            "{what} printed a secret: {}",
            String::from_utf8_lossy(&text)
        );
    }
    let daemon_log = home.daemon_stderr();
    assert!(
        daemon_log.contains("TRACE") || daemon_log.contains("DEBUG"),
        "trace logging was not on"
    );
    assert!(
        leaks(daemon_log.as_bytes()).is_empty(),
        "secret in the daemon's log"
    );
    let relay_log = std::fs::read(&relay_stderr).expect("relay log");
    assert!(leaks(&relay_log).is_empty(), "secret in the relay's log");
    for needle in needles() {
        // The index, the vault (encrypted), daemon.log, the run dir.
        let files = home.files_containing(&needle);
        assert!(files.is_empty(), "secret in {files:?}");
    }
    let index = std::fs::read(home.home.join("data/index.json")).expect("index");
    assert!(leaks(&index).is_empty());
    let spooled: Vec<_> = std::fs::read_dir(relay_tmp.path())
        .expect("relay tmp")
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(
        spooled.is_empty(),
        "the relay left {spooled:?} in its temp dir"
    );
    println!("hygiene: {scans} scans of every process's argv, {} outputs, daemon and relay logs at trace: no secret", outputs.len());
}

fn proc_owner(pid: u32, file: &str) -> u32 {
    std::fs::metadata(format!("/proc/{pid}/{file}"))
        .map(|m| m.uid())
        .unwrap_or(u32::MAX)
}

#[test]
fn the_daemon_is_not_dumpable() {
    let mut home = TestHome::new("file");
    // The daemon runs as 65534, which owns the whole throwaway install.
    let status = Command::new("chown")
        .args(["-R", "65534:65534"])
        .arg(home.root.path())
        .status()
        .expect("chown");
    assert!(status.success());
    home.daemon_wrapper = [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
    ]
    .map(String::from)
    .to_vec();
    home.start_daemon();
    let pid = home.daemon_pid().expect("pid");
    let uid = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("status")
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .map(str::to_owned)
        .unwrap_or_default();
    assert!(uid.split_whitespace().nth(1) == Some("65534"), "{uid}");
    // A dumpable process of the same uid, for comparison.
    let mut control = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "sleep",
            "30",
        ])
        .spawn()
        .expect("sleep");
    let control_pid = control.id();
    let dumpable_owner = common::wait_until(Duration::from_secs(5), || {
        proc_owner(control_pid, "environ") == 65534
    });
    let _ = control.kill();
    let _ = control.wait();
    assert!(
        dumpable_owner,
        "the control process's /proc files are not its own"
    );
    assert_eq!(
        proc_owner(pid, "environ"),
        0,
        "the daemon is dumpable: its /proc files belong to its uid"
    );
    home.stop_daemon();
    assert!(Path::new(&home.root.path()).exists());
}
