//! The core against real backends: the encrypted file, the kernel keyring
//! (inside a `keyctl session`), and gnome-keyring's Secret Service inside a
//! private D-Bus session. Plus the socket's permissions, other users, bad
//! input on the wire, and the CLI's one-line errors.

mod common;

use common::{SecretService, TestHome};
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::{Duration, Instant};

const SECRET: &str = "tw-secret-Zq8v3Lr9";

/// add, restart the daemon, read back; list never shows the secret; no file
/// under the install holds it.
fn round_trip(mut home: TestHome, expect_backend: &str, expect_persistence: &str) {
    home.start_daemon();
    let status = home.status_json();
    assert_eq!(status["backend"], expect_backend);
    assert_eq!(status["persistence"], expect_persistence);

    let id = home.add_token(
        "https://code.example.com",
        Some("alice"),
        SECRET,
        &["--label", "laptop"],
    );
    home.restart_daemon();

    assert_eq!(
        home.get_secret("https", "code.example.com", Some("team/repo.git"))
            .as_deref(),
        Some(SECRET)
    );
    let listed = home.tokenward(&["token", "list", "--all"]);
    let json = home.tokenward(&["token", "list", "--json", "--all"]);
    for out in [&listed, &json] {
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(&id), "{text}");
        assert!(!text.contains(SECRET), "token list printed the secret");
    }
    let token = home.token_json(&id);
    assert_eq!(token["url"], "https://code.example.com");
    assert_eq!(token["username"], "alice");
    assert_eq!(token["role"], "vcs");
    assert_eq!(token["label"], "laptop");
    assert_eq!(token["state"], "active");
    assert_eq!(token["fingerprint"].as_str().map(str::len), Some(12));
    assert_eq!(
        home.files_containing(SECRET),
        Vec::<std::path::PathBuf>::new()
    );
    assert!(
        !home.daemon_stderr().contains(SECRET),
        "the daemon logged the secret"
    );

    // rm takes the secret out of the backend as well.
    let rm = home.tokenward(&["token", "rm", &id]);
    assert!(
        rm.status.success(),
        "{}",
        String::from_utf8_lossy(&rm.stderr)
    );
    home.restart_daemon();
    assert_eq!(home.get_secret("https", "code.example.com", None), None);
    assert!(home.list_json(true).is_empty());
}

#[test]
fn file_backend_round_trip() {
    round_trip(TestHome::new("file"), "file", "until deleted");
}

#[test]
fn keyutils_backend_round_trip() {
    let mut home = TestHome::new("keyutils");
    // Both daemons join one named session keyring, as a login session would.
    let session = format!("tokenward-test-{}", std::process::id());
    home.daemon_wrapper = vec!["keyctl".into(), "session".into(), session];
    round_trip(home, "keyutils", "until reboot");
}

#[test]
fn secret_service_backend_round_trip() {
    let mut home = TestHome::new("secret-service");
    let service = SecretService::start(&home.user_home);
    home.set_env("DBUS_SESSION_BUS_ADDRESS", &service.address);
    round_trip(home, "secret-service", "until deleted");
    drop(service);
}

#[test]
fn auto_prefers_secret_service_and_falls_back_to_file() {
    let mut home = TestHome::new("auto");
    let service = SecretService::start(&home.user_home);
    home.set_env("DBUS_SESSION_BUS_ADDRESS", &service.address);
    home.start_daemon();
    let status = home.status_json();
    assert_eq!(status["backend"], "secret-service");
    home.stop_daemon();
    drop(service);

    // No bus at all: auto takes the file vault, locked until unlocked.
    let mut home = TestHome::new("auto");
    home.set_env("DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent/bus");
    home.start_daemon();
    let status = home.status_json();
    assert_eq!(status["backend"], "file");
    assert_eq!(status["locked"], true);
    let refused = home.tokenward_with_stdin(&["token", "add", "https://h", "--user", "u"], SECRET);
    assert!(!refused.status.success());
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(
        message.contains("locked") && message.contains("tokenward unlock"),
        "{message}"
    );
    let unlock = home.tokenward_with_stdin(&["unlock"], "a new passphrase");
    assert!(
        unlock.status.success(),
        "{}",
        String::from_utf8_lossy(&unlock.stderr)
    );
    home.add_token("https://h", Some("u"), SECRET, &[]);
    assert!(home.files_containing(SECRET).is_empty());
    // Wrong passphrase after a lock.
    assert!(home.tokenward(&["lock"]).status.success());
    let wrong = home.tokenward_with_stdin(&["unlock"], "not it");
    assert!(!wrong.status.success());
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("wrong passphrase"));
}

#[test]
fn missing_or_locked_keychain_is_a_clear_error_within_seconds() {
    // No bus: an explicit secret-service choice fails at once, clearly.
    let mut home = TestHome::new("secret-service");
    home.set_env("DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent/bus");
    let started = Instant::now();
    let out = home
        .command(common::tokenward_bin())
        .arg("daemon")
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("secret-service vault is unavailable"),
        "{stderr}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));

    // A keyring that was never unlocked: creating an item needs a prompt
    // that no one can answer.
    let mut home = TestHome::new("secret-service");
    let bus = Command::new("dbus-daemon")
        .args(["--session", "--nofork", "--print-address=1"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("dbus-daemon");
    let mut bus = bus;
    let mut address = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(bus.stdout.take().expect("stdout")),
        &mut address,
    )
    .expect("address");
    let mut keyring = home
        .command("gnome-keyring-daemon")
        .args(["--foreground", "--components=secrets"])
        .env("DBUS_SESSION_BUS_ADDRESS", address.trim())
        .spawn()
        .expect("gnome-keyring");
    std::thread::sleep(Duration::from_millis(500));
    home.set_env("DBUS_SESSION_BUS_ADDRESS", address.trim());
    let started = Instant::now();
    let out = home
        .command(common::tokenward_bin())
        .arg("daemon")
        .output()
        .expect("run");
    let elapsed = started.elapsed();
    common::stop_pid(&mut keyring);
    common::stop_pid(&mut bus);
    assert!(!out.status.success(), "a locked keyring must not be used");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("secret-service"), "{stderr}");
    assert!(elapsed < Duration::from_secs(12), "took {elapsed:?}");
    assert!(
        !home.home.join("data/vault.json").exists(),
        "no plaintext or file fallback"
    );
}

#[test]
fn socket_is_private_and_refuses_open_directories() {
    let mut home = TestHome::new("file");
    home.start_daemon();
    let dir = home.socket.parent().expect("dir").to_owned();
    let mode =
        |p: &std::path::Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&home.socket), 0o600);
    home.stop_daemon();
    assert!(!home.socket.exists(), "the socket is removed on exit");

    for open in [0o750, 0o755, 0o777] {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(open)).expect("chmod");
        let out = home
            .command(common::tokenward_bin())
            .arg("daemon")
            .output()
            .expect("run");
        assert!(!out.status.success(), "started with a {open:o} socket dir");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("accessible by group or others"), "{stderr}");
        assert!(stderr.contains("chmod 700"), "{stderr}");
    }

    // A stale socket file (nobody listening) is reclaimed.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let stale = std::os::unix::net::UnixListener::bind(&home.socket).expect("stale socket");
    drop(stale);
    assert!(home.socket.exists());
    home.start_daemon();
    // A second daemon on a live socket refuses to start.
    let out = home
        .command(common::tokenward_bin())
        .arg("daemon")
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already listening"));
}

#[test]
fn another_uid_is_refused_even_with_open_permissions() {
    let mut home = TestHome::new("file");
    home.start_daemon();
    home.add_token("https://h.example", Some("alice"), SECRET, &[]);
    // Open everything up: only the peer-uid check stands in the way.
    for dir in [home.root.path(), home.socket.parent().expect("dir")] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    }
    std::fs::set_permissions(&home.socket, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let request = r#"{"v":1,"op":"get","protocol":"https","host":"h.example"}"#;
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "python3", "-c"])
        .arg(format!(
            "import socket\ns=socket.socket(socket.AF_UNIX)\ns.connect({:?})\ntry:\n  s.sendall(b'{}\\n')\n  print(repr(s.recv(65536)))\nexcept OSError:\n  print(repr(b''))",
            home.socket.display().to_string(),
            request
        ))
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .output()
        .expect("setpriv");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the client could not even connect: {stderr}"
    );
    assert_eq!(stdout.trim(), "b''", "another uid got an answer: {stdout}");
    assert!(!stdout.contains(SECRET));
    assert!(
        common::wait_until(Duration::from_secs(5), || home
            .daemon_stderr()
            .contains("refused a connection from another user")),
        "refusal not logged"
    );
    // We are still served.
    assert_eq!(
        home.get_secret("https", "h.example", None).as_deref(),
        Some(SECRET)
    );
}

#[test]
fn bad_input_gets_errors_and_the_daemon_keeps_serving() {
    let mut home = TestHome::new("file");
    home.start_daemon();
    home.add_token("https://h.example", Some("alice"), SECRET, &[]);
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"{not json\n".to_vec(), "malformed request"),
        (b"[1,2,3]\n".to_vec(), "malformed request"),
        (b"{\"op\":\"get\"}\n".to_vec(), "no protocol version"),
        (b"{\"v\":1,\"op\":\"frobnicate\"}\n".to_vec(), "unknown op"),
        (
            b"{\"v\":99,\"op\":\"get\"}\n".to_vec(),
            "unsupported protocol version 99",
        ),
        (
            b"{\"v\":1,\"op\":\"add\",\"url\":7}\n".to_vec(),
            "bad or missing fields",
        ),
        (
            [vec![b'x'; 1024 * 1024], b"\n".to_vec()].concat(),
            "longer than",
        ),
    ];
    for (bytes, expected) in cases {
        let answer = home.raw_request(&bytes);
        let json: serde_json::Value =
            serde_json::from_str(&answer).unwrap_or_else(|_| panic!("not JSON: {answer:?}"));
        assert_eq!(json["ok"], false, "{answer}");
        assert_eq!(json["v"], 1);
        let error = json["error"].as_str().expect("error text");
        assert!(
            error.contains(expected),
            "{error:?} should mention {expected:?}"
        );
        assert!(!error.contains('\n'));
        // The next client is served.
        assert_eq!(
            home.get_secret("https", "h.example", None).as_deref(),
            Some(SECRET)
        );
    }
    // Several requests on one connection are answered in order, and one
    // bad line does not end the connection.
    let answers = {
        use std::io::{BufRead, Write};
        let mut stream = std::os::unix::net::UnixStream::connect(&home.socket).expect("connect");
        stream
            .write_all(b"{\"v\":1,\"op\":\"status\"}\nnope\n{\"v\":1,\"op\":\"list\"}\n")
            .expect("send");
        let reader = std::io::BufReader::new(stream);
        reader
            .lines()
            .take(3)
            .map(|l| l.expect("line"))
            .collect::<Vec<_>>()
    };
    assert!(answers[0].contains("\"status\""));
    assert!(answers[1].contains("\"ok\":false"));
    assert!(answers[2].contains("\"tokens\""));
}

#[test]
fn token_lifecycle_and_cli_errors() {
    let mut home = TestHome::new("file");
    home.start_daemon();
    let id = home.add_token(
        "https://h.example/team",
        Some("alice"),
        SECRET,
        &["--expires", "2099-01-31", "--role", "all"],
    );
    let token = home.token_json(&id);
    assert_eq!(token["expires"], "2099-01-31T00:00:00Z");
    assert_eq!(token["role"], "all");
    assert_eq!(token["url"], "https://h.example/team");

    // rotate replaces the secret.
    let rotate = home.tokenward_with_stdin(&["token", "rotate", &id], "new-secret-value");
    assert!(
        rotate.status.success(),
        "{}",
        String::from_utf8_lossy(&rotate.stderr)
    );
    assert_eq!(
        home.get_secret("https", "h.example", Some("team/x"))
            .as_deref(),
        Some("new-secret-value")
    );

    // reject (what git's erase sends) hides it but keeps it; restore brings it back.
    let reject = serde_json::json!({"v":1,"op":"reject","protocol":"https","host":"h.example","path":"team/x","username":"alice","password":"new-secret-value"});
    assert!(home
        .raw_request(format!("{reject}\n").as_bytes())
        .contains("\"ok\":true"));
    assert_eq!(home.get_secret("https", "h.example", Some("team/x")), None);
    assert!(home.list_json(false).is_empty());
    assert_eq!(home.token_json(&id)["state"], "rejected");
    assert!(home.tokenward(&["token", "restore", &id]).status.success());
    assert_eq!(home.token_json(&id)["state"], "active");

    // Expired tokens are not handed out.
    let old = home.add_token(
        "https://old.example",
        Some("a"),
        "old-secret",
        &["--expires", "1m"],
    );
    assert_eq!(
        home.get_secret("https", "old.example", None).as_deref(),
        Some("old-secret")
    );
    assert!(home.token_json(&old)["expires"].is_string());

    let errors: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["token", "add", "code.example.com", "--user", "a"],
            "invalid URL",
        ),
        (
            vec![
                "token",
                "add",
                "https://h",
                "--user",
                "a",
                "--expires",
                "someday",
            ],
            "invalid expiry",
        ),
        (vec!["token", "add", "https://h"], "--user is required"),
        (
            vec!["token", "add", "https://h", "--user", "a", "--role", "boss"],
            "unknown role",
        ),
        (vec!["token", "rm", "tw_nothere"], "no token with id"),
        (vec!["token", "restore", "tw_nothere"], "no token with id"),
    ];
    for (args, expected) in errors {
        let out = home.tokenward_with_stdin(&args, SECRET);
        assert!(!out.status.success(), "{args:?} succeeded");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(!stderr.contains(SECRET));
        assert!(stderr.trim().lines().count() <= 3, "{stderr}");
    }
    // A secret with a newline in the middle is refused; nothing is stored.
    let before = home.list_json(true).len();
    let out = home.tokenward_with_stdin(
        &["token", "add", "https://n.example", "--user", "a"],
        "two\nlines",
    );
    assert!(!out.status.success());
    assert!(!String::from_utf8_lossy(&out.stderr).contains("two"));
    assert_eq!(home.list_json(true).len(), before);
}

#[test]
fn start_stop_status_as_a_user_would() {
    let home = TestHome::new("file");
    let out = home.tokenward(&["status"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not running"));
    let start = home.tokenward(&["start"]);
    assert!(
        start.status.success(),
        "{}",
        String::from_utf8_lossy(&start.stderr)
    );
    let id = home.add_token("https://code.example.com", Some("alice"), SECRET, &[]);
    assert!(home.tokenward(&["stop"]).status.success());
    assert!(!home.socket.exists());
    // token commands start the daemon on demand.
    let listed = home.tokenward(&["token", "list"]);
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    assert!(String::from_utf8_lossy(&listed.stdout).contains(&id));
    let status = home.tokenward(&["status"]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains("backend:  file") && text.contains("1 active"),
        "{text}"
    );
    assert!(home.tokenward(&["stop"]).status.success());
}

#[test]
fn socket_activation_uses_the_passed_listener() {
    let home = TestHome::new("file");
    let mut command = home.command("systemd-socket-activate");
    command.arg("-l").arg(&home.socket);
    for key in [
        "TOKENWARD_HOME",
        "TOKENWARD_SOCKET",
        "TOKENWARD_BACKEND",
        "TOKENWARD_PASSPHRASE",
        "HOME",
    ] {
        command.arg(format!("-E{key}"));
    }
    let mut activator = command
        .arg(common::tokenward_bin())
        .arg("daemon")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("systemd-socket-activate (apt-get install systemd)");
    assert!(common::wait_until(Duration::from_secs(5), || home
        .socket
        .exists()));
    // The first connection makes the activator exec the daemon with fd 3.
    let id = home.add_token("https://h.example", Some("alice"), SECRET, &[]);
    assert_eq!(
        home.get_secret("https", "h.example", None).as_deref(),
        Some(SECRET)
    );
    assert!(home.list_json(false).iter().any(|t| t["id"] == id.as_str()));
    // `stop` would only make systemd start it again: it says what to run.
    let stop = home.tokenward(&["stop"]);
    assert!(!stop.status.success());
    assert!(
        String::from_utf8_lossy(&stop.stderr).contains("systemctl --user stop tokenward.socket")
    );
    common::stop_pid(&mut activator);
}

#[test]
fn env_backend_serves_one_scoped_token_and_writes_nothing() {
    let mut home = TestHome::new("env");
    home.set_env("TOKENWARD_TOKEN", SECRET);
    home.set_env("TOKENWARD_URL", "https://ci.example/team");
    home.set_env("TOKENWARD_USERNAME", "ci-bot");
    home.start_daemon();
    assert_eq!(
        home.get_secret("https", "ci.example", Some("team/repo.git"))
            .as_deref(),
        Some(SECRET)
    );
    assert_eq!(
        home.get_secret("https", "ci.example", Some("other/repo.git")),
        None
    );
    assert_eq!(
        home.get_secret("http", "ci.example", Some("team/repo.git")),
        None
    );
    let status = home.status_json();
    assert_eq!(status["backend"], "env");
    assert_eq!(status["persistence"], "never written");
    let refused = home.tokenward_with_stdin(&["token", "add", "https://h", "--user", "u"], "x");
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("read-only"));
    assert!(!home.home.join("data/index.json").exists());
    assert!(home.files_containing(SECRET).is_empty());
    home.stop_daemon();

    // A token without a scope is refused outright.
    let mut unscoped = TestHome::new("env");
    unscoped.set_env("TOKENWARD_TOKEN", SECRET);
    let out = unscoped
        .command(common::tokenward_bin())
        .arg("daemon")
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("TOKENWARD_URL"));
}
