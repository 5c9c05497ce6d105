//! Bearer tokens for API callers without a client certificate: a public
//! id and a 256-bit random secret, `tok-<16 hex>.<64 hex>`. Only an argon2id
//! hash of the whole token is stored; the caller sees the token once.

use crate::error::{Result, SecurityError};
use argon2::password_hash::rand_core::{OsRng, RngCore as _};
use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};

/// Prefix of token ids.
pub const ID_PREFIX: &str = "tok-";

/// A freshly made token: its id and the whole secret to hand out once.
pub struct Minted {
    /// Public id, `tok-<16 hex>`.
    pub id: String,
    /// `<id>.<64 hex>`: what the caller sends.
    pub secret: String,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Makes a new token from the operating system's random source.
pub fn mint() -> Minted {
    let mut id = [0u8; 8];
    let mut secret = [0u8; 32];
    OsRng.fill_bytes(&mut id);
    OsRng.fill_bytes(&mut secret);
    let id = format!("{ID_PREFIX}{}", hex(&id));
    let secret = format!("{id}.{}", hex(&secret));
    Minted { id, secret }
}

/// The id a presented token claims, if it is shaped like a token.
pub fn id_of(token: &str) -> Option<&str> {
    let (id, secret) = token.split_once('.')?;
    let shaped = id.starts_with(ID_PREFIX)
        && id.len() == ID_PREFIX.len() + 16
        && secret.len() == 64
        && secret.bytes().all(|b| b.is_ascii_hexdigit());
    shaped.then_some(id)
}

/// The argon2id hash (PHC string) to store for a token.
pub fn hash(token: &str) -> Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    argon2::Argon2::default()
        .hash_password(token.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| SecurityError::Identity(format!("cannot hash a token: {e}")))
}

/// Whether `token` is the one `stored` is the hash of.
pub fn verify(token: &str, stored: &str) -> bool {
    PasswordHash::new(stored).is_ok_and(|hash| {
        argon2::Argon2::default()
            .verify_password(token.as_bytes(), &hash)
            .is_ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minted_token_verifies_against_its_hash_only() {
        let minted = mint();
        assert_eq!(id_of(&minted.secret), Some(minted.id.as_str()));
        let stored = hash(&minted.secret).expect("hash");
        assert!(stored.starts_with("$argon2id$"), "{stored}");
        assert!(!stored.contains(&minted.secret[minted.id.len() + 1..]));
        assert!(verify(&minted.secret, &stored));
        let other = mint();
        assert!(!verify(&other.secret, &stored));
        assert_eq!(id_of("tok-123.abc"), None);
        assert_eq!(id_of("Bearer x"), None);
    }
}
