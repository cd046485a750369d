//! JWT bearer tokens: validated against static keys or an issuer's JWKS, mapped to an identity.
//!
//! Only asymmetric algorithms are accepted, from an allow-list in the config: HMAC algorithms
//! are refused when the config is loaded, so a public key can never be used as an HMAC secret
//! (HS/RS confusion), and `alg: none` does not exist in `jsonwebtoken`. The token's `alg` must be
//! in the allow-list and of the key's family before any signature is checked.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use jsonwebtoken::{Algorithm, DecodingKey, Validation, jwk::JwkSet};

use super::{AuthError, AuthMethod, Identity};

/// How long a fetched JWKS is used before it is fetched again.
const JWKS_TTL: Duration = Duration::from_secs(300);
/// A token naming a key id the cached JWKS lacks refetches it, at most this often.
const JWKS_REFETCH_MIN: Duration = Duration::from_secs(30);
/// Largest JWKS document read.
const JWKS_MAX_BYTES: usize = 1024 * 1024;

/// Where an issuer's keys come from.
pub enum KeySource {
    /// Keys from PEM files, tried in order.
    Static(Vec<DecodingKey>),
    /// A JWKS URL, fetched on first use and cached.
    Jwks {
        url: url::Url,
        client: reqwest::Client,
        cache: tokio::sync::Mutex<Option<(JwkSet, Instant)>>,
        last_fetch: Mutex<Option<Instant>>,
    },
}

/// One trusted token issuer.
pub struct JwtIssuer {
    pub issuer: String,
    pub audience: Vec<String>,
    pub algorithms: Vec<Algorithm>,
    pub keys: KeySource,
    /// The claim whose string value names the client. Default `sub`.
    pub subject_claim: String,
    /// The claim listing the client's groups: an array of strings, or one space-separated
    /// string. Default `groups`.
    pub groups_claim: String,
    pub leeway: Duration,
}

/// The algorithms a config may allow: every asymmetric one `jsonwebtoken` knows.
pub fn parse_algorithm(name: &str) -> Result<Algorithm, String> {
    let alg: Algorithm = name
        .parse()
        .map_err(|_| format!("unknown JWT algorithm `{name}`"))?;
    match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => Err(format!(
            "JWT algorithm `{name}` is an HMAC algorithm; only public-key algorithms are accepted"
        )),
        alg => Ok(alg),
    }
}

/// Reads a PEM public key of any family `jsonwebtoken` supports.
pub fn read_pem_key(pem: &[u8]) -> Result<DecodingKey, String> {
    DecodingKey::from_rsa_pem(pem)
        .or_else(|_| DecodingKey::from_ec_pem(pem))
        .or_else(|_| DecodingKey::from_ed_pem(pem))
        .map_err(|_| "not a PEM RSA, EC or Ed25519 public key".to_owned())
}

/// A client for fetching JWKS documents: HTTPS only unless `allow_http_loopback`, no redirects.
pub fn jwks_client(timeout: Duration) -> Result<reqwest::Client, String> {
    // reqwest is built without a default TLS provider; see `upstream::http_client`.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| e.to_string())
}

impl JwtIssuer {
    /// Validates `token` and maps its claims to an identity.
    pub async fn validate(&self, token: &str) -> Result<Identity, AuthError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| AuthError::Token(e.to_string()))?;
        if !self.algorithms.contains(&header.alg) {
            return Err(AuthError::Token(format!(
                "algorithm {:?} is not allowed",
                header.alg
            )));
        }
        let mut validation = Validation::new(header.alg);
        validation.algorithms = vec![header.alg];
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&self.audience);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.leeway = self.leeway.as_secs();
        let family = header.alg.family();
        let claims = match &self.keys {
            KeySource::Static(keys) => {
                let mut last = AuthError::Token("no configured key fits its algorithm".into());
                let mut found = None;
                for key in keys.iter().filter(|k| k.family() == family) {
                    match jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
                        token,
                        key,
                        &validation,
                    ) {
                        Ok(data) => {
                            found = Some(data.claims);
                            break;
                        }
                        Err(e) => last = AuthError::Token(e.to_string()),
                    }
                }
                found.ok_or(last)?
            }
            KeySource::Jwks { .. } => {
                let key = self.jwks_key(header.kid.as_deref()).await?;
                if key.family() != family {
                    return Err(AuthError::Token(
                        "the key's type does not match the token's algorithm".into(),
                    ));
                }
                jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
                    token,
                    &key,
                    &validation,
                )
                .map_err(|e| AuthError::Token(e.to_string()))?
                .claims
            }
        };
        self.identity(&claims)
    }

    fn identity(
        &self,
        claims: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Identity, AuthError> {
        let client = claims
            .get(&self.subject_claim)
            .and_then(|v| v.as_str())
            .filter(|s| super::api_keys::validate_client_name(s).is_ok())
            .ok_or_else(|| {
                AuthError::Token(format!(
                    "claim `{}` is missing or not a valid client name",
                    self.subject_claim
                ))
            })?
            .to_owned();
        let groups = match claims.get(&self.groups_claim) {
            Some(serde_json::Value::Array(items)) => items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            Some(serde_json::Value::String(s)) => s.split_whitespace().map(str::to_owned).collect(),
            _ => Vec::new(),
        };
        Ok(Identity {
            client,
            groups,
            via: AuthMethod::Jwt,
        })
    }

    /// The JWKS key with id `kid` (or the only key, when the token names none).
    async fn jwks_key(&self, kid: Option<&str>) -> Result<DecodingKey, AuthError> {
        let KeySource::Jwks {
            url,
            client,
            cache,
            last_fetch,
        } = &self.keys
        else {
            return Err(AuthError::Token("no JWKS configured".into()));
        };
        let mut cache = cache.lock().await;
        let fresh = cache
            .as_ref()
            .is_some_and(|(_, at)| at.elapsed() < JWKS_TTL);
        let has_kid = |set: &JwkSet| match kid {
            Some(kid) => set.find(kid).is_some(),
            None => set.keys.len() == 1,
        };
        let may_refetch = last_fetch
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_none_or(|at| at.elapsed() >= JWKS_REFETCH_MIN);
        let stale = !fresh || cache.as_ref().is_some_and(|(set, _)| !has_kid(set));
        if stale && (may_refetch || cache.is_none()) {
            *last_fetch.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
            match fetch_jwks(client, url).await {
                Ok(set) => *cache = Some((set, Instant::now())),
                // An unreachable key server leaves the cached keys in use; with none cached,
                // the token cannot be checked and is refused.
                Err(e) if cache.is_none() => return Err(AuthError::Unavailable(e)),
                Err(e) => tracing::warn!(url = %url, error = %e, "cannot refresh the JWKS"),
            }
        }
        let Some((set, _)) = cache.as_ref() else {
            return Err(AuthError::Unavailable("no JWKS".into()));
        };
        let jwk = match kid {
            Some(kid) => set.find(kid),
            None if set.keys.len() == 1 => set.keys.first(),
            None => None,
        }
        .ok_or_else(|| AuthError::Token("unknown key id".into()))?;
        DecodingKey::from_jwk(jwk).map_err(|e| AuthError::Token(e.to_string()))
    }
}

async fn fetch_jwks(client: &reqwest::Client, url: &url::Url) -> Result<JwkSet, String> {
    let mut response = client
        .get(url.clone())
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("HTTP {}", response.status()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
        if body.len() + chunk.len() > JWKS_MAX_BYTES {
            return Err(format!("larger than {JWKS_MAX_BYTES} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&body).map_err(|e| format!("not a JWK set: {e}"))
}
