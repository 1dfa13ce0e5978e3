//! The agent's configuration: where to forward, what files to tail, OTLP and API listeners, the
//! spool, batching, retries and logging.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::check::{Checker, GIB, KIB, MIB, bytes, duration, is_valid_org_id};
use crate::error::{Component, ConfigError};
use crate::load::{self, EnvSource, Settings};
use crate::logging::LogConfig;
use crate::summary::Summary;

/// Everything `codestax-agent` reads at start-up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Directory for checkpoints, the spool and quarantined lines.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// `[collector]`: where records are forwarded.
    #[serde(default)]
    pub collector: UpstreamConfig,
    /// `[sources]`: files to tail.
    #[serde(default)]
    pub sources: SourcesConfig,
    /// `[otlp]`: OTLP receivers for applications that log through OpenTelemetry.
    #[serde(default)]
    pub otlp: OtlpConfig,
    /// `[api]`: `/healthz` and `/metrics`.
    #[serde(default)]
    pub api: ApiConfig,
    /// `[spool]`: the on-disk buffer records wait in until the collector has them.
    #[serde(default)]
    pub spool: SpoolConfig,
    /// `[batch]`: how records are grouped into requests.
    #[serde(default)]
    pub batch: BatchConfig,
    /// `[retry]`: backoff after a failed send.
    #[serde(default)]
    pub retry: RetryConfig,
    /// `[discovery]`: finding new files that match the globs.
    #[serde(default)]
    pub discovery: DiscoveryConfig,
    /// `[log]`: the agent's own diagnostics.
    #[serde(default)]
    pub log: LogConfig,
}

/// `[collector]`: the collector this agent forwards to.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// The collector's OTLP/gRPC endpoint, `http://HOST:PORT` or `https://HOST:PORT`.
    #[serde(default = "default_endpoint")]
    pub endpoint: String,
    /// Bearer token sent with every request (optional; never printed).
    #[serde(default)]
    pub token: Option<String>,
    /// How requests are compressed: `auto` (none for a loopback endpoint, else gzip), `gzip`
    /// (level 1) or `none`.
    #[serde(default)]
    pub compression: Compression,
    /// `[collector.tls]`
    #[serde(default)]
    pub tls: TlsConfig,
}

/// `collector.compression`: how the agent compresses its requests to the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// `none` when the endpoint is a loopback address (`localhost`, `127.0.0.0/8`, `::1`),
    /// else `gzip`.
    #[default]
    Auto,
    /// gzip at level 1: a fraction of the bytes on the wire, for CPU on both ends.
    Gzip,
    /// Uncompressed: the least CPU, for a collector on the same host or a fast link.
    None,
}

impl Compression {
    /// The name used in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::Auto => "auto",
            Compression::Gzip => "gzip",
            Compression::None => "none",
        }
    }

    /// `Gzip` or `None`: what `Auto` means for `endpoint`.
    pub fn for_endpoint(self, endpoint: &str) -> Compression {
        match self {
            Compression::Auto if is_loopback_endpoint(endpoint) => Compression::None,
            Compression::Auto => Compression::Gzip,
            other => other,
        }
    }
}

/// Whether an `http(s)://HOST[:PORT]` endpoint names this host: `localhost`, `127.0.0.0/8`
/// or `::1`.
fn is_loopback_endpoint(endpoint: &str) -> bool {
    let rest = endpoint
        .strip_prefix("https://")
        .or_else(|| endpoint.strip_prefix("http://"))
        .unwrap_or(endpoint);
    let authority = rest.split('/').next().unwrap_or_default();
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.split(':').next().unwrap_or_default(),
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

// The token is a secret: Debug shows only whether it is set.
impl fmt::Debug for UpstreamConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamConfig")
            .field("endpoint", &self.endpoint)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("compression", &self.compression)
            .field("tls", &self.tls)
            .finish()
    }
}

/// `[collector.tls]`
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Use TLS. Turned on when `endpoint` starts with `https://`.
    #[serde(default)]
    pub enabled: bool,
    /// PEM file with the CA certificate(s) to trust instead of the system roots (must exist).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Name to verify the collector's certificate against, when it differs from the endpoint's
    /// host.
    #[serde(default)]
    pub server_name: Option<String>,
}

/// `[sources]`
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourcesConfig {
    /// `[[sources.files]]`: groups of files to tail.
    #[serde(default)]
    pub files: Vec<FileSourceConfig>,
}

/// One `[[sources.files]]` entry: files of JSON lines, one audit record each.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSourceConfig {
    /// Glob patterns of files to tail (at least one; e.g. `/var/log/app/audit-*.jsonl`).
    #[serde(default)]
    pub include: Vec<String>,
    /// Glob patterns of files to skip even when included.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Organisation to stamp on records that carry none (1 to 64 of `A-Z a-z 0-9 _ . -`).
    #[serde(default)]
    pub org_id: Option<String>,
    /// Longest line accepted, in bytes; longer lines are quarantined (1 KiB to 64 MiB).
    #[serde(default = "default_max_line_bytes")]
    pub max_line_bytes: usize,
    /// Bytes from the start of a file used to recognise it across renames (16 to 4096).
    #[serde(default = "default_fingerprint_bytes")]
    pub fingerprint_bytes: usize,
}

/// `[otlp]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpConfig {
    /// Run the OTLP receivers.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// OTLP/gRPC address (`IP:PORT`).
    #[serde(default = "default_otlp_grpc_listen")]
    pub grpc_listen: SocketAddr,
    /// OTLP/HTTP address (`IP:PORT`), serving `/v1/logs`.
    #[serde(default = "default_otlp_http_listen")]
    pub http_listen: SocketAddr,
}

/// `[api]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Address for `/healthz` and `/metrics` (`IP:PORT`).
    #[serde(default = "default_api_listen")]
    pub listen: SocketAddr,
}

/// `[spool]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpoolConfig {
    /// Most disk the spool may use, in bytes (at least 1 MiB); when full, intake pauses.
    #[serde(default = "default_spool_max_bytes")]
    pub max_bytes: u64,
    /// Size of one spool segment file, in bytes (at least 64 KiB, less than `max_bytes`).
    #[serde(default = "default_spool_segment_bytes")]
    pub segment_bytes: u64,
}

/// `[batch]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    /// Most records per request (1 to 10000).
    #[serde(default = "default_batch_max_records")]
    pub max_records: u32,
    /// Most bytes per request before compression (1 KiB to 64 MiB; keep it under the
    /// collector's `limits.max_body_bytes`).
    #[serde(default = "default_batch_max_bytes")]
    pub max_bytes: usize,
    /// Longest a record waits for its batch to fill (duration, 1ms to 60s).
    #[serde(default = "default_batch_max_wait", with = "humantime_serde")]
    pub max_wait: Duration,
    /// Most requests on their way to the collector at once (1 to 64). The spool is
    /// acknowledged in order: only up to the oldest request not yet answered.
    #[serde(default = "default_batch_max_in_flight")]
    pub max_in_flight: u32,
}

/// The longest the agent ever waits between two attempts to send: the ceiling of
/// `retry.max_backoff`, and of a wait the collector asks for.
pub const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(30);

/// `[retry]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Wait after the first failure; doubles on each further failure (duration, 1ms to 30s).
    #[serde(default = "default_initial_backoff", with = "humantime_serde")]
    pub initial_backoff: Duration,
    /// Longest wait between attempts (duration, at least `initial_backoff`, at most 30s:
    /// [`MAX_RETRY_BACKOFF`]).
    /// Records are never dropped: the agent retries until the collector takes them.
    #[serde(default = "default_max_backoff", with = "humantime_serde")]
    pub max_backoff: Duration,
}

/// `[discovery]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscoveryConfig {
    /// How often globs are re-expanded to find new files, besides file-system events
    /// (duration, 100ms to 1h).
    #[serde(default = "default_rescan_interval", with = "humantime_serde")]
    pub rescan_interval: Duration,
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("./codestax-data/agent")
}
fn default_endpoint() -> String {
    "http://127.0.0.1:8417".to_string()
}
fn default_true() -> bool {
    true
}
fn default_max_line_bytes() -> usize {
    MIB as usize
}
fn default_fingerprint_bytes() -> usize {
    256
}
fn default_otlp_grpc_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 4317))
}
fn default_otlp_http_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 4318))
}
fn default_api_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8471))
}
fn default_spool_max_bytes() -> u64 {
    256 * MIB
}
fn default_spool_segment_bytes() -> u64 {
    8 * MIB
}
fn default_batch_max_records() -> u32 {
    1000
}
fn default_batch_max_bytes() -> usize {
    4 * MIB as usize
}
fn default_batch_max_wait() -> Duration {
    Duration::from_secs(1)
}
fn default_batch_max_in_flight() -> u32 {
    4
}
fn default_initial_backoff() -> Duration {
    Duration::from_millis(100)
}
fn default_max_backoff() -> Duration {
    Duration::from_secs(30)
}
fn default_rescan_interval() -> Duration {
    Duration::from_secs(10)
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            data_dir: default_data_dir(),
            collector: UpstreamConfig::default(),
            sources: SourcesConfig::default(),
            otlp: OtlpConfig::default(),
            api: ApiConfig::default(),
            spool: SpoolConfig::default(),
            batch: BatchConfig::default(),
            retry: RetryConfig::default(),
            discovery: DiscoveryConfig::default(),
            log: LogConfig::default(),
        }
    }
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            endpoint: default_endpoint(),
            token: None,
            compression: Compression::default(),
            tls: TlsConfig::default(),
        }
    }
}

impl Default for FileSourceConfig {
    fn default() -> Self {
        FileSourceConfig {
            include: Vec::new(),
            exclude: Vec::new(),
            org_id: None,
            max_line_bytes: default_max_line_bytes(),
            fingerprint_bytes: default_fingerprint_bytes(),
        }
    }
}

impl Default for OtlpConfig {
    fn default() -> Self {
        OtlpConfig {
            enabled: true,
            grpc_listen: default_otlp_grpc_listen(),
            http_listen: default_otlp_http_listen(),
        }
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: default_api_listen(),
        }
    }
}

impl Default for SpoolConfig {
    fn default() -> Self {
        SpoolConfig {
            max_bytes: default_spool_max_bytes(),
            segment_bytes: default_spool_segment_bytes(),
        }
    }
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_records: default_batch_max_records(),
            max_bytes: default_batch_max_bytes(),
            max_wait: default_batch_max_wait(),
            max_in_flight: default_batch_max_in_flight(),
        }
    }
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            initial_backoff: default_initial_backoff(),
            max_backoff: default_max_backoff(),
        }
    }
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        DiscoveryConfig {
            rescan_interval: default_rescan_interval(),
        }
    }
}

impl AgentConfig {
    /// Loads defaults < `file` (must exist when given) < `CODESTAX_AGENT__*` variables from
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

    /// Effective settings, one `key  value` line each, for `--check-config`. The token is shown
    /// only as `<set>` or `<not set>`.
    pub fn summary(&self) -> String {
        let mut s = Summary::default();
        let tls = &self.collector.tls;
        s.row("data_dir", self.data_dir.display())
            .row("collector.endpoint", &self.collector.endpoint)
            .row(
                "collector.token",
                if self.collector.token.is_some() {
                    "<set>"
                } else {
                    "<not set>"
                },
            )
            .row("collector.compression", {
                let c = self.collector.compression;
                match c {
                    Compression::Auto => format!(
                        "auto ({} for this endpoint)",
                        c.for_endpoint(&self.collector.endpoint).as_str()
                    ),
                    _ => c.as_str().to_string(),
                }
            })
            .row("collector.tls.enabled", tls.enabled)
            .row(
                "collector.tls.ca_file",
                tls.ca_file
                    .as_ref()
                    .map_or("<system roots>".to_string(), |p| p.display().to_string()),
            )
            .row(
                "collector.tls.server_name",
                tls.server_name.as_deref().unwrap_or("<from endpoint>"),
            );
        if self.sources.files.is_empty() {
            s.row("sources.files", "(none)");
        }
        for (i, files) in self.sources.files.iter().enumerate() {
            let mut value = files.include.join(", ");
            if !files.exclude.is_empty() {
                value.push_str(&format!(" excluding {}", files.exclude.join(", ")));
            }
            if let Some(org) = &files.org_id {
                value.push_str(&format!("; org {org}"));
            }
            value.push_str(&format!(
                "; max line {}; fingerprint {} bytes",
                bytes(files.max_line_bytes as u64),
                files.fingerprint_bytes
            ));
            s.row(format!("sources.files[{i}]"), value);
        }
        s.row("otlp.enabled", self.otlp.enabled)
            .row("otlp.grpc_listen", self.otlp.grpc_listen)
            .row("otlp.http_listen", self.otlp.http_listen)
            .row("api.listen", self.api.listen)
            .row("spool.max_bytes", bytes(self.spool.max_bytes))
            .row("spool.segment_bytes", bytes(self.spool.segment_bytes))
            .row("batch.max_records", self.batch.max_records)
            .row("batch.max_bytes", bytes(self.batch.max_bytes as u64))
            .row("batch.max_wait", duration(self.batch.max_wait))
            .row("batch.max_in_flight", self.batch.max_in_flight)
            .row(
                "retry.initial_backoff",
                duration(self.retry.initial_backoff),
            )
            .row("retry.max_backoff", duration(self.retry.max_backoff))
            .row(
                "discovery.rescan_interval",
                duration(self.discovery.rescan_interval),
            )
            .row("log.format", self.log.format.as_str())
            .row("log.level", &self.log.level);
        s.render()
    }
}

impl Settings for AgentConfig {
    const COMPONENT: Component = Component::Agent;
    const VERBATIM_ENV_KEYS: &'static [&'static str] = &[
        "data_dir",
        "collector.endpoint",
        "collector.token",
        "collector.tls.ca_file",
        "collector.tls.server_name",
        "log.level",
    ];

    fn normalize(&mut self) {
        if self.collector.endpoint.starts_with("https://") {
            self.collector.tls.enabled = true;
        }
    }

    fn check(&self, c: &mut Checker) {
        if self.data_dir.as_os_str().is_empty() {
            c.fail("data_dir", "must not be empty");
        }

        let endpoint = &self.collector.endpoint;
        match endpoint
            .strip_prefix("https://")
            .or_else(|| endpoint.strip_prefix("http://"))
        {
            None => c.fail(
                "collector.endpoint",
                format!("must start with http:// or https://, got {endpoint:?}"),
            ),
            Some(rest) if rest.is_empty() || rest.starts_with('/') || rest.starts_with(':') => c
                .fail(
                    "collector.endpoint",
                    format!("has no host, got {endpoint:?}"),
                ),
            Some(_) => {}
        }
        if self.collector.tls.enabled && endpoint.starts_with("http://") {
            c.fail(
                "collector.tls.enabled",
                format!(
                    "is true but collector.endpoint {endpoint:?} is plain http://; use https://"
                ),
            );
        }
        if let Some(token) = &self.collector.token
            && token.trim().is_empty()
        {
            c.fail(
                "collector.token",
                "must not be empty (leave it unset to send no token)",
            );
        }
        if let Some(ca_file) = &self.collector.tls.ca_file
            && !ca_file.is_file()
        {
            c.fail(
                "collector.tls.ca_file",
                format!("{} does not exist or is not a file", ca_file.display()),
            );
        }
        if let Some(name) = &self.collector.tls.server_name {
            c.non_empty("collector.tls.server_name", name);
        }

        for (i, files) in self.sources.files.iter().enumerate() {
            let key = |field: &str| format!("sources.files.{i}.{field}");
            if files.include.is_empty() {
                c.fail(
                    &key("include"),
                    "must list at least one glob, e.g. include = [\"/var/log/app/*.jsonl\"]",
                );
            }
            for (field, globs) in [("include", &files.include), ("exclude", &files.exclude)] {
                for (j, glob) in globs.iter().enumerate() {
                    if glob.trim().is_empty() {
                        c.fail(&format!("{}.{j}", key(field)), "glob must not be empty");
                    } else if glob.ends_with('/') {
                        c.fail(
                            &format!("{}.{j}", key(field)),
                            format!(
                                "glob {glob:?} names a directory; match files, e.g. \"{glob}*.jsonl\""
                            ),
                        );
                    }
                }
            }
            if let Some(org) = &files.org_id
                && !is_valid_org_id(org)
            {
                c.fail(
                    &key("org_id"),
                    format!("must be 1 to 64 of A-Z a-z 0-9 _ . -, got {org:?}"),
                );
            }
            c.bytes_range(
                &key("max_line_bytes"),
                files.max_line_bytes as u64,
                KIB,
                64 * MIB,
            );
            c.range(&key("fingerprint_bytes"), files.fingerprint_bytes, 16, 4096);
        }

        let mut listeners = vec![("api.listen", self.api.listen)];
        if self.otlp.enabled {
            listeners.push(("otlp.grpc_listen", self.otlp.grpc_listen));
            listeners.push(("otlp.http_listen", self.otlp.http_listen));
        }
        c.distinct_listeners(&listeners);

        c.bytes_at_least("spool.max_bytes", self.spool.max_bytes, MIB, "");
        if self.spool.segment_bytes >= self.spool.max_bytes {
            c.fail_against(
                "spool.segment_bytes",
                "spool.max_bytes",
                format!(
                    "must be less than spool.max_bytes ({}), got {}",
                    self.spool.max_bytes, self.spool.segment_bytes
                ),
            );
        } else {
            c.bytes_range(
                "spool.segment_bytes",
                self.spool.segment_bytes,
                64 * KIB,
                GIB,
            );
        }

        c.range("batch.max_records", self.batch.max_records, 1, 10_000);
        c.bytes_range(
            "batch.max_bytes",
            self.batch.max_bytes as u64,
            KIB,
            64 * MIB,
        );
        c.duration_range(
            "batch.max_wait",
            self.batch.max_wait,
            Duration::from_millis(1),
            Duration::from_secs(60),
        );
        c.range("batch.max_in_flight", self.batch.max_in_flight, 1, 64);

        c.duration_range(
            "retry.initial_backoff",
            self.retry.initial_backoff,
            Duration::from_millis(1),
            MAX_RETRY_BACKOFF,
        );
        if self.retry.max_backoff < self.retry.initial_backoff {
            c.fail_against(
                "retry.max_backoff",
                "retry.initial_backoff",
                format!(
                    "must be at least retry.initial_backoff ({}), got {}",
                    duration(self.retry.initial_backoff),
                    duration(self.retry.max_backoff)
                ),
            );
        } else {
            c.duration_range(
                "retry.max_backoff",
                self.retry.max_backoff,
                Duration::from_millis(1),
                MAX_RETRY_BACKOFF,
            );
        }

        c.duration_range(
            "discovery.rescan_interval",
            self.discovery.rescan_interval,
            Duration::from_millis(100),
            Duration::from_secs(3600),
        );

        self.log.check(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/agent.toml");

    fn toml_file(text: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
        file.write_all(text.as_bytes()).unwrap();
        file
    }

    #[test]
    fn defaults() {
        let config = AgentConfig::load(None, &EnvSource::empty()).unwrap();
        assert_eq!(config, AgentConfig::default());
        assert_eq!(config.data_dir, Path::new("./codestax-data/agent"));
        assert_eq!(config.collector.endpoint, "http://127.0.0.1:8417");
        assert_eq!(config.collector.token, None);
        assert!(!config.collector.tls.enabled);
        assert!(config.otlp.enabled);
        assert_eq!(config.otlp.grpc_listen.to_string(), "127.0.0.1:4317");
        assert_eq!(config.otlp.http_listen.to_string(), "127.0.0.1:4318");
        assert_eq!(config.api.listen.to_string(), "127.0.0.1:8471");
        assert_eq!(config.spool.max_bytes, 256 << 20);
        assert_eq!(config.spool.segment_bytes, 8 << 20);
        assert_eq!(config.batch.max_records, 1000);
        assert_eq!(config.batch.max_bytes, 4 << 20);
        assert_eq!(config.batch.max_wait, Duration::from_secs(1));
        assert_eq!(config.batch.max_in_flight, 4);
        assert_eq!(config.collector.compression, Compression::Auto);
        assert_eq!(config.retry.initial_backoff, Duration::from_millis(100));
        assert_eq!(config.retry.max_backoff, Duration::from_secs(30));
        assert_eq!(config.discovery.rescan_interval, Duration::from_secs(10));
        config.validate().unwrap();
    }

    #[test]
    fn example_file_parses_without_problems() {
        let config = AgentConfig::load(Some(Path::new(EXAMPLE)), &EnvSource::empty())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.sources.files.len(), 1);
        let files = &config.sources.files[0];
        assert_eq!(files.include, ["examples/emit/*.jsonl"]);
        assert_eq!(files.org_id.as_deref(), Some("acme"));
    }

    #[test]
    fn example_file_sets_every_key() {
        let text = std::fs::read_to_string(EXAMPLE).unwrap();
        for key in [
            "data_dir",
            "[collector]",
            "endpoint",
            "token",
            "compression",
            "[collector.tls]",
            "enabled",
            "ca_file",
            "server_name",
            "[[sources.files]]",
            "include",
            "exclude",
            "org_id",
            "max_line_bytes",
            "fingerprint_bytes",
            "[otlp]",
            "grpc_listen",
            "http_listen",
            "[api]",
            "listen",
            "[spool]",
            "max_bytes",
            "segment_bytes",
            "[batch]",
            "max_records",
            "max_wait",
            "max_in_flight",
            "[retry]",
            "initial_backoff",
            "max_backoff",
            "[discovery]",
            "rescan_interval",
            "[log]",
            "format",
            "level",
        ] {
            assert!(text.contains(key), "{key} missing from examples/agent.toml");
        }
    }

    #[test]
    fn env_overrides_toml() {
        let file = toml_file(
            "[collector]\nendpoint = \"http://10.0.0.1:8417\"\ntoken = \"from-file\"\n\
             [batch]\nmax_records = 10\n",
        );
        let env = EnvSource::vars([
            ("CODESTAX_AGENT__COLLECTOR__TOKEN", "007"),
            ("CODESTAX_AGENT__BATCH__MAX_RECORDS", "20"),
            ("CODESTAX_AGENT__OTLP__ENABLED", "false"),
            (
                "CODESTAX_AGENT__COLLECTOR__ENDPOINT",
                "https://collector.example:8417",
            ),
        ]);
        let config = AgentConfig::load(Some(file.path()), &env).unwrap();
        assert_eq!(config.collector.token.as_deref(), Some("007"));
        assert_eq!(config.batch.max_records, 20);
        assert!(!config.otlp.enabled);
        assert_eq!(config.collector.endpoint, "https://collector.example:8417");
        assert!(config.collector.tls.enabled, "https endpoint turns TLS on");
    }

    #[test]
    fn data_dir_flag_overrides() {
        let config = AgentConfig::load(None, &EnvSource::empty())
            .unwrap()
            .with_data_dir("/var/lib/codestax-agent");
        assert_eq!(config.data_dir, Path::new("/var/lib/codestax-agent"));
    }

    #[test]
    fn wrong_type_in_env_names_the_variable() {
        let env = EnvSource::vars([("CODESTAX_AGENT__BATCH__MAX_RECORDS", "abc")]);
        let err = AgentConfig::load(None, &env).unwrap_err();
        assert_eq!(
            err.to_string(),
            "agent.batch.max_records: invalid type: found string \"abc\", expected u32 \
             (in environment variable CODESTAX_AGENT__BATCH__MAX_RECORDS)"
        );
    }

    #[test]
    fn every_problem_at_once() {
        let file = toml_file(
            "[collector]\nendpoint = \"grpc://x\"\ntoken = \"\"\n\
             [collector.tls]\nca_file = \"/definitely/not/here.pem\"\n\n\
             [[sources.files]]\ninclude = []\nexclude = [\"\", \"/var/log/\"]\norg_id = \"a b\"\n\
             fingerprint_bytes = 8\n\n\
             [spool]\nmax_bytes = 1048576\nsegment_bytes = 2097152\n\
             [batch]\nmax_records = 0\n[retry]\ninitial_backoff = \"10s\"\nmax_backoff = \"1s\"\n\
             [otlp]\nhttp_listen = \"127.0.0.1:4317\"\n",
        );
        let env = EnvSource::vars([("CODESTAX_AGENT__BATCH__MAX_WAIT", "0s")]);
        let msg = AgentConfig::load(Some(file.path()), &env)
            .unwrap_err()
            .to_string();
        let path = file.path().display();
        for expected in [
            format!("agent.collector.endpoint: must start with http:// or https://, got \"grpc://x\" (in {path}, line 2)"),
            format!("agent.collector.token: must not be empty (leave it unset to send no token) (in {path}, line 3)"),
            format!("agent.collector.tls.ca_file: /definitely/not/here.pem does not exist or is not a file (in {path}, line 5)"),
            format!("agent.sources.files[0].include: must list at least one glob, e.g. include = [\"/var/log/app/*.jsonl\"] (in {path}, line 8)"),
            format!("agent.sources.files[0].exclude[0]: glob must not be empty (in {path}, line 9)"),
            format!("agent.sources.files[0].exclude[1]: glob \"/var/log/\" names a directory; match files, e.g. \"/var/log/*.jsonl\" (in {path}, line 9)"),
            format!("agent.sources.files[0].org_id: must be 1 to 64 of A-Z a-z 0-9 _ . -, got \"a b\" (in {path}, line 10)"),
            format!("agent.sources.files[0].fingerprint_bytes: must be between 16 and 4096, got 8 (in {path}, line 11)"),
            format!("agent.otlp.http_listen: 127.0.0.1:4317 collides with otlp.grpc_listen (127.0.0.1:4317); use another port (in {path}, line 22)"),
            format!("agent.spool.segment_bytes: must be less than spool.max_bytes (1048576), got 2097152 (in {path}, line 15)"),
            format!("agent.batch.max_records: must be between 1 and 10000, got 0 (in {path}, line 17)"),
            "agent.batch.max_wait: must be between 1ms and 1m, got 0s (in environment variable CODESTAX_AGENT__BATCH__MAX_WAIT)".to_string(),
            format!("agent.retry.max_backoff: must be at least retry.initial_backoff (10s), got 1s (in {path}, line 20)"),
        ] {
            assert!(msg.lines().any(|l| l == expected), "missing:\n{expected}\nin:\n{msg}");
        }
        assert_eq!(msg.lines().count(), 13, "{msg}");
    }

    #[test]
    fn auto_compression_is_none_for_loopback_endpoints_only() {
        for (endpoint, want) in [
            ("http://127.0.0.1:8417", Compression::None),
            ("http://127.3.2.1:8417/", Compression::None),
            ("https://localhost:8417", Compression::None),
            ("http://LOCALHOST", Compression::None),
            ("http://[::1]:8417", Compression::None),
            ("http://10.0.0.7:8417", Compression::Gzip),
            ("https://collector.example:8417", Compression::Gzip),
            ("http://[2001:db8::1]:8417", Compression::Gzip),
            ("http://localhost.example:8417", Compression::Gzip),
        ] {
            assert_eq!(Compression::Auto.for_endpoint(endpoint), want, "{endpoint}");
            assert_eq!(Compression::Gzip.for_endpoint(endpoint), Compression::Gzip);
            assert_eq!(Compression::None.for_endpoint(endpoint), Compression::None);
        }
        let env = EnvSource::vars([("CODESTAX_AGENT__COLLECTOR__COMPRESSION", "none")]);
        let config = AgentConfig::load(None, &env).unwrap();
        assert_eq!(config.collector.compression, Compression::None);
        let env = EnvSource::vars([("CODESTAX_AGENT__COLLECTOR__COMPRESSION", "zstd")]);
        let err = AgentConfig::load(None, &env).unwrap_err().to_string();
        assert!(err.contains("agent.collector.compression"), "{err}");
    }

    #[test]
    fn retry_waits_are_capped_at_thirty_seconds() {
        let load = |initial: &str, max: &str| {
            let env = EnvSource::vars([
                ("CODESTAX_AGENT__RETRY__INITIAL_BACKOFF", initial),
                ("CODESTAX_AGENT__RETRY__MAX_BACKOFF", max),
            ]);
            AgentConfig::load(None, &env).map_err(|e| e.to_string())
        };
        let config = load("100ms", "30s").unwrap();
        assert_eq!(config.retry.max_backoff, MAX_RETRY_BACKOFF);
        assert_eq!(
            load("100ms", "31s").unwrap_err(),
            "agent.retry.max_backoff: must be between 1ms and 30s, got 31s \
             (in environment variable CODESTAX_AGENT__RETRY__MAX_BACKOFF)"
        );
        assert!(
            load("1m", "1h")
                .unwrap_err()
                .contains("agent.retry.initial_backoff: must be between 1ms and 30s, got 1m"),
        );
    }

    #[test]
    fn summary_redacts_the_token() {
        let env = EnvSource::vars([("CODESTAX_AGENT__COLLECTOR__TOKEN", "s3cret-value")]);
        let config = AgentConfig::load(Some(Path::new(EXAMPLE)), &env).unwrap();
        let summary = config.summary();
        assert!(!summary.contains("s3cret-value"), "{summary}");
        assert!(summary.contains("<set>"), "{summary}");
        assert!(!format!("{config:?}").contains("s3cret-value"));
        assert!(summary.contains("examples/emit/*.jsonl"), "{summary}");
        let summary = AgentConfig::default().summary();
        assert!(summary.contains("<not set>"), "{summary}");
    }
}
