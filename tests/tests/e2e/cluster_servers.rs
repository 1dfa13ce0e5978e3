//! The third-party servers the cluster tests stand on, started by the harness and checked with
//! real clients: a 3-node nats-server JetStream cluster that loses a node and gets it back, a
//! throwaway PostgreSQL that wants its password, moto's S3 API. Missing servers: SKIPPED outside
//! CI, a failure in CI (`CI` set).

use std::time::Duration;

use codestax_harness::{MotoS3, NatsCluster, Postgres, wait_until};

#[test]
fn nats_cluster_elects_a_new_meta_leader_when_one_node_is_killed_and_takes_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut nats) = NatsCluster::start_or_skip("nats cluster", dir.path()) else {
        return;
    };
    assert_eq!(nats.urls().len(), 3);
    let leader = nats.meta_leader(0).expect("a meta leader");
    let i = (0..3).find(|&i| nats.name(i) == leader).unwrap();
    nats.kill(i);
    let survivor = (i + 1) % 3;
    wait_until(
        "a new meta leader among the survivors",
        Duration::from_secs(30),
        || nats.meta_leader(survivor).is_some_and(|l| l != leader),
    );
    nats.wait_ready().unwrap();
    nats.restart(i).unwrap();
    assert!(nats.is_up(i));
    assert!(
        nats.meta_leader(i).is_some(),
        "the restarted node knows the leader"
    );
}

#[test]
fn nats_cluster_acks_a_replicated_publish_with_one_node_down() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut nats) = NatsCluster::start_or_skip("nats publish", dir.path()) else {
        return;
    };
    let urls = nats.urls();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let js = rt.block_on(async {
        let addrs: Vec<async_nats::ServerAddr> = urls.iter().map(|u| u.parse().unwrap()).collect();
        let client = async_nats::connect(addrs.as_slice()).await.unwrap();
        let js = async_nats::jetstream::new(client);
        js.create_stream(async_nats::jetstream::stream::Config {
            name: "T".into(),
            subjects: vec!["t.>".into()],
            num_replicas: 3,
            ..Default::default()
        })
        .await
        .unwrap();
        // A new R3 stream has no leader for a moment: until it has, a publish finds no responder
        // (async-nats calls it StreamNotFound).
        publish_acked(&js, "before", "a publish ack on the new stream").await;
        js
    });
    nats.kill(2);
    rt.block_on(async {
        // A quorum (2 of 3) is left: publishes are still acknowledged, and both messages are there.
        let ack = publish_acked(&js, "after", "a publish ack with one node down").await;
        assert_eq!(ack.stream, "T");
        let mut stream = js.get_stream("T").await.unwrap();
        assert!(stream.info().await.unwrap().state.messages >= 2);
    });
}

/// Publishes `payload` to `t.1` until it is acknowledged, for at most 20 s; the last error names
/// what a failure was.
async fn publish_acked(
    js: &async_nats::jetstream::Context,
    payload: &'static str,
    what: &str,
) -> async_nats::jetstream::publish::PublishAck {
    let mut last = String::from("no attempt");
    let acked = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match js.publish("t.1", payload.into()).await {
                Ok(ack) => match ack.await {
                    Ok(ack) => break ack,
                    Err(e) => last = format!("ack: {e}"),
                },
                Err(e) => last = format!("publish: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    acked.unwrap_or_else(|_| panic!("{what} within 20 s; last error: {last}"))
}

#[test]
fn postgres_starts_with_a_password_it_checks() {
    let dir = tempfile::tempdir().unwrap();
    let Some(pg) = Postgres::start_or_skip("postgres", dir.path(), "s3cret") else {
        return;
    };
    let url = pg.url();
    assert!(url.starts_with("postgres://codestax@127.0.0.1:"), "{url}");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut config: tokio_postgres::Config = url.parse().unwrap();
        let wrong = config
            .clone()
            .password("wrong")
            .connect(tokio_postgres::NoTls)
            .await;
        assert!(wrong.is_err(), "a wrong password was let in");
        let (client, connection) = config
            .password("s3cret")
            .connect(tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        let row = client.query_one("SHOW fsync", &[]).await.unwrap();
        assert_eq!(row.get::<_, String>(0), "on");
        client
            .batch_execute("CREATE TABLE t (x int)")
            .await
            .unwrap();
    });
}

#[test]
fn moto_serves_the_s3_api() {
    let dir = tempfile::tempdir().unwrap();
    let Some(moto) = MotoS3::start_or_skip("moto", dir.path()) else {
        return;
    };
    moto.create_bucket("snapshots").unwrap();
    // moto checks no signatures, but answers an anonymous GET 403: a signed-looking header will do.
    let http = reqwest::blocking::Client::new();
    let auth = "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/s3/aws4_request, \
                SignedHeaders=host, Signature=00";
    let object = format!("{}/snapshots/shard-1/manifest.json", moto.endpoint());
    let put = http
        .put(&object)
        .header("authorization", auth)
        .header("content-type", "application/json")
        .body("{\"seq\":7}")
        .send()
        .unwrap();
    assert!(put.status().is_success(), "{}", put.status());
    let got = http
        .get(&object)
        .header("authorization", auth)
        .send()
        .unwrap();
    assert!(got.status().is_success(), "{}", got.status());
    assert_eq!(got.text().unwrap(), "{\"seq\":7}");
    let missing = http
        .get(format!("{}/snapshots/nope", moto.endpoint()))
        .header("authorization", auth)
        .send()
        .unwrap();
    assert_eq!(missing.status().as_u16(), 404);
}
