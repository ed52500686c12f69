//! Shared harness for the integration tests: a throwaway tokenward install
//! (its own TOKENWARD_HOME, socket, HOME), the daemon as a child process
//! stopped by pid, real Secret Service sessions, and raw socket access.
//!
//! Every test binary includes this module and uses only part of it.
#![allow(dead_code)]

pub mod nginx;

use serde_json::Value;
use std::ffi::{OsStr, OsString};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The `tokenward` binary under test.
pub fn tokenward_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_tokenward"))
}

/// The git helper, built beside `tokenward` by `cargo build --workspace`
/// (tests/run.sh does that before the tests).
pub fn helper_bin() -> PathBuf {
    let path = tokenward_bin().with_file_name("git-credential-tokenward");
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace` (tests/run.sh does) before the tests",
        path.display()
    );
    path
}

/// An nginx.conf for a test server: in the foreground as one process,
/// pid, logs (`logs/access.log` in `log_format`, `logs/error.log`) and temp
/// files under `root`, no body size limit; `servers` goes inside `http {}`.
/// `user root;` keeps a root-started nginx able to use the temp dir (as any
/// other user nginx ignores it).
pub fn nginx_conf(root: &Path, log_format: &str, servers: &str) -> String {
    let root = root.display();
    format!(
        r#"daemon off;
master_process off;
worker_processes 1;
user root;
pid {root}/logs/nginx.pid;
error_log {root}/logs/error.log info;
events {{ worker_connections 256; }}
http {{
    log_format tw '{log_format}';
    access_log {root}/logs/access.log tw;
    client_body_temp_path {root}/tmp/body;
    fastcgi_temp_path {root}/tmp/fastcgi;
    proxy_temp_path {root}/tmp/proxy;
    uwsgi_temp_path {root}/tmp/uwsgi;
    scgi_temp_path {root}/tmp/scgi;
    client_max_body_size 0;
    default_type text/plain;
{servers}
}}
"#
    )
}

/// Debian's nginx (nginx-light), or one from another prefix, else PATH's.
pub fn nginx_binary() -> PathBuf {
    [
        "/usr/sbin/nginx",
        "/usr/local/sbin/nginx",
        "/usr/local/nginx/sbin/nginx",
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|candidate| candidate.is_file())
    .unwrap_or_else(|| PathBuf::from("nginx"))
}

/// An htpasswd hash by `openssl passwd -apr1`, the password on stdin
/// (never in argv).
pub fn apr1(password: &str) -> String {
    let mut child = Command::new("openssl")
        .args(["passwd", "-apr1", "-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("openssl");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("{password}\n").as_bytes())
        .expect("write the password");
    let out = child.wait_with_output().expect("openssl");
    assert!(out.status.success(), "openssl passwd failed");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A free TCP port on 127.0.0.1 (bound and released; the caller binds it next).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Polls `check` until it holds or `limit` passes.
pub fn wait_until(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    check()
}

/// Sends SIGTERM to `pid`, then SIGKILL if it is still there after a while.
pub fn stop_pid(child: &mut Child) {
    let pid = child.id().to_string();
    let _ = Command::new("kill").arg("-TERM").arg(&pid).status();
    if !wait_until(Duration::from_secs(5), || {
        matches!(child.try_wait(), Ok(Some(_)))
    }) {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// One throwaway install of tokenward.
pub struct TestHome {
    pub root: tempfile::TempDir,
    /// TOKENWARD_HOME.
    pub home: PathBuf,
    /// HOME for tokenward, git and hg.
    pub user_home: PathBuf,
    pub socket: PathBuf,
    env: Vec<(OsString, OsString)>,
    /// Program and arguments put before `tokenward daemon` (e.g. keyctl session).
    pub daemon_wrapper: Vec<String>,
    daemon: Option<Child>,
}

impl TestHome {
    /// A new install using `backend`; the file backend gets a passphrase.
    pub fn new(backend: &str) -> TestHome {
        let root = tempfile::tempdir().expect("tempdir");
        let home = root.path().join("tw");
        let user_home = root.path().join("home");
        let run = root.path().join("run");
        std::fs::create_dir_all(&user_home).expect("home");
        std::fs::create_dir_all(&run).expect("run dir");
        std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o700)).expect("chmod run");
        let socket = run.join("daemon.sock");
        let mut env: Vec<(OsString, OsString)> = vec![
            ("TOKENWARD_HOME".into(), home.clone().into()),
            ("TOKENWARD_SOCKET".into(), socket.clone().into()),
            ("TOKENWARD_BACKEND".into(), backend.into()),
            ("TOKENWARD_LOG".into(), "debug".into()),
            ("HOME".into(), user_home.clone().into()),
            ("XDG_CONFIG_HOME".into(), user_home.join(".config").into()),
            ("GIT_CONFIG_NOSYSTEM".into(), "1".into()),
            ("GIT_TERMINAL_PROMPT".into(), "0".into()),
        ];
        if backend == "file" {
            env.push(("TOKENWARD_PASSPHRASE".into(), "test passphrase".into()));
        }
        TestHome {
            root,
            home,
            user_home,
            socket,
            env,
            daemon_wrapper: Vec::new(),
            daemon: None,
        }
    }

    pub fn set_env(&mut self, key: impl Into<OsString>, value: impl Into<OsString>) {
        let key = key.into();
        self.env.retain(|(k, _)| *k != key);
        self.env.push((key, value.into()));
    }

    pub fn remove_env(&mut self, key: &str) {
        self.env.retain(|(k, _)| k != key);
    }

    /// A command with this install's environment and nothing inherited that
    /// could point it at another install.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new(program);
        for (key, _) in std::env::vars_os() {
            let name = key.to_string_lossy();
            if name.starts_with("TOKENWARD_")
                || name.starts_with("GIT_")
                || name == "XDG_RUNTIME_DIR"
            {
                command.env_remove(&key);
            }
        }
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        command.stdin(Stdio::null());
        command
    }

    /// Starts `git-credential-tokenward ACTION` with `input` written to its
    /// stdin (then closed) and its output piped.
    pub fn spawn_helper(&self, action: &str, input: &str) -> Child {
        let mut child = self
            .command(helper_bin())
            .arg(action)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the helper");
        // The helper may exit before reading (it refused the request).
        let _ = child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes());
        child
    }

    /// Runs `tokenward ARGS` with no stdin.
    pub fn tokenward(&self, args: &[&str]) -> Output {
        self.command(tokenward_bin())
            .args(args)
            .output()
            .expect("run tokenward")
    }

    /// Runs `tokenward ARGS` with `input` piped on stdin.
    pub fn tokenward_with_stdin(&self, args: &[&str], input: &str) -> Output {
        let mut child = self
            .command(tokenward_bin())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tokenward");
        // The command may exit before reading (a refused argument).
        let _ = child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes());
        child.wait_with_output().expect("wait tokenward")
    }

    /// Starts `tokenward daemon` in the foreground as a child and waits for
    /// its socket. Its stderr goes to `daemon.stderr` in the root.
    pub fn start_daemon(&mut self) {
        let child = self.spawn_daemon();
        self.daemon = Some(child);
        let socket = self.socket.clone();
        let ok = wait_until(Duration::from_secs(15), || {
            UnixStream::connect(&socket).is_ok()
        });
        assert!(ok, "the daemon did not come up: {}", self.daemon_stderr());
    }

    /// Spawns the daemon without waiting (for tests that expect it to fail).
    pub fn spawn_daemon(&self) -> Child {
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.root.path().join("daemon.stderr"))
            .expect("stderr file");
        let mut command = match self.daemon_wrapper.split_first() {
            Some((program, args)) => {
                let mut c = self.command(program);
                c.args(args).arg(tokenward_bin());
                c
            }
            None => self.command(tokenward_bin()),
        };
        command
            .arg("daemon")
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn daemon")
    }

    pub fn daemon_stderr(&self) -> String {
        std::fs::read_to_string(self.root.path().join("daemon.stderr")).unwrap_or_default()
    }

    /// Stops the daemon this harness started, by pid.
    pub fn stop_daemon(&mut self) {
        if let Some(mut child) = self.daemon.take() {
            stop_pid(&mut child);
        }
    }

    pub fn restart_daemon(&mut self) {
        self.stop_daemon();
        self.start_daemon();
    }

    pub fn daemon_pid(&self) -> Option<u32> {
        self.daemon.as_ref().map(Child::id)
    }

    /// Adds a token with `secret` on stdin and returns its id.
    pub fn add_token(&self, url: &str, user: Option<&str>, secret: &str, extra: &[&str]) -> String {
        let mut args = vec!["token", "add", url];
        if let Some(user) = user {
            args.extend(["--user", user]);
        }
        args.extend_from_slice(extra);
        let out = self.tokenward_with_stdin(&args, secret);
        assert!(
            out.status.success(),
            "token add failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        text.split_whitespace()
            .nth(1)
            .filter(|id| id.starts_with("tw_"))
            .unwrap_or_else(|| panic!("no id in {text:?}"))
            .to_owned()
    }

    /// `token list --json [--all]` parsed.
    pub fn list_json(&self, all: bool) -> Vec<Value> {
        let mut args = vec!["token", "list", "--json"];
        if all {
            args.push("--all");
        }
        let out = self.tokenward(&args);
        assert!(
            out.status.success(),
            "token list failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Vec<Value>>(&out.stdout).expect("list --json is a JSON array")
    }

    /// `status --json` parsed; fails the test when the daemon does not answer.
    pub fn status_json(&self) -> Value {
        let out = self.tokenward(&["status", "--json"]);
        assert!(
            out.status.success(),
            "status failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("status --json is JSON")
    }

    pub fn token_json(&self, id: &str) -> Value {
        self.list_json(true)
            .into_iter()
            .find(|t| t["id"] == id)
            .unwrap_or_else(|| panic!("token {id} not listed"))
    }

    /// Sends raw bytes on a fresh connection and returns the answer line.
    pub fn raw_request(&self, bytes: &[u8]) -> String {
        raw_request(&self.socket, bytes)
    }

    /// Asks the daemon directly for the credential of `protocol://host/path`.
    pub fn get_secret(&self, protocol: &str, host: &str, path: Option<&str>) -> Option<String> {
        let request = serde_json::json!({"v": 1, "op": "get", "protocol": protocol, "host": host, "path": path});
        let answer: Value =
            serde_json::from_str(&self.raw_request(format!("{request}\n").as_bytes()))
                .expect("answer is JSON");
        assert_eq!(answer["ok"], true, "get failed: {answer}");
        answer["credential"]["password"].as_str().map(str::to_owned)
    }

    /// Every file under TOKENWARD_HOME and the daemon's run dir whose bytes contain `needle`.
    pub fn files_containing(&self, needle: &str) -> Vec<PathBuf> {
        let mut found = Vec::new();
        for dir in [
            self.home.clone(),
            self.socket
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default(),
        ] {
            find_in_tree(&dir, needle.as_bytes(), &mut found);
        }
        found
    }
}

impl Drop for TestHome {
    fn drop(&mut self) {
        self.stop_daemon();
        // A daemon started by autostart is not our child: ask it to stop.
        if UnixStream::connect(&self.socket).is_ok() {
            let _ = self.tokenward(&["stop"]);
        }
    }
}

pub fn raw_request(socket: &Path, bytes: &[u8]) -> String {
    let mut stream = UnixStream::connect(socket).expect("connect to the daemon");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    stream.write_all(bytes).expect("send");
    let mut line = String::new();
    BufReader::new(stream)
        .read_line(&mut line)
        .expect("read answer");
    line
}

fn find_in_tree(dir: &Path, needle: &[u8], found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            find_in_tree(&path, needle, found);
        } else if kind.is_file() {
            let mut bytes = Vec::new();
            if std::fs::File::open(&path)
                .and_then(|mut f| f.read_to_end(&mut bytes))
                .is_ok()
                && bytes.windows(needle.len()).any(|w| w == needle)
            {
                found.push(path);
            }
        }
    }
}

/// A private D-Bus session with gnome-keyring's Secret Service, unlocked,
/// stopped by pid when dropped.
pub struct SecretService {
    pub address: String,
    bus: Child,
    keyring: Child,
}

impl SecretService {
    /// Starts a session bus and an unlocked gnome-keyring whose files live under `home`.
    pub fn start(home: &Path) -> SecretService {
        let mut bus = Command::new("dbus-daemon")
            .args(["--session", "--nofork", "--print-address=1"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("dbus-daemon (apt-get install dbus)");
        let mut address = String::new();
        BufReader::new(bus.stdout.take().expect("bus stdout"))
            .read_line(&mut address)
            .expect("bus address");
        let address = address.trim().to_owned();
        assert!(!address.is_empty(), "dbus-daemon printed no address");
        let mut keyring = Command::new("gnome-keyring-daemon")
            .args(["--foreground", "--unlock", "--components=secrets"])
            .env("DBUS_SESSION_BUS_ADDRESS", &address)
            .env("HOME", home)
            .env("XDG_DATA_HOME", home.join(".local/share"))
            .env_remove("XDG_RUNTIME_DIR")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("gnome-keyring-daemon (apt-get install gnome-keyring)");
        {
            let mut stdin = keyring.stdin.take().expect("keyring stdin");
            stdin
                .write_all(b"keyring test password")
                .expect("unlock password");
        }
        let service = SecretService {
            address,
            bus,
            keyring,
        };
        let ready = wait_until(Duration::from_secs(10), || service.has_secrets_name());
        assert!(
            ready,
            "gnome-keyring did not register org.freedesktop.secrets"
        );
        service
    }

    fn has_secrets_name(&self) -> bool {
        Command::new("dbus-send")
            .args([
                "--session",
                "--print-reply",
                "--dest=org.freedesktop.DBus",
                "/org/freedesktop/DBus",
                "org.freedesktop.DBus.NameHasOwner",
                "string:org.freedesktop.secrets",
            ])
            .env("DBUS_SESSION_BUS_ADDRESS", &self.address)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).contains("boolean true"))
            .unwrap_or(false)
    }
}

impl Drop for SecretService {
    fn drop(&mut self) {
        stop_pid(&mut self.keyring);
        stop_pid(&mut self.bus);
    }
}
