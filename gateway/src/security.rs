//! The security team's commands that need no running gateway: key generation, fingerprints, and
//! signing and verifying tool schemas in SchemaPin's format, compatible with `schemapin-keygen`,
//! `schemapin-sign` and `schemapin-verify`.

use std::path::Path;

use verifier::{canonical, signature};

/// Why a security command failed; the message names the file.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
    #[error(transparent)]
    Keys(#[from] keys::material::MaterialError),
}

fn read(path: &Path) -> Result<String, SecurityError> {
    std::fs::read_to_string(path).map_err(|source| SecurityError::Read {
        path: path.display().to_string(),
        source,
    })
}

fn invalid(path: &Path, message: impl std::fmt::Display) -> SecurityError {
    SecurityError::Invalid {
        path: path.display().to_string(),
        message: message.to_string(),
    }
}

/// Signs the schema in `schema_path` with the PKCS#8 key in `key_path`. Returns the signed
/// document, `{"schema", "signature", "signed_at"}` as `schemapin-sign` writes it.
pub fn sign_schema(
    key_path: &Path,
    schema_path: &Path,
    signed_at: &str,
) -> Result<String, SecurityError> {
    let key =
        signature::private_key_from_pem(&read(key_path)?).map_err(|e| invalid(key_path, e))?;
    let canonical =
        canonical::canonicalize(&read(schema_path)?).map_err(|e| invalid(schema_path, e))?;
    let signature = signature::sign(&signature::schema_hash(&canonical), &key);
    // The schema is embedded in its canonical form: valid JSON that keeps every number exact.
    Ok(format!(
        "{{\n  \"schema\": {canonical},\n  \"signature\": \"{signature}\",\n  \"signed_at\": \"{signed_at}\"\n}}\n"
    ))
}

/// The outcome of verifying a signed schema document.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Verification {
    pub valid: bool,
    /// `sha256:` fingerprint of the key checked against.
    pub key_fingerprint: String,
    /// `double-hash` (SchemaPin) or `single-hash` (Go SDK, compatibility mode only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheme: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The canonical schema and the signature of a signed schema document.
fn read_signed(signed_path: &Path) -> Result<(String, String), SecurityError> {
    let text = read(signed_path)?;
    let schema = canonical::canonicalize_member(&text, "schema")
        .map_err(|e| invalid(signed_path, e))?
        .ok_or_else(|| invalid(signed_path, "no `schema` member"))?;
    let signature_text = canonical::canonicalize_member(&text, "signature")
        .map_err(|e| invalid(signed_path, e))?
        .ok_or_else(|| invalid(signed_path, "no `signature` member"))?;
    // The canonical form of a JSON string is a quoted, escaped string; base64 needs no escapes.
    let signature_b64 = signature_text
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .ok_or_else(|| invalid(signed_path, "`signature` is not a string"))?;
    Ok((schema, signature_b64.to_owned()))
}

/// Verifies a signed schema document against a PEM public key.
pub fn verify_signed(
    signed_path: &Path,
    public_key_path: &Path,
    allow_single_hash: bool,
) -> Result<Verification, SecurityError> {
    let key = signature::public_key_from_pem(&read(public_key_path)?)
        .map_err(|e| invalid(public_key_path, e))?;
    let key_fingerprint = signature::fingerprint(&key).map_err(|e| invalid(public_key_path, e))?;
    let (schema, signature_b64) = read_signed(signed_path)?;
    Ok(
        match signature::verify(
            &signature::schema_hash(&schema),
            &signature_b64,
            &key,
            allow_single_hash,
        ) {
            Ok(scheme) => Verification {
                valid: true,
                key_fingerprint,
                scheme: Some(match scheme {
                    signature::Scheme::DoubleHash => "double-hash",
                    signature::Scheme::SingleHash => "single-hash",
                }),
                error: None,
            },
            Err(e) => Verification {
                valid: false,
                key_fingerprint,
                scheme: None,
                error: Some(e.to_string()),
            },
        },
    )
}

/// Checks that the signed document verifies with the key, and returns the proof that lets the
/// key be pinned: a key is pinned only after a signature made with it verified.
pub fn prove_key(
    signed_path: &Path,
    public_key_path: &Path,
    allow_single_hash: bool,
) -> Result<signature::VerifiedKey, SecurityError> {
    let key = signature::public_key_from_pem(&read(public_key_path)?)
        .map_err(|e| invalid(public_key_path, e))?;
    let (schema, signature_b64) = read_signed(signed_path)?;
    signature::verify_proof(
        &signature::schema_hash(&schema),
        &signature_b64,
        &key,
        allow_single_hash,
    )
    .map_err(|e| {
        invalid(
            signed_path,
            format!("does not verify with {}: {e}", public_key_path.display()),
        )
    })
}

/// The fingerprint of a PEM key: a public key, or the public half of a private key.
pub fn fingerprint(path: &Path) -> Result<String, SecurityError> {
    let pem = read(path)?;
    let key = match signature::public_key_from_pem(&pem) {
        Ok(key) => key,
        Err(_) => *signature::private_key_from_pem(&pem)
            .map_err(|_| {
                invalid(
                    path,
                    "not a PEM P-256 public key (SPKI) or private key (PKCS#8)",
                )
            })?
            .verifying_key(),
    };
    signature::fingerprint(&key).map_err(|e| invalid(path, e))
}
