//! The `tokenward` binary: the daemon and its command line.

#![deny(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

use anyhow::Result;
use clap::Parser;
use tokenward::cli::{self, Cli, Command};

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Daemon { detached } => run_daemon(detached),
        command @ Command::Relay(_) => init_logging(false).and_then(|()| cli::run(command)),
        command => cli::run(command),
    };
    if let Err(e) = result {
        let message = format!("{e:#}").replace(['\n', '\r'], " ");
        eprintln!("tokenward: {message}");
        std::process::exit(1);
    }
}

fn run_daemon(detached: bool) -> Result<()> {
    init_logging(detached)?;
    forbid_core_dumps();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let options = tokenward::daemon::DaemonOptions {
        socket_path: tokenward::paths::socket_path(),
    };
    let result = runtime.block_on(tokenward::daemon::run(options));
    if let (true, Err(e)) = (detached, &result) {
        tracing::error!("{}", format!("{e:#}").replace(['\n', '\r'], " "));
    }
    // A keychain call stuck past its timeout must not keep the process alive.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    result
}

/// The daemon holds every secret in memory: a core dump would write them
/// to disk, and a dumpable process can be read through ptrace and
/// /proc/PID/mem by any process of the same user. Not dumpable, the kernel
/// writes no core and makes its /proc files root's.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn forbid_core_dumps() {
    // SAFETY: prctl(PR_SET_DUMPABLE, 0) takes only integer arguments, reads
    // and writes no memory of this process, and changes one flag of its mm.
    let result = unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    if result != 0 {
        tracing::warn!(
            "cannot disable core dumps: {}",
            std::io::Error::last_os_error()
        );
    }
}

#[cfg(not(target_os = "linux"))]
fn forbid_core_dumps() {}

/// Logs go to stderr, or to the data dir's daemon.log when detached; the
/// level comes from TOKENWARD_LOG (EnvFilter syntax), default `info`.
fn init_logging(detached: bool) -> Result<()> {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_env("TOKENWARD_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if detached {
        if let Some(path) = cli::log_file() {
            if let Some(dir) = path.parent() {
                tokenward::atomic::create_private_dir(dir)?;
            }
            let mut options = std::fs::OpenOptions::new();
            options.create(true).append(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let file = options.open(&path)?;
            builder
                .with_ansi(false)
                .with_writer(std::sync::Mutex::new(file))
                .init();
            return Ok(());
        }
    }
    builder.with_writer(std::io::stderr).init();
    Ok(())
}
