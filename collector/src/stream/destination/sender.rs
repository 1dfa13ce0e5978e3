//! [`Sender`]: the one type the delivery task talks to, an arm per destination kind.

use super::batch::{Delivered, Item, SendError, TestAnswer};
use super::hec::HecSender;
use super::https::HttpsSender;
use super::s3::S3Sender;
use super::syslog::SyslogSender;
use crate::stream::allow::Allowlist;
use crate::stream::definition::{Destination, Secrets};

/// A destination, ready to send.
pub enum Sender {
    Https(HttpsSender),
    SplunkHec(HecSender),
    S3(S3Sender),
    Syslog(SyslogSender),
}

impl Sender {
    /// A sender for `destination`; connects lazily.
    pub fn new(
        stream_id: &str,
        destination: &Destination,
        secrets: &Secrets,
        allow: Allowlist,
    ) -> Result<Sender, SendError> {
        Ok(match destination {
            Destination::Https { url, ca_pem } => Sender::Https(HttpsSender::new(
                stream_id,
                url,
                ca_pem.as_deref(),
                secrets,
                allow,
            )?),
            Destination::SplunkHec {
                url,
                index,
                sourcetype,
                ca_pem,
            } => Sender::SplunkHec(HecSender::new(
                url,
                secrets.token.as_deref(),
                index.as_deref(),
                sourcetype,
                ca_pem.as_deref(),
                allow,
            )?),
            Destination::S3 { .. } => {
                Sender::S3(S3Sender::new(stream_id, destination, secrets, allow)?)
            }
            Destination::Syslog {
                address,
                tls,
                ca_pem,
                max_message_bytes,
            } => Sender::Syslog(SyslogSender::new(
                address,
                *tls,
                ca_pem.as_deref(),
                *max_message_bytes,
                allow,
            )?),
        })
    }

    /// Sends a batch, all or nothing as far as the cursor goes: `Ok` only when the destination
    /// accepted every item.
    pub async fn send(&mut self, items: &[Item]) -> Result<Delivered, SendError> {
        match self {
            Sender::Https(s) => s.send(items).await.map(|()| Delivered::default()),
            Sender::SplunkHec(s) => s.send(items).await.map(|()| Delivered::default()),
            Sender::S3(s) => s.send(items).await.map(|()| Delivered::default()),
            Sender::Syslog(s) => s.send(items).await,
        }
    }

    /// Whether the destination names what it stores by the batch's `seq` range (S3's object
    /// keys): a batch sent again must then cover the same range, or a reader sees a record
    /// in two objects.
    pub fn names_by_range(&self) -> bool {
        matches!(self, Sender::S3(_))
    }

    /// Sends one test event and reports the answer (never its body).
    pub async fn test(&mut self, item: &Item) -> Result<TestAnswer, SendError> {
        match self {
            Sender::Https(s) => s.test(item).await,
            Sender::SplunkHec(s) => s.test(item).await,
            Sender::S3(s) => s.test(item).await,
            Sender::Syslog(s) => s
                .send(std::slice::from_ref(item))
                .await
                .map(|_| TestAnswer {
                    status: None,
                    accepted: true,
                }),
        }
    }
}
