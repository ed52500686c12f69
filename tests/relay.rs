//! The relay against real servers on 127.0.0.1: nginx + git http-backend
//! with Basic auth (git clone, 64 MiB chunked push), nginx with TLS and a
//! test CA, nginx locations that each accept one token role, a location
//! that answers 411 to chunked bodies, the guards, and an upstream killed
//! mid-upload. Most run the relay in-process (`relay::Relay`) with tokens
//! given directly, as CI mode would give them; the last two run
//! `tokenward relay serve`, in CI mode and against a real daemon.

mod common;
#[path = "common/relay_nginx.rs"]
mod relay_nginx;

use relay_nginx::{base64, make_tls, Nginx};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use time::OffsetDateTime;
use tokenward::protocol::{Credential, CredentialQuery};
use tokenward::relay::{
    BoxFuture, CredentialSource, EnvSource, Relay, RelayConfig, RelayStats, SourceError, Upstream,
};
use tokenward::secret::Secret;
use tokenward::token::{AuthKind, Role, TokenMeta, TokenState};

/// An [`EnvSource`] that also records what the relay reported rejected.
struct Recorder {
    inner: EnvSource,
    rejected: Mutex<Vec<(String, String)>>,
}

impl CredentialSource for Recorder {
    fn credential<'a>(
        &'a self,
        query: &'a CredentialQuery,
        role: Role,
    ) -> BoxFuture<'a, Result<Option<Credential>, SourceError>> {
        self.inner.credential(query, role)
    }

    fn rejected<'a>(
        &'a self,
        _query: &'a CredentialQuery,
        credential: &'a Credential,
        reason: &'a str,
    ) -> BoxFuture<'a, ()> {
        self.rejected
            .lock()
            .expect("lock")
            .push((credential.id.clone(), reason.to_owned()));
        Box::pin(async {})
    }
}

fn token(
    id: &str,
    url: &str,
    user: Option<&str>,
    role: Role,
    auth: AuthKind,
    secret: &str,
) -> (TokenMeta, Secret) {
    (
        TokenMeta {
            id: id.to_owned(),
            url: url.to_owned(),
            username: user.map(str::to_owned),
            role,
            expires: None,
            label: String::new(),
            auth,
            state: TokenState::Active,
            rejected_at: None,
            rejected_reason: None,
            created: OffsetDateTime::UNIX_EPOCH,
            last_used: None,
        },
        Secret::from(secret),
    )
}

/// A relay running on its own runtime, stopped when dropped.
struct RunningRelay {
    runtime: tokio::runtime::Runtime,
    addr: SocketAddr,
    stats: Arc<RelayStats>,
    source: Arc<Recorder>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl RunningRelay {
    fn start(
        upstream: &str,
        ca_file: Option<&Path>,
        tokens: Vec<(TokenMeta, Secret)>,
    ) -> RunningRelay {
        Self::try_start(upstream, ca_file, tokens, |_| {}).expect("relay starts")
    }

    fn try_start(
        upstream: &str,
        ca_file: Option<&Path>,
        tokens: Vec<(TokenMeta, Secret)>,
        adjust: impl FnOnce(&mut RelayConfig),
    ) -> anyhow::Result<RunningRelay> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let mut config = RelayConfig::new(
            Upstream::parse(upstream)?,
            "127.0.0.1:0".parse().expect("addr"),
        );
        config.ca_file = ca_file.map(Path::to_owned);
        adjust(&mut config);
        let relay = runtime.block_on(Relay::bind(config))?;
        let addr = relay.local_addr();
        let stats = Arc::new(RelayStats::default());
        let source = Arc::new(Recorder {
            inner: EnvSource::new(tokens),
            rejected: Mutex::new(Vec::new()),
        });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let dyn_source: Arc<dyn CredentialSource> = source.clone();
        runtime.spawn(relay.run(dyn_source, stats.clone(), async {
            let _ = stopped.await;
        }));
        Ok(RunningRelay {
            runtime,
            addr,
            stats,
            source,
            stop: Some(stop),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    fn rejected(&self) -> Vec<(String, String)> {
        self.source.rejected.lock().expect("lock").clone()
    }
}

impl Drop for RunningRelay {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // Give the accept loop a moment to see the signal before the
        // runtime (and every task on it) goes.
        self.runtime
            .block_on(async { tokio::time::sleep(Duration::from_millis(20)).await });
    }
}

/// Runs curl and returns (HTTP status, body). Status 0: no HTTP answer.
fn curl(args: &[&str]) -> (u16, String) {
    let out = curl_output(Command::new("curl"), args);
    parse_curl(&out)
}

fn curl_output(mut command: Command, args: &[&str]) -> Output {
    command
        .args(["-sS", "--max-time", "60", "-o", "-", "-w", "\n%{http_code}"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("runs curl")
}

fn parse_curl(out: &Output) -> (u16, String) {
    let text = String::from_utf8_lossy(&out.stdout);
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    (status.trim().parse().unwrap_or(0), body.to_owned())
}

/// Writes `bytes` on a raw connection and returns what comes back.
fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).expect("connects");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let _ = stream.write_all(bytes);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

fn random_file(path: &Path, len: u64) {
    let mut source = std::fs::File::open("/dev/urandom")
        .expect("urandom")
        .take(len);
    let mut file = std::fs::File::create(path).expect("creates file");
    std::io::copy(&mut source, &mut file).expect("writes random file");
}

fn git(cwd: &Path, home: &Path, args: &[&str]) -> Output {
    Command::new("git")
        .args(args)
        .current_dir(cwd)
        .env("HOME", home)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env_remove("GIT_ASKPASS")
        .env_remove("SSH_ASKPASS")
        .stdin(Stdio::null())
        .output()
        .expect("runs git")
}

fn ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn git_clone_and_64_mib_chunked_push_through_the_relay() {
    let server = common::nginx::GitHttpServer::start(&[("alice", "vcs-s3cret")]);
    let bare = server.create_repo("team/repo.git");
    let relay = RunningRelay::start(
        &server.base_url(),
        None,
        vec![token(
            "tw_vcs",
            &server.base_url(),
            Some("alice"),
            Role::Vcs,
            AuthKind::Basic,
            "vcs-s3cret",
        )],
    );
    let work = tempfile::tempdir().expect("tempdir");
    let home = work.path().join("home");
    std::fs::create_dir_all(&home).expect("home");
    // No credential helper at all: an empty value resets the list.
    let clone = git(
        work.path(),
        &home,
        &[
            "-c",
            "credential.helper=",
            "clone",
            "-q",
            &relay.url("/team/repo.git"),
            "clone",
        ],
    );
    ok(&clone, "git clone through the relay");
    let checkout = work.path().join("clone");
    assert!(checkout.join("README").exists());

    random_file(&checkout.join("big.bin"), 64 * 1024 * 1024);
    ok(&git(&checkout, &home, &["add", "big.bin"]), "git add");
    ok(
        &git(
            &checkout,
            &home,
            &[
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@e",
                "commit",
                "-q",
                "-m",
                "big",
            ],
        ),
        "git commit",
    );
    let push = git(
        &checkout,
        &home,
        &[
            "-c",
            "credential.helper=",
            "-c",
            "http.postBuffer=65536",
            "push",
            "-q",
            "origin",
            "main",
        ],
    );
    ok(&push, "64 MiB chunked push through the relay");

    let local = git(&checkout, &home, &["rev-parse", "HEAD"]);
    let remote = git(&bare, &home, &["rev-parse", "main"]);
    assert_eq!(
        String::from_utf8_lossy(&local.stdout),
        String::from_utf8_lossy(&remote.stdout)
    );

    let log = server.access_log();
    // git may probe with a tiny request first; the pack is the big one.
    let push_line = log
        .iter()
        .filter(|l| l.method == "POST" && l.uri.ends_with("/git-receive-pack"))
        .max_by_key(|l| l.request_length)
        .unwrap_or_else(|| panic!("no receive-pack in {log:?}"));
    assert_eq!(push_line.status, 200);
    assert_eq!(push_line.user, "alice");
    assert_eq!(
        push_line.transfer_encoding, "chunked",
        "the push went upstream chunked"
    );
    assert!(push_line.request_length > 64 * 1024 * 1024);
    assert!(
        log.iter().all(|l| l.status != 401),
        "credentials on the first request: {log:?}"
    );
    let (requests, up, down) = relay.stats.snapshot();
    assert!(
        requests >= 4 && up > 64 * 1024 * 1024 && down > 0,
        "{requests} {up} {down}"
    );
    assert!(relay.rejected().is_empty());
}

#[test]
fn https_upstream_is_trusted_through_ca_file_only() {
    let certs = tempfile::tempdir().expect("tempdir");
    let tls = make_tls(certs.path());
    let server = Nginx::start(
        r#"location / {
            if ($http_authorization != "Bearer tls-s3cret") { return 401 "no\n"; }
            return 200 "tls ok\n";
        }"#,
        Some(&tls),
    );
    let upstream = server.base_url(true);
    let tokens = || {
        vec![token(
            "tw_tls",
            &upstream,
            None,
            Role::All,
            AuthKind::Bearer,
            "tls-s3cret",
        )]
    };

    let trusting = RunningRelay::start(&upstream, Some(&tls.ca), tokens());
    assert_eq!(curl(&[&trusting.url("/x")]), (200, "tls ok\n".to_owned()));

    let system_roots = RunningRelay::try_start(&upstream, None, tokens(), |_| {});
    match system_roots {
        // A machine without any system roots refuses to start: also a refusal.
        Err(e) => assert!(e.to_string().contains("root certificates"), "{e}"),
        Ok(relay) => {
            let (status, body) = curl(&[&relay.url("/x")]);
            assert_eq!(status, 502, "{body}");
            assert!(
                body.contains("certificate") || body.contains("UnknownIssuer"),
                "{body}"
            );
            assert_eq!(body.lines().count(), 1, "one-line reason: {body}");
        }
    }
    // Only the trusting relay's request reached the application.
    assert_eq!(server.access_log().len(), 1, "{:?}", server.access_log());

    // A CA file that is not PEM is a setup error, not a silent fallback.
    let bogus = certs.path().join("bogus.pem");
    std::fs::write(&bogus, "not a certificate\n").expect("bogus");
    assert!(RunningRelay::try_start(&upstream, Some(&bogus), tokens(), |_| {}).is_err());
    // --ca-file with a plain http upstream makes no sense.
    assert!(
        RunningRelay::try_start("http://127.0.0.1:9", Some(&tls.ca), tokens(), |_| {}).is_err()
    );
}

#[test]
fn each_endpoint_gets_the_token_of_its_role() {
    let basic = |user: &str, secret: &str| {
        format!("Basic {}", base64(format!("{user}:{secret}").as_bytes()))
    };
    let locations = format!(
        r#"
        location /repo/feed/ {{
            if ($http_authorization != "{feed}") {{ return 401 "feed refused\n"; }}
            return 200 "feed ok\n";
        }}
        location /repo.git/ {{
            if ($http_authorization != "{vcs}") {{ return 401 "vcs refused\n"; }}
            return 200 "vcs ok\n";
        }}
        location /_admin/api {{
            if ($http_authorization != "Bearer api-s3cret") {{ return 401 "api refused\n"; }}
            return 200 "api ok\n";
        }}
        location /web/ {{
            if ($http_authorization) {{ return 400 "web got a header\n"; }}
            if ($arg_auth_token != "web-s3cret%2F%2B%3D") {{ return 401 "web refused\n"; }}
            return 200 "web ok $arg_x\n";
        }}
        location /stale/ {{ return 401 "stale\n"; }}
        "#,
        feed = basic("alice", "feed-s3cret"),
        vcs = basic("alice", "vcs-s3cret"),
    );
    let server = Nginx::start(&locations, None);
    let up = server.base_url(false);
    let relay = RunningRelay::start(
        &up,
        None,
        vec![
            token(
                "tw_feed",
                &up,
                Some("alice"),
                Role::Feed,
                AuthKind::Basic,
                "feed-s3cret",
            ),
            token(
                "tw_vcs",
                &up,
                Some("alice"),
                Role::Vcs,
                AuthKind::Basic,
                "vcs-s3cret",
            ),
            token(
                "tw_api",
                &up,
                None,
                Role::Api,
                AuthKind::Bearer,
                "api-s3cret",
            ),
            token(
                "tw_web",
                &up,
                None,
                Role::Web,
                AuthKind::Query,
                "web-s3cret/+=",
            ),
        ],
    );
    assert_eq!(
        curl(&[&relay.url("/repo/feed/rss")]),
        (200, "feed ok\n".into())
    );
    // A client's own Authorization is dropped, not forwarded.
    assert_eq!(
        curl(&[
            "-H",
            "Authorization: Basic Zm9vOmJhcg==",
            &relay.url("/repo/feed/atom")
        ]),
        (200, "feed ok\n".into())
    );
    assert_eq!(
        curl(&[&relay.url("/repo.git/info/refs?service=git-upload-pack")]),
        (200, "vcs ok\n".into())
    );
    assert_eq!(
        curl(&[
            "-X",
            "POST",
            "--data-binary",
            "x",
            &relay.url("/repo.git/git-upload-pack")
        ]),
        (200, "vcs ok\n".into())
    );
    assert_eq!(curl(&[&relay.url("/_admin/api")]), (200, "api ok\n".into()));
    assert_eq!(
        curl(&[&relay.url("/web/archive.zip?x=1&auth_token=forged")]),
        (200, "web ok 1\n".into())
    );
    assert!(relay.rejected().is_empty(), "{:?}", relay.rejected());

    // A plain page under the repository is a web endpoint: it gets the web
    // token, which that location refuses; a 401 to a credential the relay
    // added marks that token rejected.
    assert_eq!(curl(&[&relay.url("/repo.git/README")]).0, 401);
    assert_eq!(
        relay.rejected(),
        [("tw_web".to_owned(), "401 from upstream".to_owned())]
    );
    assert_eq!(curl(&[&relay.url("/stale/page")]).0, 401);
    assert_eq!(relay.rejected().len(), 2);
    assert!(server.access_log().iter().all(|l| !l.contains("forged")));
}

#[test]
fn chunked_upload_answered_411_is_resent_with_a_length() {
    let server = Nginx::start(
        r#"location /strict/ {
            if ($http_transfer_encoding ~* chunked) { return 411; }
            root {root}/data;
            dav_methods PUT;
            create_full_put_path on;
        }"#,
        None,
    );
    let relay = RunningRelay::start(&server.base_url(false), None, Vec::new());
    let work = tempfile::tempdir().expect("tempdir");
    for (name, len) in [("small.bin", 1000_u64), ("large.bin", 5 * 1024 * 1024 + 7)] {
        let file = work.path().join(name);
        random_file(&file, len);
        let file_arg = file.to_string_lossy().into_owned();
        // Straight to nginx, chunked is refused...
        let direct = curl(&[
            "-T",
            &file_arg,
            "-H",
            "Transfer-Encoding: chunked",
            &format!("{}/strict/direct-{name}", server.base_url(false)),
        ]);
        assert_eq!(direct.0, 411);
        // ...and through the relay the same upload succeeds.
        let (status, body) = curl(&[
            "-T",
            &file_arg,
            "-H",
            "Transfer-Encoding: chunked",
            &relay.url(&format!("/strict/{name}")),
        ]);
        assert_eq!(status, 201, "{body}");
        let stored =
            std::fs::read(server.root().join("data/strict").join(name)).expect("stored file");
        assert_eq!(
            stored,
            std::fs::read(&file).expect("original"),
            "{name} arrived whole"
        );
        // nginx writes its log line after the response went out.
        let resent = format!(" 201 te=- cl={len} ");
        common::wait_until(std::time::Duration::from_secs(5), || {
            server
                .access_log()
                .last()
                .is_some_and(|l| l.contains(&resent))
        });
        let log = server.access_log();
        let tail: Vec<&String> = log.iter().rev().take(2).collect();
        assert!(tail[1].contains(" 411 te=chunked"), "{log:?}");
        assert!(tail[0].contains(&resent), "{log:?}");
    }
    // The spool file is gone (it is unlinked as soon as it is created).
    let leftovers: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .expect("temp dir")
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!("tokenward-spool-{}-", std::process::id()))
        })
        .collect();
    assert!(leftovers.is_empty());

    // Over the spool limit: a clear 413, nothing half-sent.
    let limited = RunningRelay::try_start(&server.base_url(false), None, Vec::new(), |c| {
        c.spool_limit = 4096
    })
    .expect("relay starts");
    let file = work.path().join("small.bin");
    let (status, body) = curl(&[
        "-T",
        &file.to_string_lossy(),
        "-H",
        "Transfer-Encoding: chunked",
        &limited.url("/strict/again.bin"),
    ]);
    assert_eq!(
        (status, body.contains("spool")),
        (201, false),
        "1000 bytes fit in 4096: {body}"
    );
    random_file(&file, 10_000);
    let (status, body) = curl(&[
        "-T",
        &file.to_string_lossy(),
        "-H",
        "Transfer-Encoding: chunked",
        &limited.url("/strict/toolarge.bin"),
    ]);
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("spool limit"), "{body}");
}

#[test]
fn guards_refuse_and_nothing_reaches_the_upstream() {
    let server = Nginx::start(r#"location / { return 200 "reached\n"; }"#, None);
    let relay = RunningRelay::start(&server.base_url(false), None, Vec::new());
    let host = relay.addr.to_string();

    let (status, body) = curl(&["-H", "Origin: http://evil.example", &relay.url("/")]);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("Origin"), "{body}");

    let (status, body) = curl(&[
        "-H",
        &format!("Host: evil.example:{}", relay.addr.port()),
        &relay.url("/"),
    ]);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("Host"), "{body}");

    let answer = raw(
        relay.addr,
        format!("POST / HTTP/1.1\r\nHost: {host}\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
            .as_bytes(),
    );
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    let answer = raw(
        relay.addr,
        format!("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nHost: {host}\r\ncontent-length: 5\r\n\r\n0\r\n\r\n")
            .as_bytes(),
    );
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");

    // Too many header lines, then one header too large.
    let many: String = (0..150).map(|i| format!("X-H{i}: v\r\n")).collect();
    let answer = raw(
        relay.addr,
        format!("GET / HTTP/1.1\r\nHost: {host}\r\n{many}\r\n").as_bytes(),
    );
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    let big = "a".repeat(70 * 1024);
    let answer = raw(
        relay.addr,
        format!("GET / HTTP/1.1\r\nHost: {host}\r\nX-Big: {big}\r\n\r\n").as_bytes(),
    );
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
        "{answer}"
    );

    // Proxy-style absolute targets and dot segments.
    let answer = raw(
        relay.addr,
        format!(
            "GET http://127.0.0.1:{}/ HTTP/1.1\r\nHost: {host}\r\n\r\n",
            server.port
        )
        .as_bytes(),
    );
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    let answer = raw(
        relay.addr,
        format!("GET /a/%2e%2E/b HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes(),
    );
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");

    // Another user on the same machine.
    let mut other = Command::new("setpriv");
    other.args(["--reuid=65534", "--regid=65534", "--clear-groups", "curl"]);
    let out = curl_output(other, &[&relay.url("/")]);
    let (status, body) = parse_curl(&out);
    assert_ne!(
        status,
        200,
        "{body} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(status == 403 || status == 0, "{status} {body}");

    assert!(
        server.access_log().is_empty(),
        "reached upstream: {:?}",
        server.access_log()
    );
    assert_eq!(relay.stats.snapshot().0, 0);

    // And the owner, asking properly, gets through.
    assert_eq!(curl(&[&relay.url("/")]), (200, "reached\n".into()));
    assert_eq!(curl(&["-H", "Host: localhost", &relay.url("/")]).0, 403);
    assert_eq!(server.access_log().len(), 1);
}

#[test]
fn upstream_killed_mid_upload_gives_an_error_and_the_relay_keeps_serving() {
    let mut server = Nginx::start(
        r#"location /slow/ {
            root {root}/data;
            dav_methods PUT;
            create_full_put_path on;
        }
        location / { return 200 "alive\n"; }"#,
        None,
    );
    let relay = RunningRelay::start(&server.base_url(false), None, Vec::new());
    let work = tempfile::tempdir().expect("tempdir");
    let file = work.path().join("upload.bin");
    random_file(&file, 32 * 1024 * 1024);
    for chunked in [true, false] {
        let mut args = vec!["--limit-rate", "2M", "-T"];
        let file_arg = file.to_string_lossy().into_owned();
        args.push(&file_arg);
        if chunked {
            args.extend(["-H", "Transfer-Encoding: chunked"]);
        }
        let target = relay.url("/slow/upload.bin");
        args.push(&target);
        let child = Command::new("curl")
            .args(["-sS", "--max-time", "60", "-o", "-", "-w", "\n%{http_code}"])
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("curl");
        std::thread::sleep(Duration::from_millis(1500));
        server.kill();
        let out = child.wait_with_output().expect("curl exits");
        let (status, body) = parse_curl(&out);
        assert!(
            status == 502 || status == 0,
            "chunked={chunked}: {status} {body}"
        );
        if status == 502 {
            assert!(
                body.contains("upstream") && body.lines().count() == 1,
                "{body}"
            );
        }
        server.restart();
        assert_eq!(curl(&[&relay.url("/next")]), (200, "alive\n".into()));
    }
}

/// `tokenward relay serve` as a child, stopped by pid when dropped.
struct ServeProcess {
    child: std::process::Child,
    addr: SocketAddr,
}

impl ServeProcess {
    /// Starts `relay serve UPSTREAM --listen 127.0.0.1:0` and reads the
    /// address it prints.
    fn start(mut command: Command, upstream: &str) -> ServeProcess {
        use std::io::BufRead;
        let mut child = command
            .args(["relay", "serve", upstream, "--listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawns tokenward relay serve");
        let mut stderr = std::io::BufReader::new(child.stderr.take().expect("stderr"));
        let mut line = String::new();
        let addr = loop {
            line.clear();
            let read = stderr.read_line(&mut line).expect("reads stderr");
            assert!(read > 0, "relay serve exited: {:?}", child.wait());
            if let Some(rest) = line.trim().strip_prefix("tokenward relay: http://") {
                let addr = rest.split_whitespace().next().unwrap_or_default();
                break addr.parse::<SocketAddr>().expect("relay address");
            }
        };
        // Keep draining its log so that it never blocks on a full pipe.
        std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
        ServeProcess { child, addr }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        common::stop_pid(&mut self.child);
    }
}

fn auth_locations(user: &str, secret: &str) -> String {
    format!(
        r#"location /ok/ {{
            if ($http_authorization != "Basic {}") {{ return 401 "refused\n"; }}
            return 200 "authorized\n";
        }}
        location /stale/ {{ return 401 "stale\n"; }}"#,
        base64(format!("{user}:{secret}").as_bytes())
    )
}

#[test]
fn cli_relay_serve_in_ci_mode() {
    let server = Nginx::start(&auth_locations("ci", "ci-s3cret"), None);
    let upstream = server.base_url(false);
    let mut command = Command::new(common::tokenward_bin());
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("TOKENWARD_") {
            command.env_remove(key);
        }
    }
    command
        .env("TOKENWARD_TOKEN", "ci-s3cret")
        .env("TOKENWARD_URL", &upstream)
        .env("TOKENWARD_USERNAME", "ci")
        // Nothing may be asked of a daemon in CI mode.
        .env("TOKENWARD_SOCKET", "/nonexistent/tokenward.sock")
        .env("TOKENWARD_NO_AUTOSTART", "1");
    let relay = ServeProcess::start(command, &upstream);
    assert_eq!(curl(&[&relay.url("/ok/x")]), (200, "authorized\n".into()));
    // A 401 is passed back as is (the environment cannot be marked).
    assert_eq!(curl(&[&relay.url("/stale/x")]).0, 401);
    assert_eq!(curl(&[&relay.url("/ok/y")]).0, 200);

    // Half a CI configuration is an error, not an unauthenticated relay.
    let out = Command::new(common::tokenward_bin())
        .args(["relay", "serve", &upstream, "--listen", "127.0.0.1:0"])
        .env("TOKENWARD_TOKEN", "ci-s3cret")
        .env_remove("TOKENWARD_URL")
        .stdin(Stdio::null())
        .output()
        .expect("runs tokenward");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("TOKENWARD_URL") && !stderr.contains("ci-s3cret"),
        "{stderr}"
    );
}

#[test]
fn cli_relay_serve_asks_the_daemon_and_reports_rejections() {
    let server = Nginx::start(&auth_locations("alice", "daemon-s3cret"), None);
    let upstream = server.base_url(false);
    let mut home = common::TestHome::new("file");
    home.start_daemon();
    let id = home.add_token(
        &upstream,
        Some("alice"),
        "daemon-s3cret",
        &["--role", "all"],
    );
    let mut command = home.command(common::tokenward_bin());
    command.env("TOKENWARD_NO_AUTOSTART", "1");
    let relay = ServeProcess::start(command, &upstream);
    assert_eq!(curl(&[&relay.url("/ok/x")]), (200, "authorized\n".into()));
    assert_eq!(home.token_json(&id)["state"], "active");
    assert_eq!(curl(&[&relay.url("/stale/x")]).0, 401);
    assert!(
        common::wait_until(Duration::from_secs(5), || home.token_json(&id)["state"]
            == "rejected"),
        "{}",
        home.token_json(&id)
    );
    // A rejected token is no longer sent.
    assert_eq!(curl(&[&relay.url("/ok/y")]), (401, "refused\n".into()));
    drop(relay);
    home.stop_daemon();
}
