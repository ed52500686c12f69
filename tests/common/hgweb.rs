//! Test harness for Mercurial over HTTP: `hg serve` (hgweb) serving
//! repositories on a free 127.0.0.1 port, behind nginx with `auth_basic`
//! (htpasswd made with `openssl passwd -apr1`) on another free port. Both
//! servers are children of the test and are killed by pid when the
//! [`HgWeb`] is dropped. Also finds the two hg binaries the tests use:
//! Debian's hg 6.x and hg 7.x from the venv made by tests/setup-hg7.sh.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Debian's hg (the `mercurial` package), a 6.x.
pub fn hg6() -> PathBuf {
    let hg = PathBuf::from("/usr/bin/hg");
    let version = hg_version(&hg);
    assert!(
        version.starts_with("6."),
        "{} is hg {version}, expected 6.x",
        hg.display()
    );
    hg
}

/// hg 7.x from the venv under target/, created on first use (once per
/// test binary).
pub fn hg7() -> PathBuf {
    static HG7: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    HG7.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/setup-hg7.sh");
        let out = Command::new("bash")
            .arg(&script)
            .stderr(Stdio::inherit())
            .output()
            .expect("run tests/setup-hg7.sh");
        assert!(out.status.success(), "tests/setup-hg7.sh failed");
        let hg = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        let version = hg_version(&hg);
        assert!(
            version.starts_with("7."),
            "{} is hg {version}, expected 7.x",
            hg.display()
        );
        hg
    })
    .clone()
}

/// `hg --version`'s number, e.g. `6.3.2`.
pub fn hg_version(hg: &Path) -> String {
    let out = Command::new(hg)
        .args(["--version", "--quiet"])
        .env("HGRCPATH", "")
        .env("HGPLAIN", "1")
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", hg.display()));
    let text = String::from_utf8_lossy(&out.stdout);
    text.split("version ")
        .nth(1)
        .and_then(|v| v.split([')', ' ', '\n']).next())
        .unwrap_or_default()
        .to_owned()
}

/// The python interpreter an hg runs on (for the extension's unit tests).
pub fn hg_python(hg: &Path) -> PathBuf {
    let out = Command::new(hg)
        .args(["debuginstall", "-T", "{pythonexe}"])
        .env("HGRCPATH", "")
        .env("HGPLAIN", "1")
        .env("HGUSER", "test")
        .output()
        .expect("hg debuginstall");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// A user nginx lets in.
pub struct Account<'a> {
    pub user: &'a str,
    pub password: &'a str,
}

/// hgweb behind nginx with HTTP Basic auth.
pub struct HgWeb {
    pub dir: tempfile::TempDir,
    /// `http://127.0.0.1:PORT`, nginx's address (no trailing slash).
    pub base: String,
    hg_serve: Child,
    nginx: Child,
}

impl HgWeb {
    /// Serves each of `repos` (paths like `team/repo`, created empty) with
    /// pushes allowed, behind nginx accepting `accounts`. The server side
    /// always runs Debian's hg.
    pub fn start(repos: &[&str], accounts: &[Account]) -> HgWeb {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        let mut web_conf = String::from("[web]\nallow-push = *\npush_ssl = false\n[paths]\n");
        for name in repos {
            let repo = root.join("repos").join(name);
            std::fs::create_dir_all(&repo).expect("mkdir repo");
            run_ok(
                Command::new("/usr/bin/hg")
                    .arg("init")
                    .arg(&repo)
                    .env("HGRCPATH", ""),
            );
            web_conf.push_str(&format!("{name} = {}\n", repo.display()));
        }
        std::fs::write(root.join("web.conf"), web_conf).expect("web.conf");

        let serve_log = root.join("hg-serve.log");
        let log = std::fs::File::create(&serve_log).expect("log");
        let hg_serve = Command::new("/usr/bin/hg")
            .args(["serve", "-a", "127.0.0.1", "-p", "0", "--web-conf"])
            .arg(root.join("web.conf"))
            .args([
                "--config",
                "web.push_ssl=False",
                "--config",
                "web.allow_push=*",
            ])
            .env("HGRCPATH", "")
            .env("HGPLAIN", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start hg serve");
        let mut web = HgWeb {
            dir,
            base: String::new(),
            hg_serve,
            nginx: Command::new("true").spawn().expect("true"),
        };
        let hg_port = wait_for_port(&serve_log);

        let mut htpasswd = String::new();
        for account in accounts {
            htpasswd.push_str(&format!(
                "{}:{}\n",
                account.user,
                crate::common::apr1(account.password)
            ));
        }
        std::fs::write(web.dir.path().join("htpasswd"), htpasswd).expect("htpasswd");
        let (nginx, port) = start_nginx(web.dir.path(), hg_port);
        web.nginx = nginx;
        web.base = format!("http://127.0.0.1:{port}");
        web
    }

    /// The URL of a served repository.
    pub fn url(&self, repo: &str) -> String {
        format!("{}/{repo}", self.base)
    }

    /// Where a served repository lives on disk.
    pub fn repo_dir(&self, repo: &str) -> PathBuf {
        self.dir.path().join("repos").join(repo)
    }
}

impl Drop for HgWeb {
    fn drop(&mut self) {
        for child in [&mut self.nginx, &mut self.hg_serve] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn run_ok(command: &mut Command) {
    let out = command.output().expect("run");
    assert!(
        out.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Reads hg serve's "(bound to 127.0.0.1:PORT)".
fn wait_for_port(log: &Path) -> u16 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(port) = text
            .split("bound to 127.0.0.1:")
            .nth(1)
            .and_then(|rest| rest.split(')').next())
            .and_then(|p| p.parse().ok())
        {
            return port;
        }
        assert!(Instant::now() < deadline, "hg serve did not start: {text}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// nginx in the foreground, proxying to hg serve; retried on a port race.
fn start_nginx(dir: &Path, hg_port: u16) -> (Child, u16) {
    let nginx = crate::common::nginx_binary();
    for _ in 0..5 {
        let port = crate::common::free_port();
        let d = dir.display();
        let conf = format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
             error_log {d}/nginx-error.log info;\nevents {{ worker_connections 64; }}\n\
             http {{\n  access_log {d}/nginx-access.log;\n\
               client_body_temp_path {d}/body; proxy_temp_path {d}/proxy;\n\
               fastcgi_temp_path {d}/fcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n\
               server {{\n    listen 127.0.0.1:{port};\n    client_max_body_size 0;\n\
                 location / {{\n      auth_basic \"hg\";\n      auth_basic_user_file {d}/htpasswd;\n\
                   proxy_pass http://127.0.0.1:{hg_port};\n      proxy_set_header Host $host:$server_port;\n\
                   proxy_read_timeout 120s;\n    }}\n  }}\n}}\n"
        );
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf).expect("nginx.conf");
        let mut child = Command::new(&nginx)
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&conf_path)
            .arg("-e")
            .arg(dir.join("nginx-error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                break; // the port was taken meanwhile: try another
            }
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return (child, port);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let log = std::fs::read_to_string(dir.join("nginx-error.log")).unwrap_or_default();
    panic!("nginx did not start: {log}");
}
