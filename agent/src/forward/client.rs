//! The connection to the collector: endpoint, TLS (rustls), compression and the bearer token.
//!
//! Requests are sent as gRPC calls written here rather than through a generated client: the
//! request message arrives already encoded (the spool holds encoded LogRecords, see
//! [`super::request`]), and the compression is chosen here (tonic's own gzip is fixed at level
//! 6, several times slower than level 1 for the same kind of data). The response, its status
//! and the status details are read as tonic reads them.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;
use prost::Message;
use tonic::codegen::http;
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Status};
use tower::ServiceExt;

pub use codestax_config::Compression;

/// How long one request may take before it counts as failed (and is retried).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest response accepted.
const MAX_RESPONSE_BYTES: usize = 16 << 20;
/// Bytes of a gRPC message's frame header: compressed flag, length (u32, big-endian).
pub const FRAME_HEADER: usize = 5;
/// The gRPC method of OTLP logs.
const EXPORT_PATH: &str = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";
/// gzip level of requests: level 1 compresses audit records nearly as well as level 6 (about
/// 10 % larger output) at several times the speed.
const GZIP_LEVEL: u32 = 1;

/// The collector settings could not be turned into a client.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("collector.endpoint {endpoint:?} is not a valid URI: {source}")]
    Endpoint {
        endpoint: String,
        source: tonic::transport::Error,
    },
    #[error("cannot read collector.tls.ca_file {path}: {source}")]
    CaFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("collector TLS settings: {0}")]
    Tls(tonic::transport::Error),
    #[error("collector.token contains characters not allowed in a header")]
    Token,
}

/// A lazily connected client for the collector's `LogsService` (it reconnects by itself).
/// Clones share the connection; requests from several clones are multiplexed on it.
#[derive(Clone)]
pub struct Upstream {
    channel: Channel,
    authorization: Option<MetadataValue<tonic::metadata::Ascii>>,
    endpoint: String,
    /// gzip the requests (else they go uncompressed).
    gzip: bool,
}

impl Upstream {
    /// Checks the settings and prepares the channel; nothing is dialled until the first send.
    /// Requests are compressed as [`Compression::Auto`] says; see [`Upstream::with_compression`].
    pub fn new(
        endpoint: &str,
        token: Option<&str>,
        tls: Option<(&Option<PathBuf>, &Option<String>)>,
    ) -> Result<Upstream, UpstreamError> {
        let mut ep = Endpoint::from_shared(endpoint.to_string())
            .map_err(|source| UpstreamError::Endpoint {
                endpoint: endpoint.to_string(),
                source,
            })?
            .connect_timeout(Duration::from_secs(5))
            .timeout(REQUEST_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(false);
        if let Some((ca_file, server_name)) = tls {
            let mut config = ClientTlsConfig::new();
            config = match ca_file {
                Some(path) => {
                    let pem = std::fs::read(path).map_err(|source| UpstreamError::CaFile {
                        path: path.clone(),
                        source,
                    })?;
                    config.ca_certificate(Certificate::from_pem(pem))
                }
                None => config.with_native_roots(),
            };
            if let Some(name) = server_name {
                config = config.domain_name(name.clone());
            }
            ep = ep.tls_config(config).map_err(UpstreamError::Tls)?;
        }
        let authorization = token
            .map(|t| {
                MetadataValue::try_from(format!("Bearer {t}")).map_err(|_| UpstreamError::Token)
            })
            .transpose()?;
        Ok(Upstream {
            channel: ep.connect_lazy(),
            authorization,
            endpoint: endpoint.to_string(),
            gzip: Compression::Auto.for_endpoint(endpoint) == Compression::Gzip,
        })
    }

    /// Compresses requests this way (`collector.compression`).
    pub fn with_compression(mut self, compression: Compression) -> Upstream {
        self.gzip = compression.for_endpoint(&self.endpoint) == Compression::Gzip;
        self
    }

    /// Sends one request: `message` is [`FRAME_HEADER`] bytes of room for the gRPC frame header,
    /// then an encoded `ExportLogsServiceRequest`.
    pub async fn export(&self, message: Vec<u8>) -> Result<ExportLogsServiceResponse, Status> {
        let body = if !self.gzip || message.len() < 64 * 1024 {
            frame(self.gzip, message)
        } else {
            // Compressing a large request takes milliseconds: not on the async workers.
            tokio::task::spawn_blocking(move || frame(true, message))
                .await
                .expect("compression does not panic")
        };
        let mut request = http::Request::builder()
            .method(http::Method::POST)
            .uri(EXPORT_PATH)
            .header(http::header::CONTENT_TYPE, "application/grpc")
            .header(http::header::TE, "trailers")
            .header(
                http::header::USER_AGENT,
                concat!("codestax-agent/", env!("CARGO_PKG_VERSION")),
            )
            .header("grpc-accept-encoding", "gzip");
        if self.gzip {
            request = request.header("grpc-encoding", "gzip");
        }
        if let Some(value) = &self.authorization {
            request = request.header(http::header::AUTHORIZATION, value.as_encoded_bytes());
        }
        let request = request
            .body(tonic::body::Body::new(http_body_util::Full::new(body)))
            .map_err(|e| Status::internal(format!("cannot build the request: {e}")))?;
        let call = async {
            let response = self.channel.clone().oneshot(request).await.map_err(|e| {
                Status::unavailable(format!("cannot reach the collector: {}", chain(&e)))
            })?;
            read_response(response).await
        };
        // The channel's timeout covers the response head; this one the body as well.
        match tokio::time::timeout(REQUEST_TIMEOUT + Duration::from_secs(5), call).await {
            Ok(result) => result,
            Err(_) => Err(Status::deadline_exceeded(
                "the collector did not answer in time",
            )),
        }
    }
}

/// The gRPC message frame (compressed flag, length, message) of a message behind
/// [`FRAME_HEADER`] bytes of room.
fn frame(gzip: bool, mut message: Vec<u8>) -> Bytes {
    match gzip {
        false => {
            let len = u32::try_from(message.len() - FRAME_HEADER).unwrap_or(u32::MAX);
            message[0] = 0;
            message[1..FRAME_HEADER].copy_from_slice(&len.to_be_bytes());
            Bytes::from(message)
        }
        true => {
            let mut out = Vec::with_capacity(FRAME_HEADER + message.len() / 3);
            out.extend_from_slice(&[1, 0, 0, 0, 0]);
            let mut encoder =
                flate2::write::GzEncoder::new(out, flate2::Compression::new(GZIP_LEVEL));
            encoder
                .write_all(&message[FRAME_HEADER..])
                .expect("writing to a Vec");
            let mut out = encoder.finish().expect("writing to a Vec");
            let len = u32::try_from(out.len() - 5).unwrap_or(u32::MAX);
            out[1..5].copy_from_slice(&len.to_be_bytes());
            Bytes::from(out)
        }
    }
}

/// Reads a unary gRPC response: the status (from the headers of a trailers-only response, else
/// from the trailers, else inferred from the HTTP status) and the message.
async fn read_response(
    response: http::Response<tonic::body::Body>,
) -> Result<ExportLogsServiceResponse, Status> {
    let (parts, body) = response.into_parts();
    if let Some(status) = Status::from_header_map(&parts.headers)
        && status.code() != Code::Ok
    {
        return Err(status);
    }
    if parts.status != http::StatusCode::OK {
        return Err(Status::new(
            http_code(parts.status),
            format!("the collector answered HTTP {}", parts.status),
        ));
    }
    let collected = body
        .collect()
        .await
        .map_err(|e| Status::unavailable(format!("the response broke off: {}", chain(&e))))?;
    let trailers = collected.trailers().cloned();
    let data = collected.to_bytes();
    match trailers.as_ref().and_then(Status::from_header_map) {
        Some(status) if status.code() != Code::Ok => return Err(status),
        Some(_) => {}
        None if Status::from_header_map(&parts.headers).is_some() => {} // trailers-only, OK
        None => {
            return Err(Status::internal(
                "the collector's response has no grpc-status",
            ));
        }
    }
    if data.is_empty() {
        return Ok(ExportLogsServiceResponse::default());
    }
    if data.len() < 5 {
        return Err(Status::internal("truncated response message"));
    }
    let len = u32::from_be_bytes(data[1..5].try_into().expect("4 bytes")) as usize;
    if len > MAX_RESPONSE_BYTES || data.len() < 5 + len {
        return Err(Status::internal(format!(
            "response message of {len} bytes (over {MAX_RESPONSE_BYTES} or truncated)"
        )));
    }
    let message = &data[5..5 + len];
    let decoded;
    let message = match data[0] {
        0 => message,
        1 => {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(message)
                .take(MAX_RESPONSE_BYTES as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| Status::internal(format!("cannot decompress the response: {e}")))?;
            decoded = out;
            &decoded[..]
        }
        flag => {
            return Err(Status::internal(format!(
                "unknown compression flag {flag} in the response"
            )));
        }
    };
    ExportLogsServiceResponse::decode(message)
        .map_err(|e| Status::internal(format!("cannot decode the response: {e}")))
}

/// The gRPC code for an HTTP status without a gRPC status
/// (<https://github.com/grpc/grpc/blob/master/doc/http-grpc-status-mapping.md>).
fn http_code(status: http::StatusCode) -> Code {
    match status {
        http::StatusCode::BAD_REQUEST => Code::Internal,
        http::StatusCode::UNAUTHORIZED => Code::Unauthenticated,
        http::StatusCode::FORBIDDEN => Code::PermissionDenied,
        http::StatusCode::NOT_FOUND => Code::Unimplemented,
        http::StatusCode::TOO_MANY_REQUESTS
        | http::StatusCode::BAD_GATEWAY
        | http::StatusCode::SERVICE_UNAVAILABLE
        | http::StatusCode::GATEWAY_TIMEOUT => Code::Unavailable,
        _ => Code::Unknown,
    }
}

/// An error and its sources, `a: b: c`.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}
