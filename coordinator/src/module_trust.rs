//! Module integrity in the replicated state (docs/security.md, "Module
//! names and signatures"): who owns each module name, the cluster's
//! trusted signing keys, the signature each signed module was uploaded
//! with, and whether unsigned modules are refused. Deterministic: ed25519
//! verification is a pure function, so every replica agrees.

use quarry_proto::ModuleDigest;
use quarry_security::module_sign;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Most trusted keys a cluster keeps.
pub const MAX_TRUSTED_KEYS: usize = 64;

/// A key whose signatures the cluster accepts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustedKey {
    /// The ed25519 public key (32 bytes).
    pub public_key: Vec<u8>,
    /// The admin who added it, `role:name`.
    pub added_by: String,
    /// When.
    pub added_ms: i64,
}

/// The signature a module was uploaded with, and the key it verified with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleSignature {
    /// The trusted key's name.
    pub key: String,
    /// The ed25519 signature (64 bytes).
    pub signature: Vec<u8>,
}

/// Ownership, keys, signatures and the signing policy.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleTrust {
    /// Module name -> the principal that first uploaded it.
    pub owners: BTreeMap<String, String>,
    /// Trusted signing keys by name.
    pub keys: BTreeMap<String, TrustedKey>,
    /// Signatures of signed modules.
    pub signatures: BTreeMap<ModuleDigest, ModuleSignature>,
    /// Whether modules must be signed by a trusted key to be uploaded and run.
    pub require_signed: bool,
}

/// A module's signature as workers check it: the signature, and the name
/// and public key of the trusted key it claims.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignatureForWorkers {
    /// The key's name.
    pub key: String,
    /// Its public key; empty if the key is no longer trusted.
    pub public_key: Vec<u8>,
    /// The signature.
    pub signature: Vec<u8>,
}

impl ModuleTrust {
    /// Whether `uploader` may publish a version of `name`: its owner, an
    /// admin, or anyone for a new name. A name that has versions but no
    /// owner (uploaded before names had owners) takes admins only.
    pub fn may_publish(
        &self,
        name: &str,
        uploader: &str,
        admin: bool,
        has_versions: bool,
    ) -> Result<(), String> {
        match self.owners.get(name) {
            _ if admin => Ok(()),
            Some(owner) if owner == uploader => Ok(()),
            Some(owner) => Err(format!(
                "module name {name} belongs to {owner}, who uploaded it first; {uploader} may not publish or delete its versions (pick another name, or ask {owner} or an admin)"
            )),
            None if has_versions => Err(format!(
                "module name {name} was uploaded before names had owners; only an admin may publish or delete its versions"
            )),
            None => Ok(()),
        }
    }

    /// The trusted key `signature` verifies with for the module `digest`.
    pub fn signer(&self, digest: &ModuleDigest, signature: &[u8]) -> Option<&str> {
        self.keys
            .iter()
            .find(|(_, key)| module_sign::verify(&key.public_key, digest.as_str(), signature))
            .map(|(name, _)| name.as_str())
    }

    /// What a worker is sent to check `digest`'s signature, if it has one.
    pub fn for_workers(&self, digest: &ModuleDigest) -> Option<SignatureForWorkers> {
        let signed = self.signatures.get(digest)?;
        Some(SignatureForWorkers {
            key: signed.key.clone(),
            public_key: self
                .keys
                .get(&signed.key)
                .map(|k| k.public_key.clone())
                .unwrap_or_default(),
            signature: signed.signature.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_belong_to_their_first_uploader_or_an_admin() {
        let mut trust = ModuleTrust::default();
        assert!(
            trust
                .may_publish("bruteforce", "hunter:alice", false, false)
                .is_ok()
        );
        trust
            .owners
            .insert("bruteforce".into(), "hunter:alice".into());
        assert!(
            trust
                .may_publish("bruteforce", "hunter:alice", false, true)
                .is_ok()
        );
        let denied = trust
            .may_publish("bruteforce", "hunter:mallory", false, true)
            .expect_err("not the owner");
        assert!(denied.contains("belongs to hunter:alice"), "{denied}");
        assert!(
            trust
                .may_publish("bruteforce", "admin:ops", true, true)
                .is_ok()
        );
        let legacy = trust
            .may_publish("sigma", "hunter:alice", false, true)
            .expect_err("unowned name with versions");
        assert!(legacy.contains("only an admin"), "{legacy}");
    }

    #[test]
    fn a_signature_counts_only_with_a_trusted_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (key, public) = module_sign::keygen(dir.path(), "release").expect("keygen");
        let public = module_sign::parse_public_key(&std::fs::read_to_string(public).expect("read"))
            .expect("public");
        let digest = ModuleDigest::new("ab".repeat(32));
        let signature =
            module_sign::parse_signature(&module_sign::sign(&key, digest.as_str()).expect("sign"))
                .expect("hex");
        let mut trust = ModuleTrust::default();
        assert_eq!(trust.signer(&digest, &signature), None);
        trust.keys.insert(
            "release".into(),
            TrustedKey {
                public_key: public,
                added_by: "admin:ops".into(),
                added_ms: 1,
            },
        );
        assert_eq!(trust.signer(&digest, &signature), Some("release"));
        assert_eq!(
            trust.signer(&ModuleDigest::new("cd".repeat(32)), &signature),
            None
        );
    }
}
