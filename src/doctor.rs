//! `tokenward doctor`: checks the whole setup and says how to fix what is
//! wrong.
//!
//! Each check is a function that returns [`Finding`]s, so that the checks
//! can be tested on made-up inputs; [`run`] gathers the inputs (the socket
//! directory, the daemon's status and token list, git's and hg's config)
//! and prints one line per finding, `ok`, `warn` or `FAIL`, each problem
//! followed by the command that fixes it. It exits non-zero when anything
//! is `FAIL`; warnings alone (a token expiring soon, hg not set up) do not.
//!
//! Doctor never starts the daemon: a daemon that is down is one of the
//! things it reports.

use crate::client::{Client, ClientError};
use crate::protocol::{RelayStatus, Request, Status, TokenInfo};
use crate::token::{format_time, Scope, TokenState};
use anyhow::{bail, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use time::OffsetDateTime;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Ok,
    Warn,
    Fail,
}

impl Level {
    fn label(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Warn => "warn",
            Level::Fail => "FAIL",
        }
    }
}

/// One line of the report, with the commands that fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub level: Level,
    /// What was checked: `daemon`, `socket`, `git`, `token tw_…` …
    pub check: String,
    pub message: String,
    pub fixes: Vec<String>,
}

impl Finding {
    fn new(level: Level, check: impl Into<String>, message: impl Into<String>) -> Finding {
        Finding {
            level,
            check: check.into(),
            message: message.into(),
            fixes: Vec::new(),
        }
    }

    fn ok(check: impl Into<String>, message: impl Into<String>) -> Finding {
        Finding::new(Level::Ok, check, message)
    }

    fn warn(check: impl Into<String>, message: impl Into<String>) -> Finding {
        Finding::new(Level::Warn, check, message)
    }

    fn fail(check: impl Into<String>, message: impl Into<String>) -> Finding {
        Finding::new(Level::Fail, check, message)
    }

    fn fix(mut self, command: impl Into<String>) -> Finding {
        self.fixes.push(command.into());
        self
    }
}

/// Tokens expiring sooner than this are worth a warning (git's helper warns
/// from the same point).
pub const EXPIRY_WARNING: time::Duration = time::Duration::days(7);

/// How long a relay's upstream may take to accept a TCP connection.
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(3);

/// The socket's directory must be ours and private, or the daemon refuses
/// to start (see `daemon::socket`).
pub fn check_socket_dir(dir: &Path, my_uid: u32) -> Finding {
    let shown = dir.display();
    let meta = match std::fs::metadata(dir) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Finding::ok(
                "socket",
                format!("{shown} does not exist yet; the daemon creates it (0700)"),
            );
        }
        Err(e) => {
            return Finding::fail("socket", format!("cannot inspect {shown}: {e}"));
        }
    };
    if !meta.is_dir() {
        return Finding::fail("socket", format!("{shown} is not a directory"))
            .fix(format!("rm {shown}   # then: tokenward start"));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if meta.uid() != my_uid {
            return Finding::fail(
                "socket",
                format!(
                    "{shown} belongs to uid {}, not to you (uid {my_uid}); the daemon will not use it",
                    meta.uid()
                ),
            )
            .fix("set TOKENWARD_SOCKET to a path in a directory of your own, or have the owner remove it");
        }
        let mode = meta.mode() & 0o777;
        if mode & 0o077 != 0 {
            return Finding::fail(
                "socket",
                format!(
                    "{shown} is open to group or others (mode {mode:o}); the daemon refuses to run"
                ),
            )
            .fix(format!("chmod 700 {shown}"));
        }
        Finding::ok(
            "socket",
            format!("{shown} is private (mode {mode:o}, yours)"),
        )
    }
    #[cfg(not(unix))]
    {
        let _ = (meta, my_uid);
        Finding::ok("socket", format!("{shown} exists"))
    }
}

/// How to start and restart the daemon on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonCommands {
    pub start: &'static str,
    pub restart: &'static str,
}

impl DaemonCommands {
    /// The daemon on its own (`tokenward start`, or the helpers' autostart).
    pub const PLAIN: DaemonCommands = DaemonCommands {
        start: "tokenward start",
        restart: "tokenward stop && tokenward start",
    };

    /// Socket-activated by the systemd user units: systemd holds the socket,
    /// so `tokenward stop` would only see the daemon activated again.
    pub const SYSTEMD: DaemonCommands = DaemonCommands {
        start: "systemctl --user start tokenward.socket",
        restart: "systemctl --user restart tokenward.service",
    };

    /// SYSTEMD when tokenward's socket unit is installed (install.sh's copy
    /// or a package's) and the daemon runs at the socket the unit names.
    pub fn detect(socket: &Path) -> DaemonCommands {
        let runtime = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from);
        let unit_socket = runtime.map(|r| r.join("tokenward").join("daemon.sock"));
        let config = std::env::var_os("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")));
        let unit_installed = config
            .map(|c| c.join("systemd/user/tokenward.socket"))
            .into_iter()
            .chain([PathBuf::from("/usr/lib/systemd/user/tokenward.socket")])
            .any(|unit| unit.is_file());
        if unit_installed && unit_socket.as_deref() == Some(socket) {
            DaemonCommands::SYSTEMD
        } else {
            DaemonCommands::PLAIN
        }
    }
}

/// The daemon's version against this CLI's.
pub fn check_version(status: &Status, cli_version: &str, commands: &DaemonCommands) -> Finding {
    if status.version == cli_version {
        Finding::ok("version", format!("daemon and CLI are both {cli_version}"))
    } else {
        Finding::warn(
            "version",
            format!(
                "the daemon (pid {}) runs {}, this CLI is {cli_version}: restart it to use the installed build",
                status.pid, status.version
            ),
        )
        .fix(commands.restart)
    }
}

/// The vault backend: locked or not, and how long it keeps tokens.
/// `env_override` is TOKENWARD_BACKEND, which wins over the config file.
pub fn check_vault(
    status: &Status,
    config_file: &Path,
    env_override: Option<&str>,
    commands: &DaemonCommands,
) -> Finding {
    let name = &status.backend;
    if status.locked {
        return Finding::fail(
            "vault",
            format!("the {name} vault is locked: no token can be handed out"),
        )
        .fix("tokenward unlock");
    }
    if name == "env" {
        return Finding::ok(
            "vault",
            "env (CI mode): tokens come from TOKENWARD_TOKEN and nothing is written",
        );
    }
    if status.persistence == "until reboot" {
        return Finding::warn(
            "vault",
            format!(
                "{name} keeps tokens only until reboot (the kernel keyring); they must be added again after it"
            ),
        )
        .fix(match env_override {
            Some(value) => format!(
                "for tokens that survive a reboot set TOKENWARD_BACKEND (now '{value}') to secret-service (desktop) or file (headless), then {}",
                commands.restart
            ),
            None => format!(
                "for tokens that survive a reboot set \"backend\": \"secret-service\" (desktop) or \"file\" (headless) in {}, then {}",
                config_file.display(),
                commands.restart
            ),
        });
    }
    Finding::ok(
        "vault",
        format!("{name}, unlocked, keeps tokens {}", status.persistence),
    )
}

/// Whether a `credential.helper` value runs our helper (any install path);
/// the same rule `setup git` uses to find its own entry.
pub fn is_our_helper(value: &str) -> bool {
    let value = value.trim().trim_matches(['\'', '"']);
    value == "tokenward"
        || value.ends_with("git-credential-tokenward")
        || value.ends_with(&format!(
            "git-credential-tokenward{}",
            std::env::consts::EXE_SUFFIX
        ))
}

/// git's global config: `helpers` are the `credential.helper` values in
/// order, `use_http_path` the `credential.useHttpPath` values. `runnable`
/// says whether a helper value of ours points at a program that exists.
pub fn check_git(
    helpers: &[String],
    use_http_path: &[String],
    runnable: impl Fn(&str) -> bool,
) -> Vec<Finding> {
    const FIX: &str = "tokenward setup git --global";
    let mut findings = Vec::new();
    // An empty value resets the list: only what follows the last one counts.
    let effective = match helpers.iter().rposition(|h| h.trim().is_empty()) {
        Some(reset) => &helpers[reset + 1..],
        None => helpers,
    };
    match effective.iter().position(|h| is_our_helper(h)) {
        None => findings.push(
            Finding::fail(
                "git",
                "git does not ask tokenward for credentials (no credential.helper of ours in the global config)",
            )
            .fix(FIX),
        ),
        Some(at) => {
            let ours = &effective[at];
            if !runnable(ours) {
                findings.push(
                    Finding::fail(
                        "git",
                        format!("credential.helper is '{ours}', but that helper is not installed there"),
                    )
                    .fix(FIX),
                );
            } else if at > 0 {
                findings.push(
                    Finding::warn(
                        "git",
                        format!(
                            "git asks {} before tokenward; its answers win",
                            effective[..at].join(", ")
                        ),
                    )
                    .fix(FIX),
                );
            } else {
                findings.push(Finding::ok("git", format!("credential.helper = {ours}")));
            }
        }
    }
    // git uses the last value of a single-valued key.
    let http_path = use_http_path.last().map(|v| v.trim().to_ascii_lowercase());
    if matches!(http_path.as_deref(), Some("true" | "yes" | "on" | "1")) {
        findings.push(Finding::ok("git", "credential.useHttpPath = true"));
    } else {
        findings.push(
            Finding::warn(
                "git",
                "credential.useHttpPath is not true: git sends no path, so repository-scoped tokens never match",
            )
            .fix(FIX),
        );
    }
    findings
}

/// Whether a helper value of ours can run: an absolute path must be an
/// existing file; the bare name needs `git-credential-tokenward` on PATH.
pub fn helper_runnable(value: &str) -> bool {
    let value = value.trim();
    let unquoted = value.trim_matches(['\'', '"']);
    if value == "tokenward" {
        return find_on_path(&format!(
            "git-credential-tokenward{}",
            std::env::consts::EXE_SUFFIX
        ))
        .is_some();
    }
    // setup quotes a path with spaces as '…' (with '\'' for a quote).
    let path = unquoted.replace(r"'\''", "'");
    Path::new(&path).is_file()
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// hg: `configured` is `hg config extensions.tokenward`'s value, or `None`
/// when hg has no such setting; `installed` whether hg runs at all.
pub fn check_hg(installed: bool, configured: Option<&str>) -> Finding {
    const FIX: &str = "tokenward setup hg";
    if !installed {
        return Finding::ok("hg", "hg is not installed (nothing to check)");
    }
    let Some(value) = configured.map(str::trim) else {
        return Finding::warn(
            "hg",
            "hg does not use the tokenward extension (not in your hgrc)",
        )
        .fix(FIX);
    };
    if value.starts_with('!') {
        return Finding::warn(
            "hg",
            "the tokenward extension is disabled in your hgrc ('!')",
        )
        .fix(FIX);
    }
    if value.is_empty() {
        // hg then imports a module named tokenward from its own path.
        return Finding::ok("hg", "the tokenward extension is enabled");
    }
    let path = expand_home(value);
    if path.is_file() {
        Finding::ok(
            "hg",
            format!("the tokenward extension is enabled ({})", path.display()),
        )
    } else {
        Finding::fail(
            "hg",
            format!(
                "your hgrc enables the tokenward extension at {}, which does not exist (hg warns on every command)",
                path.display()
            ),
        )
        .fix(FIX)
    }
}

fn expand_home(value: &str) -> PathBuf {
    match (value.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(value),
    }
}

/// Expired, soon-expiring and rejected tokens.
pub fn check_tokens(tokens: &[TokenInfo], now: OffsetDateTime) -> Vec<Finding> {
    let mut findings = Vec::new();
    for token in tokens {
        let m = &token.meta;
        let what = if m.label.is_empty() {
            format!("{} ({})", m.url, m.role)
        } else {
            format!("{} ({}, \"{}\")", m.url, m.role, m.label)
        };
        let check = format!("token {}", m.id);
        if m.state == TokenState::Rejected {
            let when = m
                .rejected_at
                .map(|t| format!(" on {}", format_time(t)))
                .unwrap_or_default();
            let why = m
                .rejected_reason
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default();
            findings.push(
                Finding::fail(
                    check,
                    format!("{what} was rejected{when}{why}; it is no longer offered"),
                )
                .fix(format!(
                    "tokenward token restore {}   # if the server accepts it again",
                    m.id
                ))
                .fix(format!(
                    "tokenward token rotate {}    # with a new token from the server",
                    m.id
                )),
            );
        } else if let Some(expires) = m.expires {
            if expires <= now {
                findings.push(
                    Finding::fail(
                        check,
                        format!(
                            "{what} expired on {}; it is no longer offered",
                            format_time(expires)
                        ),
                    )
                    .fix(format!("tokenward token rm {}", m.id))
                    .fix(replacement(token)),
                );
            } else if expires - now <= EXPIRY_WARNING {
                findings.push(
                    Finding::warn(check, format!("{what} expires on {}", format_time(expires)))
                        .fix(format!(
                            "create a new token on the server, then: tokenward token rm {} && {}",
                            m.id,
                            replacement(token)
                        )),
                );
            }
        }
    }
    if findings.is_empty() {
        let active = tokens.len();
        findings.push(Finding::ok(
            "tokens",
            if active == 0 {
                "no tokens yet (add one with 'tokenward token add URL --user NAME')".to_owned()
            } else {
                format!("{active} token(s), none expired, rejected or expiring within 7 days")
            },
        ));
    }
    findings
}

/// The `token add` command that recreates `token` with a new secret.
fn replacement(token: &TokenInfo) -> String {
    let m = &token.meta;
    let mut command = format!("tokenward token add {}", shell_word(&m.url));
    if let Some(user) = &m.username {
        command.push_str(&format!(" --user {}", shell_word(user)));
    }
    command.push_str(&format!(" --role {} --auth {}", m.role, m.auth));
    if !m.label.is_empty() {
        command.push_str(&format!(" --label {}", shell_word(&m.label)));
    }
    command.push_str(" --expires 90d");
    command
}

fn shell_word(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/:._-@+=,%".contains(c));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// `host` and `port` of a relay's upstream URL.
pub fn upstream_addr(upstream: &str) -> Option<(String, u16)> {
    let scope = Scope::parse(upstream).ok()?;
    Some((scope.host, scope.port))
}

/// Relays the daemon runs: their own error, and whether the upstream
/// accepts a TCP connection within `timeout`.
pub fn check_relays(relays: &[RelayStatus], timeout: Duration) -> Vec<Finding> {
    relays
        .iter()
        .map(|relay| {
            let check = format!("relay {}", relay.id);
            let remove = format!("tokenward relay rm {}", relay.id);
            if let Some(error) = &relay.error {
                return Finding::fail(
                    check,
                    format!("{} -> {}: {error}", relay.listen, relay.upstream),
                )
                .fix(remove);
            }
            let Some((host, port)) = upstream_addr(&relay.upstream) else {
                return Finding::fail(
                    check,
                    format!("the upstream '{}' is not a URL", relay.upstream),
                )
                .fix(remove);
            };
            match connect(&host, port, timeout) {
                Ok(()) => Finding::ok(
                    check,
                    format!("{} -> {} (upstream answers)", relay.listen, relay.upstream),
                ),
                Err(why) => Finding::fail(
                    check,
                    format!(
                        "{} -> {}: the upstream does not answer ({why})",
                        relay.listen, relay.upstream
                    ),
                )
                .fix("check the network (VPN, proxy, DNS) and the server")
                .fix(remove),
            }
        })
        .collect()
}

fn connect(host: &str, port: u16, timeout: Duration) -> Result<(), String> {
    use std::net::{TcpStream, ToSocketAddrs};
    let addrs: Vec<_> = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .collect();
    let mut last = format!("{host} has no address");
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(_) => return Ok(()),
            Err(e) => last = format!("{addr}: {e}"),
        }
    }
    Err(last)
}

/// Everything the daemon tells doctor, or why it could not.
enum Daemon {
    Up(Box<Status>, Vec<TokenInfo>),
    Down(Finding),
}

/// The last error the daemon logged, without its timestamp: why a
/// detached daemon did not start (a vault it cannot open, a socket dir it
/// refuses). The log never holds a secret.
pub fn last_logged_error(log: &Path) -> Option<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(log).ok()?;
    let length = file.metadata().ok()?.len();
    file.seek(SeekFrom::Start(length.saturating_sub(64 * 1024)))
        .ok()?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail).ok()?;
    let text = String::from_utf8_lossy(&tail);
    let line = text.lines().rev().find(|l| l.contains(" ERROR "))?;
    let (_, message) = line.split_once(" ERROR ")?;
    Some(message.trim().to_owned())
}

fn ask_daemon(socket: &Path, commands: &DaemonCommands) -> Daemon {
    let down = |message: String| {
        let log = crate::config::Dirs::resolve().ok().map(|d| d.log_file());
        let logged = log
            .as_deref()
            .and_then(|path| last_logged_error(path).map(|e| (path, e)))
            .map(|(path, e)| format!("; the last error in {} was: {e}", path.display()))
            .unwrap_or_default();
        Daemon::Down(
            Finding::fail(
                "daemon",
                format!("{message} (vault, version, tokens and relays not checked){logged}"),
            )
            .fix(commands.start),
        )
    };
    let mut client = match Client::connect(socket) {
        Ok(client) => client,
        Err(ClientError::NotRunning(path)) => {
            return down(format!(
                "not running (nothing listens on {})",
                path.display()
            ))
        }
        Err(e) => return down(e.to_string()),
    };
    let status = match client.call(Request::Status) {
        Ok(response) => response.status,
        Err(e) => return down(format!("it does not answer properly: {e}")),
    };
    let Some(status) = status else {
        return down("it sent no status".to_owned());
    };
    let tokens = client
        .call(Request::List { all: true })
        .ok()
        .and_then(|r| r.tokens)
        .unwrap_or_default();
    Daemon::Up(status, tokens)
}

/// `git config --global --get-all KEY`; `None` when git cannot run.
fn git_config(key: &str) -> Option<Vec<String>> {
    let out = Command::new("git")
        .args(["config", "--global", "--get-all", key])
        .output()
        .ok()?;
    // 1: the key is not set, which is an answer too.
    match out.status.code() {
        Some(0 | 1) => Some(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(str::to_owned)
                .collect(),
        ),
        _ => None,
    }
}

/// `(installed, value)` of `hg config extensions.tokenward`.
fn hg_config() -> (bool, Option<String>) {
    let out = Command::new("hg")
        .args(["config", "extensions.tokenward"])
        .env("HGPLAIN", "1")
        .output();
    match out {
        Err(_) => (false, None),
        Ok(out) if out.status.success() => (
            true,
            Some(String::from_utf8_lossy(&out.stdout).trim().to_owned()),
        ),
        Ok(_) => (true, None),
    }
}

/// Runs every check and returns the findings in report order.
pub fn diagnose() -> Vec<Finding> {
    let mut findings = Vec::new();
    let socket = crate::paths::socket_path();
    if let Some(dir) = socket.parent() {
        findings.push(check_socket_dir(dir, crate::paths::current_uid()));
    }
    let commands = DaemonCommands::detect(&socket);
    match ask_daemon(&socket, &commands) {
        Daemon::Down(finding) => findings.push(finding),
        Daemon::Up(status, tokens) => {
            findings.push(Finding::ok(
                "daemon",
                format!("running (pid {}) on {}", status.pid, status.socket),
            ));
            findings.push(check_version(&status, env!("CARGO_PKG_VERSION"), &commands));
            let config_file = crate::config::Dirs::resolve()
                .map(|d| d.config_file())
                .unwrap_or_else(|_| PathBuf::from("config.json"));
            let env_backend = std::env::var("TOKENWARD_BACKEND")
                .ok()
                .filter(|b| !b.is_empty());
            findings.push(check_vault(
                &status,
                &config_file,
                env_backend.as_deref(),
                &commands,
            ));
            findings.extend(check_tokens(&tokens, OffsetDateTime::now_utc()));
            findings.extend(check_relays(&status.relays, UPSTREAM_TIMEOUT));
        }
    }
    match (
        git_config("credential.helper"),
        git_config("credential.useHttpPath"),
    ) {
        (Some(helpers), Some(http_path)) => {
            findings.extend(check_git(&helpers, &http_path, helper_runnable));
        }
        _ => findings.push(
            Finding::warn(
                "git",
                "git is not installed or cannot read its global config",
            )
            .fix("install git, then: tokenward setup git --global"),
        ),
    }
    let (installed, value) = hg_config();
    findings.push(check_hg(installed, value.as_deref()));
    findings
}

/// The report as printed: one line per finding, fixes indented below.
pub fn render(findings: &[Finding]) -> String {
    let mut out = String::new();
    for f in findings {
        out.push_str(&format!(
            "{:<4}  {}: {}\n",
            f.level.label(),
            f.check,
            f.message
        ));
        for fix in &f.fixes {
            out.push_str(&format!("      fix: {fix}\n"));
        }
    }
    out
}

/// Runs `tokenward doctor`.
pub fn run() -> Result<()> {
    let findings = diagnose();
    print!("{}", render(&findings));
    let failed = findings.iter().filter(|f| f.level == Level::Fail).count();
    let warned = findings.iter().filter(|f| f.level == Level::Warn).count();
    if failed > 0 {
        bail!("{failed} problem(s) and {warned} warning(s); the fixes are above");
    }
    if warned > 0 {
        println!("no problems, {warned} warning(s)");
    } else {
        println!("everything looks fine");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::TokenCounts;

    fn status(version: &str, backend: &str, persistence: &str, locked: bool) -> Status {
        Status {
            pid: 42,
            version: version.to_owned(),
            backend: backend.to_owned(),
            persistence: persistence.to_owned(),
            locked,
            tokens: TokenCounts::default(),
            relays: Vec::new(),
            socket: "/run/tw.sock".to_owned(),
            data_dir: "/data".to_owned(),
            socket_activated: false,
        }
    }

    fn token(id: &str, extra: serde_json::Value) -> TokenInfo {
        let mut value = serde_json::json!({
            "id": id, "url": "https://h.example/team", "username": "alice", "role": "vcs",
            "label": "CI laptop", "auth": "basic", "created": "2026-01-01T00:00:00Z",
            "fingerprint": "a1b2c3d4e5f6"
        });
        if let (Some(map), Some(extra)) = (value.as_object_mut(), extra.as_object()) {
            map.extend(extra.clone());
        }
        serde_json::from_value(value).expect("token")
    }

    #[cfg(unix)]
    #[test]
    fn socket_dir_must_be_private_and_ours() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let me = crate::paths::current_uid();
        let sock = dir.path().join("run");
        assert_eq!(check_socket_dir(&sock, me).level, Level::Ok);
        std::fs::create_dir(&sock).expect("mkdir");
        std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let f = check_socket_dir(&sock, me);
        assert_eq!(f.level, Level::Fail);
        assert!(f.message.contains("755"), "{f:?}");
        assert_eq!(f.fixes, [format!("chmod 700 {}", sock.display())]);
        std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        assert_eq!(check_socket_dir(&sock, me).level, Level::Ok);
        let f = check_socket_dir(&sock, me.wrapping_add(1));
        assert_eq!(f.level, Level::Fail);
        assert!(f.message.contains("not to you"), "{f:?}");
    }

    #[test]
    fn version_and_vault() {
        let s = status("0.1.0", "secret-service", "until deleted", false);
        assert_eq!(
            check_version(&s, "0.1.0", &DaemonCommands::PLAIN).level,
            Level::Ok
        );
        let f = check_version(&s, "0.2.0", &DaemonCommands::PLAIN);
        assert_eq!(f.level, Level::Warn);
        assert_eq!(f.fixes, ["tokenward stop && tokenward start"]);

        let config = Path::new("/c/config.json");
        assert_eq!(
            check_vault(&s, config, None, &DaemonCommands::PLAIN).level,
            Level::Ok
        );
        let f = check_vault(
            &status("0.1.0", "file", "until deleted", true),
            config,
            None,
            &DaemonCommands::PLAIN,
        );
        assert_eq!(
            (f.level, f.fixes.as_slice()),
            (Level::Fail, &["tokenward unlock".to_owned()][..])
        );
        let keyutils = status("0.1.0", "keyutils", "until reboot", false);
        let f = check_vault(&keyutils, config, None, &DaemonCommands::PLAIN);
        assert_eq!(f.level, Level::Warn);
        assert!(f.message.contains("until reboot"), "{f:?}");
        assert!(f.fixes[0].contains("/c/config.json"), "{f:?}");
        let f = check_vault(
            &keyutils,
            config,
            Some("keyutils"),
            &DaemonCommands::SYSTEMD,
        );
        assert!(
            f.fixes[0].contains("TOKENWARD_BACKEND (now 'keyutils')"),
            "{f:?}"
        );
        assert!(
            f.fixes[0].ends_with("systemctl --user restart tokenward.service"),
            "{f:?}"
        );
        let env = status("0.1.0", "env", "never written", false);
        assert_eq!(
            check_vault(&env, config, None, &DaemonCommands::PLAIN).level,
            Level::Ok
        );
    }

    #[test]
    fn git_config_checks() {
        let yes = |_: &str| true;
        let v = |items: &[&str]| items.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let levels = |f: Vec<Finding>| f.iter().map(|f| f.level).collect::<Vec<_>>();

        let clean = check_git(
            &v(&["/bin/git-credential-tokenward", "store"]),
            &v(&["true"]),
            yes,
        );
        assert_eq!(levels(clean), [Level::Ok, Level::Ok]);

        let none = check_git(&[], &[], yes);
        assert_eq!(levels(none.clone()), [Level::Fail, Level::Warn]);
        assert!(none
            .iter()
            .all(|f| f.fixes == ["tokenward setup git --global"]));

        // a reset after ours drops it
        let reset = check_git(&v(&["tokenward", "", "store"]), &v(&["true"]), yes);
        assert_eq!(reset[0].level, Level::Fail);
        // another helper first wins
        let second = check_git(
            &v(&["store", "'/a b/git-credential-tokenward'"]),
            &v(&["1"]),
            yes,
        );
        assert_eq!(levels(second), [Level::Warn, Level::Ok]);
        // a helper that is gone
        let gone = check_git(
            &v(&["/gone/git-credential-tokenward"]),
            &v(&["false", "true"]),
            |_| false,
        );
        assert_eq!(levels(gone), [Level::Fail, Level::Ok]);
        let off = check_git(&v(&["tokenward"]), &v(&["true", "false"]), yes);
        assert_eq!(off[1].level, Level::Warn);
    }

    #[test]
    fn helper_paths() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spaced = dir.path().join("it's here");
        std::fs::create_dir(&spaced).expect("mkdir");
        let helper = spaced.join("git-credential-tokenward");
        std::fs::write(&helper, "").expect("write");
        let quoted = format!("'{}'", helper.display().to_string().replace('\'', r"'\''"));
        assert!(helper_runnable(&quoted));
        assert!(!helper_runnable("/nonexistent/git-credential-tokenward"));
        assert!(is_our_helper(&quoted));
        assert!(is_our_helper("tokenward"));
        assert!(!is_our_helper("cache --timeout=60"));
    }

    #[test]
    fn hg_checks() {
        assert_eq!(check_hg(false, None).level, Level::Ok);
        let f = check_hg(true, None);
        assert_eq!(
            (f.level, f.fixes.as_slice()),
            (Level::Warn, &["tokenward setup hg".to_owned()][..])
        );
        assert_eq!(check_hg(true, Some("!")).level, Level::Warn);
        assert_eq!(
            check_hg(true, Some("/nonexistent/tokenward.py")).level,
            Level::Fail
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let ext = dir.path().join("tokenward.py");
        std::fs::write(&ext, "").expect("write");
        assert_eq!(
            check_hg(true, Some(&ext.display().to_string())).level,
            Level::Ok
        );
    }

    #[test]
    fn token_checks() {
        let now = OffsetDateTime::parse(
            "2026-06-01T00:00:00Z",
            &time::format_description::well_known::Rfc3339,
        )
        .expect("time");
        let fine = [
            token("tw_000001", serde_json::json!({})),
            token(
                "tw_000002",
                serde_json::json!({"expires": "2026-07-01T00:00:00Z"}),
            ),
        ];
        let f = check_tokens(&fine, now);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].level, Level::Ok);
        assert_eq!(check_tokens(&[], now)[0].level, Level::Ok);

        let bad = [
            token(
                "tw_000003",
                serde_json::json!({"expires": "2026-05-01T00:00:00Z"}),
            ),
            token(
                "tw_000004",
                serde_json::json!({"expires": "2026-06-03T00:00:00Z"}),
            ),
            token(
                "tw_000005",
                serde_json::json!({"state": "rejected", "rejected_at": "2026-05-30T10:00:00Z",
                                   "rejected_reason": "refused by the server"}),
            ),
        ];
        let f = check_tokens(&bad, now);
        assert_eq!(
            f.iter().map(|f| f.level).collect::<Vec<_>>(),
            [Level::Fail, Level::Warn, Level::Fail]
        );
        assert!(f[0].message.contains("expired on 2026-05-01"), "{:?}", f[0]);
        assert_eq!(
            f[0].fixes,
            [
                "tokenward token rm tw_000003".to_owned(),
                "tokenward token add https://h.example/team --user alice --role vcs --auth basic --label 'CI laptop' --expires 90d".to_owned()
            ]
        );
        assert!(f[1].message.contains("expires on 2026-06-03"), "{:?}", f[1]);
        assert!(
            f[2].message.contains("rejected on 2026-05-30"),
            "{:?}",
            f[2]
        );
        assert!(f[2].fixes[0].starts_with("tokenward token restore tw_000005"));
        assert!(f[2].fixes[1].starts_with("tokenward token rotate tw_000005"));
        assert!(render(&f).lines().all(|l| !l.contains("a1b2c3")));
    }

    #[test]
    fn relay_checks() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let open = listener.local_addr().expect("addr").port();
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let relay = |id: &str, upstream: String, error: Option<&str>| RelayStatus {
            id: id.to_owned(),
            upstream,
            listen: "127.0.0.1:8765".to_owned(),
            requests: 0,
            bytes_up: 0,
            bytes_down: 0,
            error: error.map(str::to_owned),
        };
        let relays = [
            relay("r1", format!("http://127.0.0.1:{open}/base"), None),
            relay("r2", format!("http://127.0.0.1:{closed}"), None),
            relay(
                "r3",
                format!("http://127.0.0.1:{open}"),
                Some("cannot bind"),
            ),
            relay("r4", "not a url".to_owned(), None),
        ];
        let f = check_relays(&relays, Duration::from_secs(2));
        assert_eq!(
            f.iter().map(|f| f.level).collect::<Vec<_>>(),
            [Level::Ok, Level::Fail, Level::Fail, Level::Fail]
        );
        assert!(f[1].message.contains("does not answer"), "{:?}", f[1]);
        assert!(f[1].fixes.contains(&"tokenward relay rm r2".to_owned()));
        assert_eq!(
            upstream_addr("https://H.example"),
            Some(("h.example".to_owned(), 443))
        );
    }

    #[test]
    fn last_error_of_the_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("daemon.log");
        assert_eq!(last_logged_error(&log), None);
        std::fs::write(
            &log,
            "2026-01-01T00:00:00Z  INFO tokenward: started\n\
             2026-01-01T00:00:01Z ERROR tokenward: cannot open the vault: locked\n\
             2026-01-01T00:00:02Z  INFO tokenward: bye\n",
        )
        .expect("write");
        assert_eq!(
            last_logged_error(&log).as_deref(),
            Some("tokenward: cannot open the vault: locked")
        );
    }

    #[test]
    fn render_is_one_line_per_finding_with_fixes() {
        let text = render(&[
            Finding::ok("daemon", "running"),
            Finding::fail("git", "not set up").fix("tokenward setup git --global"),
        ]);
        assert_eq!(
            text,
            "ok    daemon: running\nFAIL  git: not set up\n      fix: tokenward setup git --global\n"
        );
    }
}
