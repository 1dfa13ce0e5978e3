//! `codestax search`: one result set, newest first, as a table or as JSON.

use crate::client::{Client, ClientError};
use codestax_common::AuditRecord;
use codestax_common::api::{SearchFilters, SearchResponse};
use std::io::{self, Write};

/// Records asked for per request; the collector may cap it lower.
const PAGE: usize = 1000;
/// Widest a table cell gets, in characters; longer values are cut with `…`.
const MAX_CELL: usize = 40;

/// What to search for.
#[derive(Debug, Clone)]
pub struct SearchRequest {
    pub org: String,
    pub filters: SearchFilters,
    /// Most records to return.
    pub limit: usize,
}

/// Up to `limit` matching records, newest first, following the collector's cursor as needed.
/// `total` is the number of all matches; `next_cursor` is set when there are more.
pub fn search(client: &Client, request: &SearchRequest) -> Result<SearchResponse, ClientError> {
    let path = format!("/api/v1/orgs/{}/audit-log", request.org);
    let mut out = SearchResponse {
        entries: Vec::new(),
        next_cursor: None,
        total: 0,
    };
    let mut cursor: Option<String> = None;
    loop {
        let want = (request.limit - out.entries.len()).min(PAGE);
        let mut query = request.filters.to_query_pairs();
        query.push(("limit", want.to_string()));
        if let Some(c) = &cursor {
            query.push(("cursor", c.clone()));
        }
        let page: SearchResponse = client.get_json(&path, &query)?;
        out.total = page.total;
        out.entries.extend(page.entries);
        out.next_cursor = page.next_cursor;
        if out.entries.len() >= request.limit || out.next_cursor.is_none() {
            out.entries.truncate(request.limit);
            return Ok(out);
        }
        cursor = out.next_cursor.clone();
    }
}

/// The table's columns.
const HEADER: [&str; 6] = [
    "TIME (UTC)",
    "USER",
    "ACTION",
    "TARGET",
    "REPOSITORY",
    "OUTCOME",
];

/// A record's cells, in the order of [`HEADER`].
fn cells(r: &AuditRecord) -> [String; 6] {
    let target = r
        .target
        .as_ref()
        .map(|t| {
            t.name
                .clone()
                .or_else(|| t.id.clone())
                .unwrap_or_else(|| t.kind.as_str().to_string())
        })
        .unwrap_or_default();
    // The collector's own entries are marked as the dashboard marks them (docs/security.md).
    let user = match r.provenance {
        Some(codestax_common::Provenance::Collector) => format!("{} [system]", r.actor_label()),
        _ => r.actor_label().to_string(),
    };
    [
        r.time.format("%Y-%m-%d %H:%M:%S").to_string(),
        user,
        r.action.clone(),
        target,
        r.repository.clone().unwrap_or_default(),
        r.outcome.as_str().to_string(),
    ]
}

/// Cuts a value to the cell width, on one line.
fn fit(s: &str) -> String {
    let one_line: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if one_line.chars().count() <= MAX_CELL {
        one_line
    } else {
        let mut cut: String = one_line.chars().take(MAX_CELL - 1).collect();
        cut.push('…');
        cut
    }
}

/// Writes `response` as an aligned table and a line saying how many of how many were shown.
pub fn write_table(response: &SearchResponse, out: &mut impl Write) -> io::Result<()> {
    let rows: Vec<[String; 6]> = response
        .entries
        .iter()
        .map(|r| cells(r).map(|c| fit(&c)))
        .collect();
    let mut widths = HEADER.map(|h| h.chars().count());
    for row in &rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &[String], out: &mut dyn Write| -> io::Result<()> {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(widths).enumerate() {
            if i > 0 {
                s.push_str("  ");
            }
            s.push_str(c);
            if i + 1 < cells.len() {
                s.extend(std::iter::repeat_n(' ', w - c.chars().count()));
            }
        }
        writeln!(out, "{}", s.trim_end())
    };
    line(&HEADER.map(String::from), out)?;
    for row in &rows {
        line(row, out)?;
    }
    writeln!(
        out,
        "{} of {} matching record{}",
        response.entries.len(),
        response.total,
        if response.total == 1 { "" } else { "s" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_table_is_aligned_and_cut() {
        let r: AuditRecord = serde_json::from_value(json!({
            "id": "e1", "org_id": "acme", "time": "2026-11-27T10:15:30.123456Z",
            "actor": {"id": "u1", "email": "ada@acme.example"},
            "action": "scan.triggered",
            "target": {"kind": "repository", "name": "acme/a-very-long-repository-name-that-goes-on-and-on"},
            "repository": "acme/api"
        }))
        .unwrap();
        let mut other = r.clone();
        other.actor.email = None;
        other.target = None;
        other.outcome = codestax_common::Outcome::Failure;
        other.provenance = Some(codestax_common::Provenance::Collector);
        let response = SearchResponse {
            entries: vec![r, other],
            next_cursor: None,
            total: 7,
        };
        let mut out = Vec::new();
        write_table(&response, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(lines[0].starts_with("TIME (UTC)           USER"), "{text}");
        assert!(lines[1].starts_with("2026-11-27 10:15:30  ada@acme.example  scan.triggered"));
        assert!(lines[1].contains("acme/a-very-long-repository-name-that-g…"));
        assert!(
            lines[2].contains("  u1 [system]  ") && lines[2].ends_with("failure"),
            "{text}"
        );
        assert_eq!(lines[3], "2 of 7 matching records");
        // Columns line up.
        let col = lines[0].find("ACTION").unwrap();
        assert_eq!(&lines[1][col..col + 14], "scan.triggered");
    }
}
