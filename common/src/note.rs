//! Signed tree heads as the transparency-log world writes them: C2SP signed notes
//! (<https://c2sp.org/signed-note>) with Ed25519 keys, whose text is a C2SP checkpoint
//! (<https://c2sp.org/tlog-checkpoint>). Existing tooling (Go's `sumdb/note`, witnesses) reads
//! both.
//!
//! A note is its text (ending in a newline), a blank line, and signature lines
//! `— <key name> <base64(key ID ‖ signature)>`; the key ID is the first four bytes of
//! `SHA-256(key name ‖ "\n" ‖ 0x01 ‖ public key)`. A verifier key is written
//! `<name>+<key ID in hex>+<base64(0x01 ‖ public key)>`; a signer key (the file the collector
//! keeps) `PRIVATE+KEY+<name>+<key ID in hex>+<base64(0x01 ‖ 32-byte seed)>`, as Go's
//! `note.GenerateKey` writes it.
//!
//! # The collector's checkpoints
//!
//! One tree per org, so one log per org: the origin line is `<key name>/orgs/<org id>`
//! ([`origin`]). The checkpoint's three lines are followed by one extension line,
//! `time <RFC 3339 UTC, microseconds>`: when the collector signed it. C2SP checkpoints have no
//! time field; an extension line is signed with the rest, and tools that do not know it pass it
//! by.

use crate::merkle::Hash;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::{DateTime, Utc};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use std::fmt;

/// The signature type byte of Ed25519 in signed notes.
pub const ED25519: u8 = 0x01;

/// Most signature lines a note may carry before it is refused (the spec asks for at least 16).
pub const MAX_SIGNATURES: usize = 64;

/// What is wrong with a note, a key or a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    #[error("key name {0:?} is empty or has a space or a '+'")]
    BadKeyName(String),
    #[error("not a verifier key (<name>+<key id>+<base64 key>): {0}")]
    BadVerifierKey(String),
    #[error("not a signer key (PRIVATE+KEY+<name>+<key id>+<base64 key>): {0}")]
    BadSignerKey(String),
    #[error("not a signed note: {0}")]
    Malformed(String),
    #[error("the note has no signature by key {name}+{id:08x}")]
    NotSigned { name: String, id: u32 },
    #[error(
        "the signature by key {name}+{id:08x} does not verify: the note was changed or not signed by this key"
    )]
    BadSignature { name: String, id: u32 },
    #[error("not a checkpoint: {0}")]
    BadCheckpoint(String),
}

/// The key ID of an Ed25519 key named `name`.
pub fn key_id(name: &str, public: &[u8; 32]) -> u32 {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n");
    h.update([ED25519]);
    h.update(public);
    let d = h.finalize();
    u32::from_be_bytes([d[0], d[1], d[2], d[3]])
}

/// Checks a key name: non-empty, no Unicode space, no `+`.
pub fn check_key_name(name: &str) -> Result<(), NoteError> {
    if name.is_empty()
        || name
            .chars()
            .any(|c| c.is_whitespace() || c == '+' || c.is_control())
    {
        return Err(NoteError::BadKeyName(name.to_string()));
    }
    Ok(())
}

/// A public key that verifies notes: its name, ID and Ed25519 key.
#[derive(Clone, PartialEq, Eq)]
pub struct VerifierKey {
    name: String,
    id: u32,
    key: VerifyingKey,
}

impl VerifierKey {
    /// Reads `<name>+<hex id>+<base64(0x01 ‖ key)>`; the ID must be the key's.
    pub fn parse(s: &str) -> Result<VerifierKey, NoteError> {
        let bad = |why: &str| NoteError::BadVerifierKey(why.to_string());
        let s = s.trim();
        // The name has no '+'; the base64 key may.
        let mut parts = s.splitn(3, '+');
        let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad("it needs three parts separated by '+'"));
        };
        check_key_name(name)?;
        let id = parse_id(id).ok_or_else(|| bad("the key id is not 8 hex digits"))?;
        let raw = B64.decode(key).map_err(|_| bad("the key is not base64"))?;
        let Some((&ED25519, public)) = raw.split_first() else {
            return Err(bad("only Ed25519 keys (type 0x01) are supported"));
        };
        let public: [u8; 32] = public
            .try_into()
            .map_err(|_| bad("an Ed25519 key is 32 bytes"))?;
        let key = VerifyingKey::from_bytes(&public).map_err(|_| bad("not an Ed25519 point"))?;
        if key_id(name, &public) != id {
            return Err(bad("the key id does not match the name and key"));
        }
        Ok(VerifierKey {
            name: name.to_string(),
            id,
            key,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn id(&self) -> u32 {
        self.id
    }

    /// The raw Ed25519 public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.key.to_bytes()
    }
}

impl fmt::Display for VerifierKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut raw = vec![ED25519];
        raw.extend_from_slice(self.key.as_bytes());
        write!(f, "{}+{:08x}+{}", self.name, self.id, B64.encode(raw))
    }
}

impl fmt::Debug for VerifierKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VerifierKey({self})")
    }
}

fn parse_id(s: &str) -> Option<u32> {
    if s.len() != 8 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(s, 16).ok()
}

/// A private key that signs notes. Its `Debug` shows only the public half.
#[derive(Clone)]
pub struct NoteSigner {
    name: String,
    id: u32,
    key: SigningKey,
}

impl NoteSigner {
    /// The signer named `name` whose Ed25519 seed is `seed` (32 random bytes for a new key).
    pub fn new(name: &str, seed: [u8; 32]) -> Result<NoteSigner, NoteError> {
        check_key_name(name)?;
        let key = SigningKey::from_bytes(&seed);
        Ok(NoteSigner {
            name: name.to_string(),
            id: key_id(name, key.verifying_key().as_bytes()),
            key,
        })
    }

    /// Reads `PRIVATE+KEY+<name>+<hex id>+<base64(0x01 ‖ seed)>`; the ID must be the key's.
    pub fn parse(s: &str) -> Result<NoteSigner, NoteError> {
        let bad = |why: &str| NoteError::BadSignerKey(why.to_string());
        let rest = s
            .trim()
            .strip_prefix("PRIVATE+KEY+")
            .ok_or_else(|| bad("it does not start with PRIVATE+KEY+"))?;
        let mut parts = rest.splitn(3, '+');
        let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad("it needs a name, a key id and a key separated by '+'"));
        };
        let id = parse_id(id).ok_or_else(|| bad("the key id is not 8 hex digits"))?;
        let raw = B64.decode(key).map_err(|_| bad("the key is not base64"))?;
        let Some((&ED25519, seed)) = raw.split_first() else {
            return Err(bad("only Ed25519 keys (type 0x01) are supported"));
        };
        let seed: [u8; 32] = seed
            .try_into()
            .map_err(|_| bad("an Ed25519 seed is 32 bytes"))?;
        let signer = NoteSigner::new(name, seed)?;
        if signer.id != id {
            return Err(bad("the key id does not match the name and key"));
        }
        Ok(signer)
    }

    /// The signer key in its text form: a secret, for the key file only.
    pub fn encode(&self) -> String {
        let mut raw = vec![ED25519];
        raw.extend_from_slice(self.key.as_bytes());
        format!(
            "PRIVATE+KEY+{}+{:08x}+{}",
            self.name,
            self.id,
            B64.encode(raw)
        )
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A secret for another use, derived from this key (HMAC-SHA256 of `purpose` under the
    /// seed): whoever holds the key derives the same one, and no purpose's secret tells
    /// anything of another's or of the key.
    pub fn derive_key(&self, purpose: &str) -> [u8; 32] {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(self.key.as_bytes()).expect("HMAC takes any key length");
        mac.update(purpose.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// The matching public key.
    pub fn verifier(&self) -> VerifierKey {
        VerifierKey {
            name: self.name.clone(),
            id: self.id,
            key: self.key.verifying_key(),
        }
    }

    /// The signed note of `text` (which must end in a newline and hold no control character
    /// other than newlines): the text, a blank line and this key's signature line.
    pub fn sign(&self, text: &str) -> Result<String, NoteError> {
        check_text(text)?;
        let signature = self.key.sign(text.as_bytes());
        let mut raw = self.id.to_be_bytes().to_vec();
        raw.extend_from_slice(&signature.to_bytes());
        Ok(format!("{text}\n— {} {}\n", self.name, B64.encode(raw)))
    }
}

impl fmt::Debug for NoteSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NoteSigner({})", self.verifier())
    }
}

fn check_text(text: &str) -> Result<(), NoteError> {
    if !text.ends_with('\n') {
        return Err(NoteError::Malformed(
            "the text does not end in a newline".into(),
        ));
    }
    if text.chars().any(|c| c.is_control() && c != '\n') {
        return Err(NoteError::Malformed(
            "the text has a control character other than a newline".into(),
        ));
    }
    Ok(())
}

/// Checks `note`'s signatures by `key` and returns its text. Signatures by other keys are
/// ignored; at least one by `key` must be there, and every one by `key` must verify.
pub fn open<'a>(note: &'a str, key: &VerifierKey) -> Result<&'a str, NoteError> {
    if note.chars().any(|c| c.is_control() && c != '\n') {
        return Err(NoteError::Malformed(
            "it has a control character other than a newline".into(),
        ));
    }
    let split = note
        .rfind("\n\n")
        .ok_or_else(|| NoteError::Malformed("no blank line before the signatures".into()))?;
    let (text, sigs) = (&note[..split + 1], &note[split + 2..]);
    if sigs.is_empty() || !sigs.ends_with('\n') {
        return Err(NoteError::Malformed(
            "the signature lines do not end in a newline".into(),
        ));
    }
    let lines: Vec<&str> = sigs[..sigs.len() - 1].split('\n').collect();
    if lines.len() > MAX_SIGNATURES {
        return Err(NoteError::Malformed(format!(
            "{} signatures, more than {MAX_SIGNATURES}",
            lines.len()
        )));
    }
    let mut verified = false;
    for line in lines {
        let rest = line
            .strip_prefix("— ")
            .ok_or_else(|| NoteError::Malformed(format!("not a signature line: {line:?}")))?;
        let (name, sig) = rest
            .split_once(' ')
            .ok_or_else(|| NoteError::Malformed(format!("not a signature line: {line:?}")))?;
        check_key_name(name).map_err(|_| NoteError::Malformed(format!("bad key name {name:?}")))?;
        let raw = B64
            .decode(sig)
            .map_err(|_| NoteError::Malformed(format!("signature of {name} is not base64")))?;
        if raw.len() < 4 {
            return Err(NoteError::Malformed(format!(
                "signature of {name} is too short"
            )));
        }
        let id = u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]);
        if name != key.name || id != key.id {
            continue;
        }
        let bad = || NoteError::BadSignature {
            name: key.name.clone(),
            id: key.id,
        };
        let signature = Signature::from_slice(&raw[4..]).map_err(|_| bad())?;
        key.key
            .verify_strict(text.as_bytes(), &signature)
            .map_err(|_| bad())?;
        verified = true;
    }
    if !verified {
        return Err(NoteError::NotSigned {
            name: key.name.clone(),
            id: key.id,
        });
    }
    Ok(text)
}

/// The origin line of `org`'s checkpoints from the collector whose key is named `key_name`.
pub fn origin(key_name: &str, org: &str) -> String {
    format!("{key_name}/orgs/{org}")
}

/// A tree head as a checkpoint's text says it: origin, size, root, and our `time` extension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
    /// When it was signed (the `time` extension line); `None` if the note has none.
    pub time: Option<DateTime<Utc>>,
}

impl Checkpoint {
    /// The note text: origin, size, base64 root, then `time ...` if there is one.
    pub fn text(&self) -> String {
        let mut s = format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            B64.encode(self.root)
        );
        if let Some(t) = &self.time {
            s.push_str("time ");
            s.push_str(&crate::time::format_rfc3339(t));
            s.push('\n');
        }
        s
    }

    /// Reads a checkpoint's text (as [`open`] returns it). Extension lines other than `time`
    /// are allowed and ignored.
    pub fn parse(text: &str) -> Result<Checkpoint, NoteError> {
        let bad = |why: String| NoteError::BadCheckpoint(why);
        let body = text
            .strip_suffix('\n')
            .ok_or_else(|| bad("the text does not end in a newline".into()))?;
        let mut lines = body.split('\n');
        let (Some(origin), Some(size), Some(root)) = (lines.next(), lines.next(), lines.next())
        else {
            return Err(bad("it needs an origin, a size and a root hash".into()));
        };
        if origin.is_empty() {
            return Err(bad("the origin is empty".into()));
        }
        if size.is_empty()
            || !size.bytes().all(|b| b.is_ascii_digit())
            || (size.len() > 1 && size.starts_with('0'))
        {
            return Err(bad(format!(
                "the tree size {size:?} is not a decimal number"
            )));
        }
        let size = size
            .parse()
            .map_err(|_| bad(format!("the tree size {size:?} is too large")))?;
        let root: Hash = B64
            .decode(root)
            .ok()
            .and_then(|r| r.try_into().ok())
            .ok_or_else(|| bad(format!("the root hash {root:?} is not 32 bytes of base64")))?;
        let mut time = None;
        for line in lines {
            if line.is_empty() {
                return Err(bad("an extension line is empty".into()));
            }
            if let Some(t) = line.strip_prefix("time ") {
                if time.is_some() {
                    return Err(bad("two time lines".into()));
                }
                time = Some(
                    crate::time::parse_rfc3339(t)
                        .map_err(|e| bad(format!("the time line: {e}")))?,
                );
            }
        }
        Ok(Checkpoint {
            origin: origin.to_string(),
            size,
            root,
            time,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of c2sp.org/signed-note ("Verifier keys", "Example").
    const SPEC_VKEY: &str = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k";
    const SPEC_NOTE: &str = "This is an example message.\n\n— example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n";

    #[test]
    fn the_spec_example_verifies() {
        let key = VerifierKey::parse(SPEC_VKEY).unwrap();
        assert_eq!((key.name(), key.id()), ("example.com/foo", 0x530d903a));
        assert_eq!(key.to_string(), SPEC_VKEY);
        assert_eq!(
            open(SPEC_NOTE, &key).unwrap(),
            "This is an example message.\n"
        );
        // One byte of the text changed.
        let changed = SPEC_NOTE.replacen("example", "exbmple", 1);
        assert!(matches!(
            open(&changed, &key),
            Err(NoteError::BadSignature { .. })
        ));
        // Another key of the same name: its id differs, so the note is not signed by it.
        let other = NoteSigner::new("example.com/foo", [7; 32])
            .unwrap()
            .verifier();
        assert!(matches!(
            open(SPEC_NOTE, &other),
            Err(NoteError::NotSigned { .. })
        ));
    }

    #[test]
    fn sign_open_round_trip_and_key_forms() {
        let signer = NoteSigner::new("collector.example/audit", [42; 32]).unwrap();
        let again = NoteSigner::parse(&signer.encode()).unwrap();
        assert_eq!(again.verifier(), signer.verifier());
        let vkey = VerifierKey::parse(&signer.verifier().to_string()).unwrap();
        assert_eq!(vkey, signer.verifier());
        assert!(format!("{signer:?}").contains("collector.example/audit+"));
        assert!(!format!("{signer:?}").contains(&signer.encode()));

        let cp = Checkpoint {
            origin: origin("collector.example/audit", "acme"),
            size: 20852163,
            root: [9; 32],
            time: Some(crate::time::parse_rfc3339("2026-12-01T10:00:00.5Z").unwrap()),
        };
        let text = cp.text();
        assert_eq!(
            text,
            "collector.example/audit/orgs/acme\n20852163\nCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQk=\ntime 2026-12-01T10:00:00.500000Z\n"
        );
        let note = signer.sign(&text).unwrap();
        let opened = open(&note, &vkey).unwrap();
        assert_eq!(Checkpoint::parse(opened).unwrap(), cp);
        // Every single changed byte of the note is caught.
        for i in 0..note.len() {
            let mut bytes = note.clone().into_bytes();
            bytes[i] ^= 0x01;
            let Ok(changed) = String::from_utf8(bytes) else {
                continue;
            };
            let ok = open(&changed, &vkey).and_then(Checkpoint::parse);
            assert!(
                ok.is_err(),
                "byte {i} changed and still verified: {changed:?}"
            );
        }
        // A witness's extra signature is ignored.
        let other = NoteSigner::new("witness.example", [1; 32]).unwrap();
        let cosigned = format!(
            "{note}{}",
            other.sign(&text).unwrap().rsplit_once("\n\n").unwrap().1
        );
        assert_eq!(open(&cosigned, &vkey).unwrap(), text);
        assert_eq!(open(&cosigned, &other.verifier()).unwrap(), text);
    }

    #[test]
    fn bad_inputs_are_named_errors() {
        assert!(VerifierKey::parse("").is_err());
        assert!(VerifierKey::parse("a+b").is_err());
        assert!(VerifierKey::parse(&SPEC_VKEY.replace("530d903a", "530d903b")).is_err());
        assert!(NoteSigner::parse(SPEC_VKEY).is_err());
        assert!(NoteSigner::new("has space", [0; 32]).is_err());
        assert!(NoteSigner::new("a+b", [0; 32]).is_err());
        let s = NoteSigner::new("k", [3; 32]).unwrap();
        assert!(s.sign("no newline").is_err());
        assert!(s.sign("tab\there\n").is_err());
        for text in [
            "",
            "\n",
            "o\n01\nAAAA\n",
            "o\n1\n!!\n",
            "o\n-1\nCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQk=\n",
            "o\n1\nCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQk=\n\n",
            "o\n1\nCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQk=\ntime yesterday\n",
        ] {
            assert!(Checkpoint::parse(text).is_err(), "{text:?}");
        }
        let k = s.verifier();
        for note in [
            "",
            "text\n",
            "text\n\n",
            "text\n\nsig\n",
            "text\n\n— k !!!\n",
        ] {
            assert!(open(note, &k).is_err(), "{note:?}");
        }
    }
}
