//! The HTTP/1.1 client of the `https` and `splunk_hec` destinations: one kept-alive connection
//! per stream, opened through [`connect`] (the address checked against the allowlist, TLS when
//! the URL is `https://`) and opened again when the destination closes it or a request fails.
//! A connection per batch cost a TCP (and TLS) handshake per 500 records.

use super::batch::SendError;
use super::connect::{CONNECT_TIMEOUT, SEND_TIMEOUT, connect};
use crate::stream::allow::Allowlist;
use crate::stream::definition::unbracket;
use crate::stream::tls::client_config;
use axum::http::{HeaderValue, Request, Uri};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use std::sync::Arc;

/// The most of an answer's body read (a longer one closes the connection instead).
const ANSWER_LIMIT: usize = 64 * 1024;

/// Where a destination's URL points, and its connection when one is open.
pub(crate) struct HttpClient {
    uri: Uri,
    host: String,
    port: u16,
    authority: HeaderValue,
    tls: Option<Arc<tokio_rustls::rustls::ClientConfig>>,
    allow: Allowlist,
    conn: Option<Connection>,
}

struct Connection {
    sender: SendRequest<Full<Bytes>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An answer: its status and (up to [`ANSWER_LIMIT`]) its body.
pub(crate) struct Answer {
    pub status: u16,
    /// `None` when longer than the limit or cut short.
    pub body: Option<Bytes>,
}

impl HttpClient {
    /// A client of `url` (`https://` or `http://`), trusting `ca_pem` (else the system roots).
    pub(crate) fn new(
        url: &str,
        ca_pem: Option<&str>,
        allow: Allowlist,
    ) -> Result<HttpClient, SendError> {
        let bad = |m: String| SendError::NonRetryable(m);
        let uri: Uri = url.parse().map_err(|e| bad(format!("not a URL: {e}")))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(bad("the URL must be https:// or http://".into())),
        };
        let host = unbracket(
            uri.host()
                .ok_or_else(|| bad("the URL has no host".into()))?,
        )
        .to_string();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let authority = HeaderValue::from_str(uri.authority().map_or(&host, |a| a.as_str()))
            .map_err(|e| bad(e.to_string()))?;
        let tls = if https {
            Some(client_config(ca_pem).map_err(bad)?)
        } else {
            None
        };
        Ok(HttpClient {
            uri,
            host,
            port,
            authority,
            tls,
            allow,
            conn: None,
        })
    }

    pub(crate) fn uri(&self) -> &Uri {
        &self.uri
    }

    /// The `Host` header's value.
    pub(crate) fn authority(&self) -> &HeaderValue {
        &self.authority
    }

    /// Sends `req` on the open connection, or on a new one when there is none or the open one
    /// was closed meanwhile (idle connections are closed by servers at will); reads the answer.
    /// A request that fails on a kept connection is not sent again here: the batch is retried
    /// as a whole (at least once), on a new connection.
    pub(crate) async fn send(&mut self, req: Request<Full<Bytes>>) -> Result<Answer, SendError> {
        if let Some(c) = &mut self.conn
            && (c.task.is_finished() || c.sender.ready().await.is_err())
        {
            self.conn = None;
        }
        if self.conn.is_none() {
            self.conn = Some(self.open().await?);
        }
        let c = self.conn.as_mut().expect("opened above");
        let answer = tokio::time::timeout(SEND_TIMEOUT, async {
            let response = c
                .sender
                .send_request(req)
                .await
                .map_err(|e| SendError::Retryable(format!("HTTP: {e}")))?;
            let status = response.status().as_u16();
            let body = Limited::new(response.into_body(), ANSWER_LIMIT)
                .collect()
                .await
                .ok()
                .map(|b| b.to_bytes());
            Ok::<_, SendError>(Answer { status, body })
        })
        .await
        .unwrap_or_else(|_| {
            Err(SendError::Retryable(format!(
                "no answer within {SEND_TIMEOUT:?}"
            )))
        });
        // A failed request, or an answer not read to its end, leaves the connection unusable.
        if !matches!(&answer, Ok(a) if a.body.is_some()) {
            self.conn = None;
        }
        answer
    }

    async fn open(&self) -> Result<Connection, SendError> {
        let io = connect(&self.allow, &self.host, self.port, self.tls.as_ref()).await?;
        let (sender, conn) = tokio::time::timeout(
            CONNECT_TIMEOUT,
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io)),
        )
        .await
        .map_err(|_| SendError::Retryable("the HTTP handshake timed out".into()))?
        .map_err(|e| SendError::Retryable(format!("HTTP handshake: {e}")))?;
        let task = tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Connection { sender, task })
    }
}
