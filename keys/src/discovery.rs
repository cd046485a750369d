//! `.well-known/schemapin.json` discovery and revocation, fetched with care.
//!
//! The documents come from the network, so the client is strict where SchemaPin's reference is
//! lenient:
//! - HTTPS only. Plain HTTP is allowed to loopback alone, and only when the caller says so (tests,
//!   a local key server).
//! - Timeouts, and a cap on the size of a document.
//! - At most three redirects, never to plain HTTP and never to an address literal in a private,
//!   loopback or link-local range.
//! - Revocation fails closed: if a publisher names a revocation endpoint that cannot be read, the
//!   key counts as revoked. The reference treats an unreadable list as "not revoked".

use std::{collections::BTreeSet, net::IpAddr, time::Duration};

use futures::StreamExt;
use reqwest::Url;
use serde::{Deserialize, Serialize};

/// The largest discovery or revocation document read, in bytes.
pub const MAX_DOCUMENT_BYTES: usize = 64 * 1024;

/// Why discovery failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DiscoveryError {
    #[error("`{0}` is not a domain or an https:// URL")]
    BadDomain(String),
    #[error("{0}: only https:// is allowed (plain http only to loopback, when enabled)")]
    Insecure(String),
    #[error("{url}: {source}")]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{url}: HTTP status {status}")]
    Status { url: String, status: u16 },
    #[error("{url}: the document is larger than {MAX_DOCUMENT_BYTES} bytes")]
    TooLarge { url: String },
    #[error("{url}: not a valid {kind} document: {message}")]
    Invalid {
        url: String,
        kind: &'static str,
        message: String,
    },
}

/// `.well-known/schemapin.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiscoveryDocument {
    pub schema_version: String,
    pub public_key_pem: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub developer_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact: Option<String>,
    /// Fingerprints (`sha256:...`) of keys the publisher has revoked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub revoked_keys: Vec<String>,
    /// A standalone revocation document, if the publisher keeps one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation_endpoint: Option<String>,
}

/// A standalone revocation document (SchemaPin 1.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevocationDocument {
    pub schemapin_version: String,
    pub domain: String,
    pub updated_at: String,
    #[serde(default)]
    pub revoked_keys: Vec<RevokedKey>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokedKey {
    pub fingerprint: String,
    pub revoked_at: String,
    pub reason: String,
}

/// Parses a discovery document.
pub fn parse_discovery(url: &str, bytes: &[u8]) -> Result<DiscoveryDocument, DiscoveryError> {
    let document: DiscoveryDocument =
        serde_json::from_slice(bytes).map_err(|e| DiscoveryError::Invalid {
            url: url.to_owned(),
            kind: "discovery",
            message: e.to_string(),
        })?;
    verifier::signature::public_key_from_pem(&document.public_key_pem).map_err(|e| {
        DiscoveryError::Invalid {
            url: url.to_owned(),
            kind: "discovery",
            message: format!("public_key_pem: {e}"),
        }
    })?;
    Ok(document)
}

/// Parses a standalone revocation document.
pub fn parse_revocation(url: &str, bytes: &[u8]) -> Result<RevocationDocument, DiscoveryError> {
    serde_json::from_slice(bytes).map_err(|e| DiscoveryError::Invalid {
        url: url.to_owned(),
        kind: "revocation",
        message: e.to_string(),
    })
}

/// Fetches discovery and revocation documents.
#[derive(Clone)]
pub struct DiscoveryClient {
    http: reqwest::Client,
    allow_http_loopback: bool,
}

fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64
        }
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_unspecified()
                || (v6.segments()[0] & 0xfe00) == 0xfc00
                || (v6.segments()[0] & 0xffc0) == 0xfe80
                || v6
                    .to_ipv4_mapped()
                    .is_some_and(|v4| is_private(IpAddr::V4(v4)))
        }
    }
}

fn is_loopback_host(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(name)) => name == "localhost",
        None => false,
    }
}

impl DiscoveryClient {
    /// A client; `allow_http_loopback` permits `http://` URLs whose host is loopback.
    pub fn new(timeout: Duration, allow_http_loopback: bool) -> Result<Self, DiscoveryError> {
        // reqwest is built without a default TLS provider; this workspace uses ring.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let redirects = reqwest::redirect::Policy::custom(|attempt| {
            let url = attempt.url();
            let private_literal = match url.host() {
                Some(url::Host::Ipv4(ip)) => is_private(IpAddr::V4(ip)),
                Some(url::Host::Ipv6(ip)) => is_private(IpAddr::V6(ip)),
                Some(url::Host::Domain(name)) => name == "localhost",
                None => true,
            };
            if attempt.previous().len() >= 3 {
                attempt.error("too many redirects")
            } else if url.scheme() != "https" || private_literal {
                attempt.error("redirect to a non-https or private address refused")
            } else {
                attempt.follow()
            }
        });
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(redirects)
            .build()
            .map_err(|source| DiscoveryError::Http {
                url: String::new(),
                source,
            })?;
        Ok(Self {
            http,
            allow_http_loopback,
        })
    }

    /// The `.well-known/schemapin.json` URL of a domain (`example.com` or `https://example.com`).
    pub fn well_known_url(&self, domain: &str) -> Result<Url, DiscoveryError> {
        let base = if domain.contains("://") {
            domain.to_owned()
        } else {
            format!("https://{domain}")
        };
        let base = Url::parse(&base).map_err(|_| DiscoveryError::BadDomain(domain.to_owned()))?;
        if base.host().is_none() {
            return Err(DiscoveryError::BadDomain(domain.to_owned()));
        }
        let url = base
            .join("/.well-known/schemapin.json")
            .map_err(|_| DiscoveryError::BadDomain(domain.to_owned()))?;
        self.check_scheme(&url)?;
        Ok(url)
    }

    fn check_scheme(&self, url: &Url) -> Result<(), DiscoveryError> {
        match url.scheme() {
            "https" => Ok(()),
            "http" if self.allow_http_loopback && is_loopback_host(url) => Ok(()),
            _ => Err(DiscoveryError::Insecure(url.to_string())),
        }
    }

    async fn get(&self, url: &Url) -> Result<Vec<u8>, DiscoveryError> {
        self.check_scheme(url)?;
        let http = |source| DiscoveryError::Http {
            url: url.to_string(),
            source,
        };
        let response = self.http.get(url.clone()).send().await.map_err(http)?;
        if !response.status().is_success() {
            return Err(DiscoveryError::Status {
                url: url.to_string(),
                status: response.status().as_u16(),
            });
        }
        let mut body = Vec::new();
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(http)?;
            if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
                return Err(DiscoveryError::TooLarge {
                    url: url.to_string(),
                });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// Fetches and validates a domain's discovery document.
    pub async fn discover(&self, domain: &str) -> Result<DiscoveryDocument, DiscoveryError> {
        let url = self.well_known_url(domain)?;
        let bytes = self.get(&url).await?;
        parse_discovery(url.as_str(), &bytes)
    }

    /// The publisher's standalone revocation document, if its discovery document names one.
    pub async fn revocation(
        &self,
        document: &DiscoveryDocument,
    ) -> Result<Option<RevocationDocument>, DiscoveryError> {
        let Some(endpoint) = &document.revocation_endpoint else {
            return Ok(None);
        };
        let url = Url::parse(endpoint).map_err(|_| DiscoveryError::BadDomain(endpoint.clone()))?;
        let bytes = self.get(&url).await?;
        parse_revocation(url.as_str(), &bytes).map(Some)
    }

    /// Every fingerprint the publisher has revoked: the discovery document's list, plus the
    /// standalone document's when it names one. An unreadable standalone document is an error,
    /// so that callers fail closed.
    pub async fn revoked_keys(
        &self,
        document: &DiscoveryDocument,
    ) -> Result<BTreeSet<String>, DiscoveryError> {
        let mut revoked: BTreeSet<String> = document.revoked_keys.iter().cloned().collect();
        if let Some(endpoint) = &document.revocation_endpoint {
            let url =
                Url::parse(endpoint).map_err(|_| DiscoveryError::BadDomain(endpoint.clone()))?;
            let bytes = self.get(&url).await?;
            let standalone = parse_revocation(url.as_str(), &bytes)?;
            revoked.extend(standalone.revoked_keys.into_iter().map(|k| k.fingerprint));
        }
        Ok(revoked)
    }
}

#[cfg(test)]
mod tests;
