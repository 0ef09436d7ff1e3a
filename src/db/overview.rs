//! Read-only queries for the admin dashboard: device counts grouped by product, status and
//! version, the newest failed or rejected reports, and the rollouts that are under way.
//!
//! Owns SQL only; what the figures mean is decided in `services::overview`.

use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, ConnectionTrait, DbErr, EntityTrait, ExprTrait, QueryFilter, QueryOrder, QuerySelect};

use super::entities::{device, device_report, rollout};

/// `(product id, status, devices)` for every product and status that has devices.
pub async fn device_count_by_product_status(db: &impl ConnectionTrait) -> Result<Vec<(i64, String, i64)>, DbErr> {
    device::Entity::find()
        .select_only()
        .column(device::Column::ProductId)
        .column(device::Column::Status)
        .column_as(Expr::col(device::Column::Id).count(), "n")
        .group_by(device::Column::ProductId)
        .group_by(device::Column::Status)
        .into_tuple()
        .all(db)
        .await
}

/// `(product id, installed version, devices)` over active devices; `None`: never reported one.
pub async fn device_count_by_product_version(
    db: &impl ConnectionTrait,
) -> Result<Vec<(i64, Option<String>, i64)>, DbErr> {
    device::Entity::find()
        .select_only()
        .column(device::Column::ProductId)
        .column(device::Column::InstalledVersion)
        .column_as(Expr::col(device::Column::Id).count(), "n")
        .filter(device::Column::Status.eq("active"))
        .group_by(device::Column::ProductId)
        .group_by(device::Column::InstalledVersion)
        .into_tuple()
        .all(db)
        .await
}

/// The newest `limit` reports whose attempt is `failed` or `rejected`, newest first.
///
/// Read backwards along the primary key, which stops after `limit` matches; there is no
/// index on the attempt state, so a history with few failures is read further.
pub async fn device_report_list_problems(
    db: &impl ConnectionTrait,
    limit: u64,
) -> Result<Vec<device_report::Model>, DbErr> {
    device_report::Entity::find()
        .filter(device_report::Column::AttemptState.is_in(["failed", "rejected"]))
        .order_by_desc(device_report::Column::Id)
        .limit(limit)
        .all(db)
        .await
}

/// Whether any report received at or after `since` (Unix seconds) rejected an update.
pub async fn device_report_rejected_since(db: &impl ConnectionTrait, since: i64) -> Result<bool, DbErr> {
    let found: Option<i64> = device_report::Entity::find()
        .select_only()
        .column(device_report::Column::Id)
        .filter(device_report::Column::AttemptState.eq("rejected"))
        .filter(device_report::Column::ReceivedAt.gte(since))
        .order_by_desc(device_report::Column::Id)
        .limit(1)
        .into_tuple()
        .one(db)
        .await?;
    Ok(found.is_some())
}

/// `(row id, device id)` of the given device rows.
pub async fn device_list_ids_by_rows(db: &impl ConnectionTrait, rows: Vec<i64>) -> Result<Vec<(i64, String)>, DbErr> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    device::Entity::find()
        .select_only()
        .column(device::Column::Id)
        .column(device::Column::DeviceId)
        .filter(device::Column::Id.is_in(rows))
        .into_tuple()
        .all(db)
        .await
}

/// Rollouts in any of `states`, the most recently started first.
pub async fn rollout_list_in_states(db: &impl ConnectionTrait, states: &[&str]) -> Result<Vec<rollout::Model>, DbErr> {
    rollout::Entity::find()
        .filter(rollout::Column::State.is_in(states.iter().copied()))
        .order_by_desc(rollout::Column::StartedAt)
        .order_by_desc(rollout::Column::Id)
        .all(db)
        .await
}
