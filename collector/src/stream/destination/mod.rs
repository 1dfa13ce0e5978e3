//! Destinations: where a stream's batches go. [`Sender`] is the one type the delivery task
//! talks to; each kind is an arm wrapping its own sender (`https`, `splunk_hec`, `s3`,
//! `syslog`). A new kind adds: a [`Destination`](super::Destination) variant (definition and
//! checks), an arm built in [`Sender::new`], and its own file with `send` (whole batch accepted
//! or an error, with [`SendError::NonRetryable`] for answers that retrying will not fix) and
//! `test`.

mod batch;
mod connect;
mod hec;
mod http;
mod https;
mod s3;
mod sender;
mod syslog;

pub use batch::{Delivered, Item, SendError, TestAnswer};
pub use connect::{CONNECT_TIMEOUT, SEND_TIMEOUT};
pub use hec::{EventFields, HEC_EVENT_PATH};
pub use https::{SIGNATURE_HEADER, signature};
pub(crate) use s3::http_connector;
pub use s3::object_key;
pub use sender::Sender;
pub use syslog::{MessageLimit, hostname, push_message};
