//! The native receiver's format: newline-delimited JSON records (the emit format).

use super::Batch;
use codestax_common::{Rules, parse_json_line};

/// Decodes an NDJSON body; blank lines are skipped, every other line is one entry, positioned by
/// its 1-based line number. Records without `org_id` take `default_org`.
pub fn decode_ndjson(body: &[u8], default_org: &str, rules: &Rules) -> Batch {
    decode_ndjson_into(Batch::default(), body, default_org, rules)
}

/// [`decode_ndjson`] into `batch` (e.g. one that lists every rejection).
pub fn decode_ndjson_into(
    mut batch: Batch,
    body: &[u8],
    default_org: &str,
    rules: &Rules,
) -> Batch {
    for (i, line) in body.split(|b| *b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        batch.push(
            i + 1,
            parse_json_line(line, Some(default_org), rules),
            || id_of(line),
        );
    }
    batch
}

/// The `id` of a line that failed validation, when it can still be read.
fn id_of(line: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Id<'a> {
        #[serde(borrow)]
        id: Option<std::borrow::Cow<'a, str>>,
    }
    // Only the id is kept: other fields are skipped, not built into a tree.
    let value: Id = serde_json::from_slice(line).ok()?;
    value.id.map(|id| id.into_owned())
}
