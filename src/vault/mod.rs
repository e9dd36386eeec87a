//! The My Number vault: the number is encrypted (ChaCha20-Poly1305) outside the event log; only
//! its salted commitment enters the log (audit.md), so it can be erased without breaking the
//! hash chain. The salt is sealed with the number (never stored in the clear: with it, the
//! commitment could be tested against all 10^11 valid numbers), and a keyed blind index finds a
//! person by number. Everything here is keyed by subkeys of the one vault key.

pub mod numbers;

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
    /// Key of the blind index ([`Vault::blind_index`]).
    blind: [u8; 32],
}

/// Bytes of the commitment's salt, sealed in front of the number.
const SALT_LEN: usize = 16;

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
            blind: derive(&key, b"kokuho-ledger my-number blind index"),
        }
    }

    /// The blind index of a My Number: HMAC-SHA-256 under its own subkey, lowercase hex. Equal
    /// numbers give equal indexes (so a search finds them); without the vault key nothing can
    /// be learned from it.
    pub fn blind_index(&self, my_number: &MyNumber) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.blind).expect("HMAC takes any key length");
        mac.update(my_number.expose().as_bytes());
        hex::encode(mac.finalize().into_bytes())
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

    /// Seals a My Number for a person: a fresh salt, the commitment SHA-256(salt ‖ number)
    /// that goes into the event, and salt and number encrypted together with the commitment
    /// bound in as associated data.
    pub fn seal(&self, person_id: &PersonId, my_number: &MyNumber) -> VaultEntry {
        let mut salt = [0u8; SALT_LEN];
        rand::rngs::OsRng.fill_bytes(&mut salt);
        self.seal_with_salt(person_id, my_number, &salt)
    }

    /// Seals with a given salt: the move of an entry from the old plain-salt table keeps its
    /// commitment (the log holds it) and hides its salt.
    pub fn seal_with_salt(&self, person_id: &PersonId, my_number: &MyNumber, salt: &[u8]) -> VaultEntry {
        let mut nonce = vec![0u8; 12];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let commitment = commitment(salt, my_number.expose());
        let mut plain = salt.to_vec();
        plain.extend_from_slice(my_number.expose().as_bytes());
        let sealed = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &plain,
                    aad: commitment.as_bytes(),
                },
            )
            .expect("ChaCha20-Poly1305 encryption of a few bytes cannot fail");
        VaultEntry {
            commitment,
            person_id: person_id.to_string(),
            nonce,
            sealed,
            blind_index: self.blind_index(my_number),
        }
    }

    /// Decrypts an entry and checks it against its commitment.
    pub fn open(&self, entry: &VaultEntry) -> Result<MyNumber, VaultError> {
        let plain = self.decrypt(&entry.nonce, &entry.sealed, &entry.commitment)?;
        if plain.len() <= SALT_LEN {
            return Err(VaultError::Decrypt);
        }
        let (salt, number) = plain.split_at(SALT_LEN);
        let s = std::str::from_utf8(number).map_err(|_| VaultError::Decrypt)?;
        if commitment(salt, s) != entry.commitment {
            return Err(VaultError::Decrypt);
        }
        MyNumber::parse(s).map_err(|_| VaultError::Decrypt)
    }

    fn decrypt(&self, nonce: &[u8], ciphertext: &[u8], commitment: &str) -> Result<Vec<u8>, VaultError> {
        if nonce.len() != 12 {
            return Err(VaultError::Decrypt);
        }
        self.cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: commitment.as_bytes(),
                },
            )
            .map_err(|_| VaultError::Decrypt)
    }

    /// Opens an entry of the old table (plain salt beside a ciphertext of the number alone).
    pub fn open_plain_salt(
        &self,
        commitment_hex: &str,
        salt: &[u8],
        nonce: &[u8],
        ciphertext: &[u8],
    ) -> Result<MyNumber, VaultError> {
        let plain = self.decrypt(nonce, ciphertext, commitment_hex)?;
        let s = String::from_utf8(plain).map_err(|_| VaultError::Decrypt)?;
        if commitment(salt, &s) != commitment_hex {
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
        assert!(!e.sealed.windows(12).any(|w| w == b"123456789018"));
        assert_eq!(v.open(&e).unwrap(), n);
        // The salt is inside the seal: with the key, the commitment is SHA-256(salt ‖ number).
        let plain = v.decrypt(&e.nonce, &e.sealed, &e.commitment).unwrap();
        assert_eq!(e.commitment, commitment(&plain[..SALT_LEN], "123456789018"));
        let mut bad = e.clone();
        bad.sealed[0] ^= 1;
        assert!(v.open(&bad).is_err());
        assert!(Vault::from_key([8; 32]).open(&e).is_err());
        // Equal numbers, equal blind index; another key, another index.
        assert_eq!(
            v.blind_index(&n),
            v.seal(&PersonId::parse("2").unwrap(), &n).blind_index
        );
        assert_ne!(v.blind_index(&n), Vault::from_key([8; 32]).blind_index(&n));
        assert_ne!(e.commitment, v.seal(&PersonId::parse("1").unwrap(), &n).commitment);
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
