//! Entry points for the fuzz targets in `fuzz/` (not an API: hidden from
//! the docs and free to change).
//!
//! [`request_head`] drives one connection of the relay over an in-memory
//! pipe: the bytes go through the same head scan, the same hyper settings
//! ([`super::http1_server`], plus half-close: see `one_connection`) and
//! the same guards and request building as a real client's, with a credential source that always has a token and an
//! upstream that refuses connections (nothing leaves the process, and each
//! run stays fast). It panics when an invariant breaks, which is what the
//! fuzzer reports:
//!
//! - the head scan's verdict does not depend on how the bytes were split
//!   into reads (the split points come from the input too);
//! - the relay answers with an HTTP/1.1 status line or closes without a
//!   word, and its answer never carries the token's secret.

use super::headscan::{HeadFlags, HeadScan};
use super::source::{BoxFuture, CredentialSource, SourceError};
use super::{proxy, RelayStats, Upstream, MAX_HEAD};
use crate::protocol::{Credential, CredentialQuery};
use crate::secret::Secret;
use crate::token::{AuthKind, Role};
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The secret the fuzzed relay presents; it must never come back to the client.
const SECRET: &str = "fuzz-secret-5b1d0c";

/// Always answers with one token, presented as the first byte of the input says.
struct OneToken(AuthKind);

impl CredentialSource for OneToken {
    fn credential<'a>(
        &'a self,
        _query: &'a CredentialQuery,
        _role: Role,
    ) -> BoxFuture<'a, Result<Option<Credential>, SourceError>> {
        let credential = Credential {
            id: "tw_fuzz".to_owned(),
            username: Some("fuzzer".to_owned()),
            password: Secret::from(SECRET),
            auth: self.0,
            expires: None,
        };
        Box::pin(async move { Ok(Some(credential)) })
    }

    fn rejected<'a>(
        &'a self,
        _query: &'a CredentialQuery,
        _credential: &'a Credential,
        _reason: &'a str,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }
}

thread_local! {
    // Building a runtime per input would dominate the run time.
    static RUNTIME: Option<tokio::runtime::Runtime> = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok();
}

/// Byte 0 picks the auth kind, byte 1 where to split the reads; the rest
/// is what the client sends.
pub fn request_head(data: &[u8]) {
    let (auth, split, bytes) = match data {
        [a, s, rest @ ..] => (*a, usize::from(*s), rest),
        _ => return,
    };
    check_split_invariance(bytes, split);
    let auth = match auth % 3 {
        0 => AuthKind::Basic,
        1 => AuthKind::Bearer,
        _ => AuthKind::Query,
    };
    RUNTIME.with(|runtime| {
        if let Some(runtime) = runtime {
            let answer = runtime.block_on(one_connection(bytes, auth));
            check_answer(&answer);
        }
    });
}

/// The flags a head scan leaves after reading `chunks` in order.
fn scan(chunks: &[&[u8]], max_head: usize) -> (bool, bool) {
    let flags = Arc::new(HeadFlags::default());
    let mut scanner = HeadScan::new((), flags.clone(), max_head);
    for chunk in chunks {
        scanner.scan(chunk);
    }
    (flags.conflicting(), flags.too_large())
}

fn check_split_invariance(bytes: &[u8], split: usize) {
    // A small limit too, so that the fuzzer reaches the "too large" edge.
    for max_head in [MAX_HEAD, 64] {
        let whole = scan(&[bytes], max_head);
        let at = split.min(bytes.len());
        let (a, b) = bytes.split_at(at);
        assert_eq!(whole, scan(&[a, b], max_head), "split at {at}");
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(whole, scan(&singles, max_head), "byte by byte");
    }
}

async fn one_connection(bytes: &[u8], auth: AuthKind) -> Vec<u8> {
    let proxy = Arc::new(proxy::Proxy {
        // Port 1 on loopback: nothing listens there, the connect is refused at once.
        upstream: match Upstream::parse("http://127.0.0.1:1/base") {
            Ok(upstream) => upstream,
            Err(_) => return Vec::new(),
        },
        tls: None,
        hosts: vec!["127.0.0.1:8765".to_owned(), "localhost:8765".to_owned()],
        spool_limit: 1024 * 1024,
        source: Arc::new(OneToken(auth)),
        stats: Arc::new(RelayStats::default()),
    });
    let (mut client, server) = tokio::io::duplex(MAX_HEAD);
    let flags = Arc::new(HeadFlags::default());
    let io = TokioIo::new(HeadScan::new(server, flags.clone(), MAX_HEAD));
    let service =
        hyper::service::service_fn(move |request| proxy.clone().handle(flags.clone(), request));
    // The one difference from a real connection: the client here marks
    // the end of its bytes by closing its write side, which hyper would
    // otherwise take for a dropped connection before it answers.
    let mut builder = super::http1_server();
    builder.half_close(true);
    let serve = async move {
        let _ = builder.serve_connection(io, service).await;
    };
    let talk = async move {
        // The server may stop reading early (a refusal): that is no error here.
        let _ = client.write_all(bytes).await;
        let _ = client.shutdown().await;
        let mut answer = Vec::new();
        let _ = client.read_to_end(&mut answer).await;
        answer
    };
    let ((), answer) = tokio::join!(serve, talk);
    answer
}

fn check_answer(answer: &[u8]) {
    assert!(
        // An HTTP/1.0 request is answered in HTTP/1.0 (a fuzz find, not a bug).
        answer.is_empty() || answer.starts_with(b"HTTP/1.1 ") || answer.starts_with(b"HTTP/1.0 "),
        "not an HTTP answer: {:?}",
        String::from_utf8_lossy(&answer[..answer.len().min(200)])
    );
    assert!(
        !answer.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
        "the secret came back to the client"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_request_gets_a_502_without_the_secret() {
        let mut input = vec![2, 5];
        input.extend_from_slice(b"GET /r.git/info/refs?service=git-upload-pack HTTP/1.1\r\nHost: 127.0.0.1:8765\r\n\r\n");
        request_head(&input);
        let answer = RUNTIME.with(|runtime| {
            runtime
                .as_ref()
                .map(|r| r.block_on(one_connection(&input[2..], AuthKind::Query)))
                .unwrap_or_default()
        });
        assert!(answer.starts_with(b"HTTP/1.1 502"), "{answer:?}");
    }
}
