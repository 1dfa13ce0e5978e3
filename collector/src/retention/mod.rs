//! Retention: how long each org's records are kept ([`RetentionPolicy`]: the default, `[[orgs]]`
//! config, overrides set through the API, legal holds), the floor every read applies
//! ([`RetentionPolicy::scope`]), and the [`Janitor`] that deletes what has expired.
//!
//! One rule everywhere: a record of org `o` has expired at `now` when its `time` is before
//! `now - days(o)` ([`OrgRetention::expires_before`]), unless `o` is under legal hold, when
//! nothing of it expires. Reads hide expired records at once; the janitor deletes them on its
//! next run. See `docs/retention.md`.

mod checkpoint;
mod error;
mod janitor;
mod overrides;
mod policy;

pub use checkpoint::ChainCheckpoints;
pub use error::RetentionError;
pub use janitor::{Janitor, JanitorReport};
pub use policy::{OrgRetention, RetentionPolicy, Source};
#[cfg(test)]
mod tests;
