//! The `syslog` destination: one RFC 5424 message per record over TCP, framed by octet counting
//! (RFC 6587 §3.4.1, the framing of RFC 5425 over TLS): `<len> <message>`.
//!
//! Message: `<110>1 <time> <hostname> codestax - audit - <record JSON>`: facility 13 (log audit),
//! severity 6 (informational), the record's `time` (UTC, microseconds), no structured data; the
//! JSON carries `org_id`, `id` and `seq` for a receiver to drop repeats.
//!
//! Size: a message longer than the stream's `max_message_bytes` (default 8 KiB, what syslog
//! receivers accept by default) is not cut (a cut JSON is unreadable) but replaced by a stub
//! `{"org_id","id","seq","truncated":true,"original_bytes":N}` the receiver can look up through
//! the API. Each stub is counted (the stream's `truncated_records`, and a metric) and logged.
//!
//! Accepted means written and flushed to the connection: syslog has no answer. Before each batch
//! the connection is checked for a close by the receiver (then reconnected), so a receiver that
//! went away is noticed before records are written into the void; records in flight when a
//! receiver dies without closing can be lost (`docs/streams.md`).

use super::batch::{Delivered, Item, SendError};
use super::connect::{Io, SEND_TIMEOUT, connect};
use crate::stream::allow::Allowlist;
use crate::stream::definition::split_host_port;
use crate::stream::tls::client_config;
use std::io::Write;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The header fields before the message: PRI 110 = facility 13 (log audit) * 8 + severity 6.
const PRI_VERSION: &str = "<110>1";
const APP_NAME: &str = "codestax";
const MSGID: &str = "audit";

/// The size rule of a destination.
#[derive(Debug, Clone, Copy)]
pub struct MessageLimit {
    pub max_message_bytes: usize,
}

/// Appends the framed message (`<len> <message>`) of `item` to `out`; whether it had to be
/// replaced by its stub to fit `limit`.
pub fn push_message(out: &mut Vec<u8>, hostname: &str, item: &Item, limit: MessageLimit) -> bool {
    let time = item
        .time
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    // `PRI_VERSION SP time SP hostname SP APP_NAME SP - SP MSGID SP - SP`
    let header_len =
        PRI_VERSION.len() + time.len() + hostname.len() + APP_NAME.len() + MSGID.len() + 9;
    let stub;
    let (message, truncated) = if header_len + item.json.len() <= limit.max_message_bytes {
        (&item.json[..], false)
    } else {
        stub = serde_json::json!({
            "org_id": &*item.org,
            "id": &*item.id,
            "seq": item.seq,
            "truncated": true,
            "original_bytes": item.json.len(),
        })
        .to_string();
        (stub.as_bytes(), true)
    };
    write!(
        out,
        "{} {PRI_VERSION} {time} {hostname} {APP_NAME} - {MSGID} - ",
        header_len + message.len()
    )
    .expect("writing to a Vec does not fail");
    out.extend_from_slice(message);
    truncated
}

pub struct SyslogSender {
    host: String,
    port: u16,
    tls: Option<Arc<tokio_rustls::rustls::ClientConfig>>,
    limit: MessageLimit,
    allow: Allowlist,
    hostname: String,
    conn: Option<Box<dyn Io>>,
}

impl SyslogSender {
    pub fn new(
        address: &str,
        tls: bool,
        ca_pem: Option<&str>,
        max_message_bytes: usize,
        allow: Allowlist,
    ) -> Result<SyslogSender, SendError> {
        let (host, port) = split_host_port(address)
            .ok_or_else(|| SendError::NonRetryable(format!("{address:?} is not host:port")))?;
        let tls = if tls {
            Some(client_config(ca_pem).map_err(SendError::NonRetryable)?)
        } else {
            None
        };
        Ok(SyslogSender {
            host,
            port,
            tls,
            limit: MessageLimit { max_message_bytes },
            allow,
            hostname: hostname(),
            conn: None,
        })
    }

    pub async fn send(&mut self, items: &[Item]) -> Result<Delivered, SendError> {
        let mut out = Vec::new();
        let mut delivered = Delivered::default();
        for item in items {
            if push_message(&mut out, &self.hostname, item, self.limit) {
                delivered.truncated += 1;
                tracing::warn!(org = %item.org, seq = item.seq, bytes = item.json.len(), max = self.limit.max_message_bytes, "record too long for the syslog destination; sent as a stub");
            }
        }
        let result = self.write(&out).await;
        if result.is_err() {
            self.conn = None;
        }
        result.map(|()| delivered)
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), SendError> {
        if let Some(conn) = self.conn.as_mut()
            && closed(conn.as_mut()).await
        {
            self.conn = None;
        }
        if self.conn.is_none() {
            self.conn = Some(connect(&self.allow, &self.host, self.port, self.tls.as_ref()).await?);
        }
        let conn = self.conn.as_mut().expect("connected above");
        let write = async {
            conn.write_all(bytes).await?;
            conn.flush().await
        };
        match tokio::time::timeout(SEND_TIMEOUT, write).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(SendError::Retryable(format!("writing to syslog: {e}"))),
            Err(_) => Err(SendError::Retryable(format!(
                "syslog write not done within {SEND_TIMEOUT:?}"
            ))),
        }
    }
}

/// Whether the receiver closed (or reset) the connection: a read that is ready at once with
/// nothing or an error. A syslog receiver never writes, so anything else means open.
async fn closed(conn: &mut dyn Io) -> bool {
    let mut buf = [0u8; 64];
    match tokio::time::timeout(std::time::Duration::ZERO, conn.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => true,
        Ok(Ok(_)) | Err(_) => false,
    }
}

/// The host's name for the HOSTNAME field (`-` when unknown), as RFC 5424 allows it: printable
/// ASCII, at most 255.
pub fn hostname() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .unwrap_or_default();
    let name: String = name
        .trim()
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(255)
        .collect();
    if name.is_empty() { "-".into() } else { name }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(json: &str) -> Item {
        Item {
            seq: 7,
            id: "r7".into(),
            org: "acme".into(),
            time: chrono::DateTime::parse_from_rfc3339("2026-12-03T10:00:00.5Z")
                .unwrap()
                .with_timezone(&chrono::Utc),
            received_at: chrono::Utc::now(),
            json: json.as_bytes().into(),
        }
    }

    #[test]
    fn octet_counted_rfc5424_and_a_counted_stub_when_too_long() {
        let mut framed = b"before".to_vec();
        let cut = push_message(
            &mut framed,
            "h",
            &item(r#"{"a":1}"#),
            MessageLimit {
                max_message_bytes: 8192,
            },
        );
        let text = String::from_utf8(framed).unwrap();
        let text = text.strip_prefix("before").unwrap();
        let msg = "<110>1 2026-12-03T10:00:00.500000Z h codestax - audit - {\"a\":1}";
        assert_eq!(text, format!("{} {msg}", msg.len()));
        assert!(!cut);
        let long = format!(r#"{{"x":"{}"}}"#, "y".repeat(1000));
        let mut framed = Vec::new();
        let cut = push_message(
            &mut framed,
            "h",
            &item(&long),
            MessageLimit {
                max_message_bytes: 480,
            },
        );
        assert!(cut);
        let text = String::from_utf8(framed).unwrap();
        let (len, msg) = text.split_once(' ').unwrap();
        assert_eq!(len.parse::<usize>().unwrap(), msg.len());
        assert!(msg.len() <= 480);
        let json: serde_json::Value =
            serde_json::from_str(msg.split_once(" - audit - ").unwrap().1).unwrap();
        assert_eq!(json["seq"], 7);
        assert_eq!(json["truncated"], true);
        assert_eq!(json["original_bytes"], long.len());
    }
}
