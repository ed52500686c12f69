//! What the daemon does for each request of the wire protocol.

use super::Daemon;
use crate::protocol::{
    Credential, CredentialQuery, CredentialReport, NewToken, Request, Response, Status,
    TokenCounts, TokenInfo,
};
use crate::secret::Secret;
use crate::token::{self, AuthKind, Role, Scope, TokenMeta, TokenState};
use crate::vault::VaultError;
use anyhow::{anyhow, bail, Result};
use ring::rand::{SecureRandom, SystemRandom};
use std::sync::Arc;
use time::OffsetDateTime;

/// `last_used` is written back at most this often per token, so that a busy
/// git session does not rewrite the index on every push.
const LAST_USED_GRANULARITY: time::Duration = time::Duration::minutes(1);

impl Daemon {
    pub(super) async fn handle(self: &Arc<Self>, request: Request) -> Response {
        let result = match request {
            Request::Get(query) => self.get(&query, Role::Vcs).await,
            Request::GetForRole { query, role } => self.get(&query, role).await,
            Request::Approve(report) => self.approve(report).await,
            Request::Reject(report) => self.reject(report).await,
            Request::Add(new) => self.add(new).await,
            Request::List { all } => self.list(all).await,
            Request::Remove { id } => self.remove(&id).await,
            Request::Restore { id } => self.restore(&id).await,
            Request::Rotate { id, secret } => self.rotate(&id, secret).await,
            Request::Status => Ok(self.status().await),
            Request::Unlock { passphrase } => self.unlock(passphrase).await,
            Request::Lock => self.lock().await,
            Request::RelayAdd {
                upstream,
                listen,
                ca_file,
            } => self.relay_add(upstream, listen, ca_file).await,
            Request::RelayList => Ok(Response {
                relays: Some(self.relay_statuses()),
                ..Response::done()
            }),
            Request::RelayRemove { id } => self.relay_remove(&id).await,
            Request::Stop => {
                let _ = self.shutdown.send(true);
                Ok(Response::done())
            }
        };
        result.unwrap_or_else(|e| Response::error(one_line(&e)))
    }

    async fn get(&self, query: &CredentialQuery, role: Role) -> Result<Response> {
        Ok(Response {
            credential: self.credential_for(query, role).await?,
            ..Response::done()
        })
    }

    /// The credential of the token that fits `query` for `role`, if any.
    pub(super) async fn credential_for(
        &self,
        query: &CredentialQuery,
        role: Role,
    ) -> Result<Option<Credential>> {
        let Some(request) = to_request(query) else {
            return Ok(None);
        };
        let chosen = {
            let tokens = self.tokens.read().await;
            token::select(tokens.iter(), &request, role, now()).cloned()
        };
        let Some(meta) = chosen else {
            tracing::debug!(host = %request.host, role = %role, "no token matches");
            return Ok(None);
        };
        let password = self.secret(&meta.id).await?;
        tracing::debug!(id = %meta.id, fingerprint = %self.fingerprints.of(&password), "handing out a token");
        Ok(Some(Credential {
            id: meta.id,
            username: meta.username,
            password,
            auth: meta.auth,
            expires: meta.expires,
        }))
    }

    /// The secret for `id`, from the cache or else the vault.
    async fn secret(&self, id: &str) -> Result<Secret> {
        if let Some(secret) = self.cached(id) {
            return Ok(secret);
        }
        let secret = self.vault.get(id).await?;
        self.remember(id, &secret);
        Ok(secret)
    }

    fn cached(&self, id: &str) -> Option<Secret> {
        self.cache.lock().ok()?.get(id).cloned()
    }

    fn remember(&self, id: &str, secret: &Secret) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.insert(id.to_owned(), secret.clone());
        }
    }

    fn forget(&self, id: &str) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.remove(id);
        }
    }

    /// The active token fitting the report whose secret equals its
    /// password; `role` None accepts any role (a relay reports 401s for
    /// web, api and feed tokens too).
    async fn token_with_secret(
        &self,
        report: &CredentialReport,
        role: Option<Role>,
    ) -> Result<Option<String>> {
        let (Some(request), Some(password)) = (report_request(report), report.password.as_ref())
        else {
            return Ok(None);
        };
        let candidates: Vec<String> = {
            let tokens = self.tokens.read().await;
            let at = now();
            tokens
                .iter()
                .filter(|t| {
                    let wanted = role.unwrap_or(t.role);
                    Scope::parse(&t.url).is_ok_and(|s| request.fits(t, &s, wanted, at))
                })
                .map(|t| t.id.clone())
                .collect()
        };
        for id in candidates {
            match self.secret(&id).await {
                Ok(secret) if secret.matches(password.expose()) => return Ok(Some(id)),
                Ok(_) | Err(_) => {}
            }
        }
        Ok(None)
    }

    async fn approve(&self, report: CredentialReport) -> Result<Response> {
        if report_request(&report).is_none() {
            return Ok(Response::done());
        }
        if let Some(id) = self.token_with_secret(&report, Some(Role::Vcs)).await? {
            let at = now();
            self.change(|tokens| {
                let Some(t) = tokens.iter_mut().find(|t| t.id == id) else {
                    return Ok(false);
                };
                let stale = t
                    .last_used
                    .is_none_or(|last| at - last >= LAST_USED_GRANULARITY);
                t.last_used = Some(at);
                Ok(stale)
            })
            .await?;
            return Ok(Response::done());
        }
        let accept = self.config.lock().map(|c| c.accept_store).unwrap_or(false);
        let (Some(username), Some(password)) = (report.username.clone(), report.password.clone())
        else {
            return Ok(Response::done());
        };
        if !accept || self.ephemeral || password.is_empty() {
            return Ok(Response::done());
        }
        let mut url = format!("{}://{}", report.protocol, report.host);
        if let Some(path) = report.path.as_deref().filter(|p| !p.is_empty()) {
            url.push('/');
            url.push_str(path.trim_start_matches('/'));
        }
        let info = self
            .add(NewToken {
                url,
                username: Some(username),
                role: Role::Vcs,
                expires: None,
                label: "saved by git".to_owned(),
                auth: AuthKind::Basic,
                secret: password,
            })
            .await?;
        if let Some(token) = &info.token {
            tracing::info!(id = %token.meta.id, fingerprint = %token.fingerprint, "saved a credential typed at git's prompt");
        }
        Ok(Response::done())
    }

    pub(super) async fn reject(&self, report: CredentialReport) -> Result<Response> {
        let Some(request) = report_request(&report) else {
            return Ok(Response::done());
        };
        let id = match self.token_with_secret(&report, None).await? {
            Some(id) => Some(id),
            // Without a password (or with one we never handed out), reject
            // what a get would have answered.
            None if report.password.is_none() => {
                let tokens = self.tokens.read().await;
                token::select(tokens.iter(), &request, Role::Vcs, now()).map(|t| t.id.clone())
            }
            None => None,
        };
        let Some(id) = id else {
            return Ok(Response::done());
        };
        let at = now();
        self.change(|tokens| {
            if let Some(t) = tokens.iter_mut().find(|t| t.id == id) {
                t.reject("refused by the server", at);
                return Ok(true);
            }
            Ok(false)
        })
        .await?;
        tracing::info!(id = %id, "token rejected by the server; it is no longer offered (tokenward token restore {id})");
        Ok(Response::done())
    }

    async fn add(&self, new: NewToken) -> Result<Response> {
        self.writable()?;
        let scope = Scope::parse(&new.url)?;
        let username = new.username.filter(|u| !u.is_empty());
        if let Some(user) = &username {
            if user.chars().any(char::is_control) {
                bail!("the username has control characters");
            }
        }
        if username.is_none()
            && new.auth == AuthKind::Basic
            && matches!(new.role, Role::Vcs | Role::All)
        {
            bail!(
                "--user is required for a {} token presented with basic auth",
                new.role
            );
        }
        check_secret(&new.secret)?;
        let id = self.fresh_id().await?;
        self.vault.set(&id, &new.secret).await?;
        let meta = TokenMeta {
            expires: new.expires,
            label: new.label,
            auth: new.auth,
            ..TokenMeta::new(id.clone(), scope.to_string(), username, new.role, now())
        };
        let saved = self
            .change(|tokens| {
                tokens.push(meta.clone());
                Ok(true)
            })
            .await;
        if let Err(e) = saved {
            // The index does not name it: take the secret back out.
            let _ = self.vault.delete(&id).await;
            return Err(e);
        }
        self.remember(&id, &new.secret);
        let fingerprint = self.fingerprints.of(&new.secret);
        tracing::info!(id = %id, fingerprint = %fingerprint, "token added");
        Ok(Response {
            token: Some(TokenInfo { meta, fingerprint }),
            ..Response::done()
        })
    }

    async fn fresh_id(&self) -> Result<String> {
        let rng = SystemRandom::new();
        let tokens = self.tokens.read().await;
        for _ in 0..100 {
            let mut bytes = [0u8; 3];
            rng.fill(&mut bytes)
                .map_err(|_| anyhow!("the system random number generator failed"))?;
            let id = format!("tw_{:02x}{:02x}{:02x}", bytes[0], bytes[1], bytes[2]);
            if !tokens.iter().any(|t| t.id == id) {
                return Ok(id);
            }
        }
        bail!("could not find a free token id")
    }

    async fn list(&self, all: bool) -> Result<Response> {
        let metas: Vec<TokenMeta> = {
            let tokens = self.tokens.read().await;
            tokens
                .iter()
                .filter(|t| all || t.state == TokenState::Active)
                .cloned()
                .collect()
        };
        let mut infos = Vec::with_capacity(metas.len());
        for meta in metas {
            let fingerprint = match self.secret(&meta.id).await {
                Ok(secret) => self.fingerprints.of(&secret),
                Err(e) if is_locked(&e) => "(locked)".to_owned(),
                Err(_) => "(missing)".to_owned(),
            };
            infos.push(TokenInfo { meta, fingerprint });
        }
        Ok(Response {
            tokens: Some(infos),
            ..Response::done()
        })
    }

    async fn remove(&self, id: &str) -> Result<Response> {
        self.writable()?;
        self.require(id).await?;
        self.vault.delete(id).await?;
        self.forget(id);
        self.change(|tokens| {
            tokens.retain(|t| t.id != id);
            Ok(true)
        })
        .await?;
        tracing::info!(id = %id, "token removed");
        Ok(Response::done())
    }

    async fn restore(&self, id: &str) -> Result<Response> {
        self.writable()?;
        self.require(id).await?;
        self.change(|tokens| {
            if let Some(t) = tokens.iter_mut().find(|t| t.id == id) {
                t.restore();
            }
            Ok(true)
        })
        .await?;
        Ok(Response::done())
    }

    async fn rotate(&self, id: &str, secret: Secret) -> Result<Response> {
        self.writable()?;
        check_secret(&secret)?;
        self.require(id).await?;
        self.vault.set(id, &secret).await?;
        self.remember(id, &secret);
        // A new secret deserves a new chance with the server.
        self.change(|tokens| {
            if let Some(t) = tokens.iter_mut().find(|t| t.id == id) {
                t.restore();
            }
            Ok(true)
        })
        .await?;
        tracing::info!(id = %id, fingerprint = %self.fingerprints.of(&secret), "token rotated");
        Ok(Response::done())
    }

    async fn unlock(&self, passphrase: Secret) -> Result<Response> {
        self.vault.unlock(&passphrase).await?;
        Ok(Response::done())
    }

    async fn lock(&self) -> Result<Response> {
        self.vault.lock().await?;
        if let Ok(mut cache) = self.cache.lock() {
            cache.clear();
        }
        Ok(Response::done())
    }

    pub(super) async fn status(&self) -> Response {
        let at = now();
        let counts = {
            let tokens = self.tokens.read().await;
            let mut counts = TokenCounts {
                total: tokens.len(),
                ..TokenCounts::default()
            };
            for t in tokens.iter() {
                if t.state == TokenState::Rejected {
                    counts.rejected += 1;
                } else if t.is_expired(at) {
                    counts.expired += 1;
                } else {
                    counts.active += 1;
                }
            }
            counts
        };
        Response {
            status: Some(Box::new(Status {
                pid: std::process::id(),
                version: env!("CARGO_PKG_VERSION").to_owned(),
                backend: self.vault.name().to_owned(),
                persistence: self.vault.persistence().describe().to_owned(),
                locked: self.vault.is_locked(),
                tokens: counts,
                relays: self.relay_statuses(),
                socket: self.socket_path.display().to_string(),
                data_dir: self.dirs.data.display().to_string(),
                socket_activated: self.socket_activated,
            })),
            ..Response::done()
        }
    }

    fn writable(&self) -> Result<()> {
        if self.ephemeral {
            bail!("the env backend is read-only (CI mode): tokens come from TOKENWARD_TOKEN");
        }
        Ok(())
    }

    async fn require(&self, id: &str) -> Result<()> {
        if self.tokens.read().await.iter().any(|t| t.id == id) {
            Ok(())
        } else {
            bail!(
                "no token with id '{}' (see 'tokenward token list --all')",
                token::printable(id)
            )
        }
    }

    /// Applies `edit` under the write lock and saves the index when it says
    /// something changed. On a failed save the change is undone, so memory
    /// never claims what the disk does not hold.
    async fn change<F>(&self, edit: F) -> Result<()>
    where
        F: FnOnce(&mut Vec<TokenMeta>) -> Result<bool>,
    {
        let mut tokens = self.tokens.write().await;
        let before = tokens.clone();
        if !edit(&mut tokens)? || self.ephemeral {
            return Ok(());
        }
        let path = self.dirs.index_file();
        let snapshot = tokens.clone();
        let saved = tokio::task::spawn_blocking(move || crate::index::save(&path, &snapshot))
            .await
            .map_err(|e| anyhow!("index writer failed: {e}"))?;
        if let Err(e) = saved {
            *tokens = before;
            return Err(e.into());
        }
        Ok(())
    }
}

fn to_request(query: &CredentialQuery) -> Option<token::Request> {
    token::Request::new(
        &query.protocol,
        &query.host,
        query.path.as_deref(),
        query.username.as_deref(),
    )
}

fn report_request(report: &CredentialReport) -> Option<token::Request> {
    if report.protocol.is_empty() || report.host.is_empty() {
        return None;
    }
    token::Request::new(
        &report.protocol,
        &report.host,
        report.path.as_deref(),
        report.username.as_deref(),
    )
}

fn check_secret(secret: &Secret) -> Result<()> {
    if secret.is_empty() {
        bail!("the token is empty");
    }
    if secret.expose().chars().any(char::is_control) {
        bail!("the token has control characters (a newline, a tab …); give it on one line");
    }
    Ok(())
}

fn is_locked(e: &anyhow::Error) -> bool {
    matches!(e.downcast_ref::<VaultError>(), Some(VaultError::Locked))
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

/// Errors go back to clients on one line.
fn one_line(e: &anyhow::Error) -> String {
    format!("{e:#}").replace(['\n', '\r'], " ")
}

/// The env backend's one token (see [`crate::ci`]); never written anywhere.
pub(super) fn env_tokens() -> Result<Vec<TokenMeta>> {
    let env = crate::ci::from_env()?
        .ok_or_else(|| anyhow!("the env backend needs TOKENWARD_TOKEN (and TOKENWARD_URL)"))?;
    Ok(vec![env.meta])
}
