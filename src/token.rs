//! The token model and the rules that match a request to a token.
//!
//! Everything here is pure: no I/O, no clock (callers pass `now`). The daemon,
//! the relay and the helper's CI mode all pick tokens through [`select`], so
//! the matching rules of the spec live in exactly one place:
//!
//! 1. the scheme equals the request's protocol exactly;
//! 2. the host is equal case-insensitively, with default ports normalized;
//! 3. the token's path is a whole-component prefix of the request path
//!    (a token without a path matches every path);
//! 4. if the request names a username, the token's username equals it;
//! 5. the token's role fits the use;
//! 6. expired and rejected tokens are skipped;
//! 7. the longest path prefix wins, then the newest token.

use serde::{Deserialize, Serialize};
use std::fmt;
use time::OffsetDateTime;

/// What a token may be used for (RhodeCode's token roles).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Vcs,
    Api,
    Feed,
    Web,
    All,
}

impl Role {
    pub const NAMES: &'static str = "vcs, api, feed, web or all";

    /// Whether a token of this role may be used where `wanted` is needed.
    pub fn fits(self, wanted: Role) -> bool {
        self == Role::All || self == wanted
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Vcs => "vcs",
            Role::Api => "api",
            Role::Feed => "feed",
            Role::Web => "web",
            Role::All => "all",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "vcs" => Ok(Role::Vcs),
            "api" => Ok(Role::Api),
            "feed" => Ok(Role::Feed),
            "web" | "http" => Ok(Role::Web),
            "all" => Ok(Role::All),
            _ => Err(format!("unknown role '{s}' (expected {})", Role::NAMES)),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the relay presents a token to the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthKind {
    /// HTTP Basic with the token's username and the token as password.
    #[default]
    Basic,
    /// `Authorization: Bearer TOKEN`.
    Bearer,
    /// `auth_token=TOKEN` appended to the query string.
    Query,
}

impl AuthKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthKind::Basic => "basic",
            AuthKind::Bearer => "bearer",
            AuthKind::Query => "query",
        }
    }
}

impl std::str::FromStr for AuthKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "basic" => Ok(AuthKind::Basic),
            "bearer" => Ok(AuthKind::Bearer),
            "query" => Ok(AuthKind::Query),
            _ => Err(format!(
                "unknown auth '{s}' (expected basic, bearer or query)"
            )),
        }
    }
}

impl fmt::Display for AuthKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn parse(s: &str) -> Option<Scheme> {
        match s {
            "http" => Some(Scheme::Http),
            "https" => Some(Scheme::Https),
            _ => None,
        }
    }

    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// Why a URL cannot be a token's scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeError(pub String);

impl fmt::Display for ScopeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ScopeError {}

/// A token's scope: `scheme://host[:port][/path]`, normalized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub scheme: Scheme,
    /// Lower-cased host name or IP literal (IPv6 without brackets).
    pub host: String,
    pub port: u16,
    /// Path components, never empty strings, never `.` or `..`.
    pub path: Vec<String>,
}

impl Scope {
    /// Parses a scope URL. Query strings, fragments and user info are
    /// refused rather than silently dropped, so that what the user typed is
    /// exactly what is matched.
    pub fn parse(url: &str) -> Result<Scope, ScopeError> {
        let err = |why: &str| ScopeError(format!("invalid URL '{}': {why}", printable(url)));
        if url.chars().any(|c| c.is_control() || c == ' ') {
            return Err(err("it contains spaces or control characters"));
        }
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| err("expected scheme://host[:port][/path]"))?;
        let scheme = Scheme::parse(&scheme.to_ascii_lowercase())
            .ok_or_else(|| err("the scheme must be http or https"))?;
        if rest.contains(['?', '#']) {
            return Err(err("a scope has no query or fragment"));
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.contains('@') {
            return Err(err("give the username with --user, not in the URL"));
        }
        let (host, port) = split_host_port(authority).map_err(|why| err(&why))?;
        let port = port.unwrap_or(scheme.default_port());
        let path =
            path_components(path).ok_or_else(|| err("'.' and '..' are not allowed in the path"))?;
        Ok(Scope {
            scheme,
            host,
            port,
            path,
        })
    }

    /// Whether this scope's path is a whole-component prefix of `request`.
    pub fn path_is_prefix_of(&self, request: &[String]) -> bool {
        self.path.len() <= request.len()
            && self
                .path
                .iter()
                .zip(request)
                .all(|(mine, theirs)| same_component(mine, theirs))
    }

    /// The `host[:port]` part as it appears in a URL, port only when not the default.
    pub fn authority(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == self.scheme.default_port() {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme.as_str(), self.authority())?;
        for component in &self.path {
            write!(f, "/{component}")?;
        }
        Ok(())
    }
}

/// Splits `host[:port]` (with `[v6]` literals); lower-cases the host.
pub fn split_host_port(authority: &str) -> Result<(String, Option<u16>), String> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| "unclosed '[' in host".to_owned())?;
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| "junk after ']'".to_owned())?,
            ),
        };
        (host, port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err("the host is empty".to_owned());
    }
    if host
        .chars()
        .any(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':')))
    {
        return Err("the host has characters a host name cannot have".to_owned());
    }
    let port = match port {
        None => None,
        Some(p) => Some(
            p.parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("bad port '{}'", printable(p)))?,
        ),
    };
    Ok((host.to_ascii_lowercase(), port))
}

/// Splits a path into its components; `None` when it has `.` or `..`,
/// which a server would resolve to somewhere else than it says.
pub fn path_components(path: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        if part == "." || part == ".." {
            return None;
        }
        out.push(part.to_owned());
    }
    Some(out)
}

/// `repo` and `repo.git` name the same repository on every git server.
fn same_component(a: &str, b: &str) -> bool {
    a.strip_suffix(".git").unwrap_or(a) == b.strip_suffix(".git").unwrap_or(b)
}

/// Escapes control characters for error messages.
pub fn printable(s: &str) -> String {
    s.chars().flat_map(char::escape_debug).take(200).collect()
}

/// Whether a token is usable, or why not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenState {
    #[default]
    Active,
    Rejected,
}

/// A token's metadata: everything but the secret, which lives in the vault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenMeta {
    pub id: String,
    pub url: String,
    #[serde(default)]
    pub username: Option<String>,
    pub role: Role,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub expires: Option<OffsetDateTime>,
    #[serde(default)]
    pub label: String,
    #[serde(default)]
    pub auth: AuthKind,
    #[serde(default)]
    pub state: TokenState,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub rejected_at: Option<OffsetDateTime>,
    #[serde(default)]
    pub rejected_reason: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_used: Option<OffsetDateTime>,
}

impl TokenMeta {
    /// An active token: no expiry, no label, basic auth, never used.
    pub fn new(
        id: impl Into<String>,
        url: impl Into<String>,
        username: Option<String>,
        role: Role,
        created: OffsetDateTime,
    ) -> TokenMeta {
        TokenMeta {
            id: id.into(),
            url: url.into(),
            username,
            role,
            expires: None,
            label: String::new(),
            auth: AuthKind::Basic,
            state: TokenState::Active,
            rejected_at: None,
            rejected_reason: None,
            created,
            last_used: None,
        }
    }

    pub fn is_expired(&self, now: OffsetDateTime) -> bool {
        self.expires.is_some_and(|e| e <= now)
    }

    pub fn reject(&mut self, reason: &str, now: OffsetDateTime) {
        self.state = TokenState::Rejected;
        self.rejected_at = Some(now);
        self.rejected_reason = Some(reason.to_owned());
    }

    pub fn restore(&mut self) {
        self.state = TokenState::Active;
        self.rejected_at = None;
        self.rejected_reason = None;
    }
}

/// What a client asks a token for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub scheme: Scheme,
    pub host: String,
    pub port: u16,
    /// `None` when the client did not send a path (git without useHttpPath);
    /// only tokens without a path can match then.
    pub path: Option<Vec<String>>,
    pub username: Option<String>,
}

impl Request {
    /// Builds a request from git-style parts; `None` when the parts can never
    /// match a token (unknown protocol, bad host, dot segments in the path).
    pub fn new(
        protocol: &str,
        host: &str,
        path: Option<&str>,
        username: Option<&str>,
    ) -> Option<Request> {
        let scheme = Scheme::parse(protocol)?;
        let (host, port) = split_host_port(host).ok()?;
        let path = match path {
            Some(p) => Some(path_components(p)?),
            None => None,
        };
        Some(Request {
            scheme,
            host,
            port: port.unwrap_or(scheme.default_port()),
            path,
            username: username.filter(|u| !u.is_empty()).map(str::to_owned),
        })
    }

    /// Whether `token` (with its parsed scope) may answer this request for `use_role`.
    pub fn fits(
        &self,
        token: &TokenMeta,
        scope: &Scope,
        use_role: Role,
        now: OffsetDateTime,
    ) -> bool {
        scope.scheme == self.scheme
            && scope.host == self.host
            && scope.port == self.port
            && match &self.path {
                Some(path) => scope.path_is_prefix_of(path),
                None => scope.path.is_empty(),
            }
            && match &self.username {
                Some(wanted) => token.username.as_deref() == Some(wanted.as_str()),
                None => true,
            }
            && token.role.fits(use_role)
            && token.state == TokenState::Active
            && !token.is_expired(now)
    }
}

/// Picks the token for `request`: rules 1–7 of the module docs. Tokens whose
/// url does not parse never match.
pub fn select<'a, I>(
    tokens: I,
    request: &Request,
    use_role: Role,
    now: OffsetDateTime,
) -> Option<&'a TokenMeta>
where
    I: IntoIterator<Item = &'a TokenMeta>,
{
    // Parsing a scope allocates; with many tokens that dominated a `get`
    // (1.6 ms over 10,000 tokens, benches/micro.rs). The cheap tests go
    // first, and only tokens naming the request's host are parsed.
    // `request.fits` still applies every rule to those.
    tokens
        .into_iter()
        .filter(|t| {
            t.state == TokenState::Active
                && t.role.fits(use_role)
                && !t.is_expired(now)
                && url_host(&t.url).is_none_or(|host| host.eq_ignore_ascii_case(&request.host))
        })
        .filter_map(|t| Scope::parse(&t.url).ok().map(|s| (t, s)))
        .filter(|(t, s)| request.fits(t, s, use_role, now))
        .max_by(|(a, sa), (b, sb)| {
            sa.path
                .len()
                .cmp(&sb.path.len())
                .then(a.created.cmp(&b.created))
                .then(a.id.cmp(&b.id))
        })
        .map(|(t, _)| t)
}

/// The host of a scope URL, cut out the way [`Scope::parse`] cuts it but
/// without checking or allocating; `None` when it cannot be cut out (the
/// full parse then decides). `Scope::parse` only lower-cases this host, so a
/// token whose `url_host` differs from a request's host other than in case
/// can never match it.
fn url_host(url: &str) -> Option<&str> {
    let (_, rest) = url.split_once("://")?;
    let authority = rest.find('/').map_or(rest, |i| &rest[..i]);
    match authority.strip_prefix('[') {
        Some(v6) => v6.split_once(']').map(|(host, _)| host),
        None => Some(
            authority
                .rsplit_once(':')
                .map_or(authority, |(host, _)| host),
        ),
    }
}

/// Why an expiry could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiryError(pub String);

impl fmt::Display for ExpiryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ExpiryError {}

/// Parses `--expires`: a date (`2027-01-31`, UTC midnight), an RFC 3339
/// time, a duration from `now` (`90d`, `12h`, `30m`), or `-1`/`never`
/// (RhodeCode's "never expires") which gives `None`.
pub fn parse_expiry(
    text: &str,
    now: OffsetDateTime,
) -> Result<Option<OffsetDateTime>, ExpiryError> {
    let text = text.trim();
    let bad = || {
        ExpiryError(format!(
            "invalid expiry '{}': use a date (2027-01-31), an RFC 3339 time, a duration (90d, 12h, 30m) or never",
            printable(text)
        ))
    };
    if text == "-1" || text.eq_ignore_ascii_case("never") {
        return Ok(None);
    }
    if let Some(unit) = text
        .chars()
        .last()
        .filter(|c| matches!(c, 'd' | 'h' | 'm' | 'w'))
    {
        let digits = &text[..text.len() - 1];
        if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
            let n: i64 = digits.parse().map_err(|_| bad())?;
            let seconds = match unit {
                'w' => n.checked_mul(7 * 86_400),
                'd' => n.checked_mul(86_400),
                'h' => n.checked_mul(3_600),
                _ => n.checked_mul(60),
            }
            .filter(|s| *s > 0)
            .ok_or_else(bad)?;
            return now
                .checked_add(time::Duration::seconds(seconds))
                .map(Some)
                .ok_or_else(bad);
        }
    }
    if let Ok(t) = OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339) {
        return Ok(Some(t.to_offset(time::UtcOffset::UTC)));
    }
    let date_format = time::macros::format_description!("[year]-[month]-[day]");
    if let Ok(date) = time::Date::parse(text, &date_format) {
        return Ok(Some(date.midnight().assume_utc()));
    }
    Err(bad())
}

/// Formats a time as RFC 3339 in UTC, seconds precision.
pub fn format_time(t: OffsetDateTime) -> String {
    let t = t
        .to_offset(time::UtcOffset::UTC)
        .replace_nanosecond(0)
        .unwrap_or(t);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-12-01 12:00 UTC);

    fn token(id: &str, url: &str, user: Option<&str>, role: Role) -> TokenMeta {
        TokenMeta::new(
            id,
            url,
            user.map(str::to_owned),
            role,
            datetime!(2026-11-01 00:00 UTC),
        )
    }

    fn req(protocol: &str, host: &str, path: Option<&str>, user: Option<&str>) -> Request {
        Request::new(protocol, host, path, user).expect("valid request")
    }

    fn pick<'a>(tokens: &'a [TokenMeta], r: &Request) -> Option<&'a str> {
        select(tokens, r, Role::Vcs, NOW).map(|t| t.id.as_str())
    }

    #[test]
    fn rule1_scheme_must_equal_exactly() {
        let tokens = [token("a", "https://h.example", None, Role::Vcs)];
        assert_eq!(
            pick(&tokens, &req("https", "h.example", None, None)),
            Some("a")
        );
        assert_eq!(pick(&tokens, &req("http", "h.example", None, None)), None);
        let plain = [token("b", "http://h.example", None, Role::Vcs)];
        assert_eq!(pick(&plain, &req("https", "h.example", None, None)), None);
        assert!(Request::new("ftp", "h.example", None, None).is_none());
    }

    #[test]
    fn rule2_host_case_insensitive_ports_normalized() {
        let tokens = [token("a", "https://Code.Example.com", None, Role::Vcs)];
        assert_eq!(
            pick(&tokens, &req("https", "CODE.example.COM", None, None)),
            Some("a")
        );
        assert_eq!(
            pick(&tokens, &req("https", "code.example.com:443", None, None)),
            Some("a")
        );
        assert_eq!(
            pick(&tokens, &req("https", "code.example.com:8443", None, None)),
            None
        );
        assert_eq!(
            pick(
                &tokens,
                &req("https", "code.example.com.evil.net", None, None)
            ),
            None
        );
        assert_eq!(
            pick(&tokens, &req("https", "evilcode.example.com", None, None)),
            None
        );
        assert_eq!(
            pick(&tokens, &req("https", "example.com", None, None)),
            None
        );
        let with_port = [token("p", "http://h.example:80", None, Role::Vcs)];
        assert_eq!(
            pick(&with_port, &req("http", "h.example", None, None)),
            Some("p")
        );
        let other = [token("o", "http://127.0.0.1:8080", None, Role::Vcs)];
        assert_eq!(
            pick(&other, &req("http", "127.0.0.1:8080", None, None)),
            Some("o")
        );
        assert_eq!(pick(&other, &req("http", "127.0.0.1", None, None)), None);
    }

    #[test]
    fn rule3_whole_component_path_prefix() {
        let tokens = [token("t", "https://h/team", None, Role::Vcs)];
        assert_eq!(
            pick(&tokens, &req("https", "h", Some("team/repo.git"), None)),
            Some("t")
        );
        assert_eq!(
            pick(&tokens, &req("https", "h", Some("team"), None)),
            Some("t")
        );
        assert_eq!(
            pick(&tokens, &req("https", "h", Some("teamevil/repo.git"), None)),
            None
        );
        assert_eq!(
            pick(&tokens, &req("https", "h", Some("other/team"), None)),
            None
        );
        assert_eq!(
            pick(&tokens, &req("https", "h", None, None)),
            None,
            "no path sent"
        );
        assert!(Request::new("https", "h", Some("team/../other"), None).is_none());
        let anywhere = [token("any", "https://h", None, Role::Vcs)];
        assert_eq!(
            pick(&anywhere, &req("https", "h", Some("x/y"), None)),
            Some("any")
        );
        assert_eq!(pick(&anywhere, &req("https", "h", None, None)), Some("any"));
        let repo = [token("r", "https://h/team/repo", None, Role::Vcs)];
        assert_eq!(
            pick(&repo, &req("https", "h", Some("team/repo.git"), None)),
            Some("r")
        );
        assert_eq!(
            pick(&repo, &req("https", "h", Some("team/repo2.git"), None)),
            None
        );
    }

    #[test]
    fn rule4_username_must_equal_when_given() {
        let tokens = [token("a", "https://h", Some("alice"), Role::Vcs)];
        assert_eq!(
            pick(&tokens, &req("https", "h", None, Some("alice"))),
            Some("a")
        );
        assert_eq!(pick(&tokens, &req("https", "h", None, Some("bob"))), None);
        assert_eq!(pick(&tokens, &req("https", "h", None, Some("Alice"))), None);
        assert_eq!(pick(&tokens, &req("https", "h", None, None)), Some("a"));
        let anonymous = [token("n", "https://h", None, Role::Vcs)];
        assert_eq!(
            pick(&anonymous, &req("https", "h", None, Some("alice"))),
            None
        );
    }

    #[test]
    fn rule5_role_fits_use() {
        let tokens = [
            token("api", "https://h", None, Role::Api),
            token("feed", "https://h", None, Role::Feed),
            token("web", "https://h", None, Role::Web),
        ];
        assert_eq!(pick(&tokens, &req("https", "h", None, None)), None);
        let all = [token("all", "https://h", None, Role::All)];
        assert_eq!(pick(&all, &req("https", "h", None, None)), Some("all"));
        assert_eq!(
            select(&tokens, &req("https", "h", None, None), Role::Feed, NOW).map(|t| t.id.as_str()),
            Some("feed")
        );
        assert!(Role::All.fits(Role::Api));
        assert!(!Role::Vcs.fits(Role::Api));
    }

    #[test]
    fn rule6_expired_and_rejected_are_skipped() {
        let mut expired = token("e", "https://h", None, Role::Vcs);
        expired.expires = Some(NOW);
        let mut rejected = token("r", "https://h", None, Role::Vcs);
        rejected.reject("401", NOW);
        let tokens = [expired.clone(), rejected.clone()];
        assert_eq!(pick(&tokens, &req("https", "h", None, None)), None);
        let mut future = expired;
        future.expires = Some(NOW + time::Duration::seconds(1));
        rejected.restore();
        assert_eq!(pick(&[future], &req("https", "h", None, None)), Some("e"));
        assert_eq!(pick(&[rejected], &req("https", "h", None, None)), Some("r"));
    }

    #[test]
    fn rule7_longest_prefix_then_newest() {
        let mut newer = token("newer", "https://h", None, Role::Vcs);
        newer.created = datetime!(2026-11-20 00:00 UTC);
        let tokens = [
            token("host", "https://h", None, Role::Vcs),
            token("team", "https://h/team", None, Role::Vcs),
            token("repo", "https://h/team/repo", None, Role::Vcs),
            newer,
        ];
        assert_eq!(
            pick(&tokens, &req("https", "h", Some("team/repo.git"), None)),
            Some("repo")
        );
        assert_eq!(
            pick(&tokens, &req("https", "h", Some("team/other.git"), None)),
            Some("team")
        );
        assert_eq!(
            pick(&tokens, &req("https", "h", Some("solo/x.git"), None)),
            Some("newer")
        );
    }

    #[test]
    fn scope_parsing_normalizes_and_refuses() {
        let s = Scope::parse("HTTPS://Code.Example.COM:443/team//repo/").expect("parses");
        assert_eq!(s.to_string(), "https://code.example.com/team/repo");
        assert_eq!(
            Scope::parse("http://[::1]:8080").map(|s| s.to_string()),
            Ok("http://[::1]:8080".to_owned())
        );
        for bad in [
            "code.example.com",
            "ftp://h",
            "https://",
            "https://h:0",
            "https://h:99999",
            "https://u@h",
            "https://h/a?b=c",
            "https://h/../x",
            "https://h\n.evil",
            "https://h/ a",
        ] {
            assert!(Scope::parse(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn expiry_parsing() {
        assert_eq!(
            parse_expiry("2027-01-31", NOW),
            Ok(Some(datetime!(2027-01-31 00:00 UTC)))
        );
        assert_eq!(
            parse_expiry("2027-01-31T10:00:00+02:00", NOW),
            Ok(Some(datetime!(2027-01-31 08:00 UTC)))
        );
        assert_eq!(
            parse_expiry("90d", NOW),
            Ok(Some(NOW + time::Duration::days(90)))
        );
        assert_eq!(
            parse_expiry("12h", NOW),
            Ok(Some(NOW + time::Duration::hours(12)))
        );
        assert_eq!(
            parse_expiry("30m", NOW),
            Ok(Some(NOW + time::Duration::minutes(30)))
        );
        assert_eq!(parse_expiry("-1", NOW), Ok(None));
        assert_eq!(parse_expiry("never", NOW), Ok(None));
        for bad in [
            "",
            "tomorrow",
            "0d",
            "d",
            "2027-13-01",
            "99999999999999999999d",
            "-5d",
        ] {
            assert!(parse_expiry(bad, NOW).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn token_meta_json_round_trip() {
        let mut t = token("tw_1", "https://h", Some("u"), Role::All);
        t.expires = Some(datetime!(2027-01-01 00:00 UTC));
        let json = serde_json::to_string(&t).expect("serializes");
        let back: TokenMeta = serde_json::from_str(&json).expect("parses");
        assert_eq!(back, t);
    }

    /// `select`'s host pre-filter must never drop a token the full rules
    /// would pick: hosts in any case, with ports, IPv6 literals, paths.
    #[test]
    fn host_prefilter_keeps_every_match() {
        for (url, host) in [
            ("https://Code.Example.com", "code.example.com"),
            ("https://code.example.com:443/team", "CODE.example.com"),
            ("http://[::1]:8080/team", "[::1]:8080"),
            ("http://[::1]", "[::1]:80"),
            ("https://h.example:8443", "h.example:8443"),
        ] {
            let tokens = [token("a", url, None, Role::Vcs)];
            let r = req(
                url.split_once("://").expect("scheme").0,
                host,
                Some("team/repo"),
                None,
            );
            assert_eq!(pick(&tokens, &r), Some("a"), "{url} for {host}");
            let parsed = Scope::parse(url).expect("valid scope");
            assert_eq!(
                url_host(url).map(str::to_ascii_lowercase),
                Some(parsed.host),
                "{url}"
            );
        }
        assert_eq!(url_host("no scheme"), None);
        assert_eq!(url_host("http://[::1"), None);
        let other = [token("b", "https://other.example", None, Role::Vcs)];
        assert_eq!(pick(&other, &req("https", "h.example", None, None)), None);
    }
}
