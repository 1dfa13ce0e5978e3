//! Range and shape checks shared by both configurations; collects every problem, stops at none.

use std::fmt::Display;
use std::net::SocketAddr;
use std::time::Duration;

use crate::error::Invalid;

pub(crate) const KIB: u64 = 1024;
pub(crate) const MIB: u64 = 1024 * KIB;
pub(crate) const GIB: u64 = 1024 * MIB;

/// Accumulates problems; keys are dotted paths relative to the component, with list indices as
/// numeric segments (`orgs.2.id`).
#[derive(Debug, Default)]
pub(crate) struct Checker {
    problems: Vec<Invalid>,
}

impl Checker {
    pub(crate) fn fail(&mut self, key: &str, message: impl Into<String>) {
        self.problems.push(Invalid {
            path: key.split('.').map(String::from).collect(),
            message: message.into(),
            against: None,
        });
    }

    /// `key` disagrees with `other` (which the message names): reported at `key`, or where
    /// `other` was set when `key` holds its default (the user changed `other`, not `key`).
    pub(crate) fn fail_against(&mut self, key: &str, other: &str, message: impl Into<String>) {
        self.problems.push(Invalid {
            path: key.split('.').map(String::from).collect(),
            message: message.into(),
            against: Some(other.split('.').map(String::from).collect()),
        });
    }

    /// `min..=max` for counts and days.
    pub(crate) fn range<T: PartialOrd + Display>(&mut self, key: &str, value: T, min: T, max: T) {
        if value < min || value > max {
            self.fail(key, format!("must be between {min} and {max}, got {value}"));
        }
    }

    /// `min..=max` for byte sizes; bounds are also shown in KiB/MiB/GiB.
    pub(crate) fn bytes_range(&mut self, key: &str, value: u64, min: u64, max: u64) {
        if value < min || value > max {
            self.fail(
                key,
                format!(
                    "must be between {} and {} bytes, got {value}",
                    bytes(min),
                    bytes(max)
                ),
            );
        }
    }

    /// `value >= min` for byte sizes, with a reason appended when given.
    pub(crate) fn bytes_at_least(&mut self, key: &str, value: u64, min: u64, why: &str) {
        if value < min {
            let why = if why.is_empty() {
                String::new()
            } else {
                format!(" ({why})")
            };
            self.fail(
                key,
                format!("must be at least {} bytes{why}, got {value}", bytes(min)),
            );
        }
    }

    /// `min..=max` for durations, shown in humantime form.
    pub(crate) fn duration_range(
        &mut self,
        key: &str,
        value: Duration,
        min: Duration,
        max: Duration,
    ) {
        if value < min || value > max {
            self.fail(
                key,
                format!(
                    "must be between {} and {}, got {}",
                    duration(min),
                    duration(max),
                    duration(value)
                ),
            );
        }
    }

    pub(crate) fn non_empty(&mut self, key: &str, value: &str) {
        if value.trim().is_empty() {
            self.fail(key, "must not be empty");
        }
    }

    /// A tracing level or filter directive list: non-empty, and each directive's level (the part
    /// after `=`, or the whole directive when it is a bare level) must be a known level.
    pub(crate) fn log_level(&mut self, key: &str, value: &str) {
        const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
        if value.trim().is_empty() {
            self.fail(key, "must not be empty (use e.g. \"info\")");
            return;
        }
        for directive in value.split(',').map(str::trim) {
            let level = match directive.rsplit_once('=') {
                Some((_, level)) => level,
                None => continue, // a bare target, or a bare level: both are accepted by tracing
            };
            if !LEVELS.contains(&level.to_ascii_lowercase().as_str()) {
                self.fail(
                    key,
                    format!(
                        "unknown level {level:?} in {directive:?}, expected one of: {}",
                        LEVELS.join(", ")
                    ),
                );
            }
        }
    }

    /// Two listeners must not bind the same port on overlapping addresses.
    pub(crate) fn distinct_listeners(&mut self, listeners: &[(&str, SocketAddr)]) {
        for (i, (key, addr)) in listeners.iter().enumerate() {
            for (other_key, other) in &listeners[..i] {
                if collides(*addr, *other) {
                    self.fail_against(
                        key,
                        other_key,
                        format!("{addr} collides with {other_key} ({other}); use another port"),
                    );
                }
            }
        }
    }

    pub(crate) fn into_problems(self) -> Vec<Invalid> {
        self.problems
    }
}

/// Whether two listen addresses would fight over the same port.
pub(crate) fn collides(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port()
        && a.port() != 0
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// An organisation id: 1 to 64 of `A-Z a-z 0-9 _ . -`, not only dots (the same rule as
/// `codestax_common::is_valid_org_id`: an org id names files of its state).
pub(crate) fn is_valid_org_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        && !id.bytes().all(|b| b == b'.')
}

/// `16777216 (16 MiB)`; plain when not a whole number of KiB.
pub(crate) fn bytes(n: u64) -> String {
    for (unit, size) in [("GiB", GIB), ("MiB", MIB), ("KiB", KIB)] {
        if n >= size && n.is_multiple_of(size) {
            return format!("{n} ({} {unit})", n / size);
        }
    }
    n.to_string()
}

/// `1h 30m`, `500ms`, `0s`.
pub(crate) fn duration(d: Duration) -> String {
    if d.is_zero() {
        return "0s".to_string();
    }
    humantime_serde::re::humantime::format_duration(d).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_sizes_and_durations() {
        assert_eq!(bytes(16 * MIB), "16777216 (16 MiB)");
        assert_eq!(bytes(1000), "1000");
        assert_eq!(duration(Duration::from_secs(3600)), "1h");
        assert_eq!(duration(Duration::from_millis(500)), "500ms");
        assert_eq!(duration(Duration::ZERO), "0s");
    }

    #[test]
    fn org_ids() {
        assert!(is_valid_org_id("acme"));
        assert!(is_valid_org_id("a.b_c-9"));
        assert!(!is_valid_org_id(""));
        assert!(!is_valid_org_id("has space"));
        for dots in [".", "..", "..."] {
            assert!(!is_valid_org_id(dots), "{dots}");
        }
        assert!(is_valid_org_id("..a"));
        assert!(!is_valid_org_id(&"x".repeat(65)));
    }

    #[test]
    fn listener_collisions() {
        let a: SocketAddr = "127.0.0.1:80".parse().unwrap();
        let b: SocketAddr = "0.0.0.0:80".parse().unwrap();
        let c: SocketAddr = "127.0.0.2:80".parse().unwrap();
        assert!(collides(a, b));
        assert!(!collides(a, c));
        assert!(!collides(
            "127.0.0.1:0".parse().unwrap(),
            "127.0.0.1:0".parse().unwrap()
        ));
    }

    #[test]
    fn log_levels() {
        let mut c = Checker::default();
        c.log_level("log.level", "info");
        c.log_level("log.level", "warn,codestax_agent=debug");
        c.log_level("log.level", "codestax_agent");
        assert!(c.into_problems().is_empty());
        let mut c = Checker::default();
        c.log_level("log.level", "codestax=loud");
        c.log_level("log.level", " ");
        assert_eq!(c.into_problems().len(), 2);
    }
}
