//! Who is calling: the client identity every request carries, and how the HTTP front door
//! establishes it from an API key or a JWT bearer token.
//!
//! The stdio front door takes its identity from the config instead (`auth.stdio_client`): the
//! process that launched it is the client.

pub mod api_keys;
pub mod jwt;

use std::sync::Arc;

use http::HeaderMap;

use self::{api_keys::ApiKeys, jwt::JwtIssuer};

/// The client a request acts for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The client's name: the name of its API key, the JWT subject, `anonymous` or the stdio
    /// client of the config.
    pub client: String,
    /// Groups the client belongs to, for policy.
    pub groups: Vec<String>,
    pub via: AuthMethod,
}

/// How an identity was established.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    ApiKey,
    Jwt,
    Anonymous,
    Stdio,
}

impl AuthMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ApiKey => "api-key",
            Self::Jwt => "jwt",
            Self::Anonymous => "anonymous",
            Self::Stdio => "stdio",
        }
    }
}

impl Identity {
    /// The client of a request without credentials, where the config allows one.
    pub fn anonymous() -> Self {
        Self {
            client: "anonymous".into(),
            groups: vec!["anonymous".into()],
            via: AuthMethod::Anonymous,
        }
    }
}

/// Why a request has no identity. The client is told only that it is unauthorized; the reason
/// is for the gateway's log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    #[error("no credentials, and anonymous access is off")]
    Missing,
    #[error("the Authorization header is not `Bearer <token>`")]
    Malformed,
    #[error("unknown or revoked API key")]
    UnknownKey,
    #[error("the bearer token is not accepted: {0}")]
    Token(String),
    /// The credential could not be checked (database or key server down): refused, never
    /// let through.
    #[error("the credential cannot be checked now: {0}")]
    Unavailable(String),
}

/// API keys start with this, so they cannot be mistaken for JWTs (which start with `ey`).
pub const API_KEY_PREFIX: &str = "mgw_";

/// Establishes identities for the HTTP front door.
pub struct Authenticator {
    anonymous: bool,
    api_keys: ApiKeys,
    issuers: Vec<Arc<JwtIssuer>>,
}

impl Authenticator {
    pub fn new(anonymous: bool, api_keys: ApiKeys, issuers: Vec<Arc<JwtIssuer>>) -> Self {
        Self {
            anonymous,
            api_keys,
            issuers,
        }
    }

    /// The identity of a request with these headers. Credentials are taken from
    /// `Authorization: Bearer ...`; a token that starts with [`API_KEY_PREFIX`] is an API key,
    /// anything else a JWT.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Identity, AuthError> {
        let Some(value) = headers.get(http::header::AUTHORIZATION) else {
            return if self.anonymous {
                Ok(Identity::anonymous())
            } else {
                Err(AuthError::Missing)
            };
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| {
                let (scheme, token) = v.split_once(' ')?;
                scheme
                    .eq_ignore_ascii_case("bearer")
                    .then_some(token.trim())
            })
            .filter(|t| !t.is_empty())
            .ok_or(AuthError::Malformed)?;
        if token.starts_with(API_KEY_PREFIX) {
            return self.api_keys.identify(token).await;
        }
        if self.issuers.is_empty() {
            return Err(AuthError::Token("no JWT issuer is configured".into()));
        }
        let mut last = AuthError::Token("no issuer accepted it".into());
        for issuer in &self.issuers {
            match issuer.validate(token).await {
                Ok(identity) => return Ok(identity),
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}
