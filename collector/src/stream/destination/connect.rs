//! Opening a destination's connection: the address checked against the allowlist, TCP with a
//! timeout, TLS when asked.

use super::batch::SendError;
use crate::stream::allow::{Allowlist, Refused};
use std::time::Duration;

/// How long a connection may take to open (TCP and TLS).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a batch may take to be accepted once connected.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// A connection's stream: TCP, or TLS over TCP.
pub(crate) trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> Io for T {}

/// Resolves and checks `host` against the allowlist, connects to a checked address, and adds
/// TLS when asked (the certificate checked for `host`).
pub(crate) async fn connect(
    allow: &Allowlist,
    host: &str,
    port: u16,
    tls: Option<&std::sync::Arc<tokio_rustls::rustls::ClientConfig>>,
) -> Result<Box<dyn Io>, SendError> {
    let addrs = allow.resolve(host, port).await.map_err(|e| match e {
        Refused::Resolve { .. } => SendError::Retryable(e.to_string()),
        Refused::Internal { .. } => SendError::NonRetryable(e.to_string()),
    })?;
    let mut last = None;
    let mut tcp = None;
    for addr in addrs {
        match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(s)) => {
                tcp = Some(s);
                break;
            }
            Ok(Err(e)) => last = Some(format!("cannot connect to {addr}: {e}")),
            Err(_) => last = Some(format!("connecting to {addr} timed out")),
        }
    }
    let Some(tcp) = tcp else {
        return Err(SendError::Retryable(
            last.unwrap_or_else(|| "no address".into()),
        ));
    };
    let _ = tcp.set_nodelay(true);
    let Some(config) = tls else {
        return Ok(Box::new(tcp));
    };
    let name = rustls_pki_types::ServerName::try_from(host.to_string())
        .map_err(|e| SendError::NonRetryable(format!("{host} is not a TLS server name: {e}")))?;
    let connector = tokio_rustls::TlsConnector::from(config.clone());
    match tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name, tcp)).await {
        Ok(Ok(s)) => Ok(Box::new(s)),
        Ok(Err(e)) => {
            // A certificate the stream does not trust will not become trusted by retrying.
            let certificate = e
                .get_ref()
                .is_some_and(|inner| inner.to_string().contains("certificate"));
            let message = format!("TLS with {host}: {e}");
            Err(if certificate {
                SendError::NonRetryable(message)
            } else {
                SendError::Retryable(message)
            })
        }
        Err(_) => Err(SendError::Retryable(format!("TLS with {host} timed out"))),
    }
}
