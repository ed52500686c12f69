//! Where the relay gets its credentials: the [`CredentialSource`] trait and
//! its two stand-alone implementations, [`EnvSource`] (CI mode: one token in
//! environment variables, nothing written anywhere) and [`SocketSource`]
//! (asks a running daemon over its socket). The daemon itself provides a
//! third, in-process source.

use crate::client::{Client, ClientError};
use crate::protocol::{self, Credential, CredentialQuery, CredentialReport};
use crate::secret::Secret;
use crate::token::{self, AuthKind, Role, TokenMeta};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use time::OffsetDateTime;

/// A boxed future, so that the trait stays object safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a source could not answer (the daemon is down, the vault locked …).
/// One line, never a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceError(pub String);

impl std::fmt::Display for SourceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SourceError {}

/// Supplies credentials to a relay.
pub trait CredentialSource: Send + Sync {
    /// The credential for `query` (the upstream's protocol, host and the
    /// request path) used where `role` is needed; `Ok(None)` when no token
    /// fits, in which case the request goes upstream without one.
    fn credential<'a>(
        &'a self,
        query: &'a CredentialQuery,
        role: Role,
    ) -> BoxFuture<'a, Result<Option<Credential>, SourceError>>;

    /// The upstream refused `credential` (which this source gave for
    /// `query`); `reason` is a short phrase such as "401 from upstream".
    fn rejected<'a>(
        &'a self,
        query: &'a CredentialQuery,
        credential: &'a Credential,
        reason: &'a str,
    ) -> BoxFuture<'a, ()>;
}

/// Tokens held in memory, matched exactly like stored tokens
/// ([`token::select`]). Built from the CI environment by
/// [`EnvSource::from_env`], or from given tokens (tests, tools).
pub struct EnvSource {
    tokens: Vec<(TokenMeta, Secret)>,
}

impl EnvSource {
    pub fn new(tokens: Vec<(TokenMeta, Secret)>) -> EnvSource {
        EnvSource { tokens }
    }

    /// The environment's token ([`crate::ci`]); `Ok(None)` when CI mode is
    /// off. The relay needs a username for basic auth: it has no client
    /// that could name one.
    pub fn from_env() -> Result<Option<EnvSource>, SourceError> {
        let Some(env) = crate::ci::from_env().map_err(|e| SourceError(e.to_string()))? else {
            return Ok(None);
        };
        if env.meta.auth == AuthKind::Basic && env.meta.username.is_none() {
            return Err(SourceError(
                "TOKENWARD_USERNAME is required when the token is sent with basic auth (or set TOKENWARD_AUTH=bearer|query)"
                    .to_owned(),
            ));
        }
        Ok(Some(EnvSource::new(vec![(env.meta, env.secret)])))
    }

    fn lookup(&self, query: &CredentialQuery, role: Role) -> Option<Credential> {
        let request = token::Request::new(
            &query.protocol,
            &query.host,
            query.path.as_deref(),
            query.username.as_deref(),
        )?;
        let chosen = token::select(
            self.tokens.iter().map(|(m, _)| m),
            &request,
            role,
            OffsetDateTime::now_utc(),
        )?;
        let (meta, secret) = self.tokens.iter().find(|(m, _)| std::ptr::eq(m, chosen))?;
        Some(Credential {
            id: meta.id.clone(),
            username: meta.username.clone(),
            password: secret.clone(),
            auth: meta.auth,
            expires: meta.expires,
        })
    }
}

impl CredentialSource for EnvSource {
    fn credential<'a>(
        &'a self,
        query: &'a CredentialQuery,
        role: Role,
    ) -> BoxFuture<'a, Result<Option<Credential>, SourceError>> {
        Box::pin(async move { Ok(self.lookup(query, role)) })
    }

    fn rejected<'a>(
        &'a self,
        _query: &'a CredentialQuery,
        credential: &'a Credential,
        reason: &'a str,
    ) -> BoxFuture<'a, ()> {
        // The environment is a read-only vault: nothing can be marked, and
        // the next request would fail the same way anyway. Say so once per
        // refusal so that a CI log shows why the job fails.
        Box::pin(async move {
            tracing::warn!(token = %credential.id, "the upstream refused the token ({reason}); check TOKENWARD_TOKEN");
        })
    }
}

/// Asks a running daemon through its socket, one blocking call per request
/// on tokio's blocking pool (the client is deliberately runtime-free).
pub struct SocketSource {
    socket: PathBuf,
    /// The `tokenward` program to start when the daemon is not running.
    autostart: Option<PathBuf>,
}

impl SocketSource {
    pub fn new(socket: PathBuf, autostart: Option<PathBuf>) -> SocketSource {
        SocketSource { socket, autostart }
    }

    async fn call(&self, request: protocol::Request) -> Result<protocol::Response, SourceError> {
        let socket = self.socket.clone();
        let autostart = self.autostart.clone();
        tokio::task::spawn_blocking(move || {
            let mut client = match &autostart {
                Some(program) => Client::connect_or_start(&socket, program),
                None => Client::connect(&socket),
            }?;
            client.call(request)
        })
        .await
        .map_err(|e| SourceError(format!("asking the daemon failed: {e}")))?
        .map_err(|e: ClientError| SourceError(e.to_string()))
    }
}

impl CredentialSource for SocketSource {
    fn credential<'a>(
        &'a self,
        query: &'a CredentialQuery,
        role: Role,
    ) -> BoxFuture<'a, Result<Option<Credential>, SourceError>> {
        Box::pin(async move {
            let response = self
                .call(protocol::Request::GetForRole {
                    query: query.clone(),
                    role,
                })
                .await?;
            Ok(response.credential)
        })
    }

    fn rejected<'a>(
        &'a self,
        query: &'a CredentialQuery,
        credential: &'a Credential,
        reason: &'a str,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let report = CredentialReport::about(query, credential);
            match self.call(protocol::Request::Reject(report)).await {
                Ok(_) => tracing::warn!(token = %credential.id, "marked rejected: {reason}"),
                Err(e) => {
                    tracing::warn!(token = %credential.id, "could not mark the token rejected ({reason}): {e}")
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(id: &str, url: &str, role: Role, auth: AuthKind) -> (TokenMeta, Secret) {
        (
            TokenMeta {
                auth,
                ..TokenMeta::new(
                    id,
                    url,
                    Some("u".to_owned()),
                    role,
                    OffsetDateTime::UNIX_EPOCH,
                )
            },
            Secret::from(format!("secret-{id}")),
        )
    }

    fn query(host: &str, path: &str) -> CredentialQuery {
        CredentialQuery {
            protocol: "https".to_owned(),
            host: host.to_owned(),
            path: Some(path.to_owned()),
            username: None,
        }
    }

    #[test]
    fn env_source_matches_like_a_stored_token() {
        let source = EnvSource::new(vec![
            meta("vcs", "https://h/team", Role::Vcs, AuthKind::Basic),
            meta("feed", "https://h", Role::Feed, AuthKind::Query),
        ]);
        let got = source.lookup(&query("h", "team/repo.git/info/refs"), Role::Vcs);
        assert_eq!(
            got.map(|c| (c.id, c.password.expose().to_owned())),
            Some(("vcs".into(), "secret-vcs".into()))
        );
        assert_eq!(
            source
                .lookup(&query("h", "other/repo.git"), Role::Vcs)
                .map(|c| c.id),
            None
        );
        assert_eq!(
            source
                .lookup(&query("h", "x/feed/rss"), Role::Feed)
                .map(|c| c.auth),
            Some(AuthKind::Query)
        );
        assert!(source.lookup(&query("h", "x"), Role::Web).is_none());
        assert!(source
            .lookup(&query("h:8443", "team/r"), Role::Vcs)
            .is_none());
    }
}
