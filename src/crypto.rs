//! Secrets and tokens: generation, slow hashes for secrets, fast hashes for tokens.
//!
//! Client secrets and passwords are chosen by people or stored long-term, so they get Argon2id
//! (slow on purpose). Tokens are 160+ random bits: guessing is hopeless, so SHA-256 is enough and
//! keeps token checks cheap on the hot path.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

/// Random bytes in an access or refresh token: 192 bits.
pub const TOKEN_BYTES: usize = 24;
/// Random bytes in a generated client secret.
pub const SECRET_BYTES: usize = 32;

pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf).expect("the operating system's random source is available");
    buf
}

/// URL-safe text from `N` random bytes: tokens and secrets.
pub fn random_token<const N: usize>() -> String {
    URL_SAFE_NO_PAD.encode(random_bytes::<N>())
}

/// Hex SHA-256, the only form in which tokens are stored.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// An Argon2id PHC string for a secret or password.
pub fn hash_secret(secret: &str) -> String {
    let salt = SaltString::encode_b64(&random_bytes::<16>()).expect("16 bytes is a valid salt");
    Argon2::default().hash_password(secret.as_bytes(), &salt).expect("argon2 hashing with default parameters cannot fail").to_string()
}

/// Constant-time check of a secret against its PHC string; a malformed hash never matches.
pub fn verify_secret(secret: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|parsed| Argon2::default().verify_password(secret.as_bytes(), &parsed).is_ok())
}

/// A hash to verify against when the client or user does not exist, so that an unknown id
/// takes as long to refuse as a wrong secret (no timing oracle for valid ids).
pub fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash_secret("not-a-secret"))
}

/// Compares two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_verify_only_against_their_own_hash() {
        let h = hash_secret("s3cret");
        assert!(verify_secret("s3cret", &h));
        assert!(!verify_secret("s3cret!", &h));
        assert!(!verify_secret("s3cret", "not a phc string"));
    }

    #[test]
    fn tokens_are_long_random_and_hash_to_hex() {
        let a = random_token::<TOKEN_BYTES>();
        assert_eq!(a.len(), 32);
        assert_ne!(a, random_token::<TOKEN_BYTES>());
        assert_eq!(token_hash("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
