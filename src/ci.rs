//! CI mode: one token given in the environment, used with no daemon, no
//! keychain and nothing written to disk. The git helper, the relay's
//! `serve` and the daemon's `env` backend all read it here, so the three
//! agree on what the variables mean:
//!
//! | variable | meaning |
//! |---|---|
//! | `TOKENWARD_TOKEN` | the secret; CI mode is on when it is set and not empty |
//! | `TOKENWARD_URL` | the token's scope, required: never an unscoped token |
//! | `TOKENWARD_USERNAME` | the account (else the one the client names) |
//! | `TOKENWARD_ROLE` | `vcs`, `api`, `feed`, `web` or `all` (default `all`) |
//! | `TOKENWARD_AUTH` | `basic` (default), `bearer` or `query`, for the relay |
//!
//! The token is matched by [`crate::token::select`] exactly like a stored one.

use crate::secret::Secret;
use crate::token::{AuthKind, Role, Scope, TokenMeta};
use time::OffsetDateTime;

/// The id the environment's token goes by.
pub const ENV_TOKEN_ID: &str = "env";

/// The environment's token.
pub struct EnvToken {
    pub meta: TokenMeta,
    pub secret: Secret,
}

/// Why the environment's token cannot be used; one line, never the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvError(pub String);

impl std::fmt::Display for EnvError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for EnvError {}

/// Whether CI mode is on (TOKENWARD_TOKEN set and not empty).
pub fn is_active() -> bool {
    var("TOKENWARD_TOKEN").is_some()
}

/// Reads the environment's token; `Ok(None)` when CI mode is off.
pub fn from_env() -> Result<Option<EnvToken>, EnvError> {
    let Some(secret) = var("TOKENWARD_TOKEN").map(Secret::new) else {
        return Ok(None);
    };
    let url = var("TOKENWARD_URL").ok_or_else(|| {
        EnvError(
            "TOKENWARD_TOKEN is set but TOKENWARD_URL is not; set it to the scope the token is for (https://host[/path])"
                .to_owned(),
        )
    })?;
    let scope = Scope::parse(&url).map_err(|e| EnvError(format!("TOKENWARD_URL: {e}")))?;
    let role = match var("TOKENWARD_ROLE") {
        Some(role) => role
            .parse::<Role>()
            .map_err(|e| EnvError(format!("TOKENWARD_ROLE: {e}")))?,
        None => Role::All,
    };
    let auth = match var("TOKENWARD_AUTH") {
        Some(auth) => auth
            .parse::<AuthKind>()
            .map_err(|e| EnvError(format!("TOKENWARD_AUTH: {e}")))?,
        None => AuthKind::Basic,
    };
    let meta = TokenMeta {
        label: "TOKENWARD_TOKEN".to_owned(),
        auth,
        ..TokenMeta::new(
            ENV_TOKEN_ID,
            scope.to_string(),
            var("TOKENWARD_USERNAME"),
            role,
            OffsetDateTime::UNIX_EPOCH,
        )
    };
    Ok(Some(EnvToken { meta, secret }))
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}
