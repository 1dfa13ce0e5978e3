//! Cluster mode, ingest: a collector with `[cluster]` over a real 3-node nats-server JetStream
//! cluster and a real PostgreSQL takes records over HTTP and acknowledges them only once they are
//! in the stream; read back with a JetStream consumer, every acknowledged id is there exactly
//! once, on its org's shard subject — also after the stream's leader server is killed (SIGKILL)
//! in the middle of the ingest. The node also holds the shard leases in PostgreSQL.
//! Missing servers: SKIPPED outside CI, a failure in CI.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::{Duration, Instant};

use codestax_harness::{
    CLUSTER_PG_PASSWORD_VAR, CLUSTER_STREAM as STREAM, ClusterSettings, Collector,
    CollectorOptions, NatsCluster, Postgres, cluster_toml as harness_cluster_toml, now_rfc3339,
    record,
};
use serde_json::Value;

pub(crate) const PASSWORD: &str = "cluster-ingest-test";
const SHARDS: u32 = 4;
const ORGS: [&str; 3] = ["acme", "globex", "initech"];

pub(crate) fn pg_password(cmd: &mut Command) {
    cmd.env(CLUSTER_PG_PASSWORD_VAR, PASSWORD);
}

pub(crate) fn cluster_toml(
    node: &str,
    http_port: u16,
    nats: &NatsCluster,
    pg: &Postgres,
) -> String {
    // No object store listens there: snapshots fail (and are tried again), nothing else does.
    cluster_toml_with(node, http_port, nats, pg, "http://127.0.0.1:9", "60s")
}

/// `[cluster]` of node `node` with 4 shards and a 1 s lease, its snapshots every
/// `snapshot_interval` to bucket `codestax` at `s3_endpoint`.
pub(crate) fn cluster_toml_with(
    node: &str,
    http_port: u16,
    nats: &NatsCluster,
    pg: &Postgres,
    s3_endpoint: &str,
    snapshot_interval: &str,
) -> String {
    let settings = ClusterSettings {
        shards: SHARDS,
        lease_ttl: "1s".into(),
        snapshot_interval: snapshot_interval.into(),
    };
    harness_cluster_toml(node, http_port, nats, pg, s3_endpoint, &settings)
}

/// Sends `records` until they are acknowledged (a 503 while the stream elects a leader is
/// retried with the same ids); returns how many tries it took.
pub(crate) fn ingest_until_acked(c: &Collector, token: &str, records: &[Value]) -> (Value, u32) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut tries = 0;
    loop {
        tries += 1;
        let (status, body) = c.ingest(token, records);
        if status == 200 {
            return (body, tries);
        }
        assert_eq!(status, 503, "only a retryable refusal is allowed: {body}");
        assert_eq!(body["error"]["code"], "unavailable", "{body}");
        assert!(
            Instant::now() < deadline,
            "not acknowledged within 60 s: {body}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub(crate) fn batch(org: &str, from: usize, n: usize) -> Vec<Value> {
    let now = now_rfc3339();
    (from..from + n)
        .map(|i| {
            record(
                org,
                &format!("{org}-{i}"),
                "auth.login",
                "ada@example.com",
                &now,
            )
        })
        .collect()
}

/// Every message of the stream, read with a pull consumer: (subject, Nats-Msg-Id, payload).
async fn read_stream(urls: &[String], expect: usize) -> Vec<(String, String, Value)> {
    use async_nats::jetstream::consumer::pull;
    use futures_util::StreamExt as _;
    let addrs: Vec<async_nats::ServerAddr> = urls.iter().map(|u| u.parse().unwrap()).collect();
    let client = async_nats::connect(addrs.as_slice()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    // Right after a server's kill the stream (and the meta leader) may still be electing: its
    // info or a consumer's create can fail or time out for a while (CI, session 17).
    let deadline = Instant::now() + Duration::from_secs(30);
    let consumer = loop {
        let created = match js.get_stream(STREAM).await {
            Ok(stream) => stream
                .create_consumer(pull::Config {
                    ack_policy: async_nats::jetstream::consumer::AckPolicy::None,
                    ..Default::default()
                })
                .await
                .map_err(|e| format!("creating the consumer: {e}")),
            Err(e) => Err(format!("reading the stream's info: {e}")),
        };
        match created {
            Ok(c) => break c,
            Err(e) if Instant::now() < deadline => {
                eprintln!("{e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("{e}"),
        }
    };
    let mut messages = consumer.messages().await.unwrap();
    let mut out = Vec::new();
    let mut errors = 0;
    loop {
        // Up to 10 s for what is expected, then until nothing more comes for a second.
        let wait = if out.len() < expect { 10_000 } else { 1_000 };
        let next = tokio::time::timeout(Duration::from_millis(wait), messages.next()).await;
        let Ok(Some(message)) = next else { break };
        // A pull consumer reports a leader change as an error and goes on.
        let message = match message {
            Ok(m) => m,
            Err(e) => {
                errors += 1;
                assert!(errors < 50, "reading the stream: {e}");
                eprintln!("reading the stream: {e}");
                continue;
            }
        };
        let id = message
            .headers
            .as_ref()
            .and_then(|h| h.get("Nats-Msg-Id"))
            .map(|v| v.to_string())
            .unwrap_or_default();
        let payload: Value = serde_json::from_slice(&message.payload).unwrap();
        out.push((message.subject.to_string(), id, payload));
    }
    // Nothing beyond what is expected.
    let extra = tokio::time::timeout(Duration::from_millis(500), messages.next()).await;
    assert!(
        !matches!(extra, Ok(Some(Ok(_)))),
        "more messages than acknowledged records"
    );
    out
}

/// The subject of `org`'s first message, checked against the name the shard scheme gives.
fn subject_of(messages: &[(String, String, Value)], org: &str) -> String {
    let subject = messages
        .iter()
        .find(|(_, _, p)| p["org_id"] == org)
        .map(|(s, _, _)| s.clone())
        .unwrap_or_default();
    assert!(
        subject.starts_with(&format!("{STREAM}.shard.")),
        "{subject}"
    );
    subject
}

/// The index in `nats` of the server that leads the (3-replica) stream.
pub(crate) fn stream_leader(nats: &NatsCluster) -> usize {
    let urls = nats.urls();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let leader = rt.block_on(async {
        let addrs: Vec<async_nats::ServerAddr> = urls.iter().map(|u| u.parse().unwrap()).collect();
        let js = async_nats::jetstream::new(async_nats::connect(addrs.as_slice()).await.unwrap());
        let mut stream = js.get_stream(STREAM).await.unwrap();
        let info = stream.info().await.unwrap();
        assert_eq!(info.config.num_replicas, 3);
        info.cluster
            .clone()
            .and_then(|c| c.leader)
            .expect("a stream leader")
    });
    (0..nats.len()).find(|&i| nats.name(i) == leader).unwrap()
}

/// A 3-server JetStream cluster, PostgreSQL and one collector `c1` in cluster mode over them,
/// its data under `dir/c1`; `None` when a server is missing outside CI (SKIPPED).
pub(crate) fn start_node(
    what: &str,
    dir: &std::path::Path,
    pg_dir: &std::path::Path,
) -> Option<(NatsCluster, Postgres, Collector)> {
    start_node_logged(what, dir, pg_dir, None)
}

/// [`start_node`] with the collector's stderr kept in `stderr` (read with
/// [`Collector::stderr`]) rather than passed through.
pub(crate) fn start_node_logged(
    what: &str,
    dir: &std::path::Path,
    pg_dir: &std::path::Path,
    stderr: Option<std::path::PathBuf>,
) -> Option<(NatsCluster, Postgres, Collector)> {
    let nats = NatsCluster::start_or_skip(what, dir)?;
    let pg = Postgres::start_or_skip(what, pg_dir, PASSWORD)?;
    let mut options = CollectorOptions::for_tests(&dir.join("c1"), "");
    options.before_spawn = Some(pg_password);
    options.stderr = stderr;
    let mut c = Collector::configure(options).unwrap();
    let settings = cluster_toml("c1", c.http_port, &nats, &pg);
    c.restart_with(&settings)
        .unwrap_or_else(|e| panic!("{e}\n{}", c.stderr()));
    Some((nats, pg, c))
}

#[test]
fn ingest_is_acked_after_jetstream_and_survives_a_killed_nats_server() {
    let dir = tempfile::tempdir().unwrap();
    let pg_dir = tempfile::tempdir().unwrap();
    let Some((mut nats, pg, mut c)) = start_node("cluster ingest", dir.path(), pg_dir.path())
    else {
        return;
    };
    let tokens: BTreeMap<&str, String> = ORGS
        .iter()
        .map(|&o| (o, c.create_key(o, "INGEST")))
        .collect();

    let mut acked: BTreeSet<String> = BTreeSet::new();
    // Acme's first batch, to send again as it was.
    let mut first = Vec::new();
    let mut send = |c: &Collector, round: usize| -> u32 {
        let mut tries = 0;
        for org in ORGS {
            let records = batch(org, round * 10, 10);
            if (org, round) == ("acme", 0) {
                first = records.clone();
            }
            let (body, t) = ingest_until_acked(c, &tokens[org], &records);
            assert_eq!(body["accepted"], 10, "{body}");
            assert_eq!(body["rejected"], 0, "{body}");
            tries += t;
            acked.extend(
                records
                    .iter()
                    .map(|r| format!("{org}:{}", r["id"].as_str().unwrap())),
            );
        }
        tries
    };
    for round in 0..10 {
        send(&c, round);
    }

    // Kill the server that leads the stream, and keep ingesting.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let urls = nats.urls();
    let killed = stream_leader(&nats);
    let leader = nats.name(killed).to_owned();
    nats.kill(killed);
    let mut tries = 0;
    for round in 10..20 {
        tries += send(&c, round);
    }
    eprintln!("after killing {leader}: {tries} requests for 30 batches");

    // A resend of acknowledged records is acknowledged again, as duplicates the window caught.
    let (body, _) = ingest_until_acked(&c, &tokens["acme"], &first);
    assert_eq!(
        (body["accepted"].as_u64(), body["duplicates"].as_u64()),
        (Some(10), Some(10)),
        "{body}"
    );

    // Every acknowledged record is in the stream once, on its org's shard subject, stamped.
    let messages = rt.block_on(read_stream(&urls, acked.len()));
    // The collector's own records (a key event per key made) go through the stream too.
    let (own, sent): (Vec<_>, Vec<_>) = messages
        .iter()
        .partition(|(_, _, payload)| payload["provenance"]["writer"] == "collector");
    let key_events = own
        .iter()
        .filter(|(_, _, p)| p["action"] == "auth.api_key_created")
        .count();
    assert_eq!(key_events, ORGS.len(), "{own:?}");
    let mut seen = BTreeSet::new();
    let mut twice = Vec::new();
    for (subject, msg_id, payload) in &sent {
        // `<org>:<id>:<content>`: a resend has the same; the stream holds each record once.
        let (id, content) = msg_id.rsplit_once(':').unwrap();
        assert!(
            content.len() == 16 && content.chars().all(|c| c.is_ascii_hexdigit()),
            "{msg_id}"
        );
        if !seen.insert(id.to_string()) {
            twice.push(id.to_string());
        }
        let org = payload["org_id"].as_str().unwrap();
        assert_eq!(id, format!("{org}:{}", payload["id"].as_str().unwrap()));
        assert_eq!(subject, &subject_of(&messages, org), "{org} on one subject");
        assert!(payload["received_at"].is_string(), "{payload}");
        assert_eq!(payload["provenance"]["writer"], "ingest", "{payload}");
    }
    assert!(twice.is_empty(), "twice in the stream: {twice:?}");
    assert_eq!(
        seen, acked,
        "the stream holds exactly the acknowledged records"
    );
    for org in ORGS {
        let subjects: BTreeSet<&str> = messages
            .iter()
            .filter(|(_, id, _)| id.starts_with(&format!("{org}:")))
            .map(|(s, _, _)| s.as_str())
            .collect();
        assert_eq!(
            subjects.len(),
            1,
            "{org}'s records on one subject: {subjects:?}"
        );
    }

    // The node holds every shard's lease in PostgreSQL (it is the only node).
    rt.block_on(async {
        let mut config: tokio_postgres::Config = pg.url().parse().unwrap();
        let (client, connection) = config.password(PASSWORD).connect(tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        let row = client
            .query_one(
                "SELECT count(*) FROM shard_leases WHERE owner = 'c1' AND expires_at > now() AND epoch >= 1",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, i64>(0), i64::from(SHARDS));
    });

    // The same ids with other content (made again, later): other msg ids, so the log takes
    // them and the node acknowledges them; the shard's owner refuses them as id conflicts and
    // counts them, and what was first sent stays stored.
    let (body, _) = ingest_until_acked(&c, &tokens["acme"], &batch("acme", 0, 10));
    assert_eq!(
        (body["accepted"].as_u64(), body["duplicates"].as_u64()),
        (Some(10), Some(0)),
        "{body}"
    );
    let refused = |c: &Collector| {
        c.metric(r#"codestax_collector_records_rejected_total{receiver="owner",reason="id"}"#)
    };
    assert!(
        codestax_harness::wait_for(Duration::from_secs(30), || refused(&c) == 10.0),
        "the owner refused {} of 10",
        refused(&c)
    );
    let admin = c.create_key("acme", "ORG_ADMIN");
    let stored = c.get_json("/api/v1/orgs/acme/audit-log/acme-0", &admin);
    assert_eq!(stored["time"], first[0]["time"], "{stored}");

    nats.restart(killed).unwrap();
    c.terminate().unwrap();
}
