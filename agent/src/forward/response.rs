//! Reading the collector's verdict on a request: which records (by 1-based position) it
//! rejected and why.
//!
//! The contract: OK with `partial_success { rejected_log_records: n, error_message }`, the
//! message holding one line per rejected record, `record <position>: <field>: <reason>; ...`,
//! at most 50 lines and then `... and N more`; or, when nothing was accepted, the status
//! INVALID_ARGUMENT with the message `no record was accepted:\n` and the same lines.

use std::collections::BTreeMap;

/// The header of an INVALID_ARGUMENT message for a request of which nothing was accepted.
pub const NOTHING_ACCEPTED: &str = "no record was accepted:";

/// Rejections named in a collector message.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Rejections {
    /// 0-based index in the request → reason.
    pub named: BTreeMap<usize, String>,
    /// Rejected records the message did not name (beyond its 50 lines).
    pub unnamed: u64,
}

/// Parses the lines of a rejection message. `rejected` is the count the collector gave
/// (for INVALID_ARGUMENT, the request's size); `len` the request's size.
pub fn parse(message: &str, rejected: u64, len: usize) -> Rejections {
    let mut named = BTreeMap::new();
    for line in message.lines() {
        let Some(rest) = line.trim().strip_prefix("record ") else {
            continue;
        };
        let Some((position, reason)) = rest.split_once(':') else {
            continue;
        };
        let Ok(position) = position.trim().parse::<usize>() else {
            continue;
        };
        if (1..=len).contains(&position) {
            named.insert(position - 1, reason.trim().to_string());
        }
    }
    let unnamed = rejected.saturating_sub(named.len() as u64);
    Rejections { named, unnamed }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_collector_contract() {
        let msg = "record 2: actor.email: not a valid email address; action: required\n\
                   record 5: time: 1999-01-01T00:00:00Z is before 2000-01-01T00:00:00Z\n\
                   record 9: out of range\n\
                   garbage line\n\
                   ... and 3 more";
        let r = parse(msg, 6, 5);
        assert_eq!(r.named.len(), 2);
        assert_eq!(
            r.named[&1],
            "actor.email: not a valid email address; action: required"
        );
        assert!(r.named[&4].starts_with("time: 1999"));
        assert_eq!(r.unnamed, 4);

        let all = format!("{NOTHING_ACCEPTED}\nrecord 1: org_id: required");
        assert_eq!(parse(&all, 1, 1).named[&0], "org_id: required");
        assert_eq!(parse("", 0, 3), Rejections::default());
    }
}
