//! The `tokenward` command line: argument parsing and what each command
//! prints. Everything but `daemon` is a client of the daemon's socket.

use crate::client::{self, Client, ClientError};
use crate::protocol::{NewToken, Request, Response, TokenInfo};
use crate::secret::Secret;
use crate::token::{self, AuthKind, Role, TokenState};
use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "tokenward",
    version,
    about = "Scoped access tokens for git and Mercurial, kept in the OS keychain"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the daemon in the foreground (for systemd, launchd, or debugging).
    Daemon {
        /// Log to the data dir's daemon.log instead of stderr.
        #[arg(long)]
        detached: bool,
    },
    /// Start the daemon in the background.
    Start,
    /// Ask the daemon to exit.
    Stop,
    /// Show the daemon's pid, version, backend and token counts.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Add, list and manage tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Unlock the file vault (passphrase from stdin when piped, else a prompt).
    Unlock,
    /// Lock the file vault and forget cached secrets.
    Lock,
    /// Point git (credential.helper) or hg (the extension) at tokenward.
    Setup {
        tool: Tool,
        /// git: the user's global config instead of the current repository's.
        #[arg(long)]
        global: bool,
    },
    /// Undo `setup`, restoring what was configured before.
    Unsetup {
        tool: Tool,
        #[arg(long)]
        global: bool,
    },
    /// The authenticating relay (a local reverse proxy).
    #[command(subcommand)]
    Relay(RelayCommand),
    /// Check the daemon, vault, socket, git and hg setup and the tokens; print fixes.
    Doctor,
    /// Print URL with its web token appended as auth_token=… .
    ///
    /// For RhodeCode's views that take a token in the query string (archives,
    /// raw files, diffs). The printed URL CONTAINS THE SECRET: this is the one
    /// command that prints a token, on purpose; mind where you paste it.
    /// Needs a token with role web (or all) whose scope matches URL.
    Url {
        /// http(s)://host[:port]/path[?query][#fragment]
        url: String,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Print the man page (roff).
    #[command(hide = true)]
    Man,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Tool {
    Git,
    Hg,
}

#[derive(Subcommand)]
pub enum RelayCommand {
    /// Serve in the foreground (with TOKENWARD_TOKEN set: CI mode, no daemon).
    Serve {
        /// The server: http(s)://host[:port][/base]
        upstream: String,
        /// Loopback address to listen on, e.g. 127.0.0.1:8765 (port 0: any free port).
        #[arg(long)]
        listen: String,
        /// Trust this PEM CA bundle instead of the system roots.
        #[arg(long)]
        ca_file: Option<PathBuf>,
    },
    /// Keep a relay in the config; the daemon runs it from now on.
    Add {
        upstream: String,
        /// Loopback address to listen on (default: a free port on 127.0.0.1, fixed now).
        #[arg(long)]
        listen: Option<String>,
        #[arg(long)]
        ca_file: Option<PathBuf>,
    },
    /// The daemon's relays with what they served.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Stop a relay and forget it.
    Rm { id: String },
}

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Add a token; the secret is read from stdin when piped, else prompted for.
    Add(AddArgs),
    /// List tokens (never their secrets).
    List {
        /// Include rejected tokens.
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
    },
    /// Remove a token and its secret.
    Rm { id: String },
    /// Make a rejected token active again.
    Restore { id: String },
    /// Replace a token's secret (read like `add`).
    Rotate { id: String },
    /// Import the API tokens of a RhodeCode ~/.rhoderc file.
    ///
    /// Each [instance:NAME] section with api_host and api_key becomes an
    /// `api` token scoped to api_host, labelled NAME, presented as
    /// auth_token (auth query; no username). Running it again adds nothing
    /// twice; a changed api_key rotates the existing token.
    ImportRhoderc {
        /// The file to read (default: ~/.rhoderc).
        file: Option<PathBuf>,
    },
}

#[derive(Args)]
pub struct AddArgs {
    /// Scope: scheme://host[:port][/path]
    pub url: String,
    /// The account the token belongs to (required for basic auth).
    #[arg(long = "user")]
    pub user: Option<String>,
    /// vcs, api, feed, web or all.
    #[arg(long, default_value = "vcs")]
    pub role: Role,
    /// A date (2027-01-31), an RFC 3339 time, a duration (90d, 12h, 30m) or never.
    #[arg(long)]
    pub expires: Option<String>,
    #[arg(long, default_value = "")]
    pub label: String,
    /// How the relay presents it: basic, bearer or query.
    #[arg(long, default_value = "basic")]
    pub auth: AuthKind,
}

impl clap::builder::ValueParserFactory for Role {
    type Parser = clap::builder::ValueParser;
    fn value_parser() -> Self::Parser {
        clap::builder::ValueParser::new(|s: &str| s.parse::<Role>())
    }
}

impl clap::builder::ValueParserFactory for AuthKind {
    type Parser = clap::builder::ValueParser;
    fn value_parser() -> Self::Parser {
        clap::builder::ValueParser::new(|s: &str| s.parse::<AuthKind>())
    }
}

/// Runs a client command (everything but `daemon`).
pub fn run(command: Command) -> Result<()> {
    match command {
        Command::Daemon { .. } => bail!("internal: the daemon runs from main"),
        Command::Start => start(),
        Command::Stop => stop(),
        Command::Status { json } => status(json),
        Command::Token(command) => token_command(command),
        Command::Unlock => {
            let passphrase = read_secret("Vault passphrase: ")?;
            connect(true)?.call(Request::Unlock { passphrase })?;
            println!("the file vault is unlocked");
            Ok(())
        }
        Command::Lock => {
            connect(false)?.call(Request::Lock)?;
            println!("the vault is locked");
            Ok(())
        }
        Command::Setup {
            tool: Tool::Git,
            global,
        } => print_done(crate::setup::setup_git(global)),
        Command::Unsetup {
            tool: Tool::Git,
            global,
        } => print_done(crate::setup::unsetup_git(global)),
        Command::Setup { tool: Tool::Hg, .. } => {
            let path = crate::hgsetup::default_extension_path();
            crate::hgsetup::install_extension(&path)?;
            print_done(crate::hgsetup::setup_hg(&path))
        }
        Command::Unsetup { tool: Tool::Hg, .. } => print_done(crate::hgsetup::unsetup_hg()),
        Command::Doctor => crate::doctor::run(),
        Command::Url { url } => crate::weburl::run(&url),
        Command::Completions { shell } => crate::completions::print_completions(shell),
        Command::Man => crate::completions::print_man(),
        Command::Relay(RelayCommand::Serve {
            upstream,
            listen,
            ca_file,
        }) => {
            // One thread: a relayed push hands every frame from the client's
            // connection to the upstream's, and keeping both on one thread
            // saves the cross-thread wake-ups (1 GiB push: 0.74x -> 0.83x of
            // direct on 2 cores, where curl and nginx need the other core).
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(crate::relay::run_serve(
                &upstream,
                &listen,
                ca_file.as_deref(),
            ))
        }
        Command::Relay(RelayCommand::Add {
            upstream,
            listen,
            ca_file,
        }) => {
            let ca_file = match ca_file {
                Some(path) => Some(
                    std::fs::canonicalize(&path)
                        .with_context(|| format!("cannot read {}", path.display()))?
                        .display()
                        .to_string(),
                ),
                None => None,
            };
            let response = connect(true)?.call(Request::RelayAdd {
                upstream,
                listen,
                ca_file,
            })?;
            for relay in response.relays.unwrap_or_default() {
                println!(
                    "relay {}: http://{} -> {}",
                    relay.id, relay.listen, relay.upstream
                );
            }
            Ok(())
        }
        Command::Relay(RelayCommand::List { json }) => {
            let relays = connect(true)?
                .call(Request::RelayList)?
                .relays
                .unwrap_or_default();
            if json {
                println!("{}", serde_json::to_string_pretty(&relays)?);
            } else if relays.is_empty() {
                println!("no relays (add one with 'tokenward relay add https://your.server')");
            }
            for relay in relays.iter().filter(|_| !json) {
                println!("{}", describe_relay(relay));
            }
            Ok(())
        }
        Command::Relay(RelayCommand::Rm { id }) => simple(
            Request::RelayRemove { id: id.clone() },
            &format!("removed relay {id}"),
        ),
    }
}

/// One line: id, address, upstream, traffic, and the error if it is down.
fn describe_relay(relay: &crate::protocol::RelayStatus) -> String {
    let error = relay
        .error
        .as_deref()
        .map(|e| format!("; ERROR: {e}"))
        .unwrap_or_default();
    format!(
        "{}  http://{} -> {}  ({} requests, {} bytes up, {} bytes down){error}",
        relay.id, relay.listen, relay.upstream, relay.requests, relay.bytes_up, relay.bytes_down
    )
}

fn print_done(result: Result<String>) -> Result<()> {
    println!("{}", result?);
    Ok(())
}

/// The daemon's socket, starting the daemon first when `autostart`.
pub fn connect(autostart: bool) -> Result<Client, ClientError> {
    let socket = crate::paths::socket_path();
    if autostart {
        let program = std::env::current_exe().map_err(ClientError::Io)?;
        Client::connect_or_start(&socket, &program)
    } else {
        Client::connect(&socket)
    }
}

fn start() -> Result<()> {
    let socket = crate::paths::socket_path();
    if Client::connect(&socket).is_ok() {
        println!("the tokenward daemon is already running");
        return Ok(());
    }
    let program = std::env::current_exe().context("cannot find the tokenward binary")?;
    client::start_daemon(&program)?;
    let mut client = client::wait_for_socket(&socket, Duration::from_secs(10)).map_err(|_| {
        let log = crate::config::Dirs::resolve()
            .map(|d| d.log_file().display().to_string())
            .unwrap_or_else(|_| "the daemon log".to_owned());
        anyhow!("the daemon did not start; see {log}")
    })?;
    let response = client.call(Request::Status)?;
    let pid = response.status.map(|s| s.pid).unwrap_or_default();
    println!("the tokenward daemon is running (pid {pid})");
    Ok(())
}

fn stop() -> Result<()> {
    let socket = crate::paths::socket_path();
    let mut client = match Client::connect(&socket) {
        Ok(client) => client,
        Err(ClientError::NotRunning(_)) => {
            println!("the tokenward daemon is not running");
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    let activated = client
        .call(Request::Status)?
        .status
        .is_some_and(|s| s.socket_activated);
    if activated {
        bail!("the daemon runs under systemd socket activation, which would start it again: run 'systemctl --user stop tokenward.socket tokenward.service'");
    }
    client.call(Request::Stop)?;
    drop(client);
    for _ in 0..200 {
        if matches!(Client::connect(&socket), Err(ClientError::NotRunning(_))) {
            println!("the tokenward daemon stopped");
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    bail!("the daemon was asked to stop but is still answering")
}

fn status(json: bool) -> Result<()> {
    let response = connect(false)?.call(Request::Status)?;
    let status = response
        .status
        .ok_or_else(|| anyhow!("the daemon sent no status"))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
        return Ok(());
    }
    println!("tokenward {} (pid {})", status.version, status.pid);
    println!(
        "backend:  {} (persists {}{})",
        status.backend,
        status.persistence,
        if status.locked {
            ", locked: run 'tokenward unlock'"
        } else {
            ""
        }
    );
    println!("socket:   {}", status.socket);
    println!("data:     {}", status.data_dir);
    let t = &status.tokens;
    println!(
        "tokens:   {} ({} active, {} rejected, {} expired)",
        t.total, t.active, t.rejected, t.expired
    );
    if status.relays.is_empty() {
        println!("relays:   none");
    }
    for relay in &status.relays {
        println!("relay:    {}", describe_relay(relay));
    }
    Ok(())
}

fn token_command(command: TokenCommand) -> Result<()> {
    match command {
        TokenCommand::Add(args) => add(args),
        TokenCommand::List { all, json } => {
            let response = connect(true)?.call(Request::List { all })?;
            let tokens = response.tokens.unwrap_or_default();
            if json {
                println!("{}", serde_json::to_string_pretty(&tokens)?);
            } else {
                print_table(&tokens);
            }
            Ok(())
        }
        TokenCommand::Rm { id } => {
            simple(Request::Remove { id: id.clone() }, &format!("removed {id}"))
        }
        TokenCommand::Restore { id } => simple(
            Request::Restore { id: id.clone() },
            &format!("restored {id}"),
        ),
        TokenCommand::ImportRhoderc { file } => crate::rhoderc::run(file),
        TokenCommand::Rotate { id } => {
            let secret = read_secret(&format!("New token for {id}: "))?;
            simple(
                Request::Rotate {
                    id: id.clone(),
                    secret,
                },
                &format!("rotated {id}"),
            )
        }
    }
}

fn simple(request: Request, done: &str) -> Result<()> {
    connect(true)?.call(request)?;
    println!("{done}");
    Ok(())
}

fn add(args: AddArgs) -> Result<()> {
    let scope = token::Scope::parse(&args.url)?;
    let expires = match &args.expires {
        Some(text) => token::parse_expiry(text, time::OffsetDateTime::now_utc())?,
        None => None,
    };
    let needs_user = args.auth == AuthKind::Basic && matches!(args.role, Role::Vcs | Role::All);
    if needs_user && args.user.as_deref().is_none_or(str::is_empty) {
        bail!(
            "--user is required: a {} token is presented with basic auth (username + token)",
            args.role
        );
    }
    let secret = read_secret(&format!("Token for {scope}: "))?;
    let response: Response = connect(true)?.call(Request::Add(NewToken {
        url: scope.to_string(),
        username: args.user,
        role: args.role,
        expires,
        label: args.label,
        auth: args.auth,
        secret,
    }))?;
    let info = response
        .token
        .ok_or_else(|| anyhow!("the daemon did not confirm the token"))?;
    println!(
        "added {} for {} (fingerprint {})",
        info.meta.id, info.meta.url, info.fingerprint
    );
    Ok(())
}

/// Reads a secret from piped stdin, or from a no-echo prompt on the terminal.
fn read_secret(prompt: &str) -> Result<Secret> {
    let secret = if std::io::stdin().is_terminal() {
        Secret::new(rpassword::prompt_password(prompt).context("cannot read from the terminal")?)
    } else {
        let mut text = String::new();
        std::io::stdin()
            .take(64 * 1024)
            .read_to_string(&mut text)
            .context("cannot read the secret from stdin")?;
        let secret = Secret::new(text.trim_end_matches(['\n', '\r']).to_owned());
        zeroize::Zeroize::zeroize(&mut text);
        secret
    };
    if secret.is_empty() {
        bail!("no secret given (pipe it on stdin or type it at the prompt)");
    }
    Ok(secret)
}

fn print_table(tokens: &[TokenInfo]) {
    if tokens.is_empty() {
        println!("no tokens (add one with 'tokenward token add URL --user NAME')");
        return;
    }
    let rows: Vec<[String; 8]> = tokens
        .iter()
        .map(|t| {
            let m = &t.meta;
            let state = match m.state {
                TokenState::Active if m.is_expired(time::OffsetDateTime::now_utc()) => {
                    "expired".to_owned()
                }
                TokenState::Active => "active".to_owned(),
                TokenState::Rejected => "rejected".to_owned(),
            };
            [
                m.id.clone(),
                m.url.clone(),
                m.username.clone().unwrap_or_else(|| "-".to_owned()),
                m.role.to_string(),
                m.expires
                    .map(token::format_time)
                    .unwrap_or_else(|| "never".to_owned()),
                state,
                t.fingerprint.clone(),
                m.label.clone(),
            ]
        })
        .collect();
    let header = [
        "ID",
        "URL",
        "USER",
        "ROLE",
        "EXPIRES",
        "STATE",
        "FINGERPRINT",
        "LABEL",
    ];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = std::io::stdout().lock();
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    let _ = writeln!(out, "{}", line(header.to_vec()));
    for row in &rows {
        let _ = writeln!(out, "{}", line(row.iter().map(String::as_str).collect()));
    }
}

/// Where a detached daemon logs.
pub fn log_file() -> Option<PathBuf> {
    crate::config::Dirs::resolve().ok().map(|d| d.log_file())
}
