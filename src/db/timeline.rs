//! Queries for a rollout's history: when its assignments reached their outcome.
//!
//! Read-only, SQL only; the bucketing into a timeline is the service's (`rollout_timeline`).

use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, ConnectionTrait, DbErr, EntityTrait, ExprTrait, QueryFilter, QueryOrder, QuerySelect};

use super::entities::assignment;

/// The outcomes an assignment can end in (`final_at` is set exactly for these).
pub const OUTCOME_STATES: [&str; 3] = ["installed", "failed", "rejected"];

/// A rollout's assignments that reached an outcome, counted per `(final_at, state)`, oldest
/// first. Each assignment counts once, with its current outcome (a device that failed and then
/// installed counts as installed, at the time it reported so).
pub async fn assignment_outcome_counts(
    db: &impl ConnectionTrait,
    rollout_id: &str,
) -> Result<Vec<(i64, String, i64)>, DbErr> {
    assignment::Entity::find()
        .select_only()
        .column(assignment::Column::FinalAt)
        .column(assignment::Column::State)
        .column_as(Expr::col(assignment::Column::Id).count(), "n")
        .filter(assignment::Column::RolloutId.eq(rollout_id))
        .filter(assignment::Column::State.is_in(OUTCOME_STATES))
        .filter(assignment::Column::FinalAt.is_not_null())
        .group_by(assignment::Column::FinalAt)
        .group_by(assignment::Column::State)
        .order_by_asc(assignment::Column::FinalAt)
        .into_tuple()
        .all(db)
        .await
}
