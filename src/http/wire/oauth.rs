//! `POST /oauth/token` (RFC 6749): the form it reads and the JSON it answers, which
//! are OAuth's own shapes, not the API envelope.

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Serialize;
#[allow(unused_imports)]
use serde_json::json;

/// The grants the token endpoint offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantType {
    ClientCredentials,
    Password,
    RefreshToken,
}

/// Why a token request was refused, RFC 6749 §5.2; the status is 401 for `invalid_client`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OAuthErrorKind {
    InvalidRequest,
    InvalidClient,
    InvalidGrant,
    UnsupportedGrantType,
    /// Not from RFC 6749 §5.2 but the usual word for "try again later" (503).
    TemporarilyUnavailable,
    /// Too many token requests (429), the word RFC 8628 uses for polling too fast.
    SlowDown,
    ServerError,
}

impl OAuthErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::InvalidClient => "invalid_client",
            Self::InvalidGrant => "invalid_grant",
            Self::UnsupportedGrantType => "unsupported_grant_type",
            Self::TemporarilyUnavailable => "temporarily_unavailable",
            Self::SlowDown => "slow_down",
            Self::ServerError => "server_error",
        }
    }
}

/// The form of a token request, checked: each parameter at most once, none holding a NUL (no
/// text that a database refuses goes further), a known grant type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenForm {
    pub grant_type: GrantType,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub refresh_token: Option<String>,
}

impl TokenForm {
    pub fn from_pairs(pairs: Vec<(String, String)>) -> Result<Self, (OAuthErrorKind, String)> {
        let invalid = |m: String| (OAuthErrorKind::InvalidRequest, m);
        let mut params: HashMap<String, String> = HashMap::with_capacity(pairs.len());
        for (k, v) in pairs {
            if k.contains('\0') || v.contains('\0') {
                return Err(invalid("parameters must not contain NUL characters".into()));
            }
            if params.contains_key(&k) {
                return Err(invalid(format!("parameter {k} appears more than once")));
            }
            params.insert(k, v);
        }
        let grant_type = match params.get("grant_type").map(String::as_str) {
            None => return Err(invalid("grant_type is required".into())),
            Some("client_credentials") => GrantType::ClientCredentials,
            Some("password") => GrantType::Password,
            Some("refresh_token") => GrantType::RefreshToken,
            Some(_) => {
                return Err((OAuthErrorKind::UnsupportedGrantType, "grant_type must be client_credentials, password or refresh_token".into()));
            }
        };
        let mut take = |k: &str| params.remove(k);
        Ok(Self {
            grant_type,
            client_id: take("client_id"),
            client_secret: take("client_secret"),
            username: take("username"),
            password: take("password"),
            refresh_token: take("refresh_token"),
        })
    }
}

/// The success body (no envelope, as EnKash and RFC 6749 do).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"access_token":"bCFIP675fIyGKIf6CWak43LF1rI","token_type":"bearer","refresh_token":"i2UQSYGeDZPogy_V6szNOi5Q0W0","expires_in":3600,"scope":"read write"}))]
pub struct TokenResponse {
    pub access_token: String,
    /// Always `bearer`.
    #[schema(value_type = String)]
    pub token_type: &'static str,
    pub refresh_token: String,
    /// Seconds the access token lives.
    pub expires_in: i64,
    #[schema(value_type = String)]
    pub scope: &'static str,
}

/// The error body of RFC 6749 §5.2.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OAuthErrorBody<'a> {
    /// `invalid_request`, `invalid_client`, `invalid_grant`, `unsupported_grant_type`,
    /// `slow_down` (429), `temporarily_unavailable` (503) or `server_error`.
    #[schema(value_type = String, example = "invalid_client")]
    pub error: &'a str,
    #[schema(value_type = String)]
    pub error_description: &'a str,
}

/// The token request form as the API document shows it (read by [`TokenForm::from_pairs`]).
/// The client authenticates with HTTP Basic (`client_id:client_secret`, form-encoded or raw) or
/// with the `client_id` / `client_secret` fields.
#[derive(Debug, utoipa::ToSchema)]
#[allow(dead_code)]
pub struct TokenFormSchema {
    #[schema(example = "client_credentials", pattern = "^(client_credentials|password|refresh_token)$")]
    grant_type: String,
    client_id: Option<String>,
    client_secret: Option<String>,
    /// For `grant_type=password`.
    username: Option<String>,
    /// For `grant_type=password`.
    password: Option<String>,
    /// EnKash's redundant field of the password grant; ignored.
    #[serde(rename = "clientId")]
    client_id_enkash: Option<String>,
    /// For `grant_type=refresh_token`.
    refresh_token: Option<String>,
}

/// A credential as sent, and (RFC 6749 §2.3.1) its form-decoded reading when that differs: a
/// strict client form-encodes id and secret before Base64, a lenient one does not; both work.
pub struct Credential {
    pub raw: String,
    pub decoded: Option<String>,
}

impl Credential {
    pub fn plain(raw: String) -> Self {
        Self { raw, decoded: None }
    }

    fn from_basic_part(raw: &str) -> Self {
        let decoded = form_urlencoded::parse(format!("x={raw}").as_bytes()).next().map(|(_, v)| v.into_owned()).filter(|d| d != raw);
        Self { raw: raw.to_owned(), decoded }
    }

    pub fn readings(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.raw.as_str()).chain(self.decoded.as_deref())
    }
}

/// Reads an `Authorization: Basic` header into (client id, secret). `Err`: the sentence of the
/// 401 `invalid_client`.
pub fn basic_credentials(header: &[u8]) -> Result<(Credential, Credential), &'static str> {
    let encoded = std::str::from_utf8(header)
        .ok()
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
        .map(|(_, rest)| rest.trim())
        .ok_or("the Authorization header must use the Basic scheme")?;
    let decoded = STANDARD.decode(encoded).ok().and_then(|b| String::from_utf8(b).ok()).ok_or("the Basic credentials are not valid base64 UTF-8")?;
    let (id, secret) = decoded.split_once(':').ok_or("the Basic credentials must be id:secret")?;
    let (id, secret) = (Credential::from_basic_part(id), Credential::from_basic_part(secret));
    if id.readings().chain(secret.readings()).any(|s| s.contains('\0')) {
        return Err("the Basic credentials must not contain NUL characters");
    }
    Ok((id, secret))
}

/// Reads an `Authorization: Bearer` header into its token, if it is one.
pub fn bearer_token(header: &[u8]) -> Option<&str> {
    std::str::from_utf8(header)
        .ok()
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .filter(|t| !t.is_empty())
}
