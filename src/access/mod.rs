//! Identity, roles and access records (access.md): who is asking (a named token or a staff
//! member signed in through OpenID Connect), what their roles let them do, and the access log
//! (アクセス記録) that keeps one hash-chained record of every request.
//!
//! Nothing here knows HTTP: the HTTP layer (`http::guard`) and the command line use these
//! parts the same way.

pub mod command_line;
pub mod log;
pub mod oidc;
pub mod record;
pub mod recorder;
pub mod ride;
pub mod roles;
pub mod sessions;
pub mod terminal;
pub mod tokens;
pub mod unusual;

use std::collections::BTreeSet;
use std::sync::Arc;

pub use record::{AccessKind, AccessRecord};
pub use recorder::Recorder;
pub use roles::{Permission, Role, RoleTable};

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// A credential that does not authenticate (the reason is for the server log and the
    /// message; never the token itself).
    #[error("{0}")]
    Unauthenticated(String),
    /// Bad configuration or arguments (role names, token names, dates).
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// The identity provider cannot be reached to check a credential.
    #[error("{0}")]
    Unavailable(String),
    /// The access log's writer is gone or its storage failed: nothing may be answered.
    #[error("the access log cannot be written: {0}")]
    Unrecorded(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How a principal proved who it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// A local bearer token (its name is the principal).
    Token,
    /// A JWT from the identity provider (the staff id is a claim).
    Oidc,
    /// A command run on the server's host (`os:<user>@<host>`).
    Os,
}

/// An authenticated principal: one named person or system (共用IDの発行は禁止).
#[derive(Clone, Debug)]
pub struct Principal {
    pub id: String,
    pub roles: Vec<Role>,
    pub permissions: BTreeSet<Permission>,
    pub source: Source,
}

impl Principal {
    pub fn new(id: String, mut roles: Vec<Role>, table: &RoleTable, source: Source) -> Self {
        roles.sort();
        roles.dedup();
        let permissions = table.permissions(&roles);
        Self {
            id,
            roles,
            permissions,
            source,
        }
    }

    pub fn may(&self, p: Permission) -> bool {
        self.permissions.contains(&p)
    }

    pub fn may_all(&self, ps: &[Permission]) -> bool {
        ps.iter().all(|p| self.may(*p))
    }

    pub fn role_names(&self) -> Vec<String> {
        self.roles.iter().map(|r| r.as_str().to_owned()).collect()
    }
}

/// The identity and access-recording parts a server or command needs, built once.
pub struct Access {
    pub roles: RoleTable,
    pub tokens: tokens::TokenStore,
    pub oidc: Option<oidc::OidcVerifier>,
    pub recorder: Recorder,
    pub proxies: terminal::TrustedProxies,
    pub unusual: unusual::UnusualRules,
    /// Staff console sessions.
    pub sessions: sessions::SessionStore,
}

impl Access {
    /// Authenticates a bearer credential: a JWT (three dot-separated parts) goes to the
    /// identity provider's keys, anything else is a local token.
    pub async fn authenticate(
        &self,
        bearer: &str,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Principal, AccessError> {
        if bearer.split('.').count() == 3 {
            let Some(oidc) = &self.oidc else {
                return Err(AccessError::Unauthenticated(
                    "a JWT was presented but no identity provider is configured".into(),
                ));
            };
            let staff = oidc.verify(bearer).await?;
            return Ok(Principal::new(staff.id, staff.roles, &self.roles, Source::Oidc));
        }
        let (name, roles) = self.tokens.authenticate(bearer, now).await?;
        Ok(Principal::new(name, roles, &self.roles, Source::Token))
    }
}

/// Shared handle.
pub type SharedAccess = Arc<Access>;
