//! The deployment's Ed25519 checkpoint key: a PKCS#8 PEM file (what `openssl genpkey
//! -algorithm ed25519` writes, and `kokuho-ledger audit keygen` creates), or the same PEM in
//! `KOKUHO_AUDIT_KEY`. Public keys and signatures are base64, standard alphabet, padded.

use std::io::Write as _;
use std::path::Path;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ed25519_dalek::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _};
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The OS error is the source (printed once, after the path, by the error chain).
    #[error("key file {path}")]
    Io { path: String, source: std::io::Error },
    #[error("{0}: not an Ed25519 private key in PKCS#8 PEM form")]
    Format(String),
    #[error("{0} already exists: refusing to overwrite a signing key")]
    Exists(String),
    #[error("not a base64 Ed25519 public key")]
    PublicKey,
}

/// Signs checkpoints. Its Debug output is the public key only.
pub struct Signer {
    key: SigningKey,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signer(public_key = {})", self.public_key())
    }
}

impl Signer {
    pub fn generate() -> Self {
        Self {
            key: SigningKey::generate(&mut rand::rngs::OsRng),
        }
    }

    /// A key from its 32-byte seed (RFC 8032's private key), e.g. for a documented example.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self {
            key: SigningKey::from_bytes(&seed),
        }
    }

    pub fn from_pem(pem: &str, origin: &str) -> Result<Self, KeyError> {
        SigningKey::from_pkcs8_pem(pem.trim())
            .map(|key| Self { key })
            .map_err(|_| KeyError::Format(origin.to_owned()))
    }

    pub fn to_pem(&self) -> String {
        self.key
            .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
            .expect("an Ed25519 key encodes")
            .to_string()
    }

    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_pem(&text, &path.display().to_string())
    }

    /// Writes a new key to `path` with mode 0600; never overwrites one.
    pub fn create(path: &Path) -> Result<Self, KeyError> {
        let signer = Self::generate();
        let io = |source| KeyError::Io {
            path: path.display().to_string(),
            source,
        };
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                KeyError::Exists(path.display().to_string())
            } else {
                io(e)
            }
        })?;
        file.write_all(signer.to_pem().as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)?;
        Ok(signer)
    }

    /// The key at `path`, created there first if there is none (the embedded default).
    pub fn load_or_create(path: &Path) -> Result<(Self, bool), KeyError> {
        match Self::create(path) {
            Ok(s) => Ok((s, true)),
            Err(KeyError::Exists(_)) => Ok((Self::load(path)?, false)),
            Err(e) => Err(e),
        }
    }

    /// The public key, base64.
    pub fn public_key(&self) -> String {
        B64.encode(self.key.verifying_key().as_bytes())
    }

    /// An Ed25519 signature over `message`, base64.
    pub fn sign(&self, message: &[u8]) -> String {
        B64.encode(self.key.sign(message).to_bytes())
    }
}

/// A public key given as base64 (as the API and the export show it).
pub fn parse_public_key(b64: &str) -> Result<VerifyingKey, KeyError> {
    let bytes: [u8; 32] = B64
        .decode(b64.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or(KeyError::PublicKey)?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| KeyError::PublicKey)
}

/// Whether `signature` (base64) is a valid Ed25519 signature of `message` under `key`.
pub fn verify(key: &VerifyingKey, message: &[u8], signature: &str) -> bool {
    let Some(bytes) = B64.decode(signature).ok().and_then(|b| <[u8; 64]>::try_from(b).ok()) else {
        return false;
    };
    key.verify_strict(message, &Signature::from_bytes(&bytes)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_8032_test_1_verifies_and_a_flipped_bit_does_not() {
        let key = parse_public_key(
            &B64.encode(hex::decode("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a").unwrap()),
        )
        .unwrap();
        let sig = hex::decode("e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b").unwrap();
        assert!(verify(&key, b"", &B64.encode(&sig)));
        let mut bad = sig.clone();
        bad[0] ^= 1;
        assert!(!verify(&key, b"", &B64.encode(&bad)));
        assert!(!verify(&key, b"x", &B64.encode(&sig)));
        assert!(!verify(&key, b"", "not base64"));
    }

    #[test]
    fn a_created_key_is_private_reloads_and_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.key");
        let (created, fresh) = Signer::load_or_create(&path).unwrap();
        assert!(fresh);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let (again, fresh) = Signer::load_or_create(&path).unwrap();
        assert!(!fresh);
        assert_eq!(again.public_key(), created.public_key());
        assert!(matches!(Signer::create(&path), Err(KeyError::Exists(_))));
        let sig = again.sign(b"checkpoint");
        assert!(verify(
            &parse_public_key(&created.public_key()).unwrap(),
            b"checkpoint",
            &sig
        ));
        assert!(!format!("{again:?}").contains("PRIVATE"));
        std::fs::write(dir.path().join("bad.key"), "not a key").unwrap();
        assert!(matches!(
            Signer::load(&dir.path().join("bad.key")),
            Err(KeyError::Format(_))
        ));
    }
}
