//! Generating SchemaPin key pairs and keeping them on disk.

use std::{io::Write, path::Path};

use p256::{ecdsa::SigningKey, elliptic_curve::Generate};
use verifier::signature::{self, KeyError};

/// Why a key pair could not be made or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MaterialError {
    #[error("the operating system's random number generator failed")]
    Random,
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("{path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// A new P-256 key pair for signing tool schemas, from the operating system's RNG.
pub fn generate_schemapin_key() -> Result<SigningKey, MaterialError> {
    SigningKey::try_generate().map_err(|_| MaterialError::Random)
}

/// Where [`write_key_pair`] put the keys.
#[derive(Debug, Clone)]
pub struct WrittenKeys {
    pub private: std::path::PathBuf,
    pub public: std::path::PathBuf,
    pub fingerprint: String,
}

/// Writes `<prefix>_private.pem` (mode 0600, never over an existing file) and
/// `<prefix>_public.pem` into `dir`, the names `schemapin-keygen` uses.
pub fn write_key_pair(
    key: &SigningKey,
    dir: &Path,
    prefix: &str,
) -> Result<WrittenKeys, MaterialError> {
    let private = dir.join(format!("{prefix}_private.pem"));
    let public = dir.join(format!("{prefix}_public.pem"));
    let write_error = |path: &Path| {
        let path = path.display().to_string();
        move |source| MaterialError::Write { path, source }
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&private).map_err(write_error(&private))?;
    file.write_all(signature::private_key_to_pem(key)?.as_bytes())
        .map_err(write_error(&private))?;
    std::fs::write(&public, signature::public_key_to_pem(key.verifying_key())?)
        .map_err(write_error(&public))?;
    Ok(WrittenKeys {
        private,
        public,
        fingerprint: signature::fingerprint(key.verifying_key())?,
    })
}

/// Loads the gateway's own Ed25519 signing key (PKCS#8 PEM) from `path`, creating it (mode
/// 0600, from the operating system's RNG) on first use. The audit trail is signed with it.
pub fn load_or_create_ed25519(path: &Path) -> Result<ed25519_dalek::SigningKey, MaterialError> {
    use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
    let read_error = |source| MaterialError::Write {
        path: path.display().to_string(),
        source,
    };
    match std::fs::read_to_string(path) {
        Ok(pem) => {
            ed25519_dalek::SigningKey::from_pkcs8_pem(&pem).map_err(|e| MaterialError::Write {
                path: path.display().to_string(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()),
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut seed = [0u8; 32];
            getrandom::fill(&mut seed).map_err(|_| MaterialError::Random)?;
            let key = ed25519_dalek::SigningKey::from_bytes(&seed);
            let pem = key
                .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
                .map_err(|_| MaterialError::Random)?;
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(read_error)?;
            }
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options.open(path).map_err(read_error)?;
            file.write_all(pem.as_bytes()).map_err(read_error)?;
            Ok(key)
        }
        Err(e) => Err(read_error(e)),
    }
}

/// The PEM (SubjectPublicKeyInfo) of an Ed25519 public key, for `audit key`.
pub fn ed25519_public_pem(key: &ed25519_dalek::VerifyingKey) -> String {
    use ed25519_dalek::pkcs8::EncodePublicKey;
    key.to_public_key_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
        .unwrap_or_default()
}

/// Reads an Ed25519 public key from PEM.
pub fn ed25519_public_from_pem(pem: &str) -> Option<ed25519_dalek::VerifyingKey> {
    use ed25519_dalek::pkcs8::DecodePublicKey;
    ed25519_dalek::VerifyingKey::from_public_key_pem(pem).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ed25519_key_is_created_once_private_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/audit_ed25519.pem");
        let key = load_or_create_ed25519(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let again = load_or_create_ed25519(&path).unwrap();
        assert_eq!(key.to_bytes(), again.to_bytes());
        let pem = ed25519_public_pem(&key.verifying_key());
        assert_eq!(ed25519_public_from_pem(&pem), Some(key.verifying_key()));
    }

    #[test]
    fn key_pairs_are_written_private_and_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let key = generate_schemapin_key().unwrap();
        let written = write_key_pair(&key, dir.path(), "demo").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&written.private)
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let public = std::fs::read_to_string(&written.public).unwrap();
        assert_eq!(
            signature::public_key_from_pem(&public).unwrap(),
            *key.verifying_key()
        );
        assert!(matches!(
            write_key_pair(&generate_schemapin_key().unwrap(), dir.path(), "demo"),
            Err(MaterialError::Write { .. })
        ));
        assert_ne!(
            generate_schemapin_key().unwrap().to_bytes(),
            key.to_bytes(),
            "keys come from the RNG"
        );
    }
}
