//! `Authorization: Bearer <token>` (RFC 6750), read the same way from HTTP headers and gRPC
//! metadata, and the `WWW-Authenticate` challenges of a 401.

/// The challenge of a 401 without credentials (RFC 6750 section 3).
pub const CHALLENGE: &str = "Bearer realm=\"codestax-audit\"";
/// The challenge of a 401 whose token is malformed, unknown or revoked.
pub const INVALID_TOKEN_CHALLENGE: &str =
    "Bearer realm=\"codestax-audit\", error=\"invalid_token\"";

/// What the `Authorization` header of a request holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bearer<'a> {
    /// No `Authorization` header.
    Missing,
    /// A header that is not `Bearer <token>` with a non-empty token.
    Malformed,
    /// The token, trimmed.
    Token(&'a str),
}

impl<'a> Bearer<'a> {
    /// Reads the raw value of an `Authorization` header (HTTP) or `authorization` metadata (gRPC).
    pub fn parse(header: Option<&'a [u8]>) -> Bearer<'a> {
        let Some(header) = header else {
            return Bearer::Missing;
        };
        std::str::from_utf8(header)
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map_or(Bearer::Malformed, Bearer::Token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_bearer_scheme_only() {
        assert_eq!(Bearer::parse(None), Bearer::Missing);
        assert_eq!(Bearer::parse(Some(b"Bearer  abc ")), Bearer::Token("abc"));
        assert_eq!(Bearer::parse(Some(b"Bearer ")), Bearer::Malformed);
        assert_eq!(Bearer::parse(Some(b"Basic abc")), Bearer::Malformed);
        assert_eq!(Bearer::parse(Some(b"Bearer \xff")), Bearer::Malformed);
    }
}
