//! The `cache_epochs` counters, raised by triggers (see the `fleet_scale` migration).

use sea_orm::{ConnectionTrait, DbErr, FromQueryResult, Statement};

#[derive(Debug, FromQueryResult)]
struct Epoch {
    epoch: i64,
}

/// The current `plan` epoch: read it before reading anything a decision depends on.
pub async fn plan_epoch_current(db: &impl ConnectionTrait) -> Result<i64, DbErr> {
    let stmt = Statement::from_string(db.get_database_backend(), "SELECT epoch FROM cache_epochs WHERE name = 'plan'");
    Ok(Epoch::find_by_statement(stmt).one(db).await?.map_or(0, |e| e.epoch))
}
