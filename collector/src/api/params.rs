//! Query-string parameters of the audit-log routes, checked once: every bad value answers 400
//! naming the parameter, unknown parameters included (a typo never widens a query silently).

use super::ApiError;
use crate::index::SearchQuery;
use chrono::{DateTime, Utc};
use codestax_common::api::ExportFormat;
use codestax_common::time::{Bound, parse_time_bound};
use codestax_common::{Category, Outcome, check_action};
use std::collections::BTreeMap;

/// Filters that may repeat (values ORed) and those that may appear once.
const REPEATABLE: &[&str] = &["user", "action", "category", "repository", "outcome"];
const SINGLE_FILTERS: &[&str] = &["since", "until", "q"];
/// Every filter name, in the order the docs list them.
pub const FILTERS: &[&str] = &[
    "q",
    "user",
    "action",
    "category",
    "repository",
    "outcome",
    "since",
    "until",
];

/// The value of `name` in the query of a route that takes that one parameter only (`None` when
/// absent); any other parameter, or `name` repeated, is a 400 naming it.
pub fn only_param(raw: Option<&str>, name: &str) -> Result<Option<String>, ApiError> {
    let mut value = None;
    for (key, v) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        if key != name || value.is_some() {
            return Err(ApiError::invalid(
                key.as_ref(),
                format!("unknown or repeated parameter {key:?}; this route takes {name}"),
            ));
        }
        value = Some(v.into_owned());
    }
    Ok(value)
}

/// Whether `name` is a filter (not a paging, facet or export parameter).
pub fn is_filter(name: &str) -> bool {
    REPEATABLE.contains(&name) || SINGLE_FILTERS.contains(&name)
}

/// Longest `q` accepted, in bytes.
const MAX_QUERY_BYTES: usize = 2048;

/// What a route accepts beyond the filters.
#[derive(Debug, Clone, Copy)]
pub enum Route {
    /// `limit`, `cursor` and `group_views`.
    Search { max_limit: usize },
    /// `top`.
    Facets { max_top: usize },
    /// `format` and `with_chain`.
    Export,
}

/// The checked parameters of one request.
#[derive(Debug, Clone, Default)]
pub struct Params {
    pub query: SearchQuery,
    pub limit: Option<usize>,
    pub cursor: Option<String>,
    pub top: Option<usize>,
    /// The export's format (`csv` when not given).
    pub format: Option<ExportFormat>,
    /// Whether a CSV export carries the `seq`, `prev_hash` and `hash` columns.
    pub with_chain: bool,
    /// Whether a search page also lists its rows with a viewer's consecutive
    /// `audit_log.viewed` entries grouped.
    pub group_views: bool,
    /// The filters as given (for the `audit_log.viewed` record's metadata).
    pub filters: BTreeMap<String, Vec<String>>,
}

/// Parses a raw query string for `route`. `allow_custom_actions` widens the accepted actions and
/// categories to any well-formed name, as for ingest.
pub fn parse(
    raw: Option<&str>,
    route: Route,
    allow_custom_actions: bool,
    now: DateTime<Utc>,
) -> Result<Params, ApiError> {
    let mut p = Params::default();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for (key, value) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        let key = key.into_owned();
        let value = value.into_owned();
        let count = seen.entry(key.clone()).or_default();
        *count += 1;
        let known = REPEATABLE.contains(&key.as_str())
            || SINGLE_FILTERS.contains(&key.as_str())
            || matches!(
                (route, key.as_str()),
                (Route::Search { .. }, "limit" | "cursor" | "group_views")
                    | (Route::Facets { .. }, "top")
                    | (Route::Export, "format" | "with_chain")
            );
        if !known {
            return Err(ApiError::invalid(
                &key,
                format!(
                    "unknown parameter {key:?}; expected one of {}",
                    expected(route)
                ),
            ));
        }
        if *count > 1 && !REPEATABLE.contains(&key.as_str()) {
            return Err(ApiError::invalid(
                &key,
                format!("{key} may be given only once"),
            ));
        }
        if value.trim().is_empty() {
            return Err(ApiError::invalid(&key, format!("{key} must not be empty")));
        }
        if REPEATABLE.contains(&key.as_str()) || SINGLE_FILTERS.contains(&key.as_str()) {
            p.filters
                .entry(key.clone())
                .or_default()
                .push(value.clone());
        }
        let q = &mut p.query;
        match key.as_str() {
            "user" => q.users.push(value),
            "action" => {
                check_action(&value, allow_custom_actions)
                    .map_err(|e| ApiError::invalid("action", e.to_string()))?;
                q.actions.push(value);
            }
            "category" => q.categories.push(category(&value, allow_custom_actions)?),
            "repository" => q.repositories.push(value),
            "outcome" => {
                let o = Outcome::parse(value.trim()).ok_or_else(|| {
                    ApiError::invalid(
                        "outcome",
                        format!("unknown outcome {value:?}; expected success or failure"),
                    )
                })?;
                q.outcomes.push(o.as_str().to_string());
            }
            "since" => q.since = Some(time(&key, &value, Bound::Since, now)?),
            "until" => q.until = Some(time(&key, &value, Bound::Until, now)?),
            "q" => {
                if value.len() > MAX_QUERY_BYTES {
                    return Err(ApiError::invalid(
                        "q",
                        format!(
                            "query is {} bytes, over the limit of {MAX_QUERY_BYTES}",
                            value.len()
                        ),
                    ));
                }
                q.text = Some(value);
            }
            "limit" => {
                let Route::Search { max_limit } = route else {
                    unreachable!()
                };
                p.limit = Some(number(&key, &value, max_limit)?);
            }
            "top" => {
                let Route::Facets { max_top } = route else {
                    unreachable!()
                };
                p.top = Some(number(&key, &value, max_top)?);
            }
            "cursor" => p.cursor = Some(value),
            "format" => {
                p.format = Some(ExportFormat::parse(value.trim()).ok_or_else(|| {
                    ApiError::invalid(
                        "format",
                        format!(
                            "unknown format {value:?}; expected one of {}",
                            ExportFormat::names()
                        ),
                    )
                })?)
            }
            "with_chain" => p.with_chain = flag(&key, &value)?,
            "group_views" => p.group_views = flag(&key, &value)?,
            _ => unreachable!("checked above"),
        }
    }
    if let (Some(since), Some(until)) = (p.query.since, p.query.until)
        && since >= until
    {
        return Err(ApiError::invalid("until", "until must be later than since"));
    }
    Ok(p)
}

fn expected(route: Route) -> String {
    let mut all: Vec<&str> = REPEATABLE.iter().chain(SINGLE_FILTERS).copied().collect();
    match route {
        Route::Search { .. } => all.extend(["limit", "cursor", "group_views"]),
        Route::Facets { .. } => all.push("top"),
        Route::Export => all.extend(["format", "with_chain"]),
    }
    all.join(", ")
}

fn flag(key: &str, value: &str) -> Result<bool, ApiError> {
    match value.trim() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(ApiError::invalid(
            key,
            format!("{key} must be true or false, got {value:?}"),
        )),
    }
}

fn category(value: &str, allow_custom: bool) -> Result<String, ApiError> {
    if let Some(c) = Category::parse(value) {
        return Ok(c.as_str().to_string());
    }
    let custom_ok = allow_custom
        && !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if custom_ok {
        return Ok(value.to_string());
    }
    let names: Vec<&str> = Category::ALL.iter().map(|c| c.as_str()).collect();
    Err(ApiError::invalid(
        "category",
        format!(
            "unknown category {value:?}; expected one of {} (or an alias such as triage, authentication, repo)",
            names.join(", ")
        ),
    ))
}

fn time(
    key: &str,
    value: &str,
    bound: Bound,
    now: DateTime<Utc>,
) -> Result<DateTime<Utc>, ApiError> {
    parse_time_bound(value, bound, now).map_err(|e| ApiError::invalid(key, format!("{key}: {e}")))
}

fn number(key: &str, value: &str, max: usize) -> Result<usize, ApiError> {
    match value.trim().parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(ApiError::invalid(
            key,
            format!("{key} must be a whole number between 1 and {max}, got {value:?}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        codestax_common::time::parse_rfc3339("2026-11-27T12:00:00Z").unwrap()
    }

    #[test]
    fn export_takes_the_filters_a_format_and_with_chain() {
        let p = parse(
            Some("format=ndjson&with_chain=true&user=ada%40acme.example&user=bob&category=triage&since=7d&q=x"),
            Route::Export,
            false,
            now(),
        )
        .unwrap();
        assert_eq!(p.format, Some(ExportFormat::Ndjson));
        assert!(p.with_chain);
        assert_eq!(p.query.users, ["ada@acme.example", "bob"]);
        assert_eq!(p.query.categories, ["finding"]);
        assert!(p.query.since.is_some());
        // Only the filters are recorded as filters.
        assert_eq!(
            p.filters.keys().collect::<Vec<_>>(),
            ["category", "q", "since", "user"]
        );
        let p = parse(None, Route::Export, false, now()).unwrap();
        assert_eq!((p.format, p.with_chain), (None, false));
    }

    #[test]
    fn export_refuses_what_it_does_not_take() {
        for (raw, field) in [
            ("format=xml", "format"),
            ("format=csv&format=json", "format"),
            ("with_chain=yes", "with_chain"),
            ("limit=5", "limit"),
            ("cursor=abc", "cursor"),
            ("top=3", "top"),
        ] {
            let e = parse(Some(raw), Route::Export, false, now()).unwrap_err();
            assert_eq!(e.field.as_deref(), Some(field), "{raw}: {e}");
        }
        // And search does not take the export's parameters.
        let e = parse(
            Some("format=csv"),
            Route::Search { max_limit: 10 },
            false,
            now(),
        )
        .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("format"));
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn value() -> impl Strategy<Value = String> {
            prop_oneof![
                prop::sample::select(vec![
                    "7d",
                    "24h",
                    "30m",
                    "2w",
                    "0s",
                    "99999999999d",
                    "9223372036854775807s",
                    "2026-11-20",
                    "2026-02-30",
                    "+275760-09-13",
                    "2026-11-27T10:00:00Z",
                    "2026-11-27T10:00:00.123456789+14:00",
                    "9999-12-31",
                    "-0001-01-01",
                    "csv",
                    "ndjson",
                    "true",
                    "false",
                    "success",
                    "triage",
                    "scan.triggered",
                    "1",
                    "0",
                    "18446744073709551616",
                    " ",
                    "",
                ])
                .prop_map(str::to_string),
                "[0-9]{1,22}[smhdwy]?",
                "\\PC{0,12}",
            ]
        }

        fn raw_query() -> impl Strategy<Value = String> {
            let key = prop::sample::select(vec![
                "since",
                "until",
                "q",
                "user",
                "action",
                "category",
                "repository",
                "outcome",
                "limit",
                "cursor",
                "top",
                "format",
                "with_chain",
                "nope",
                "",
            ]);
            prop_oneof![
                3 => prop::collection::vec((key, value()), 0..5).prop_map(|pairs| {
                    form_urlencoded::Serializer::new(String::new())
                        .extend_pairs(pairs)
                        .finish()
                }),
                1 => "\\PC{0,40}",
                1 => "[a-z=&%0-9A-F+]{0,40}",
            ]
        }

        fn now() -> impl Strategy<Value = DateTime<Utc>> {
            prop_oneof![
                Just(super::now()),
                Just(DateTime::<Utc>::MIN_UTC),
                Just(DateTime::<Utc>::MAX_UTC),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(
                std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(512)
            ))]

            /// Any query string, on any route, at any `now` (huge look-backs included): the
            /// parameters, or a 400 naming a parameter the query string has; never a panic.
            #[test]
            fn prop_any_query_string_is_params_or_a_400_naming_one(
                raw in raw_query(),
                route in prop::sample::select(vec![
                    Route::Search { max_limit: 200 },
                    Route::Facets { max_top: 50 },
                    Route::Export,
                ]),
                custom in any::<bool>(),
                now in now(),
            ) {
                match parse(Some(&raw), route, custom, now) {
                    Ok(p) => {
                        if let (Some(s), Some(u)) = (p.query.since, p.query.until) {
                            assert!(s < u, "{raw}");
                        }
                    }
                    Err(e) => {
                        assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST, "{raw}: {e:?}");
                        let field = e.field.clone().unwrap_or_default();
                        assert!(
                            form_urlencoded::parse(raw.as_bytes()).any(|(k, _)| k == field.as_str()),
                            "{raw}: {e:?} names no parameter of the query"
                        );
                    }
                }
            }

            /// Formatted times and dates given as `since`/`until` read back as themselves.
            #[test]
            fn prop_formatted_times_round_trip(secs in 946_684_800i64..4_102_444_800, micros in 0u32..1_000_000) {
                let t = chrono::TimeZone::timestamp_opt(&Utc, secs, micros * 1000).unwrap();
                let text = codestax_common::time::format_rfc3339(&t);
                let raw = form_urlencoded::Serializer::new(String::new())
                    .append_pair("since", &text)
                    .finish();
                let p = parse(Some(&raw), Route::Export, false, super::now()).unwrap();
                assert_eq!(p.query.since, Some(t));
            }
        }
    }
}
