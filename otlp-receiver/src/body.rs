//! Request bodies within limits: the body size, then `Content-Encoding` (gzip or none; anything
//! else is refused) inflated to a second limit, so a gzip bomb is refused after
//! producing at most the limit. Reading is async; inflating is CPU work for the caller to run
//! off the runtime ([`ContentEncoding::decode`]).

use std::io::Read;

use axum::body::Body;
use axum::http::HeaderMap;
use axum::http::header::CONTENT_ENCODING;

/// Why a body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("request body is over the limit of {limit} bytes")]
    TooLarge { limit: usize },
    #[error("decompressed request body is over the limit of {limit} bytes")]
    DecompressedTooLarge { limit: usize },
    #[error("Content-Encoding {0:?} is not supported; use gzip or none")]
    UnsupportedEncoding(String),
    #[error("request body is not valid gzip: {0}")]
    BadGzip(std::io::Error),
    #[error("could not read the request body: {0}")]
    Read(String),
}

/// A body's `Content-Encoding`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentEncoding {
    Identity,
    Gzip,
}

impl ContentEncoding {
    /// The request's encoding: none, `identity` or `gzip` (any case); anything else is refused.
    pub fn of(headers: &HeaderMap) -> Result<ContentEncoding, BodyError> {
        let value = headers.get(CONTENT_ENCODING).map(|v| {
            String::from_utf8_lossy(v.as_bytes())
                .trim()
                .to_ascii_lowercase()
        });
        match value.as_deref() {
            None | Some("") | Some("identity") => Ok(ContentEncoding::Identity),
            Some("gzip") => Ok(ContentEncoding::Gzip),
            Some(other) => Err(BodyError::UnsupportedEncoding(other.to_string())),
        }
    }

    /// The body as sent, decoded to at most `max_decoded` bytes.
    pub fn decode(self, raw: Vec<u8>, max_decoded: usize) -> Result<Vec<u8>, BodyError> {
        match self {
            ContentEncoding::Identity => Ok(raw),
            ContentEncoding::Gzip => inflate(&raw, max_decoded),
        }
    }
}

/// Reads and decodes a small body (a control route's JSON) on the calling task: at most
/// `max_body` bytes, inflated to at most `max_decoded`.
pub async fn read_body(
    headers: &HeaderMap,
    body: Body,
    max_body: usize,
    max_decoded: usize,
) -> Result<Vec<u8>, BodyError> {
    // Read first, so the client finishes sending and reads the refusal.
    let raw = read_limited(body, max_body).await?;
    ContentEncoding::of(headers)?.decode(raw, max_decoded)
}

/// How much of a refused body is still read (and thrown away) so the client finishes sending
/// and reads the 413, instead of losing it to a connection reset; past this the connection is
/// simply closed.
const DRAIN_LIMIT: usize = 64 * 1024 * 1024;
/// How long a refused body is drained at most.
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(10);

/// Collects a body of at most `max` bytes. A longer one is drained (bounded) and refused.
pub async fn read_limited(mut body: Body, max: usize) -> Result<Vec<u8>, BodyError> {
    use http_body_util::BodyExt;
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| BodyError::Read(e.to_string()))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if out.len() + data.len() > max {
            let mut drained = out.len() + data.len();
            let _ = tokio::time::timeout(DRAIN_TIME, async {
                while drained <= DRAIN_LIMIT {
                    match body.frame().await {
                        Some(Ok(f)) => drained += f.data_ref().map_or(0, |d| d.len()),
                        _ => break,
                    }
                }
            })
            .await;
            return Err(BodyError::TooLarge { limit: max });
        }
        out.extend_from_slice(&data);
    }
    Ok(out)
}

/// Inflates gzip data (concatenated members too), refusing output over `limit` bytes.
pub fn inflate(data: &[u8], limit: usize) -> Result<Vec<u8>, BodyError> {
    let mut out = Vec::new();
    let decoder = flate2::read::MultiGzDecoder::new(data);
    decoder
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(BodyError::BadGzip)?;
    if out.len() > limit {
        return Err(BodyError::DecompressedTooLarge { limit });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn gzip_bomb_is_refused_at_the_limit() {
        let bomb = gzip(&vec![0u8; 50 * 1024 * 1024]);
        assert!(bomb.len() < 100 * 1024, "a small body");
        assert!(matches!(
            inflate(&bomb, 1024 * 1024),
            Err(BodyError::DecompressedTooLarge { limit: 1048576 })
        ));
        assert_eq!(inflate(&gzip(b"hello"), 5).unwrap(), b"hello");
        assert!(matches!(
            inflate(b"not gzip", 100),
            Err(BodyError::BadGzip(_))
        ));
    }

    #[test]
    fn only_gzip_and_identity_are_known_encodings() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(CONTENT_ENCODING, v.parse().unwrap());
            ContentEncoding::of(&h)
        };
        assert_eq!(
            ContentEncoding::of(&HeaderMap::new()).unwrap(),
            ContentEncoding::Identity
        );
        assert_eq!(with(" GZIP ").unwrap(), ContentEncoding::Gzip);
        assert_eq!(with("identity").unwrap(), ContentEncoding::Identity);
        assert!(matches!(with("br"), Err(BodyError::UnsupportedEncoding(e)) if e == "br"));
        assert!(matches!(
            with("gzip, br"),
            Err(BodyError::UnsupportedEncoding(_))
        ));
    }
}
