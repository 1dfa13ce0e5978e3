//! The connection to the collector: endpoint, TLS (rustls), gzip and the bearer token.

use std::path::PathBuf;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use tonic::codec::CompressionEncoding;
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

/// How long one request may take before it counts as failed (and is retried).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest response accepted.
const MAX_RESPONSE_BYTES: usize = 16 << 20;

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
#[derive(Clone)]
pub struct Upstream {
    client: LogsServiceClient<Channel>,
    authorization: Option<MetadataValue<tonic::metadata::Ascii>>,
}

impl Upstream {
    /// Checks the settings and prepares the channel; nothing is dialled until the first send.
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
        let client = LogsServiceClient::new(ep.connect_lazy())
            .send_compressed(CompressionEncoding::Gzip)
            .accept_compressed(CompressionEncoding::Gzip)
            .max_decoding_message_size(MAX_RESPONSE_BYTES);
        Ok(Upstream {
            client,
            authorization,
        })
    }

    /// Sends one request.
    pub async fn export(
        &mut self,
        request: ExportLogsServiceRequest,
    ) -> Result<ExportLogsServiceResponse, tonic::Status> {
        let mut request = tonic::Request::new(request);
        if let Some(value) = &self.authorization {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        self.client
            .export(request)
            .await
            .map(tonic::Response::into_inner)
    }
}
