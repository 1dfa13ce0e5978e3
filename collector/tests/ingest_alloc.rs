//! Decoding hostile ingest bodies costs memory in proportion to their size: measured with a
//! counting global allocator (its own test binary, so no other test is slowed or disturbed).

use codestax_collector::ingest::decode_ndjson;
use codestax_common::Rules;
use counting::peak_of;

#[path = "../../common/tests/support/counting.rs"]
mod counting;

#[global_allocator]
static ALLOCATOR: counting::Counting = counting::Counting;

/// Decoding, result included, costs at most `factor` times the body plus a fixed 1 MiB.
/// Call with [`counting::one_at_a_time`] held.
fn assert_bounded(name: &str, body: &[u8], factor: usize) {
    let rules = Rules::new();
    // Lazily built statics (the action catalog, patterns) are a fixed cost: built before measuring.
    drop(decode_ndjson(&body[..body.len().min(4096)], "acme", &rules));
    let (peak, _) = peak_of(|| decode_ndjson(body, "acme", &rules));
    let bound = factor * body.len() + (1 << 20);
    assert!(
        peak <= bound,
        "{name}: decoding a {} byte body peaked at {peak} bytes allocated (bound {bound})",
        body.len()
    );
}

#[test]
fn a_body_of_empty_objects_costs_its_size() {
    let _serial = counting::one_at_a_time();
    // 200,000 lines of `{}`: each one rejected with several field errors.
    let body = "{}\n".repeat(200_000);
    assert_bounded("empty objects", body.as_bytes(), 4);
}

#[test]
fn a_body_of_unknown_fields_and_bad_json_costs_its_size() {
    let _serial = counting::one_at_a_time();
    let mut body = String::new();
    for i in 0..50_000 {
        match i % 4 {
            0 => body.push_str(&format!("{{\"id\":\"x{i}\",\"k{i}\":1}}\n")),
            1 => body.push_str("[1,2,3]\n"),
            2 => body.push_str("{\"time\":\n"),
            _ => body.push_str("\"s\"\n"),
        }
    }
    assert_bounded("mixed bad lines", body.as_bytes(), 4);
}

#[test]
fn every_rejection_is_counted_and_the_first_are_listed() {
    let _serial = counting::one_at_a_time();
    let body = "{}\n".repeat(1000);
    let batch = decode_ndjson(body.as_bytes(), "acme", &Rules::new());
    assert!(batch.records.is_empty());
    assert_eq!(batch.rejections.total(), 1000);
    assert_eq!(batch.rejections.listed().len(), 50);
    assert_eq!(batch.rejections.listed()[49].line, 50);
    assert_eq!(batch.rejections.unlisted(), 950);
    assert!(batch.rejections.summary().ends_with("... and 950 more"));
}

#[test]
fn a_body_of_valid_small_records_costs_a_small_multiple_of_its_size() {
    let _serial = counting::one_at_a_time();
    let time = chrono::Utc::now().to_rfc3339();
    let mut body = String::new();
    for i in 0..20_000 {
        body.push_str(&format!(
            "{{\"time\":\"{time}\",\"actor\":{{\"id\":\"u\",\"email\":\"u@x.example\"}},\"action\":\"auth.login\",\"id\":\"{i}\"}}\n"
        ));
        body.push_str("{}\n");
    }
    let batch = decode_ndjson(body.as_bytes(), "acme", &Rules::new());
    assert_eq!(
        batch.records.len(),
        20_000,
        "{}",
        batch.rejections.summary()
    );
    // A parsed record is about ten times its smallest JSON form (measured: 10.1x here).
    assert_bounded("valid and empty records", body.as_bytes(), 12);
}
