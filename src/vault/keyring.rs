//! The OS keychains, through keyring-core and the per-OS store crates:
//! Secret Service (zbus, no tokio runtime of its own) and the kernel keyring
//! on Linux, the Keychain on macOS, Credential Manager on Windows.
//!
//! Every token is one entry: service `tokenward`, user = the token's id.

use super::{run_with_timeout, Persistence, SecretStore, VaultError};
use crate::secret::Secret;
use keyring_core::{CredentialStore, Entry, Error as KeyringError};
use std::sync::Arc;
use std::time::Duration;

const SERVICE: &str = "tokenward";

/// The entry the availability probe writes and deletes again.
const PROBE_ID: &str = "tokenward-probe";

pub struct KeyringStore {
    name: &'static str,
    persistence: Persistence,
    store: Arc<CredentialStore>,
}

impl KeyringStore {
    fn entry(&self, id: &str) -> Result<Entry, VaultError> {
        Entry::new_in_store(&self.store, SERVICE, id).map_err(|e| self.unavailable(&e))
    }

    fn unavailable(&self, error: &KeyringError) -> VaultError {
        VaultError::Unavailable {
            backend: self.name,
            reason: with_hint(self.name, error),
        }
    }

    /// Writes and deletes a probe entry: the only sure sign that the store is
    /// reachable and unlocked (a locked Secret Service collection answers
    /// reads of missing items without complaint).
    fn probe(&self) -> Result<(), VaultError> {
        self.set(PROBE_ID, &Secret::from("probe"))?;
        self.delete(PROBE_ID)
    }
}

/// A locked Secret Service collection answers with an opaque error; say
/// what usually causes it.
fn with_hint(backend: &str, error: &KeyringError) -> String {
    let text = one_line(error);
    if backend == "secret-service"
        && matches!(
            error,
            KeyringError::NoStorageAccess(_) | KeyringError::PlatformFailure(_)
        )
    {
        format!("{text} (is the keyring locked, or is no Secret Service running?)")
    } else {
        text
    }
}

/// The error's text on one line; keyring errors never include the secret.
fn one_line(error: &KeyringError) -> String {
    error
        .to_string()
        .lines()
        .next()
        .unwrap_or("unknown error")
        .to_owned()
}

impl SecretStore for KeyringStore {
    fn name(&self) -> &'static str {
        self.name
    }

    fn persistence(&self) -> Persistence {
        self.persistence
    }

    fn get(&self, id: &str) -> Result<Secret, VaultError> {
        match self.entry(id)?.get_password() {
            Ok(password) => Ok(Secret::new(password)),
            Err(KeyringError::NoEntry) => Err(VaultError::NotFound(id.to_owned())),
            Err(e) => Err(self.unavailable(&e)),
        }
    }

    fn set(&self, id: &str, secret: &Secret) -> Result<(), VaultError> {
        self.entry(id)?
            .set_password(secret.expose())
            .map_err(|e| self.unavailable(&e))
    }

    fn delete(&self, id: &str) -> Result<(), VaultError> {
        match self.entry(id)?.delete_credential() {
            Ok(()) | Err(KeyringError::NoEntry) => Ok(()),
            Err(e) => Err(self.unavailable(&e)),
        }
    }
}

/// Opens and probes a keychain by its backend name.
pub async fn open_named(name: &str, timeout: Duration) -> Result<Arc<dyn SecretStore>, VaultError> {
    let name: &'static str = match name {
        "secret-service" => "secret-service",
        "keyutils" => "keyutils",
        "keychain" => "keychain",
        "wincred" => "wincred",
        other => {
            return Err(VaultError::Unavailable {
                backend: "auto",
                reason: format!(
                    "unknown backend '{}' (expected auto, secret-service, keychain, wincred, keyutils, file or env)",
                    crate::token::printable(other)
                ),
            })
        }
    };
    let store = run_with_timeout(name, timeout, move || {
        let store = build(name)?;
        store.probe()?;
        Ok(store)
    })
    .await?;
    Ok(Arc::new(store))
}

/// The platform's default keychain, probed.
pub async fn open_platform(timeout: Duration) -> Result<Arc<dyn SecretStore>, VaultError> {
    let name = if cfg!(target_os = "macos") {
        "keychain"
    } else if cfg!(windows) {
        "wincred"
    } else {
        "secret-service"
    };
    open_named(name, timeout).await
}

fn build(name: &'static str) -> Result<KeyringStore, VaultError> {
    let fail = |e: KeyringError| VaultError::Unavailable {
        backend: name,
        reason: with_hint(name, &e),
    };
    let unsupported = || VaultError::Unavailable {
        backend: name,
        reason: "not available on this operating system".to_owned(),
    };
    let (store, persistence): (Arc<CredentialStore>, Persistence) = match name {
        #[cfg(target_os = "linux")]
        "secret-service" => (
            zbus_secret_service_keyring_store::Store::new().map_err(fail)?,
            Persistence::UntilDeleted,
        ),
        #[cfg(target_os = "linux")]
        "keyutils" => (
            linux_keyutils_keyring_store::Store::new().map_err(fail)?,
            Persistence::UntilReboot,
        ),
        #[cfg(target_os = "macos")]
        "keychain" => (
            apple_native_keyring_store::keychain::Store::new().map_err(fail)?,
            Persistence::UntilDeleted,
        ),
        #[cfg(windows)]
        "wincred" => (
            windows_native_keyring_store::Store::new().map_err(fail)?,
            Persistence::UntilDeleted,
        ),
        _ => {
            let _ = fail;
            return Err(unsupported());
        }
    };
    Ok(KeyringStore {
        name,
        persistence,
        store,
    })
}
