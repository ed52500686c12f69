//! The per-user daemon: owns the index, the vault and the secret cache, and
//! answers the wire protocol ([`crate::protocol`]) on a local socket.
//!
//! Design: one [`Daemon`] shared by all connections. Token metadata sits in
//! an `RwLock`; a `get` takes the read lock, picks a token with
//! [`crate::token::select`], and answers from the secret cache, reading the
//! vault (off the runtime, with a timeout) only on a miss. Changes take the
//! write lock for the whole change, so they are serialized, and are written
//! to the index before they are acknowledged. Secrets go to the vault before
//! the index names them; a crash in between leaves an unreachable secret,
//! never an index entry without one. The cache holds [`Secret`]s, wiped when
//! dropped. Shutdown (the `stop` op, SIGTERM, Ctrl-C) stops accepting,
//! removes the socket and returns.

mod handlers;
mod relays;
mod socket;

pub use socket::check_private_dir;

use crate::config::{Config, Dirs};
use crate::fingerprint::Fingerprinter;
use crate::protocol::{decode_request, encode_line, DecodeError, Response, MAX_LINE};
use crate::secret::Secret;
use crate::token::TokenMeta;
use crate::vault::Vault;
use anyhow::{Context, Result};
use interprocess::local_socket::tokio::{prelude::*, Stream};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{watch, RwLock};

/// Everything a request handler needs.
pub struct Daemon {
    dirs: Dirs,
    config: Mutex<Config>,
    socket_path: PathBuf,
    vault: Vault,
    socket_activated: bool,
    /// Tokens that live only in memory (the env backend's one token).
    ephemeral: bool,
    tokens: RwLock<Vec<TokenMeta>>,
    cache: Mutex<HashMap<String, Secret>>,
    fingerprints: Fingerprinter,
    relays: Mutex<Vec<relays::RunningRelay>>,
    shutdown: watch::Sender<bool>,
}

/// Options of `tokenward daemon`.
pub struct DaemonOptions {
    pub socket_path: PathBuf,
}

/// Runs the daemon until it is told to stop.
pub async fn run(options: DaemonOptions) -> Result<()> {
    let dirs = Dirs::resolve()?;
    dirs.create()?;
    let data_dir = dirs.index_file();
    let data_dir = data_dir.parent().unwrap_or(std::path::Path::new("."));
    socket::hold_daemon_lock(data_dir, &options.socket_path)?;
    let config = Config::load(&dirs.config_file())?;
    let timeout = Duration::from_secs(config.vault_timeout_secs.max(1));
    let choice = config.backend_choice();
    let (vault, fallback) = crate::vault::open(&choice, &dirs.vault_file(), timeout)
        .await
        .context("cannot open the vault")?;
    if let Some(why) = fallback {
        tracing::info!(reason = %why, "no usable keychain; using the encrypted file vault");
    }
    let ephemeral = vault.name() == "env";
    let tokens = if ephemeral {
        handlers::env_tokens()?
    } else {
        crate::index::load(&dirs.index_file())?
    };
    if vault.is_locked() {
        if let Some(passphrase) = std::env::var("TOKENWARD_PASSPHRASE")
            .ok()
            .filter(|p| !p.is_empty())
        {
            vault
                .unlock(&Secret::new(passphrase))
                .await
                .context("cannot unlock the file vault")?;
        }
    }
    let fingerprints = Fingerprinter::load_or_create(&dirs.fingerprint_key_file())?;
    let (listener, socket_activated) = socket::bind(&options.socket_path)?;
    let (shutdown, mut stopping) = watch::channel(false);
    let daemon = Arc::new(Daemon {
        dirs,
        config: Mutex::new(config),
        socket_path: options.socket_path.clone(),
        vault,
        ephemeral,
        socket_activated,
        tokens: RwLock::new(tokens),
        cache: Mutex::new(HashMap::new()),
        fingerprints,
        relays: Mutex::new(Vec::new()),
        shutdown,
    });
    daemon.start_configured_relays().await;
    tracing::info!(
        socket = %options.socket_path.display(),
        backend = daemon.vault.name(),
        pid = std::process::id(),
        "tokenward daemon listening"
    );
    let signals = spawn_signal_watch(daemon.shutdown.clone());
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(stream) => {
                    let daemon = Arc::clone(&daemon);
                    tokio::spawn(async move { daemon.serve_connection(stream).await });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    // Out of file descriptors: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
            _ = stopping.changed() => break,
        }
    }
    signals.abort();
    daemon.stop_relays();
    drop(listener);
    tracing::info!("tokenward daemon stopped");
    Ok(())
}

fn spawn_signal_watch(shutdown: watch::Sender<bool>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            if let Ok(mut term) = signal(SignalKind::terminate()) {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            } else {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        let _ = shutdown.send(true);
    })
}

impl Daemon {
    async fn serve_connection(self: Arc<Self>, stream: Stream) {
        if let Err(who) = socket::peer_is_owner(&stream) {
            tracing::warn!(peer = %who, "refused a connection from another user");
            return;
        }
        // Request lines are ~100 bytes; tokio's default 8 KiB buffer per
        // connection left the daemon at 18 MiB RSS after 1,000 concurrent
        // connections, 11 MiB with 1 KiB (benches/compare.sh). Longer lines
        // still work: `read_until` refills as often as it needs.
        let mut reader = BufReader::with_capacity(READ_BUFFER, &stream);
        let mut writer = &stream;
        let mut line = Vec::with_capacity(512);
        loop {
            line.clear();
            let read = (&mut reader)
                .take(MAX_LINE as u64)
                .read_until(b'\n', &mut line)
                .await;
            let response = match read {
                Ok(0) => break,
                Ok(_) if line.last() != Some(&b'\n') => {
                    if line.len() < MAX_LINE {
                        // The peer closed mid-line.
                        wipe(&mut line);
                        break;
                    }
                    wipe(&mut line);
                    // Skip the rest of the oversized line so that the
                    // client can finish writing and read the answer.
                    if !skip_line(&mut reader).await {
                        break;
                    }
                    Response::error(DecodeError::TooLong.to_string())
                }
                Ok(_) => {
                    let request = decode_request(&line[..line.len() - 1]);
                    wipe(&mut line);
                    match request {
                        Ok(request) => self.handle(request).await,
                        Err(e) => Response::error(e.to_string()),
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "connection read failed");
                    break;
                }
            };
            let mut bytes = encode_line(&response);
            let written = writer.write_all(&bytes).await;
            wipe(&mut bytes);
            if written.is_err() {
                break;
            }
        }
    }
}

/// Reads and drops bytes up to the next newline, at most [`MAX_SKIP`];
/// false when the line did not end (closed, or too much junk).
async fn skip_line<R: tokio::io::AsyncBufRead + Unpin>(reader: &mut R) -> bool {
    let mut skipped = 0usize;
    loop {
        let chunk = match reader.fill_buf().await {
            Ok([]) | Err(_) => return false,
            Ok(chunk) => chunk,
        };
        let (used, found) = match chunk.iter().position(|b| *b == b'\n') {
            Some(i) => (i + 1, true),
            None => (chunk.len(), false),
        };
        reader.consume(used);
        skipped += used;
        if found {
            return true;
        }
        if skipped > MAX_SKIP {
            return false;
        }
    }
}

/// Each connection's read buffer (see `serve_connection`).
const READ_BUFFER: usize = 1024;

/// How much of an oversized line the daemon reads past before giving up.
const MAX_SKIP: usize = 16 * 1024 * 1024;

/// Request and response lines may carry secrets.
fn wipe(buffer: &mut Vec<u8>) {
    use zeroize::Zeroize;
    buffer.zeroize();
}
