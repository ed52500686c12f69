//! git's credential protocol (Documentation/git-credential.adoc), as a pure
//! module: reading a helper's request and writing its answer. No I/O beyond
//! the `Read`/`Write` the caller passes, no clock, no environment.
//!
//! Input is `key=value` lines ended by a blank line or EOF. Lines are split
//! on LF (a CR right before it is dropped, so CRLF works); a value holding a
//! NUL or any other CR is refused, as git's `credential.protectProtocol`
//! does, because a helper written in a language that splits on CR would read
//! a second, attacker-chosen line out of it (CVE-2024-52006, and GCM's
//! CVE-2024-50338). A line without `=` is an error; a line longer than
//! [`MAX_LINE`] bytes is refused; unknown keys are ignored (array keys such as
//! `capability[]` and `wwwauth[]` are kept, harmlessly). `url=` is split into
//! protocol, host, path, username and password with percent-decoding, and a
//! decoded part holding a control character is refused (CVE-2020-5260,
//! CVE-2024-50349).
//!
//! The identity fields (protocol, host, path, username) must never hold a
//! control character, whether they come from `url=` or their own line: no
//! legitimate remote has one, and one that reached a prompt or a log could
//! rewrite what the user sees.
//!
//! A request without a protocol or a host never gets an answer
//! (CVE-2020-11008): [`Context::query`] and [`Context::report`] return `None`
//! for it, so nothing incomplete reaches the daemon.
//!
//! Errors are one line and never quote a value: a value may be a password.
//!
//! ```text
//! in:  protocol=https\nhost=code.example.com\npath=team/repo.git\n\n
//! out: username=alice\npassword=…\npassword_expiry_utc=1801353600\n
//! ```

use crate::protocol::{CredentialQuery, CredentialReport};
use crate::secret::Secret;
use crate::token;
use std::fmt;
use std::io::{BufRead, BufReader, Read, Write};

/// The longest line accepted, newline excluded (git's own limit is the same
/// order; anything longer is an attack or a mistake).
pub const MAX_LINE: usize = 65535;

/// The most bytes read for one request. Bounds memory when a peer sends
/// many long lines without a blank line.
pub const MAX_INPUT: usize = 1024 * 1024;

/// A parsed request from git. Fields that git did not send are `None`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Context {
    pub protocol: Option<String>,
    /// `host[:port]`, as git sends it.
    pub host: Option<String>,
    pub path: Option<String>,
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// Unix seconds, when git sent a readable one.
    pub password_expiry_utc: Option<i64>,
    /// `capability[]` values, in order (git ≥ 2.46).
    pub capabilities: Vec<String>,
    /// `wwwauth[]` values (the server's WWW-Authenticate headers).
    pub wwwauth: Vec<String>,
}

/// Why a request was refused. Never carries a value from the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// Line number (1-based) of a line over [`MAX_LINE`] bytes.
    LineTooLong(usize),
    InputTooLarge,
    /// Line number of a line without `=`.
    NoEquals(usize),
    /// Line number of a line that is not UTF-8.
    NotUtf8(usize),
    /// A value with a NUL or a CR that is not part of a CRLF.
    BadValue {
        key: String,
        why: &'static str,
    },
    /// `url=` that cannot be split, or whose parts are unsafe.
    BadUrl(&'static str),
    Io(std::io::ErrorKind),
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::LineTooLong(n) => {
                write!(f, "credential line {n} is longer than {MAX_LINE} bytes")
            }
            ParseError::InputTooLarge => {
                write!(f, "credential request is larger than {MAX_INPUT} bytes")
            }
            ParseError::NoEquals(n) => write!(f, "invalid credential line {n}: expected key=value"),
            ParseError::NotUtf8(n) => write!(f, "credential line {n} is not UTF-8"),
            ParseError::BadValue { key, why } => {
                write!(f, "refused credential value for '{key}': {why}")
            }
            ParseError::BadUrl(why) => write!(f, "refused credential url: {why}"),
            ParseError::Io(kind) => write!(f, "cannot read the credential request: {kind}"),
        }
    }
}

impl std::error::Error for ParseError {}

/// Reads one request: lines up to a blank line or EOF. Stops right after the
/// blank line, so a caller that keeps the stream open is not waited for.
pub fn read_context<R: Read>(input: R) -> Result<Context, ParseError> {
    let mut reader = BufReader::new(input);
    let mut context = Context::default();
    let mut line = Vec::with_capacity(128);
    let mut total = 0usize;
    for number in 1.. {
        line.clear();
        // One byte more than a maximal line plus its CRLF tells "too long"
        // apart from "exactly at the limit".
        let limit = (MAX_LINE + 3) as u64;
        let read = (&mut reader)
            .take(limit)
            .read_until(b'\n', &mut line)
            .map_err(|e| ParseError::Io(e.kind()))?;
        if read == 0 {
            break;
        }
        total += read;
        if total > MAX_INPUT {
            wipe(&mut line);
            return Err(ParseError::InputTooLarge);
        }
        let ended = line.last() == Some(&b'\n');
        if ended {
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
        }
        if line.len() > MAX_LINE || (!ended && read as u64 == limit) {
            wipe(&mut line);
            return Err(ParseError::LineTooLong(number));
        }
        if line.is_empty() {
            break;
        }
        let result = apply_line(&mut context, &line, number);
        wipe(&mut line);
        result?;
        if !ended {
            break;
        }
    }
    Ok(context)
}

/// Parses a whole request held in memory.
pub fn parse(input: &[u8]) -> Result<Context, ParseError> {
    read_context(input)
}

/// The line may hold a password; wipe it before the buffer is reused or freed.
fn wipe(buffer: &mut Vec<u8>) {
    use zeroize::Zeroize;
    buffer.zeroize();
}

fn apply_line(context: &mut Context, line: &[u8], number: usize) -> Result<(), ParseError> {
    let text = std::str::from_utf8(line).map_err(|_| ParseError::NotUtf8(number))?;
    let (key, value) = text.split_once('=').ok_or(ParseError::NoEquals(number))?;
    let bad = |why| ParseError::BadValue {
        key: printable_key(key),
        why,
    };
    if value.contains('\0') {
        return Err(bad("it contains a NUL"));
    }
    if value.contains('\r') {
        return Err(bad("it contains a carriage return"));
    }
    let identity = |value: &str| -> Result<String, ParseError> {
        if value.chars().any(char::is_control) {
            Err(bad("it contains a control character"))
        } else {
            Ok(value.to_owned())
        }
    };
    match key {
        "protocol" => context.protocol = Some(identity(value)?),
        "host" => context.host = Some(identity(value)?),
        "path" => context.path = Some(identity(value)?),
        "username" => context.username = Some(identity(value)?),
        "password" => context.password = Some(Secret::from(value)),
        // git reads an unparsable expiry as "never"; so do we.
        "password_expiry_utc" => context.password_expiry_utc = value.parse().ok(),
        "url" => apply_url(context, value)?,
        // Array keys: an empty value clears the array (git's rule).
        "capability[]" => push_array(&mut context.capabilities, value),
        "wwwauth[]" => push_array(&mut context.wwwauth, value),
        // authtype, credential, ephemeral, state[], continue, quit,
        // oauth_refresh_token and anything newer: not ours to act on.
        _ => {}
    }
    Ok(())
}

fn push_array(array: &mut Vec<String>, value: &str) {
    if value.is_empty() {
        array.clear();
    } else {
        array.push(value.to_owned());
    }
}

fn printable_key(key: &str) -> String {
    token::printable(key).chars().take(40).collect()
}

/// The parts of a `url=` value, percent-decoded.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UrlParts {
    pub protocol: String,
    pub host: Option<String>,
    pub path: Option<String>,
    pub username: Option<String>,
    pub password: Option<Secret>,
}

/// Splits `scheme://[user[:password]@]host[:port][/path]` the way git does
/// (the host ends at the first `/`, `?` or `#`; leading and trailing slashes
/// of the path are trimmed), except that the user info ends at the *last*
/// `@` of the authority, which is where an HTTP client splits it too.
pub fn parse_url(url: &str) -> Result<UrlParts, ParseError> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or(ParseError::BadUrl("it has no scheme"))?;
    if scheme.is_empty() {
        return Err(ParseError::BadUrl("it has no scheme"));
    }
    if scheme
        .chars()
        .any(|c| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
    {
        return Err(ParseError::BadUrl(
            "the scheme has characters a scheme cannot have",
        ));
    }
    let host_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, after) = rest.split_at(host_end);
    let (userinfo, host) = match authority.rfind('@') {
        Some(at) => (Some(&authority[..at]), &authority[at + 1..]),
        None => (None, authority),
    };
    let mut parts = UrlParts {
        // Schemes are case-insensitive (RFC 3986); matching stays exact on
        // the lower-cased name, so http never becomes https or back.
        protocol: scheme.to_ascii_lowercase(),
        ..UrlParts::default()
    };
    if let Some(userinfo) = userinfo {
        let (user, password) = match userinfo.split_once(':') {
            Some((u, p)) => (u, Some(p)),
            None => (userinfo, None),
        };
        parts.username = Some(decode_component(user, "username")?);
        if let Some(password) = password {
            let decoded = percent_decode(password)
                .map_err(|_| ParseError::BadUrl("the password is not UTF-8"))?;
            let password = Secret::new(decoded);
            if password.expose().chars().any(char::is_control) {
                return Err(ParseError::BadUrl(
                    "the password contains a control character",
                ));
            }
            parts.password = Some(password);
        }
    }
    if !host.is_empty() {
        parts.host = Some(decode_component(host, "host")?);
    }
    let path = after.trim_start_matches('/');
    let path = path.trim_end_matches('/');
    if !path.is_empty() {
        parts.path = Some(decode_component(path, "path")?);
    }
    Ok(parts)
}

/// Percent-decodes one URL component and refuses control characters in the
/// result: `%0a`, `%0d`, `%00`, `%1b` … are how CVE-2020-5260 and
/// CVE-2024-50349/52006 smuggled lines and escapes.
fn decode_component(raw: &str, what: &'static str) -> Result<String, ParseError> {
    let decoded = percent_decode(raw).map_err(|_| {
        ParseError::BadUrl(match what {
            "host" => "the host is not UTF-8",
            "path" => "the path is not UTF-8",
            _ => "the username is not UTF-8",
        })
    })?;
    if decoded.chars().any(char::is_control) {
        return Err(ParseError::BadUrl(match what {
            "host" => "the host contains a control character",
            "path" => "the path contains a control character",
            _ => "the username contains a control character",
        }));
    }
    Ok(decoded)
}

/// `%XX` becomes its byte; a `%` not followed by two hex digits stays as it
/// is (git's url_decode does the same).
fn percent_decode(raw: &str) -> Result<String, std::string::FromUtf8Error> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out)
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// `url=` replaces every field it could carry (git clears them first), so a
/// later `url=` cannot inherit a host from an earlier line.
fn apply_url(context: &mut Context, value: &str) -> Result<(), ParseError> {
    let parts = parse_url(value)?;
    context.protocol = Some(parts.protocol);
    context.host = parts.host;
    context.path = parts.path;
    context.username = parts.username;
    context.password = parts.password;
    Ok(())
}

impl Context {
    /// Protocol and host, both present and non-empty; `None` means the
    /// request must get no answer (CVE-2020-11008).
    fn target(&self) -> Option<(&str, &str)> {
        let protocol = self.protocol.as_deref().filter(|p| !p.is_empty())?;
        let host = self.host.as_deref().filter(|h| !h.is_empty())?;
        Some((protocol, host))
    }

    /// Whether the request names both a protocol and a host.
    pub fn has_target(&self) -> bool {
        self.target().is_some()
    }

    /// The request as the token model sees it; `None` when no token could
    /// ever answer it (no protocol or host, a protocol other than http(s),
    /// a malformed host, `.`/`..` in the path).
    pub fn token_request(&self) -> Option<token::Request> {
        let (protocol, host) = self.target()?;
        token::Request::new(
            protocol,
            host,
            self.path.as_deref(),
            self.username.as_deref(),
        )
    }

    /// What to ask the daemon for; `None` when nothing may be asked.
    pub fn query(&self) -> Option<CredentialQuery> {
        self.token_request()?;
        let (protocol, host) = self.target()?;
        Some(CredentialQuery {
            protocol: protocol.to_owned(),
            host: host.to_owned(),
            path: self.path.clone().filter(|p| !p.is_empty()),
            username: self.username.clone().filter(|u| !u.is_empty()),
        })
    }

    /// What to report to the daemon for `store`/`erase`; `None` when the
    /// request has no protocol or host, or could never match a token.
    pub fn report(&self) -> Option<CredentialReport> {
        self.token_request()?;
        let (protocol, host) = self.target()?;
        Some(CredentialReport {
            protocol: protocol.to_owned(),
            host: host.to_owned(),
            path: self.path.clone().filter(|p| !p.is_empty()),
            username: self.username.clone().filter(|u| !u.is_empty()),
            password: self.password.clone(),
        })
    }

    /// Whether git said it understands `authtype`/`credential` answers.
    pub fn has_capability(&self, name: &str) -> bool {
        self.capabilities.iter().any(|c| c == name)
    }
}

/// What a helper answers to `get`.
#[derive(Debug, Clone)]
pub struct Answer<'a> {
    pub username: Option<&'a str>,
    pub password: &'a Secret,
    /// Unix seconds.
    pub password_expiry_utc: Option<i64>,
}

/// Why an answer could not be written.
#[derive(Debug)]
pub enum WriteError {
    /// A value that git would misread; the field is named, never the value.
    Unrepresentable(&'static str),
    Io(std::io::Error),
}

impl fmt::Display for WriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WriteError::Unrepresentable(field) => {
                write!(f, "the {field} contains a newline, NUL or control character and cannot be given to git")
            }
            WriteError::Io(e) => write!(f, "cannot write the answer to git: {e}"),
        }
    }
}

impl std::error::Error for WriteError {}

/// Writes `username`, `password` and `password_expiry_utc`, in that order,
/// as one buffer (git reads until EOF; a partial answer is never written).
pub fn write_answer<W: Write>(mut out: W, answer: &Answer<'_>) -> Result<(), WriteError> {
    let mut buffer = zeroize::Zeroizing::new(Vec::with_capacity(128));
    if let Some(username) = answer.username {
        if username.chars().any(char::is_control) {
            return Err(WriteError::Unrepresentable("username"));
        }
        buffer.extend_from_slice(b"username=");
        buffer.extend_from_slice(username.as_bytes());
        buffer.push(b'\n');
    }
    let password = answer.password.expose();
    if password.contains(['\n', '\r', '\0']) {
        return Err(WriteError::Unrepresentable("password"));
    }
    buffer.extend_from_slice(b"password=");
    buffer.extend_from_slice(password.as_bytes());
    buffer.push(b'\n');
    if let Some(expiry) = answer.password_expiry_utc {
        buffer.extend_from_slice(format!("password_expiry_utc={expiry}\n").as_bytes());
    }
    out.write_all(&buffer)
        .and_then(|()| out.flush())
        .map_err(WriteError::Io)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(input: &str) -> Context {
        parse(input.as_bytes()).expect("parses")
    }

    #[test]
    fn reads_fields_and_stops_at_blank_line() {
        let c = ok(
            "protocol=https\nhost=h.example\npath=a/b.git\nusername=u\npassword=p\n\nhost=evil\n",
        );
        assert_eq!(c.protocol.as_deref(), Some("https"));
        assert_eq!(c.host.as_deref(), Some("h.example"));
        assert_eq!(c.path.as_deref(), Some("a/b.git"));
        assert_eq!(c.username.as_deref(), Some("u"));
        assert_eq!(c.password.as_ref().map(Secret::expose), Some("p"));
    }

    #[test]
    fn crlf_and_eof_without_newline() {
        let c = ok("protocol=https\r\nhost=h\r\n\r\n");
        assert_eq!(c.host.as_deref(), Some("h"));
        let c = ok("protocol=https\nhost=h");
        assert_eq!(c.host.as_deref(), Some("h"));
    }

    #[test]
    fn refuses_bare_cr_nul_and_lines_without_equals() {
        assert!(matches!(
            parse(b"host=h\rprotocol=x\n"),
            Err(ParseError::BadValue { .. })
        ));
        assert!(matches!(
            parse(b"password=a\0b\n"),
            Err(ParseError::BadValue { .. })
        ));
        assert_eq!(
            parse(b"protocol=https\njunk\n"),
            Err(ParseError::NoEquals(2))
        );
        assert!(matches!(
            parse(b"host=h\x1b[31m\n"),
            Err(ParseError::BadValue { .. })
        ));
        assert_eq!(parse(b"host=\xff\n"), Err(ParseError::NotUtf8(1)));
    }

    #[test]
    fn line_limit_is_exact() {
        let mut at_limit = b"path=".to_vec();
        at_limit.resize(MAX_LINE, b'a');
        at_limit.push(b'\n');
        assert!(parse(&at_limit).is_ok());
        let mut over = b"path=".to_vec();
        over.resize(MAX_LINE + 1, b'a');
        over.push(b'\n');
        assert_eq!(parse(&over), Err(ParseError::LineTooLong(1)));
        let mut over_no_newline = b"path=".to_vec();
        over_no_newline.resize(MAX_LINE + 10, b'a');
        assert_eq!(parse(&over_no_newline), Err(ParseError::LineTooLong(1)));
        let mut crlf_at_limit = b"path=".to_vec();
        crlf_at_limit.resize(MAX_LINE, b'a');
        crlf_at_limit.extend_from_slice(b"\r\n");
        assert!(parse(&crlf_at_limit).is_ok());
    }

    #[test]
    fn unknown_and_array_keys() {
        let c = ok("capability[]=authtype\ncapability[]=state\nwwwauth[]=Basic realm=\"x\"\nfrob=1\nquit=1\n");
        assert_eq!(c.capabilities, ["authtype", "state"]);
        assert!(c.has_capability("authtype"));
        assert_eq!(c.wwwauth.len(), 1);
        let c = ok("capability[]=authtype\ncapability[]=\n");
        assert!(c.capabilities.is_empty());
    }

    #[test]
    fn url_is_split_and_decoded() {
        let c = ok("url=https://al%69ce:s%3Acret@Code.Example.com:8443/team/repo.git/\n");
        assert_eq!(c.protocol.as_deref(), Some("https"));
        assert_eq!(c.host.as_deref(), Some("Code.Example.com:8443"));
        assert_eq!(c.path.as_deref(), Some("team/repo.git"));
        assert_eq!(c.username.as_deref(), Some("alice"));
        assert_eq!(c.password.as_ref().map(Secret::expose), Some("s:cret"));
        let c = ok("host=stale\nurl=https://h\n");
        assert_eq!(c.host.as_deref(), Some("h"));
        assert_eq!(c.path, None);
        let c = ok("url=https://h?x#y\n");
        assert_eq!(c.host.as_deref(), Some("h"));
        let c = ok("url=https://a@b@h/\n");
        assert_eq!(c.host.as_deref(), Some("h"));
        assert_eq!(c.username.as_deref(), Some("a@b"));
        assert_eq!(
            parse_url("https://h/%zz").map(|p| p.path),
            Ok(Some("%zz".to_owned()))
        );
    }

    #[test]
    fn url_refusals() {
        for bad in [
            "url=h.example/path\n",
            "url=://h\n",
            "url=https://h%0a.evil\n",
            "url=https://h/%0ahost=evil\n",
            "url=https://u%0d@h\n",
            "url=https://u:p%00@h\n",
            "url=https://h%1b[2J\n",
            "url=https://h/%ff\n",
        ] {
            assert!(
                matches!(parse(bad.as_bytes()), Err(ParseError::BadUrl(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn no_protocol_or_host_means_no_query() {
        for input in [
            "host=h\n",
            "protocol=https\n",
            "protocol=https\nhost=\n",
            "url=https:///repo.git\n",
            "url=https://\n",
            "url=https://u@/x\n",
            "protocol=ftp\nhost=h\n",
            "protocol=https\nhost=h\npath=a/../b\n",
        ] {
            let c = ok(input);
            assert!(c.query().is_none(), "{input:?}");
            assert!(c.report().is_none(), "{input:?}");
        }
        let c = ok("protocol=https\nhost=h\npath=\nusername=\n");
        let q = c.query().expect("query");
        assert_eq!((q.path, q.username), (None, None));
    }

    #[test]
    fn errors_never_quote_values() {
        let secret = "hunter2-secret";
        for input in [
            format!("password={secret}\rx\n"),
            format!("{secret}\n"),
            format!("url=https://u:{secret}%0a@h\n"),
            format!("password={secret}\0\n"),
        ] {
            let e = parse(input.as_bytes()).expect_err("refused").to_string();
            assert!(!e.contains(secret) && !e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn answer_format() {
        let password = Secret::from("tok");
        let mut out = Vec::new();
        write_answer(
            &mut out,
            &Answer {
                username: Some("alice"),
                password: &password,
                password_expiry_utc: Some(1_801_353_600),
            },
        )
        .expect("writes");
        assert_eq!(
            out,
            b"username=alice\npassword=tok\npassword_expiry_utc=1801353600\n"
        );
        let mut out = Vec::new();
        write_answer(
            &mut out,
            &Answer {
                username: None,
                password: &password,
                password_expiry_utc: None,
            },
        )
        .expect("writes");
        assert_eq!(out, b"password=tok\n");
        let bad = Secret::from("a\nhost=evil");
        let mut out = Vec::new();
        let e = write_answer(
            &mut out,
            &Answer {
                username: None,
                password: &bad,
                password_expiry_utc: None,
            },
        )
        .expect_err("refused");
        assert!(out.is_empty() && !e.to_string().contains("evil"));
    }
}
