//! ECDSA P-256 signatures as SchemaPin makes them, and the keys they are made with.
//!
//! SchemaPin's reference implementation signs the 32-byte SHA-256 of the canonical schema with
//! `ECDSA(SHA256)`, so the curve signs SHA-256 of that hash ("double hash"). Signatures are DER,
//! base64-encoded. SchemaPin's Go SDK instead signs the schema hash as the prehash ("single
//! hash"); such signatures are accepted only when the caller asks for it.

use base64::{Engine, engine::general_purpose::STANDARD};
use p256::{
    ecdsa::{
        Signature, SigningKey, VerifyingKey,
        signature::{Signer, hazmat::PrehashVerifier},
    },
    pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding},
};
use ring::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};
use sha2::{Digest, Sha256};

/// Why a key could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    #[error("not a PEM-encoded P-256 public key (SubjectPublicKeyInfo)")]
    PublicKey,
    #[error("not a PEM-encoded, unencrypted P-256 private key (PKCS#8)")]
    PrivateKey,
    #[error("the key could not be encoded")]
    Encode,
}

/// Why a signature did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    #[error("the signature is not valid base64")]
    Base64,
    #[error("the signature is not a DER-encoded ECDSA P-256 signature")]
    Der,
    #[error("the signature does not match the schema and key")]
    Mismatch,
    #[error(
        "the signature was made over the schema hash directly (single hash, as SchemaPin's Go SDK \
         does), which is accepted only in compatibility mode"
    )]
    SingleHashRefused,
}

/// How a verified signature was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// SchemaPin's reference scheme: ECDSA(SHA-256) over the 32-byte schema hash.
    DoubleHash,
    /// The schema hash used directly as the ECDSA prehash (SchemaPin's Go SDK).
    SingleHash,
}

/// SHA-256 of a canonical text: what SchemaPin signs.
pub fn schema_hash(canonical: &str) -> [u8; 32] {
    Sha256::digest(canonical.as_bytes()).into()
}

/// Signs a schema hash the way SchemaPin's reference implementation does: base64 of the DER
/// signature. Signing is deterministic (RFC 6979), so the same key and hash give the same bytes.
pub fn sign(hash: &[u8; 32], key: &SigningKey) -> String {
    let signature: Signature = key.sign(hash);
    STANDARD.encode(signature.to_der().as_bytes())
}

/// Proof that a signature made with a key verified: the only way to get one is
/// [`verify_proof`], so code that pins a key cannot pin one that has not signed anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedKey {
    key: VerifyingKey,
    fingerprint: String,
    scheme: Scheme,
}

impl VerifiedKey {
    pub fn key(&self) -> &VerifyingKey {
        &self.key
    }

    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    pub fn scheme(&self) -> Scheme {
        self.scheme
    }
}

/// Verifies like [`verify`] and, on success, returns the proof that the key signed this hash.
pub fn verify_proof(
    hash: &[u8; 32],
    signature_b64: &str,
    key: &VerifyingKey,
    allow_single_hash: bool,
) -> Result<VerifiedKey, SignatureError> {
    let scheme = verify(hash, signature_b64, key, allow_single_hash)?;
    let fingerprint = fingerprint(key).map_err(|_| SignatureError::Mismatch)?;
    Ok(VerifiedKey {
        key: *key,
        fingerprint,
        scheme,
    })
}

/// Verifies a base64 DER signature over a schema hash.
pub fn verify(
    hash: &[u8; 32],
    signature_b64: &str,
    key: &VerifyingKey,
    allow_single_hash: bool,
) -> Result<Scheme, SignatureError> {
    let der = STANDARD
        .decode(signature_b64.trim())
        .map_err(|_| SignatureError::Base64)?;
    let signature = Signature::from_der(&der).map_err(|_| SignatureError::Der)?;
    // The double hash is ECDSA(SHA256) over the 32-byte hash, which is what `ring` verifies for
    // a message: its P-256 arithmetic is several times faster than the pure-Rust `p256` crate's,
    // and this is the check every signed tool pays for. `ring` gets the signature as parsed
    // above (r and s), so what is accepted as DER does not change.
    let point = key.to_sec1_point(false);
    let ring_key = UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point.as_bytes());
    if ring_key.verify(hash, &signature.to_bytes()).is_ok() {
        return Ok(Scheme::DoubleHash);
    }
    if key.verify_prehash(hash, &signature).is_ok() {
        return if allow_single_hash {
            Ok(Scheme::SingleHash)
        } else {
            Err(SignatureError::SingleHashRefused)
        };
    }
    Err(SignatureError::Mismatch)
}

/// Reads a PEM SubjectPublicKeyInfo P-256 key.
pub fn public_key_from_pem(pem: &str) -> Result<VerifyingKey, KeyError> {
    VerifyingKey::from_public_key_pem(pem.trim()).map_err(|_| KeyError::PublicKey)
}

/// Reads an unencrypted PEM PKCS#8 P-256 private key.
pub fn private_key_from_pem(pem: &str) -> Result<SigningKey, KeyError> {
    SigningKey::from_pkcs8_pem(pem.trim()).map_err(|_| KeyError::PrivateKey)
}

/// A public key as PEM SubjectPublicKeyInfo, as SchemaPin writes it.
pub fn public_key_to_pem(key: &VerifyingKey) -> Result<String, KeyError> {
    key.to_public_key_pem(LineEnding::LF)
        .map_err(|_| KeyError::Encode)
}

/// A private key as unencrypted PEM PKCS#8, as SchemaPin writes it.
pub fn private_key_to_pem(key: &SigningKey) -> Result<String, KeyError> {
    key.to_pkcs8_pem(LineEnding::LF)
        .map(|pem| pem.to_string())
        .map_err(|_| KeyError::Encode)
}

/// `sha256:<hex>` of the DER SubjectPublicKeyInfo: SchemaPin's key fingerprint.
pub fn fingerprint(key: &VerifyingKey) -> Result<String, KeyError> {
    let der = key.to_public_key_der().map_err(|_| KeyError::Encode)?;
    let digest = Sha256::digest(der.as_bytes());
    Ok(format!("sha256:{}", hex(&digest)))
}

/// Lowercase hexadecimal.
pub fn hex(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    use p256::ecdsa::signature::hazmat::PrehashSigner;

    use super::*;

    /// A key from a fixed seed, so test signatures are reproducible.
    fn key(seed: u8) -> SigningKey {
        let mut bytes = [seed; 32];
        bytes[0] = 1;
        SigningKey::from_slice(&bytes).expect("a valid scalar")
    }

    #[test]
    fn sign_then_verify_round_trips_and_binds_key_and_hash() {
        let signing = key(7);
        let hash = schema_hash(r#"{"name":"add"}"#);
        let signature = sign(&hash, &signing);
        assert_eq!(
            verify(&hash, &signature, signing.verifying_key(), false),
            Ok(Scheme::DoubleHash)
        );
        let other_hash = schema_hash(r#"{"name":"sub"}"#);
        assert_eq!(
            verify(&other_hash, &signature, signing.verifying_key(), false),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(&hash, &signature, key(8).verifying_key(), false),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn single_hash_signatures_need_compatibility_mode() {
        let signing = key(9);
        let hash = schema_hash("{}");
        let single: Signature = signing.sign_prehash(&hash).expect("signs");
        let single = STANDARD.encode(single.to_der().as_bytes());
        assert_eq!(
            verify(&hash, &single, signing.verifying_key(), false),
            Err(SignatureError::SingleHashRefused)
        );
        assert_eq!(
            verify(&hash, &single, signing.verifying_key(), true),
            Ok(Scheme::SingleHash)
        );
    }

    #[test]
    fn malformed_signatures_and_keys_are_errors() {
        let verifying = *key(3).verifying_key();
        let hash = schema_hash("{}");
        assert_eq!(
            verify(&hash, "***", &verifying, false),
            Err(SignatureError::Base64)
        );
        assert_eq!(
            verify(&hash, "AAAA", &verifying, false),
            Err(SignatureError::Der)
        );
        assert_eq!(
            verify(&hash, "", &verifying, false),
            Err(SignatureError::Der)
        );
        assert_eq!(public_key_from_pem("nope"), Err(KeyError::PublicKey));
        assert_eq!(
            public_key_from_pem("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"),
            Err(KeyError::PublicKey)
        );
        assert!(matches!(
            private_key_from_pem(""),
            Err(KeyError::PrivateKey)
        ));
    }

    #[test]
    fn pem_round_trips_and_fingerprints_are_stable() {
        let signing = key(5);
        let public = public_key_to_pem(signing.verifying_key()).expect("encodes");
        assert!(public.starts_with("-----BEGIN PUBLIC KEY-----\n"));
        assert_eq!(public_key_from_pem(&public), Ok(*signing.verifying_key()));
        let private = private_key_to_pem(&signing).expect("encodes");
        assert!(private.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        assert_eq!(
            private_key_from_pem(&private).map(|k| *k.verifying_key()),
            Ok(*signing.verifying_key())
        );
        let fingerprint = fingerprint(signing.verifying_key()).expect("encodes");
        assert!(fingerprint.starts_with("sha256:"));
        assert_eq!(fingerprint.len(), "sha256:".len() + 64);
    }
}
