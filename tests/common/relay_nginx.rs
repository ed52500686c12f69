//! nginx servers for the relay's tests and benchmark: a throwaway nginx on
//! 127.0.0.1 (plain or TLS) whose `server` block body the test writes, an
//! access log the test reads to see what reached the upstream, and a test
//! CA made with the openssl CLI.
//!
//! nginx runs in the foreground as a single process (`master_process off`)
//! in its own process group, and is killed by that group when the server
//! is dropped or [`Nginx::kill`]ed.

#![allow(dead_code)]

use std::net::{Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A server certificate and its key, signed by a test CA.
pub struct Tls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub struct Nginx {
    dir: tempfile::TempDir,
    pub port: u16,
    child: Option<Child>,
}

impl Nginx {
    /// Starts nginx with `locations` as the body of its only `server` block.
    /// `{root}` in `locations` is replaced with the server's directory,
    /// which has a writable `data/` subdirectory.
    pub fn start(locations: &str, tls: Option<&Tls>) -> Nginx {
        let dir = tempfile::tempdir().expect("tempdir for nginx");
        for sub in ["data", "tmp", "logs"] {
            std::fs::create_dir_all(dir.path().join(sub)).expect("nginx dirs");
        }
        let port = crate::common::free_port();
        let conf = config(dir.path(), port, locations, tls);
        std::fs::write(dir.path().join("nginx.conf"), conf).expect("nginx.conf");
        let mut nginx = Nginx {
            dir,
            port,
            child: None,
        };
        nginx.launch();
        nginx
    }

    fn launch(&mut self) {
        let root = self.dir.path();
        let mut command = Command::new(crate::common::nginx_binary());
        command
            .arg("-p")
            .arg(root)
            .arg("-c")
            .arg(root.join("nginx.conf"))
            .arg("-e")
            .arg(root.join("logs/error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        {
            use std::os::unix::process::CommandExt;
            command.process_group(0);
        }
        let mut child = command
            .spawn()
            .expect("starts nginx (apt-get install nginx)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("nginx exited with {status}: {}", self.error_log());
            }
            assert!(
                Instant::now() < deadline,
                "nginx did not listen: {}",
                self.error_log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child = Some(child);
    }

    /// Kills nginx at once (SIGKILL to its process group).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .stderr(Stdio::null())
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts nginx again on the same port with the same configuration.
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// `SCHEME://127.0.0.1:PORT`
    pub fn base_url(&self, https: bool) -> String {
        format!(
            "{}://127.0.0.1:{}",
            if https { "https" } else { "http" },
            self.port
        )
    }

    /// Lines of the access log: `METHOD URI STATUS te=… cl=… len=…`.
    pub fn access_log(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("logs/access.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("logs/error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.kill();
    }
}

fn config(root: &Path, port: u16, locations: &str, tls: Option<&Tls>) -> String {
    let root_text = root.display().to_string();
    let locations = locations.replace("{root}", &root_text);
    let (listen, tls_lines) = match tls {
        Some(tls) => (
            format!("127.0.0.1:{port} ssl"),
            format!(
                "ssl_certificate {};\n        ssl_certificate_key {};",
                tls.cert.display(),
                tls.key.display()
            ),
        ),
        None => (format!("127.0.0.1:{port}"), String::new()),
    };
    let servers = format!(
        r#"    server {{
        listen {listen};
        server_name localhost;
        {tls_lines}
        {locations}
    }}
"#
    );
    crate::common::nginx_conf(
        root,
        "$request_method $request_uri $status te=$http_transfer_encoding cl=$http_content_length len=$request_length",
        &servers,
    )
}

/// Makes a CA and a server certificate for 127.0.0.1 and localhost in `dir`.
pub fn make_tls(dir: &Path) -> Tls {
    let path = |name: &str| dir.join(name);
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("runs openssl");
        assert!(
            out.status.success(),
            "openssl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=tokenward test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    std::fs::write(
        path("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .expect("ext.cnf");
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
        "-out",
        "server.pem",
    ]);
    Tls {
        ca: path("ca.pem"),
        cert: path("server.pem"),
        key: path("server.key"),
    }
}

/// Standard base64 (for expected Basic credentials in nginx configs).
pub fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(chunk.get(1).copied().unwrap_or(0)) << 8)
            | u32::from(chunk.get(2).copied().unwrap_or(0));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}
