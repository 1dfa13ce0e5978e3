//! Bounded cost, measured: a counting global allocator records the peak of live heap bytes while
//! one input is parsed, and the peak must stay within `k * N + C` for an input of N bytes.
//! Its own test binary: the allocator is installed for the whole process; it counts the
//! measuring thread's allocations only.

#[path = "support/counting.rs"]
mod counting;
#[path = "support/records.rs"]
mod records;

use codestax_common::parse_json_line;
use counting::peak_of;
use proptest::prelude::*;
use records::{Shape, cases};

#[global_allocator]
static ALLOCATOR: counting::Counting = counting::Counting;

/// Fixed allowance for any one input (error messages, the rules' catalog lookups, buffers).
const C: usize = 64 * 1024;

fn parse_peak(line: &[u8]) -> usize {
    let rules = records::rules(true);
    let (peak, result) = peak_of(|| parse_json_line(line, Some("org"), &rules));
    drop(result);
    peak
}

/// Emit lines: a parse holds the line's `serde_json::Value` tree (the thorough path) or its
/// record. Measured worst cases (debug build): ~35x for a line of tiny values (`[0,0,...]`: a
/// 32-byte `Value` per 2 bytes, and a `Vec` doubling), ~53x for many `changes` each with an
/// error. A bound, not a target: lowering it needs a reader without a `Value` tree.
const K_LINE: usize = 64;

proptest! {
    #![proptest_config(cases(64))]

    #[test]
    fn prop_a_line_costs_a_bounded_multiple_of_its_size(line in records::any_line(Shape::ANY)) {
        let peak = parse_peak(&line);
        assert!(peak <= K_LINE * line.len() + C, "{peak} bytes for a line of {}", line.len());
    }
}

/// Lines built to amplify: deep nesting, many tiny keys or values, escapes.
#[test]
fn hostile_lines_cost_a_bounded_multiple_of_their_size() {
    let base = r#"{"org_id":"o","time":"2026-11-27T10:00:00Z","actor":{"id":"a","kind":"system"},"action":"auth.logout","metadata":"#;
    let n = 60_000;
    let hostile = [
        // The most nesting serde_json takes (it stops at 128 levels).
        format!("{base}{{\"x\":{}1{}}}}}", "[".repeat(120), "]".repeat(120)),
        // Many tiny values.
        format!("{base}{{\"x\":[{}0]}}}}", "0,".repeat(n / 2)),
        format!("{base}{{\"x\":[{}{{}}]}}}}", "{},".repeat(n / 3)),
        format!("{base}{{\"x\":[{}[]]}}}}", "[],".repeat(n / 3)),
        // Many tiny keys, unknown ones (one error each) and repeated ones.
        format!(
            "{base}{{}},{}\"z\":1}}",
            (0..n / 8)
                .map(|i| format!("\"{i:x}\":0,"))
                .collect::<String>()
        ),
        format!("{base}{{{}\"x\":1}}}}", "\"x\":0,".repeat(n / 6)),
        // Escapes.
        format!("{base}{{\"x\":\"{}\"}}}}", "\\u0000".repeat(n / 6)),
        // Many changes, each an object.
        format!(
            "{base}{{\"changes\":[{}{{\"field\":\"f\"}}]}}}}",
            "{\"field\":\"\"},".repeat(n / 13)
        ),
    ];
    for line in &hostile {
        let peak = parse_peak(line.as_bytes());
        eprintln!("line of {} bytes: peak {peak} bytes", line.len());
        assert!(
            peak <= K_LINE * line.len() + C,
            "{peak} bytes for a line of {}: {}",
            line.len(),
            &line[..200.min(line.len())]
        );
    }
}
