//! The role table (access.md): role names are fixed, what each may do is configuration with
//! the defaults below (アクセス権限と事務の対応表).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::AccessError;

/// A role a principal holds. The names are the contract's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// 臨時職員・照会のみ.
    Inquiry,
    /// 資格担当.
    Clerk,
    /// 情報システム管理者.
    Auditor,
    /// A downstream system reading the feed.
    FeedConsumer,
    Exporter,
    Admin,
    /// With `inquiry`/`clerk`: reveal one person's My Number and search by it; with
    /// `feed_consumer`: `my_number` in feed records.
    MyNumber,
}

impl Role {
    pub const ALL: [Role; 7] = [
        Role::Inquiry,
        Role::Clerk,
        Role::Auditor,
        Role::FeedConsumer,
        Role::Exporter,
        Role::Admin,
        Role::MyNumber,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Inquiry => "inquiry",
            Role::Clerk => "clerk",
            Role::Auditor => "auditor",
            Role::FeedConsumer => "feed_consumer",
            Role::Exporter => "exporter",
            Role::Admin => "admin",
            Role::MyNumber => "my_number",
        }
    }

    pub fn parse(s: &str) -> Result<Role, AccessError> {
        Role::ALL.into_iter().find(|r| r.as_str() == s).ok_or_else(|| {
            AccessError::Invalid(format!(
                "unknown role {s:?} (roles: {})",
                Role::ALL.map(Role::as_str).join(", ")
            ))
        })
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a route needs. A route lists the permissions it needs; a principal may call it when
/// its roles grant all of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Permission {
    /// Persons, timelines, eligibility, households, cards, search.
    ReadPersons,
    /// Person and household events.
    RecordEvents,
    ReadFeed,
    /// Audit entries and proofs; access records and reports.
    Audit,
    /// Feed files and the audit export.
    Export,
    /// Tokens and the role table.
    Admin,
    /// The My Number, on top of the permission that reaches the person or the feed.
    MyNumber,
}

impl Permission {
    pub const ALL: [Permission; 7] = [
        Permission::ReadPersons,
        Permission::RecordEvents,
        Permission::ReadFeed,
        Permission::Audit,
        Permission::Export,
        Permission::Admin,
        Permission::MyNumber,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Permission::ReadPersons => "read_persons",
            Permission::RecordEvents => "record_events",
            Permission::ReadFeed => "read_feed",
            Permission::Audit => "audit",
            Permission::Export => "export",
            Permission::Admin => "admin",
            Permission::MyNumber => "my_number",
        }
    }

    fn parse(s: &str) -> Result<Permission, AccessError> {
        Permission::ALL.into_iter().find(|p| p.as_str() == s).ok_or_else(|| {
            AccessError::Invalid(format!(
                "unknown permission {s:?} (permissions: {})",
                Permission::ALL.map(Permission::as_str).join(", ")
            ))
        })
    }
}

/// Which permissions each role grants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleTable {
    grants: BTreeMap<Role, BTreeSet<Permission>>,
}

impl Default for RoleTable {
    /// access.md's table.
    fn default() -> Self {
        use Permission::*;
        let grants = [
            (Role::Inquiry, vec![ReadPersons]),
            (Role::Clerk, vec![ReadPersons, RecordEvents]),
            (Role::Auditor, vec![Audit]),
            (Role::FeedConsumer, vec![ReadFeed]),
            (Role::Exporter, vec![Export]),
            (Role::Admin, vec![Admin]),
            (Role::MyNumber, vec![MyNumber]),
        ]
        .into_iter()
        .map(|(r, ps)| (r, ps.into_iter().collect()))
        .collect();
        Self { grants }
    }
}

impl RoleTable {
    /// Reads a table file (TOML: `role = ["permission", …]`); roles it does not name keep
    /// their defaults.
    pub fn load(path: &Path) -> Result<Self, AccessError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| AccessError::Invalid(format!("role table {}: {e}", path.display())))?;
        Self::parse(&text).map_err(|e| AccessError::Invalid(format!("role table {}: {e}", path.display())))
    }

    pub fn parse(text: &str) -> Result<Self, AccessError> {
        let raw: BTreeMap<String, Vec<String>> =
            toml::from_str(text).map_err(|e| AccessError::Invalid(e.message().to_owned()))?;
        let mut table = Self::default();
        for (role, permissions) in raw {
            let role = Role::parse(&role)?;
            let set = permissions
                .iter()
                .map(|p| Permission::parse(p))
                .collect::<Result<BTreeSet<_>, _>>()?;
            // Nobody holds personal-data permissions by being admin (access.md).
            if role == Role::Admin && set.iter().any(|p| *p != Permission::Admin) {
                return Err(AccessError::Invalid(
                    "the admin role may hold only the admin permission".into(),
                ));
            }
            table.grants.insert(role, set);
        }
        Ok(table)
    }

    /// The permissions granted by a set of roles.
    pub fn permissions(&self, roles: &[Role]) -> BTreeSet<Permission> {
        roles
            .iter()
            .filter_map(|r| self.grants.get(r))
            .flatten()
            .copied()
            .collect()
    }

    /// The table as JSON (`{"role": ["permission", …]}`), for `GET /v1/role-table`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::Value::Object(
            self.grants
                .iter()
                .map(|(r, ps)| {
                    (
                        r.as_str().to_owned(),
                        ps.iter().map(|p| serde_json::Value::from(p.as_str())).collect(),
                    )
                })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_access_md() {
        let t = RoleTable::default();
        let p = |r: &[Role]| t.permissions(r);
        assert_eq!(p(&[Role::Inquiry]), [Permission::ReadPersons].into());
        assert_eq!(
            p(&[Role::Clerk]),
            [Permission::ReadPersons, Permission::RecordEvents].into()
        );
        assert_eq!(p(&[Role::Admin]), [Permission::Admin].into());
        assert_eq!(
            p(&[Role::FeedConsumer, Role::MyNumber]),
            [Permission::ReadFeed, Permission::MyNumber].into()
        );
        assert!(p(&[]).is_empty());
    }

    #[test]
    fn a_file_overrides_the_roles_it_names() {
        let t = RoleTable::parse("inquiry = []\nexporter = [\"export\", \"read_feed\"]\n").unwrap();
        assert!(t.permissions(&[Role::Inquiry]).is_empty());
        assert_eq!(
            t.permissions(&[Role::Exporter]),
            [Permission::Export, Permission::ReadFeed].into()
        );
        assert_eq!(
            t.permissions(&[Role::Clerk]),
            RoleTable::default().permissions(&[Role::Clerk])
        );
    }

    #[test]
    fn a_bad_file_is_refused() {
        for bad in [
            "boss = [\"admin\"]",
            "clerk = [\"everything\"]",
            "admin = [\"admin\", \"read_persons\"]",
            "clerk = \"read_persons\"",
            "not toml at all [",
        ] {
            assert!(RoleTable::parse(bad).is_err(), "{bad}");
        }
    }
}
