//! The collector's signing key: an Ed25519 key in the signed-note signer form
//! (`PRIVATE+KEY+<name>+<key id>+<base64 key>`), read from `signing.key_file`, or from
//! `<data_dir>/signing-key`, which the collector generates at its first start (mode 0600).

use codestax_common::note::{NoteError, NoteSigner};
use codestax_storage::{AtomicFile, StateFileError};
use rand::TryRng;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The key file the collector generates in its data directory.
pub const KEY_FILE: &str = "signing-key";

/// The signing key could not be had.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("{what} {}: cannot read it: {source}", .path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} {}: {source}", .path.display())]
    Parse {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: NoteError,
    },
    #[error("signing.key_name: {0}")]
    Name(#[source] NoteError),
    #[error("cannot write the new signing key: {0}")]
    Write(#[source] StateFileError),
    #[error("cannot generate a signing key: the OS random number generator failed: {0}")]
    Rng(String),
}

/// What the signing key is read from: the configured file, or the generated one.
const CONFIGURED: &str = "signing.key_file";
const GENERATED: &str = "the generated signing key";

/// The signer: from `configured` (`signing.key_file`) if set, else from `data_dir`'s
/// generated key, made now (named `name`) if there is none.
pub fn load_or_generate(
    configured: Option<&Path>,
    data_dir: &Path,
    name: &str,
) -> Result<NoteSigner, KeyFileError> {
    if let Some(path) = configured {
        return read(path, CONFIGURED);
    }
    let path = data_dir.join(KEY_FILE);
    match std::fs::metadata(&path) {
        Ok(_) => read(&path, GENERATED),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => generate(&path, name),
        Err(source) => Err(KeyFileError::Read {
            what: GENERATED,
            path,
            source,
        }),
    }
}

/// The public key (`codestax-collector signing-key`): of the configured key, or of the one in
/// `data_dir`, generated now if there is none.
pub fn public_key(
    signing: &codestax_config::SigningConfig,
    data_dir: &Path,
) -> Result<codestax_common::note::VerifierKey, KeyFileError> {
    if signing.key_file.is_none() {
        std::fs::create_dir_all(data_dir).map_err(|source| KeyFileError::Read {
            what: "the data directory",
            path: data_dir.to_path_buf(),
            source,
        })?;
    }
    Ok(load_or_generate(signing.key_file.as_deref(), data_dir, &signing.key_name)?.verifier())
}

fn read(path: &Path, what: &'static str) -> Result<NoteSigner, KeyFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| KeyFileError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })?;
    let signer = NoteSigner::parse(&text).map_err(|source| KeyFileError::Parse {
        what,
        path: path.to_path_buf(),
        source,
    })?;
    #[cfg(unix)]
    if let Ok(meta) = std::fs::metadata(path) {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(path = %path.display(), mode = format!("{:o}", meta.permissions().mode() & 0o777), "the signing key file can be read by other users; chmod 600 it");
        }
    }
    Ok(signer)
}

fn generate(path: &Path, name: &str) -> Result<NoteSigner, KeyFileError> {
    let mut seed = [0u8; 32];
    rand::rngs::SysRng
        .try_fill_bytes(&mut seed)
        .map_err(|e| KeyFileError::Rng(e.to_string()))?;
    let signer = NoteSigner::new(name, seed).map_err(KeyFileError::Name)?;
    write(path, &signer)?;
    tracing::info!(path = %path.display(), key = %signer.verifier(), "generated the signing key");
    Ok(signer)
}

/// Writes `signer` to `path` atomically, mode 0600 (a cluster node keeps the cluster's key
/// there).
pub fn write(path: &Path, signer: &NoteSigner) -> Result<(), KeyFileError> {
    let mut temp = path.as_os_str().to_owned();
    temp.push(".tmp");
    let temp = PathBuf::from(temp);
    let mut options = std::fs::OpenOptions::new();
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file =
        AtomicFile::create_with(path, &temp, &mut options).map_err(KeyFileError::Write)?;
    file.write_all(format!("{}\n", signer.encode()).as_bytes())
        .map_err(|source| KeyFileError::Write(StateFileError::Write { path: temp, source }))?;
    file.commit().map_err(KeyFileError::Write)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_once_kept_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_generate(None, dir.path(), "collector.example").unwrap();
        let path = dir.path().join(KEY_FILE);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // The second start reads it; the name configured then does not change it.
        let b = load_or_generate(None, dir.path(), "other.example").unwrap();
        assert_eq!(a.verifier(), b.verifier());
        assert_eq!(b.name(), "collector.example");
        // A configured file wins, and its errors name the setting and the file.
        let configured = dir.path().join("elsewhere");
        std::fs::write(&configured, "not a key").unwrap();
        let err = load_or_generate(Some(&configured), dir.path(), "x")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("signing.key_file") && err.contains(configured.to_str().unwrap()),
            "{err}"
        );
        let missing = dir.path().join("missing");
        let err = load_or_generate(Some(&missing), dir.path(), "x")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("signing.key_file") && err.contains("missing"),
            "{err}"
        );
        std::fs::write(&configured, a.encode()).unwrap();
        let c = load_or_generate(Some(&configured), dir.path(), "x").unwrap();
        assert_eq!(c.verifier(), a.verifier());
        // A damaged generated key is an error naming it, not a new key.
        std::fs::write(&path, "PRIVATE+KEY+x+00000000+AAAA").unwrap();
        let err = load_or_generate(None, dir.path(), "x")
            .unwrap_err()
            .to_string();
        assert!(err.contains(path.to_str().unwrap()), "{err}");
        // A bad name for a new key is named.
        let fresh = tempfile::tempdir().unwrap();
        let err = load_or_generate(None, fresh.path(), "has space").unwrap_err();
        assert!(err.to_string().contains("signing.key_name"), "{err}");
    }
}
