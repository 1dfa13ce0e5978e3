//! Property tests of the agent's own reader and writer of outside bytes, against common's: the
//! hand-written protobuf encoder of spooled records (`encode_record`, beside prost and
//! `to_log_record`) and its decoder. (The emit-line parser is common's, tested there.)
//! Longer run: `PROPTEST_CASES=20000 cargo test --release -p codestax-agent --test props`.

#[path = "../../common/tests/support/records.rs"]
mod records;

use codestax_agent::encoded::{decode_record, encode_record};
use codestax_common::otlp::to_log_record;
use codestax_common::{Rules, parse_json_line};
use proptest::prelude::*;
use prost::Message;
use records::{Shape, cases};

/// The agent's file source reads without a size limit; the receivers with the default.
fn rule_sets() -> [Rules; 3] {
    let unlimited = Rules {
        max_record_bytes: usize::MAX,
        ..records::rules(true)
    };
    [unlimited, records::rules(true), records::rules(false)]
}

proptest! {
    #![proptest_config(cases(96))]

    /// The spool's encoding of a record is the bytes prost writes for `to_log_record`, and it
    /// decodes to the record (but for `received_at`, which the attributes style does not carry).
    #[test]
    fn prop_encoded_records_are_prosts_bytes_and_read_back(
        value in records::valid_record(Shape::ANY),
    ) {
        let rules = &rule_sets()[0];
        let record = parse_json_line(value.to_string().as_bytes(), Some("d"), rules).unwrap();
        let mut ours = Vec::new();
        encode_record(&record, &mut ours);
        assert_eq!(ours, to_log_record(&record).encode_to_vec(), "{value}");
        let mut back = decode_record(&ours).unwrap();
        if !codestax_common::otlp::needs_body_style(&record) {
            back.received_at = record.received_at;
        }
        assert_eq!(back, record);
    }

    /// Any bytes where a spooled record is expected (a corrupt spool, the quarantine): an error
    /// or a record, never a panic.
    #[test]
    fn prop_decode_record_takes_any_bytes(
        value in records::valid_record(Shape::ANY),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        cut in proptest::option::of(any::<prop::sample::Index>()),
    ) {
        let record = parse_json_line(value.to_string().as_bytes(), Some("d"), &rule_sets()[0]).unwrap();
        let mut bytes = Vec::new();
        encode_record(&record, &mut bytes);
        for (at, b) in edits {
            let i = at.index(bytes.len());
            bytes[i] ^= b;
        }
        if let Some(cut) = cut {
            bytes.truncate(cut.index(bytes.len() + 1));
        }
        let _ = decode_record(&bytes);
    }
}

proptest! {
    #![proptest_config(cases(64))]

    /// Any bytes as the checkpoint file (cut or flipped real ones, odd JSON, anything): the
    /// store opens (a corrupt file gives an empty table) or names the file; never a panic.
    #[test]
    fn prop_any_checkpoint_file_opens_or_names_it(
        bytes in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..256),
            prop::sample::select(vec![
                r#"{"version":1,"files":[]}"#,
                r#"{"version":1,"files":[{"key":{"dev":1,"ino":2},"fingerprint":{"len":18446744073709551615,"hash":0},"offset":18446744073709551615,"stamp":18446744073709551615}]}"#,
                r#"{"version":4294967295}"#,
                r#"{"version":-1}"#,
                r#"[]"#,
                "null",
            ])
            .prop_map(|s| s.as_bytes().to_vec()),
        ],
        flip in proptest::option::of((any::<prop::sample::Index>(), 1u8..=255)),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoints.json");
        let mut bytes = bytes;
        if let (Some((at, bits)), false) = (flip, bytes.is_empty()) {
            let i = at.index(bytes.len());
            bytes[i] ^= bits;
        }
        std::fs::write(&path, &bytes).unwrap();
        match codestax_agent::checkpoint::CheckpointStore::open(&path, []) {
            Ok(store) => {
                let _ = store.all();
                store.persist().unwrap();
            }
            Err(e) => assert!(e.to_string().contains(path.to_str().unwrap()), "{e}"),
        }
    }
}
