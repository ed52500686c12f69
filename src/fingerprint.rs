//! Token fingerprints: how a secret is shown to people and logs.
//!
//! A fingerprint is the first 6 bytes of HMAC-SHA256(per-install key,
//! secret) in hex. The key is random, made once per install and kept 0600 in
//! the data dir, so fingerprints cannot be checked against guessed tokens
//! by someone who only sees the logs.

use crate::atomic::write_atomic;
use crate::secret::Secret;
use anyhow::{Context, Result};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use std::path::Path;
use zeroize::Zeroizing;

pub struct Fingerprinter {
    key: hmac::Key,
}

impl Fingerprinter {
    /// Loads the install's key, creating it on first use.
    pub fn load_or_create(path: &Path) -> Result<Fingerprinter> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) if bytes.len() == 32 => Zeroizing::new(bytes),
            Ok(_) => anyhow::bail!(
                "the fingerprint key {} is damaged; delete it to make a new one",
                path.display()
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut fresh = Zeroizing::new(vec![0u8; 32]);
                SystemRandom::new()
                    .fill(&mut fresh)
                    .map_err(|_| anyhow::anyhow!("the system random number generator failed"))?;
                write_atomic(path, &fresh, 0o600)
                    .with_context(|| format!("cannot write {}", path.display()))?;
                fresh
            }
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        Ok(Fingerprinter {
            key: hmac::Key::new(hmac::HMAC_SHA256, &bytes),
        })
    }

    pub fn of(&self, secret: &Secret) -> String {
        let tag = hmac::sign(&self.key, secret.expose().as_bytes());
        tag.as_ref()[..6]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_per_install_and_different_across_installs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = Fingerprinter::load_or_create(&dir.path().join("k1")).expect("key");
        let again = Fingerprinter::load_or_create(&dir.path().join("k1")).expect("key");
        let b = Fingerprinter::load_or_create(&dir.path().join("k2")).expect("key");
        let secret = Secret::from("token-value");
        assert_eq!(a.of(&secret), again.of(&secret));
        assert_ne!(a.of(&secret), b.of(&secret));
        assert_eq!(a.of(&secret).len(), 12);
        assert!(!a.of(&secret).contains("token"));
    }
}
