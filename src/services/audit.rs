//! Reading the audit log (entries are written by each use case inside its own transaction).

use sea_orm::ConnectionTrait;

use super::auth::Caller;
use super::{ServiceError, Services};
use crate::db::audit::{NewAudit, audit_insert, audit_list_recent};
use crate::db::entities::audit;

/// The newest `limit` entries.
pub async fn recent(svc: &Services, limit: u64) -> Result<Vec<audit::Model>, ServiceError> {
    Ok(audit_list_recent(&svc.db, limit).await?)
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
