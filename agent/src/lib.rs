//! The CodeStax agent: tails audit emit files and receives OTLP logs, keeps records durable in
//! a disk spool and forwards them to the collector over OTLP/gRPC.
//!
//! [`run`] is the whole agent; the modules are its parts: [`spool`] (durable buffer),
//! [`checkpoint`] (file positions), [`source::file`] (tailing), [`receiver`] (OTLP intake),
//! [`forward`] (delivery to the collector), [`quarantine`], [`api`] and [`metrics`].
// Unsafe only in the libc calls allowed where they are (malloc_trim, setrlimit).
#![deny(unsafe_code)]

pub mod api;
pub mod checkpoint;
pub mod encoded;
pub mod forward;
mod memory;
pub mod metrics;
pub mod quarantine;
pub mod receiver;
mod run;
pub mod source;
pub mod spool;

pub use codestax_storage::StateFileError;
pub use run::{AgentError, RunningAgent, run, run_until, shutdown_signal, start};
