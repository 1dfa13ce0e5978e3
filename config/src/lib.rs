//! Configuration of the CodeStax collector and agent, and the start-up path their binaries
//! share (`startup`: flags to configuration to exit status; `shutdown_signal`).
//!
//! Values are layered: built-in defaults < the TOML file given with `--config` < environment
//! variables (`CODESTAX_COLLECTOR__…` / `CODESTAX_AGENT__…`, `__` between nesting levels), and
//! `--data-dir` last of all. Unknown keys are errors, and loading reports every problem at once,
//! each naming the full key and the file line or environment variable it came from.
//!
//! ```no_run
//! use codestax_config::{CollectorConfig, EnvSource};
//! let config = CollectorConfig::load(Some("collector.toml".as_ref()), &EnvSource::process())?;
//! print!("{}", config.summary());
//! # Ok::<(), codestax_config::ConfigError>(())
//! ```

#![forbid(unsafe_code)]

mod agent;
mod check;
mod cluster;
mod collector;
mod error;
mod load;
mod logging;
mod shutdown;
pub mod startup;
mod summary;

pub use agent::{
    AgentConfig, ApiConfig, BatchConfig, Compression, DiscoveryConfig, FileSourceConfig,
    MAX_RETRY_BACKOFF, OtlpConfig, RetryConfig, SourcesConfig, SpoolConfig, TlsConfig,
    UpstreamConfig,
};
pub use cluster::{
    ClusterConfig, MAX_LEASE_TTL, MAX_SHARDS, MIN_LEASE_TTL, NatsConfig, ObjectStoreConfig,
    POSTGRES_PASSWORD_ENV, PostgresConfig,
};
pub use collector::{
    AGENT_OTLP_PORTS, CollectorConfig, DEFAULT_STREAMS_TAIL_BYTES, DeclaredDestination,
    DeclaredStream, GrpcConfig, HttpConfig, IndexConfig, IngestConfig, LimitsConfig,
    MAX_INGEST_BURST_RECORDS, MAX_INGEST_RECORDS_PER_SECOND, MAX_RETENTION_DAYS, MetricsConfig,
    OrgConfig, Plan, RetentionConfig, SigningConfig, StreamsConfig,
    TANTIVY_MAX_WRITER_MEMORY_BYTES, TANTIVY_MIN_WRITER_MEMORY_BYTES, WalConfig,
};
pub use error::{Component, ConfigError, Origin, Problem};
pub use load::EnvSource;
pub use logging::{LogConfig, LogFormat};
pub use shutdown::shutdown_signal;
