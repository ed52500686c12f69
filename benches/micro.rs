//! `cargo bench --bench micro`: micro-benchmarks (divan) of the pure code on
//! a `get`'s path: git's credential parser, token matching over 10,000
//! tokens, and the daemon's wire codec. Process start-up, sockets and the
//! daemon as a whole are measured by `benches/compare.sh` instead.

use divan::{black_box, Bencher};
use time::OffsetDateTime;
use tokenward::gitcred;
use tokenward::protocol::{
    decode_request, encode_line, Credential, CredentialQuery, Request, RequestEnvelope, Response,
};
use tokenward::secret::Secret;
use tokenward::token::{self, AuthKind, Role, TokenMeta, TokenState};

fn main() {
    divan::main();
}

/// What git sends a helper for `get` with credential.useHttpPath.
const GIT_GET: &[u8] = b"protocol=https\nhost=code.example.com\npath=team/repo.git\n\n";

/// A `store` with a url line, capabilities and CRLF endings: the parser's
/// slower paths (url splitting with percent-decoding, arrays, CR handling).
const GIT_STORE_URL: &[u8] = b"capability[]=authtype\r\ncapability[]=state\r\n\
url=https://alice%40corp@code.example.com:8443/team/sub%20dir/repo.git\r\n\
username=alice@corp\r\npassword=0123456789abcdef0123456789abcdef\r\n\
password_expiry_utc=1801353600\r\nwwwauth[]=Basic realm=\"git\"\r\n\r\n";

mod gitcred_parse {
    use super::*;

    #[divan::bench]
    fn get_request() -> gitcred::Context {
        gitcred::parse(black_box(GIT_GET)).unwrap_or_default()
    }

    #[divan::bench]
    fn store_with_url() -> gitcred::Context {
        gitcred::parse(black_box(GIT_STORE_URL)).unwrap_or_default()
    }

    #[divan::bench]
    fn get_to_query() -> Option<CredentialQuery> {
        gitcred::parse(black_box(GIT_GET))
            .ok()
            .and_then(|c| c.query())
    }
}

/// 10,000 tokens over 1,000 hosts (10 each: host-wide and per-repo scopes,
/// several roles, some rejected or expired), as a worst case for one user.
fn many_tokens(now: OffsetDateTime) -> Vec<TokenMeta> {
    (0..10_000u32)
        .map(|i| {
            let host = i % 1000;
            let url = match i / 1000 % 4 {
                0 => format!("https://git{host}.example.com"),
                1 => format!("https://git{host}.example.com/team{}", i % 7),
                2 => format!(
                    "https://git{host}.example.com/team{}/repo{}.git",
                    i % 7,
                    i % 13
                ),
                _ => format!("http://git{host}.example.com:8080/mirror"),
            };
            TokenMeta {
                id: format!("tw_{i:06x}"),
                url,
                username: Some(format!("user{}", i % 3)),
                role: [Role::Vcs, Role::Api, Role::All, Role::Web][(i % 4) as usize],
                expires: (i % 11 == 0).then(|| now - time::Duration::days(1)),
                label: String::new(),
                auth: AuthKind::Basic,
                state: if i % 17 == 0 {
                    TokenState::Rejected
                } else {
                    TokenState::Active
                },
                rejected_at: None,
                rejected_reason: None,
                created: now - time::Duration::seconds(i64::from(i)),
                last_used: None,
            }
        })
        .collect()
}

mod token_select {
    use super::*;

    /// A request that several tokens of one host fit.
    #[divan::bench]
    fn ten_thousand_tokens_hit(bencher: Bencher) {
        let now = OffsetDateTime::now_utc();
        let tokens = many_tokens(now);
        let request =
            token::Request::new("https", "git500.example.com", Some("team3/repo5.git"), None);
        bencher.bench(|| {
            request
                .as_ref()
                .and_then(|r| token::select(black_box(&tokens), r, Role::Vcs, now))
                .map(|t| t.id.len())
        });
    }

    /// A host no token has: every token is looked at and refused.
    #[divan::bench]
    fn ten_thousand_tokens_miss(bencher: Bencher) {
        let now = OffsetDateTime::now_utc();
        let tokens = many_tokens(now);
        let request = token::Request::new("https", "nowhere.example.org", Some("a/b.git"), None);
        bencher.bench(|| {
            request
                .as_ref()
                .and_then(|r| token::select(black_box(&tokens), r, Role::Vcs, now))
                .map(|t| t.id.len())
        });
    }
}

mod wire {
    use super::*;

    fn get_line() -> Vec<u8> {
        let mut line = encode_line(&RequestEnvelope::new(Request::Get(CredentialQuery {
            protocol: "https".into(),
            host: "code.example.com".into(),
            path: Some("team/repo.git".into()),
            username: None,
        })));
        line.pop();
        line
    }

    #[divan::bench]
    fn decode_get(bencher: Bencher) {
        let line = get_line();
        bencher.bench(|| decode_request(black_box(&line)).is_ok());
    }

    /// An `add` carries the most fields of the common requests.
    #[divan::bench]
    fn decode_add(bencher: Bencher) {
        let line = br#"{"v":1,"op":"add","url":"https://code.example.com/team","username":"alice","role":"vcs","expires":"2027-01-31T00:00:00Z","label":"laptop","auth":"basic","secret":"0123456789abcdef"}"#;
        bencher.bench(|| decode_request(black_box(line)).is_ok());
    }

    #[divan::bench]
    fn decode_refused(bencher: Bencher) {
        let line = br#"{"v":1,"op":"frobnicate","x":[1,2,3]}"#;
        bencher.bench(|| decode_request(black_box(line)).is_err());
    }

    #[divan::bench]
    fn encode_get_request(bencher: Bencher) {
        let envelope = RequestEnvelope::new(Request::Get(CredentialQuery {
            protocol: "https".into(),
            host: "code.example.com".into(),
            path: Some("team/repo.git".into()),
            username: None,
        }));
        bencher.bench(|| encode_line(black_box(&envelope)));
    }

    #[divan::bench]
    fn encode_credential_response(bencher: Bencher) {
        let response = Response {
            credential: Some(Credential {
                id: "tw_7f3a9c".into(),
                username: Some("alice".into()),
                password: Secret::new("0123456789abcdef0123456789abcdef".into()),
                auth: AuthKind::Basic,
                expires: Some(time::macros::datetime!(2027-01-31 00:00 UTC)),
            }),
            ..Response::done()
        };
        bencher.bench(|| encode_line(black_box(&response)));
    }
}
