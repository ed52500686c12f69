//! `git-credential-tokenward get|store|erase|capability`: git's credential
//! helper, a thin client of the tokenward daemon.
//!
//! It links only the light library (no tokio, hyper or keychain crates), so
//! it starts fast. It fails soft: whenever it cannot answer, it prints one
//! line on stderr and exits 0 with nothing on stdout, so git goes on to its
//! next helper or prompt.
//!
//! CI mode: when `TOKENWARD_TOKEN` is set the daemon is never contacted. The
//! token is scoped by `TOKENWARD_URL` (required) and presented with
//! `TOKENWARD_USERNAME` (else the username git sent), and is matched by the
//! same [`token::select`] as a stored token. `store` and `erase` do nothing.
//!
//! `capability` prints `version 0` and announces nothing: tokens with
//! `auth=bearer` are still handed to git as username/password, because
//! git's `authtype` answers are not implemented here.

#![deny(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use time::OffsetDateTime;
use tokenward::client::{Client, ClientError};
use tokenward::gitcred::{self, Answer, Context};
use tokenward::protocol::{Credential, Request};
use tokenward::secret::Secret;
use tokenward::token::{self, Role};

const NAME: &str = "git-credential-tokenward";

/// A token expiring within this many seconds gets a warning on `get`.
const EXPIRY_WARNING_SECS: i64 = 7 * 86_400;

fn main() -> ExitCode {
    let action = std::env::args().nth(1);
    match action.as_deref() {
        Some("get") => get(),
        Some("store") => report(Report::Store),
        Some("erase") => report(Report::Erase),
        Some("capability") => {
            // No capability is announced: see the module docs.
            let _ = std::io::stdout().write_all(b"version 0\n");
        }
        Some("--version" | "-V") => println!("{NAME} {}", env!("CARGO_PKG_VERSION")),
        None | Some("-h" | "--help") => {
            eprintln!(
                "usage: {NAME} get|store|erase|capability (run by git; see 'tokenward setup git')"
            );
            if action.is_none() {
                return ExitCode::from(2);
            }
        }
        // git's rule: helpers ignore operations they do not know.
        Some(_) => {}
    }
    ExitCode::SUCCESS
}

/// Prints the one stderr line of a soft failure.
fn soft_fail(message: &str) {
    let line: String = message
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let _ = writeln!(std::io::stderr(), "{NAME}: {line}");
}

/// Reads git's request from stdin; `None` (after one stderr line) when refused.
fn read_request() -> Option<Context> {
    match gitcred::read_context(std::io::stdin().lock()) {
        Ok(context) => Some(context),
        Err(e) => {
            soft_fail(&format!("{e}; no answer"));
            None
        }
    }
}

fn get() {
    let Some(context) = read_request() else {
        return;
    };
    if !context.has_target() {
        soft_fail("the request names no protocol or host; no answer");
        return;
    }
    // Requests no token could answer (another protocol, a malformed host)
    // are not ours: stay silent, as for any other host.
    let Some(request) = context.token_request() else {
        return;
    };
    if tokenward::ci::is_active() {
        ci_get(&context, &request);
        return;
    }
    let Some(query) = context.query() else { return };
    let mut client = match connect() {
        Ok(client) => client,
        Err(e) => {
            soft_fail(&e.to_string());
            return;
        }
    };
    let credential = match client.call(Request::Get(query)) {
        Ok(response) => response.credential,
        Err(e) => {
            soft_fail(&e.to_string());
            return;
        }
    };
    let Some(credential) = credential else { return };
    answer(&credential, context.username.as_deref(), &request);
}

/// Writes the answer for `credential` and warns when it expires soon.
fn answer(credential: &Credential, git_username: Option<&str>, request: &token::Request) {
    let username = credential.username.as_deref().or(git_username);
    let expiry = credential.expires.map(OffsetDateTime::unix_timestamp);
    let written = gitcred::write_answer(
        std::io::stdout().lock(),
        &Answer {
            username,
            password: &credential.password,
            password_expiry_utc: expiry,
        },
    );
    if let Err(e) = written {
        soft_fail(&e.to_string());
        return;
    }
    if let Some(expires) = credential.expires {
        let left = expires.unix_timestamp() - OffsetDateTime::now_utc().unix_timestamp();
        if left < EXPIRY_WARNING_SECS {
            let days = left.max(0) / 86_400;
            let scope = format!("{}://{}", request.scheme.as_str(), request.host);
            let rotate = if credential.id == tokenward::ci::ENV_TOKEN_ID {
                "renew TOKENWARD_TOKEN".to_owned()
            } else {
                format!("replace it with 'tokenward token rotate {}'", credential.id)
            };
            let _ = writeln!(
                std::io::stderr(),
                "{NAME}: warning: the token {} for {scope} expires {} (in {days} days); {rotate}",
                credential.id,
                token::format_time(expires),
            );
        }
    }
}

/// CI mode: answer from the environment only, scoped like a stored token.
fn ci_get(context: &Context, request: &token::Request) {
    let mut env = match tokenward::ci::from_env() {
        Ok(Some(env)) => env,
        Ok(None) => return,
        Err(e) => {
            soft_fail(&format!("{e}; no answer"));
            return;
        }
    };
    // Without TOKENWARD_USERNAME the token is the account git names.
    if env.meta.username.is_none() {
        env.meta.username = context.username.clone().filter(|u| !u.is_empty());
    }
    let now = OffsetDateTime::now_utc();
    if token::select([&env.meta], request, Role::Vcs, now).is_none() {
        return;
    }
    if env.meta.username.is_none() {
        soft_fail(
            "TOKENWARD_TOKEN matches but no username is known; set TOKENWARD_USERNAME; no answer",
        );
        return;
    }
    let credential = Credential {
        id: env.meta.id,
        username: env.meta.username,
        password: env.secret,
        auth: env.meta.auth,
        expires: None,
    };
    answer(&credential, None, request);
}

#[derive(Clone, Copy)]
enum Report {
    Store,
    Erase,
}

/// `store` → approve, `erase` → reject. Requests without protocol or host,
/// or that no token could match, are ignored; CI mode does nothing.
fn report(kind: Report) {
    let Some(context) = read_request() else {
        return;
    };
    if tokenward::ci::is_active() {
        return;
    }
    let Some(report) = context.report() else {
        return;
    };
    let request = match kind {
        // Nothing to record or save without the credential itself.
        Report::Store if report.password.as_ref().is_none_or(Secret::is_empty) => return,
        Report::Store => Request::Approve(report),
        // Without a password the daemon rejects what `get` would answer
        // (`git credential reject` by hand); it decides, not the helper.
        Report::Erase => Request::Reject(report),
    };
    let result = connect().and_then(|mut client| client.call(request));
    match result {
        // git runs store/erase right after get, which already said the
        // daemon is down: one line per git command is enough.
        Err(ClientError::NotRunning(_)) if !autostart() => {}
        Err(e) => soft_fail(&e.to_string()),
        Ok(_) => {}
    }
}

fn autostart() -> bool {
    std::env::var_os("TOKENWARD_NO_AUTOSTART").is_none_or(|v| v != "1")
}

/// Connects to the daemon, starting it when its socket is absent unless
/// `TOKENWARD_NO_AUTOSTART=1`.
fn connect() -> Result<Client, ClientError> {
    let socket = tokenward::paths::socket_path();
    match Client::connect(&socket) {
        // Only now look for the daemon's binary (a readlink and a stat that
        // a warm `get` does not need).
        Err(ClientError::NotRunning(_)) if autostart() => {
            Client::connect_or_start(&socket, &daemon_program())
        }
        other => other,
    }
}

/// The `tokenward` next to this executable (an install puts both in one
/// directory), else `tokenward` from PATH.
fn daemon_program() -> PathBuf {
    let name = format!("tokenward{}", std::env::consts::EXE_SUFFIX);
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(&name)))
        .filter(|candidate| candidate.is_file())
        .unwrap_or_else(|| PathBuf::from(name))
}
