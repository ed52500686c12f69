//! The `file` backend: secrets encrypted in one JSON file in the data dir.
//!
//! Each secret is sealed with AES-256-GCM under a key derived from the
//! user's passphrase with PBKDF2-HMAC-SHA256 (ring), a fresh random nonce per
//! write, and the token id as associated data, so that a ciphertext moved to
//! another id fails authentication. A `check` value sealed the same way tells
//! a wrong passphrase from a right one. The store starts locked; the first
//! unlock of a missing file creates it with that passphrase. The key is wiped
//! when the store is locked or dropped.

use super::{Persistence, SecretStore, VaultError};
use crate::atomic::write_atomic;
use crate::secret::Secret;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::Mutex;
use zeroize::Zeroizing;

/// OWASP's 2023 figure for PBKDF2-HMAC-SHA256.
const DEFAULT_ITERATIONS: u32 = 600_000;
const CHECK_AAD: &[u8] = b"tokenward-vault-check";
const CHECK_PLAINTEXT: &[u8] = b"tokenward";

#[derive(Serialize, Deserialize)]
struct VaultFile {
    version: u32,
    kdf: String,
    iterations: u32,
    salt: String,
    check: String,
    entries: BTreeMap<String, String>,
}

type Key = Zeroizing<[u8; 32]>;

pub struct FileStore {
    path: PathBuf,
    iterations: u32,
    key: Mutex<Option<Key>>,
    /// Held across each read-modify-write of the file: the daemon runs
    /// vault calls on parallel blocking threads, and two unserialized
    /// `set`s would each write back the file without the other's entry
    /// (found by tests/faults.rs: an acknowledged token lost its secret).
    writer: Mutex<()>,
    rng: SystemRandom,
}

impl FileStore {
    pub fn new(path: PathBuf) -> FileStore {
        FileStore::with_iterations(path, DEFAULT_ITERATIONS)
    }

    /// For tests: a cheaper key derivation.
    pub fn with_iterations(path: PathBuf, iterations: u32) -> FileStore {
        FileStore {
            path,
            iterations: iterations.max(1),
            key: Mutex::new(None),
            writer: Mutex::new(()),
            rng: SystemRandom::new(),
        }
    }

    fn key(&self) -> Result<Key, VaultError> {
        self.key
            .lock()
            .map_err(|_| poisoned())?
            .clone()
            .ok_or(VaultError::Locked)
    }

    fn read(&self) -> Result<Option<VaultFile>, VaultError> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|_| {
                VaultError::Corrupt(format!("{} is not a tokenward vault", self.path.display()))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error(&self.path, &e)),
        }
    }

    fn write(&self, file: &VaultFile) -> Result<(), VaultError> {
        let json = serde_json::to_vec_pretty(file)
            .map_err(|e| VaultError::Corrupt(format!("cannot encode the vault: {e}")))?;
        write_atomic(&self.path, &json, 0o600).map_err(|e| io_error(&self.path, &e))
    }

    fn seal(&self, key: &Key, aad: &[u8], plaintext: &[u8]) -> Result<String, VaultError> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).map_err(|_| rng_failed())?;
        let mut buffer = Zeroizing::new(plaintext.to_vec());
        aead_key(key)
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut *buffer,
            )
            .map_err(|_| VaultError::Corrupt("encryption failed".to_owned()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buffer);
        Ok(hex_encode(&out))
    }

    fn open(key: &Key, aad: &[u8], sealed: &str) -> Result<Zeroizing<Vec<u8>>, ()> {
        let bytes = hex_decode(sealed).ok_or(())?;
        if bytes.len() < NONCE_LEN {
            return Err(());
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| ())?;
        let mut buffer = Zeroizing::new(ciphertext.to_vec());
        let plaintext_len = aead_key(key)
            .open_in_place(nonce, Aad::from(aad), &mut buffer)
            .map_err(|_| ())?
            .len();
        buffer.truncate(plaintext_len);
        Ok(buffer)
    }

    fn derive(passphrase: &Secret, salt: &[u8], iterations: u32) -> Key {
        let mut key = Zeroizing::new([0u8; 32]);
        let rounds = NonZeroU32::new(iterations).unwrap_or(NonZeroU32::MIN);
        ring::pbkdf2::derive(
            ring::pbkdf2::PBKDF2_HMAC_SHA256,
            rounds,
            salt,
            passphrase.expose().as_bytes(),
            &mut *key,
        );
        key
    }
}

fn aead_key(key: &Key) -> LessSafeKey {
    // AES_256_GCM takes exactly 32 bytes, which a Key always has.
    match UnboundKey::new(&AES_256_GCM, &key[..]) {
        Ok(unbound) => LessSafeKey::new(unbound),
        Err(_) => unreachable_key(),
    }
}

#[allow(clippy::panic)]
fn unreachable_key() -> ! {
    panic!("a 32-byte key was refused by AES-256-GCM")
}

fn poisoned() -> VaultError {
    VaultError::Unavailable {
        backend: "file",
        reason: "internal lock poisoned".to_owned(),
    }
}

fn rng_failed() -> VaultError {
    VaultError::Unavailable {
        backend: "file",
        reason: "the system random number generator failed".to_owned(),
    }
}

fn io_error(path: &std::path::Path, e: &std::io::Error) -> VaultError {
    VaultError::Unavailable {
        backend: "file",
        reason: format!("{}: {e}", path.display()),
    }
}

fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hex_decode(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

impl SecretStore for FileStore {
    fn name(&self) -> &'static str {
        "file"
    }

    fn persistence(&self) -> Persistence {
        Persistence::UntilDeleted
    }

    fn is_locked(&self) -> bool {
        self.key.lock().map(|k| k.is_none()).unwrap_or(true)
    }

    fn unlock(&self, passphrase: &Secret) -> Result<(), VaultError> {
        if passphrase.is_empty() {
            return Err(VaultError::WrongPassphrase);
        }
        // Two first unlocks at once must not each create a vault.
        let _writer = self.writer.lock().map_err(|_| poisoned())?;
        let key = match self.read()? {
            Some(file) => {
                let salt = hex_decode(&file.salt)
                    .ok_or_else(|| VaultError::Corrupt("bad salt".to_owned()))?;
                let key = FileStore::derive(passphrase, &salt, file.iterations);
                let check = FileStore::open(&key, CHECK_AAD, &file.check)
                    .map_err(|()| VaultError::WrongPassphrase)?;
                if check.as_slice() != CHECK_PLAINTEXT {
                    return Err(VaultError::WrongPassphrase);
                }
                key
            }
            None => {
                let mut salt = [0u8; 16];
                self.rng.fill(&mut salt).map_err(|_| rng_failed())?;
                let key = FileStore::derive(passphrase, &salt, self.iterations);
                let file = VaultFile {
                    version: 1,
                    kdf: "pbkdf2-hmac-sha256".to_owned(),
                    iterations: self.iterations,
                    salt: hex_encode(&salt),
                    check: self.seal(&key, CHECK_AAD, CHECK_PLAINTEXT)?,
                    entries: BTreeMap::new(),
                };
                self.write(&file)?;
                key
            }
        };
        *self.key.lock().map_err(|_| poisoned())? = Some(key);
        Ok(())
    }

    fn lock(&self) -> Result<(), VaultError> {
        *self.key.lock().map_err(|_| poisoned())? = None;
        Ok(())
    }

    fn get(&self, id: &str) -> Result<Secret, VaultError> {
        let key = self.key()?;
        let file = self
            .read()?
            .ok_or_else(|| VaultError::NotFound(id.to_owned()))?;
        let sealed = file
            .entries
            .get(id)
            .ok_or_else(|| VaultError::NotFound(id.to_owned()))?;
        let plaintext = FileStore::open(&key, id.as_bytes(), sealed).map_err(|()| {
            VaultError::Corrupt(format!("the entry for {id} failed authentication"))
        })?;
        let text = std::str::from_utf8(&plaintext)
            .map_err(|_| VaultError::Corrupt(format!("the entry for {id} is not text")))?;
        Ok(Secret::from(text))
    }

    fn set(&self, id: &str, secret: &Secret) -> Result<(), VaultError> {
        let key = self.key()?;
        let _writer = self.writer.lock().map_err(|_| poisoned())?;
        let mut file = self.read()?.ok_or(VaultError::Locked)?;
        let sealed = self.seal(&key, id.as_bytes(), secret.expose().as_bytes())?;
        file.entries.insert(id.to_owned(), sealed);
        self.write(&file)
    }

    fn delete(&self, id: &str) -> Result<(), VaultError> {
        self.key()?;
        let _writer = self.writer.lock().map_err(|_| poisoned())?;
        let Some(mut file) = self.read()? else {
            return Ok(());
        };
        if file.entries.remove(id).is_some() {
            self.write(&file)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(dir: &tempfile::TempDir) -> FileStore {
        FileStore::with_iterations(dir.path().join("vault.json"), 1000)
    }

    #[test]
    fn concurrent_sets_keep_every_entry() {
        // Regression (tests/faults.rs): parallel adds lost entries.
        let dir = tempfile::tempdir().expect("tempdir");
        let vault = std::sync::Arc::new(store(&dir));
        vault.unlock(&Secret::from("pass")).expect("unlock");
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let vault = vault.clone();
                std::thread::spawn(move || {
                    for i in 0..10 {
                        let id = format!("tw_{t}_{i}");
                        vault.set(&id, &Secret::from(id.as_str())).expect("set");
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("thread");
        }
        let reopened = store(&dir);
        reopened.unlock(&Secret::from("pass")).expect("unlock");
        for t in 0..8 {
            for i in 0..10 {
                let id = format!("tw_{t}_{i}");
                assert_eq!(reopened.get(&id).expect("kept").expose(), id);
            }
        }
    }

    #[test]
    fn round_trip_and_relock() {
        let dir = tempfile::tempdir().expect("tempdir");
        let vault = store(&dir);
        assert!(matches!(vault.get("a"), Err(VaultError::Locked)));
        vault
            .unlock(&Secret::from("correct horse"))
            .expect("unlock creates");
        vault.set("tw_a", &Secret::from("s3cret-a")).expect("set");
        vault.set("tw_b", &Secret::from("s3cret-b")).expect("set");
        assert_eq!(vault.get("tw_a").expect("get").expose(), "s3cret-a");
        let raw = std::fs::read_to_string(dir.path().join("vault.json")).expect("read");
        assert!(!raw.contains("s3cret"), "plaintext on disk");

        let reopened = store(&dir);
        assert!(reopened.is_locked());
        reopened
            .unlock(&Secret::from("correct horse"))
            .expect("unlock");
        assert_eq!(reopened.get("tw_b").expect("get").expose(), "s3cret-b");
        reopened.delete("tw_b").expect("delete");
        assert!(matches!(reopened.get("tw_b"), Err(VaultError::NotFound(_))));
        reopened.lock().expect("lock");
        assert!(matches!(reopened.get("tw_a"), Err(VaultError::Locked)));
    }

    #[test]
    fn wrong_passphrase_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        store(&dir).unlock(&Secret::from("right")).expect("create");
        let vault = store(&dir);
        assert!(matches!(
            vault.unlock(&Secret::from("wrong")),
            Err(VaultError::WrongPassphrase)
        ));
        assert!(vault.is_locked());
    }

    #[test]
    fn tampered_entry_fails_authentication() {
        let dir = tempfile::tempdir().expect("tempdir");
        let vault = store(&dir);
        vault.unlock(&Secret::from("pw")).expect("unlock");
        vault.set("tw_a", &Secret::from("secret-a")).expect("set");
        vault.set("tw_b", &Secret::from("secret-b")).expect("set");
        let path = dir.path().join("vault.json");
        let mut file: VaultFile =
            serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("parse");

        // One flipped bit in the ciphertext.
        let mut sealed = file.entries["tw_a"].clone().into_bytes();
        let last = sealed.len() - 1;
        sealed[last] = if sealed[last] == b'0' { b'1' } else { b'0' };
        let tampered = String::from_utf8(sealed).expect("hex");
        file.entries.insert("tw_a".into(), tampered);
        // And a ciphertext moved to another id.
        let moved = file.entries["tw_b"].clone();
        file.entries.insert("tw_c".into(), moved);
        std::fs::write(&path, serde_json::to_vec(&file).expect("encode")).expect("write");

        assert!(matches!(vault.get("tw_a"), Err(VaultError::Corrupt(_))));
        assert!(matches!(vault.get("tw_c"), Err(VaultError::Corrupt(_))));
        assert_eq!(vault.get("tw_b").expect("untouched").expose(), "secret-b");
    }

    #[test]
    fn garbage_file_is_an_error_not_a_reset() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("vault.json");
        std::fs::write(&path, b"not json").expect("write");
        let vault = store(&dir);
        assert!(matches!(
            vault.unlock(&Secret::from("pw")),
            Err(VaultError::Corrupt(_))
        ));
        assert_eq!(std::fs::read(&path).expect("read"), b"not json");
    }
}
