//! Search filters, the `q` mini-language, and their translation into one tantivy query.
//!
//! The grammar is documented on the [module](super) because it is the user's manual.

use super::error::IndexError;
use super::phrase::ForwardPhraseQuery;
use super::schema::{Fields, bare_word_fields, kw, text_analyzer};
use chrono::{DateTime, Utc};
use codestax_common::Category;
use tantivy::Term;
use tantivy::query::{BooleanQuery, Occur, PhraseQuery, Query, TermQuery};
use tantivy::schema::{Field, IndexRecordOption};

/// Longest `q` accepted, in characters.
pub const MAX_Q_CHARS: usize = 1000;
/// Most terms (words, phrases, `field:value`) a `q` may hold.
pub const MAX_Q_TERMS: usize = 32;

/// What to search for within one org. Values within one filter are ORed, filters are ANDed.
/// Values match exactly, ignoring case. An empty filter does not constrain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SearchQuery {
    /// Actor ids or emails.
    pub users: Vec<String>,
    /// Action names (`scan.triggered`).
    pub actions: Vec<String>,
    /// Canonical category names (`finding`); the caller resolves aliases such as `triage`.
    pub categories: Vec<String>,
    /// Repository names.
    pub repositories: Vec<String>,
    /// `success` or `failure`.
    pub outcomes: Vec<String>,
    /// Inclusive lower bound on `time`.
    pub since: Option<DateTime<Utc>>,
    /// Exclusive upper bound on `time`.
    pub until: Option<DateTime<Utc>>,
    /// The `q` full-text query (see the module documentation).
    pub text: Option<String>,
    /// The org's retention floor: records older than this are hidden whatever `since` says.
    /// Set by the read path from the org's retention, never by the client; not part of a cursor's
    /// scope, so a walk goes on while its floor moves forward (records expiring during a walk
    /// leave it, and its `total` drops by as many).
    pub floor: Option<DateTime<Utc>>,
}

/// The full-text fields a `q` term may be searched in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TextField {
    /// Every searchable value (a bare word or phrase).
    All,
    Actor,
    Target,
    Message,
}

impl TextField {
    /// The index fields searched: a bare word looks in all the fields that together hold every
    /// searchable value.
    fn fields(self, f: &Fields) -> Vec<Field> {
        match self {
            TextField::All => bare_word_fields(f).to_vec(),
            TextField::Actor => vec![f.actor_text],
            TextField::Target => vec![f.target_text],
            TextField::Message => vec![f.message_text],
        }
    }
}

/// Where a `q` term is looked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClauseTarget {
    /// Tokenized, case-insensitive; more than one token is a phrase.
    Text(TextField),
    /// One keyword of the record, exactly, ignoring case.
    Keyword(&'static str),
}

/// One term of `q`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Clause {
    pub negated: bool,
    pub target: ClauseTarget,
    pub value: String,
}

/// The `field:` names of `q` and what they search.
const Q_FIELDS: &[(&str, ClauseTarget)] = &[
    ("action", ClauseTarget::Keyword("action")),
    ("category", ClauseTarget::Keyword("category")),
    ("user", ClauseTarget::Keyword("user")),
    ("repository", ClauseTarget::Keyword("repository")),
    ("outcome", ClauseTarget::Keyword("outcome")),
    ("ip", ClauseTarget::Keyword("ip")),
    ("actor", ClauseTarget::Text(TextField::Actor)),
    ("target", ClauseTarget::Text(TextField::Target)),
    ("message", ClauseTarget::Text(TextField::Message)),
];

/// Checks `q` as a search would read it, for what is kept to search with later (saved views).
pub fn check_q(q: &str) -> Result<(), IndexError> {
    parse_q(q).map(|_| ())
}

/// Parses `q`. Never panics; input it cannot use is a [`IndexError::BadQuery`] for `q`.
pub(crate) fn parse_q(q: &str) -> Result<Vec<Clause>, IndexError> {
    let chars: Vec<char> = q.chars().collect();
    if chars.len() > MAX_Q_CHARS {
        return Err(IndexError::bad_q(format!(
            "is {} characters long; the limit is {MAX_Q_CHARS}",
            chars.len()
        )));
    }
    let n = chars.len();
    let mut clauses = Vec::new();
    let mut i = 0;
    while i < n {
        if chars[i].is_whitespace() {
            i += 1;
            continue;
        }
        let mut negated = false;
        if chars[i] == '-' && i + 1 < n && !chars[i + 1].is_whitespace() {
            negated = true;
            i += 1;
        }
        let mut target = ClauseTarget::Text(TextField::All);
        let mut field_name = None;
        if chars[i] != '"' {
            let mut j = i;
            while j < n && (chars[j].is_ascii_alphabetic() || chars[j] == '_') {
                j += 1;
            }
            if j > i && j < n && chars[j] == ':' {
                let name: String = chars[i..j].iter().collect::<String>().to_ascii_lowercase();
                target = Q_FIELDS
                    .iter()
                    .find(|(f, _)| *f == name)
                    .map(|(_, t)| *t)
                    .ok_or_else(|| {
                        let known: Vec<_> = Q_FIELDS.iter().map(|(f, _)| *f).collect();
                        IndexError::bad_q(format!(
                            "unknown field {name:?}; use one of {} (quote a value that contains a colon)",
                            known.join(", ")
                        ))
                    })?;
                field_name = Some(name);
                i = j + 1;
            }
        }
        let value: String = if i < n && chars[i] == '"' {
            let start = i + 1;
            let mut j = start;
            while j < n && chars[j] != '"' {
                j += 1;
            }
            // An unclosed quote runs to the end.
            i = (j + 1).min(n);
            chars[start..j].iter().collect()
        } else {
            let start = i;
            while i < n && !chars[i].is_whitespace() {
                i += 1;
            }
            chars[start..i].iter().collect()
        };
        if let Some(name) = field_name
            && value.trim().is_empty()
        {
            return Err(IndexError::bad_q(format!("{name}: needs a value")));
        }
        clauses.push(Clause {
            negated,
            target,
            value,
        });
    }
    if clauses.len() > MAX_Q_TERMS {
        return Err(IndexError::bad_q(format!(
            "has {} terms; the limit is {MAX_Q_TERMS}",
            clauses.len()
        )));
    }
    Ok(clauses)
}

/// The value a keyword clause or filter looks up: categories accept their aliases.
fn keyword_value(name: &str, value: &str) -> String {
    let value = value.trim();
    if name == "category"
        && let Some(c) = Category::parse(value)
    {
        return c.as_str().to_string();
    }
    value.to_string()
}

/// A search translated for tantivy, the same for every partition.
pub(crate) struct Plan {
    pub query: Box<dyn Query>,
    /// Inclusive lower bound on `time`, microseconds: the later of `since` and the floor.
    pub since: Option<i64>,
    /// Exclusive upper bound on `time`, microseconds.
    pub until: Option<i64>,
    /// The org and the normalised query: what a cursor is bound to.
    pub scope: String,
    /// The org and the normalised query but for its time range: what the facet counts of a
    /// segment wholly inside the range depend on.
    pub filter_key: std::sync::Arc<str>,
}

impl Plan {
    /// Translates `q` for `org`: a term filter on the org, one OR-group per non-empty filter, and
    /// the clauses of `q`. The time range is left to the collectors.
    pub fn new(fields: &Fields, org: &str, q: &SearchQuery) -> Result<Plan, IndexError> {
        let clauses = match &q.text {
            Some(text) => parse_q(text)?,
            None => Vec::new(),
        };
        let mut must: Vec<(Occur, Box<dyn Query>)> = vec![(
            Occur::Must,
            Box::new(TermQuery::new(
                Term::from_field_text(fields.org, org),
                IndexRecordOption::Basic,
            )),
        )];
        for (name, values) in [
            ("user", &q.users),
            ("action", &q.actions),
            ("category", &q.categories),
            ("repository", &q.repositories),
            ("outcome", &q.outcomes),
        ] {
            if values.is_empty() {
                continue;
            }
            let any: Vec<(Occur, Box<dyn Query>)> = values
                .iter()
                .map(|v| (Occur::Should, keyword_query(fields, name, v)))
                .collect();
            must.push((Occur::Must, Box::new(BooleanQuery::new(any))));
        }
        let mut analyzer = text_analyzer();
        for clause in &clauses {
            let sub = match clause.target {
                ClauseTarget::Keyword(name) => Some(keyword_query(fields, name, &clause.value)),
                ClauseTarget::Text(tf) => {
                    let mut any: Vec<(Occur, Box<dyn Query>)> = tf
                        .fields(fields)
                        .iter()
                        .filter_map(|&field| text_query(&mut analyzer, field, &clause.value))
                        .map(|q| (Occur::Should, q))
                        .collect();
                    match any.len() {
                        0 | 1 => any.pop().map(|(_, q)| q),
                        _ => Some(Box::new(BooleanQuery::new(any)) as Box<dyn Query>),
                    }
                }
            };
            // A term without a single token (`(`, `-`, `"" `) constrains nothing.
            if let Some(sub) = sub {
                let occur = if clause.negated {
                    Occur::MustNot
                } else {
                    Occur::Must
                };
                must.push((occur, sub));
            }
        }
        let since = q.since.max(q.floor).map(|t| t.timestamp_micros());
        let until = q.until.map(|t| t.timestamp_micros());
        Ok(Plan {
            query: Box::new(BooleanQuery::new(must)),
            since,
            until,
            scope: scope(org, q),
            filter_key: filter_key(org, q).into(),
        })
    }
}

fn keyword_query(fields: &Fields, name: &str, value: &str) -> Box<dyn Query> {
    let term = Term::from_field_text(fields.kw, &kw(name, &keyword_value(name, value)));
    Box::new(TermQuery::new(term, IndexRecordOption::Basic))
}

/// A term query for one token, a phrase query (keeping the tokens' relative positions) for more,
/// nothing for none.
fn text_query(
    analyzer: &mut tantivy::tokenizer::TextAnalyzer,
    field: Field,
    value: &str,
) -> Option<Box<dyn Query>> {
    let mut tokens: Vec<(usize, Term)> = Vec::new();
    let mut stream = analyzer.token_stream(value);
    while stream.advance() {
        let t = stream.token();
        tokens.push((t.position, Term::from_field_text(field, &t.text)));
    }
    match tokens.len() {
        0 => None,
        1 => Some(Box::new(TermQuery::new(
            tokens.pop().expect("one token").1,
            IndexRecordOption::Basic,
        ))),
        _ => {
            let first = tokens[0].0;
            let terms = tokens.into_iter().map(|(p, t)| (p - first, t)).collect();
            Some(Box::new(ForwardPhraseQuery(PhraseQuery::new_with_offset(
                terms,
            ))))
        }
    }
}

/// The org and the query, normalised (filter values sorted), as a cursor binds them.
fn scope(org: &str, q: &SearchQuery) -> String {
    format!(
        "v1\x1e{org}\x1e{}\x1e{:?}\x1e{:?}\x1e{:?}",
        filters(q),
        q.since.map(|t| t.timestamp_micros()),
        q.until.map(|t| t.timestamp_micros()),
        q.text.as_deref().map(str::trim),
    )
}

/// The org and the query but for its time range, normalised.
fn filter_key(org: &str, q: &SearchQuery) -> String {
    format!(
        "{org}\x1e{}\x1e{:?}",
        filters(q),
        q.text.as_deref().map(str::trim)
    )
}

/// The structured filters, values sorted, as the scope has always spelled them.
fn filters(q: &SearchQuery) -> String {
    let sorted = |v: &Vec<String>| {
        let mut v = v.clone();
        v.sort();
        v
    };
    format!(
        "{:?}\x1e{:?}\x1e{:?}\x1e{:?}\x1e{:?}",
        sorted(&q.users),
        sorted(&q.actions),
        sorted(&q.categories),
        sorted(&q.repositories),
        sorted(&q.outcomes),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clause(negated: bool, target: ClauseTarget, value: &str) -> Clause {
        Clause {
            negated,
            target,
            value: value.into(),
        }
    }

    #[test]
    fn scope_is_spelled_as_cursors_were_tagged() {
        // Cursors already issued carry a tag over this spelling: changing it voids them.
        let q = SearchQuery {
            users: vec!["b".into(), "a".into()],
            categories: vec!["scan".into()],
            since: Some(chrono::TimeZone::timestamp_opt(&Utc, 1_700_000_000, 0).unwrap()),
            text: Some(" x y ".into()),
            ..Default::default()
        };
        assert_eq!(
            scope("acme", &q),
            "v1\x1eacme\x1e[\"a\", \"b\"]\x1e[]\x1e[\"scan\"]\x1e[]\x1e[]\x1eSome(1700000000000000)\x1eNone\x1eSome(\"x y\")"
        );
        assert_eq!(
            filter_key("acme", &q),
            "acme\x1e[\"a\", \"b\"]\x1e[]\x1e[\"scan\"]\x1e[]\x1e[]\x1eSome(\"x y\")"
        );
    }

    #[test]
    fn parses_the_grammar() {
        use ClauseTarget::*;
        let all = Text(TextField::All);
        assert_eq!(
            parse_q(r#"alice "scan failed" -bob User:x@y.z -ip:10.0.0.1 actor:"Ada L" :"#).unwrap(),
            vec![
                clause(false, all, "alice"),
                clause(false, all, "scan failed"),
                clause(true, all, "bob"),
                clause(false, Keyword("user"), "x@y.z"),
                clause(true, Keyword("ip"), "10.0.0.1"),
                clause(false, Text(TextField::Actor), "Ada L"),
                clause(false, all, ":"),
            ]
        );
        assert_eq!(
            parse_q("\"unclosed phrase").unwrap(),
            vec![clause(false, all, "unclosed phrase")]
        );
        assert_eq!(parse_q("10:30 - -").unwrap().len(), 3);
        let err = parse_q("foo:bar").unwrap_err().to_string();
        assert!(err.contains("\"foo\""), "{err}");
        assert!(parse_q("user:").is_err());
        assert!(parse_q(&"a ".repeat(40)).is_err());
        assert!(parse_q(&"x".repeat(MAX_Q_CHARS + 1)).is_err());
        assert_eq!(parse_q("").unwrap(), vec![]);
    }
}
