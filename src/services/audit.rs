//! Reading the audit log (entries are written by each use case inside its own transaction).

use super::{ServiceError, Services};
use crate::db::audit::audit_list_recent;
use crate::db::entities::audit;

/// The newest `limit` entries.
pub async fn recent(svc: &Services, limit: u64) -> Result<Vec<audit::Model>, ServiceError> {
    Ok(audit_list_recent(&svc.db, limit).await?)
}
