//! The My Number vault: the number is encrypted (ChaCha20-Poly1305) outside the event log; only
//! its salted commitment enters the log (audit.md), so it can be erased without breaking the
//! hash chain.

use std::io::Write as _;
use std::path::Path;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::domain::{MyNumber, PersonId};
use crate::store::VaultEntry;

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// The OS error is the source (printed once, after the path, by the error chain).
    #[error("vault key file {path}")]
    Io { path: String, source: std::io::Error },
    #[error("vault key file {0} must hold 64 hex digits")]
    BadKey(String),
    #[error("a vault entry failed to decrypt")]
    Decrypt,
}

pub struct Vault {
    cipher: ChaCha20Poly1305,
    /// Key of the keyed fingerprints ([`Vault::fingerprint`]), derived from the vault key.
    fingerprints: [u8; 32],
}

/// A subkey for one purpose: HMAC-SHA-256(key, purpose).
fn derive(key: &[u8; 32], purpose: &[u8]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(purpose);
    mac.finalize().into_bytes().into()
}

/// Lowercase hex SHA-256(salt ‖ my_number): the commitment that goes into the event.
pub fn commitment(salt: &[u8], my_number: &str) -> String {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(my_number.as_bytes());
    hex::encode(h.finalize())
}

impl Vault {
    pub fn from_key(key: [u8; 32]) -> Self {
        Self {
            cipher: ChaCha20Poly1305::new(Key::from_slice(&key)),
            fingerprints: derive(&key, b"kokuho-ledger fingerprints"),
        }
    }

    /// A keyed fingerprint (HMAC-SHA-256 under a key derived from the vault key, lowercase
    /// hex) of request data that may contain a My Number: Idempotency-Key fingerprints and
    /// import line keys. Without the vault key nobody can test a guessed number against it.
    pub fn fingerprint(&self, parts: &[&[u8]]) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.fingerprints).expect("HMAC takes any key length");
        for p in parts {
            mac.update(&(p.len() as u64).to_be_bytes());
            mac.update(p);
        }
        hex::encode(mac.finalize().into_bytes())
    }

    /// A key given inline: 64 hex digits.
    pub fn from_hex(text: &str, origin: &str) -> Result<Self, VaultError> {
        let bytes = hex::decode(text.trim()).map_err(|_| VaultError::BadKey(origin.to_owned()))?;
        let key: [u8; 32] = bytes.try_into().map_err(|_| VaultError::BadKey(origin.to_owned()))?;
        Ok(Self::from_key(key))
    }

    /// Reads a key file.
    pub fn load_key_file(path: &Path) -> Result<Self, VaultError> {
        let text = std::fs::read_to_string(path).map_err(|source| VaultError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_hex(&text, &path.display().to_string())
    }

    /// Writes a new random key to `path` (mode 0600); never overwrites a file.
    pub fn create_key_file(path: &Path) -> Result<Self, VaultError> {
        let io = |source| VaultError::Io {
            path: path.display().to_string(),
            source,
        };
        let mut key = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut key);
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(path).map_err(io)?;
        f.write_all(hex::encode(key).as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)?;
        Ok(Self::from_key(key))
    }

    /// Reads the key file, or creates one (mode 0600) when it does not exist: the embedded
    /// default's key beside its database file.
    pub fn open_or_create_key_file(path: &Path) -> Result<(Self, bool), VaultError> {
        if path.exists() {
            return Ok((Self::load_key_file(path)?, false));
        }
        Ok((Self::create_key_file(path)?, true))
    }

    /// Encrypts a My Number for a person; the commitment is bound in as associated data.
    pub fn seal(&self, person_id: &PersonId, my_number: &MyNumber) -> VaultEntry {
        let mut salt = vec![0u8; 16];
        let mut nonce = vec![0u8; 12];
        rand::rngs::OsRng.fill_bytes(&mut salt);
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let commitment = commitment(&salt, my_number.expose());
        let ciphertext = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: my_number.expose().as_bytes(),
                    aad: commitment.as_bytes(),
                },
            )
            .expect("ChaCha20-Poly1305 encryption of 12 bytes cannot fail");
        VaultEntry {
            commitment,
            person_id: person_id.to_string(),
            salt,
            nonce,
            ciphertext,
        }
    }

    /// Decrypts an entry and checks it against its commitment.
    pub fn open(&self, entry: &VaultEntry) -> Result<MyNumber, VaultError> {
        let plain = self
            .cipher
            .decrypt(
                Nonce::from_slice(&entry.nonce),
                Payload {
                    msg: &entry.ciphertext,
                    aad: entry.commitment.as_bytes(),
                },
            )
            .map_err(|_| VaultError::Decrypt)?;
        let s = String::from_utf8(plain).map_err(|_| VaultError::Decrypt)?;
        if commitment(&entry.salt, &s) != entry.commitment {
            return Err(VaultError::Decrypt);
        }
        MyNumber::parse(&s).map_err(|_| VaultError::Decrypt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_and_open_round_trip_and_commit() {
        let v = Vault::from_key([7; 32]);
        let n = MyNumber::parse("123456789018").unwrap();
        let e = v.seal(&PersonId::parse("1").unwrap(), &n);
        assert_eq!(e.commitment, commitment(&e.salt, "123456789018"));
        assert!(!e.ciphertext.windows(12).any(|w| w == b"123456789018"));
        assert_eq!(v.open(&e).unwrap(), n);
        let mut bad = e.clone();
        bad.ciphertext[0] ^= 1;
        assert!(v.open(&bad).is_err());
        assert!(Vault::from_key([8; 32]).open(&e).is_err());
    }

    #[test]
    fn key_file_is_created_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.key");
        let (a, created) = Vault::open_or_create_key_file(&p).unwrap();
        assert!(created);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let e = a.seal(
            &PersonId::parse("1").unwrap(),
            &MyNumber::parse("123456789018").unwrap(),
        );
        let b = Vault::load_key_file(&p).unwrap();
        assert!(b.open(&e).is_ok());
        assert!(
            !Vault::open_or_create_key_file(&p).unwrap().1,
            "reused, not created again"
        );
        assert!(Vault::load_key_file(&dir.path().join("missing")).is_err());
        assert!(Vault::create_key_file(&p).is_err(), "never overwritten");
    }
}
