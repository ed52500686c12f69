//! The daemon's wire protocol: one JSON object per line, both ways.
//!
//! Every message carries `"v": 1`. A request names its operation in `op`; a
//! response says `"ok": true` with a result, or `"ok": false` with a one-line
//! `error`. A line may be at most [`MAX_LINE`] bytes including its newline.
//! One connection may carry many requests, answered in order. The types here
//! are the only definition of the protocol: the daemon, the CLI and the git
//! helper all use them, and the Mercurial extension speaks the same JSON.
//!
//! Examples (one line each on the wire):
//!
//! ```text
//! → {"v":1,"op":"get","protocol":"https","host":"code.example.com","path":"team/repo.git","username":null}
//! ← {"v":1,"ok":true,"credential":{"id":"tw_7f3a9c","username":"alice","password":"…","expires":"2027-01-31T00:00:00Z"}}
//! ← {"v":1,"ok":true}                       (no token matches)
//! → {"v":1,"op":"approve","protocol":"https","host":"code.example.com","path":null,"username":"alice","password":"…"}
//! ← {"v":1,"ok":true}
//! → {"v":1,"op":"reject","protocol":"https","host":"code.example.com","path":null,"username":"alice","password":"…"}
//! ← {"v":1,"ok":true}
//! → {"v":1,"op":"list","all":false}
//! ← {"v":1,"ok":true,"tokens":[{"id":"tw_7f3a9c","url":"https://code.example.com","fingerprint":"a1b2c3d4e5f6",…}]}
//! → {"v":1,"op":"frobnicate"}
//! ← {"v":1,"ok":false,"error":"unknown op 'frobnicate'"}
//! ```
//!
//! `approve` and `reject` are what git's `store` and `erase` (and the hg
//! extension's success and 401 reports) send: `approve` records the use of a
//! token the daemon handed out, or saves a credential the user typed;
//! `reject` marks the matching token rejected, never deleting it.

use crate::secret::Secret;
use crate::token::{AuthKind, Role, TokenMeta};
use serde::{Deserialize, Serialize};

/// The protocol version this build speaks.
pub const VERSION: u32 = 1;

/// The longest line either side accepts, newline included.
pub const MAX_LINE: usize = 64 * 1024;

/// A request with its version, as written on the wire.
#[derive(Debug, Serialize, Deserialize)]
pub struct RequestEnvelope {
    pub v: u32,
    #[serde(flatten)]
    pub request: Request,
}

/// What a client may ask.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// A credential for a git/hg request (roles vcs or all).
    Get(CredentialQuery),
    /// The credential worked (or: save this typed credential).
    Approve(CredentialReport),
    /// The credential was refused by the server.
    Reject(CredentialReport),
    /// A token for the relay, chosen by the endpoint's role.
    GetForRole {
        query: CredentialQuery,
        role: Role,
    },
    Add(NewToken),
    List {
        #[serde(default)]
        all: bool,
    },
    Remove {
        id: String,
    },
    Restore {
        id: String,
    },
    Rotate {
        id: String,
        secret: Secret,
    },
    Status,
    Unlock {
        passphrase: Secret,
    },
    /// Keep a relay in the config and run it (`listen` defaults to a free
    /// loopback port, fixed at add time).
    RelayAdd {
        upstream: String,
        #[serde(default)]
        listen: Option<String>,
        #[serde(default)]
        ca_file: Option<String>,
    },
    RelayList,
    RelayRemove {
        id: String,
    },
    Lock,
    Stop,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CredentialQuery {
    pub protocol: String,
    /// `host[:port]`, as git sends it.
    pub host: String,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CredentialReport {
    pub protocol: String,
    pub host: String,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<Secret>,
}

impl CredentialReport {
    /// A report on `credential`, handed out for `query`.
    pub fn about(query: &CredentialQuery, credential: &Credential) -> CredentialReport {
        CredentialReport {
            protocol: query.protocol.clone(),
            host: query.host.clone(),
            path: query.path.clone(),
            username: credential.username.clone(),
            password: Some(credential.password.clone()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewToken {
    pub url: String,
    #[serde(default)]
    pub username: Option<String>,
    pub role: Role,
    /// RFC 3339, already resolved by the CLI from dates and durations.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub expires: Option<time::OffsetDateTime>,
    #[serde(default)]
    pub label: String,
    #[serde(default)]
    pub auth: AuthKind,
    pub secret: Secret,
}

/// A credential handed to a client.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Credential {
    pub id: String,
    #[serde(default)]
    pub username: Option<String>,
    pub password: Secret,
    #[serde(default)]
    pub auth: AuthKind,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub expires: Option<time::OffsetDateTime>,
}

/// A token as listed: its metadata plus the secret's fingerprint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenInfo {
    #[serde(flatten)]
    pub meta: TokenMeta,
    pub fingerprint: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    pub pid: u32,
    pub version: String,
    pub backend: String,
    /// `until deleted`, `until reboot`, `never written` …
    pub persistence: String,
    pub locked: bool,
    pub tokens: TokenCounts,
    #[serde(default)]
    pub relays: Vec<RelayStatus>,
    pub socket: String,
    pub data_dir: String,
    /// The socket came from systemd (socket activation): `stop` would only
    /// make systemd start the daemon again.
    #[serde(default)]
    pub socket_activated: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TokenCounts {
    pub total: usize,
    pub active: usize,
    pub rejected: usize,
    pub expired: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RelayStatus {
    pub id: String,
    pub upstream: String,
    pub listen: String,
    pub requests: u64,
    pub bytes_up: u64,
    pub bytes_down: u64,
    #[serde(default)]
    pub error: Option<String>,
}

/// A response as written on the wire. Which result field is present depends
/// on the op; a `get` that finds nothing answers with none of them.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Response {
    pub v: u32,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<Credential>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<TokenInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<Vec<TokenInfo>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Box<Status>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relays: Option<Vec<RelayStatus>>,
}

impl Response {
    /// A success with no result field; set one with struct update syntax.
    pub fn done() -> Response {
        Response {
            v: VERSION,
            ok: true,
            ..Response::default()
        }
    }

    pub fn error(message: impl Into<String>) -> Response {
        Response {
            v: VERSION,
            ok: false,
            error: Some(message.into()),
            ..Response::default()
        }
    }
}

impl RequestEnvelope {
    pub fn new(request: Request) -> Self {
        RequestEnvelope {
            v: VERSION,
            request,
        }
    }
}

/// Why a line could not be read as a request. Its `Display` is what the
/// daemon answers, so it never echoes the line (which may hold a secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    TooLong,
    Malformed,
    NoVersion,
    UnsupportedVersion(u64),
    UnknownOp(String),
    BadFields(String),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::TooLong => write!(f, "request longer than {MAX_LINE} bytes"),
            DecodeError::Malformed => f.write_str("malformed request: not a JSON object"),
            DecodeError::NoVersion => f.write_str("malformed request: no protocol version 'v'"),
            DecodeError::UnsupportedVersion(v) => {
                write!(
                    f,
                    "unsupported protocol version {v} (this daemon speaks {VERSION})"
                )
            }
            DecodeError::UnknownOp(op) => write!(f, "unknown op '{}'", crate::token::printable(op)),
            DecodeError::BadFields(op) => write!(f, "bad or missing fields for op '{op}'"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Decodes one request line (without its newline). Checks the version
/// before the fields, so that a newer client gets a clear answer.
pub fn decode_request(line: &[u8]) -> Result<Request, DecodeError> {
    if line.len() >= MAX_LINE {
        return Err(DecodeError::TooLong);
    }
    // Fast path: a valid request of this version, parsed once straight into
    // its type (half the time of the generic parse below, benches/micro.rs).
    // It accepts only what the path below accepts too: `v` and a known `op`
    // are required fields of these types. Anything else, including a valid
    // request of another version, takes the path below, which parses into a
    // `Value` first to tell which error it is.
    if let Ok(envelope) = serde_json::from_slice::<RequestEnvelope>(line) {
        if envelope.v == VERSION {
            return Ok(envelope.request);
        }
    }
    decode_checked(line)
}

/// Decodes step by step, naming the first thing wrong with the line.
fn decode_checked(line: &[u8]) -> Result<Request, DecodeError> {
    let value: serde_json::Value =
        serde_json::from_slice(line).map_err(|_| DecodeError::Malformed)?;
    let object = value.as_object().ok_or(DecodeError::Malformed)?;
    let version = object
        .get("v")
        .ok_or(DecodeError::NoVersion)?
        .as_u64()
        .ok_or(DecodeError::NoVersion)?;
    if version != u64::from(VERSION) {
        return Err(DecodeError::UnsupportedVersion(version));
    }
    let op = object
        .get("op")
        .and_then(|o| o.as_str())
        .ok_or(DecodeError::Malformed)?
        .to_owned();
    if !KNOWN_OPS.contains(&op.as_str()) {
        return Err(DecodeError::UnknownOp(op));
    }
    let envelope: RequestEnvelope =
        serde_json::from_value(value).map_err(|_| DecodeError::BadFields(op))?;
    Ok(envelope.request)
}

const KNOWN_OPS: &[&str] = &[
    "get",
    "approve",
    "reject",
    "get_for_role",
    "add",
    "list",
    "remove",
    "restore",
    "rotate",
    "status",
    "unlock",
    "relay_add",
    "relay_list",
    "relay_remove",
    "lock",
    "stop",
];

/// Encodes a message as one line, newline included.
pub fn encode_line<T: Serialize>(message: &T) -> Vec<u8> {
    // Serializing these types cannot fail: they hold only strings, numbers
    // and maps with string keys.
    let mut line = serde_json::to_vec(message).unwrap_or_else(|_| b"{}".to_vec());
    line.push(b'\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn golden(request: Request, expected: &str) {
        let line = encode_line(&RequestEnvelope::new(request));
        assert_eq!(
            std::str::from_utf8(&line).expect("utf8"),
            format!("{expected}\n")
        );
        decode_request(&line[..line.len() - 1]).expect("decodes back");
    }

    #[test]
    fn golden_requests() {
        golden(
            Request::Get(CredentialQuery {
                protocol: "https".into(),
                host: "h.example".into(),
                path: Some("team/repo.git".into()),
                username: None,
            }),
            r#"{"v":1,"op":"get","protocol":"https","host":"h.example","path":"team/repo.git","username":null}"#,
        );
        golden(
            Request::List { all: true },
            r#"{"v":1,"op":"list","all":true}"#,
        );
        golden(Request::Status, r#"{"v":1,"op":"status"}"#);
        golden(
            Request::Remove { id: "tw_1".into() },
            r#"{"v":1,"op":"remove","id":"tw_1"}"#,
        );
    }

    #[test]
    fn golden_responses() {
        let none = Response::done();
        assert_eq!(
            String::from_utf8(encode_line(&none)).expect("utf8"),
            "{\"v\":1,\"ok\":true}\n"
        );
        let err = Response::error("nope");
        assert_eq!(
            String::from_utf8(encode_line(&err)).expect("utf8"),
            "{\"v\":1,\"ok\":false,\"error\":\"nope\"}\n"
        );
        let parsed: Response = serde_json::from_str(
            r#"{"v":1,"ok":true,"credential":{"id":"a","username":"u","password":"p"}}"#,
        )
        .expect("parses");
        assert_eq!(
            parsed.credential.map(|c| c.password.expose().to_owned()),
            Some("p".to_owned())
        );
        let done: Response = serde_json::from_str(r#"{"v":1,"ok":true}"#).expect("parses");
        assert!(done.ok && done.credential.is_none());
    }

    /// The fast path of `decode_request` answers exactly what the checked
    /// path answers, for good lines and bad ones.
    #[test]
    fn fast_path_agrees_with_checked_path() {
        let lines: &[&[u8]] = &[
            br#"{"v":1,"op":"get","protocol":"https","host":"h","path":"a/b","username":null}"#,
            br#"{"op":"get","v":1,"protocol":"https","host":"h","extra":[1,{"x":2}]}"#,
            br#"{"v":1,"op":"get_for_role","query":{"protocol":"https","host":"h"},"role":"api"}"#,
            br#"{"v":1,"op":"add","url":"https://h","role":"vcs","secret":"s","expires":"2027-01-31T00:00:00Z"}"#,
            br#"{"v":1,"op":"list"}"#,
            br#"{"v":1,"op":"stop"}"#,
            br#"{"v":1,"op":"get","op":"stop","protocol":"https","host":"h"}"#,
            br#"{"v":1,"v":1,"op":"status"}"#,
            br#"{"v":1.0,"op":"status"}"#,
            br#"{"v":2,"op":"status"}"#,
            br#"{"v":4294967297,"op":"status"}"#,
            br#"{"v":1,"op":"get","protocol":"https"}"#,
            br#"{"v":1,"op":"get","protocol":"https","host":7}"#,
            br#"{"v":1,"op":"status"} trailing"#,
            br#"{"v":1,"op":"nope"}"#,
            br#"{"v":1}"#,
            br#"[]"#,
            b"",
        ];
        for line in lines {
            assert_eq!(
                decode_request(line),
                decode_checked(line),
                "{}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn decode_errors_are_specific_and_never_echo_input() {
        assert_eq!(decode_request(b"{not json"), Err(DecodeError::Malformed));
        assert_eq!(decode_request(b"[1,2]"), Err(DecodeError::Malformed));
        assert_eq!(
            decode_request(br#"{"op":"get"}"#),
            Err(DecodeError::NoVersion)
        );
        assert_eq!(
            decode_request(br#"{"v":2,"op":"get"}"#),
            Err(DecodeError::UnsupportedVersion(2))
        );
        assert_eq!(
            decode_request(br#"{"v":1,"op":"frob"}"#),
            Err(DecodeError::UnknownOp("frob".into()))
        );
        let bad =
            decode_request(br#"{"v":1,"op":"add","url":"https://h","secret":"s3cr3t-value"}"#);
        assert_eq!(bad, Err(DecodeError::BadFields("add".into())));
        assert!(!bad
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
            .contains("s3cr3t"));
        assert_eq!(
            decode_request(&vec![b' '; MAX_LINE]),
            Err(DecodeError::TooLong)
        );
    }
}
