//! API tokens and roles: who the caller is and what they may do.
//!
//! Tokens are 256 random bits with a `pgt_` prefix, stored only as SHA-256 and compared in
//! constant time, so a database leak does not leak usable tokens.

use std::fmt;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{ServiceError, Services};
use crate::db::audit::{NewAudit, audit_insert};
use crate::db::tokens::{NewToken, token_find_by_hash, token_insert, token_revoke};
use crate::domain::names::ProductName;

/// The prefix every API token starts with, so leaked tokens are recognisable by scanners.
pub const TOKEN_PREFIX: &str = "pgt_";

/// A caller's role (docs/design.md §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Read everything.
    Viewer,
    /// Read, and publish to its products.
    Publisher,
    /// Read, and steer rollouts, cohorts and enrollment tokens.
    ReleaseManager,
    /// Everything.
    Admin,
}

/// Something a role may be allowed to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// Read any resource.
    Read,
    /// Publish releases.
    Publish,
    /// Rollouts, cohorts, enrollment tokens.
    ManageRollouts,
    /// Withdraw (yank) a release: publishers, who put it there, and release managers, who
    /// decide what the fleet runs. A yank only ever takes away, like aborting a rollout.
    Withdraw,
    /// Products, tokens, users, key ceremonies.
    Admin,
}

impl Role {
    /// Parses `viewer|publisher|release-manager|admin`.
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "viewer" => Some(Self::Viewer),
            "publisher" => Some(Self::Publisher),
            "release-manager" => Some(Self::ReleaseManager),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Publisher => "publisher",
            Self::ReleaseManager => "release-manager",
            Self::Admin => "admin",
        }
    }

    /// Whether this role grants `permission`.
    pub fn allows(self, permission: Permission) -> bool {
        matches!(
            (self, permission),
            (Self::Admin, _)
                | (_, Permission::Read)
                | (Self::Publisher, Permission::Publish)
                | (Self::ReleaseManager, Permission::ManageRollouts)
                | (Self::Publisher | Self::ReleaseManager, Permission::Withdraw)
        )
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Token (or, for the CLI, operator) name, as written in the audit log.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// The only product it may act on, if restricted.
    pub product: Option<String>,
}

impl Caller {
    /// The local operator running a CLI command on the server's own state.
    pub fn operator() -> Self {
        let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
        Self { name: format!("cli:{user}"), role: Role::Admin, product: None }
    }

    /// The server itself (start-up initialisation, jobs).
    pub fn system() -> Self {
        Self { name: "system".into(), role: Role::Admin, product: None }
    }

    /// Refuses unless the caller may act on `product`.
    pub fn require_product(&self, product: &str) -> Result<(), ServiceError> {
        match &self.product {
            Some(only) if only != product => Err(ServiceError::Forbidden {
                message: format!("this token may act only on product {only}, not {product}"),
            }),
            _ => Ok(()),
        }
    }
}

/// SHA-256 of a bearer secret, hex: what is stored instead of the secret.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A new bearer secret `{prefix}{64 hex}`: (secret, its first 12 characters for listings, hash).
pub fn new_secret(prefix: &str) -> (String, String, String) {
    let secret = format!("{prefix}{}", crate::storage::random_hex(32));
    let shown = secret.chars().take(12).collect();
    let hash = token_hash(&secret);
    (secret, shown, hash)
}

/// Creates a token; returns the secret, shown once.
pub async fn create_token(
    svc: &Services,
    actor: &Caller,
    name: &str,
    role: Role,
    product: Option<&ProductName>,
) -> Result<String, ServiceError> {
    if name.trim().is_empty() || name.len() > 128 {
        return Err(ServiceError::invalid("invalid_token_name", "a token name must be 1 to 128 characters"));
    }
    if let Some(product) = product {
        // Only publishing is scoped by product; a scoped admin would be a false sense of safety.
        if role != Role::Publisher {
            return Err(ServiceError::invalid(
                "invalid_token_scope",
                format!("--product restricts publisher tokens only, not {role}"),
            ));
        }
        if crate::db::products::product_get_by_name(&svc.db, product.as_str()).await?.is_none() {
            return Err(ServiceError::not_found("unknown_product", format!("product {product} does not exist")));
        }
    }
    let secret = format!("{TOKEN_PREFIX}{}", crate::storage::random_hex(32));
    let now = svc.now_secs();
    token_insert(
        &svc.db,
        NewToken {
            name,
            role: role.as_str(),
            product: product.map(ProductName::as_str),
            token_prefix: secret.chars().take(12).collect(),
            token_hash: token_hash(&secret),
            created_at: now,
        },
    )
    .await?;
    audit_insert(
        &svc.db,
        NewAudit {
            at: now,
            actor: &actor.name,
            action: "token.create",
            object: &format!("token:{name}"),
            before: None,
            after: Some(
                serde_json::json!({"role": role.as_str(), "product": product.map(ProductName::as_str)}).to_string(),
            ),
        },
    )
    .await?;
    Ok(secret)
}

/// Revokes tokens by name or prefix; returns how many.
pub async fn revoke_token(svc: &Services, actor: &Caller, name: &str) -> Result<u64, ServiceError> {
    let now = svc.now_secs();
    let count = token_revoke(&svc.db, name, now).await?;
    if count == 0 {
        return Err(ServiceError::not_found("unknown_token", format!("no active token is named {name:?}")));
    }
    audit_insert(
        &svc.db,
        NewAudit {
            at: now,
            actor: &actor.name,
            action: "token.revoke",
            object: &format!("token:{name}"),
            before: None,
            after: None,
        },
    )
    .await?;
    Ok(count)
}

/// The caller a bearer token belongs to, if it is valid and not revoked.
pub async fn authenticate_token(svc: &Services, token: &str) -> Result<Caller, ServiceError> {
    let unauthenticated = || ServiceError::Unauthenticated { message: "the API token is invalid or revoked".into() };
    if !token.starts_with(TOKEN_PREFIX) {
        return Err(unauthenticated());
    }
    let hash = token_hash(token);
    let row = token_find_by_hash(&svc.db, &hash).await?.ok_or_else(unauthenticated)?;
    // The lookup is by hash already; compare again in constant time as defence in depth.
    let same: bool = row.token_hash.as_bytes().ct_eq(hash.as_bytes()).into();
    if !same || row.revoked_at.is_some() {
        return Err(unauthenticated());
    }
    let role = Role::parse(&row.role)
        .ok_or_else(|| ServiceError::Internal(anyhow::anyhow!("stored token role {:?}", row.role)))?;
    Ok(Caller { name: format!("token:{}", row.name), role, product: row.product })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_permissions() {
        use Permission::*;
        let table = [
            (Role::Viewer, [true, false, false, false, false]),
            (Role::Publisher, [true, true, false, true, false]),
            (Role::ReleaseManager, [true, false, true, true, false]),
            (Role::Admin, [true, true, true, true, true]),
        ];
        for (role, want) in table {
            let got = [Read, Publish, ManageRollouts, Withdraw, Admin].map(|p| role.allows(p));
            assert_eq!(got, want, "{role}");
        }
    }

    #[test]
    fn roles_round_trip() {
        for r in [Role::Viewer, Role::Publisher, Role::ReleaseManager, Role::Admin] {
            assert_eq!(Role::parse(r.as_str()), Some(r));
        }
        assert_eq!(Role::parse("root"), None);
    }
}
