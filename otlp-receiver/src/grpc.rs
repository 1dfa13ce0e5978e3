//! OTLP/gRPC: `LogsService/Export` in front of a [`LogsSink`]. tonic reads the frame (gzip
//! accepted, size bounded) and hands over the message's bytes undecoded, so the protobuf
//! decoding and the conversion of the records run on a blocking thread like OTLP/HTTP's.

use std::convert::Infallible;
use std::task::{Context, Poll};

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;
use prost::Message;
use tonic::codec::{
    Codec, CompressionEncoding, DecodeBuf, Decoder, EnabledCompressionEncodings, EncodeBuf, Encoder,
};
use tonic::codegen::{Body, BoxFuture, Bytes, Service, StdError, http};
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::{Request, Response, Status};

use crate::{Bearer, Logs, LogsSink, Refusal, Transport, export};

/// The gRPC service's name, as routed.
pub const SERVICE_NAME: &str = "opentelemetry.proto.collector.logs.v1.LogsService";
const EXPORT_PATH: &str = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";

/// The gRPC logs service over a sink: add it to a `tonic::transport::Server`.
pub struct GrpcReceiver<S> {
    sink: S,
    max_message_bytes: usize,
}

impl<S: Clone> Clone for GrpcReceiver<S> {
    fn clone(&self) -> Self {
        GrpcReceiver {
            sink: self.sink.clone(),
            max_message_bytes: self.max_message_bytes,
        }
    }
}

/// The service: gzip accepted and sent, messages up to `max_message_bytes` (as received and
/// once inflated).
pub fn service<S: LogsSink>(sink: S, max_message_bytes: usize) -> GrpcReceiver<S> {
    GrpcReceiver {
        sink,
        max_message_bytes,
    }
}

impl<S> NamedService for GrpcReceiver<S> {
    const NAME: &'static str = SERVICE_NAME;
}

impl<S, B> Service<http::Request<B>> for GrpcReceiver<S>
where
    S: LogsSink,
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != EXPORT_PATH {
            return Box::pin(async { Ok(Status::unimplemented("").into_http()) });
        }
        let export = Export(self.sink.clone());
        let max = self.max_message_bytes;
        Box::pin(async move {
            let mut gzip = EnabledCompressionEncodings::default();
            gzip.enable(CompressionEncoding::Gzip);
            let mut grpc = Grpc::new(RawRequestCodec)
                .apply_compression_config(gzip, gzip)
                .apply_max_message_size_config(Some(max), None);
            Ok(grpc.unary(export, request).await)
        })
    }
}

/// One `Export` call.
struct Export<S>(S);

impl<S: LogsSink> UnaryService<Bytes> for Export<S> {
    type Response = ExportLogsServiceResponse;
    type Future = BoxFuture<Response<ExportLogsServiceResponse>, Status>;

    fn call(&mut self, request: Request<Bytes>) -> Self::Future {
        let sink = self.0.clone();
        Box::pin(async move {
            let bearer = Bearer::parse(
                request
                    .metadata()
                    .get("authorization")
                    .map(|v| v.as_bytes()),
            );
            let sender = sink.authorize(bearer).map_err(Refusal::into_grpc)?;
            let bytes = request.into_inner();
            let (sender, batch) = decode(&sink, sender, bytes)
                .await
                .map_err(Refusal::into_grpc)?;
            export::submit(&sink, sender, batch, Transport::Grpc)
                .await
                .map(Response::new)
                .map_err(Refusal::into_grpc)
        })
    }
}

/// Decodes and converts a request; off the runtime unless it is small.
async fn decode<S: LogsSink>(
    sink: &S,
    sender: S::Sender,
    bytes: Bytes,
) -> Result<(S::Sender, S::Batch), Refusal> {
    let sink = sink.clone();
    export::decoding(bytes.len(), move || {
        let batch = sink.convert(&sender, Logs::Protobuf(&bytes))?;
        Ok((sender, batch))
    })
    .await?
}

/// Hands the message's bytes over undecoded; encodes the answer with prost.
struct RawRequestCodec;

impl Codec for RawRequestCodec {
    type Encode = ExportLogsServiceResponse;
    type Decode = Bytes;
    type Encoder = RawRequestCodec;
    type Decoder = RawRequestCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawRequestCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawRequestCodec
    }
}

impl Encoder for RawRequestCodec {
    type Item = ExportLogsServiceResponse;
    type Error = Status;

    fn encode(&mut self, item: Self::Item, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst)
            .map_err(|e| Status::internal(format!("cannot encode the answer: {e}")))
    }
}

impl Decoder for RawRequestCodec {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        use prost::bytes::Buf;
        // The frame's own bytes, split off without copying.
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}
