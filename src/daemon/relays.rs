//! The relays the daemon runs: kept in the config (`relay add`), started
//! with the daemon, stopped by `relay rm` or shutdown. Each gets its
//! credentials straight from the daemon's own token store ([`DaemonSource`]),
//! so a relayed push costs no socket round trip.

use super::Daemon;
use crate::config::RelaySpec;
use crate::protocol::{Credential, CredentialQuery, CredentialReport, RelayStatus, Response};
use crate::relay::{
    BoxFuture, CredentialSource, Relay, RelayConfig, RelayStats, SourceError, Upstream,
};
use crate::token::Role;
use anyhow::{anyhow, bail, Context, Result};
use ring::rand::{SecureRandom, SystemRandom};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Weak};
use tokio::sync::oneshot;

/// A relay the daemon started (or failed to start).
pub(super) struct RunningRelay {
    spec: RelaySpec,
    stats: Arc<RelayStats>,
    /// Dropping it stops the relay.
    stop: Option<oneshot::Sender<()>>,
    error: Option<String>,
}

/// Credentials from the daemon's own store. Holds the daemon weakly so that
/// relays do not keep it alive after shutdown.
struct DaemonSource(Weak<Daemon>);

impl CredentialSource for DaemonSource {
    fn credential<'a>(
        &'a self,
        query: &'a CredentialQuery,
        role: Role,
    ) -> BoxFuture<'a, Result<Option<Credential>, SourceError>> {
        Box::pin(async move {
            let daemon = self
                .0
                .upgrade()
                .ok_or_else(|| SourceError("the daemon is stopping".to_owned()))?;
            daemon
                .credential_for(query, role)
                .await
                .map_err(|e| SourceError(format!("{e:#}")))
        })
    }

    fn rejected<'a>(
        &'a self,
        query: &'a CredentialQuery,
        credential: &'a Credential,
        _reason: &'a str,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let Some(daemon) = self.0.upgrade() else {
                return;
            };
            let report = CredentialReport::about(query, credential);
            if let Err(e) = daemon.reject(report).await {
                tracing::warn!(error = %format!("{e:#}"), "could not mark a token rejected");
            }
        })
    }
}

impl Daemon {
    /// Starts every relay in the config; one that cannot start is reported
    /// in `status` and does not stop the others or the daemon.
    pub(super) async fn start_configured_relays(self: &Arc<Self>) {
        let specs = self
            .config
            .lock()
            .map(|c| c.relays.clone())
            .unwrap_or_default();
        for spec in specs {
            let running = self.start_relay(spec).await;
            if let Ok(mut relays) = self.relays.lock() {
                relays.push(running);
            }
        }
    }

    async fn start_relay(self: &Arc<Self>, spec: RelaySpec) -> RunningRelay {
        let stats = Arc::new(RelayStats::default());
        match bind(&spec).await {
            Ok(relay) => {
                let (stop, stopped) = oneshot::channel::<()>();
                let source: Arc<dyn CredentialSource> =
                    Arc::new(DaemonSource(Arc::downgrade(self)));
                let id = spec.id.clone();
                let running_stats = Arc::clone(&stats);
                tokio::spawn(async move {
                    let shutdown = async move {
                        let _ = stopped.await;
                    };
                    if let Err(e) = relay.run(source, running_stats, shutdown).await {
                        tracing::warn!(relay = %id, error = %format!("{e:#}"), "relay stopped");
                    }
                });
                tracing::info!(relay = %spec.id, listen = %spec.listen, upstream = %spec.upstream, "relay running");
                RunningRelay {
                    spec,
                    stats,
                    stop: Some(stop),
                    error: None,
                }
            }
            Err(e) => {
                let error = format!("{e:#}");
                tracing::warn!(relay = %spec.id, error = %error, "relay did not start");
                RunningRelay {
                    spec,
                    stats,
                    stop: None,
                    error: Some(error),
                }
            }
        }
    }

    pub(super) fn relay_statuses(&self) -> Vec<RelayStatus> {
        let Ok(relays) = self.relays.lock() else {
            return Vec::new();
        };
        relays
            .iter()
            .map(|r| {
                let (requests, bytes_up, bytes_down) = r.stats.snapshot();
                RelayStatus {
                    id: r.spec.id.clone(),
                    upstream: r.spec.upstream.clone(),
                    listen: r.spec.listen.clone(),
                    requests,
                    bytes_up,
                    bytes_down,
                    error: r.error.clone(),
                }
            })
            .collect()
    }

    pub(super) async fn relay_add(
        self: &Arc<Self>,
        upstream: String,
        listen: Option<String>,
        ca_file: Option<String>,
    ) -> Result<Response> {
        let parsed = Upstream::parse(&upstream)?;
        let listen = match listen {
            Some(listen) => listen,
            // A fixed port, so that the relay keeps its address across restarts.
            None => free_loopback_port().context("cannot find a free port for the relay")?,
        };
        let spec = RelaySpec {
            id: relay_id()?,
            upstream: parsed.to_string(),
            listen,
            ca_file: ca_file.map(PathBuf::from),
        };
        // Bind before saving, so that a relay that cannot run is not kept.
        let running = self.start_relay(spec.clone()).await;
        if let Some(error) = running.error {
            bail!("{error}");
        }
        let saved = self.edit_config(|config| config.relays.push(spec.clone()));
        if let Err(e) = saved {
            drop(running.stop);
            return Err(e);
        }
        if let Ok(mut relays) = self.relays.lock() {
            relays.push(running);
        }
        Ok(Response {
            relays: Some(
                self.relay_statuses()
                    .into_iter()
                    .filter(|r| r.id == spec.id)
                    .collect(),
            ),
            ..Response::done()
        })
    }

    pub(super) async fn relay_remove(&self, id: &str) -> Result<Response> {
        let known = self
            .config
            .lock()
            .map(|c| c.relays.iter().any(|r| r.id == id))
            .unwrap_or(false);
        if !known {
            bail!(
                "no relay with id '{}' (see 'tokenward relay list')",
                crate::token::printable(id)
            );
        }
        self.edit_config(|config| config.relays.retain(|r| r.id != id))?;
        if let Ok(mut relays) = self.relays.lock() {
            // Dropping the stop sender ends the relay.
            relays.retain(|r| r.spec.id != id);
        }
        Ok(Response::done())
    }

    fn edit_config(&self, edit: impl FnOnce(&mut crate::config::Config)) -> Result<()> {
        let mut config = self
            .config
            .lock()
            .map_err(|_| anyhow!("config lock poisoned"))?;
        let mut changed = config.clone();
        edit(&mut changed);
        changed.save(&self.dirs.config_file())?;
        *config = changed;
        Ok(())
    }

    pub(super) fn stop_relays(&self) {
        if let Ok(mut relays) = self.relays.lock() {
            relays.clear();
        }
    }
}

async fn bind(spec: &RelaySpec) -> Result<Relay> {
    let listen: SocketAddr = spec
        .listen
        .parse()
        .with_context(|| format!("relay {}: bad listen address '{}'", spec.id, spec.listen))?;
    let mut config = RelayConfig::new(Upstream::parse(&spec.upstream)?, listen);
    config.ca_file = spec.ca_file.clone();
    Relay::bind(config).await
}

fn free_loopback_port() -> std::io::Result<String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.to_string())
}

fn relay_id() -> Result<String> {
    let mut bytes = [0u8; 3];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| anyhow!("the system random number generator failed"))?;
    Ok(format!(
        "rl_{:02x}{:02x}{:02x}",
        bytes[0], bytes[1], bytes[2]
    ))
}
