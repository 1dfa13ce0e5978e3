//! A stream's status as the API and the metrics show it: state, how far it delivered, how far
//! behind it is, its last error and last success. Written by its delivery task, read by anyone.

use chrono::{DateTime, Utc};
use serde::Serialize;
use std::sync::Mutex;

/// Where a stream stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Delivering, or caught up.
    Healthy,
    /// The destination failed with an error worth retrying; retried with backoff.
    Retrying,
    /// Paused through the API.
    Paused,
    /// The destination answered in a way retrying will not fix (401/403/404, a bad certificate,
    /// a refused address, a format not available): tried again at the longest backoff.
    Failed,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Healthy => "healthy",
            State::Retrying => "retrying",
            State::Paused => "paused",
            State::Failed => "failed",
        }
    }
}

/// What the API shows of a stream's progress.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Status {
    pub state: State,
    pub delivered_seq: u64,
    pub lag_records: u64,
    pub lag_seconds: f64,
    pub last_error: Option<String>,
    pub last_success_at: Option<DateTime<Utc>>,
    /// Records retention deleted before the stream delivered them.
    pub expired_records: u64,
    /// Records sent as a stub, too long for the destination.
    pub truncated_records: u64,
    /// Records the destination accepted since the collector started.
    pub delivered_records: u64,
}

/// The live status, shared by the delivery task and the readers.
#[derive(Debug)]
pub struct StatusCell {
    inner: Mutex<Live>,
}

#[derive(Debug, Clone)]
pub(crate) struct Live {
    pub state: State,
    pub delivered_seq: u64,
    pub last_error: Option<String>,
    pub last_success_at: Option<DateTime<Utc>>,
    pub expired_records: u64,
    pub truncated_records: u64,
    pub delivered_records: u64,
    /// When the oldest record not delivered yet was received; `None` when caught up.
    pub oldest_pending: Option<DateTime<Utc>>,
}

impl StatusCell {
    pub fn new(state: State, delivered_seq: u64) -> StatusCell {
        StatusCell {
            inner: Mutex::new(Live {
                state,
                delivered_seq,
                last_error: None,
                last_success_at: None,
                expired_records: 0,
                truncated_records: 0,
                delivered_records: 0,
                oldest_pending: None,
            }),
        }
    }

    pub(crate) fn update(&self, f: impl FnOnce(&mut Live)) {
        f(&mut self.inner.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// The status, with the lag against `newest_seq` (the org's newest stored record).
    pub fn snapshot(&self, newest_seq: u64) -> Status {
        let l = self.inner.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let lag_records = newest_seq.saturating_sub(l.delivered_seq);
        let lag_seconds = match (lag_records, l.oldest_pending) {
            (0, _) | (_, None) => 0.0,
            (_, Some(t)) => ((Utc::now() - t).num_milliseconds().max(0) as f64) / 1000.0,
        };
        Status {
            state: l.state,
            delivered_seq: l.delivered_seq,
            lag_records,
            lag_seconds,
            last_error: l.last_error,
            last_success_at: l.last_success_at,
            expired_records: l.expired_records,
            truncated_records: l.truncated_records,
            delivered_records: l.delivered_records,
        }
    }
}
