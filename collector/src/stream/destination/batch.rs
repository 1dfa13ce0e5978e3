//! What a destination is handed and answers: the batch's [`Item`]s, [`SendError`] (retry soon,
//! or not worth retrying), [`Delivered`] and a test's [`TestAnswer`].

use std::sync::Arc;

/// One record of a batch, encoded in the stream's format. Shared parts: a read hands every item
/// the same org, and `native` items the tail's JSON, without a copy each.
#[derive(Debug, Clone)]
pub struct Item {
    pub seq: u64,
    pub id: Arc<str>,
    pub org: Arc<str>,
    pub time: chrono::DateTime<chrono::Utc>,
    /// When the collector received it (the S3 key's hour).
    pub received_at: chrono::DateTime<chrono::Utc>,
    /// One line of JSON, without a newline.
    pub json: Arc<[u8]>,
}

/// Why a batch was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Worth retrying soon: the destination is down, slow, or answered 5xx/429.
    #[error("{0}")]
    Retryable(String),
    /// Retrying will not help until someone fixes the destination or the stream: 401, 403, 404,
    /// a bad certificate, a refused address. The stream shows `failed` and keeps trying slowly.
    #[error("{0}")]
    NonRetryable(String),
}

/// What the destination answered a test event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestAnswer {
    /// The HTTP status, or `None` for syslog (accepted means written to the connection).
    pub status: Option<u16>,
    pub accepted: bool,
}

/// What a send did besides delivering.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delivered {
    /// Records too long for the destination, sent as a reference stub instead (syslog).
    pub truncated: u64,
}
