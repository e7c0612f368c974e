//! The server's key (`COINS_SECRET_KEY`; on SQLite a key file beside the database when unset) and
//! everything it seals or signs:
//! - webhook signing secrets: made (`whsec_` + base64 of 32 random bytes, the Standard Webhooks
//!   form), and sealed before they are stored, with ChaCha20-Poly1305. A database dump alone
//!   therefore cannot sign: it holds only ciphertext, bound to its webhook id;
//! - member links: a user and company with an expiry, HMAC-signed with a key derived for them
//!   (the member page of the dashboard opens them).

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretBox, SecretString};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::crypto::random_bytes;
use crate::domain::{CompanyId, UserId};

/// Random bytes in a signing secret (Standard Webhooks asks for 24 to 64).
const SECRET_BYTES: usize = 32;
const NONCE_BYTES: usize = 12;

/// The server's key: it seals webhook secrets and signs member links.
pub struct SealingKey(SecretBox<[u8; 32]>);

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("COINS_SECRET_KEY must be 32 bytes in base64 (openssl rand -base64 32)")]
    Malformed,
    #[error("reading or creating the webhook key file {path}: {source}")]
    File { path: String, source: std::io::Error },
}

impl SealingKey {
    /// From the setting: base64 of 32 bytes.
    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        let bytes = STANDARD.decode(text.trim()).map_err(|_| KeyError::Malformed)?;
        let key: [u8; 32] = bytes.try_into().map_err(|_| KeyError::Malformed)?;
        Ok(Self(SecretBox::new(Box::new(key))))
    }

    /// The key in `path`, made (readable by this user only) if it does not exist yet.
    pub fn from_file(path: &std::path::Path) -> Result<Self, KeyError> {
        let err = |source| KeyError::File { path: path.display().to_string(), source };
        if !path.exists() {
            let text = STANDARD.encode(random_bytes::<32>());
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            match options.open(path) {
                Ok(mut f) => std::io::Write::write_all(&mut f, text.as_bytes()).map_err(err)?,
                // Another process made it first: read theirs.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(err(e)),
            }
        }
        Self::from_base64(&std::fs::read_to_string(path).map_err(err)?)
    }

    /// A key of fresh random bytes (tests, and nothing that must outlive the process).
    pub fn random() -> Self {
        Self(SecretBox::new(Box::new(random_bytes::<32>())))
    }

    /// A key for another purpose (member links), derived so that neither use reveals the other:
    /// HMAC-SHA256 of `purpose` under this key.
    pub fn derive(&self, purpose: &str) -> [u8; 32] {
        use hmac::{Hmac, Mac};
        let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(self.0.expose_secret()).expect("HMAC takes any key length");
        mac.update(purpose.as_bytes());
        mac.finalize().into_bytes().into()
    }

    fn cipher(&self) -> ChaCha20Poly1305 {
        ChaCha20Poly1305::new(Key::from_slice(self.0.expose_secret()))
    }

    /// The stored form of `secret` for webhook `webhook_id`: base64 of nonce and ciphertext.
    pub fn seal(&self, webhook_id: &str, secret: &SecretString) -> String {
        let nonce = random_bytes::<NONCE_BYTES>();
        let sealed = self
            .cipher()
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: secret.expose_secret().as_bytes(), aad: webhook_id.as_bytes() })
            .unwrap_or_default();
        let mut out = nonce.to_vec();
        out.extend(sealed);
        STANDARD.encode(out)
    }

    /// The secret sealed for `webhook_id`; `None` if it was sealed under another key or for
    /// another webhook, or tampered with.
    pub fn open(&self, webhook_id: &str, sealed: &str) -> Option<SecretString> {
        let bytes = STANDARD.decode(sealed).ok()?;
        if bytes.len() <= NONCE_BYTES {
            return None;
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_BYTES);
        let plain = self.cipher().decrypt(Nonce::from_slice(nonce), Payload { msg: ciphertext, aad: webhook_id.as_bytes() }).ok()?;
        String::from_utf8(plain).ok().map(SecretString::from)
    }
}

/// A new signing secret, shown once to whoever created or rotated the webhook.
pub fn new_secret() -> SecretString {
    SecretString::from(format!("whsec_{}", STANDARD.encode(random_bytes::<SECRET_BYTES>())))
}

/// What a member link is signed for: its key is derived from the server's under this name.
const LINK_PURPOSE: &str = "coins member page link v1";

#[derive(Serialize, Deserialize)]
struct Claims {
    /// The user.
    u: String,
    /// Its company.
    c: String,
    /// Expiry, Unix ms.
    e: i64,
}

fn link_mac(key: &SealingKey, payload: &str) -> Hmac<Sha256> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key.derive(LINK_PURPOSE)).expect("HMAC takes any key length");
    mac.update(payload.as_bytes());
    mac
}

/// A member-link token for this user until `expires_ms`.
pub fn sign_link(key: &SealingKey, user: &UserId, company: &CompanyId, expires_ms: i64) -> String {
    let claims = Claims { u: user.to_string(), c: company.to_string(), e: expires_ms };
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap_or_default());
    let tag = URL_SAFE_NO_PAD.encode(link_mac(key, &payload).finalize().into_bytes());
    format!("{payload}.{tag}")
}

/// Why a link is refused.
#[derive(Debug, PartialEq, Eq)]
pub enum LinkRefused {
    /// Not one this server signed, or altered.
    Invalid,
    Expired,
}

/// The user and company a token names, if it is genuine and unexpired at `now_ms`.
pub fn verify_link(key: &SealingKey, token: &str, now_ms: i64) -> Result<(UserId, CompanyId), LinkRefused> {
    let (payload, tag) = token.split_once('.').ok_or(LinkRefused::Invalid)?;
    let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| LinkRefused::Invalid)?;
    link_mac(key, payload).verify_slice(&tag).map_err(|_| LinkRefused::Invalid)?;
    let claims: Claims = URL_SAFE_NO_PAD.decode(payload).ok().and_then(|b| serde_json::from_slice(&b).ok()).ok_or(LinkRefused::Invalid)?;
    if now_ms >= claims.e {
        return Err(LinkRefused::Expired);
    }
    let user = UserId::parse(&claims.u).map_err(|_| LinkRefused::Invalid)?;
    let company = CompanyId::parse(&claims.c).map_err(|_| LinkRefused::Invalid)?;
    Ok((user, company))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secrets_open_only_with_their_key_and_webhook() {
        let key = SealingKey::from_base64(&STANDARD.encode([7u8; 32])).unwrap();
        let secret = new_secret();
        assert!(secret.expose_secret().starts_with("whsec_"));
        let sealed = key.seal("wh_1", &secret);
        assert!(!sealed.contains(&secret.expose_secret()[6..]), "ciphertext, not the secret");
        assert_eq!(key.open("wh_1", &sealed).unwrap().expose_secret(), secret.expose_secret());
        assert!(key.open("wh_2", &sealed).is_none(), "bound to its webhook");
        let other = SealingKey::from_base64(&STANDARD.encode([8u8; 32])).unwrap();
        assert!(other.open("wh_1", &sealed).is_none());
        assert!(SealingKey::from_base64("short").is_err());
    }

    #[test]
    fn links_open_only_unaltered_and_in_time() {
        let key = SealingKey::random();
        let (user, company) = (UserId::parse("U1").unwrap(), CompanyId::parse("C1").unwrap());
        let token = sign_link(&key, &user, &company, 1_000);
        assert_eq!(verify_link(&key, &token, 999), Ok((user.clone(), company.clone())));
        assert_eq!(verify_link(&key, &token, 1_000), Err(LinkRefused::Expired));
        let (payload, tag) = token.split_once('.').unwrap();
        let other = URL_SAFE_NO_PAD.encode(br#"{"u":"U2","c":"C1","e":1000}"#);
        assert_eq!(verify_link(&key, &format!("{other}.{tag}"), 0), Err(LinkRefused::Invalid), "another user under the same tag");
        assert_eq!(verify_link(&key, &format!("{payload}.{tag}x"), 0), Err(LinkRefused::Invalid));
        assert_eq!(verify_link(&SealingKey::random(), &token, 0), Err(LinkRefused::Invalid), "another server's key");
        assert_eq!(verify_link(&key, "nonsense", 0), Err(LinkRefused::Invalid));
    }
}
