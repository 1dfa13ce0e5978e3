//! `codestax-collector cluster status`: the cluster as the metastore sees it — nodes with the
//! age of their heartbeats, shards with owner, epoch, lease expiry and newest snapshot — and,
//! when NATS answers within a few seconds, each shard consumer's lag (messages not yet
//! acknowledged by the owner).

use std::io::Write;
use std::time::Duration;

use codestax_config::ClusterConfig;
use serde::Serialize;

use super::error::MetastoreError;
use super::metastore::Metastore;
use super::shard::owner_consumer;

/// How long the status waits for NATS before it leaves the lag out.
const NATS_WAIT: Duration = Duration::from_secs(3);

/// A node as the status shows it.
#[derive(Debug, Clone, Serialize)]
pub struct NodeStatus {
    pub node_id: String,
    pub advertise_url: String,
    /// Seconds since its last heartbeat (`null` after a clean stop).
    pub heartbeat_age_secs: Option<f64>,
    /// Whether the heartbeat is younger than `lease_ttl`.
    pub live: bool,
}

/// A shard as the status shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ShardStatus {
    pub shard: u32,
    /// The node holding an unexpired lease; `null` while nobody does (a failover).
    pub owner: Option<String>,
    pub epoch: i64,
    /// Seconds until the lease expires (negative: expired that long ago; `null`: never held).
    pub lease_expires_in_secs: Option<f64>,
    /// Seconds since its newest snapshot was published; `null` without one.
    pub snapshot_age_secs: Option<f64>,
    /// Messages of the shard its owner has not yet acknowledged; `null` if NATS did not answer.
    pub lag: Option<u64>,
}

/// The whole status.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterStatus {
    pub shards_total: u32,
    pub nodes: Vec<NodeStatus>,
    pub shards: Vec<ShardStatus>,
    /// Why `lag` is missing, if it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lag_unavailable: Option<String>,
}

fn finite(secs: f64) -> Option<f64> {
    secs.is_finite().then_some((secs * 1000.0).round() / 1000.0)
}

impl Metastore {
    /// Nodes and shards as they stand now (lag left empty).
    pub async fn status(&self, lease_ttl: Duration) -> Result<ClusterStatus, MetastoreError> {
        let ttl = lease_ttl.as_secs_f64();
        let nodes = self
            .client
            .query(
                // Infinite times (a clean leave, a shard never held) cannot be subtracted
                // before PostgreSQL 17: they read as null.
                "SELECT node_id, advertise_url,
                        CASE WHEN isfinite(heartbeat_at)
                             THEN extract(epoch FROM now() - heartbeat_at)::float8 END
                 FROM nodes ORDER BY node_id",
                &[],
            )
            .await
            .map_err(MetastoreError::sql("read the nodes"))?
            .iter()
            .map(|r| {
                let age = r.get::<_, Option<f64>>(2).and_then(finite);
                NodeStatus {
                    node_id: r.get(0),
                    advertise_url: r.get(1),
                    heartbeat_age_secs: age,
                    live: age.is_some_and(|a| a < ttl),
                }
            })
            .collect();
        let shards: Vec<ShardStatus> = self
            .client
            .query(
                "SELECT l.shard, CASE WHEN l.expires_at > now() THEN l.owner END, l.epoch,
                        CASE WHEN isfinite(l.expires_at)
                             THEN extract(epoch FROM l.expires_at - now())::float8 END,
                        (SELECT extract(epoch FROM now() - max(s.created_at))::float8
                         FROM snapshots s WHERE s.shard = l.shard)
                 FROM shard_leases l ORDER BY l.shard",
                &[],
            )
            .await
            .map_err(MetastoreError::sql("read the shards"))?
            .iter()
            .map(|r| ShardStatus {
                shard: r.get::<_, i32>(0) as u32,
                owner: r.get(1),
                epoch: r.get(2),
                lease_expires_in_secs: r.get::<_, Option<f64>>(3).and_then(finite),
                snapshot_age_secs: r.get::<_, Option<f64>>(4).and_then(finite),
                lag: None,
            })
            .collect();
        Ok(ClusterStatus {
            shards_total: shards.len() as u32,
            nodes,
            shards,
            lag_unavailable: None,
        })
    }
}

/// Each shard's unacknowledged messages in its current epoch's consumer, by shard (a shard
/// never consumed under that epoch: absent).
async fn consumer_lag(
    config: &ClusterConfig,
    epochs: &[(u32, i64)],
) -> Result<std::collections::BTreeMap<u32, u64>, String> {
    let addrs = config
        .nats
        .urls
        .iter()
        .map(|u| u.parse::<async_nats::ServerAddr>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let client = async_nats::ConnectOptions::new()
        .name(format!("{}-status", config.node_id))
        .connection_timeout(NATS_WAIT)
        .connect(addrs.as_slice())
        .await
        .map_err(|e| e.to_string())?;
    let js = async_nats::jetstream::new(client);
    let stream = js
        .get_stream(&config.nats.stream)
        .await
        .map_err(|e| e.to_string())?;
    let mut lag = std::collections::BTreeMap::new();
    for &(shard, epoch) in epochs {
        if let Ok(info) = stream.consumer_info(owner_consumer(shard, epoch)).await {
            lag.insert(shard, info.num_pending + info.num_ack_pending as u64);
        }
    }
    Ok(lag)
}

/// Reads the status: the metastore must answer; NATS only for the lag.
pub async fn cluster_status(config: &ClusterConfig) -> Result<ClusterStatus, MetastoreError> {
    let m = Metastore::connect(&config.postgres.url, config.postgres.password.as_deref()).await?;
    let mut status = m.status(config.lease_ttl).await?;
    let epochs: Vec<(u32, i64)> = status.shards.iter().map(|s| (s.shard, s.epoch)).collect();
    match tokio::time::timeout(NATS_WAIT * 2, consumer_lag(config, &epochs)).await {
        Ok(Ok(lag)) => {
            for s in &mut status.shards {
                s.lag = lag.get(&s.shard).copied();
            }
        }
        Ok(Err(e)) => status.lag_unavailable = Some(format!("NATS: {e}")),
        Err(_) => status.lag_unavailable = Some("NATS did not answer in time".into()),
    }
    Ok(status)
}

/// Prints `status` as tables (or JSON with `json`).
pub fn write_status(
    status: &ClusterStatus,
    json: bool,
    out: &mut impl Write,
) -> std::io::Result<()> {
    if json {
        serde_json::to_writer_pretty(&mut *out, status)?;
        return writeln!(out);
    }
    let secs = |s: Option<f64>| s.map_or_else(|| "-".to_string(), |s| format!("{s:.1}s"));
    writeln!(out, "NODE\tURL\tHEARTBEAT AGE\tLIVE")?;
    for n in &status.nodes {
        writeln!(
            out,
            "{}\t{}\t{}\t{}",
            n.node_id,
            n.advertise_url,
            secs(n.heartbeat_age_secs),
            if n.live { "yes" } else { "no" }
        )?;
    }
    writeln!(out)?;
    writeln!(
        out,
        "SHARD\tOWNER\tEPOCH\tLEASE EXPIRES IN\tSNAPSHOT AGE\tLAG"
    )?;
    for s in &status.shards {
        writeln!(
            out,
            "{}\t{}\t{}\t{}\t{}\t{}",
            s.shard,
            s.owner.as_deref().unwrap_or("-"),
            s.epoch,
            secs(s.lease_expires_in_secs),
            secs(s.snapshot_age_secs),
            s.lag.map_or_else(|| "-".to_string(), |l| l.to_string())
        )?;
    }
    if let Some(why) = &status.lag_unavailable {
        writeln!(out, "\nlag unavailable: {why}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status() -> ClusterStatus {
        ClusterStatus {
            shards_total: 2,
            nodes: vec![NodeStatus {
                node_id: "c1".into(),
                advertise_url: "http://10.0.0.5:8470".into(),
                heartbeat_age_secs: Some(0.25),
                live: true,
            }],
            shards: vec![
                ShardStatus {
                    shard: 0,
                    owner: Some("c1".into()),
                    epoch: 3,
                    lease_expires_in_secs: Some(7.5),
                    snapshot_age_secs: None,
                    lag: Some(12),
                },
                ShardStatus {
                    shard: 1,
                    owner: None,
                    epoch: 2,
                    lease_expires_in_secs: Some(-1.0),
                    snapshot_age_secs: None,
                    lag: None,
                },
            ],
            lag_unavailable: None,
        }
    }

    #[test]
    fn prints_tables_or_json() {
        let mut out = Vec::new();
        write_status(&status(), false, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("c1\thttp://10.0.0.5:8470\t0.2s\tyes"),
            "{text}"
        );
        assert!(text.contains("0\tc1\t3\t7.5s\t-\t12"), "{text}");
        assert!(text.contains("1\t-\t2\t-1.0s\t-\t-"), "{text}");

        let mut out = Vec::new();
        write_status(&status(), true, &mut out).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(json["nodes"][0]["node_id"], "c1");
        assert_eq!(json["shards"][0]["lag"], 12);
        assert!(json["shards"][1]["owner"].is_null());
        assert!(json.get("lag_unavailable").is_none());
        assert_eq!(finite(f64::NEG_INFINITY), None, "a clean leave has no age");
    }
}
