//! Roles and the one table of what each may do.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// What an API key may do within its own org.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    /// Reads the audit log, manages keys and retention.
    #[serde(rename = "ORG_OWNER")]
    OrgOwner,
    /// Reads the audit log.
    #[serde(rename = "ORG_ADMIN")]
    OrgAdmin,
    /// An org member: no access to the audit log.
    #[serde(rename = "MEMBER")]
    Member,
    /// An agent: sends records into its own org, reads nothing.
    #[serde(rename = "INGEST")]
    Ingest,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::OrgOwner, Role::OrgAdmin, Role::Member, Role::Ingest];

    /// The role's name as serialised and accepted on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::OrgOwner => "ORG_OWNER",
            Role::OrgAdmin => "ORG_ADMIN",
            Role::Member => "MEMBER",
            Role::Ingest => "INGEST",
        }
    }

    /// May read (query, export) its org's audit log.
    pub fn can_read_log(self) -> bool {
        matches!(self, Role::OrgOwner | Role::OrgAdmin)
    }

    /// May send audit records into its org.
    pub fn can_ingest(self) -> bool {
        matches!(self, Role::Ingest)
    }

    /// May create, list and revoke its org's API keys.
    pub fn can_manage_keys(self) -> bool {
        matches!(self, Role::OrgOwner)
    }

    /// May change its org's retention policy.
    pub fn can_change_retention(self) -> bool {
        matches!(self, Role::OrgOwner)
    }

    /// Creating, changing, pausing, replaying, testing and deleting an org's streams.
    pub fn can_manage_streams(self) -> bool {
        matches!(self, Role::OrgOwner)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role name that is not one of [`Role::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role {0:?}; expected one of ORG_OWNER, ORG_ADMIN, MEMBER, INGEST")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;

    /// Accepts the exact names, ignoring ASCII case and treating `-` as `_` (`org-admin`).
    fn from_str(s: &str) -> Result<Role, UnknownRole> {
        let wanted = s.trim().to_ascii_uppercase().replace('-', "_");
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == wanted)
            .ok_or_else(|| UnknownRole(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permission_table() {
        // (role, read log, ingest, manage keys, change retention)
        let table = [
            (Role::OrgOwner, true, false, true, true),
            (Role::OrgAdmin, true, false, false, false),
            (Role::Member, false, false, false, false),
            (Role::Ingest, false, true, false, false),
        ];
        assert_eq!(table.len(), Role::ALL.len());
        for (role, read, ingest, keys, retention) in table {
            assert_eq!(role.can_read_log(), read, "{role} can_read_log");
            assert_eq!(role.can_ingest(), ingest, "{role} can_ingest");
            assert_eq!(role.can_manage_keys(), keys, "{role} can_manage_keys");
            assert_eq!(
                role.can_change_retention(),
                retention,
                "{role} can_change_retention"
            );
        }
    }

    #[test]
    fn names_round_trip() {
        for role in Role::ALL {
            let json = serde_json::to_string(&role).unwrap();
            assert_eq!(json, format!("\"{}\"", role.as_str()));
            assert_eq!(serde_json::from_str::<Role>(&json).unwrap(), role);
            assert_eq!(role.as_str().parse::<Role>().unwrap(), role);
        }
        assert_eq!("org-admin".parse::<Role>().unwrap(), Role::OrgAdmin);
        assert!("ADMIN".parse::<Role>().is_err());
        // The file format is strict: only the exact names.
        assert!(serde_json::from_str::<Role>("\"org_owner\"").is_err());
    }
}
