//! Golden tests of git's credential protocol through the light library:
//! request bytes in, answer bytes out, with a set of stored tokens matched by
//! `token::select` exactly as the daemon does. Every CVE input of SPEC
//! "Reliability and security targets" is here; none may yield a token for a
//! host it was not scoped to.

use time::macros::datetime;
use time::OffsetDateTime;
use tokenward::gitcred::{self, Answer};
use tokenward::secret::Secret;
use tokenward::token::{self, AuthKind, Role, TokenMeta, TokenState};

const NOW: OffsetDateTime = datetime!(2026-12-01 12:00 UTC);

fn meta(id: &str, url: &str, user: &str, created_day: u8) -> TokenMeta {
    TokenMeta {
        id: id.to_owned(),
        url: url.to_owned(),
        username: Some(user.to_owned()),
        role: Role::Vcs,
        expires: None,
        label: String::new(),
        auth: AuthKind::Basic,
        state: TokenState::Active,
        rejected_at: None,
        rejected_reason: None,
        created: datetime!(2026-11-01 00:00 UTC) + time::Duration::days(i64::from(created_day)),
        last_used: None,
    }
}

/// The vault: each token's secret is `secret-<id>`.
fn tokens() -> Vec<TokenMeta> {
    let mut expiring = meta("exp", "https://exp.example", "erin", 0);
    expiring.expires = Some(datetime!(2027-01-31 00:00 UTC));
    vec![
        meta("host", "https://code.example.com", "alice", 0),
        meta("team", "https://code.example.com/team", "alice", 0),
        meta("port", "https://code.example.com:8443", "alice", 0),
        meta("bob", "https://code.example.com/bobs", "bob", 0),
        meta("plain", "http://plain.example", "carol", 0),
        meta("v6", "http://[::1]:8080/r", "dave", 0),
        expiring,
    ]
}

/// What the helper would print for `input`: `Ok(bytes)` (empty = no
/// answer) or the parse error's text.
fn respond(input: &[u8]) -> Result<String, String> {
    let context = gitcred::parse(input).map_err(|e| e.to_string())?;
    let Some(request) = context.token_request() else {
        return Ok(String::new());
    };
    // Nothing refused may reach the daemon: query() must agree.
    assert!(context.query().is_some());
    let tokens = tokens();
    let Some(found) = token::select(&tokens, &request, Role::Vcs, NOW) else {
        return Ok(String::new());
    };
    let secret = Secret::new(format!("secret-{}", found.id));
    let mut out = Vec::new();
    gitcred::write_answer(
        &mut out,
        &Answer {
            username: found.username.as_deref(),
            password: &secret,
            password_expiry_utc: found.expires.map(OffsetDateTime::unix_timestamp),
        },
    )
    .map_err(|e| e.to_string())?;
    Ok(String::from_utf8(out).expect("utf8"))
}

fn answer(user: &str, id: &str) -> String {
    format!("username={user}\npassword=secret-{id}\n")
}

fn expect(input: &str, expected: &str) {
    assert_eq!(
        respond(input.as_bytes()).as_deref(),
        Ok(expected),
        "input {input:?}"
    );
}

fn refused(input: &[u8]) {
    let result = respond(input);
    let error = result.expect_err(&format!("{input:?} must be refused"));
    assert!(!error.contains('\n'), "one line: {error:?}");
    assert!(!error.contains("secret"), "no secret in {error:?}");
}

#[test]
fn scope_matching_bytes_in_bytes_out() {
    let team = answer("alice", "team");
    let host = answer("alice", "host");
    expect(
        "protocol=https\nhost=code.example.com\npath=team/repo.git\n\n",
        &team,
    );
    expect(
        "protocol=https\nhost=code.example.com\npath=other/repo.git\n\n",
        &host,
    );
    // Whole components only: teamevil is not under team.
    expect(
        "protocol=https\nhost=code.example.com\npath=teamevil/repo.git\n\n",
        &host,
    );
    // No path sent: only a path-less token can answer.
    expect("protocol=https\nhost=code.example.com\n\n", &host);
    // CRLF, upper case and a default port name the same thing.
    expect(
        "protocol=https\r\nhost=CODE.EXAMPLE.COM\r\npath=team/repo.git\r\n\r\n",
        &team,
    );
    expect("url=https://code.example.com:443/team/repo.git\n\n", &team);
    expect("url=https://Code.Example.Com/team/repo.git/\n", &team);
    // Another port is another server.
    expect(
        "protocol=https\nhost=code.example.com:8443\npath=team/repo.git\n",
        &answer("alice", "port"),
    );
    expect(
        "protocol=https\nhost=code.example.com:8080\npath=team/repo.git\n",
        "",
    );
    // Another username: only that user's tokens.
    expect(
        "protocol=https\nhost=code.example.com\npath=bobs/x.git\nusername=bob\n",
        &answer("bob", "bob"),
    );
    expect(
        "protocol=https\nhost=code.example.com\npath=team/x.git\nusername=bob\n",
        "",
    );
    expect("url=https://bob@code.example.com/team/x.git\n", "");
    // http vs https, both ways.
    expect(
        "protocol=http\nhost=code.example.com\npath=team/repo.git\n",
        "",
    );
    expect("protocol=https\nhost=plain.example\n", "");
    expect(
        "protocol=http\nhost=plain.example:80\n",
        &answer("carol", "plain"),
    );
    expect("url=http://[::1]:8080/r/repo.git\n", &answer("dave", "v6"));
    expect("url=http://[::1]/r/repo.git\n", "");
    // Host suffix and prefix tricks.
    expect(
        "protocol=https\nhost=code.example.com.evil.net\npath=team/repo.git\n",
        "",
    );
    expect(
        "protocol=https\nhost=evilcode.example.com\npath=team/repo.git\n",
        "",
    );
    expect("protocol=https\nhost=example.com\n", "");
    expect("url=https://code.example.com@evil.net/team/repo.git\n", "");
    expect(
        "url=https://code.example.com:443@evil.net/team/repo.git\n",
        "",
    );
    expect("url=https://evil.net/code.example.com/team/repo.git\n", "");
    expect("url=https://evil.net#@code.example.com/team\n", "");
    expect("url=https://evil.net?@code.example.com/team\n", "");
    // Dot segments never match.
    expect(
        "protocol=https\nhost=code.example.com\npath=team/../bobs/x.git\n",
        "",
    );
}

#[test]
fn expiry_is_answered_in_unix_seconds() {
    expect(
        "protocol=https\nhost=exp.example\n",
        "username=erin\npassword=secret-exp\npassword_expiry_utc=1801353600\n",
    );
}

#[test]
fn cve_2020_5260_newline_in_url() {
    refused(b"url=https://evil.net?%0ahost=code.example.com\n");
    refused(b"url=https://evil.net%0ahost=code.example.com/\n");
    refused(b"url=https://code.example.com%0a/team\n");
    refused(b"url=https://u%0ahost=code.example.com@evil.net/\n");
    refused(b"url=https://evil.net/%0aprotocol=https%0ahost=code.example.com\n");
    refused(b"url=https://evil.net/%0Ahost=code.example.com\n");
}

#[test]
fn cve_2020_11008_no_protocol_or_host_no_answer() {
    for input in [
        "url=https:///code.example.com/team/repo.git\n",
        "url=https://\n",
        "url=https:///\n",
        "url=https://alice@/team\n",
        "url=https://alice:pw@/\n",
        "url=https://:443/\n",
        "protocol=https\n\n",
        "host=code.example.com\n\n",
        "protocol=https\nhost=\n",
        "protocol=\nhost=code.example.com\n",
        "path=team/repo.git\nusername=alice\n",
        "",
        "\n",
    ] {
        let result = respond(input.as_bytes());
        // Either refused or empty: never an answer.
        assert!(
            matches!(result.as_deref(), Ok("") | Err(_)),
            "{input:?} → {result:?}"
        );
    }
    refused(b"url=code.example.com/team\n");
    refused(b"url=//code.example.com/team\n");
}

#[test]
fn cve_2024_50349_control_characters_in_host() {
    refused(b"url=https://%1b[31mcode.example.com\n");
    refused(b"url=https://code.example.com%1b]8;;https://evil%07/\n");
    refused(b"url=https://code.example.com%7f\n");
    refused(b"url=https://code.example.com%c2%9b31m\n");
    refused(b"protocol=https\nhost=code.example.com\x1b[2K\n");
    refused(b"protocol=https\nhost=code.example.com\npath=team\x08\x08\x08\x08evil\n");
    refused(b"protocol=https\nhost=code.example.com\nusername=alice\x1b[8m\n");
}

#[test]
fn cve_2024_52006_bare_carriage_return() {
    refused(b"protocol=https\nhost=evil.net\rhost=code.example.com\n");
    refused(b"protocol=https\rhost=code.example.com\nhost=evil.net\n");
    refused(b"protocol=https\nhost=code.example.com\r\r\n");
    refused(b"protocol=https\nhost=code.example.com\r");
    refused(b"url=https://evil.net%0dhost=code.example.com/\n");
    refused(b"url=https://evil.net/%0dhost=code.example.com\n");
    refused(b"password=x\rhost=code.example.com\n");
}

#[test]
fn gcm_cve_2024_50338_cr_in_url_parts() {
    refused(b"url=https://code.example.com%0d@evil.net/\n");
    refused(b"url=https://u%0dhost=code.example.com@evil.net/\n");
    refused(b"url=https://u:p%0dhost=code.example.com@evil.net/\n");
    refused(b"url=https://evil.net/x%0d%0ahost=code.example.com\n");
}

#[test]
fn nul_long_lines_and_lines_without_equals() {
    refused(b"protocol=https\nhost=code.example.com\0.evil.net\n");
    refused(b"url=https://code.example.com%00.evil.net/\n");
    refused(b"protocol=https\ncode.example.com\n");
    refused(b"protocol=https\nhost code.example.com\n");
    let mut long = b"protocol=https\nhost=code.example.com\npath=team/".to_vec();
    long.resize(65_600, b'a');
    long.push(b'\n');
    refused(&long);
    refused(b"url=https://code.example.com/%ff%fe\n");
}

#[test]
fn later_lines_win_and_url_resets() {
    // git: the last value of a key wins; url= clears what it could carry.
    expect(
        "host=evil.net\nprotocol=https\nhost=code.example.com\npath=team/x\n",
        &answer("alice", "team"),
    );
    expect("url=https://code.example.com/team/x\nhost=evil.net\n", "");
    expect(
        "protocol=http\nhost=evil.net\npath=team\nurl=https://code.example.com\n",
        &answer("alice", "host"),
    );
}
