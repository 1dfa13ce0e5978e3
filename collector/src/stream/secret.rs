//! Stream secrets sealed at rest: XChaCha20-Poly1305 (the RustCrypto `chacha20poly1305` crate,
//! audited, pure Rust, no C build) under a 32-byte key kept in its own file, apart from the data
//! directory, so a copy of the data directory holds no usable secret. Each sealing takes a random
//! 24-byte nonce (no counter to keep) and binds the stream (`org/id`) as associated data, so a
//! sealed secret moved to another stream does not open.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use codestax_storage::{AtomicFile, StateFileError};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Why the key file could not be used, or a sealed secret not opened.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read the stream secret key {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write the stream secret key: {0}")]
    Write(StateFileError),
    #[error("the stream secret key {} is not 64 hex digits", .0.display())]
    Malformed(PathBuf),
    #[error("a sealed stream secret does not open with this key (another key file, or damaged)")]
    Open,
}

/// The key that seals stream secrets.
#[derive(Clone)]
pub struct SecretKey {
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

impl SecretKey {
    /// The key in `path` (64 hex digits), generated with mode 0600 if the file does not exist.
    pub fn load_or_generate(path: &Path) -> Result<SecretKey, SecretError> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let bytes = hex::decode(text.trim())
                    .ok()
                    .filter(|b| b.len() == 32)
                    .ok_or_else(|| SecretError::Malformed(path.to_path_buf()))?;
                #[cfg(unix)]
                if let Ok(meta) = std::fs::metadata(path) {
                    use std::os::unix::fs::PermissionsExt;
                    if meta.permissions().mode() & 0o077 != 0 {
                        tracing::warn!(path = %path.display(), "the stream secret key file can be read by other users; chmod 600 it");
                    }
                }
                Ok(SecretKey::from_bytes(&bytes))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => generate(path),
            Err(source) => Err(SecretError::Read {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    fn from_bytes(bytes: &[u8]) -> SecretKey {
        SecretKey {
            cipher: XChaCha20Poly1305::new_from_slice(bytes).expect("32 bytes"),
        }
    }

    /// `plain` sealed for stream `binding`: base64 of nonce and ciphertext.
    pub fn seal(&self, binding: &str, plain: &[u8]) -> String {
        let mut nonce = [0u8; 24];
        rand::fill(&mut nonce[..]);
        let sealed = self
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plain,
                    aad: binding.as_bytes(),
                },
            )
            .expect("XChaCha20-Poly1305 seals any length we store");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        STANDARD.encode(out)
    }

    /// Opens what [`SecretKey::seal`] sealed for the same `binding`.
    pub fn open(&self, binding: &str, sealed: &str) -> Result<Vec<u8>, SecretError> {
        let bytes = STANDARD.decode(sealed).map_err(|_| SecretError::Open)?;
        if bytes.len() < 24 {
            return Err(SecretError::Open);
        }
        let (nonce, ct) = bytes.split_at(24);
        self.cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: binding.as_bytes(),
                },
            )
            .map_err(|_| SecretError::Open)
    }
}

fn generate(path: &Path) -> Result<SecretKey, SecretError> {
    let mut key = [0u8; 32];
    rand::fill(&mut key[..]);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| SecretError::Read {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    let mut temp = path.as_os_str().to_owned();
    temp.push(".tmp");
    let temp = PathBuf::from(temp);
    let mut options = std::fs::OpenOptions::new();
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file =
        AtomicFile::create_with(path, &temp, &mut options).map_err(SecretError::Write)?;
    file.write_all(format!("{}\n", hex::encode(key)).as_bytes())
        .map_err(|source| SecretError::Write(StateFileError::Write { path: temp, source }))?;
    file.commit().map_err(SecretError::Write)?;
    tracing::info!(path = %path.display(), "generated the stream secret key");
    Ok(SecretKey::from_bytes(&key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_private_sealed_and_bound_to_its_stream() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let key = SecretKey::load_or_generate(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let sealed = key.seal("acme/s1", b"hunter2-hunter2-");
        assert!(!sealed.contains("hunter2"));
        let again = SecretKey::load_or_generate(&path).unwrap();
        assert_eq!(again.open("acme/s1", &sealed).unwrap(), b"hunter2-hunter2-");
        assert!(matches!(
            again.open("acme/s2", &sealed),
            Err(SecretError::Open)
        ));
        std::fs::write(&path, "00".repeat(32)).unwrap();
        let other = SecretKey::load_or_generate(&path).unwrap();
        assert!(matches!(
            other.open("acme/s1", &sealed),
            Err(SecretError::Open)
        ));
        assert!(!format!("{other:?}").contains("00"));
    }
}
