//! Which shard an org belongs to, and the names derived from it: the JetStream subject a shard's
//! records go to and the message id JetStream dedupes on. These never change for a cluster.

use codestax_common::AuditRecord;
use sha2::{Digest, Sha256};

/// The shard of `org` among `shards`: the first 8 bytes of SHA-256(org), big-endian, modulo
/// `shards`. Stable across versions and platforms, so an org's records always share one subject
/// and stay in order. `shards` must be at least 1.
pub fn shard_of(org: &str, shards: u32) -> u32 {
    let digest = Sha256::digest(org.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(first) % u64::from(shards.max(1))) as u32
}

/// The subject shard `shard` of `stream` publishes on: `<stream>.shard.<shard>`.
pub fn subject(stream: &str, shard: u32) -> String {
    format!("{stream}.shard.{shard}")
}

/// The subjects of `stream` (its config): `<stream>.shard.*`.
pub fn subjects(stream: &str) -> String {
    format!("{stream}.shard.*")
}

/// The durable JetStream consumer the owner of `shard` under lease `epoch` reads:
/// `owner-<shard>-<epoch>` (each epoch its own, so a new owner starts where its snapshot ends).
pub fn owner_consumer(shard: u32, epoch: i64) -> String {
    format!("owner-{shard}-{epoch}")
}

/// The `Nats-Msg-Id` of a record: `<org>:<id>:<content>` (org ids cannot hold `:`, so no two
/// records share one), `<content>` being 16 hex digits of the SHA-256 of what the record says
/// ([`AuditRecord::content_json`]). A resend has the same, so JetStream drops it; the same id
/// with other content is another message, which the shard's owner refuses as an id conflict
/// rather than JetStream taking it for a resend.
pub fn msg_id(record: &AuditRecord) -> String {
    let digest = Sha256::digest(record.content_json().as_bytes());
    format!(
        "{}:{}:{}",
        record.org_id,
        record.id(),
        hex::encode(&digest[..8])
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_fixed_values_of_the_hash() {
        // Pinned: changing the function would move orgs between shards of a running cluster.
        assert_eq!(shard_of("acme", 32), shard_of("acme", 32));
        let pinned: Vec<u32> = ["acme", "globex", "initech", "o-1"]
            .iter()
            .map(|o| shard_of(o, 32))
            .collect();
        assert_eq!(pinned, PINNED_32);
        assert_eq!(shard_of("acme", 1), 0);
        assert_eq!(
            shard_of("acme", 0),
            0,
            "0 shards is treated as 1, never a panic"
        );
    }

    /// shard_of for acme, globex, initech, o-1 with 32 shards (computed independently, in Python).
    const PINNED_32: [u32; 4] = [0, 7, 3, 2];

    #[test]
    fn orgs_spread_over_all_shards() {
        let mut counts = [0u32; 16];
        for i in 0..16_000 {
            counts[shard_of(&format!("org-{i}"), 16) as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| (800..1200).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn names() {
        assert_eq!(subject("CODESTAX_AUDIT", 7), "CODESTAX_AUDIT.shard.7");
        assert_eq!(subjects("CODESTAX_AUDIT"), "CODESTAX_AUDIT.shard.*");
    }

    #[test]
    fn message_ids_are_the_org_the_id_and_the_content() {
        let record = |message: &str| {
            let mut r: AuditRecord = serde_json::from_value(serde_json::json!({
                "id": "r-1", "org_id": "acme", "time": "2026-12-08T10:00:00Z",
                "action": "user.login", "actor": {"id": "u-1"}, "message": message,
            }))
            .unwrap();
            r.received_at = Some(chrono::Utc::now());
            r
        };
        let id = msg_id(&record("hello"));
        assert!(
            id.starts_with("acme:r-1:") && id.len() == "acme:r-1:".len() + 16,
            "{id}"
        );
        // A resend (received again, by another key) has the same id; other content does not.
        let mut resent = record("hello");
        resent.provenance = Some(codestax_common::Provenance::Collector);
        assert_eq!(msg_id(&resent), id);
        assert_ne!(msg_id(&record("hello!")), id);
    }
}
