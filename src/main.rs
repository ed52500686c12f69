//! The `tokenward` binary: the daemon and its command line.

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
