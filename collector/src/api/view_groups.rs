//! `group_views=true` on a search: the page's rows, with each run of one viewer's consecutive
//! `audit_log.viewed` entries of one writer as one row that lists its members. Every read keeps
//! its own entry in the log (a read that cannot be recorded is still refused); this only makes a
//! page of them easy to read. A run never mixes writers: the collector's own entries (the reads it
//! served) stay apart from views an import brought in under the same actor, so a row of a
//! reader's views counts only reads the collector vouches for.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

/// The action grouped.
const VIEWED: &str = "audit_log.viewed";

/// One row of a page: an entry on its own, or a run of views.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Row {
    /// `{"entry": i}`: the page's `entries[i]`.
    Entry { entry: usize },
    /// `{"views": {...}}`: two or more consecutive views by one key, of one writer.
    Views { views: ViewRun },
}

/// Consecutive `audit_log.viewed` entries of one actor and one writer, newest first as on the
/// page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ViewRun {
    /// The viewer's `actor.id` (the key that read).
    pub actor_id: String,
    /// The members' `provenance`, as stored (`{"writer": "collector"}` for the reads this
    /// collector served); absent for entries stored before provenance existed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provenance: Option<Value>,
    pub count: usize,
    /// Time of the newest and the oldest member.
    pub newest: String,
    pub oldest: String,
    /// Indices into the page's `entries`; each member keeps its own filters in its metadata.
    pub members: Vec<usize>,
}

/// The fields grouping looks at.
#[derive(Deserialize)]
struct Head<'a> {
    #[serde(borrow)]
    action: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    time: std::borrow::Cow<'a, str>,
    actor: Actor<'a>,
    /// As stored: canonical JSON, so equal provenances are equal text.
    #[serde(borrow)]
    provenance: Option<&'a RawValue>,
}

impl Head<'_> {
    /// Who a run is of: the viewer and the writer of its entries.
    fn runner(&self) -> (&str, Option<&str>) {
        (&self.actor.id, self.provenance.map(RawValue::get))
    }
}

#[derive(Deserialize)]
struct Actor<'a> {
    #[serde(borrow)]
    id: std::borrow::Cow<'a, str>,
}

/// The rows of a page of stored records (newest first). A run may continue on the next page;
/// a reader that shows several pages joins a page's last run with the next page's first.
pub fn rows(entries: &[Box<RawValue>]) -> Vec<Row> {
    let mut rows: Vec<Row> = Vec::with_capacity(entries.len());
    let heads: Vec<Option<Head>> = entries
        .iter()
        .map(|e| serde_json::from_str::<Head>(e.get()).ok())
        .collect();
    // The run's first member, whose viewer and writer the others share, and its members.
    let mut run: Option<(&Head, Vec<usize>)> = None;
    let flush = |run: &mut Option<(&Head, Vec<usize>)>, rows: &mut Vec<Row>| {
        let Some((head, members)) = run.take() else {
            return;
        };
        if members.len() == 1 {
            rows.push(Row::Entry { entry: members[0] });
            return;
        }
        let time = |i: usize| {
            heads[i]
                .as_ref()
                .map_or(String::new(), |h| h.time.to_string())
        };
        rows.push(Row::Views {
            views: ViewRun {
                actor_id: head.actor.id.to_string(),
                provenance: head
                    .provenance
                    .and_then(|p| serde_json::from_str(p.get()).ok()),
                count: members.len(),
                newest: time(members[0]),
                oldest: time(members[members.len() - 1]),
                members,
            },
        });
    };
    for (i, head) in heads.iter().enumerate() {
        match head {
            Some(h) if h.action == VIEWED => match &mut run {
                Some((first, members)) if first.runner() == h.runner() => members.push(i),
                _ => {
                    flush(&mut run, &mut rows);
                    run = Some((h, vec![i]));
                }
            },
            _ => {
                flush(&mut run, &mut rows);
                rows.push(Row::Entry { entry: i });
            }
        }
    }
    flush(&mut run, &mut rows);
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(action: &str, actor: &str, time: &str) -> Box<RawValue> {
        RawValue::from_string(
            serde_json::json!({"action": action, "time": time, "actor": {"id": actor}}).to_string(),
        )
        .unwrap()
    }

    /// A view by `actor` as stored, written by `provenance` (its canonical JSON).
    fn view_of(actor: &str, time: &str, provenance: &str) -> Box<RawValue> {
        RawValue::from_string(format!(
            r#"{{"action":"{VIEWED}","actor":{{"id":"{actor}"}},"provenance":{provenance},"time":"{time}"}}"#
        ))
        .unwrap()
    }

    /// A run is of one viewer and one writer: an imported view naming a reader's key (or one
    /// stored before provenance) never joins that reader's run of the collector's entries.
    #[test]
    fn views_of_one_viewer_by_another_writer_are_not_in_their_run() {
        const COLLECTOR: &str = r#"{"writer":"collector"}"#;
        const IMPORTED: &str = r#"{"key_id":"key_i","source":"old","writer":"imported"}"#;
        let page = [
            view_of("key_a", "t9", COLLECTOR),
            view_of("key_a", "t8", COLLECTOR),
            view_of("key_a", "t7", IMPORTED),
            view_of("key_a", "t6", COLLECTOR),
            view_of("key_a", "t5", IMPORTED),
            view_of("key_a", "t4", IMPORTED),
            entry(VIEWED, "key_a", "t3"),
            view_of("key_a", "t2", COLLECTOR),
        ];
        let run = |provenance: &str, newest: &str, oldest: &str, members: Vec<usize>| Row::Views {
            views: ViewRun {
                actor_id: "key_a".into(),
                provenance: Some(serde_json::from_str(provenance).unwrap()),
                count: members.len(),
                newest: newest.into(),
                oldest: oldest.into(),
                members,
            },
        };
        assert_eq!(
            rows(&page),
            [
                run(COLLECTOR, "t9", "t8", vec![0, 1]),
                Row::Entry { entry: 2 },
                Row::Entry { entry: 3 },
                run(IMPORTED, "t5", "t4", vec![4, 5]),
                Row::Entry { entry: 6 },
                Row::Entry { entry: 7 },
            ]
        );
        let json = serde_json::to_value(&rows(&page)[0]).unwrap();
        assert_eq!(
            json["views"]["provenance"],
            serde_json::json!({"writer": "collector"})
        );
    }

    #[test]
    fn consecutive_views_of_one_viewer_are_one_row() {
        let page = [
            entry(VIEWED, "key_a", "t9"),
            entry(VIEWED, "key_a", "t8"),
            entry(VIEWED, "key_a", "t7"),
            entry(VIEWED, "key_b", "t6"),
            entry("scan.triggered", "u1", "t5"),
            entry(VIEWED, "key_a", "t4"),
            entry(VIEWED, "key_a", "t3"),
            entry("audit_log.exported", "key_a", "t2"),
        ];
        let run = |actor: &str, newest: &str, oldest: &str, members: Vec<usize>| Row::Views {
            views: ViewRun {
                actor_id: actor.into(),
                provenance: None,
                count: members.len(),
                newest: newest.into(),
                oldest: oldest.into(),
                members,
            },
        };
        assert_eq!(
            rows(&page),
            [
                run("key_a", "t9", "t7", vec![0, 1, 2]),
                Row::Entry { entry: 3 },
                Row::Entry { entry: 4 },
                run("key_a", "t4", "t3", vec![5, 6]),
                Row::Entry { entry: 7 },
            ]
        );
        assert!(rows(&[]).is_empty());
        let json = serde_json::to_value(rows(&page[3..5])).unwrap();
        assert_eq!(json, serde_json::json!([{"entry": 0}, {"entry": 1}]));
    }
}
