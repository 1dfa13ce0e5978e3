//! The CodeStax agent: tails audit emit files and receives OTLP logs, keeps records durable in
//! a disk spool and forwards them to the collector over OTLP/gRPC.

pub mod checkpoint;
pub mod forward;
pub mod metrics;
pub mod quarantine;
pub mod receiver;
pub mod source;
pub mod spool;
mod state_file;

pub use state_file::StateFileError;
