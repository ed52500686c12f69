//! Where tokenward keeps its files, and the settings in `config.json`.
//!
//! `TOKENWARD_HOME=DIR` puts everything under `DIR/config` and `DIR/data`
//! (tests use it); otherwise the platform's directories are used
//! (`~/.config/tokenward`, `~/.local/share/tokenward` on Linux).

use crate::atomic::{create_private_dir, write_atomic};
use anyhow::{anyhow, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct Dirs {
    pub config: PathBuf,
    pub data: PathBuf,
}

impl Dirs {
    pub fn resolve() -> Result<Dirs> {
        if let Some(home) = std::env::var_os("TOKENWARD_HOME").filter(|h| !h.is_empty()) {
            let home = PathBuf::from(home);
            return Ok(Dirs {
                config: home.join("config"),
                data: home.join("data"),
            });
        }
        let project = directories::ProjectDirs::from("", "", "tokenward")
            .ok_or_else(|| anyhow!("cannot find the home directory; set TOKENWARD_HOME"))?;
        Ok(Dirs {
            config: project.config_dir().to_owned(),
            data: project.data_dir().to_owned(),
        })
    }

    pub fn create(&self) -> Result<()> {
        for dir in [&self.config, &self.data] {
            create_private_dir(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        Ok(())
    }

    pub fn config_file(&self) -> PathBuf {
        self.config.join("config.json")
    }

    pub fn index_file(&self) -> PathBuf {
        self.data.join("index.json")
    }

    pub fn vault_file(&self) -> PathBuf {
        self.data.join("vault.json")
    }

    pub fn fingerprint_key_file(&self) -> PathBuf {
        self.data.join("fingerprint.key")
    }

    pub fn log_file(&self) -> PathBuf {
        self.data.join("daemon.log")
    }
}

/// A relay kept in the config and run by the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelaySpec {
    pub id: String,
    pub upstream: String,
    pub listen: String,
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// `auto`, `secret-service`, `keychain`, `wincred`, `keyutils`, `file` or `env`.
    pub backend: String,
    /// Save credentials typed at git's prompt as new tokens.
    pub accept_store: bool,
    /// Seconds a keychain call may take before it counts as failed.
    pub vault_timeout_secs: u64,
    pub relays: Vec<RelaySpec>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            backend: "auto".to_owned(),
            accept_store: true,
            vault_timeout_secs: 5,
            relays: Vec::new(),
        }
    }
}

impl Config {
    /// Reads the config; a missing file gives the defaults, a broken one an error.
    pub fn load(path: &Path) -> Result<Config> {
        let config = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .with_context(|| format!("the config file {} is not valid", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Config::default(),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        Ok(config)
    }

    /// The backend to use: `TOKENWARD_BACKEND` when set, else the config's.
    pub fn backend_choice(&self) -> String {
        std::env::var("TOKENWARD_BACKEND")
            .ok()
            .filter(|b| !b.is_empty())
            .unwrap_or_else(|| self.backend.clone())
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let json = serde_json::to_vec_pretty(self)?;
        write_atomic(path, &json, 0o600).with_context(|| format!("cannot write {}", path.display()))
    }
}
