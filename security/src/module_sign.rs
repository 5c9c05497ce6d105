//! Module signatures (docs/security.md, "Signed modules"): ed25519 over
//! `quarry-module-v1:<sha256 of the module, hex>`, so a signer needs only
//! the module's digest, and `openssl pkeyutl -sign -rawin` signs the same
//! message. Keys are PKCS#8 PEM (private, mode 0600) and 64 hex digits
//! (public, what `quarry cluster trust-key` takes); signatures are 128 hex
//! digits in `<module>.sig`.

use crate::certs::write_new;
use crate::error::{Result, SecurityError, material};
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
use std::path::{Path, PathBuf};

/// Length of a public key, in bytes.
pub const PUBLIC_KEY_BYTES: usize = 32;
/// A PKCS#8 v1 ed25519 private key up to its 32-byte seed (RFC 8410).
const PKCS8_V1_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];
/// Length of a signature, in bytes.
pub const SIGNATURE_BYTES: usize = 64;

/// What is signed for the module whose sha256 is `digest` (lowercase hex).
pub fn message(digest: &str) -> Vec<u8> {
    format!("quarry-module-v1:{digest}").into_bytes()
}

/// The files [`keygen`] writes for key `name` in `dir`.
pub fn key_paths(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("{name}.key")),
        dir.join(format!("{name}.pub")),
    )
}

/// Makes signing key `name` in `dir`: `<name>.key` (PKCS#8 PEM, 0600) and
/// `<name>.pub` (hex); returns their paths. Existing files are not replaced.
pub fn keygen(dir: &Path, name: &str) -> Result<(PathBuf, PathBuf)> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(SecurityError::Identity(format!(
            "key name {name:?} must be letters, digits, `-`, `_` or `.`"
        )));
    }
    std::fs::create_dir_all(dir).map_err(|source| SecurityError::Io {
        context: format!("create {}", dir.display()),
        source,
    })?;
    let generated = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)
        .map_err(|e| material("generate an ed25519 key", e))?;
    let public = hex::encode(generated.public_key_raw());
    // ring writes PKCS#8 v2 (the public key included), which OpenSSL 3.0
    // cannot read; v1 holds just the seed and every tool reads it.
    let v2 = generated.serialized_der();
    let seed = v2
        .get(16..48)
        .ok_or_else(|| material("generate an ed25519 key", "unexpected PKCS#8 layout"))?;
    let mut v1 = PKCS8_V1_PREFIX.to_vec();
    v1.extend_from_slice(seed);
    let pair = rcgen::KeyPair::try_from(v1.as_slice())
        .map_err(|e| material("encode the ed25519 key", e))?;
    if pair.public_key_raw() != generated.public_key_raw() {
        return Err(material(
            "encode the ed25519 key",
            "the re-encoded key differs",
        ));
    }
    let (key, public_path) = key_paths(dir, name);
    write_new(&key, &pair.serialize_pem(), true)?;
    write_new(&public_path, &format!("{public}\n"), false)?;
    Ok((key, public_path))
}

fn load_key(path: &Path) -> Result<Ed25519KeyPair> {
    let pem = std::fs::read_to_string(path).map_err(|source| SecurityError::Io {
        context: format!("read signing key {}", path.display()),
        source,
    })?;
    let pair = rcgen::KeyPair::from_pem(&pem)
        .map_err(|e| material(format!("signing key {}", path.display()), e))?;
    Ed25519KeyPair::from_pkcs8_maybe_unchecked(pair.serialized_der()).map_err(|e| {
        material(
            format!("signing key {}", path.display()),
            format!("not an ed25519 key ({e}); make one with `quarry module keygen`"),
        )
    })
}

/// Signs the module whose sha256 is `digest` with the key in `key`;
/// returns the signature as hex.
pub fn sign(key: &Path, digest: &str) -> Result<String> {
    let pair = load_key(key)?;
    Ok(hex::encode(pair.sign(&message(digest)).as_ref()))
}

/// The public key of the private key in `key`, as hex.
pub fn public_key_of(key: &Path) -> Result<String> {
    Ok(hex::encode(load_key(key)?.public_key().as_ref()))
}

/// A public key from its hex text (a `.pub` file's contents).
pub fn parse_public_key(text: &str) -> Result<Vec<u8>> {
    decode_hex(text.trim(), PUBLIC_KEY_BYTES, "an ed25519 public key")
}

/// A signature from its hex text (a `.sig` file's contents).
pub fn parse_signature(text: &str) -> Result<Vec<u8>> {
    decode_hex(text.trim(), SIGNATURE_BYTES, "an ed25519 signature")
}

fn decode_hex(text: &str, bytes: usize, what: &str) -> Result<Vec<u8>> {
    match hex::decode(text) {
        Ok(decoded) if decoded.len() == bytes => Ok(decoded),
        _ => Err(SecurityError::Identity(format!(
            "{what} is {} hex digits; got {:?}",
            bytes * 2,
            text.chars().take(20).collect::<String>()
        ))),
    }
}

/// Whether `signature` is `public_key`'s signature of the module whose
/// sha256 is `digest`.
pub fn verify(public_key: &[u8], digest: &str, signature: &[u8]) -> bool {
    UnparsedPublicKey::new(&ED25519, public_key)
        .verify(&message(digest), signature)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_for_its_module_and_key_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (key, public) = keygen(dir.path(), "release").expect("keygen");
        let public =
            parse_public_key(&std::fs::read_to_string(public).expect("pub")).expect("public key");
        assert_eq!(hex::encode(&public), public_key_of(&key).expect("derive"));
        let digest = "ab".repeat(32);
        let signature = parse_signature(&sign(&key, &digest).expect("sign")).expect("hex");
        assert!(verify(&public, &digest, &signature));
        assert!(
            !verify(&public, &"cd".repeat(32), &signature),
            "another module"
        );
        let (other, _) = keygen(dir.path(), "other").expect("keygen");
        let forged = parse_signature(&sign(&other, &digest).expect("sign")).expect("hex");
        assert!(!verify(&public, &digest, &forged), "another key");
        assert!(
            keygen(dir.path(), "release").is_err(),
            "keys are not replaced"
        );
        assert!(parse_public_key("abc").is_err());
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&key).expect("meta").permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
    }
}
