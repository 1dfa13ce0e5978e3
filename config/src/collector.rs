//! The collector's configuration: listeners, retention and organisations, ingest limits, index,
//! WAL and logging.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::check::{Checker, GIB, KIB, MIB, bytes, duration, is_valid_org_id};
use crate::cluster::ClusterConfig;
use crate::error::{Component, ConfigError};
use crate::load::{self, EnvSource, Settings};
use crate::logging::LogConfig;
use crate::summary::Summary;

/// Ports the agent listens on by default (OTLP gRPC and HTTP); the collector must keep off them
/// so both can run on one host.
pub const AGENT_OTLP_PORTS: [u16; 2] = [4317, 4318];
/// Longest retention any organisation may have, in days (about ten years).
pub const MAX_RETENTION_DAYS: u32 = 3650;
/// Highest `limits.ingest_records_per_second_per_*`.
pub const MAX_INGEST_RECORDS_PER_SECOND: u32 = 10_000_000;
/// Highest `limits.ingest_burst_records_per_*`.
pub const MAX_INGEST_BURST_RECORDS: u32 = 100_000_000;
/// The least indexing memory tantivy accepts per indexing thread, in bytes.
pub const TANTIVY_MIN_WRITER_MEMORY_BYTES: usize = 15_000_000;
/// The most indexing memory per indexing thread we allow, in bytes: 3 GiB (tantivy refuses 4.29 GB
/// and more).
pub const TANTIVY_MAX_WRITER_MEMORY_BYTES: usize = 3 << 30;

/// Everything `codestax-collector` reads at start-up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectorConfig {
    /// Directory for the WAL, the index and state files.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// `[http]`: HTTP API, OTLP/HTTP `/v1/logs` and the dashboard.
    #[serde(default)]
    pub http: HttpConfig,
    /// `[grpc]`: OTLP/gRPC receiver (agents send here).
    #[serde(default)]
    pub grpc: GrpcConfig,
    /// `[metrics]`: the Prometheus listener, apart from the API.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// `[retention]`: how long records are kept.
    #[serde(default)]
    pub retention: RetentionConfig,
    /// `[[orgs]]`: organisations with their plan and retention.
    #[serde(default)]
    pub orgs: Vec<OrgConfig>,
    /// `[ingest]`: what records are accepted.
    #[serde(default)]
    pub ingest: IngestConfig,
    /// `[limits]`: request size and time limits.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// `[index]`: the tantivy search index.
    #[serde(default)]
    pub index: IndexConfig,
    /// `[wal]`: the write-ahead log records are made durable in before they are acknowledged.
    #[serde(default)]
    pub wal: WalConfig,
    /// `[signing]`: the Ed25519 key that signs each org's Merkle tree heads (checkpoints).
    #[serde(default)]
    pub signing: SigningConfig,
    /// `[log]`: the collector's own diagnostics.
    #[serde(default)]
    pub log: LogConfig,
    /// `[cluster]`: cluster mode (docs/cluster.md). Unset: a single node, as always.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterConfig>,
    /// `[streams]`: pushing each org's records to outside destinations (SIEMs); see
    /// `docs/streams.md`.
    #[serde(default)]
    pub streams: StreamsConfig,
}

/// The default memory for the newest records of orgs that streams follow (`streams.tail_bytes`):
/// at 10k records/s of ~700 bytes, about four seconds of them.
pub const DEFAULT_STREAMS_TAIL_BYTES: u64 = 32 * MIB;

/// `[streams]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamsConfig {
    /// Memory for the newest records of the orgs streams follow, in bytes (1 MiB to 1 GiB): a
    /// caught-up stream reads its next records from here rather than from the index. Records
    /// beyond it are read from the index, so a smaller tail costs reads, never records.
    #[serde(default = "default_streams_tail_bytes")]
    pub tail_bytes: u64,
    /// File holding the 32-byte key that encrypts stream secrets (HMAC secrets, tokens) at rest.
    /// Keep it apart from the data directory, so a copy of the data holds no usable secret.
    /// Unset: `<data_dir>.streams-key` (beside the data directory, not in it), generated at first
    /// start with mode 0600. Required with `[cluster]`: every node names the same file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_file: Option<PathBuf>,
    /// Destinations allowed although they are loopback, link-local or private addresses, which
    /// are refused by default (no requests to metadata services or internal hosts): CIDR blocks
    /// (`10.0.0.0/8`, `127.0.0.1/32`, `::1/128`, or one address) and host names
    /// (`siem.example.com`: allowed whatever it resolves to). Public addresses need no entry.
    #[serde(default)]
    pub allow_destinations: Vec<String>,
    /// `[[streams.declared]]`: streams the operator declares here; the API shows them but cannot
    /// change or delete them (409 `stream_declared`).
    #[serde(default)]
    pub declared: Vec<DeclaredStream>,
}

impl Default for StreamsConfig {
    fn default() -> Self {
        StreamsConfig {
            tail_bytes: default_streams_tail_bytes(),
            secret_key_file: None,
            allow_destinations: Vec::new(),
            declared: Vec::new(),
        }
    }
}

fn default_streams_tail_bytes() -> u64 {
    DEFAULT_STREAMS_TAIL_BYTES
}

/// `[[streams.declared]]`: one stream, as the API's `POST .../streams` body takes it, plus the
/// org and a fixed id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeclaredStream {
    /// The org whose records it sends.
    pub org: String,
    /// Its id in the API (letters, digits, `-`, `_`; at most 64).
    pub id: String,
    pub name: String,
    /// `native`, `ocsf` or `ecs`.
    #[serde(default = "default_stream_format")]
    pub format: String,
    /// `now`, `beginning` or an RFC 3339 time; read when the stream first starts.
    #[serde(default = "default_stream_start")]
    pub start: String,
    /// The search filters (`category`, `action`, `actor`, `repository`, `outcome`), each a list.
    #[serde(default)]
    pub filters: std::collections::BTreeMap<String, Vec<String>>,
    pub destination: DeclaredDestination,
}

/// A declared stream's destination: the fields of its `kind`, as in the API.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeclaredDestination {
    /// `https`, `splunk_hec`, `s3` or `syslog`.
    pub kind: String,
    /// `https`: the URL batches are POSTed to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// `https`: extra request headers.
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    /// `https`: the HMAC-SHA256 secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// `syslog`: `host:port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// `syslog`: TLS (RFC 5425) or plain TCP.
    #[serde(default)]
    pub tls: bool,
    /// PEM file of the CA to trust instead of the system roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// `syslog`: the largest message, in bytes (default 8192).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_message_bytes: Option<usize>,
    /// `splunk_hec`: the HEC token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// `splunk_hec`: the index events go to (the token's default when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<String>,
    /// `splunk_hec`: the events' sourcetype (default `codestax:audit`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sourcetype: Option<String>,
    /// `s3`: the bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    /// `s3`: the key prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// `s3`: the region (default `us-east-1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// `s3`: an S3-compatible endpoint, `http(s)://host[:port]` (AWS when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// `s3`: the access key id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
    /// `s3`: the secret access key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_access_key: Option<String>,
    /// `s3`: the session token of temporary credentials (STS), with their key id and secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_token: Option<String>,
}

fn default_stream_format() -> String {
    "native".into()
}
fn default_stream_start() -> String {
    "now".into()
}

/// `[http]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Address for the HTTP API, OTLP/HTTP `/v1/logs` and the dashboard (`IP:PORT`).
    #[serde(default = "default_http_listen")]
    pub listen: SocketAddr,
}

/// `[grpc]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcConfig {
    /// Address for the OTLP/gRPC receiver (`IP:PORT`); not 4317/4318, which are the agent's.
    #[serde(default = "default_grpc_listen")]
    pub listen: SocketAddr,
}

/// `[metrics]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address serving Prometheus `GET /metrics` (`IP:PORT`), without authentication: keep it on
    /// loopback or a network only the scraper reaches. The API port has no `/metrics`.
    #[serde(default = "default_metrics_listen")]
    pub listen: SocketAddr,
    /// Label per-org series with the org id (`org="..."`). Off: those figures are summed (or the
    /// oldest taken) over all orgs, so a scrape does not list the orgs that exist.
    #[serde(default)]
    pub per_org: bool,
}

/// `[retention]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// Days records are kept for organisations without their own `retention_days` (1 to 3650).
    #[serde(default = "default_retention_days")]
    pub default_days: u32,
    /// How often the janitor deletes expired records (duration, e.g. `1h`; 1s to 7d). It also
    /// runs once about 10 s after start (or after one interval, if shorter).
    #[serde(default = "default_janitor_interval", with = "humantime_serde")]
    pub janitor_interval: Duration,
}

/// An organisation's plan; extended retention needs `enterprise`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Plan {
    #[default]
    Free,
    Team,
    Enterprise,
}

impl Plan {
    /// The name used in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            Plan::Free => "free",
            Plan::Team => "team",
            Plan::Enterprise => "enterprise",
        }
    }
}

/// One `[[orgs]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrgConfig {
    /// Organisation id as it appears in records (required; 1 to 64 of `A-Z a-z 0-9 _ . -`).
    #[serde(default)]
    pub id: String,
    /// Display name (optional).
    #[serde(default)]
    pub name: Option<String>,
    /// `free`, `team` or `enterprise`.
    #[serde(default)]
    pub plan: Plan,
    /// Days to keep this organisation's records (1 to 3650; enterprise plan only). Unset means
    /// `retention.default_days`.
    #[serde(default)]
    pub retention_days: Option<u32>,
    /// Keep every record regardless of retention while set: nothing is deleted, and records
    /// past the window stay readable.
    #[serde(default)]
    pub legal_hold: bool,
}

impl OrgConfig {
    /// Days this organisation's records are kept, given the collector-wide default.
    pub fn effective_retention_days(&self, default_days: u32) -> u32 {
        self.retention_days.unwrap_or(default_days)
    }
}

/// `[ingest]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    /// Accept actions outside the built-in catalogue (otherwise they are rejected).
    #[serde(default)]
    pub allow_custom_actions: bool,
    /// Largest accepted record, in bytes of JSON (1 KiB to 16 MiB); the collector's own entries
    /// have a fixed limit of their own (64 KiB).
    #[serde(default = "default_max_record_bytes")]
    pub max_record_bytes: usize,
}

/// `[limits]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest request body as sent (possibly compressed), in bytes (1 KiB to 1 GiB).
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Largest request body after decompression, in bytes (at least `max_body_bytes`, at most
    /// 4 GiB).
    #[serde(default = "default_max_decompressed_bytes")]
    pub max_decompressed_bytes: usize,
    /// Most results one search request may ask for (1 to 100000).
    #[serde(default = "default_max_search_limit")]
    pub max_search_limit: usize,
    /// Time from a request's arrival to its answer's head (HTTP: JSON 408; gRPC: CANCELLED); an
    /// answer already streaming (a long export) is not cut (duration, 1s to 1h).
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Records per second one API key may ingest, on average (0 = no limit; at most 10000000).
    /// Every record of a batch counts, valid or not; over the limit a batch is refused whole with
    /// 429 / RESOURCE_EXHAUSTED and a retry delay.
    #[serde(default)]
    pub ingest_records_per_second_per_key: u32,
    /// Records one API key may send at once above its average rate (0 = one second's worth). A
    /// batch larger than this goes through once the key's allowance is full, then the key waits
    /// until its average is back under the limit.
    #[serde(default)]
    pub ingest_burst_records_per_key: u32,
    /// Records per second all keys of one org may ingest together, on average (0 = no limit; at
    /// most 10000000).
    #[serde(default)]
    pub ingest_records_per_second_per_org: u32,
    /// Records one org may send at once above its average rate (0 = one second's worth).
    #[serde(default)]
    pub ingest_burst_records_per_org: u32,
}

/// `[index]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexConfig {
    /// How often new records are committed to the index and become searchable (duration,
    /// 1ms to 60s).
    #[serde(default = "default_commit_interval", with = "humantime_serde")]
    pub commit_interval: Duration,
    /// Indexing memory budget per indexing thread, in bytes (tantivy needs at least
    /// 15000000). A thread's records since the last commit are written out as a segment when
    /// they fill it.
    #[serde(default = "default_writer_memory_bytes")]
    pub writer_memory_bytes: usize,
    /// Indexing threads of the partition being written (1 to 8). Each builds its own segment,
    /// so a commit writes them out in parallel; more threads also make more segments to merge.
    #[serde(default = "default_writer_threads")]
    pub writer_threads: usize,
    /// Threads merging a partition's segments in the background (1 to 8).
    #[serde(default = "default_merge_threads")]
    pub merge_threads: usize,
    /// Values shown per facet (action, user, repository…) in search responses (1 to 1000).
    #[serde(default = "default_facet_top_n")]
    pub facet_top_n: usize,
    /// Partition writers open at once (1 to 16): the current week's, and the previous week's
    /// for a while after the week turns.
    #[serde(default = "default_max_open_writers")]
    pub max_open_writers: usize,
    /// Memory for records of past weeks staged for bulk indexing, in bytes (0 to 4 GiB; 0: no
    /// stage, each past week's records go to its writer as they come, slowly when a batch spans
    /// many weeks).
    #[serde(default = "default_cold_stage_bytes")]
    pub cold_stage_bytes: u64,
    /// Longest a past week's record waits in the stage (duration, 100ms to 60s): such records
    /// are searchable within about this plus `commit_interval`.
    #[serde(default = "default_cold_flush_after", with = "humantime_serde")]
    pub cold_flush_after: Duration,
    /// Threads a flush of staged past weeks indexes them on, a week at a time each (1 to 8).
    #[serde(default = "default_cold_flush_threads")]
    pub cold_flush_threads: usize,
}

/// `[wal]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WalConfig {
    /// Longest a write waits for others to share its fsync (duration, 0s to 1s; 0s = fsync
    /// each write alone).
    #[serde(default = "default_group_commit_max_wait", with = "humantime_serde")]
    pub group_commit_max_wait: Duration,
    /// Size at which a WAL segment is closed and a new one started, in bytes (1 MiB to 1 GiB).
    #[serde(default = "default_wal_segment_bytes")]
    pub segment_bytes: u64,
    /// Bytes the WAL leaves free on its disk: past that, ingest is refused (503 `wal_full`)
    /// while the index, the trees and the state files can still write, so what was acknowledged
    /// gets indexed and the WAL's indexed segments deleted. Without it a collector that fills
    /// its own disk stays stuck. Besides it, twice the WAL bytes the index has not committed yet
    /// are kept free (indexing them needs that room). 0 to 1 TiB; 0 keeps nothing free, neither
    /// part (only for a WAL on a disk of its own).
    #[serde(default = "default_wal_keep_free_bytes")]
    pub keep_free_bytes: u64,
}

/// `[signing]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigningConfig {
    /// File holding the signing key, as `PRIVATE+KEY+<name>+<key id>+<base64 key>` (the
    /// signed-note signer form; `codestax-collector signing-key` prints its public half). Unset:
    /// `<data_dir>/signing-key`, generated at first start with mode 0600. Keep it readable by the
    /// collector only; every node of a cluster must use the same file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// The name of a key the collector generates: its name in signatures and the start of each
    /// org's checkpoint origin (`<key_name>/orgs/<org>`). Best a host-like name that is yours
    /// (`audit.example.com`); no spaces or `+`. Ignored when the key exists (its file names it).
    #[serde(default = "default_signing_key_name")]
    pub key_name: String,
}

fn default_signing_key_name() -> String {
    "codestax-collector".into()
}

impl Default for SigningConfig {
    fn default() -> Self {
        SigningConfig {
            key_file: None,
            key_name: default_signing_key_name(),
        }
    }
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("./codestax-data/collector")
}
fn default_http_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8470))
}
fn default_grpc_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8417))
}
fn default_metrics_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8472))
}
fn default_retention_days() -> u32 {
    90
}
fn default_janitor_interval() -> Duration {
    Duration::from_secs(3600)
}
fn default_max_record_bytes() -> usize {
    64 * KIB as usize
}
fn default_max_body_bytes() -> usize {
    16 * MIB as usize
}
fn default_max_decompressed_bytes() -> usize {
    64 * MIB as usize
}
fn default_max_search_limit() -> usize {
    1000
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_commit_interval() -> Duration {
    Duration::from_millis(350)
}
fn default_writer_memory_bytes() -> usize {
    64 * MIB as usize
}
fn default_writer_threads() -> usize {
    2
}
fn default_merge_threads() -> usize {
    2
}
fn default_facet_top_n() -> usize {
    10
}
fn default_max_open_writers() -> usize {
    2
}
fn default_cold_stage_bytes() -> u64 {
    64 * MIB
}
fn default_cold_flush_after() -> Duration {
    Duration::from_secs(2)
}
fn default_cold_flush_threads() -> usize {
    2
}
fn default_group_commit_max_wait() -> Duration {
    Duration::from_millis(2)
}
fn default_wal_keep_free_bytes() -> u64 {
    128 << 20
}
fn default_wal_segment_bytes() -> u64 {
    64 * MIB
}

impl Default for CollectorConfig {
    fn default() -> Self {
        CollectorConfig {
            data_dir: default_data_dir(),
            http: HttpConfig::default(),
            grpc: GrpcConfig::default(),
            metrics: MetricsConfig::default(),
            retention: RetentionConfig::default(),
            orgs: Vec::new(),
            ingest: IngestConfig::default(),
            limits: LimitsConfig::default(),
            index: IndexConfig::default(),
            wal: WalConfig::default(),
            signing: SigningConfig::default(),
            log: LogConfig::default(),
            streams: StreamsConfig::default(),
            cluster: None,
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: default_http_listen(),
        }
    }
}

impl Default for GrpcConfig {
    fn default() -> Self {
        GrpcConfig {
            listen: default_grpc_listen(),
        }
    }
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            listen: default_metrics_listen(),
            per_org: false,
        }
    }
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            default_days: default_retention_days(),
            janitor_interval: default_janitor_interval(),
        }
    }
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            allow_custom_actions: false,
            max_record_bytes: default_max_record_bytes(),
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_body_bytes: default_max_body_bytes(),
            max_decompressed_bytes: default_max_decompressed_bytes(),
            max_search_limit: default_max_search_limit(),
            request_timeout: default_request_timeout(),
            ingest_records_per_second_per_key: 0,
            ingest_burst_records_per_key: 0,
            ingest_records_per_second_per_org: 0,
            ingest_burst_records_per_org: 0,
        }
    }
}

impl Default for IndexConfig {
    fn default() -> Self {
        IndexConfig {
            commit_interval: default_commit_interval(),
            writer_memory_bytes: default_writer_memory_bytes(),
            writer_threads: default_writer_threads(),
            merge_threads: default_merge_threads(),
            facet_top_n: default_facet_top_n(),
            max_open_writers: default_max_open_writers(),
            cold_stage_bytes: default_cold_stage_bytes(),
            cold_flush_after: default_cold_flush_after(),
            cold_flush_threads: default_cold_flush_threads(),
        }
    }
}

impl Default for WalConfig {
    fn default() -> Self {
        WalConfig {
            group_commit_max_wait: default_group_commit_max_wait(),
            segment_bytes: default_wal_segment_bytes(),
            keep_free_bytes: default_wal_keep_free_bytes(),
        }
    }
}

impl CollectorConfig {
    /// Loads defaults < `file` (must exist when given) < `CODESTAX_COLLECTOR__*` variables from
    /// `env`, then checks every range. The error lists every problem found.
    pub fn load(file: Option<&Path>, env: &EnvSource) -> Result<Self, ConfigError> {
        load::load(file, env)
    }

    /// Checks ranges and consistency of a configuration built in code.
    pub fn validate(&self) -> Result<(), ConfigError> {
        load::validate(self)
    }

    /// Replaces `data_dir` (the `--data-dir` flag).
    pub fn with_data_dir(mut self, data_dir: impl Into<PathBuf>) -> Self {
        self.data_dir = data_dir.into();
        self
    }

    /// The `[[orgs]]` entry for `id`, if configured.
    pub fn org(&self, id: &str) -> Option<&OrgConfig> {
        self.orgs.iter().find(|org| org.id == id)
    }

    /// Days records of organisation `id` are kept (its own `retention_days`, or the default).
    pub fn retention_days_for(&self, id: &str) -> u32 {
        self.org(id).map_or(self.retention.default_days, |org| {
            org.effective_retention_days(self.retention.default_days)
        })
    }

    /// Effective settings, one `key  value` line each, for `--check-config`.
    pub fn summary(&self) -> String {
        let mut s = Summary::default();
        s.row("data_dir", self.data_dir.display())
            .row("http.listen", self.http.listen)
            .row("grpc.listen", self.grpc.listen)
            .row("metrics.listen", self.metrics.listen)
            .row("metrics.per_org", self.metrics.per_org)
            .row("retention.default_days", self.retention.default_days)
            .row(
                "retention.janitor_interval",
                duration(self.retention.janitor_interval),
            );
        if self.orgs.is_empty() {
            s.row("orgs", "(none)");
        }
        for (i, org) in self.orgs.iter().enumerate() {
            let name = org
                .name
                .as_deref()
                .map(|n| format!(" ({n:?})"))
                .unwrap_or_default();
            let retention = match org.retention_days {
                Some(days) => format!("{days} days"),
                None => format!("{} days (default)", self.retention.default_days),
            };
            let hold = if org.legal_hold { ", legal hold" } else { "" };
            s.row(
                format!("orgs[{i}]"),
                format!(
                    "{}{name}: plan {}, retention {retention}{hold}",
                    org.id,
                    org.plan.as_str()
                ),
            );
        }
        s.row(
            "ingest.allow_custom_actions",
            self.ingest.allow_custom_actions,
        )
        .row(
            "ingest.max_record_bytes",
            bytes(self.ingest.max_record_bytes as u64),
        )
        .row(
            "limits.max_body_bytes",
            bytes(self.limits.max_body_bytes as u64),
        )
        .row(
            "limits.max_decompressed_bytes",
            bytes(self.limits.max_decompressed_bytes as u64),
        )
        .row("limits.max_search_limit", self.limits.max_search_limit)
        .row(
            "limits.request_timeout",
            duration(self.limits.request_timeout),
        )
        .row(
            "limits.ingest_records_per_second_per_key",
            rate(self.limits.ingest_records_per_second_per_key),
        )
        .row(
            "limits.ingest_burst_records_per_key",
            burst(
                self.limits.ingest_burst_records_per_key,
                self.limits.ingest_records_per_second_per_key,
            ),
        )
        .row(
            "limits.ingest_records_per_second_per_org",
            rate(self.limits.ingest_records_per_second_per_org),
        )
        .row(
            "limits.ingest_burst_records_per_org",
            burst(
                self.limits.ingest_burst_records_per_org,
                self.limits.ingest_records_per_second_per_org,
            ),
        )
        .row(
            "index.commit_interval",
            duration(self.index.commit_interval),
        )
        .row(
            "index.writer_memory_bytes",
            bytes(self.index.writer_memory_bytes as u64),
        )
        .row("index.writer_threads", self.index.writer_threads)
        .row("index.merge_threads", self.index.merge_threads)
        .row("index.facet_top_n", self.index.facet_top_n)
        .row("index.max_open_writers", self.index.max_open_writers)
        .row("index.cold_stage_bytes", bytes(self.index.cold_stage_bytes))
        .row(
            "index.cold_flush_after",
            duration(self.index.cold_flush_after),
        )
        .row("index.cold_flush_threads", self.index.cold_flush_threads)
        .row(
            "wal.group_commit_max_wait",
            duration(self.wal.group_commit_max_wait),
        )
        .row("wal.segment_bytes", bytes(self.wal.segment_bytes))
        .row("wal.keep_free_bytes", bytes(self.wal.keep_free_bytes))
        .row(
            "signing.key_file",
            self.signing.key_file.as_ref().map_or_else(
                || "(none: <data_dir>/signing-key, generated at first start)".to_string(),
                |p| p.display().to_string(),
            ),
        )
        .row("signing.key_name", &self.signing.key_name)
        .row(
            "streams.secret_key_file",
            self.streams.secret_key_file.as_ref().map_or_else(
                || "(none: <data_dir>.streams-key, generated at first start)".to_string(),
                |p| p.display().to_string(),
            ),
        )
        .row(
            "streams.allow_destinations",
            format!("{:?}", self.streams.allow_destinations),
        )
        .row("streams.tail_bytes", bytes(self.streams.tail_bytes))
        .row("streams.declared", self.streams.declared.len())
        .row("log.format", self.log.format.as_str())
        .row("log.level", &self.log.level);
        match &self.cluster {
            Some(cluster) => cluster.summarize(&mut s),
            None => {
                s.row("cluster", "(none: a single node)");
            }
        }
        s.render()
    }
}

/// A rate limit for the summary: `N records/s` or `off`.
fn rate(per_second: u32) -> String {
    if per_second == 0 {
        "off".into()
    } else {
        format!("{per_second} records/s")
    }
}

/// A burst for the summary, with its default (the rate) spelt out.
fn burst(records: u32, per_second: u32) -> String {
    match (records, per_second) {
        (_, 0) => "-".into(),
        (0, r) => format!("{r} records (one second's worth)"),
        (b, _) => format!("{b} records"),
    }
}

impl Settings for CollectorConfig {
    const COMPONENT: Component = Component::Collector;
    const VERBATIM_ENV_KEYS: &'static [&'static str] = &[
        "data_dir",
        "log.level",
        "cluster.node_id",
        "cluster.postgres.password",
    ];

    fn check(&self, c: &mut Checker) {
        if self.data_dir.as_os_str().is_empty() {
            c.fail("data_dir", "must not be empty");
        }

        for (key, addr) in [
            ("http.listen", self.http.listen),
            ("grpc.listen", self.grpc.listen),
            ("metrics.listen", self.metrics.listen),
        ] {
            if AGENT_OTLP_PORTS.contains(&addr.port()) {
                c.fail(
                    key,
                    format!(
                        "port {} is the agent's OTLP port (4317 gRPC, 4318 HTTP); use another, \
                         e.g. 8470 for http or 8417 for grpc",
                        addr.port()
                    ),
                );
            }
        }
        c.distinct_listeners(&[
            ("http.listen", self.http.listen),
            ("grpc.listen", self.grpc.listen),
            ("metrics.listen", self.metrics.listen),
        ]);

        c.range(
            "retention.default_days",
            self.retention.default_days,
            1,
            MAX_RETENTION_DAYS,
        );
        c.duration_range(
            "retention.janitor_interval",
            self.retention.janitor_interval,
            Duration::from_secs(1),
            Duration::from_secs(7 * 24 * 3600),
        );

        for (i, org) in self.orgs.iter().enumerate() {
            let key = |field: &str| format!("orgs.{i}.{field}");
            if org.id.is_empty() {
                c.fail(&key("id"), "is required");
            } else if !is_valid_org_id(&org.id) {
                c.fail(
                    &key("id"),
                    format!("must be 1 to 64 of A-Z a-z 0-9 _ . -, got {:?}", org.id),
                );
            } else if let Some(first) = self.orgs[..i].iter().position(|o| o.id == org.id) {
                c.fail(
                    &key("id"),
                    format!("duplicate org id {:?} (also orgs[{first}])", org.id),
                );
            }
            if let Some(name) = &org.name {
                c.non_empty(&key("name"), name);
            }
            if let Some(days) = org.retention_days {
                if org.plan != Plan::Enterprise {
                    c.fail(
                        &key("retention_days"),
                        format!(
                            "extended retention needs the enterprise plan, but org {:?} has plan \
                             {:?}; remove retention_days or set plan = \"enterprise\"",
                            org.id,
                            org.plan.as_str()
                        ),
                    );
                } else {
                    c.range(&key("retention_days"), days, 1, MAX_RETENTION_DAYS);
                }
            }
        }

        c.bytes_range(
            "ingest.max_record_bytes",
            self.ingest.max_record_bytes as u64,
            KIB,
            16 * MIB,
        );

        c.bytes_range(
            "limits.max_body_bytes",
            self.limits.max_body_bytes as u64,
            KIB,
            GIB,
        );
        if self.limits.max_decompressed_bytes < self.limits.max_body_bytes {
            c.fail_against(
                "limits.max_decompressed_bytes",
                "limits.max_body_bytes",
                format!(
                    "must be at least limits.max_body_bytes ({}), got {}",
                    self.limits.max_body_bytes, self.limits.max_decompressed_bytes
                ),
            );
        } else {
            c.bytes_range(
                "limits.max_decompressed_bytes",
                self.limits.max_decompressed_bytes as u64,
                KIB,
                4 * GIB,
            );
        }
        c.range(
            "limits.max_search_limit",
            self.limits.max_search_limit,
            1,
            100_000,
        );
        c.duration_range(
            "limits.request_timeout",
            self.limits.request_timeout,
            Duration::from_secs(1),
            Duration::from_secs(3600),
        );
        for (scope, rate, burst) in [
            (
                "key",
                self.limits.ingest_records_per_second_per_key,
                self.limits.ingest_burst_records_per_key,
            ),
            (
                "org",
                self.limits.ingest_records_per_second_per_org,
                self.limits.ingest_burst_records_per_org,
            ),
        ] {
            let rate_key = format!("limits.ingest_records_per_second_per_{scope}");
            let burst_key = format!("limits.ingest_burst_records_per_{scope}");
            c.range(&rate_key, rate, 0, MAX_INGEST_RECORDS_PER_SECOND);
            c.range(&burst_key, burst, 0, MAX_INGEST_BURST_RECORDS);
            if rate == 0 && burst != 0 {
                c.fail(
                    &burst_key,
                    format!("has no effect while {rate_key} is 0 (no limit); set both or neither"),
                );
            }
        }

        c.duration_range(
            "index.commit_interval",
            self.index.commit_interval,
            Duration::from_millis(1),
            Duration::from_secs(60),
        );
        c.bytes_range(
            "index.writer_memory_bytes",
            self.index.writer_memory_bytes as u64,
            TANTIVY_MIN_WRITER_MEMORY_BYTES as u64,
            TANTIVY_MAX_WRITER_MEMORY_BYTES as u64,
        );
        c.range("index.writer_threads", self.index.writer_threads, 1, 8);
        c.range("index.merge_threads", self.index.merge_threads, 1, 8);
        c.range("index.facet_top_n", self.index.facet_top_n, 1, 1000);
        c.range("index.max_open_writers", self.index.max_open_writers, 1, 16);
        c.bytes_range(
            "index.cold_stage_bytes",
            self.index.cold_stage_bytes,
            0,
            4 * GIB,
        );
        c.duration_range(
            "index.cold_flush_after",
            self.index.cold_flush_after,
            Duration::from_millis(100),
            Duration::from_secs(60),
        );
        c.range(
            "index.cold_flush_threads",
            self.index.cold_flush_threads,
            1,
            8,
        );

        c.duration_range(
            "wal.group_commit_max_wait",
            self.wal.group_commit_max_wait,
            Duration::ZERO,
            Duration::from_secs(1),
        );
        c.bytes_range("wal.segment_bytes", self.wal.segment_bytes, MIB, GIB);
        c.bytes_range(
            "wal.keep_free_bytes",
            self.wal.keep_free_bytes,
            0,
            1024 * GIB,
        );

        if let Some(file) = &self.signing.key_file
            && file.as_os_str().is_empty()
        {
            c.fail(
                "signing.key_file",
                "must not be empty; leave it unset for the generated key",
            );
        }
        let name = &self.signing.key_name;
        if name.is_empty()
            || name
                .chars()
                .any(|ch| ch.is_whitespace() || ch == '+' || ch.is_control())
        {
            c.fail(
                "signing.key_name",
                format!("must be non-empty, without spaces or '+', got {name:?}"),
            );
        }

        c.bytes_range("streams.tail_bytes", self.streams.tail_bytes, MIB, GIB);
        if let Some(file) = &self.streams.secret_key_file
            && file.as_os_str().is_empty()
        {
            c.fail(
                "streams.secret_key_file",
                "must not be empty; leave it unset for the generated key",
            );
        }
        // Every node seals with it (stream secrets, the cluster's signing key): a key generated
        // per node would be refused by the second node, later and less clearly.
        if self.cluster.is_some() && self.streams.secret_key_file.is_none() {
            c.fail_against(
                "streams.secret_key_file",
                "cluster.node_id",
                "required with [cluster]: every node must name the same key file (copy it to each \
                 node, outside the data directory)",
            );
        }
        let mut ids = std::collections::BTreeSet::new();
        for (i, s) in self.streams.declared.iter().enumerate() {
            let key = format!("streams.declared[{i}]");
            if !is_valid_org_id(&s.org) {
                c.fail(
                    &format!("{key}.org"),
                    format!("not a valid org id: {:?}", s.org),
                );
            }
            if s.id.is_empty()
                || s.id.len() > 64
                || !s
                    .id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                c.fail(
                    &format!("{key}.id"),
                    "must be 1 to 64 letters, digits, '-' or '_'",
                );
            }
            if !ids.insert((s.org.as_str(), s.id.as_str())) {
                c.fail(
                    &format!("{key}.id"),
                    "another declared stream of the org has it",
                );
            }
        }

        self.log.check(c);
        if let Some(cluster) = &self.cluster {
            cluster.check(c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/collector.toml");

    fn toml_file(text: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
        file.write_all(text.as_bytes()).unwrap();
        file
    }

    fn load_err(text: &str, env: &[(&str, &str)]) -> (String, tempfile::NamedTempFile) {
        let file = toml_file(text);
        let err = CollectorConfig::load(Some(file.path()), &EnvSource::vars(env.iter().copied()))
            .unwrap_err();
        (err.to_string(), file)
    }

    #[test]
    fn defaults() {
        let config = CollectorConfig::load(None, &EnvSource::empty()).unwrap();
        assert_eq!(config, CollectorConfig::default());
        assert_eq!(config.data_dir, Path::new("./codestax-data/collector"));
        assert_eq!(config.http.listen.to_string(), "127.0.0.1:8470");
        assert_eq!(config.grpc.listen.to_string(), "127.0.0.1:8417");
        assert_eq!(config.metrics.listen.to_string(), "127.0.0.1:8472");
        assert!(!config.metrics.per_org);
        assert_eq!(config.limits.ingest_records_per_second_per_key, 0);
        assert_eq!(config.limits.ingest_records_per_second_per_org, 0);
        assert_eq!(config.retention.default_days, 90);
        assert_eq!(config.retention.janitor_interval, Duration::from_secs(3600));
        assert_eq!(config.ingest.max_record_bytes, 65536);
        assert_eq!(config.limits.max_body_bytes, 16 << 20);
        assert_eq!(config.limits.max_decompressed_bytes, 64 << 20);
        assert_eq!(config.limits.request_timeout, Duration::from_secs(30));
        assert_eq!(config.index.commit_interval, Duration::from_millis(350));
        assert_eq!(config.index.writer_memory_bytes, 64 << 20);
        assert_eq!(config.index.writer_threads, 2);
        assert_eq!(config.index.merge_threads, 2);
        assert_eq!(config.wal.group_commit_max_wait, Duration::from_millis(2));
        assert_eq!(config.log.level, "info");
        assert_eq!(config.signing, SigningConfig::default());
        assert_eq!(config.signing.key_name, "codestax-collector");
        assert!(config.orgs.is_empty());
        config.validate().unwrap();
    }

    const CLUSTER: &str = r#"
[cluster]
node_id = "c1"
advertise_url = "http://10.0.0.5:8470"
shards = 32
lease_ttl = "10s"
[cluster.nats]
urls = ["nats://n1:4222", "nats://n2:4222", "nats://n3:4222"]
stream = "CODESTAX_AUDIT"
replicas = 3
[cluster.postgres]
url = "postgres://codestax@db:5432/codestax"
[cluster.object_store]
url = "s3://bucket/prefix"
endpoint = "http://minio:9000"
region = "us-east-1"
allow_http = true
[streams]
secret_key_file = "/etc/codestax/streams-key"
"#;

    #[test]
    fn cluster_is_off_unless_configured() {
        let config = CollectorConfig::load(None, &EnvSource::empty()).unwrap();
        assert_eq!(config.cluster, None);
        assert!(config.summary().contains("(none: a single node)"));
    }

    #[test]
    fn cluster_keys_of_the_issue_parse_with_the_password_from_the_environment() {
        let file = toml_file(CLUSTER);
        let env = EnvSource::vars([(crate::POSTGRES_PASSWORD_ENV, "0123")]);
        let config =
            CollectorConfig::load(Some(file.path()), &env).unwrap_or_else(|e| panic!("{e}"));
        let cluster = config.cluster.as_ref().unwrap();
        assert_eq!(cluster.node_id, "c1");
        assert_eq!(cluster.advertise_url, "http://10.0.0.5:8470");
        assert_eq!(cluster.shards, 32);
        assert_eq!(cluster.lease_ttl, Duration::from_secs(10));
        assert_eq!(cluster.nats.urls.len(), 3);
        assert_eq!(cluster.nats.stream, "CODESTAX_AUDIT");
        assert_eq!(cluster.nats.replicas, 3);
        assert_eq!(cluster.postgres.url, "postgres://codestax@db:5432/codestax");
        // Verbatim: a password of digits stays a string with its leading zero.
        assert_eq!(cluster.postgres.password.as_deref(), Some("0123"));
        assert_eq!(cluster.object_store.url, "s3://bucket/prefix");
        assert_eq!(
            cluster.object_store.endpoint.as_deref(),
            Some("http://minio:9000")
        );
        assert!(cluster.object_store.allow_http);
        // The password is never shown.
        assert!(!format!("{config:?}").contains("0123"));
        let summary = config.summary();
        assert!(
            summary.contains("cluster.postgres.password") && !summary.contains("0123"),
            "{summary}"
        );
    }

    #[test]
    fn cluster_defaults_fill_optional_keys() {
        let text = CLUSTER
            .replace("lease_ttl = \"10s\"\n", "")
            .replace("stream = \"CODESTAX_AUDIT\"\n", "")
            .replace("replicas = 3\n", "")
            .replace("region = \"us-east-1\"\n", "");
        let file = toml_file(&text);
        let config = CollectorConfig::load(Some(file.path()), &EnvSource::empty()).unwrap();
        let cluster = config.cluster.unwrap();
        assert_eq!(cluster.lease_ttl, Duration::from_secs(10));
        assert_eq!(cluster.snapshot_interval, Duration::from_secs(60));
        assert_eq!(cluster.nats.stream, "CODESTAX_AUDIT");
        assert_eq!(cluster.nats.replicas, 3);
        assert_eq!(cluster.nats.setup_timeout, Duration::from_secs(30));
        assert_eq!(cluster.object_store.region, "us-east-1");
        assert_eq!(cluster.postgres.password, None);
    }

    #[test]
    fn snapshot_interval_is_read_and_bounded() {
        let with = |value: &str| {
            CLUSTER.replace(
                "lease_ttl = \"10s\"\n",
                &format!("lease_ttl = \"10s\"\nsnapshot_interval = \"{value}\"\n"),
            )
        };
        let file = toml_file(&with("2s"));
        let config = CollectorConfig::load(Some(file.path()), &EnvSource::empty()).unwrap();
        let cluster = config.cluster.unwrap();
        assert_eq!(cluster.snapshot_interval, Duration::from_secs(2));
        let (err, file) = load_err(&with("500ms"), &[]);
        let path = file.path().display().to_string();
        assert!(
            err.contains("collector.cluster.snapshot_interval: ")
                && err.contains(&format!("(in {path}, line 7)")),
            "{err}"
        );
    }

    #[test]
    fn nats_setup_timeout_is_read_and_bounded() {
        let with = |value: &str| {
            CLUSTER.replace(
                "replicas = 3\n",
                &format!("replicas = 3\nsetup_timeout = \"{value}\"\n"),
            )
        };
        let file = toml_file(&with("2m"));
        let config = CollectorConfig::load(Some(file.path()), &EnvSource::empty()).unwrap();
        assert_eq!(
            config.cluster.as_ref().unwrap().nats.setup_timeout,
            Duration::from_secs(120)
        );
        assert!(config.summary().contains("cluster.nats.setup_timeout"));
        for value in ["500ms", "11m"] {
            let (err, file) = load_err(&with(value), &[]);
            let path = file.path().display().to_string();
            assert!(
                err.contains("collector.cluster.nats.setup_timeout: ")
                    && err.contains(&format!("(in {path}, line 11)")),
                "{value}: {err}"
            );
        }
    }

    #[test]
    fn cluster_problems_name_key_and_file() {
        let text = CLUSTER
            .replace("node_id = \"c1\"", "node_id = \"c 1\"")
            .replace("shards = 32", "shards = 0")
            .replace("lease_ttl = \"10s\"", "lease_ttl = \"500ms\"")
            .replace("\"nats://n2:4222\"", "\"http://n2:4222\"")
            .replace("replicas = 3", "replicas = 7")
            .replace("codestax@db", "codestax:hunter2@db")
            .replace("allow_http = true", "allow_http = false");
        let (err, file) = load_err(&text, &[]);
        let path = file.path().display().to_string();
        for (key, line) in [
            ("collector.cluster.node_id", 3),
            ("collector.cluster.shards", 5),
            ("collector.cluster.lease_ttl", 6),
            ("collector.cluster.nats.urls[1]", 8),
            ("collector.cluster.nats.replicas", 10),
            ("collector.cluster.postgres.url", 12),
            ("collector.cluster.object_store.endpoint", 15),
        ] {
            assert!(
                err.contains(&format!("{key}: "))
                    && err.contains(&format!("(in {path}, line {line})")),
                "{key} line {line} in:\n{err}"
            );
        }
        assert!(err.contains(crate::POSTGRES_PASSWORD_ENV), "{err}");
        assert!(!err.contains("hunter2"), "the password is shown: {err}");
    }

    #[test]
    fn cluster_needs_its_required_keys() {
        let (err, _f) = load_err("[cluster]\nnode_id = \"c1\"\n", &[]);
        assert!(err.contains("cluster"), "{err}");
        let (err, _f) = load_err(
            &CLUSTER.replace("url = \"s3://bucket/prefix\"", "url = \"bucket\""),
            &[],
        );
        assert!(err.contains("collector.cluster.object_store.url"), "{err}");
    }

    #[test]
    fn cluster_needs_a_shared_stream_secret_key_file() {
        let text = CLUSTER.replace(
            "[streams]\nsecret_key_file = \"/etc/codestax/streams-key\"\n",
            "",
        );
        assert_ne!(text, CLUSTER);
        let env = [(crate::POSTGRES_PASSWORD_ENV, "pw")];
        let (err, file) = load_err(&text, &env);
        let path = file.path().display().to_string();
        assert!(
            err.contains("streams.secret_key_file") && err.contains(&path),
            "names the key and the file: {err}"
        );
        // A single node keeps its generated key.
        let file = toml_file("[streams]\nallow_destinations = []\n");
        CollectorConfig::load(Some(file.path()), &EnvSource::empty()).unwrap();
    }

    #[test]
    fn the_streams_tail_budget_is_checked_and_named() {
        let file = toml_file("[streams]\n");
        let config = CollectorConfig::load(Some(file.path()), &EnvSource::empty()).unwrap();
        assert_eq!(config.streams.tail_bytes, DEFAULT_STREAMS_TAIL_BYTES);
        let file = toml_file("[streams]\ntail_bytes = 1048576\n");
        let config = CollectorConfig::load(Some(file.path()), &EnvSource::empty()).unwrap();
        assert_eq!(config.streams.tail_bytes, MIB);
        for bad in [0, MIB - 1, GIB + 1] {
            let (err, file) = load_err(&format!("[streams]\ntail_bytes = {bad}\n"), &[]);
            let path = file.path().display().to_string();
            assert!(
                err.contains("streams.tail_bytes") && err.contains(&path),
                "names the key and the file: {err}"
            );
        }
    }

    #[test]
    fn signing_keys_are_checked_by_name() {
        let (err, _f) = load_err(
            "[signing]\nkey_name = \"has space\"\nkey_file = \"\"\n",
            &[],
        );
        assert!(err.contains("signing.key_name"), "{err}");
        assert!(err.contains("signing.key_file"), "{err}");
        let file = toml_file("[signing]\nkey_file = \"/etc/k\"\nkey_name = \"audit.example\"\n");
        let config = CollectorConfig::load(Some(file.path()), &EnvSource::empty()).unwrap();
        assert_eq!(
            config.signing.key_file.as_deref(),
            Some(Path::new("/etc/k"))
        );
        assert!(config.summary().contains("/etc/k"));
    }

    #[test]
    fn example_file_parses_without_problems() {
        let config = CollectorConfig::load(Some(Path::new(EXAMPLE)), &EnvSource::empty())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.orgs.len(), 2);
        assert_eq!(config.orgs[0].id, "acme");
        assert_eq!(config.orgs[0].plan, Plan::Enterprise);
        assert_eq!(config.orgs[0].retention_days, Some(365));
        assert_eq!(config.orgs[1].id, "globex");
        assert_eq!(config.orgs[1].plan, Plan::Team);
        assert_eq!(config.retention_days_for("acme"), 365);
        assert_eq!(config.retention_days_for("globex"), 90);
        assert_eq!(config.retention_days_for("unknown"), 90);
    }

    #[test]
    fn example_file_sets_every_key() {
        // Every key of the defaults must appear in the example, so the example documents them all.
        let text = std::fs::read_to_string(EXAMPLE).unwrap();
        let defaults = figment::Figment::from(figment::providers::Serialized::defaults(
            CollectorConfig::default(),
        ));
        let root = defaults.find_value("").unwrap();
        for (table, value) in root.as_dict().unwrap() {
            match value {
                figment::value::Value::Dict(_, dict) => {
                    assert!(text.contains(&format!("\n[{table}]")), "[{table}] missing");
                    for key in dict.keys() {
                        assert!(
                            text.contains(&format!("\n{key} =")),
                            "{table}.{key} missing"
                        );
                    }
                }
                figment::value::Value::Array(..) => {
                    assert!(
                        text.contains(&format!("\n[[{table}]]")),
                        "[[{table}]] missing"
                    )
                }
                _ => assert!(text.contains(&format!("\n{table} =")), "{table} missing"),
            }
        }
        for key in ["id", "name", "plan", "retention_days", "legal_hold"] {
            assert!(text.contains(&format!("\n{key} =")), "orgs.{key} missing");
        }
    }

    #[test]
    fn toml_overrides_defaults_and_env_overrides_toml() {
        let file = toml_file(
            "[http]\nlisten = \"127.0.0.1:9001\"\n[retention]\ndefault_days = 30\n\
             janitor_interval = \"5m\"\n",
        );
        let config = CollectorConfig::load(Some(file.path()), &EnvSource::empty()).unwrap();
        assert_eq!(config.http.listen.to_string(), "127.0.0.1:9001");
        assert_eq!(config.retention.default_days, 30);
        assert_eq!(config.retention.janitor_interval, Duration::from_secs(300));
        assert_eq!(config.grpc.listen.to_string(), "127.0.0.1:8417");

        let env = EnvSource::vars([
            ("CODESTAX_COLLECTOR__HTTP__LISTEN", "127.0.0.1:9000"),
            ("CODESTAX_COLLECTOR__RETENTION__DEFAULT_DAYS", "45"),
            ("CODESTAX_COLLECTOR__INGEST__ALLOW_CUSTOM_ACTIONS", "true"),
            ("CODESTAX_COLLECTOR__LOG__FORMAT", "json"),
            ("CODESTAX_AGENT__HTTP__LISTEN", "ignored: other component"),
            ("UNRELATED", "x"),
        ]);
        let config = CollectorConfig::load(Some(file.path()), &env).unwrap();
        assert_eq!(config.http.listen.to_string(), "127.0.0.1:9000");
        assert_eq!(config.retention.default_days, 45);
        assert_eq!(config.retention.janitor_interval, Duration::from_secs(300));
        assert!(config.ingest.allow_custom_actions);
        assert_eq!(config.log.format, crate::LogFormat::Json);
    }

    #[test]
    fn env_can_set_a_whole_list_of_orgs() {
        let env = EnvSource::vars([(
            "CODESTAX_COLLECTOR__ORGS",
            r#"[{id = "acme", plan = "enterprise", retention_days = 400}, {id = "b"}]"#,
        )]);
        let config = CollectorConfig::load(Some(Path::new(EXAMPLE)), &env).unwrap();
        assert_eq!(config.orgs.len(), 2);
        assert_eq!(config.retention_days_for("acme"), 400);
        assert_eq!(config.orgs[1].plan, Plan::Free);

        let env = EnvSource::vars([(
            "CODESTAX_COLLECTOR__ORGS",
            r#"[{id = "b", plan = "team", retention_days = 5}]"#,
        )]);
        let msg = CollectorConfig::load(None, &env).unwrap_err().to_string();
        assert!(
            msg.starts_with(
                "collector.orgs[0].retention_days: extended retention needs the enterprise plan"
            ),
            "{msg}"
        );
        assert!(
            msg.ends_with("(in environment variable CODESTAX_COLLECTOR__ORGS)"),
            "{msg}"
        );
    }

    #[test]
    fn data_dir_flag_overrides_everything() {
        let env = EnvSource::vars([("CODESTAX_COLLECTOR__DATA_DIR", "/from/env")]);
        let config = CollectorConfig::load(None, &env).unwrap();
        assert_eq!(config.data_dir, Path::new("/from/env"));
        let config = config.with_data_dir("/from/flag");
        assert_eq!(config.data_dir, Path::new("/from/flag"));
    }

    #[test]
    fn unknown_key_names_key_file_line_and_valid_keys() {
        let (msg, file) = load_err(
            "data_dir = \"x\"\n\n[htpp]\nlisten = \"127.0.0.1:1\"\n",
            &[],
        );
        let path = file.path().display();
        assert_eq!(msg.lines().count(), 1, "{msg}");
        assert!(
            msg.starts_with("collector.htpp: unknown key (did you mean \"http\"?), expected one of: data_dir, http, grpc,"),
            "{msg}"
        );
        assert!(msg.ends_with(&format!("(in {path}, line 3)")), "{msg}");
    }

    #[test]
    fn unknown_nested_key_and_env_typo() {
        let (msg, file) = load_err(
            "[retention]\ndefault_days = 30\ndefualt_days = 31\n",
            &[("CODESTAX_COLLECTOR__HTTP__LISTN", "127.0.0.1:1")],
        );
        let path = file.path().display();
        let lines: Vec<&str> = msg.lines().collect();
        assert_eq!(lines.len(), 2, "{msg}");
        assert!(
            lines.iter().any(
                |l| l.starts_with("collector.retention.defualt_days: unknown key")
                    && l.ends_with(&format!("(in {path}, line 3)"))
            ),
            "{msg}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("collector.http.listn: unknown key")
                    && l.ends_with("(in environment variable CODESTAX_COLLECTOR__HTTP__LISTN)")),
            "{msg}"
        );
    }

    #[test]
    fn wrong_types_are_all_reported() {
        let (msg, file) = load_err(
            "[retention]\ndefault_days = \"ninety\"\njanitor_interval = \"soon\"\n\
             [http]\nlisten = \"localhost:80\"\n",
            &[],
        );
        let path = file.path().display();
        let lines: Vec<&str> = msg.lines().collect();
        assert_eq!(lines.len(), 3, "{msg}");
        assert!(lines.contains(&format!(
            "collector.retention.default_days: invalid type: found string \"ninety\", expected u32 (in {path}, line 2)"
        ).as_str()), "{msg}");
        assert!(
            msg.contains(&format!(
                "collector.retention.janitor_interval: invalid value: found string \"soon\", expected a duration (in {path}, line 3)"
            )),
            "{msg}"
        );
        assert!(
            msg.contains("collector.http.listen: invalid socket address syntax (expected IP:PORT, e.g. 127.0.0.1:8470), got \"localhost:80\""),
            "{msg}"
        );
    }

    #[test]
    fn out_of_range_names_key_range_value_and_source() {
        let (msg, file) = load_err(
            "[retention]\ndefault_days = 0\n[index]\nwriter_memory_bytes = 1000\n\
             commit_interval = \"2m\"\n[limits]\nmax_decompressed_bytes = 1024\n",
            &[
                ("CODESTAX_COLLECTOR__INGEST__MAX_RECORD_BYTES", "10"),
                ("CODESTAX_COLLECTOR__INDEX__WRITER_THREADS", "0"),
                ("CODESTAX_COLLECTOR__INDEX__MERGE_THREADS", "9"),
            ],
        );
        let path = file.path().display();
        let lines: Vec<&str> = msg.lines().collect();
        assert_eq!(lines.len(), 7, "{msg}");
        assert!(msg.contains(
            "collector.index.writer_threads: must be between 1 and 8, got 0 (in environment variable CODESTAX_COLLECTOR__INDEX__WRITER_THREADS)"
        ), "{msg}");
        assert!(msg.contains(
            "collector.index.merge_threads: must be between 1 and 8, got 9 (in environment variable CODESTAX_COLLECTOR__INDEX__MERGE_THREADS)"
        ), "{msg}");
        assert!(lines.contains(&format!(
            "collector.retention.default_days: must be between 1 and 3650, got 0 (in {path}, line 2)"
        ).as_str()), "{msg}");
        assert!(msg.contains(&format!(
            "collector.index.writer_memory_bytes: must be between 15000000 and 3221225472 (3 GiB) bytes, got 1000 (in {path}, line 4)"
        )), "{msg}");
        assert!(msg.contains(&format!(
            "collector.index.commit_interval: must be between 1ms and 1m, got 2m (in {path}, line 5)"
        )), "{msg}");
        assert!(msg.contains(
            "collector.limits.max_decompressed_bytes: must be at least limits.max_body_bytes (16777216), got 1024"
        ), "{msg}");
        assert!(msg.contains(
            "collector.ingest.max_record_bytes: must be between 1024 (1 KiB) and 16777216 (16 MiB) bytes, got 10 (in environment variable CODESTAX_COLLECTOR__INGEST__MAX_RECORD_BYTES)"
        ), "{msg}");
    }

    #[test]
    fn writer_memory_above_what_tantivy_takes_names_the_key() {
        let (msg, _file) = load_err(
            "",
            &[(
                "CODESTAX_COLLECTOR__INDEX__WRITER_MEMORY_BYTES",
                "4294967296",
            )],
        );
        assert_eq!(
            msg.trim(),
            "collector.index.writer_memory_bytes: must be between 15000000 and 3221225472 (3 GiB) bytes, got 4294967296 (in environment variable CODESTAX_COLLECTOR__INDEX__WRITER_MEMORY_BYTES)"
        );
    }

    #[test]
    fn missing_file_is_an_error() {
        let err =
            CollectorConfig::load(Some(Path::new("/nope.toml")), &EnvSource::empty()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "collector config file /nope.toml: not found"
        );
    }

    #[test]
    fn toml_syntax_error_names_file_and_line() {
        let (msg, file) = load_err("[http]\nlisten = \n", &[]);
        let path = file.path().display();
        assert!(
            msg.starts_with(&format!(
                "collector config file {path}: invalid TOML at line 2"
            )),
            "{msg}"
        );
    }

    #[test]
    fn retention_days_needs_enterprise() {
        let (msg, file) = load_err(
            "[[orgs]]\nid = \"a\"\nplan = \"enterprise\"\nretention_days = 365\n\n\
             [[orgs]]\nid = \"b\"\n\n[[orgs]]\nid = \"c\"\nplan = \"team\"\nretention_days = 400\n",
            &[],
        );
        let path = file.path().display();
        assert_eq!(
            msg,
            format!(
                "collector.orgs[2].retention_days: extended retention needs the enterprise plan, \
                 but org \"c\" has plan \"team\"; remove retention_days or set plan = \
                 \"enterprise\" (in {path}, line 12)"
            )
        );
    }

    #[test]
    fn org_problems_duplicate_id_bad_plan_and_missing_id() {
        let (msg, file) = load_err(
            "[[orgs]]\nid = \"acme\"\n\n[[orgs]]\nid = \"acme\"\n\n[[orgs]]\nname = \"No id\"\n\n\
             [[orgs]]\nid = \"x\"\nplan = \"premium\"\n\n[[orgs]]\nid = \"bad id\"\n\
             plan = \"enterprise\"\nretention_days = 4000\n",
            &[],
        );
        let path = file.path().display();
        let lines: Vec<&str> = msg.lines().collect();
        assert_eq!(lines.len(), 5, "{msg}");
        assert!(
            msg.contains(&format!(
                "collector.orgs[1].id: duplicate org id \"acme\" (also orgs[0]) (in {path}, line 5)"
            )),
            "{msg}"
        );
        assert!(
            msg.contains(&format!(
                "collector.orgs[2].id: is required (in {path}, line 7)"
            )),
            "{msg}"
        );
        assert!(msg.contains(&format!(
            "collector.orgs[3].plan: unknown value \"premium\", expected one of: free, team, enterprise (in {path}, line 12)"
        )), "{msg}");
        assert!(
            msg.contains(
                "collector.orgs[4].id: must be 1 to 64 of A-Z a-z 0-9 _ . -, got \"bad id\""
            ),
            "{msg}"
        );
        assert!(msg.contains(&format!(
            "collector.orgs[4].retention_days: must be between 1 and 3650, got 4000 (in {path}, line 17)"
        )), "{msg}");
    }

    #[test]
    fn collector_must_keep_off_the_agent_ports() {
        let env = EnvSource::vars([("CODESTAX_COLLECTOR__GRPC__LISTEN", "0.0.0.0:4317")]);
        let msg = CollectorConfig::load(None, &env).unwrap_err().to_string();
        assert!(
            msg.starts_with("collector.grpc.listen: port 4317 is the agent's OTLP port"),
            "{msg}"
        );
        assert!(
            msg.ends_with("(in environment variable CODESTAX_COLLECTOR__GRPC__LISTEN)"),
            "{msg}"
        );

        let env = EnvSource::vars([("CODESTAX_COLLECTOR__GRPC__LISTEN", "0.0.0.0:8470")]);
        let msg = CollectorConfig::load(None, &env).unwrap_err().to_string();
        assert!(
            msg.starts_with("collector.grpc.listen: 0.0.0.0:8470 collides with http.listen"),
            "{msg}"
        );
    }

    #[test]
    fn ingest_rate_limits_are_checked_naming_key_and_file() {
        let (msg, file) = load_err(
            "[limits]\ningest_burst_records_per_key = 10\n\
             ingest_records_per_second_per_org = 20000000\n",
            &[("CODESTAX_COLLECTOR__METRICS__LISTEN", "127.0.0.1:8470")],
        );
        let path = file.path().display();
        let lines: Vec<&str> = msg.lines().collect();
        assert_eq!(lines.len(), 3, "{msg}");
        assert!(
            lines.contains(
                &format!(
                    "collector.limits.ingest_burst_records_per_key: has no effect while \
             limits.ingest_records_per_second_per_key is 0 (no limit); set both or neither \
             (in {path}, line 2)"
                )
                .as_str()
            ),
            "{msg}"
        );
        assert!(lines.contains(&format!(
            "collector.limits.ingest_records_per_second_per_org: must be between 0 and 10000000, \
             got 20000000 (in {path}, line 3)"
        ).as_str()), "{msg}");
        assert!(
            msg.contains("collector.metrics.listen: 127.0.0.1:8470 collides with http.listen"),
            "{msg}"
        );

        let file = toml_file(
            "[limits]\ningest_records_per_second_per_key = 100\n\
             ingest_burst_records_per_key = 500\n[metrics]\nper_org = true\n",
        );
        let config = CollectorConfig::load(Some(file.path()), &EnvSource::empty()).unwrap();
        assert_eq!(config.limits.ingest_records_per_second_per_key, 100);
        assert_eq!(config.limits.ingest_burst_records_per_key, 500);
        assert!(config.metrics.per_org);
        let summary = config.summary();
        assert!(summary.contains("100 records/s"), "{summary}");
        assert!(summary.contains("500 records"), "{summary}");
    }

    #[test]
    fn summary_lists_effective_values() {
        let config = CollectorConfig::load(Some(Path::new(EXAMPLE)), &EnvSource::empty()).unwrap();
        let summary = config.summary();
        assert!(summary.contains("retention.default_days"), "{summary}");
        assert!(summary.contains("orgs[0]"), "{summary}");
        assert!(summary.contains("acme"), "{summary}");
        assert!(summary.contains("16777216 (16 MiB)"), "{summary}");
        // One screen: a row per key, no more.
        assert!(summary.lines().count() < 48, "{summary}");
    }
}
