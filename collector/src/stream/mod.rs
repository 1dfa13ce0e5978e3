//! Streams: each org's records pushed, as they arrive, to outside destinations (SIEMs), at
//! least once and in `seq` order, with a durable cursor per stream. See `docs/streams.md`.
//!
//! - [`definition`]: what a stream is (name, format, start, filters, destination), as the API
//!   and the TOML give it, checked; secrets apart ([`Secrets`]).
//! - [`secret`]: secrets sealed at rest under a key kept outside the data directory.
//! - [`store`]: definitions and cursors under `data_dir/streams/` (atomic state files).
//! - [`allow`]: which addresses a destination may resolve to (`[streams] allow_destinations`).
//! - [`tls`]: the TLS client settings (system roots or a given CA).
//! - [`destination`]: the senders (`https`, `splunk_hec`, `s3`, `syslog`); new kinds plug in
//!   there.
//! - [`status`]: state, lag, last error, as shown by the API and the metrics.
//! - [`delivery`]: one stream's task (read after the cursor, send, move the cursor, retry).
//! - [`registry`]: every stream and its task; the operations of the API.
//! - [`shared`]: what the registry needs of the cluster's metastore (definitions, fenced
//!   cursors) in cluster mode, and the cursor files of a single node.

pub mod allow;
pub mod definition;
pub mod delivery;
pub mod destination;
pub mod registry;
pub mod secret;
pub mod shared;
pub mod status;
pub mod store;
pub mod tls;

pub use allow::Allowlist;
pub use definition::{Destination, Format, Secrets, Start, StreamDef, StreamInput, StreamPatch};
pub use delivery::Deps;
pub use registry::{ReplayFrom, StreamError, StreamView, Streams, TestReport};
pub use secret::SecretKey;
pub use shared::{CursorStore, Recording, SharedError, SharedStreams, recording};
pub use status::{State, Status};
pub use store::StreamStore;
