//! Job leases: a background job runs on one instance of the fleet at a time.

use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{ColumnTrait, ConnectionTrait, DbErr, EntityTrait, ExprTrait, QueryFilter, Set};

use super::entities::job_lease::{self, ActiveModel, Entity};

/// Takes or renews the lease `name` for `holder` until `until` if it is free, expired or
/// already `holder`'s. Returns whether `holder` holds it now.
pub async fn lease_try_acquire(
    db: &impl ConnectionTrait,
    name: &str,
    holder: &str,
    now: i64,
    until: i64,
) -> Result<bool, DbErr> {
    let insert = Entity::insert(ActiveModel {
        name: Set(name.to_owned()),
        holder: Set(holder.to_owned()),
        expires_at: Set(until),
    })
    .on_conflict(OnConflict::column(job_lease::Column::Name).do_nothing().to_owned())
    .exec_without_returning(db)
    .await?;
    if insert == 1 {
        return Ok(true);
    }
    let updated = Entity::update_many()
        .col_expr(job_lease::Column::Holder, Expr::value(holder))
        .col_expr(job_lease::Column::ExpiresAt, Expr::value(until))
        .filter(job_lease::Column::Name.eq(name))
        .filter(job_lease::Column::Holder.eq(holder).or(job_lease::Column::ExpiresAt.lt(now)))
        .exec(db)
        .await?;
    Ok(updated.rows_affected == 1)
}

/// Gives up `holder`'s lease `name` at once, so another instance takes the job over.
pub async fn lease_release(db: &impl ConnectionTrait, name: &str, holder: &str) -> Result<(), DbErr> {
    Entity::update_many()
        .col_expr(job_lease::Column::ExpiresAt, Expr::value(0))
        .filter(job_lease::Column::Name.eq(name))
        .filter(job_lease::Column::Holder.eq(holder))
        .exec(db)
        .await?;
    Ok(())
}
