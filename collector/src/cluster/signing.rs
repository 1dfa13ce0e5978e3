//! The cluster's one signing key: every node signs tree heads (checkpoints, verifiable exports)
//! with the same Ed25519 key, so an auditor needs one published key per cluster. The metastore's
//! `signing_key` row holds its public half (`verifier`, in the clear) and the signer sealed with
//! the stream secret key ([`SecretKey`], binding [`BINDING`]): PostgreSQL, its backups and its
//! operators never see the private key, and every node must have the same
//! `streams.secret_key_file` (which the cluster's streams need anyway). The first node to start
//! offers its own key (a single node's data dir moved into a cluster keeps the key its auditors
//! know); every node then writes the cluster's key into `<data_dir>/signing-key`, its cache,
//! before it opens its tree heads. With `signing.key_file` set the operator gives every node
//! the same file and nothing is stored.

use std::path::Path;

use codestax_common::note::{NoteError, NoteSigner};
use codestax_config::ClusterConfig;

use super::error::MetastoreError;
use super::metastore::Metastore;
use crate::stream::SecretKey;
use crate::stream::secret::SecretError;
use crate::tree::key::{self, KeyFileError};

/// What the sealed signer is bound to (a sealed stream secret does not open as it).
pub const BINDING: &str = "cluster/signing-key";

/// The cluster's signing key could not be had.
#[derive(Debug, thiserror::Error)]
pub enum SigningKeyError {
    #[error(transparent)]
    Metastore(#[from] MetastoreError),
    #[error(transparent)]
    KeyFile(#[from] KeyFileError),
    #[error(
        "the cluster's signing key in the metastore does not open with streams.secret_key_file \
         {} ({source}): every node needs the cluster's key file", .key_file.display()
    )]
    Open {
        key_file: std::path::PathBuf,
        source: SecretError,
    },
    #[error("the cluster's signing key in the metastore is damaged: {0}")]
    Damaged(NoteError),
    #[error("the cluster's signing key was offered but the metastore does not return it")]
    NotStored,
}

impl Metastore {
    /// The cluster's signing key: its verifier and the sealed signer.
    pub async fn signing_key(&self) -> Result<Option<(String, String)>, MetastoreError> {
        let row = self
            .client
            .query_opt("SELECT verifier, sealed_signer FROM signing_key", &[])
            .await
            .map_err(MetastoreError::sql("read the signing key"))?;
        Ok(row.map(|r| (r.get(0), r.get(1))))
    }

    /// Makes `verifier`/`sealed` the cluster's signing key unless it has one.
    pub async fn offer_signing_key(
        &self,
        verifier: &str,
        sealed: &str,
    ) -> Result<(), MetastoreError> {
        self.client
            .execute(
                "INSERT INTO signing_key (verifier, sealed_signer) VALUES ($1, $2)
                 ON CONFLICT (singleton) DO NOTHING",
                &[&verifier, &sealed],
            )
            .await
            .map_err(MetastoreError::sql("offer the signing key"))?;
        Ok(())
    }
}

/// Makes `<data_dir>/signing-key` the cluster's key (see the module doc), offering this
/// node's (generated now if it has none) when the cluster has none yet. Returns the key.
pub async fn adopt_signing_key(
    config: &ClusterConfig,
    data_dir: &Path,
    key_name: &str,
    secret: &SecretKey,
    key_file: &Path,
) -> Result<NoteSigner, SigningKeyError> {
    let mut m =
        Metastore::connect(&config.postgres.url, config.postgres.password.as_deref()).await?;
    m.migrate().await?;
    let path = data_dir.join(key::KEY_FILE);
    let local = if path.exists() {
        Some(key::load_or_generate(None, data_dir, key_name)?)
    } else {
        None
    };
    let sealed = match m.signing_key().await? {
        Some((_, sealed)) => sealed,
        None => {
            // The first node: its own key (generated now if it has none) is offered.
            let own = match &local {
                Some(own) => own.clone(),
                None => key::load_or_generate(None, data_dir, key_name)?,
            };
            m.offer_signing_key(
                &own.verifier().to_string(),
                &secret.seal(BINDING, own.encode().as_bytes()),
            )
            .await?;
            let (_, sealed) = m.signing_key().await?.ok_or(SigningKeyError::NotStored)?;
            sealed
        }
    };
    let plain = secret
        .open(BINDING, &sealed)
        .map_err(|source| SigningKeyError::Open {
            key_file: key_file.to_path_buf(),
            source,
        })?;
    let signer =
        NoteSigner::parse(&String::from_utf8_lossy(&plain)).map_err(SigningKeyError::Damaged)?;
    match &local {
        Some(own) if own.encode() == signer.encode() => {}
        Some(own) => {
            tracing::warn!(
                replaced = %own.verifier(),
                cluster = %signer.verifier(),
                "this node's signing key is replaced by the cluster's; heads it signed before verify \
                 with the old one, kept beside it as signing-key.replaced-<unix seconds>"
            );
            // Kept, not overwritten: what it signed must stay verifiable.
            let mut kept = path.as_os_str().to_owned();
            kept.push(format!(".replaced-{}", chrono::Utc::now().timestamp()));
            key::write(Path::new(&kept), own)?;
            key::write(&path, &signer)?;
        }
        None => key::write(&path, &signer)?,
    }
    Ok(signer)
}
