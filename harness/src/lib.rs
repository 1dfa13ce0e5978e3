//! The real binaries as child processes, for the end-to-end tests (`tests/`), the agent's binary
//! tests and the benchmarks (`bench/`): a collector on free ports and its keys, an agent tailing
//! files into it, the signals that stop them, the records and emit lines they are fed, a
//! size-limited tmpfs to fill up, a test CA for TLS receivers; and the third-party servers of the
//! cluster tests (a nats-server JetStream cluster, a throwaway PostgreSQL, moto's S3 API),
//! skipped loudly when missing outside CI and failing in CI.
//!
//! Test-style calls (`Collector::start`, `Agent::start`, `create_key`, ...) panic with a message
//! naming what failed; the fallible ones (`Collector::launch`, `Process::terminate`, ...) return
//! [`HarnessError`] for callers that report errors themselves (the bench).
#![forbid(unsafe_code)]

mod agent;
mod binaries;
mod certs;
mod cluster;
mod collector;
mod error;
mod external;
mod fixtures;
mod metrics;
mod moto;
mod nats;
mod ports;
mod postgres;
mod process;
mod relay;
mod tmpfs;
mod wait;

pub use agent::{Agent, AgentOptions};
pub use binaries::{bin, cli, run_cli};
pub use certs::{TestCertificates, test_certificates};
pub use cluster::{
    CLUSTER_BUCKET, CLUSTER_PG_PASSWORD_VAR, CLUSTER_STREAM, ClusterSettings, cluster_env,
    cluster_toml, shared_secret_key,
};
pub use collector::{Collector, CollectorOptions};
pub use error::HarnessError;
pub use external::{find_binary, in_ci, on_path, skip_or_fail, venv};
pub use fixtures::{emit_line, emit_with_sdk, now_rfc3339, otlp_json, record};
pub use metrics::metric_sum;
pub use moto::{MOTO_SERVER_VAR, MotoCredentials, MotoS3};
pub use nats::{JetStreamSync, NATS_SERVER_VAR, NatsCluster};
pub use ports::{free_port, try_free_port, try_free_ports};
pub use postgres::{PG_BIN_VAR, Postgres, PostgresOptions};
pub use process::{Process, proc_status_kib, stat_cpu_seconds, tail};
pub use relay::AnswerHold;
pub use tmpfs::Tmpfs;
pub use wait::{wait_for, wait_for_async, wait_until};
