//! Secret tokens: generated from the OS RNG, shown once, stored and compared only as SHA-256.

use super::KeyError;
use rand::TryRng;
use rand::rngs::SysRng;
use sha2::{Digest, Sha256};
use std::fmt;

/// Every token starts with this, so secret scanners can find leaked ones.
pub const TOKEN_PREFIX: &str = "csk_";
/// Random bytes in a token (256 bits).
const TOKEN_BYTES: usize = 32;
/// Length of a token: the prefix and the random bytes in hex.
pub(crate) const TOKEN_LEN: usize = TOKEN_PREFIX.len() + 2 * TOKEN_BYTES;

/// The secret that authenticates an API key. Its `Debug` never shows it; there is no `Display`
/// so it cannot end up in a log line by accident. Use [`Token::expose`] to hand it to the user once.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// A fresh token: `csk_` and 32 random bytes from the OS in lowercase hex.
    pub(crate) fn generate() -> Result<Token, KeyError> {
        let bytes: [u8; TOKEN_BYTES] = random_bytes()?;
        Ok(Token(format!("{TOKEN_PREFIX}{}", hex::encode(bytes))))
    }

    /// The secret itself, to show to the user once.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The SHA-256 of the token, as stored.
    pub(crate) fn hash(&self) -> TokenHash {
        TokenHash::of(&self.0)
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token({TOKEN_PREFIX}<redacted>)")
    }
}

/// SHA-256 of a token. Not a secret in the sense of the token (the token has 256 bits of entropy
/// so its hash cannot be inverted), but still never printed by the CLI.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct TokenHash(pub(crate) [u8; 32]);

impl TokenHash {
    pub(crate) fn of(token: &str) -> TokenHash {
        TokenHash(Sha256::digest(token.as_bytes()).into())
    }

    pub(crate) fn to_hex(self) -> String {
        hex::encode(self.0)
    }

    pub(crate) fn from_hex(s: &str) -> Option<TokenHash> {
        if s.len() != 64 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return None;
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(TokenHash(out))
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenHash(<redacted>)")
    }
}

/// `N` bytes from the operating system's RNG.
pub(crate) fn random_bytes<const N: usize>() -> Result<[u8; N], KeyError> {
    let mut bytes = [0u8; N];
    SysRng.try_fill_bytes(&mut bytes).map_err(KeyError::Rng)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_prefixed_random_and_redacted() {
        let a = Token::generate().unwrap();
        let b = Token::generate().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.expose().len(), TOKEN_LEN);
        assert!(a.expose().starts_with(TOKEN_PREFIX));
        let debug = format!("{a:?}");
        assert!(
            !debug.contains(&a.expose()[TOKEN_PREFIX.len()..]),
            "{debug}"
        );
        assert_eq!(TokenHash::from_hex(&a.hash().to_hex()), Some(a.hash()));
        assert_eq!(TokenHash::from_hex(&"A".repeat(64)), None);
        assert_eq!(TokenHash::from_hex("00"), None);
    }
}
