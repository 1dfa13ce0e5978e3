//! A collector's `[cluster]` section over the harness's servers (a [`NatsCluster`], a
//! [`Postgres`], moto's S3), and the environment a node and its CLI need: shared by the cluster
//! end-to-end tests and the cluster benchmark.

use std::path::PathBuf;
use std::process::Command;

use crate::{NatsCluster, Postgres};

/// The JetStream stream the nodes publish to.
pub const CLUSTER_STREAM: &str = "CODESTAX_AUDIT";
/// The bucket snapshots go to (create it on the [`crate::MotoS3`] first).
pub const CLUSTER_BUCKET: &str = "codestax";
/// The variable a node reads the metastore's password from.
pub const CLUSTER_PG_PASSWORD_VAR: &str = "CODESTAX_COLLECTOR__CLUSTER__POSTGRES__PASSWORD";

/// What differs between the clusters the tests and the bench start.
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    /// `[cluster] shards`.
    pub shards: u32,
    /// `[cluster] lease_ttl` (`"1s"`).
    pub lease_ttl: String,
    /// `[cluster] snapshot_interval` (`"2s"`).
    pub snapshot_interval: String,
}

/// `[cluster]` (and the `[streams]` secret key every node must share) of node `node`, whose HTTP
/// API is on `http_port`: JetStream `nats` with 3 replicas, metastore `pg`, snapshots to bucket
/// [`CLUSTER_BUCKET`] (prefix `test`) at `s3_endpoint`.
pub fn cluster_toml(
    node: &str,
    http_port: u16,
    nats: &NatsCluster,
    pg: &Postgres,
    s3_endpoint: &str,
    settings: &ClusterSettings,
) -> String {
    let urls: Vec<String> = nats.urls().iter().map(|u| format!("{u:?}")).collect();
    format!(
        "[cluster]\nnode_id = \"{node}\"\nadvertise_url = \"http://127.0.0.1:{http_port}\"\n\
         shards = {}\nlease_ttl = \"{}\"\nsnapshot_interval = \"{}\"\n\
         [cluster.nats]\nurls = [{}]\nstream = \"{CLUSTER_STREAM}\"\nreplicas = 3\n\
         [cluster.postgres]\nurl = \"{}\"\n\
         [cluster.object_store]\nurl = \"s3://{CLUSTER_BUCKET}/test\"\nendpoint = \"{s3_endpoint}\"\n\
         allow_http = true\n\
         [streams]\nsecret_key_file = {:?}\n",
        settings.shards,
        settings.lease_ttl,
        settings.snapshot_interval,
        urls.join(", "),
        pg.url(),
        shared_secret_key(pg)
    )
}

/// The stream secret key file every node of one cluster shares (it seals the cluster's signing
/// key in PostgreSQL: a node with another key refuses to start, docs/cluster.md). One per
/// PostgreSQL server, i.e. per cluster; its content is fixed, so nodes writing it at once write
/// the same.
pub fn shared_secret_key(pg: &Postgres) -> PathBuf {
    let path = std::env::temp_dir().join(format!(
        "codestax-test-cluster-{}.streams-key",
        pg.url()
            .rsplit(':')
            .next()
            .unwrap_or("pg")
            .replace('/', "-")
    ));
    if !path.exists() {
        // Owner-only, as the collector wants its key file (else every node warns at start).
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .and_then(|mut f| f.write_all("5e".repeat(32).as_bytes()))
            .expect("write the shared stream secret key");
    }
    path
}

/// The environment of a node and of its CLI: the metastore's `password`, and credentials for
/// moto (which takes any).
pub fn cluster_env(cmd: &mut Command, password: &str) {
    cmd.env(CLUSTER_PG_PASSWORD_VAR, password)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing");
}
