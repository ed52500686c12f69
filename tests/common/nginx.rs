//! A real smart-HTTP git server for end-to-end tests: nginx + fcgiwrap +
//! `git http-backend`, HTTP Basic auth from an htpasswd file, push enabled,
//! on 127.0.0.1 at a free port, all files in a temp dir.
//!
//! nginx runs in the foreground as one process (`master_process off`) and
//! fcgiwrap as a child of the test; each is started in its own process group
//! and killed by that group id when the server is dropped, so nothing
//! outlives the test. The access log records the user, the request, the
//! status and the request's `Transfer-Encoding` and `Content-Length`, so a
//! test can tell a chunked push from a buffered one. Authorization headers
//! are never logged.

#![allow(dead_code)]

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct GitHttpServer {
    dir: tempfile::TempDir,
    pub port: u16,
    nginx: Child,
    fcgiwrap: Child,
}

/// One line of the access log, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// `-` when the request carried no (valid) credentials.
    pub user: String,
    pub method: String,
    pub uri: String,
    pub status: u16,
    /// The request's Transfer-Encoding header, `-` when absent.
    pub transfer_encoding: String,
    /// The request's Content-Length header, `-` when absent.
    pub content_length: String,
    /// Bytes of the whole request as nginx read it.
    pub request_length: u64,
}

impl GitHttpServer {
    /// Starts a server that accepts the given `(user, password)` pairs.
    pub fn start(users: &[(&str, &str)]) -> GitHttpServer {
        let dir = tempfile::tempdir().expect("tempdir for nginx");
        let root = dir.path();
        for sub in ["repos", "tmp", "logs"] {
            std::fs::create_dir_all(root.join(sub)).expect("creates server dirs");
        }
        write_htpasswd(&root.join("htpasswd"), users);

        let socket = root.join("fcgiwrap.sock");
        // One fcgiwrap process (no -c): it forks only the CGI it runs and
        // reaps it, so killing it leaves no orphan workers behind. git's
        // HTTP requests are sequential, so one at a time is enough.
        let fcgiwrap = in_own_group(
            Command::new("fcgiwrap")
                .arg("-s")
                .arg(format!("unix:{}", socket.display())),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            std::fs::File::create(root.join("logs/fcgiwrap.log")).expect("fcgiwrap log"),
        ))
        .spawn()
        .expect("starts fcgiwrap (apt-get install fcgiwrap)");
        wait_until(
            Duration::from_secs(5),
            || socket.exists(),
            "fcgiwrap's socket",
        );

        let port = free_port();
        let conf = root.join("nginx.conf");
        std::fs::write(&conf, nginx_conf(root, port, &socket)).expect("writes nginx.conf");
        let nginx = in_own_group(
            Command::new(super::nginx_binary())
                .arg("-p")
                .arg(root)
                .arg("-c")
                .arg(&conf)
                .arg("-e")
                .arg(root.join("logs/error.log")),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starts nginx (apt-get install nginx-light)");
        let mut server = GitHttpServer {
            dir,
            port,
            nginx,
            fcgiwrap,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
            if let Ok(Some(status)) = server.nginx.try_wait() {
                panic!("nginx exited with {status}: {}", server.error_log());
            }
            assert!(
                Instant::now() < deadline,
                "nginx did not listen: {}",
                server.error_log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    /// `http://127.0.0.1:PORT`
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:PORT/NAME`
    pub fn url(&self, repo: &str) -> String {
        format!("{}/{}", self.base_url(), repo.trim_start_matches('/'))
    }

    pub fn repo_path(&self, name: &str) -> PathBuf {
        self.dir.path().join("repos").join(name)
    }

    /// Creates a bare repository `name` (e.g. `team/repo.git`) with one
    /// commit on `main`, open for push over HTTP.
    pub fn create_repo(&self, name: &str) -> PathBuf {
        let bare = self.repo_path(name);
        std::fs::create_dir_all(&bare).expect("repo dir");
        run_git(&bare, &["init", "-q", "--bare", "-b", "main"]);
        run_git(&bare, &["config", "http.receivepack", "true"]);
        // Seed it through a scratch clone on disk (no HTTP, no credentials).
        let seed = self
            .dir
            .path()
            .join("tmp")
            .join(format!("seed-{}", name.replace('/', "_")));
        run_git(
            self.dir.path(),
            &["init", "-q", "-b", "main", &seed.to_string_lossy()],
        );
        std::fs::write(seed.join("README"), format!("{name}\n")).expect("seed file");
        run_git(&seed, &["add", "README"]);
        run_git(
            &seed,
            &[
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@e",
                "commit",
                "-q",
                "-m",
                "seed",
            ],
        );
        run_git(&seed, &["push", "-q", &bare.to_string_lossy(), "main"]);
        let _ = std::fs::remove_dir_all(&seed);
        bare
    }

    pub fn access_log(&self) -> Vec<LogLine> {
        let text =
            std::fs::read_to_string(self.dir.path().join("logs/access.log")).unwrap_or_default();
        text.lines().filter_map(parse_log_line).collect()
    }

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("logs/error.log")).unwrap_or_default()
    }
}

impl Drop for GitHttpServer {
    fn drop(&mut self) {
        for child in [&mut self.nginx, &mut self.fcgiwrap] {
            // The child leads its own group: end it and whatever it forked.
            let _ = Command::new("kill")
                .arg("-KILL")
                .arg("--")
                .arg(format!("-{}", child.id()))
                .stderr(Stdio::null())
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn in_own_group(command: &mut Command) -> &mut Command {
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        command.process_group(0);
    }
    command
}

fn git_exec_path() -> PathBuf {
    let out = Command::new("git")
        .arg("--exec-path")
        .output()
        .expect("runs git");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

fn run_git(cwd: &Path, args: &[&str]) {
    let out = Command::new("git")
        .args(args)
        .current_dir(cwd)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .expect("runs git");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `user:$apr1$…` lines (see [`super::apr1`]).
fn write_htpasswd(path: &Path, users: &[(&str, &str)]) {
    let mut lines = String::new();
    for (user, password) in users {
        lines.push_str(&format!("{user}:{}\n", super::apr1(password)));
    }
    std::fs::write(path, lines).expect("writes htpasswd");
}

fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("binds a free port");
    listener.local_addr().expect("local addr").port()
}

fn wait_until(limit: Duration, mut ready: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + limit;
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn nginx_conf(dir: &Path, port: u16, socket: &Path) -> String {
    let root = dir.display();
    let backend = git_exec_path().join("git-http-backend");
    let backend = backend.display();
    let socket = socket.display();
    let servers = format!(
        r#"    server {{
        listen 127.0.0.1:{port};
        server_name localhost;
        location / {{
            auth_basic "git";
            auth_basic_user_file {root}/htpasswd;
            fastcgi_pass unix:{socket};
            fastcgi_read_timeout 300s;
            fastcgi_param SCRIPT_FILENAME {backend};
            fastcgi_param GIT_PROJECT_ROOT {root}/repos;
            fastcgi_param GIT_HTTP_EXPORT_ALL 1;
            fastcgi_param GIT_CONFIG_NOSYSTEM 1;
            fastcgi_param PATH /usr/local/bin:/usr/bin:/bin;
            fastcgi_param REMOTE_USER $remote_user;
            fastcgi_param REMOTE_ADDR $remote_addr;
            fastcgi_param PATH_INFO $uri;
            fastcgi_param QUERY_STRING $query_string;
            fastcgi_param REQUEST_METHOD $request_method;
            fastcgi_param CONTENT_TYPE $content_type;
            fastcgi_param CONTENT_LENGTH $content_length;
            fastcgi_param HTTP_CONTENT_ENCODING $http_content_encoding;
            fastcgi_param GIT_PROTOCOL $http_git_protocol;
            fastcgi_param SERVER_PROTOCOL $server_protocol;
            fastcgi_param GATEWAY_INTERFACE CGI/1.1;
        }}
    }}
"#
    );
    super::nginx_conf(
        dir,
        r#"$remote_user "$request_method $request_uri" $status te=$http_transfer_encoding cl=$http_content_length len=$request_length"#,
        &servers,
    )
}

fn parse_log_line(line: &str) -> Option<LogLine> {
    let (user, rest) = line.split_once(" \"")?;
    let (request, rest) = rest.split_once("\" ")?;
    let (method, uri) = request.split_once(' ')?;
    let mut fields = rest.split(' ');
    let status = fields.next()?.parse().ok()?;
    let mut log = LogLine {
        user: user.to_owned(),
        method: method.to_owned(),
        uri: uri.to_owned(),
        status,
        transfer_encoding: "-".to_owned(),
        content_length: "-".to_owned(),
        request_length: 0,
    };
    for field in fields {
        match field.split_once('=') {
            Some(("te", v)) => log.transfer_encoding = v.to_owned(),
            Some(("cl", v)) => log.content_length = v.to_owned(),
            Some(("len", v)) => log.request_length = v.parse().unwrap_or(0),
            _ => {}
        }
    }
    Some(log)
}
