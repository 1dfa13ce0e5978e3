//! `group_views=true` on a search: the page's rows, with each run of one viewer's consecutive
//! `audit_log.viewed` entries as one row that lists its members. Every read keeps its own entry
//! in the log (a read that cannot be recorded is still refused); this only makes a page of them
//! easy to read.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// The action grouped.
const VIEWED: &str = "audit_log.viewed";

/// One row of a page: an entry on its own, or a run of views.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Row {
    /// `{"entry": i}`: the page's `entries[i]`.
    Entry { entry: usize },
    /// `{"views": {...}}`: two or more consecutive views by one key.
    Views { views: ViewRun },
}

/// Consecutive `audit_log.viewed` entries of one actor, newest first as on the page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ViewRun {
    /// The viewer's `actor.id` (the key that read).
    pub actor_id: String,
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
    let mut run: Option<(String, Vec<usize>)> = None;
    let heads: Vec<Option<Head>> = entries
        .iter()
        .map(|e| serde_json::from_str::<Head>(e.get()).ok())
        .collect();
    let flush = |run: &mut Option<(String, Vec<usize>)>, rows: &mut Vec<Row>| {
        let Some((actor_id, members)) = run.take() else {
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
                actor_id,
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
                Some((actor, members)) if *actor == h.actor.id => members.push(i),
                _ => {
                    flush(&mut run, &mut rows);
                    run = Some((h.actor.id.to_string(), vec![i]));
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
