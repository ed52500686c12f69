//! The relay: an authenticating, streaming reverse proxy on loopback.
//!
//! A client (git, hg, curl, a script) speaks plain HTTP to the relay on
//! 127.0.0.1 or ::1; the relay forwards each request to one upstream over
//! HTTP or HTTPS (rustls, ring provider) and adds the credential that fits
//! the endpoint:
//!
//! | endpoint | role |
//! |---|---|
//! | `…/info/refs?service=git-*`, `…/git-upload-pack`, `…/git-receive-pack`, hg `?cmd=` | `vcs` |
//! | `…/_admin/api` (RhodeCode's API) | `api` |
//! | `…/feed/…`, `…/feed-rss`, `…/feed-atom` | `feed` |
//! | anything else | `web` |
//!
//! A token of role `all` fits every endpoint. The token's `auth` says how it
//! goes: Basic (username and token), Bearer, or `auth_token=` in the query.
//! Credentials go on the first request; a 401 to a request that carried one
//! is reported to the [`CredentialSource`], which marks the token rejected.
//!
//! Bodies stream both ways, chunked or with a length, frame by frame with
//! hyper's backpressure, so memory stays flat whatever their size. Nothing
//! is retried, except one case: when the upstream answers 411 Length
//! Required to a chunked upload, the relay resends it with a
//! Content-Length. To have the whole body for that, it remembers what it
//! sent until the upstream's answer starts (at most
//! [`body::REPLAY_LIMIT`]; servers that refuse chunked bodies answer right
//! after the head), spools that prefix and the rest of the client's body to
//! an unlinked 0600 temp file (at most `spool_limit` bytes), and sends the
//! file. Teeing every chunked upload to disk just in case would double the
//! I/O of every push for a rare server quirk.
//!
//! Guards, in order: the connection must come from the relay's own uid
//! (Linux: looked up in /proc/net/tcp and tcp6, refused when unknown); the
//! request must not carry both Content-Length and Transfer-Encoding, nor an
//! Origin header; its Host must name the relay's own address; its head must
//! fit in [`MAX_HEAD`] bytes and [`MAX_HEADERS`] headers. Hop-by-hop headers
//! and the client's Authorization are dropped. Redirects are passed back
//! to the client, never followed. When the upstream fails the client gets a
//! 502 with a one-line reason, or, once the response has started, a broken
//! response it cannot take for a whole one.

mod body;
#[doc(hidden)]
pub mod fuzzing;
mod headscan;
mod peer;
mod proxy;
mod source;
mod spool;
mod tls;

pub use body::REPLAY_LIMIT;
pub use proxy::role_for;
pub use source::{BoxFuture, CredentialSource, EnvSource, SocketSource, SourceError};

use anyhow::{bail, Context};
use headscan::{HeadFlags, HeadScan};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use crate::token::{Scheme, Scope};

/// The longest request head accepted (hyper answers 431 beyond it).
pub const MAX_HEAD: usize = 64 * 1024;

/// The most header lines a request may have.
pub const MAX_HEADERS: usize = 100;

/// hyper's read buffer for a client connection. Bodies arrive in frames of
/// up to this size: larger frames mean fewer reads, wakeups and chunk
/// headers per byte relayed, at a fixed cost per connection. The head is
/// bounded separately ([`MAX_HEAD`]).
const CLIENT_BUF: usize = 512 * 1024;

/// How long a client may take to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);

/// The default bound on a body spooled after a 411.
pub const DEFAULT_SPOOL_LIMIT: u64 = 2 * 1024 * 1024 * 1024;

/// Where the relay forwards to: `scheme://host[:port][/base/path]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub scheme: Scheme,
    /// Lower case; IPv6 literals without brackets.
    pub host: String,
    pub port: u16,
    /// Empty, or `/a/b` without a trailing slash; prefixed to every path.
    pub base_path: String,
}

impl Upstream {
    /// Parses an upstream URL with the same rules as a token's scope.
    pub fn parse(url: &str) -> anyhow::Result<Upstream> {
        let scope = Scope::parse(url).map_err(|e| anyhow::anyhow!("upstream: {e}"))?;
        let base_path = scope.path.iter().map(|c| format!("/{c}")).collect();
        Ok(Upstream {
            scheme: scope.scheme,
            host: scope.host,
            port: scope.port,
            base_path,
        })
    }

    fn bracketed_host(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        }
    }

    /// `host[:port]`, the port only when it is not the scheme's default
    /// (what goes in the Host header).
    pub fn authority(&self) -> String {
        if self.port == self.scheme.default_port() {
            self.bracketed_host()
        } else {
            format!("{}:{}", self.bracketed_host(), self.port)
        }
    }

    /// `host:port` always, as credential queries carry it.
    pub fn host_port(&self) -> String {
        format!("{}:{}", self.bracketed_host(), self.port)
    }
}

impl std::fmt::Display for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}://{}{}",
            self.scheme.as_str(),
            self.authority(),
            self.base_path
        )
    }
}

/// One relay's settings.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    pub upstream: Upstream,
    /// Must be a loopback address; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Trust only this PEM file's certificates instead of the system roots.
    pub ca_file: Option<PathBuf>,
    /// The largest chunked body spooled to resend after a 411.
    pub spool_limit: u64,
}

impl RelayConfig {
    pub fn new(upstream: Upstream, listen: SocketAddr) -> RelayConfig {
        RelayConfig {
            upstream,
            listen,
            ca_file: None,
            spool_limit: DEFAULT_SPOOL_LIMIT,
        }
    }
}

/// What a relay has served; the daemon's `status` shows it.
#[derive(Debug, Default)]
pub struct RelayStats {
    /// Requests that passed the guards and were forwarded.
    pub requests: AtomicU64,
    /// Request body bytes sent to the upstream.
    pub bytes_up: AtomicU64,
    /// Response body bytes sent back to clients.
    pub bytes_down: AtomicU64,
}

impl RelayStats {
    /// `(requests, bytes_up, bytes_down)`.
    pub fn snapshot(&self) -> (u64, u64, u64) {
        (
            self.requests.load(Ordering::Relaxed),
            self.bytes_up.load(Ordering::Relaxed),
            self.bytes_down.load(Ordering::Relaxed),
        )
    }
}

/// A relay bound to its address, not yet serving.
pub struct Relay {
    listener: TcpListener,
    local: SocketAddr,
    config: RelayConfig,
    tls: Option<tokio_rustls::TlsConnector>,
}

impl Relay {
    /// Checks the configuration, prepares TLS and binds the listen address,
    /// so that every setup error shows before anything is served.
    pub async fn bind(config: RelayConfig) -> anyhow::Result<Relay> {
        if !config.listen.ip().is_loopback() {
            bail!(
                "the relay listens on loopback only (127.0.0.1 or ::1), not {}",
                config.listen.ip()
            );
        }
        let tls = match config.upstream.scheme {
            Scheme::Https => Some(tls::connector(config.ca_file.as_deref())?),
            Scheme::Http => {
                if config.ca_file.is_some() {
                    bail!("--ca-file needs an https upstream");
                }
                None
            }
        };
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let local = listener
            .local_addr()
            .context("cannot read the listen address")?;
        Ok(Relay {
            listener,
            local,
            config,
            tls,
        })
    }

    /// The address the relay listens on (with the port chosen for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Serves until `shutdown` completes; connections still open then are
    /// cut (a client sees a broken response, never a truncated success).
    pub async fn run(
        self,
        source: Arc<dyn CredentialSource>,
        stats: Arc<RelayStats>,
        shutdown: impl Future<Output = ()>,
    ) -> anyhow::Result<()> {
        let proxy = Arc::new(proxy::Proxy {
            hosts: host_names(self.local),
            upstream: self.config.upstream,
            tls: self.tls,
            spool_limit: self.config.spool_limit,
            source,
            stats,
        });
        let local = self.local;
        let mut connections = tokio::task::JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        connections.spawn(connection(stream, local, peer, proxy.clone()));
                    }
                    Err(e) => {
                        // Out of file descriptors and the like: pause
                        // rather than spin, then keep serving.
                        tracing::warn!("relay on {local}: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
            }
        }
        connections.shutdown().await;
        Ok(())
    }
}

/// Binds and serves until `shutdown` completes.
pub async fn serve(
    config: RelayConfig,
    source: Arc<dyn CredentialSource>,
    stats: Arc<RelayStats>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    Relay::bind(config)
        .await?
        .run(source, stats, shutdown)
        .await
}

/// `tokenward relay serve UPSTREAM --listen ADDR [--ca-file PEM]`: serves in
/// the foreground until Ctrl-C or SIGTERM, with the token in
/// TOKENWARD_TOKEN (CI mode) when it is set, else through the daemon.
pub async fn run_serve(upstream: &str, listen: &str, ca_file: Option<&Path>) -> anyhow::Result<()> {
    let upstream = Upstream::parse(upstream)?;
    let listen: SocketAddr = listen.parse().with_context(|| {
        format!("--listen wants ADDRESS:PORT such as 127.0.0.1:8765, not '{listen}'")
    })?;
    let source: Arc<dyn CredentialSource> = match EnvSource::from_env()? {
        Some(env) => Arc::new(env),
        None => {
            let autostart = if std::env::var_os("TOKENWARD_NO_AUTOSTART").is_some_and(|v| v == "1")
            {
                None
            } else {
                std::env::current_exe().ok()
            };
            Arc::new(SocketSource::new(crate::paths::socket_path(), autostart))
        }
    };
    let mut config = RelayConfig::new(upstream, listen);
    config.ca_file = ca_file.map(Path::to_owned);
    let relay = Relay::bind(config.clone()).await?;
    // The one line a script waits for; the port is the real one for :0.
    eprintln!(
        "tokenward relay: http://{} -> {}",
        relay.local_addr(),
        config.upstream
    );
    relay
        .run(source, Arc::new(RelayStats::default()), stop_signal())
        .await
}

/// Completes on Ctrl-C or (Unix) SIGTERM.
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// The Host header values that name the relay itself.
fn host_names(local: SocketAddr) -> Vec<String> {
    let port = local.port();
    let ip = match local {
        SocketAddr::V4(v4) => v4.ip().to_string(),
        SocketAddr::V6(v6) => format!("[{}]", v6.ip()),
    };
    // `localhost` resolves to loopback by definition (RFC 6761), so it is
    // no rebinding vector; accepting it lets users write the natural URL.
    let mut names = vec![format!("{ip}:{port}"), format!("localhost:{port}")];
    if port == 80 {
        names.push(ip);
        names.push("localhost".to_owned());
    }
    names
}

/// Serves one client connection: one request, after the owner check.
async fn connection(
    mut stream: TcpStream,
    local: SocketAddr,
    peer: SocketAddr,
    proxy: Arc<proxy::Proxy>,
) {
    if let Err(why) = check_owner(local, peer).await {
        tracing::warn!("relay on {local}: refused connection from {peer}: {why}");
        let message = format!("tokenward relay: refused: {why}\n");
        let answer = format!(
            "HTTP/1.1 403 Forbidden\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{message}",
            message.len()
        );
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            let _ = stream.write_all(answer.as_bytes()).await;
            let _ = stream.shutdown().await;
        })
        .await;
        return;
    }
    let _ = stream.set_nodelay(true);
    let flags = Arc::new(HeadFlags::default());
    let io = TokioIo::new(HeadScan::new(stream, flags.clone(), MAX_HEAD));
    let service =
        hyper::service::service_fn(move |request| proxy.clone().handle(flags.clone(), request));
    if let Err(e) = http1_server().serve_connection(io, service).await {
        tracing::debug!("relay on {local}: connection from {peer}: {e}");
    }
}

/// hyper's settings for client connections (shared with the fuzz entry
/// point, so that the fuzzer parses exactly as the relay does).
fn http1_server() -> hyper::server::conn::http1::Builder {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        // One request per connection: the head scan (and so the
        // Content-Length + Transfer-Encoding guard) sees every head.
        .keep_alive(false)
        .max_buf_size(CLIENT_BUF)
        .max_header_size(MAX_HEAD)
        .max_headers(MAX_HEADERS)
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT);
    builder
}

/// Only the uid running the relay may use it.
#[cfg(target_os = "linux")]
async fn check_owner(local: SocketAddr, peer: SocketAddr) -> Result<(), String> {
    let me = crate::paths::current_uid();
    match peer::peer_uid(local, peer).await {
        Some(uid) if uid == me => Ok(()),
        Some(uid) => Err(format!("uid {uid} is not the relay's owner")),
        None => Err("cannot tell which user opened the connection".to_owned()),
    }
}

/// Elsewhere there is no /proc to ask; the loopback, Host and Origin
/// guards still apply.
#[cfg(not(target_os = "linux"))]
async fn check_owner(_local: SocketAddr, _peer: SocketAddr) -> Result<(), String> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_parsing() {
        let u = Upstream::parse("HTTPS://Code.Example.com/team/").expect("parses");
        assert_eq!(u.authority(), "code.example.com");
        assert_eq!(u.host_port(), "code.example.com:443");
        assert_eq!(u.base_path, "/team");
        assert_eq!(u.to_string(), "https://code.example.com/team");
        let v6 = Upstream::parse("http://[::1]:8080").expect("parses");
        assert_eq!(v6.authority(), "[::1]:8080");
        assert_eq!(v6.base_path, "");
        assert!(Upstream::parse("ftp://x").is_err());
        assert!(Upstream::parse("https://u@x").is_err());
    }

    #[test]
    fn host_names_of_the_relay() {
        assert_eq!(
            host_names("127.0.0.1:8765".parse().expect("addr")),
            ["127.0.0.1:8765", "localhost:8765"]
        );
        assert_eq!(
            host_names("[::1]:80".parse().expect("addr"))[..2],
            ["[::1]:80", "localhost:80"]
        );
    }

    #[tokio::test]
    async fn refuses_non_loopback_listen_addresses() {
        let upstream = Upstream::parse("http://127.0.0.1:9").expect("parses");
        for addr in ["0.0.0.0:0", "192.0.2.1:0", "[::]:0"] {
            let config = RelayConfig::new(upstream.clone(), addr.parse().expect("addr"));
            let error = Relay::bind(config)
                .await
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(error.contains("loopback only"), "{addr}: {error}");
        }
    }
}
