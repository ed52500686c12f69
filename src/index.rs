//! The index file: every token's metadata, never a secret.
//!
//! `index.json` in the data dir holds `{"version":1,"tokens":[…]}`. The
//! daemon is its one writer and replaces it atomically ([`crate::atomic`]),
//! so a crash at any moment leaves the old index or the new one. A file that
//! does not parse is reported and left alone, never overwritten.

use crate::atomic::write_atomic;
use crate::token::TokenMeta;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

const VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("cannot read the index {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the index {path} is unreadable ({reason}); fix or move it away, tokenward will not overwrite it")]
    Corrupt { path: PathBuf, reason: String },
    #[error("cannot write the index {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

#[derive(Serialize, Deserialize)]
struct IndexFile {
    version: u32,
    tokens: Vec<TokenMeta>,
}

/// Reads the index; a missing file is an empty index.
pub fn load(path: &Path) -> Result<Vec<TokenMeta>, IndexError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(IndexError::Read {
                path: path.to_owned(),
                source,
            })
        }
    };
    let file: IndexFile = serde_json::from_slice(&bytes).map_err(|e| IndexError::Corrupt {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    if file.version != VERSION {
        return Err(IndexError::Corrupt {
            path: path.to_owned(),
            reason: format!("version {} is not one this build reads", file.version),
        });
    }
    Ok(file.tokens)
}

/// Replaces the index with `tokens`.
pub fn save(path: &Path, tokens: &[TokenMeta]) -> Result<(), IndexError> {
    let file = IndexFile {
        version: VERSION,
        tokens: tokens.to_vec(),
    };
    let json = serde_json::to_vec_pretty(&file).map_err(|e| IndexError::Write {
        path: path.to_owned(),
        source: std::io::Error::other(e),
    })?;
    write_atomic(path, &json, 0o600).map_err(|source| IndexError::Write {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::Role;

    fn meta(id: &str) -> TokenMeta {
        TokenMeta::new(
            id,
            "https://h",
            Some("u".to_owned()),
            Role::Vcs,
            time::OffsetDateTime::UNIX_EPOCH,
        )
    }

    #[test]
    fn missing_is_empty_and_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("index.json");
        assert!(load(&path).expect("load").is_empty());
        save(&path, &[meta("a"), meta("b")]).expect("save");
        let ids: Vec<_> = load(&path)
            .expect("load")
            .into_iter()
            .map(|t| t.id)
            .collect();
        assert_eq!(ids, ["a", "b"]);
    }

    #[test]
    fn corrupt_index_is_reported_and_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("index.json");
        std::fs::write(&path, b"{\"version\":1,\"tokens\":[{").expect("write");
        assert!(matches!(load(&path), Err(IndexError::Corrupt { .. })));
        assert_eq!(
            std::fs::read(&path).expect("read"),
            b"{\"version\":1,\"tokens\":[{"
        );
    }

    #[test]
    fn every_save_is_whole() {
        // Interleave saves and loads: a reader must always see a whole index.
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("index.json");
        let mut tokens = Vec::new();
        for i in 0..50 {
            tokens.push(meta(&format!("tw_{i}")));
            save(&path, &tokens).expect("save");
            assert_eq!(load(&path).expect("load").len(), i + 1);
        }
    }
}
