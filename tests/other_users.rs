//! Other users (SPEC "Reliability and security targets"): uid 65534 gets
//! nothing, even with every permission opened up, so that the peer-uid
//! checks are seen to hold on their own. tests/core.rs sends raw JSON as
//! 65534 and tests/relay.rs runs curl as 65534 against an in-process relay;
//! here the real `git-credential-tokenward` runs as 65534 against the
//! socket, and curl as 65534 against `tokenward relay serve`.

mod common;

use common::TestHome;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

const SECRET: &str = "other-users-secret-Kp4w";

fn open_up(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

fn as_nobody(program: &Path) -> Command {
    let mut command = Command::new("setpriv");
    command
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(program)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", "/nonexistent");
    command
}

#[test]
fn the_helper_run_by_another_uid_prints_nothing() {
    let mut home = TestHome::new("file");
    home.start_daemon();
    home.add_token("https://h.example", Some("alice"), SECRET, &[]);
    for dir in [
        home.root.path(),
        home.socket.parent().expect("run dir"),
        &home.home,
    ] {
        open_up(dir, 0o777);
    }
    open_up(&home.socket, 0o777);
    // The build tree may sit under a private directory: a world-readable copy.
    let bin_dir = tempfile::tempdir().expect("tempdir");
    open_up(bin_dir.path(), 0o755);
    let helper = bin_dir.path().join("git-credential-tokenward");
    std::fs::copy(common::helper_bin(), &helper).expect("copy the helper");
    open_up(&helper, 0o755);

    let mut child = as_nobody(&helper)
        .arg("get")
        .env("TOKENWARD_SOCKET", &home.socket)
        .env("TOKENWARD_NO_AUTOSTART", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("setpriv");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"protocol=https\nhost=h.example\nusername=alice\n\n")
        .expect("request");
    let out = child.wait_with_output().expect("helper exits");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.stdout.is_empty(), "another uid got an answer: {stdout}");
    assert!(!stderr.contains(SECRET), "{stderr}");
    assert_eq!(out.status.code(), Some(0), "fails soft: {stderr}");
    assert!(
        common::wait_until(Duration::from_secs(5), || home
            .daemon_stderr()
            .contains("refused a connection from another user")),
        "refusal not logged"
    );
    // The files under the opened directories stay the owner's alone.
    for file in ["data/index.json", "data/vault.json", "data/fingerprint.key"] {
        let path = home.home.join(file);
        if path.exists() {
            let out = as_nobody(Path::new("/bin/cat"))
                .arg(&path)
                .output()
                .expect("cat");
            assert!(!out.status.success(), "65534 could read {file}");
        }
    }
    // The owner is still served.
    assert_eq!(
        home.get_secret("https", "h.example", None).as_deref(),
        Some(SECRET)
    );
}

/// An upstream that counts connections and answers each with 200 "up".
fn counting_upstream() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            seen.fetch_add(1, Ordering::SeqCst);
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut buffer = [0u8; 8192];
            let _ = stream.read(&mut buffer);
            let _ = stream.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\nconnection: close\r\n\r\nup\n",
            );
        }
    });
    (port, count)
}

#[test]
fn relay_serve_refuses_another_uid() {
    let (upstream_port, reached) = counting_upstream();
    let upstream = format!("http://127.0.0.1:{upstream_port}");
    let home = TestHome::new("file");
    let port = common::free_port();
    let mut relay = home
        .command(common::tokenward_bin())
        .args(["relay", "serve", &upstream, "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .env("TOKENWARD_TOKEN", SECRET)
        .env("TOKENWARD_URL", &upstream)
        .env("TOKENWARD_USERNAME", "alice")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("relay serve");
    let up = common::wait_until(Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    assert!(up, "the relay did not come up");
    let url = format!("http://127.0.0.1:{port}/repo.git/info/refs?service=git-upload-pack");
    let curl = |mut command: Command| {
        let out = command
            .args(["-sS", "--max-time", "20", "-w", "\n%{http_code}", &url])
            .output()
            .expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
        (status.to_owned(), body.to_owned())
    };
    let (status, body) = curl(as_nobody(Path::new("curl")));
    assert_eq!(status, "403", "{body}");
    assert!(body.contains("refused") && body.contains("65534"), "{body}");
    assert!(!body.contains(SECRET));
    assert_eq!(
        reached.load(Ordering::SeqCst),
        0,
        "the upstream was reached"
    );
    // The owner gets through, so the refusal was the uid check.
    let (status, body) = curl(Command::new("curl"));
    assert_eq!((status.as_str(), body.as_str()), ("200", "up\n"));
    assert_eq!(reached.load(Ordering::SeqCst), 1);
    common::stop_pid(&mut relay);
}
