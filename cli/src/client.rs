//! The collector's HTTP API as the CLI uses it: a blocking client with the bearer key, and API
//! errors turned into one-line messages (`403 forbidden: the audit log is available to ...`).

use codestax_common::api::{ErrorBody, IngestResponse, WhoAmI};
use serde::de::DeserializeOwned;
use std::time::Duration;

/// How long a JSON request may take in all.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What can go wrong talking to the collector.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The collector answered with an error.
    #[error("{status} {code}: {message}")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    /// The collector cannot take the request now (429 rate limited, 503 unavailable): the same
    /// request may be sent again after `retry_after`.
    #[error("{status} {code}: {message}")]
    Busy {
        status: u16,
        code: String,
        message: String,
        retry_after: Option<Duration>,
    },
    /// The collector could not be reached, or the transfer broke off.
    #[error("{what} {url}")]
    Network {
        what: &'static str,
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// The answer was not what the API promises.
    #[error("unexpected answer from {url}: {message}")]
    Protocol { url: String, message: String },
    /// The base URL cannot be used.
    #[error("invalid collector URL {url:?}: {message}")]
    BadUrl { url: String, message: String },
}

/// A client of one collector, acting with one API key.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    token: String,
    http: reqwest::blocking::Client,
}

impl Client {
    /// A client of the collector at `base_url` (`http://host:port`) using `token`.
    pub fn new(base_url: &str, token: &str) -> Result<Client, ClientError> {
        let base = base_url.trim().trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(ClientError::BadUrl {
                url: base_url.to_string(),
                message: "it must start with http:// or https://".into(),
            });
        }
        // No overall timeout: an export streams for as long as it needs. JSON requests set one.
        let http = reqwest::blocking::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(None)
            .user_agent(concat!("codestax-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|source| ClientError::Network {
                what: "cannot set up a client for",
                url: base.clone(),
                source,
            })?;
        Ok(Client {
            base,
            token: token.to_string(),
            http,
        })
    }

    /// The collector's base URL.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// `GET path?query`, answered with JSON.
    pub fn get_json<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<T, ClientError> {
        let url = self.url(path);
        let response = self.send(&url, query, Some(REQUEST_TIMEOUT))?;
        let body = response.text().map_err(|source| ClientError::Network {
            what: "the answer broke off from",
            url: url.clone(),
            source,
        })?;
        serde_json::from_str(&body).map_err(|e| ClientError::Protocol {
            url,
            message: e.to_string(),
        })
    }

    /// `GET path?query` whose body the caller streams (read it with `std::io::Read`). Fails on
    /// an error status before any of the body is read.
    pub fn get_stream(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<reqwest::blocking::Response, ClientError> {
        self.send(&self.url(path), query, None)
    }

    /// `POST path` with an NDJSON body (`/api/v1/ingest`, `/api/v1/import`): what was accepted
    /// and each rejected line. A 400 that rejected every line is an answer too (its body carries
    /// the same details); 429 and 503 are [`ClientError::Busy`].
    pub fn post_ndjson(
        &self,
        path: &str,
        query: &[(&str, String)],
        body: Vec<u8>,
    ) -> Result<IngestResponse, ClientError> {
        let url = self.url(path);
        let full =
            reqwest::Url::parse_with_params(&url, query).map_err(|e| ClientError::BadUrl {
                url: url.clone(),
                message: e.to_string(),
            })?;
        let response = self
            .http
            .post(full)
            .bearer_auth(&self.token)
            .header(reqwest::header::CONTENT_TYPE, "application/x-ndjson")
            .timeout(REQUEST_TIMEOUT)
            .body(body)
            .send()
            .map_err(|source| ClientError::Network {
                what: "cannot reach",
                url: url.clone(),
                source,
            })?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let text = response.text().map_err(|source| ClientError::Network {
            what: "the answer broke off from",
            url: url.clone(),
            source,
        })?;
        if status.is_success() || status == reqwest::StatusCode::BAD_REQUEST {
            if let Ok(answer) = serde_json::from_str::<IngestResponse>(&text) {
                return Ok(answer);
            }
            if status.is_success() {
                return Err(ClientError::Protocol {
                    url,
                    message: format!(
                        "not an ingest answer: {}",
                        text.chars().take(200).collect::<String>()
                    ),
                });
            }
        }
        match api_error(status, &text) {
            ClientError::Api {
                status,
                code,
                message,
            } if status == 429 || status == 503 => Err(ClientError::Busy {
                status,
                code,
                message,
                retry_after,
            }),
            other => Err(other),
        }
    }

    /// `GET /api/v1/whoami`: the key's id, org and role.
    pub fn whoami(&self) -> Result<WhoAmI, ClientError> {
        self.get_json("/api/v1/whoami", &[])
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn send(
        &self,
        url: &str,
        query: &[(&str, String)],
        timeout: Option<Duration>,
    ) -> Result<reqwest::blocking::Response, ClientError> {
        let full =
            reqwest::Url::parse_with_params(url, query).map_err(|e| ClientError::BadUrl {
                url: url.to_string(),
                message: e.to_string(),
            })?;
        let mut request = self.http.get(full).bearer_auth(&self.token);
        if let Some(t) = timeout {
            request = request.timeout(t);
        }
        let response = request.send().map_err(|source| ClientError::Network {
            what: "cannot reach",
            url: url.to_string(),
            source,
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = response.text().unwrap_or_default();
        Err(api_error(status, &body))
    }
}

/// The error a non-success answer stands for: its `{"error": {...}}` body when it has one.
fn api_error(status: reqwest::StatusCode, body: &str) -> ClientError {
    match serde_json::from_str::<ErrorBody>(body) {
        Ok(e) => ClientError::Api {
            status: status.as_u16(),
            code: e.error.code,
            message: e.error.message,
        },
        Err(_) => ClientError::Api {
            status: status.as_u16(),
            code: status
                .canonical_reason()
                .unwrap_or("error")
                .to_lowercase()
                .replace(' ', "_"),
            message: body.trim().chars().take(200).collect(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_errors_read_as_one_line() {
        let body = r#"{"error":{"code":"forbidden","message":"the audit log is available to ORG_ADMIN and ORG_OWNER keys only; this key is MEMBER"}}"#;
        let e = api_error(reqwest::StatusCode::FORBIDDEN, body);
        assert_eq!(
            e.to_string(),
            "403 forbidden: the audit log is available to ORG_ADMIN and ORG_OWNER keys only; this key is MEMBER"
        );
        let e = api_error(reqwest::StatusCode::BAD_GATEWAY, "upstream down\n");
        assert_eq!(e.to_string(), "502 bad_gateway: upstream down");
    }

    #[test]
    fn urls_are_checked() {
        assert!(Client::new("localhost:8470", "t").is_err());
        let c = Client::new("http://127.0.0.1:8470/", "t").unwrap();
        assert_eq!(c.base_url(), "http://127.0.0.1:8470");
    }
}
