//! SchemaPin trust bundles: discovery documents and revocations of several publishers in one
//! file, for offline and air-gapped use. The format is SchemaPin's own
//! (`SchemaPinTrustBundle` in the reference implementation), so bundles carry over both ways.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::discovery::{DiscoveryDocument, RevocationDocument};

/// A trust bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustBundle {
    pub schemapin_bundle_version: String,
    pub created_at: String,
    /// Discovery documents, each flattened with its `domain`.
    #[serde(default)]
    pub documents: Vec<BundledDiscovery>,
    #[serde(default)]
    pub revocations: Vec<RevocationDocument>,
}

/// A discovery document with the domain it is for, at the same level (SchemaPin's flattening).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundledDiscovery {
    pub domain: String,
    #[serde(flatten)]
    pub document: DiscoveryDocument,
}

/// Why a bundle could not be read.
#[derive(Debug, thiserror::Error)]
#[error("not a valid SchemaPin trust bundle: {0}")]
pub struct BundleError(String);

impl TrustBundle {
    /// Parses a bundle and checks that every key in it is a valid P-256 key.
    pub fn parse(bytes: &[u8]) -> Result<Self, BundleError> {
        let bundle: Self = serde_json::from_slice(bytes).map_err(|e| BundleError(e.to_string()))?;
        for bundled in &bundle.documents {
            verifier::signature::public_key_from_pem(&bundled.document.public_key_pem)
                .map_err(|e| BundleError(format!("{}: public_key_pem: {e}", bundled.domain)))?;
        }
        Ok(bundle)
    }

    /// The discovery document of a domain, if the bundle has one.
    pub fn discovery(&self, domain: &str) -> Option<DiscoveryDocument> {
        self.documents
            .iter()
            .find(|d| d.domain == domain)
            .map(|d| d.document.clone())
    }

    /// Every fingerprint the bundle revokes for a domain, from its discovery document and its
    /// revocation documents. A bundle is offline by design, so revocation endpoints are not
    /// fetched; the bundle's own revocation documents stand for them.
    pub fn revoked(&self, domain: &str) -> BTreeSet<String> {
        let mut revoked: BTreeSet<String> = self
            .documents
            .iter()
            .filter(|d| d.domain == domain)
            .flat_map(|d| d.document.revoked_keys.iter().cloned())
            .collect();
        revoked.extend(
            self.revocations
                .iter()
                .filter(|r| r.domain == domain)
                .flat_map(|r| r.revoked_keys.iter().map(|k| k.fingerprint.clone())),
        );
        revoked
    }

    /// A bundle of the given domains' documents, with their standalone revocations.
    pub fn from_documents(
        created_at: &str,
        documents: Vec<(String, DiscoveryDocument, Option<RevocationDocument>)>,
    ) -> Self {
        let mut bundle = Self {
            schemapin_bundle_version: "1.2".to_owned(),
            created_at: created_at.to_owned(),
            documents: Vec::new(),
            revocations: Vec::new(),
        };
        for (domain, document, revocation) in documents {
            bundle.documents.push(BundledDiscovery { domain, document });
            bundle.revocations.extend(revocation);
        }
        bundle
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_bundles_are_errors() {
        assert!(TrustBundle::parse(b"{}").is_err());
        assert!(TrustBundle::parse(b"[]").is_err());
        let bad_key = br#"{"schemapin_bundle_version":"1.2","created_at":"x","documents":[{"domain":"a","schema_version":"1.2","public_key_pem":"nope"}]}"#;
        assert!(
            TrustBundle::parse(bad_key)
                .unwrap_err()
                .to_string()
                .contains("a: public_key_pem")
        );
    }
}
