//! State files written by main before this crate existed read back exactly through
//! [`StateFile`] (the spool's and the WAL's fixtures are read by the agent's and the
//! collector's own tests, through `Spool::open` and `Wal::open`).

use std::path::{Path, PathBuf};

use codestax_storage::{OnDamage, StateFile, Versioned};
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Debug, Deserialize)]
struct Doc {
    version: u32,
    #[serde(flatten)]
    rest: serde_json::Map<String, Value>,
}

impl Versioned for Doc {
    const VERSION: u32 = 1;
    fn version(&self) -> u32 {
        self.version
    }
}

fn fixture(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(path)
}

fn read(path: &str, suffix: &str) -> Value {
    let doc: Doc = StateFile::new(fixture(path), suffix)
        .read_json(OnDamage::Fail)
        .unwrap()
        .unwrap();
    Value::Object(doc.rest)
}

#[test]
fn state_files_written_by_main_read_back_exactly() {
    assert_eq!(
        read("state-main/index-state.json", ".tmp"),
        json!({"scheme": "week", "indexed_through": 41, "pending_through": 43})
    );
    assert_eq!(
        read("state-main/retention-overrides.json", ".tmp"),
        json!({"days": {"acme": 400, "globex": 30}})
    );
    assert_eq!(
        read("spool-main/acked.json", ".new"),
        json!({"segment": 1, "offset": 161})
    );
    assert_eq!(
        read("spool-main/checkpoints.json", ".new"),
        json!({"files": [{"key": {"dev": 7, "ino": 9}, "fingerprint": {"len": 16, "hash": 42},
            "offset": 1234, "tail": {"len": 8, "hash": 77}, "stamp": 3}]})
    );
}
