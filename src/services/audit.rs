//! Reading the audit log (entries are written by each use case inside its own transaction).

use sea_orm::ConnectionTrait;

use super::auth::Caller;
use super::{ServiceError, Services};
use crate::db::audit::{AuditFilter, NewAudit, audit_insert, audit_list};
use crate::db::entities::audit;

/// Entries per page unless the caller asks otherwise.
pub const DEFAULT_PAGE: u64 = 100;
/// The most entries one page holds: enough for a screen or an export step, small enough that
/// one request cannot make the server read the whole log.
pub const MAX_PAGE: u64 = 1_000;

/// Which audit entries to read.
#[derive(Debug, Default, Clone)]
pub struct AuditQuery {
    /// Page size (1 to [`MAX_PAGE`], default [`DEFAULT_PAGE`]).
    pub limit: Option<u64>,
    /// Only entries with an id below this one (the last id of the previous page).
    pub before: Option<i64>,
    /// Actor equals, e.g. `token:ci`.
    pub actor: Option<String>,
    /// Action starts with, e.g. `rollout.` or `device.decommission`.
    pub action: Option<String>,
    /// Object equals, e.g. `device:pump-0001`.
    pub object: Option<String>,
}

/// A time range of audit entries; either end optional.
#[derive(Debug, Default, Clone, Copy)]
pub struct AuditPeriod {
    /// Entries at or after this (Unix seconds).
    pub from: Option<i64>,
    /// Entries before this (Unix seconds).
    pub until: Option<i64>,
}

/// A page of audit entries, newest first. The next page is the one `before` the last id.
pub async fn list_audit(svc: &Services, q: AuditQuery) -> Result<Vec<audit::Model>, ServiceError> {
    list_audit_in(svc, q, AuditPeriod::default()).await
}

/// Like [`list_audit`], only entries within `period`.
pub async fn list_audit_in(
    svc: &Services,
    q: AuditQuery,
    period: AuditPeriod,
) -> Result<Vec<audit::Model>, ServiceError> {
    let limit = q.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ServiceError::invalid("invalid_limit", format!("limit must be between 1 and {MAX_PAGE}")));
    }
    // Actions are lowercase (`rollout.pause`); lowercasing the prefix makes it match the same
    // way on SQLite (case-blind LIKE) and PostgreSQL.
    let action_prefix = q.action.map(|a| a.to_lowercase());
    let filter = AuditFilter {
        before: q.before,
        actor: q.actor,
        action_prefix,
        object: q.object,
        at_from: period.from,
        at_until: period.until,
    };
    Ok(audit_list(&svc.db, &filter, limit).await?)
}

/// Appends an audit entry inside the caller's transaction: who (`actor`), what (`action`, e.g.
/// `rollout.pause`), to which object (`rollout:r-1`), and the state before and after.
pub async fn record(
    db: &impl ConnectionTrait,
    at: i64,
    actor: &Caller,
    action: &str,
    object: &str,
    before: Option<serde_json::Value>,
    after: Option<serde_json::Value>,
) -> Result<(), ServiceError> {
    audit_insert(
        db,
        NewAudit {
            at,
            actor: &actor.name,
            action,
            object,
            before: before.map(|v| v.to_string()),
            after: after.map(|v| v.to_string()),
        },
    )
    .await?;
    Ok(())
}
