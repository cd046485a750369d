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

#[cfg(test)]
mod tests {
    use jsonwebtoken::{EncodingKey, Header, jwk::Jwk};
    use p256::ecdsa::SigningKey;

    use super::*;

    /// A P-256 key from a fixed seed, as PKCS#8 and SPKI PEM.
    fn key(seed: u8) -> (String, String) {
        let key = SigningKey::from_slice(&[seed; 32]).unwrap();
        (
            verifier::signature::private_key_to_pem(&key).unwrap(),
            verifier::signature::public_key_to_pem(key.verifying_key()).unwrap(),
        )
    }

    fn issuer(keys: KeySource) -> JwtIssuer {
        JwtIssuer {
            issuer: "https://idp.example".into(),
            audience: vec!["mcp-gateway".into()],
            algorithms: vec![Algorithm::ES256, Algorithm::RS256],
            keys,
            subject_claim: "sub".into(),
            groups_claim: "groups".into(),
            leeway: Duration::from_secs(0),
        }
    }

    fn now() -> i64 {
        jsonwebtoken::get_current_timestamp() as i64
    }

    fn token(private_pem: &str, kid: Option<&str>, claims: serde_json::Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = kid.map(str::to_owned);
        let key = EncodingKey::from_ec_pem(private_pem.as_bytes()).unwrap();
        jsonwebtoken::encode(&header, &claims, &key).unwrap()
    }

    fn claims() -> serde_json::Value {
        serde_json::json!({
            "iss": "https://idp.example", "aud": "mcp-gateway", "sub": "alice",
            "groups": ["eng", "ops"], "exp": now() + 300,
        })
    }

    fn with(
        mut claims: serde_json::Value,
        key: &str,
        value: serde_json::Value,
    ) -> serde_json::Value {
        claims[key] = value;
        claims
    }

    fn b64(bytes: &[u8]) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    #[tokio::test]
    async fn tokens_are_checked_and_mapped_to_an_identity() {
        let (private, public) = key(7);
        let (other_private, _) = key(8);
        let issuer = issuer(KeySource::Static(vec![
            read_pem_key(public.as_bytes()).unwrap(),
        ]));

        let identity = issuer
            .validate(&token(&private, None, claims()))
            .await
            .unwrap();
        assert_eq!(identity.client, "alice");
        assert_eq!(identity.groups, vec!["eng", "ops"]);
        assert_eq!(identity.via, AuthMethod::Jwt);
        let spaced = with(claims(), "groups", serde_json::json!("a b"));
        assert_eq!(
            issuer
                .validate(&token(&private, None, spaced))
                .await
                .unwrap()
                .groups,
            vec!["a", "b"]
        );

        let header = b64(br#"{"alg":"none","typ":"JWT"}"#);
        let body = b64(claims().to_string().as_bytes());
        let refused = [
            (
                "expired",
                token(&private, None, with(claims(), "exp", (now() - 60).into())),
            ),
            (
                "wrong audience",
                token(&private, None, with(claims(), "aud", "other".into())),
            ),
            (
                "wrong issuer",
                token(&private, None, with(claims(), "iss", "https://evil".into())),
            ),
            ("no exp", {
                let mut c = claims();
                c.as_object_mut().unwrap().remove("exp");
                token(&private, None, c)
            }),
            ("unknown key", token(&other_private, None, claims())),
            (
                "bad subject",
                token(&private, None, with(claims(), "sub", "a b".into())),
            ),
            ("alg none", format!("{header}.{body}.")),
            ("garbage", "x.y.z".to_owned()),
            ("HS256 with the public key as secret", {
                let key = EncodingKey::from_secret(public.as_bytes());
                jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims(), &key).unwrap()
            }),
        ];
        for (case, token) in refused {
            assert!(
                matches!(issuer.validate(&token).await, Err(AuthError::Token(_))),
                "{case} was accepted"
            );
        }
    }

    #[test]
    fn hmac_algorithms_cannot_be_configured() {
        for name in ["HS256", "HS384", "HS512", "none", "nope"] {
            assert!(parse_algorithm(name).is_err(), "{name}");
        }
        assert_eq!(parse_algorithm("ES256").unwrap(), Algorithm::ES256);
    }

    #[tokio::test]
    async fn keys_come_from_a_jwks_and_unknown_key_ids_are_refused() {
        let (private, _) = key(9);
        let mut jwk = Jwk::from_encoding_key(
            &EncodingKey::from_ec_pem(private.as_bytes()).unwrap(),
            Algorithm::ES256,
        )
        .unwrap();
        jwk.common.key_id = Some("k1".into());
        let set = serde_json::json!({ "keys": [jwk] });
        let fetches = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = fetches.clone();
        let app = axum::Router::new().route(
            "/jwks",
            axum::routing::get(move || {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let set = set.clone();
                async move { axum::Json(set) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let issuer = issuer(KeySource::Jwks {
            url: url::Url::parse(&url).unwrap(),
            client: jwks_client(Duration::from_secs(5)).unwrap(),
            cache: tokio::sync::Mutex::new(None),
            last_fetch: Mutex::new(None),
        });
        for _ in 0..3 {
            let identity = issuer
                .validate(&token(&private, Some("k1"), claims()))
                .await
                .unwrap();
            assert_eq!(identity.client, "alice");
        }
        // The set is fetched once and cached.
        assert_eq!(fetches.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert!(matches!(
            issuer
                .validate(&token(&private, Some("k2"), claims()))
                .await,
            Err(AuthError::Token(_))
        ));
    }

    #[tokio::test]
    async fn an_unreachable_jwks_refuses_the_token() {
        let (private, _) = key(10);
        let issuer = issuer(KeySource::Jwks {
            url: url::Url::parse("http://127.0.0.1:1/jwks").unwrap(),
            client: jwks_client(Duration::from_secs(2)).unwrap(),
            cache: tokio::sync::Mutex::new(None),
            last_fetch: Mutex::new(None),
        });
        assert!(matches!(
            issuer
                .validate(&token(&private, Some("k1"), claims()))
                .await,
            Err(AuthError::Unavailable(_))
        ));
    }
}
