//! Signed checkpoints (audit.md): `{origin, size, root, chain_head, timestamp}`, signed with
//! Ed25519 over their RFC 8785 form.

use serde::{Deserialize, Serialize};

use super::jcs;
use super::keys::{self, Signer};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    /// Lowercase hex `root(size)`.
    pub root: String,
    /// Lowercase hex `chain_hash(size)`.
    pub chain_head: String,
    /// RFC 3339 UTC, microseconds.
    pub timestamp: String,
}

impl Checkpoint {
    /// What is signed: RFC 8785 of exactly the five fields.
    pub fn canonical(&self) -> Vec<u8> {
        let value = serde_json::to_value(self).expect("a checkpoint serializes");
        jcs::to_vec(&value).expect("a checkpoint holds only strings and a small integer")
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedCheckpoint {
    pub checkpoint: Checkpoint,
    /// Base64 Ed25519 signature of `checkpoint.canonical()`.
    pub signature: String,
}

impl SignedCheckpoint {
    pub fn sign(checkpoint: Checkpoint, signer: &Signer) -> Self {
        let signature = signer.sign(&checkpoint.canonical());
        Self { checkpoint, signature }
    }

    pub fn verifies(&self, key: &ed25519_dalek::VerifyingKey) -> bool {
        keys::verify(key, &self.checkpoint.canonical(), &self.signature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_form_and_signature() {
        let c = Checkpoint {
            origin: "kokuho-ledger.local".into(),
            size: 3,
            root: "ab".into(),
            chain_head: "cd".into(),
            timestamp: "2026-11-25T01:02:03.000000Z".into(),
        };
        assert_eq!(
            String::from_utf8(c.canonical()).unwrap(),
            r#"{"chain_head":"cd","origin":"kokuho-ledger.local","root":"ab","size":3,"timestamp":"2026-11-25T01:02:03.000000Z"}"#
        );
        let signer = Signer::generate();
        let signed = SignedCheckpoint::sign(c.clone(), &signer);
        let key = keys::parse_public_key(&signer.public_key()).unwrap();
        assert!(signed.verifies(&key));
        let mut forged = signed.clone();
        forged.checkpoint.size = 4;
        assert!(!forged.verifies(&key));
        let other = keys::parse_public_key(&Signer::generate().public_key()).unwrap();
        assert!(!signed.verifies(&other));
    }
}
