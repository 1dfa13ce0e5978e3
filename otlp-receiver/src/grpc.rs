//! OTLP/gRPC: `LogsService/Export` in front of a [`LogsSink`]. tonic decodes the message
//! (gzip accepted, size bounded); the records are converted off the runtime when many.

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use tonic::codec::CompressionEncoding;
use tonic::{Request, Response, Status};

use crate::{Bearer, LogsSink, Transport, export};

/// The gRPC logs service over a sink.
pub struct GrpcReceiver<S> {
    sink: S,
}

/// The tonic service: gzip accepted and sent, messages up to `max_message_bytes`.
pub fn service<S: LogsSink>(
    sink: S,
    max_message_bytes: usize,
) -> LogsServiceServer<GrpcReceiver<S>> {
    LogsServiceServer::new(GrpcReceiver { sink })
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(max_message_bytes)
}

#[tonic::async_trait]
impl<S: LogsSink> LogsService for GrpcReceiver<S> {
    async fn export(
        &self,
        request: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        let bearer = Bearer::parse(
            request
                .metadata()
                .get("authorization")
                .map(|v| v.as_bytes()),
        );
        let sender = self.sink.authorize(bearer).map_err(|r| r.into_grpc())?;
        let (sender, batch) = export::convert(&self.sink, sender, request.into_inner())
            .await
            .map_err(|r| r.into_grpc())?;
        export::submit(&self.sink, sender, batch, Transport::Grpc)
            .await
            .map(Response::new)
            .map_err(|r| r.into_grpc())
    }
}
