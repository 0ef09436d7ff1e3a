//! Queries on `rollouts`, `assignments` and `rollout_traffic`.

use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, DbErr, EntityTrait, ExprTrait, QueryFilter, QueryOrder,
    QuerySelect,
};

use super::entities::assignment;
use super::entities::rollout::{self, ActiveModel, Entity, Model};

/// Assignment states that have not reached an outcome yet.
pub const OPEN_STATES: [&str; 4] = ["assigned", "downloading", "installing", "awaiting_reboot"];

/// Stores a new rollout.
pub async fn rollout_insert(db: &impl ConnectionTrait, row: Model) -> Result<Model, DbErr> {
    let active: ActiveModel = row.into();
    Entity::insert(active).exec_with_returning(db).await
}

/// The rollout `id`.
pub async fn rollout_get(db: &impl ConnectionTrait, id: &str) -> Result<Option<Model>, DbErr> {
    Entity::find_by_id(id.to_owned()).one(db).await
}

/// The rollout `id`, locked until the transaction ends (PostgreSQL `FOR UPDATE`; SQLite's
/// `BEGIN IMMEDIATE` already excludes other writers): an admin action and the gate job never
/// both act on the state they read.
pub async fn rollout_get_for_update(db: &impl ConnectionTrait, id: &str) -> Result<Option<Model>, DbErr> {
    Entity::find_by_id(id.to_owned()).lock_exclusive().one(db).await
}

/// Locks the product row of `product_id` until the transaction ends: starting rollouts of one
/// product one at a time makes the "one running rollout per cohort" check hold.
pub async fn product_lock(db: &impl ConnectionTrait, product_id: i64) -> Result<(), DbErr> {
    super::entities::product::Entity::find_by_id(product_id).lock_exclusive().one(db).await?;
    Ok(())
}

/// Saves a rollout's changed columns.
pub async fn rollout_update(db: &impl ConnectionTrait, active: ActiveModel) -> Result<Model, DbErr> {
    active.update(db).await
}

/// Rollouts, optionally of one product and/or in one state.
fn of_product_in_state(product_id: Option<i64>, state: Option<&str>) -> sea_orm::Select<Entity> {
    let mut query = Entity::find();
    if let Some(p) = product_id {
        query = query.filter(rollout::Column::ProductId.eq(p));
    }
    if let Some(s) = state {
        query = query.filter(rollout::Column::State.eq(s));
    }
    query
}

/// Rollouts, newest first, optionally of one product and/or in one state.
pub async fn rollout_list(
    db: &impl ConnectionTrait,
    product_id: Option<i64>,
    state: Option<&str>,
) -> Result<Vec<Model>, DbErr> {
    of_product_in_state(product_id, state)
        .order_by_desc(rollout::Column::CreatedAt)
        .order_by_desc(rollout::Column::Id)
        .all(db)
        .await
}

/// One page of rollouts, newest first (by creation, then id), optionally of one product and/or
/// in one state, starting after `before` (the previous page's last rollout: keyset paging).
pub async fn rollout_page(
    db: &impl ConnectionTrait,
    product_id: Option<i64>,
    state: Option<&str>,
    before: Option<&Model>,
    limit: u64,
) -> Result<Vec<Model>, DbErr> {
    let mut query = of_product_in_state(product_id, state);
    if let Some(b) = before {
        query = query.filter(
            Condition::any().add(rollout::Column::CreatedAt.lt(b.created_at)).add(
                Condition::all()
                    .add(rollout::Column::CreatedAt.eq(b.created_at))
                    .add(rollout::Column::Id.lt(b.id.as_str())),
            ),
        );
    }
    query.order_by_desc(rollout::Column::CreatedAt).order_by_desc(rollout::Column::Id).limit(limit).all(db).await
}

/// The rollouts of a product that can still assign something (everything but drafts), the
/// most recently started first; capped, since only recent rollouts matter to a device.
pub async fn rollout_list_started(db: &impl ConnectionTrait, product_id: i64, cap: u64) -> Result<Vec<Model>, DbErr> {
    Entity::find()
        .filter(rollout::Column::ProductId.eq(product_id))
        .filter(rollout::Column::State.ne("draft"))
        .order_by_desc(rollout::Column::StartedAt)
        .order_by_desc(rollout::Column::Id)
        .limit(cap)
        .all(db)
        .await
}

/// Every rollout in `running` state (the gate job's work list).
pub async fn rollout_list_running(db: &impl ConnectionTrait) -> Result<Vec<Model>, DbErr> {
    Entity::find().filter(rollout::Column::State.eq("running")).all(db).await
}

/// Whether some device came from release `release_id` in one of `rollout_ids`.
pub async fn assignment_came_from(
    db: &impl ConnectionTrait,
    release_id: i64,
    rollout_ids: &[String],
) -> Result<bool, DbErr> {
    if rollout_ids.is_empty() {
        return Ok(false);
    }
    let found: Option<i64> = assignment::Entity::find()
        .select_only()
        .column(assignment::Column::Id)
        .filter(assignment::Column::FromReleaseId.eq(release_id))
        .filter(assignment::Column::RolloutId.is_in(rollout_ids.iter().cloned()))
        .limit(1)
        .into_tuple()
        .one(db)
        .await?;
    Ok(found.is_some())
}

/// The device's assignment in a rollout.
pub async fn assignment_find(
    db: &impl ConnectionTrait,
    rollout_id: &str,
    device_row_id: i64,
) -> Result<Option<assignment::Model>, DbErr> {
    assignment::Entity::find()
        .filter(assignment::Column::RolloutId.eq(rollout_id))
        .filter(assignment::Column::DeviceRowId.eq(device_row_id))
        .one(db)
        .await
}

/// The device's assignments in the given rollouts.
pub async fn assignment_list_for_device(
    db: &impl ConnectionTrait,
    device_row_id: i64,
    rollout_ids: Vec<String>,
) -> Result<Vec<assignment::Model>, DbErr> {
    assignment_list_for_devices(db, vec![device_row_id], rollout_ids).await
}

/// The assignments of any of `device_rows` to any of `rollout_ids`, in one query.
pub async fn assignment_list_for_devices(
    db: &impl ConnectionTrait,
    device_rows: Vec<i64>,
    rollout_ids: Vec<String>,
) -> Result<Vec<assignment::Model>, DbErr> {
    if device_rows.is_empty() || rollout_ids.is_empty() {
        return Ok(Vec::new());
    }
    assignment::Entity::find()
        .filter(assignment::Column::RolloutId.is_in(rollout_ids))
        .filter(assignment::Column::DeviceRowId.is_in(device_rows))
        .all(db)
        .await
}

/// Stores new assignments in one statement.
pub async fn assignment_insert_many(
    db: &impl ConnectionTrait,
    rows: Vec<assignment::ActiveModel>,
) -> Result<(), DbErr> {
    if rows.is_empty() {
        return Ok(());
    }
    assignment::Entity::insert_many(rows).exec_without_returning(db).await?;
    Ok(())
}

/// Saves an assignment's changed columns.
pub async fn assignment_update(
    db: &impl ConnectionTrait,
    row: assignment::ActiveModel,
) -> Result<assignment::Model, DbErr> {
    row.update(db).await
}

/// Counts of a rollout's assignments by stage and state, withdrawn excluded. With `final_since`,
/// outcomes (installed, failed, rejected) count only if they arrived at or after it.
pub async fn assignment_counts(
    db: &impl ConnectionTrait,
    rollout_id: &str,
    final_since: Option<i64>,
) -> Result<Vec<(i32, String, i64)>, DbErr> {
    let mut query = assignment::Entity::find()
        .select_only()
        .column(assignment::Column::Stage)
        .column(assignment::Column::State)
        .column_as(Expr::col(assignment::Column::Id).count(), "n")
        .filter(assignment::Column::RolloutId.eq(rollout_id))
        .filter(assignment::Column::State.ne("withdrawn"));
    if let Some(since) = final_since {
        query = query.filter(assignment::Column::FinalAt.gte(since));
    }
    query.group_by(assignment::Column::Stage).group_by(assignment::Column::State).into_tuple().all(db).await
}

/// The states of an assignment whose device has started installing: what a rollback sends back.
pub const STARTED_STATES: [&str; 3] = ["installing", "awaiting_reboot", "installed"];

/// Per release its device ran when assigned (`None`: none on record), how many of a rollout's
/// assignments have started installing: the devices a rollback would send back, and where to.
pub async fn assignment_started_by_origin(
    db: &impl ConnectionTrait,
    rollout_id: &str,
) -> Result<Vec<(Option<i64>, i64)>, DbErr> {
    assignment::Entity::find()
        .select_only()
        .column(assignment::Column::FromReleaseId)
        .column_as(Expr::col(assignment::Column::Id).count(), "n")
        .filter(assignment::Column::RolloutId.eq(rollout_id))
        .filter(assignment::Column::State.is_in(STARTED_STATES))
        .group_by(assignment::Column::FromReleaseId)
        .into_tuple()
        .all(db)
        .await
}

/// Per stage, how many of a rollout's open assignments have been silent since before `before`.
pub async fn assignment_stalled_counts(
    db: &impl ConnectionTrait,
    rollout_id: &str,
    before: i64,
) -> Result<Vec<(i32, i64)>, DbErr> {
    assignment::Entity::find()
        .select_only()
        .column(assignment::Column::Stage)
        .column_as(Expr::col(assignment::Column::Id).count(), "n")
        .filter(assignment::Column::RolloutId.eq(rollout_id))
        .filter(assignment::Column::State.is_in(OPEN_STATES))
        .filter(assignment::Column::UpdatedAt.lt(before))
        // Unchanged polls touch only the device row (group commit), not the assignment: the
        // device is silent when neither moved since `before`.
        .filter(
            assignment::Column::DeviceRowId.in_subquery(
                sea_orm::sea_query::Query::select()
                    .column(super::entities::device::Column::Id)
                    .from(super::entities::device::Entity)
                    .cond_where(
                        Condition::any()
                            .add(super::entities::device::Column::LastSeenAt.is_null())
                            .add(super::entities::device::Column::LastSeenAt.lt(before)),
                    )
                    .to_owned(),
            ),
        )
        .group_by(assignment::Column::Stage)
        .into_tuple()
        .all(db)
        .await
}

/// Marks the device's open assignments in a rollout as heard from at `now` (stall detection).
pub async fn assignment_touch(db: &impl ConnectionTrait, id: i64, now: i64) -> Result<(), DbErr> {
    assignment::Entity::update_many()
        .col_expr(assignment::Column::UpdatedAt, Expr::value(now))
        .filter(assignment::Column::Id.eq(id))
        .exec(db)
        .await?;
    Ok(())
}

/// Every assignment of device row `device_row_id`, newest first.
pub async fn assignment_list_by_device(
    db: &impl ConnectionTrait,
    device_row_id: i64,
) -> Result<Vec<assignment::Model>, DbErr> {
    assignment::Entity::find()
        .filter(assignment::Column::DeviceRowId.eq(device_row_id))
        .order_by_desc(assignment::Column::AssignedAt)
        .order_by_desc(assignment::Column::Id)
        .all(db)
        .await
}

/// Withdraws the device's assignments that have no outcome yet; returns how many.
pub async fn assignment_withdraw_open(db: &impl ConnectionTrait, device_row_id: i64, now: i64) -> Result<u64, DbErr> {
    let result = assignment::Entity::update_many()
        .col_expr(assignment::Column::State, Expr::value("withdrawn"))
        .col_expr(assignment::Column::UpdatedAt, Expr::value(now))
        .filter(assignment::Column::DeviceRowId.eq(device_row_id))
        .filter(assignment::Column::State.is_in(OPEN_STATES))
        .exec(db)
        .await?;
    Ok(result.rows_affected)
}

/// Adds one download of `bytes` bytes of `kind` (`image` or `delta`) to rollout `rollout_id`'s
/// traffic: one statement, summed in the database, so instances never overwrite each other.
pub async fn traffic_add(db: &impl ConnectionTrait, rollout_id: &str, kind: &str, bytes: i64) -> Result<(), DbErr> {
    use sea_orm::Set;
    use sea_orm::sea_query::{Alias, OnConflict};

    use super::entities::rollout_traffic::{ActiveModel as Traffic, Column, Entity as TrafficEntity};
    let summed = |c: Column| Expr::col((TrafficEntity, c)).add(Expr::col((Alias::new("excluded"), c)));
    TrafficEntity::insert(Traffic {
        rollout_id: Set(rollout_id.to_owned()),
        kind: Set(kind.to_owned()),
        bytes: Set(bytes),
        requests: Set(1),
    })
    .on_conflict(
        OnConflict::columns([Column::RolloutId, Column::Kind])
            .value(Column::Bytes, summed(Column::Bytes))
            .value(Column::Requests, summed(Column::Requests))
            .to_owned(),
    )
    .exec_without_returning(db)
    .await?;
    Ok(())
}

/// Rollout `rollout_id`'s traffic, one row per kind of target served.
pub async fn traffic_of(
    db: &impl ConnectionTrait,
    rollout_id: &str,
) -> Result<Vec<super::entities::rollout_traffic::Model>, DbErr> {
    use super::entities::rollout_traffic::{Column, Entity as TrafficEntity};
    TrafficEntity::find().filter(Column::RolloutId.eq(rollout_id)).order_by_asc(Column::Kind).all(db).await
}

/// The releases a product's rollouts in `running`, `paused` or `halted` state install: where
/// its devices are headed.
pub async fn rollout_release_ids_underway(db: &impl ConnectionTrait, product_id: i64) -> Result<Vec<i64>, DbErr> {
    Entity::find()
        .select_only()
        .column(rollout::Column::ReleaseId)
        .distinct()
        .filter(rollout::Column::ProductId.eq(product_id))
        .filter(rollout::Column::State.is_in(["running", "paused", "halted"]))
        .into_tuple()
        .all(db)
        .await
}
