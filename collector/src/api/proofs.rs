//! The org's Merkle tree over the API: its signed head (checkpoint), inclusion and consistency
//! proofs, and the collector's public key (`GET /api/v1/signing-key`, no key needed: it names
//! no org).

use super::auth::{OrgAccess, ReadLog};
use super::{ApiError, AppState};
use crate::tree::{HeadError, SignedHead, TreeError, lock};
use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use base64::Engine;
use codestax_common::api::{ConsistencyProof, InclusionProof, SigningKey, TreeHead};
use codestax_common::merkle::{self, Hash};
use codestax_common::note;

/// `GET /api/v1/signing-key`.
pub async fn signing_key(State(state): State<AppState>) -> Json<SigningKey> {
    let key = state.heads.verifier();
    Json(SigningKey {
        verifier_key: key.to_string(),
        name: key.name().to_string(),
        algorithm: "ed25519".into(),
        public_key: base64::engine::general_purpose::STANDARD.encode(key.public_key()),
    })
}

/// `GET /api/v1/orgs/{org}/audit-log/checkpoint`: the org's current signed tree head.
pub async fn checkpoint(
    State(state): State<AppState>,
    OrgAccess { org, .. }: OrgAccess<ReadLog>,
    RawQuery(raw): RawQuery,
) -> Result<Json<TreeHead>, ApiError> {
    query_params(raw.as_deref(), &[])?;
    Ok(Json(signed_head(&state, org).await?))
}

/// The org's current signed head, signed now if its tree grew since the last one.
pub async fn signed_head(state: &AppState, org: String) -> Result<TreeHead, ApiError> {
    let (heads, trees) = (state.heads.clone(), state.trees.clone());
    let head = tokio::task::spawn_blocking(move || heads.current(&org, &trees))
        .await
        .map_err(ApiError::internal)?
        .map_err(head_error)?;
    Ok(tree_head(state, head))
}

/// A signed head as the API gives it.
pub fn tree_head(state: &AppState, head: SignedHead) -> TreeHead {
    TreeHead {
        origin: note::origin(state.heads.verifier().name(), &head.org),
        org: head.org,
        tree_size: head.size,
        root_hash: hex::encode(head.root),
        time: head.time,
        checkpoint: head.note,
    }
}

pub fn head_error(e: HeadError) -> ApiError {
    match e {
        HeadError::Unavailable { .. } | HeadError::Contradicted { .. } => {
            tracing::error!(error = %e, "no signed head");
            ApiError::new(StatusCode::CONFLICT, "tree_unavailable", e.to_string())
        }
        other => ApiError::internal(other),
    }
}

/// `GET /api/v1/orgs/{org}/audit-log/proof/inclusion?seq=N[&tree_size=M]`: the inclusion
/// proof of record `seq` in the tree of `tree_size` records (the current signed head's when
/// not given, and that head is in the answer).
pub async fn inclusion(
    State(state): State<AppState>,
    OrgAccess { org, .. }: OrgAccess<ReadLog>,
    RawQuery(raw): RawQuery,
) -> Result<Json<InclusionProof>, ApiError> {
    let params = query_params(raw.as_deref(), &["seq", "tree_size"])?;
    let seq = number(&params, "seq")?.ok_or_else(|| {
        ApiError::invalid(
            "seq",
            "seq is required: the record whose inclusion to prove",
        )
    })?;
    let (size, head) =
        size_or_head(&state, &org, number(&params, "tree_size")?, "tree_size").await?;
    if seq == 0 || seq > size {
        return Err(ApiError::invalid(
            "seq",
            format!("seq must be 1 to the tree size {size}, got {seq}"),
        ));
    }
    let (leaf, proof) = with_tree(&state, &org, move |tree| {
        let leaf = tree.leaf(seq - 1)?;
        let proof = merkle::inclusion_proof(tree, seq - 1, size)?.expect("checked above");
        Ok((leaf, proof))
    })
    .await?;
    Ok(Json(InclusionProof {
        seq,
        tree_size: size,
        leaf_hash: hex::encode(leaf),
        proof: hexes(&proof),
        signed_head: head.map(|h| tree_head(&state, h)),
    }))
}

/// `GET /api/v1/orgs/{org}/audit-log/proof/consistency?from=M[&to=N]`: the tree of `to`
/// records (the current signed head's when not given) extends the tree of `from`.
pub async fn consistency(
    State(state): State<AppState>,
    OrgAccess { org, .. }: OrgAccess<ReadLog>,
    RawQuery(raw): RawQuery,
) -> Result<Json<ConsistencyProof>, ApiError> {
    let params = query_params(raw.as_deref(), &["from", "to"])?;
    let from = number(&params, "from")?
        .ok_or_else(|| ApiError::invalid("from", "from is required: the size of the older tree"))?;
    let (to, head) = size_or_head(&state, &org, number(&params, "to")?, "to").await?;
    if from == 0 || from > to {
        return Err(ApiError::invalid(
            "from",
            format!("from must be 1 to {to} (the newer size), got {from}"),
        ));
    }
    let (from_root, to_root, proof) = with_tree(&state, &org, move |tree| {
        let proof = merkle::consistency_proof(tree, from, to)?.expect("checked above");
        Ok((tree.root_at(from)?, tree.root_at(to)?, proof))
    })
    .await?;
    Ok(Json(ConsistencyProof {
        from,
        to,
        from_root: hex::encode(from_root),
        to_root: hex::encode(to_root),
        proof: hexes(&proof),
        signed_head: head.map(|h| tree_head(&state, h)),
    }))
}

fn hexes(hashes: &[Hash]) -> Vec<String> {
    hashes.iter().map(hex::encode).collect()
}

/// The size asked for (at most the tree's), or the current signed head's size and the head.
async fn size_or_head(
    state: &AppState,
    org: &str,
    asked: Option<u64>,
    field: &str,
) -> Result<(u64, Option<SignedHead>), ApiError> {
    match asked {
        Some(size) => {
            if let Some(why) = state.trees.unavailable(org) {
                return Err(head_error(HeadError::Unavailable {
                    org: org.to_string(),
                    why,
                }));
            }
            let have = state.trees.size(org);
            if size > have {
                return Err(ApiError::invalid(
                    field,
                    format!("{field} {size} is larger than the tree ({have} records)"),
                ));
            }
            Ok((size, None))
        }
        None => {
            let (heads, trees, org) = (state.heads.clone(), state.trees.clone(), org.to_string());
            let head = tokio::task::spawn_blocking(move || heads.current(&org, &trees))
                .await
                .map_err(ApiError::internal)?
                .map_err(head_error)?;
            Ok((head.size, Some(head)))
        }
    }
}

/// Runs `f` on the org's tree off the async workers.
async fn with_tree<T: Send + 'static>(
    state: &AppState,
    org: &str,
    f: impl FnOnce(&mut crate::tree::OrgTree) -> Result<T, ProofFailure> + Send + 'static,
) -> Result<T, ApiError> {
    let tree = state
        .trees
        .org(org)
        .ok_or_else(|| ApiError::invalid("seq", "the org has no records in its tree"))?;
    tokio::task::spawn_blocking(move || f(&mut lock(&tree)))
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| match e {
            ProofFailure::Tree(e) => ApiError::internal(e),
            ProofFailure::Proof(e) => ApiError::invalid("seq", e.to_string()),
        })
}

enum ProofFailure {
    Tree(TreeError),
    Proof(merkle::ProofError),
}

impl From<TreeError> for ProofFailure {
    fn from(e: TreeError) -> Self {
        ProofFailure::Tree(e)
    }
}

impl From<merkle::ProofError> for ProofFailure {
    fn from(e: merkle::ProofError) -> Self {
        ProofFailure::Proof(e)
    }
}

/// The query's parameters, each named in `known` at most once; anything else is a 400 naming
/// it.
fn query_params(raw: Option<&str>, known: &[&str]) -> Result<Vec<(String, String)>, ApiError> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (name, value) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        if !known.contains(&name.as_ref()) {
            let takes = if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            };
            return Err(ApiError::invalid(
                name.as_ref(),
                format!("unknown parameter {name:?}; this route takes {takes}"),
            ));
        }
        if out.iter().any(|(n, _)| n == name.as_ref()) {
            return Err(ApiError::invalid(
                name.as_ref(),
                format!("{name} is given twice"),
            ));
        }
        out.push((name.into_owned(), value.into_owned()));
    }
    Ok(out)
}

fn number(params: &[(String, String)], name: &str) -> Result<Option<u64>, ApiError> {
    params
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| {
            v.parse::<u64>().map_err(|_| {
                ApiError::invalid(name, format!("{name} must be a whole number, got {v:?}"))
            })
        })
        .transpose()
}
