//! The action catalog: every event the product records, as one table of data, and the categories
//! (with the spec's words as aliases) that filters accept.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A category of actions: the part of an action name before the dot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    Auth,
    Repository,
    Scan,
    Finding,
    Team,
    Settings,
    Integration,
    AuditLog,
}

impl Category {
    /// Every category, in the order of the spec's table.
    pub const ALL: [Category; 8] = [
        Category::Auth,
        Category::Repository,
        Category::Scan,
        Category::Finding,
        Category::Team,
        Category::Settings,
        Category::Integration,
        Category::AuditLog,
    ];

    /// The name used in action names and stored records (`auth`, `audit_log`).
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Auth => "auth",
            Category::Repository => "repository",
            Category::Scan => "scan",
            Category::Finding => "finding",
            Category::Team => "team",
            Category::Settings => "settings",
            Category::Integration => "integration",
            Category::AuditLog => "audit_log",
        }
    }

    /// The heading the spec and the dashboard use.
    pub fn label(self) -> &'static str {
        match self {
            Category::Auth => "Authentication",
            Category::Repository => "Repositories",
            Category::Scan => "Scans",
            Category::Finding => "Findings",
            Category::Team => "Team",
            Category::Settings => "Settings",
            Category::Integration => "Integrations",
            Category::AuditLog => "Audit log",
        }
    }

    /// Parses a category name or one of its aliases (`triage`, `authentication`, `repos`, ...),
    /// ignoring case, surrounding space, and `-` / `_` / space differences.
    pub fn parse(s: &str) -> Option<Category> {
        let key: String = s
            .trim()
            .chars()
            .map(|c| match c {
                '-' | ' ' => '_',
                c => c.to_ascii_lowercase(),
            })
            .collect();
        CATEGORY_ALIASES
            .iter()
            .find(|(alias, _)| *alias == key)
            .map(|(_, c)| *c)
    }

    /// The catalog's actions in this category.
    pub fn actions(self) -> impl Iterator<Item = &'static ActionSpec> {
        CATALOG.iter().filter(move |a| a.category == self)
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Every name a category filter accepts, after folding case and separators to `_`.
pub const CATEGORY_ALIASES: &[(&str, Category)] = &[
    ("auth", Category::Auth),
    ("authentication", Category::Auth),
    ("login", Category::Auth),
    ("logins", Category::Auth),
    ("api_key", Category::Auth),
    ("api_keys", Category::Auth),
    ("repository", Category::Repository),
    ("repositories", Category::Repository),
    ("repo", Category::Repository),
    ("repos", Category::Repository),
    ("scan", Category::Scan),
    ("scans", Category::Scan),
    ("finding", Category::Finding),
    ("findings", Category::Finding),
    ("triage", Category::Finding),
    ("team", Category::Team),
    ("teams", Category::Team),
    ("member", Category::Team),
    ("members", Category::Team),
    ("settings", Category::Settings),
    ("setting", Category::Settings),
    ("integration", Category::Integration),
    ("integrations", Category::Integration),
    ("audit_log", Category::AuditLog),
    ("audit_logs", Category::AuditLog),
    ("auditlog", Category::AuditLog),
    ("audit", Category::AuditLog),
];

/// One action of the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActionSpec {
    /// `category.event`, as stored and filtered on.
    pub name: &'static str,
    pub category: Category,
    /// The spec's words for the event.
    pub description: &'static str,
}

const fn action(name: &'static str, category: Category, description: &'static str) -> ActionSpec {
    ActionSpec {
        name,
        category,
        description,
    }
}

/// Every action the product knows, covering each event of the spec's table, plus the audit log's
/// own reads and exports.
pub const CATALOG: &[ActionSpec] = &[
    action("auth.login", Category::Auth, "Login"),
    action("auth.logout", Category::Auth, "Logout"),
    action("auth.api_key_created", Category::Auth, "API key creation"),
    action("auth.api_key_revoked", Category::Auth, "API key revocation"),
    action(
        "repository.connected",
        Category::Repository,
        "Repository connected",
    ),
    action(
        "repository.disconnected",
        Category::Repository,
        "Repository disconnected",
    ),
    action(
        "repository.settings_changed",
        Category::Repository,
        "Repository settings changed",
    ),
    action("scan.triggered", Category::Scan, "Scan triggered"),
    action("scan.completed", Category::Scan, "Scan completed"),
    action("scan.failed", Category::Scan, "Scan failed"),
    action("scan.cancelled", Category::Scan, "Scan cancelled"),
    action(
        "finding.triaged",
        Category::Finding,
        "Triage status changed",
    ),
    action("finding.ignored", Category::Finding, "Finding ignored"),
    action("finding.commented", Category::Finding, "Finding commented"),
    action("team.member_invited", Category::Team, "Member invited"),
    action("team.role_changed", Category::Team, "Role changed"),
    action("team.member_removed", Category::Team, "Member removed"),
    action(
        "settings.org_updated",
        Category::Settings,
        "Organization settings updated",
    ),
    action(
        "settings.webhook_configured",
        Category::Settings,
        "Webhook configured",
    ),
    action(
        "settings.policy_changed",
        Category::Settings,
        "Policy changed",
    ),
    action(
        "settings.retention_changed",
        Category::Settings,
        "Data retention changed",
    ),
    action(
        "integration.jira_linked",
        Category::Integration,
        "Jira linked",
    ),
    action(
        "integration.oauth_token_refreshed",
        Category::Integration,
        "OAuth token refreshed",
    ),
    action(
        "integration.webhook_enabled",
        Category::Integration,
        "Webhook enabled",
    ),
    action(
        "integration.webhook_disabled",
        Category::Integration,
        "Webhook disabled",
    ),
    action("audit_log.viewed", Category::AuditLog, "Audit log viewed"),
    action(
        "audit_log.exported",
        Category::AuditLog,
        "Audit log exported",
    ),
    action(
        "audit_log.stream_created",
        Category::AuditLog,
        "Audit log stream created",
    ),
    action(
        "audit_log.stream_changed",
        Category::AuditLog,
        "Audit log stream changed",
    ),
    action(
        "audit_log.stream_deleted",
        Category::AuditLog,
        "Audit log stream deleted",
    ),
    action(
        "audit_log.saved_view_created",
        Category::AuditLog,
        "Audit log saved view created",
    ),
    action(
        "audit_log.saved_view_changed",
        Category::AuditLog,
        "Audit log saved view changed",
    ),
    action(
        "audit_log.saved_view_deleted",
        Category::AuditLog,
        "Audit log saved view deleted",
    ),
    action(
        "audit_log.stream_records_expired",
        Category::AuditLog,
        "Records expired before a stream delivered them",
    ),
    action(
        "audit_log.id_conflict",
        Category::AuditLog,
        "Records refused: their ids are stored for other records",
    ),
];

/// Looks an action up in the catalog by its exact name.
pub fn lookup(name: &str) -> Option<&'static ActionSpec> {
    CATALOG.iter().find(|a| a.name == name)
}

/// The catalog action closest to `name` (edit distance), for "did you mean" messages.
pub fn nearest(name: &str) -> &'static ActionSpec {
    CATALOG
        .iter()
        .min_by_key(|a| strsim::levenshtein(a.name, name))
        .expect("the catalog is not empty")
}

/// Why an action name is not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActionError {
    #[error("must have the form category.event (lowercase letters, digits and _), got {0:?}")]
    Malformed(String),
    #[error("unknown action {given:?}; did you mean {nearest:?}?")]
    Unknown {
        given: String,
        nearest: &'static str,
    },
}

/// Words that find an action by what it means, beyond the words of its name (which are searched
/// as they are): each word of the name without its past-tense ending (`triaged` gives `triage`
/// and `triag`, `triggered` gives `trigger`, `cancelled` gives `cancel`), and a catalog action's
/// description (`Triage status changed`). The index adds these to a record's full text so that
/// `q=triage` finds `finding.triaged`; a form that is not a word costs a term and finds nothing
/// else.
pub fn search_words(action: &str, out: &mut impl FnMut(&str)) {
    for word in action.split(|c: char| !c.is_alphanumeric()) {
        let Some(stem) = word.strip_suffix("ed").filter(|s| s.len() >= 2) else {
            continue;
        };
        out(&word[..word.len() - 1]);
        out(stem);
        let b = stem.as_bytes();
        if b.len() >= 3 && b[b.len() - 1] == b[b.len() - 2] && !b"aeiou".contains(&b[b.len() - 1]) {
            out(&stem[..stem.len() - 1]);
        }
    }
    if let Some(spec) = lookup(action) {
        out(spec.description);
    }
}

/// Checks an action name and returns its category name. With `allow_custom`, any well-formed
/// `category.event` passes and its category is the part before the dot.
pub fn check(name: &str, allow_custom: bool) -> Result<&str, ActionError> {
    let (category, event) = name
        .split_once('.')
        .ok_or_else(|| ActionError::Malformed(name.to_string()))?;
    let well_formed = |part: &str| {
        !part.is_empty()
            && part.len() <= 64
            && part.starts_with(|c: char| c.is_ascii_lowercase())
            && part
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    };
    if !well_formed(category) || !well_formed(event) {
        return Err(ActionError::Malformed(name.to_string()));
    }
    if lookup(name).is_some() || allow_custom {
        Ok(category)
    } else {
        Err(ActionError::Unknown {
            given: name.to_string(),
            nearest: nearest(name).name,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words_of(action: &str) -> Vec<String> {
        let mut v = Vec::new();
        search_words(action, &mut |w| v.push(w.to_string()));
        v
    }

    #[test]
    fn search_words_give_the_base_of_each_word_and_the_description() {
        assert_eq!(
            words_of("finding.triaged"),
            ["triage", "triag", "Triage status changed"]
        );
        assert!(words_of("scan.triggered").contains(&"trigger".to_string()));
        assert!(words_of("scan.cancelled").contains(&"cancel".to_string()));
        assert!(words_of("auth.api_key_created").contains(&"create".to_string()));
        assert!(words_of("repository.disconnected").contains(&"disconnect".to_string()));
        // A custom action gets the endings too; words without one add nothing.
        assert_eq!(words_of("billing.invoice_mailed"), ["maile", "mail"]);
        assert!(words_of("billing.invoice_paid").is_empty());
        assert!(words_of("auth.login").iter().all(|w| w == "Login"));
    }

    #[test]
    fn every_catalog_action_names_its_category() {
        for a in CATALOG {
            let (prefix, _) = a.name.split_once('.').unwrap();
            assert_eq!(prefix, a.category.as_str(), "{}", a.name);
            assert_eq!(check(a.name, false), Ok(a.category.as_str()));
        }
        let names: std::collections::BTreeSet<_> = CATALOG.iter().map(|a| a.name).collect();
        assert_eq!(names.len(), CATALOG.len(), "action names are unique");
    }

    #[test]
    fn catalog_covers_every_event_of_the_spec() {
        let expected = [
            "auth.login",
            "auth.logout",
            "auth.api_key_created",
            "auth.api_key_revoked",
            "repository.connected",
            "repository.disconnected",
            "repository.settings_changed",
            "scan.triggered",
            "scan.completed",
            "scan.failed",
            "scan.cancelled",
            "finding.triaged",
            "finding.ignored",
            "finding.commented",
            "team.member_invited",
            "team.role_changed",
            "team.member_removed",
            "settings.org_updated",
            "settings.webhook_configured",
            "settings.policy_changed",
            "settings.retention_changed",
            "integration.jira_linked",
            "integration.oauth_token_refreshed",
            "integration.webhook_enabled",
            "integration.webhook_disabled",
            "audit_log.viewed",
            "audit_log.exported",
            "audit_log.stream_created",
            "audit_log.stream_changed",
            "audit_log.stream_deleted",
            "audit_log.saved_view_created",
            "audit_log.saved_view_changed",
            "audit_log.saved_view_deleted",
            "audit_log.stream_records_expired",
            "audit_log.id_conflict",
        ];
        let got: Vec<_> = CATALOG.iter().map(|a| a.name).collect();
        assert_eq!(got, expected);
        for c in Category::ALL {
            assert!(c.actions().count() >= 2, "{c} has its events");
        }
    }

    #[test]
    fn aliases() {
        let cases = [
            ("triage", Category::Finding),
            ("Findings", Category::Finding),
            ("authentication", Category::Auth),
            ("AUTH", Category::Auth),
            ("repo", Category::Repository),
            ("repos", Category::Repository),
            ("repositories", Category::Repository),
            ("scans", Category::Scan),
            ("team", Category::Team),
            ("members", Category::Team),
            ("settings", Category::Settings),
            ("integrations", Category::Integration),
            ("audit-log", Category::AuditLog),
            (" audit log ", Category::AuditLog),
        ];
        for (alias, want) in cases {
            assert_eq!(Category::parse(alias), Some(want), "{alias}");
        }
        for (alias, want) in CATEGORY_ALIASES {
            assert_eq!(Category::parse(alias), Some(*want));
        }
        for c in Category::ALL {
            assert_eq!(Category::parse(c.as_str()), Some(c));
            assert_eq!(Category::parse(c.label()), Some(c), "label {}", c.label());
        }
        assert_eq!(Category::parse("billing"), None);
    }

    #[test]
    fn unknown_actions_name_the_nearest() {
        assert_eq!(
            check("scan.trigered", false),
            Err(ActionError::Unknown {
                given: "scan.trigered".into(),
                nearest: "scan.triggered"
            })
        );
        let msg = check("finding.triage", false).unwrap_err().to_string();
        assert!(msg.contains("did you mean \"finding.triaged\""), "{msg}");
        assert_eq!(check("billing.invoice_paid", true), Ok("billing"));
        assert!(matches!(
            check("Scan.Triggered", true),
            Err(ActionError::Malformed(_))
        ));
        assert!(matches!(
            check("scan", true),
            Err(ActionError::Malformed(_))
        ));
        assert!(matches!(
            check("scan.", false),
            Err(ActionError::Malformed(_))
        ));
        assert!(matches!(
            check("a.b.c", true),
            Err(ActionError::Malformed(_))
        ));
    }
}
