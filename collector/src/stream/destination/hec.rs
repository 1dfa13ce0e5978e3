//! The `splunk_hec` destination: each batch is one `POST <url>/services/collector/event` with
//! `Authorization: Splunk <token>`, the body the batch's HEC events one after the other:
//!
//! `{"time": <record time, epoch seconds with fraction>, "host": <collector host>,
//!   "source": "codestax:<org>", "sourcetype": ..., "index"?: ..., "event": <formatted record>}`
//!
//! Splunk answers `{"text": ..., "code": n}`: a 2xx with code 0 accepts the whole batch. A bad,
//! disabled or missing token (401/403, codes 1–4), an unknown index (7) or a refused body are
//! not retryable (the stream shows `failed` and keeps trying slowly); server busy (503, code 9),
//! 429 and other 5xx are retried. Only the answer's `code` is read, never shown.

use super::batch::{Item, SendError, TestAnswer};
use super::http::HttpClient;
use super::syslog::hostname;
use crate::stream::allow::Allowlist;
use axum::http::{HeaderValue, Method, Request, header};
use bytes::Bytes;
use http_body_util::Full;
use serde::Serialize;
use serde_json::Value;
use std::io::Write;
use std::sync::Arc;

/// The HEC event endpoint, appended to the stream's URL.
pub const HEC_EVENT_PATH: &str = "/services/collector/event";

pub struct HecSender {
    client: HttpClient,
    path: String,
    authorization: HeaderValue,
    index: Option<String>,
    sourcetype: String,
    collector_host: String,
}

impl HecSender {
    pub fn new(
        url: &str,
        token: Option<&str>,
        index: Option<&str>,
        sourcetype: &str,
        ca_pem: Option<&str>,
        allow: Allowlist,
    ) -> Result<HecSender, SendError> {
        let bad = |m: String| SendError::NonRetryable(m);
        let client = HttpClient::new(url, ca_pem, allow)?;
        let token = token.ok_or_else(|| bad("the stream has no HEC token".into()))?;
        let mut authorization = HeaderValue::from_str(&format!("Splunk {token}"))
            .map_err(|_| bad("the HEC token is not a valid header value".into()))?;
        authorization.set_sensitive(true);
        Ok(HecSender {
            path: format!(
                "{}{HEC_EVENT_PATH}",
                client.uri().path().trim_end_matches('/')
            ),
            client,
            authorization,
            index: index.map(str::to_string),
            sourcetype: sourcetype.to_string(),
            collector_host: hostname(),
        })
    }

    pub async fn send(&mut self, items: &[Item]) -> Result<(), SendError> {
        let (status, code) = self.post(items).await?;
        classify(status, code)
    }

    pub async fn test(&mut self, item: &Item) -> Result<TestAnswer, SendError> {
        let (status, code) = self.post(std::slice::from_ref(item)).await?;
        Ok(TestAnswer {
            status: Some(status),
            accepted: classify(status, code).is_ok(),
        })
    }

    /// The batch as HEC events, one after the other.
    fn body(&self, items: &[Item]) -> Result<Vec<u8>, SendError> {
        let mut body = Vec::with_capacity(items.iter().map(|i| i.json.len() + 200).sum());
        // A stream's records are one org's: its fields are written once.
        let mut fields: Option<EventFields> = None;
        for i in items {
            if fields.as_ref().is_none_or(|f| *f.org != *i.org) {
                fields = Some(EventFields::new(
                    &i.org,
                    &self.collector_host,
                    &self.sourcetype,
                    self.index.as_deref(),
                )?);
            }
            fields.as_ref().expect("set above").push(&mut body, i);
            body.push(b'\n');
        }
        Ok(body)
    }

    /// POSTs the batch; the answer's status and HEC `code` (when its body has one).
    async fn post(&mut self, items: &[Item]) -> Result<(u16, Option<i64>), SendError> {
        let body = self.body(items)?;
        let req = Request::builder()
            .method(Method::POST)
            .uri(self.path.as_str())
            .header(header::HOST, self.client.authority().clone())
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::AUTHORIZATION, self.authorization.clone())
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| SendError::NonRetryable(format!("cannot build the request: {e}")))?;
        let answer = self.client.send(req).await?;
        // The code only: a body too long or cut short leaves it unknown.
        let code = answer
            .body
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .and_then(|v| v.get("code").and_then(Value::as_i64));
        Ok((answer.status, code))
    }
}

/// The fields every HEC event of one org's records shares (`host`, `source`, `sourcetype`,
/// `index`), serialized once; [`Self::push`] writes an event around them.
pub struct EventFields {
    org: Arc<str>,
    /// `"host":…,"source":…,"sourcetype":…[,"index":…]`: a JSON object's members.
    members: Vec<u8>,
}

impl EventFields {
    pub fn new(
        org: &Arc<str>,
        host: &str,
        sourcetype: &str,
        index: Option<&str>,
    ) -> Result<EventFields, SendError> {
        #[derive(Serialize)]
        struct Fields<'a> {
            host: &'a str,
            source: String,
            sourcetype: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            index: Option<&'a str>,
        }
        let object = serde_json::to_vec(&Fields {
            host,
            source: format!("codestax:{org}"),
            sourcetype,
            index,
        })
        .map_err(|e| SendError::NonRetryable(e.to_string()))?;
        Ok(EventFields {
            org: org.clone(),
            members: object[1..object.len() - 1].to_vec(),
        })
    }

    /// Appends `item`'s event to `body`: `{"time":…,<members>,"event":<the item's JSON>}`. The
    /// item's JSON goes in as it is, not parsed again: it is the collector's own (a record's
    /// stored canonical JSON, or the stream format's encoding of it).
    pub fn push(&self, body: &mut Vec<u8>, item: &Item) {
        // Epoch seconds with the microseconds written out exactly (no float rounding).
        let micros = item.time.timestamp_micros();
        let sign = if micros < 0 { "-" } else { "" };
        let micros = micros.unsigned_abs();
        write!(
            body,
            "{{\"time\":{sign}{}.{:06},",
            micros / 1_000_000,
            micros % 1_000_000
        )
        .expect("writing to a Vec does not fail");
        body.extend_from_slice(&self.members);
        body.extend_from_slice(b",\"event\":");
        body.extend_from_slice(&item.json);
        body.push(b'}');
    }
}

/// What an answer means: Splunk's status and HEC code.
fn classify(status: u16, code: Option<i64>) -> Result<(), SendError> {
    let what = match code {
        Some(c) => format!("the HEC endpoint answered {status} (code {c})"),
        None => format!("the HEC endpoint answered {status}"),
    };
    match (status, code) {
        (200..=299, Some(0) | None) => Ok(()),
        // Busy, internal error, or an HTTP status that may pass.
        (_, Some(8 | 9)) | (429 | 500..=599 | 408, _) => Err(SendError::Retryable(what)),
        // Token missing, disabled, invalid; index refused; a body Splunk will not take.
        _ => Err(SendError::NonRetryable(what)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn an_event_carries_time_source_and_the_record() {
        let item = Item {
            seq: 7,
            id: "r7".into(),
            org: "acme".into(),
            time: chrono::Utc
                .timestamp_micros(1_700_000_000_250_000)
                .single()
                .unwrap(),
            received_at: chrono::Utc::now(),
            json: br#"{"id":"r7","seq":7}"#.as_slice().into(),
        };
        let event = |item: &Item, sourcetype, index| {
            let mut body = Vec::new();
            EventFields::new(&item.org, "h\"1", sourcetype, index)
                .unwrap()
                .push(&mut body, item);
            serde_json::from_slice::<Value>(&body).unwrap()
        };
        let e = event(&item, "codestax:audit", Some("main"));
        assert_eq!(e["time"], serde_json::json!(1_700_000_000.25));
        assert_eq!(e["host"], "h\"1");
        assert_eq!(e["source"], "codestax:acme");
        assert_eq!(e["sourcetype"], "codestax:audit");
        assert_eq!(e["index"], "main");
        assert_eq!(e["event"]["seq"], 7);
        let e = event(&item, "st", None);
        assert!(e.get("index").is_none());
        assert_eq!(e["event"]["id"], "r7");
        // Before 1970 too, exactly.
        let item = Item {
            time: chrono::Utc.timestamp_micros(-1_500_000).single().unwrap(),
            ..item
        };
        assert_eq!(event(&item, "st", None)["time"], serde_json::json!(-1.5));
    }

    #[test]
    fn answers_are_classified_by_status_and_code() {
        assert_eq!(classify(200, Some(0)), Ok(()));
        assert!(matches!(
            classify(200, Some(6)),
            Err(SendError::NonRetryable(_))
        ));
        assert!(matches!(
            classify(401, Some(4)),
            Err(SendError::NonRetryable(_))
        ));
        assert!(matches!(
            classify(403, Some(1)),
            Err(SendError::NonRetryable(_))
        ));
        assert!(matches!(
            classify(400, Some(7)),
            Err(SendError::NonRetryable(_))
        ));
        assert!(matches!(
            classify(503, Some(9)),
            Err(SendError::Retryable(_))
        ));
        assert!(matches!(classify(502, None), Err(SendError::Retryable(_))));
    }
}
