//! The vault: where token secrets live, behind one interface.
//!
//! Backends: the OS keychain through keyring-core (`secret-service`,
//! `keychain`, `wincred`, `keyutils`), an encrypted `file`, and the read-only
//! `env` of CI mode. Keychain calls block and can hang (a locked collection
//! waiting for a prompt, a missing bus), so [`Vault`] runs every call on a
//! blocking thread under a timeout: a slow vault gives a clear error within
//! seconds, never a hang, and never a plaintext fallback.

mod file;
mod keyring;

pub use file::FileStore;

use crate::ci::ENV_TOKEN_ID;
use crate::secret::Secret;
use std::sync::Arc;
use std::time::Duration;

/// Why a vault call failed. Messages are one line and never hold a secret.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("the file vault is locked: run 'tokenward unlock' (or set TOKENWARD_PASSPHRASE)")]
    Locked,
    #[error("wrong passphrase for the file vault")]
    WrongPassphrase,
    #[error("no secret for token {0} in the vault")]
    NotFound(String),
    #[error("the {0} backend is read-only")]
    ReadOnly(&'static str),
    #[error("the {backend} vault did not answer within {seconds} s (locked keyring waiting for a prompt?)")]
    Timeout { backend: &'static str, seconds: u64 },
    #[error("the {backend} vault is unavailable: {reason}")]
    Unavailable {
        backend: &'static str,
        reason: String,
    },
    #[error("the vault file is corrupt or was tampered with: {0}")]
    Corrupt(String),
    #[error("the {0} backend cannot be locked or unlocked")]
    NotLockable(&'static str),
}

/// How long secrets in a backend survive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persistence {
    UntilDeleted,
    UntilReboot,
    NeverWritten,
}

impl Persistence {
    pub fn describe(self) -> &'static str {
        match self {
            Persistence::UntilDeleted => "until deleted",
            Persistence::UntilReboot => "until reboot",
            Persistence::NeverWritten => "never written",
        }
    }
}

/// A blocking secret store. Implementations may block for a long time; they
/// are only called through [`Vault`].
pub trait SecretStore: Send + Sync {
    /// The backend's name as in the spec's table.
    fn name(&self) -> &'static str;
    fn persistence(&self) -> Persistence;
    fn get(&self, id: &str) -> Result<Secret, VaultError>;
    fn set(&self, id: &str, secret: &Secret) -> Result<(), VaultError>;
    /// Deleting a secret that is not there succeeds.
    fn delete(&self, id: &str) -> Result<(), VaultError>;
    fn is_locked(&self) -> bool {
        false
    }
    fn unlock(&self, _passphrase: &Secret) -> Result<(), VaultError> {
        Err(VaultError::NotLockable(self.name()))
    }
    fn lock(&self) -> Result<(), VaultError> {
        Err(VaultError::NotLockable(self.name()))
    }
}

/// A store with a timeout on every call, for use from async code.
#[derive(Clone)]
pub struct Vault {
    store: Arc<dyn SecretStore>,
    timeout: Duration,
}

impl Vault {
    pub fn new(store: Arc<dyn SecretStore>, timeout: Duration) -> Vault {
        Vault { store, timeout }
    }

    pub fn name(&self) -> &'static str {
        self.store.name()
    }

    pub fn persistence(&self) -> Persistence {
        self.store.persistence()
    }

    pub fn is_locked(&self) -> bool {
        self.store.is_locked()
    }

    pub async fn get(&self, id: &str) -> Result<Secret, VaultError> {
        let id = id.to_owned();
        self.run(move |store| store.get(&id)).await
    }

    pub async fn set(&self, id: &str, secret: &Secret) -> Result<(), VaultError> {
        let (id, secret) = (id.to_owned(), secret.clone());
        self.run(move |store| store.set(&id, &secret)).await
    }

    pub async fn delete(&self, id: &str) -> Result<(), VaultError> {
        let id = id.to_owned();
        self.run(move |store| store.delete(&id)).await
    }

    pub async fn unlock(&self, passphrase: &Secret) -> Result<(), VaultError> {
        let passphrase = passphrase.clone();
        self.run(move |store| store.unlock(&passphrase)).await
    }

    pub async fn lock(&self) -> Result<(), VaultError> {
        self.run(|store| store.lock()).await
    }

    async fn run<T, F>(&self, call: F) -> Result<T, VaultError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn SecretStore) -> Result<T, VaultError> + Send + 'static,
    {
        let store = Arc::clone(&self.store);
        let backend = store.name();
        run_with_timeout(backend, self.timeout, move || call(store.as_ref())).await
    }
}

/// Runs a blocking call on tokio's blocking pool and gives up after `timeout`.
/// A call that hangs keeps its thread, but the caller gets its answer.
pub async fn run_with_timeout<T, F>(
    backend: &'static str,
    timeout: Duration,
    call: F,
) -> Result<T, VaultError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, VaultError> + Send + 'static,
{
    match tokio::time::timeout(timeout, tokio::task::spawn_blocking(call)).await {
        Ok(Ok(result)) => result,
        Ok(Err(join)) => Err(VaultError::Unavailable {
            backend,
            reason: format!("the keychain call failed: {join}"),
        }),
        Err(_) => Err(VaultError::Timeout {
            backend,
            seconds: timeout.as_secs().max(1),
        }),
    }
}

/// The read-only store of CI mode: one secret, from `TOKENWARD_TOKEN`
/// (see [`crate::ci`]).
pub struct EnvStore {
    secret: Option<Secret>,
}

impl EnvStore {
    pub fn from_env() -> EnvStore {
        EnvStore {
            secret: crate::ci::from_env().ok().flatten().map(|env| env.secret),
        }
    }
}

impl SecretStore for EnvStore {
    fn name(&self) -> &'static str {
        "env"
    }
    fn persistence(&self) -> Persistence {
        Persistence::NeverWritten
    }
    fn get(&self, id: &str) -> Result<Secret, VaultError> {
        match &self.secret {
            Some(secret) if id == ENV_TOKEN_ID => Ok(secret.clone()),
            _ => Err(VaultError::NotFound(id.to_owned())),
        }
    }
    fn set(&self, _id: &str, _secret: &Secret) -> Result<(), VaultError> {
        Err(VaultError::ReadOnly("env"))
    }
    fn delete(&self, _id: &str) -> Result<(), VaultError> {
        Err(VaultError::ReadOnly("env"))
    }
}

/// Opens the backend named by `choice`. `auto` takes the platform keychain
/// when it answers and is unlocked, else the file store; the reason for a
/// fallback is returned so the daemon can log it.
pub async fn open(
    choice: &str,
    vault_file: &std::path::Path,
    timeout: Duration,
) -> Result<(Vault, Option<String>), VaultError> {
    let store: Arc<dyn SecretStore> = match choice {
        "auto" => match keyring::open_platform(timeout).await {
            Ok(store) => store,
            Err(why) => {
                let file: Arc<dyn SecretStore> = Arc::new(FileStore::new(vault_file.to_owned()));
                return Ok((Vault::new(file, timeout), Some(why.to_string())));
            }
        },
        "file" => Arc::new(FileStore::new(vault_file.to_owned())),
        "env" => Arc::new(EnvStore::from_env()),
        other => keyring::open_named(other, timeout).await?,
    };
    Ok((Vault::new(store, timeout), None))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Hanging;
    impl SecretStore for Hanging {
        fn name(&self) -> &'static str {
            "hanging"
        }
        fn persistence(&self) -> Persistence {
            Persistence::UntilDeleted
        }
        fn get(&self, _id: &str) -> Result<Secret, VaultError> {
            std::thread::sleep(Duration::from_secs(3));
            Ok(Secret::from("late"))
        }
        fn set(&self, _id: &str, _secret: &Secret) -> Result<(), VaultError> {
            Ok(())
        }
        fn delete(&self, _id: &str) -> Result<(), VaultError> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_hanging_store_times_out() {
        let vault = Vault::new(Arc::new(Hanging), Duration::from_millis(200));
        let started = std::time::Instant::now();
        let result = vault.get("x").await;
        assert!(
            matches!(result, Err(VaultError::Timeout { .. })),
            "{result:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn env_store_is_read_only() {
        let store = EnvStore {
            secret: Some(Secret::from("t")),
        };
        assert_eq!(
            store.get(ENV_TOKEN_ID).map(|s| s.expose().to_owned()).ok(),
            Some("t".to_owned())
        );
        assert!(matches!(
            store.set("x", &Secret::from("y")),
            Err(VaultError::ReadOnly(_))
        ));
        assert!(matches!(store.get("other"), Err(VaultError::NotFound(_))));
    }
}
