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

#[cfg(test)]
mod tests {
    use super::*;

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
