//! Stream receivers the streams bench starts on 127.0.0.1: one HTTP server for the `https`
//! destination (plain `http://`, which the destination allows) and the Splunk HEC one, a TCP
//! reader of octet-counted syslog frames, the same HTTP server and syslog reader over TLS (the
//! harness's test certificate), and moto's S3 (counted from its object keys). Each counts the
//! records it gets and, per record, the lag from the collector's `received_at` stamp to the
//! arrival here.

use crate::data::now_micros;
use crate::error::{BenchError, Result};
use crate::stats::Latencies;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, BufReader};

/// What one destination kind received.
#[derive(Debug, Default)]
pub struct Tally {
    records: AtomicU64,
    /// Lags of records stamped at or after `since_micros`.
    lags: Mutex<Latencies>,
    since_micros: AtomicU64,
}

/// The fields of a delivered record the bench reads.
#[derive(serde::Deserialize)]
struct Delivered<'a> {
    #[serde(borrow)]
    received_at: Option<&'a str>,
}

#[derive(serde::Deserialize)]
struct HecEvent<'a> {
    #[serde(borrow)]
    event: Delivered<'a>,
}

impl Tally {
    pub fn records(&self) -> u64 {
        self.records.load(Ordering::Relaxed)
    }

    /// Starts lag sampling over: only records received by the collector from `micros` on count.
    pub fn reset_lags(&self, micros: i64) {
        self.since_micros
            .store(micros.max(0) as u64, Ordering::Relaxed);
        *self.lags.lock().unwrap_or_else(|e| e.into_inner()) = Latencies::default();
    }

    pub fn lags(&self) -> Latencies {
        self.lags.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Counts a batch of records that arrived at `arrived` (µs since the epoch).
    fn take<'a>(&self, records: impl Iterator<Item = Delivered<'a>>, arrived: i64) {
        let since = self.since_micros.load(Ordering::Relaxed) as i64;
        let mut n = 0;
        let mut lags = Vec::new();
        for r in records {
            n += 1;
            let stamped = r
                .received_at
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.timestamp_micros());
            if let Some(t) = stamped.filter(|t| *t >= since) {
                lags.push(Duration::from_micros((arrived - t).max(0) as u64));
            }
        }
        if !lags.is_empty() {
            let mut all = self.lags.lock().unwrap_or_else(|e| e.into_inner());
            for l in lags {
                all.push(l);
            }
        }
        self.records.fetch_add(n, Ordering::Relaxed);
    }
}

/// The bench's receivers, on one small runtime of their own.
pub struct Receivers {
    runtime: tokio::runtime::Runtime,
    http_port: u16,
    syslog_port: u16,
    https_tls_port: u16,
    syslog_tls_port: u16,
    pub https: Arc<Tally>,
    pub hec: Arc<Tally>,
    pub syslog: Arc<Tally>,
    pub https_tls: Arc<Tally>,
    pub syslog_tls: Arc<Tally>,
    /// The CA of the TLS receivers' certificate: the streams' `ca_pem`.
    pub ca_pem: String,
}

/// The HEC token the bench's streams send and its receiver expects.
pub const HEC_TOKEN: &str = "codestax-bench-hec-token";

impl Receivers {
    /// Binds and serves every listener; the TLS certificate is made in `dir`.
    pub fn start(dir: &std::path::Path) -> Result<Receivers> {
        let cert = codestax_harness::test_certificates(dir, "IP:127.0.0.1")?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(|e| BenchError::Collector(format!("receivers' runtime: {e}")))?;
        let bind = |what: &str| {
            runtime
                .block_on(tokio::net::TcpListener::bind(("127.0.0.1", 0)))
                .map_err(|e| BenchError::Collector(format!("bind the {what} receiver: {e}")))
        };
        let (http, syslog) = (bind("HTTP")?, bind("syslog")?);
        let (https_tls, syslog_tls) = (bind("HTTPS")?, bind("syslog TLS")?);
        let port = |l: &tokio::net::TcpListener| l.local_addr().map(|a| a.port()).unwrap_or(0);
        let r = Receivers {
            http_port: port(&http),
            syslog_port: port(&syslog),
            https_tls_port: port(&https_tls),
            syslog_tls_port: port(&syslog_tls),
            https: Arc::default(),
            hec: Arc::default(),
            syslog: Arc::default(),
            https_tls: Arc::default(),
            syslog_tls: Arc::default(),
            ca_pem: cert.ca(),
            runtime,
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(cert.server_config());
        r.serve(http, None, {
            let (https, hec) = (r.https.clone(), r.hec.clone());
            move |io| serve_http(io, https.clone(), hec.clone())
        });
        r.serve(https_tls, Some(acceptor.clone()), {
            let (https, hec) = (r.https_tls.clone(), r.hec.clone());
            move |io| serve_http(io, https.clone(), hec.clone())
        });
        r.serve(syslog, None, {
            let tally = r.syslog.clone();
            move |io| read_syslog(io, tally.clone())
        });
        r.serve(syslog_tls, Some(acceptor), {
            let tally = r.syslog_tls.clone();
            move |io| read_syslog(io, tally.clone())
        });
        Ok(r)
    }

    /// Accepts connections on `listener` (through TLS when given) and runs `conn` on each.
    fn serve<F>(
        &self,
        listener: tokio::net::TcpListener,
        tls: Option<tokio_rustls::TlsAcceptor>,
        conn: impl Fn(Box<dyn Io>) -> F + Send + Sync + 'static,
    ) where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let conn = Arc::new(conn);
        self.runtime.spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (conn, tls) = (conn.clone(), tls.clone());
                tokio::spawn(async move {
                    let io: Box<dyn Io> = match tls {
                        None => Box::new(tcp),
                        Some(acceptor) => match acceptor.accept(tcp).await {
                            Ok(io) => Box::new(io),
                            Err(_) => return,
                        },
                    };
                    conn(io).await;
                });
            }
        });
    }

    /// The `https` destination's URL (plain HTTP on loopback).
    pub fn https_url(&self) -> String {
        format!("http://127.0.0.1:{}/in", self.http_port)
    }

    /// The `https` destination's URL over TLS (certificate of [`Self::ca_pem`]).
    pub fn https_tls_url(&self) -> String {
        format!("https://127.0.0.1:{}/in", self.https_tls_port)
    }

    /// The HEC destination's base URL.
    pub fn hec_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    pub fn syslog_address(&self) -> String {
        format!("127.0.0.1:{}", self.syslog_port)
    }

    /// The syslog receiver over TLS (certificate of [`Self::ca_pem`]).
    pub fn syslog_tls_address(&self) -> String {
        format!("127.0.0.1:{}", self.syslog_tls_port)
    }
}

/// A connection, plain or TLS.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

type Answer = hyper::Response<http_body_util::Full<bytes::Bytes>>;

/// Serves HTTP/1 on one connection: the `https` destination's batches and HEC's.
async fn serve_http(io: Box<dyn Io>, https: Arc<Tally>, hec: Arc<Tally>) {
    let service =
        hyper::service::service_fn(move |req| answer_http(req, https.clone(), hec.clone()));
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(hyper_util::rt::TokioIo::new(io), service)
        .await;
}

async fn answer_http(
    req: hyper::Request<hyper::body::Incoming>,
    https: Arc<Tally>,
    hec: Arc<Tally>,
) -> std::result::Result<Answer, std::convert::Infallible> {
    use http_body_util::BodyExt;
    let answer = |status: u16, body: &'static str| {
        let mut a = hyper::Response::new(http_body_util::Full::new(bytes::Bytes::from_static(
            body.as_bytes(),
        )));
        *a.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or_default();
        Ok(a)
    };
    let is_hec = req.uri().path() == "/services/collector/event";
    let Ok(body) = req.into_body().collect().await else {
        return answer(400, "");
    };
    let body = body.to_bytes();
    let arrived = now_micros();
    if is_hec {
        // Concatenated JSON events, as Splunk reads them; a body the bench cannot read is a 400
        // the stream will show.
        let events: std::result::Result<Vec<HecEvent>, _> =
            serde_json::Deserializer::from_slice(&body)
                .into_iter::<HecEvent>()
                .collect();
        let Ok(events) = events else {
            return answer(400, r#"{"text":"Invalid data format","code":6}"#);
        };
        hec.take(events.into_iter().map(|e| e.event), arrived);
        answer(200, r#"{"text":"Success","code":0}"#)
    } else {
        let records: std::result::Result<Vec<Delivered>, _> = body
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(serde_json::from_slice::<Delivered>)
            .collect();
        let Ok(records) = records else {
            return answer(400, "");
        };
        https.take(records.into_iter(), arrived);
        answer(200, "")
    }
}

/// Reads `<length> <message>` frames (RFC 6587 octet counting) until the sender closes; the
/// record is the JSON after the RFC 5424 header.
async fn read_syslog(io: Box<dyn Io>, tally: Arc<Tally>) {
    let mut reader = BufReader::with_capacity(1 << 20, io);
    let mut len = Vec::new();
    let mut message = Vec::new();
    loop {
        len.clear();
        match reader.read_until(b' ', &mut len).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let Some(n) = std::str::from_utf8(len.trim_ascii_end())
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
        else {
            eprintln!("!! syslog receiver: bad frame length {len:?}");
            return;
        };
        message.resize(n, 0);
        if reader.read_exact(&mut message).await.is_err() {
            return;
        }
        let arrived = now_micros();
        let json = message
            .iter()
            .position(|b| *b == b'{')
            .map_or(&[][..], |i| &message[i..]);
        let record =
            serde_json::from_slice::<Delivered>(json).unwrap_or(Delivered { received_at: None });
        tally.take(std::iter::once(record), arrived);
    }
}

/// Records in the S3 objects under `prefix` of `bucket`: the sum of the `seq` ranges their keys
/// name (`…/<first_seq>-<last_seq>.ndjson.gz`), from moto's ListObjectsV2 (unsigned, which moto
/// accepts).
pub fn s3_records(endpoint: &str, bucket: &str, prefix: &str) -> Result<u64> {
    let client = reqwest::blocking::Client::new();
    let mut total = 0;
    let mut token: Option<String> = None;
    loop {
        let mut url = format!("{endpoint}/{bucket}?list-type=2&prefix={prefix}/&max-keys=1000");
        if let Some(t) = &token {
            url.push_str(&format!("&continuation-token={t}"));
        }
        let text = client
            .get(&url)
            .send()
            .and_then(|r| r.text())
            .map_err(|e| BenchError::http(format!("GET {url}"), e))?;
        total += tag_values(&text, "Key")
            .into_iter()
            .filter_map(seq_range_len)
            .sum::<u64>();
        match tag_values(&text, "NextContinuationToken").first() {
            Some(t) => token = Some(t.replace('+', "%2B").replace('/', "%2F")),
            None => return Ok(total),
        }
    }
}

fn tag_values<'a>(xml: &'a str, tag: &str) -> Vec<&'a str> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    xml.split(open.as_str())
        .skip(1)
        .filter_map(|s| s.split_once(close.as_str()).map(|(v, _)| v))
        .collect()
}

/// `…/00000000000000000501-00000000000000001000.ndjson.gz` → 500.
fn seq_range_len(key: &str) -> Option<u64> {
    let name = key.rsplit('/').next()?.strip_suffix(".ndjson.gz")?;
    let (first, last) = name.split_once('-')?;
    let (first, last) = (first.parse::<u64>().ok()?, last.parse::<u64>().ok()?);
    last.checked_sub(first).map(|d| d + 1)
}

#[cfg(test)]
mod tests {
    #[test]
    fn s3_keys_name_their_ranges() {
        let xml = "<ListBucketResult><Contents><Key>p/org=a/date=2026-12-04/hour=13/00000000000000000001-00000000000000000500.ndjson.gz</Key></Contents>\
                   <Contents><Key>p/org=a/date=2026-12-04/hour=13/00000000000000000501-00000000000000000501.ndjson.gz</Key></Contents></ListBucketResult>";
        let n: u64 = super::tag_values(xml, "Key")
            .into_iter()
            .filter_map(super::seq_range_len)
            .sum();
        assert_eq!(n, 501);
        assert_eq!(
            super::seq_range_len("p/_codestax-test/org=a/x.ndjson.gz"),
            None
        );
    }
}
