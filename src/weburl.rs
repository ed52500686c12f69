//! `tokenward url URL`: prints URL with the matching `web` token appended as
//! `auth_token=…`, for RhodeCode's views that accept a token in the query
//! string (archives, raw files, diffs) and for tools that can only be given
//! a URL.
//!
//! The printed URL holds the secret: that is the command's purpose, and the
//! one place where tokenward prints a secret. The URL given on the command
//! line must not hold one (it would be in argv), so an `auth_token` already
//! in its query is replaced rather than kept.
//!
//! The URL is split by hand rather than with a URL crate because only the
//! exact text the user gave may be printed back: a parser that normalizes
//! (percent-encoding, default ports, `..`) would change links in ways the
//! server may not expect.

use crate::protocol::{CredentialQuery, Request};
use crate::token::{printable, Role};
use anyhow::{anyhow, bail, Result};

/// The parts of a URL that matter for finding a token and appending it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target<'a> {
    /// `http` or `https`, lower-cased.
    pub protocol: String,
    /// `host[:port]` as given (without user info).
    pub host: &'a str,
    /// User info before `@`, if any.
    pub username: Option<&'a str>,
    /// The path without its leading slash and without query or fragment.
    pub path: &'a str,
    /// Everything before the query: `scheme://authority/path`.
    pub base: &'a str,
    /// The query without its `?`, when there is a `?`.
    pub query: Option<&'a str>,
    /// The fragment with its `#`, when there is one.
    pub fragment: &'a str,
}

/// Splits `url` into the parts [`with_token`] and the daemon query need.
pub fn parse(url: &str) -> Result<Target<'_>> {
    let shown = printable(url);
    if url.chars().any(|c| c.is_control() || c == ' ') {
        bail!("invalid URL '{shown}': it contains spaces or control characters");
    }
    let (before_fragment, fragment) = match url.find('#') {
        Some(i) => (&url[..i], &url[i..]),
        None => (url, ""),
    };
    let (base, query) = match before_fragment.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (before_fragment, None),
    };
    let (scheme, rest) = base
        .split_once("://")
        .ok_or_else(|| anyhow!("invalid URL '{shown}': expected http(s)://host[:port]/path"))?;
    let protocol = scheme.to_ascii_lowercase();
    if protocol != "http" && protocol != "https" {
        bail!("invalid URL '{shown}': the scheme must be http or https");
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, ""),
    };
    let (username, host) = match authority.rsplit_once('@') {
        Some((user, host)) => (Some(user), host),
        None => (None, authority),
    };
    if username.is_some_and(|u| u.contains(':')) {
        // user:password@ would put a password in argv and in the output.
        bail!(
            "invalid URL '{}': remove the password from it",
            printable(host)
        );
    }
    if host.is_empty() {
        bail!("invalid URL '{shown}': no host");
    }
    Ok(Target {
        protocol,
        host,
        username: username.filter(|u| !u.is_empty()),
        path,
        base,
        query,
        fragment,
    })
}

/// `target`'s URL with `auth_token=<token>` in its query, before any
/// fragment; an `auth_token` parameter already there is dropped.
pub fn with_token(target: &Target<'_>, token: &str) -> String {
    let mut params: Vec<&str> = target
        .query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .filter(|p| p.split('=').next() != Some("auth_token"))
        .collect();
    let param = format!("auth_token={}", encode_query_value(token));
    params.push(&param);
    format!("{}?{}{}", target.base, params.join("&"), target.fragment)
}

/// Percent-encodes everything but RFC 3986's unreserved characters, so a
/// token with `&`, `#` or `+` cannot break the query.
fn encode_query_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Runs `tokenward url URL`: asks the daemon for the web token and prints
/// the URL with it.
pub fn run(url: &str) -> Result<()> {
    let target = parse(url)?;
    let query = CredentialQuery {
        protocol: target.protocol.clone(),
        host: target.host.to_owned(),
        path: Some(target.path.to_owned()),
        username: target.username.map(str::to_owned),
    };
    let response = crate::cli::connect(true)?.call(Request::GetForRole {
        query,
        role: Role::Web,
    })?;
    let Some(credential) = response.credential else {
        let server = format!("{}://{}", target.protocol, target.host);
        bail!(
            "no web token for {}/{} (add one with 'tokenward token add {} --role web --auth query')",
            printable(&server),
            printable(target.path),
            printable(&server)
        );
    };
    println!("{}", with_token(&target, credential.password.expose()));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn appended(url: &str, token: &str) -> String {
        with_token(&parse(url).expect("parses"), token)
    }

    #[test]
    fn appends_with_question_mark_or_ampersand() {
        assert_eq!(
            appended("https://code.example.com/repo/archive/tip.zip", "abc"),
            "https://code.example.com/repo/archive/tip.zip?auth_token=abc"
        );
        assert_eq!(
            appended("https://h/repo/raw/tip/a.txt?with_files=1", "abc"),
            "https://h/repo/raw/tip/a.txt?with_files=1&auth_token=abc"
        );
        assert_eq!(
            appended("https://h/r?", "abc"),
            "https://h/r?auth_token=abc"
        );
        assert_eq!(
            appended("https://h/r?a=1&", "abc"),
            "https://h/r?a=1&auth_token=abc"
        );
        assert_eq!(appended("https://h", "abc"), "https://h?auth_token=abc");
    }

    #[test]
    fn keeps_the_fragment_last() {
        assert_eq!(
            appended("https://h/r/changeset/1#L10", "t"),
            "https://h/r/changeset/1?auth_token=t#L10"
        );
        assert_eq!(
            appended("https://h/r?diff=1#L10?x", "t"),
            "https://h/r?diff=1&auth_token=t#L10?x"
        );
    }

    #[test]
    fn replaces_an_existing_auth_token_and_encodes_the_value() {
        assert_eq!(
            appended("https://h/r?auth_token=old&x=1&auth_token", "n&w#+ é"),
            "https://h/r?x=1&auth_token=n%26w%23%2B%20%C3%A9"
        );
        // a parameter that merely starts with auth_token stays
        assert_eq!(
            appended("https://h/r?auth_token_x=1", "t"),
            "https://h/r?auth_token_x=1&auth_token=t"
        );
    }

    #[test]
    fn parses_the_parts_the_daemon_needs() {
        let t = parse("HTTPS://alice@Code.Example.com:8443/team/repo/raw/x?a=1#f").expect("parses");
        assert_eq!(t.protocol, "https");
        assert_eq!(t.host, "Code.Example.com:8443");
        assert_eq!(t.username, Some("alice"));
        assert_eq!(t.path, "team/repo/raw/x");
        assert_eq!(t.query, Some("a=1"));
        assert_eq!(t.fragment, "#f");
        let t = parse("http://h").expect("parses");
        assert_eq!((t.path, t.query, t.username), ("", None, None));
    }

    #[test]
    fn refuses_what_it_cannot_use() {
        for bad in [
            "ftp://h/x",
            "h/x",
            "https:///x",
            "https://h/a b",
            "https://u:pw@h/x",
            "https://h/x\n",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        let e = parse("https://u:hunter2@h/x")
            .expect_err("refused")
            .to_string();
        assert!(!e.contains("hunter2"), "{e}");
    }
}
