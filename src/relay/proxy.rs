//! One request through the relay: the guards, the role of the endpoint,
//! the credential and how it is presented, forwarding with streamed bodies,
//! and the one resend the relay ever makes (a 411 to a chunked upload).

use super::body::{self, Counted, RelayBody, Replayable};
use super::headscan::HeadFlags;
use super::source::CredentialSource;
use super::{spool, RelayStats, Upstream};
use crate::protocol::{Credential, CredentialQuery};
use crate::token::{self, AuthKind, Role};
use http_body_util::BodyExt;
use hyper::body::{Body, Incoming};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;
use zeroize::Zeroizing;

/// How long connecting to the upstream (TCP, then TLS) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// hyper's buffer limit on the upstream connection, which bounds the
/// response head the relay accepts.
const UPSTREAM_BUF: usize = 256 * 1024;

/// Everything a request needs, shared by all connections of one relay.
pub(crate) struct Proxy {
    pub upstream: Upstream,
    pub tls: Option<TlsConnector>,
    /// The Host values that name this relay (lower case).
    pub hosts: Vec<String>,
    pub spool_limit: u64,
    pub source: Arc<dyn CredentialSource>,
    pub stats: Arc<RelayStats>,
}

/// A request the relay answers itself, with a one-line reason.
#[derive(Debug)]
pub(crate) struct Refusal {
    status: StatusCode,
    message: String,
}

impl Refusal {
    fn new(status: StatusCode, message: impl Into<String>) -> Refusal {
        Refusal {
            status,
            message: message.into(),
        }
    }

    pub fn response(self) -> Response<RelayBody> {
        plain(self.status, &self.message)
    }
}

/// A plain-text answer from the relay itself.
pub(crate) fn plain(status: StatusCode, message: &str) -> Response<RelayBody> {
    let one_line: String = message
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let mut response = Response::new(body::text(format!("tokenward relay: {one_line}\n")));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// The upstream request minus its body, kept to send it a second time.
#[derive(Clone)]
struct Head {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
}

impl Head {
    fn with_body(&self, body: RelayBody) -> Request<RelayBody> {
        let mut request = Request::new(body);
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri.clone();
        *request.headers_mut() = self.headers.clone();
        request
    }
}

impl Proxy {
    /// The hyper service: never fails, every problem becomes an answer.
    pub async fn handle(
        self: Arc<Self>,
        flags: Arc<HeadFlags>,
        request: Request<Incoming>,
    ) -> Result<Response<RelayBody>, Infallible> {
        let method = request.method().clone();
        // The path only: a query may carry someone's auth_token.
        let path = request.uri().path().to_owned();
        let response = match self.forward(&flags, request).await {
            Ok(response) => response,
            Err(refusal) => {
                tracing::info!(%method, path, status = refusal.status.as_u16(), "{}", refusal.message);
                refusal.response()
            }
        };
        tracing::debug!(%method, path, status = response.status().as_u16(), "relayed");
        Ok(response)
    }

    async fn forward(
        &self,
        flags: &HeadFlags,
        request: Request<Incoming>,
    ) -> Result<Response<RelayBody>, Refusal> {
        self.check(flags, &request)?;
        let (parts, incoming) = request.into_parts();
        let role = role_for(parts.uri.path(), parts.uri.query());
        let query = CredentialQuery {
            protocol: self.upstream.scheme.as_str().to_owned(),
            host: self.upstream.host_port(),
            path: Some(self.match_path(parts.uri.path())?),
            username: None,
        };
        let credential =
            self.source.credential(&query, role).await.map_err(|e| {
                Refusal::new(StatusCode::BAD_GATEWAY, format!("no credential: {e}"))
            })?;
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let head = self.head(&parts, credential.as_ref())?;

        // A body without a known length arrived chunked: it is sent on
        // chunked once the upstream says 100 Continue (so that a 411 comes
        // before any of it left the relay), and remembered only as far as
        // a 411 could still ask for it again (see body::CONTINUE_WAIT and
        // body::REPLAY_LIMIT).
        let response = if incoming.size_hint().exact().is_none() {
            let (replayable, handle) = Replayable::new(incoming, self.stats.clone());
            let mut request = head.with_body(replayable.boxed_unsync());
            request
                .headers_mut()
                .insert(header::EXPECT, HeaderValue::from_static("100-continue"));
            let gate = handle.clone();
            hyper::ext::on_informational(&mut request, move |answer| {
                gate.informational(answer.status())
            });
            let response = self.send(request).await?;
            if response.status() == StatusCode::LENGTH_REQUIRED {
                drop(response);
                let unsent = handle.take().ok_or_else(|| {
                    Refusal::new(
                        StatusCode::BAD_GATEWAY,
                        format!(
                            "the upstream answered 411 Length Required after more than {} bytes of the chunked body had been sent; it cannot be resent",
                            body::REPLAY_LIMIT
                        ),
                    )
                })?;
                self.resend(&head, unsent).await?
            } else {
                handle.answered();
                response
            }
        } else {
            let counted = Counted::new(incoming, self.stats.clone(), |s| &s.bytes_up);
            self.send(head.with_body(counted.boxed_unsync())).await?
        };

        if response.status() == StatusCode::UNAUTHORIZED {
            if let Some(credential) = &credential {
                self.source
                    .rejected(&query, credential, "401 from upstream")
                    .await;
            }
        }
        let (mut parts, incoming) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        let counted = Counted::new(incoming, self.stats.clone(), |s| &s.bytes_down);
        Ok(Response::from_parts(parts, counted.boxed_unsync()))
    }

    /// The guards that do not need the connection: framing, browser and
    /// DNS-rebinding defences, request-target form.
    fn check(&self, flags: &HeadFlags, request: &Request<Incoming>) -> Result<(), Refusal> {
        if flags.too_large() {
            return Err(Refusal::new(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                format!(
                    "refused: the request head is longer than {} bytes",
                    super::MAX_HEAD
                ),
            ));
        }
        if flags.conflicting() {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                "refused: Content-Length together with Transfer-Encoding",
            ));
        }
        if request.headers().contains_key(header::ORIGIN) {
            return Err(Refusal::new(
                StatusCode::FORBIDDEN,
                "refused: requests with an Origin header (the relay is not for browsers)",
            ));
        }
        let mut hosts = request.headers().get_all(header::HOST).iter();
        let host = match (hosts.next(), hosts.next()) {
            (Some(host), None) => host.to_str().ok().map(str::to_ascii_lowercase),
            _ => None,
        };
        if !host.is_some_and(|h| self.hosts.contains(&h)) {
            return Err(Refusal::new(
                StatusCode::FORBIDDEN,
                format!(
                    "refused: the Host header must be {}",
                    self.hosts
                        .first()
                        .map_or("the relay's address", String::as_str)
                ),
            ));
        }
        let uri = request.uri();
        if uri.scheme().is_some() || uri.authority().is_some() || !uri.path().starts_with('/') {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                "refused: the request target must be a path",
            ));
        }
        if request.method() == Method::CONNECT {
            return Err(Refusal::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "refused: CONNECT",
            ));
        }
        Ok(())
    }

    /// The upstream path as a token sees it: base path plus request path,
    /// percent-decoded (the server decodes it too) and without dot segments
    /// (which would make the server serve another path than the one the
    /// token was matched against).
    fn match_path(&self, path: &str) -> Result<String, Refusal> {
        let full = format!("{}/{}", self.upstream.base_path, percent_decode(path));
        token::path_components(&full)
            .map(|components| components.join("/"))
            .ok_or_else(|| {
                Refusal::new(StatusCode::BAD_REQUEST, "refused: '.' or '..' in the path")
            })
    }

    /// The upstream request head: the client's headers without hop-by-hop
    /// ones and without its own credentials, the upstream's Host, and the
    /// credential presented the way its token says.
    fn head(
        &self,
        parts: &hyper::http::request::Parts,
        credential: Option<&Credential>,
    ) -> Result<Head, Refusal> {
        let mut headers = parts.headers.clone();
        strip_hop_by_hop(&mut headers);
        for name in [header::HOST, header::AUTHORIZATION, header::EXPECT] {
            headers.remove(name);
        }
        // hyper answers the client's Expect: 100-continue itself when the
        // body is first read, and would not wait for the upstream's 100.
        let host = HeaderValue::from_str(&self.upstream.authority()).map_err(|_| {
            Refusal::new(
                StatusCode::BAD_GATEWAY,
                "the upstream host cannot be a Host header",
            )
        })?;
        headers.insert(header::HOST, host);

        let mut query = parts.uri.query().map(|q| Zeroizing::new(q.to_owned()));
        if let Some(credential) = credential {
            let secret = credential.password.expose();
            let value = match credential.auth {
                AuthKind::Basic => {
                    let user = credential.username.as_deref().unwrap_or_default();
                    let pair = Zeroizing::new(format!("{user}:{secret}"));
                    Some(Zeroizing::new(format!("Basic {}", base64(pair.as_bytes()))))
                }
                AuthKind::Bearer => Some(Zeroizing::new(format!("Bearer {secret}"))),
                AuthKind::Query => {
                    query = Some(with_auth_token(
                        query.as_deref().map(String::as_str),
                        secret,
                    ));
                    None
                }
            };
            if let Some(value) = value {
                let mut value = HeaderValue::from_str(&value).map_err(|_| {
                    Refusal::new(
                        StatusCode::BAD_GATEWAY,
                        format!(
                            "token {} has characters that cannot go in a header",
                            credential.id
                        ),
                    )
                })?;
                value.set_sensitive(true);
                headers.insert(header::AUTHORIZATION, value);
            }
        }
        let target = Zeroizing::new(match &query {
            Some(q) => format!(
                "{}{}?{}",
                self.upstream.base_path,
                parts.uri.path(),
                q.as_str()
            ),
            None => format!("{}{}", self.upstream.base_path, parts.uri.path()),
        });
        let uri = Uri::try_from(target.as_str()).map_err(|_| {
            Refusal::new(
                StatusCode::BAD_REQUEST,
                "refused: the request target is not a valid URI",
            )
        })?;
        Ok(Head {
            method: parts.method.clone(),
            uri,
            headers,
        })
    }

    /// Sends `head` again with the spooled body and a Content-Length.
    async fn resend(
        &self,
        head: &Head,
        unsent: body::Unsent,
    ) -> Result<Response<Incoming>, Refusal> {
        let (file, len, guard) = spool::spool(unsent, self.spool_limit)
            .await
            .map_err(|e| Refusal::new(e.status, e.message))?;
        tracing::info!(
            bytes = len,
            "upstream wants a length: resending the spooled chunked body"
        );
        let mut request = head.with_body(body::file_body(file, len, guard));
        request
            .headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        self.stats.bytes_up.fetch_add(len, Ordering::Relaxed);
        self.send(request).await
    }

    /// One exchange on a fresh upstream connection. A fresh connection per
    /// request means nothing is ever retried on a connection the upstream
    /// may have closed meanwhile (which a chunked body could not survive).
    async fn send(&self, request: Request<RelayBody>) -> Result<Response<Incoming>, Refusal> {
        let fail = |why: String| {
            Refusal::new(
                StatusCode::BAD_GATEWAY,
                format!("upstream {} failed: {why}", self.upstream),
            )
        };
        let address = (self.upstream.host.as_str(), self.upstream.port);
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address))
            .await
            .map_err(|_| fail("connecting timed out".to_owned()))?
            .map_err(|e| fail(format!("cannot connect: {e}")))?;
        // Small writes (chunk headers, the request head) must not wait for
        // Nagle's algorithm.
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            None => exchange(TokioIo::new(tcp), request).await.map_err(fail),
            Some(connector) => {
                let name = ServerName::try_from(self.upstream.host.clone())
                    .map_err(|_| fail("the host is not a valid TLS server name".to_owned()))?;
                let tls = tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name, tcp))
                    .await
                    .map_err(|_| fail("the TLS handshake timed out".to_owned()))?
                    .map_err(|e| fail(format!("TLS: {}", describe(&e))))?;
                exchange(TokioIo::new(tls), request).await.map_err(fail)
            }
        }
    }
}

async fn exchange<IO>(
    io: TokioIo<IO>,
    request: Request<RelayBody>,
) -> Result<Response<Incoming>, String>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::Builder::new()
        .max_buf_size(UPSTREAM_BUF)
        .handshake(io)
        .await
        .map_err(|e| describe(&e))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            // Also reported through the request or the response body.
            tracing::debug!("upstream connection ended: {}", describe(&e));
        }
    });
    sender.send_request(request).await.map_err(|e| describe(&e))
}

/// An error and its causes on one line.
fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text.replace(['\r', '\n'], " ")
}

/// Removes the headers that describe one connection rather than the
/// message (RFC 9110 §7.6.1), including those the Connection header names.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ] {
        headers.remove(name);
    }
}

/// Which token role an endpoint takes (see the module docs of `relay`).
pub fn role_for(path: &str, query: Option<&str>) -> Role {
    let params = || query.unwrap_or_default().split('&');
    let last = path.rsplit('/').next().unwrap_or_default();
    let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    let smart_git = (path.ends_with("/info/refs")
        && params().any(|p| p.starts_with("service=git-")))
        || last == "git-upload-pack"
        || last == "git-receive-pack";
    let hg = params().any(|p| p == "cmd" || p.starts_with("cmd="));
    if smart_git || hg {
        Role::Vcs
    } else if components.windows(2).any(|w| w == ["_admin", "api"]) {
        Role::Api
    } else if path.contains("/feed/") || last == "feed-rss" || last == "feed-atom" {
        // RhodeCode's feed routes are /REPO/feed-rss and /REPO/feed-atom
        // (formerly /REPO/feed/rss and /REPO/feed/atom).
        Role::Feed
    } else {
        Role::Web
    }
}

/// `query` without any `auth_token` the client sent, plus the token's.
fn with_auth_token(query: Option<&str>, secret: &str) -> Zeroizing<String> {
    let mut out = Zeroizing::new(String::new());
    for param in query.unwrap_or_default().split('&') {
        if param.is_empty() || param == "auth_token" || param.starts_with("auth_token=") {
            continue;
        }
        out.push_str(param);
        out.push('&');
    }
    out.push_str("auth_token=");
    for byte in secret.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Decodes `%XX` escapes; a path that does not decode to UTF-8 is used as is.
fn percent_decode(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|_| path.to_owned())
}

/// Standard base64 with padding (RFC 4648), for Basic credentials.
fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_by_endpoint() {
        assert_eq!(
            role_for("/team/repo.git/info/refs", Some("service=git-upload-pack")),
            Role::Vcs
        );
        assert_eq!(role_for("/team/repo.git/info/refs", None), Role::Web);
        assert_eq!(role_for("/team/repo.git/git-receive-pack", None), Role::Vcs);
        assert_eq!(role_for("/team/repo.git/git-upload-pack", None), Role::Vcs);
        assert_eq!(role_for("/hgrepo", Some("cmd=capabilities")), Role::Vcs);
        assert_eq!(role_for("/hgrepo", Some("x=1&cmd=getbundle")), Role::Vcs);
        assert_eq!(role_for("/_admin/api", None), Role::Api);
        assert_eq!(role_for("/code/_admin/api", Some("x=1")), Role::Api);
        assert_eq!(role_for("/_admin/apis", None), Role::Web);
        assert_eq!(role_for("/repo/feed/rss", None), Role::Feed);
        assert_eq!(role_for("/repo/feed-atom", None), Role::Feed);
        assert_eq!(role_for("/repo/files/tip/README", None), Role::Web);
        assert_eq!(
            role_for("/repo/archive/tip.zip", Some("command=x")),
            Role::Web
        );
    }

    #[test]
    fn base64_matches_rfc4648() {
        for (input, expected) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
            ("alice:s3cr3t", "YWxpY2U6czNjcjN0"),
        ] {
            assert_eq!(base64(input.as_bytes()), expected);
        }
    }

    #[test]
    fn auth_token_replaces_the_clients() {
        assert_eq!(
            with_auth_token(None, "a b/c").as_str(),
            "auth_token=a%20b%2Fc"
        );
        assert_eq!(
            with_auth_token(Some("x=1&auth_token=theirs&y"), "t").as_str(),
            "x=1&y&auth_token=t"
        );
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("/a%2e%2E/b%2Fc%zz%4"), "/a../b/c%zz%4");
        assert_eq!(percent_decode("/%ff"), "/%ff");
    }

    #[test]
    fn hop_by_hop_headers_go() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, X-Secret-Hop"),
        );
        headers.insert("x-secret-hop", HeaderValue::from_static("1"));
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        headers.insert(header::UPGRADE, HeaderValue::from_static("h2c"));
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1);
        assert!(headers.contains_key(header::CONTENT_TYPE));
    }
}
