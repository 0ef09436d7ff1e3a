//! Queries on `release_deltas` and `delta_refusals`, and what the delta job chooses pairs from.

use std::collections::HashSet;

use sea_orm::{ActiveModelTrait, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, Set};

use super::entities::delta_refusal;
use super::entities::release_delta::{self, ActiveModel, Entity, Model};

/// Inserts a delta (committed with the role that lists it).
pub async fn delta_insert(db: &impl ConnectionTrait, new: Model) -> Result<Model, DbErr> {
    ActiveModel {
        product_id: Set(new.product_id),
        from_release_id: Set(new.from_release_id),
        to_release_id: Set(new.to_release_id),
        target_name: Set(new.target_name),
        algorithm: Set(new.algorithm),
        length: Set(new.length),
        sha256: Set(new.sha256),
        sha512: Set(new.sha512),
        custom: Set(new.custom),
        created_by: Set(new.created_by),
        created_at: Set(new.created_at),
        ..Default::default()
    }
    .insert(db)
    .await
}

/// The delta from release `from` to release `to`.
pub async fn delta_find(db: &impl ConnectionTrait, from: i64, to: i64) -> Result<Option<Model>, DbErr> {
    Entity::find()
        .filter(release_delta::Column::FromReleaseId.eq(from))
        .filter(release_delta::Column::ToReleaseId.eq(to))
        .one(db)
        .await
}

/// Every delta of a product, oldest first.
pub async fn delta_list_by_product(db: &impl ConnectionTrait, product_id: i64) -> Result<Vec<Model>, DbErr> {
    Entity::find()
        .filter(release_delta::Column::ProductId.eq(product_id))
        .order_by_asc(release_delta::Column::Id)
        .all(db)
        .await
}

/// The delta whose target is `target_name`.
pub async fn delta_find_by_target(db: &impl ConnectionTrait, target_name: &str) -> Result<Option<Model>, DbErr> {
    Entity::find().filter(release_delta::Column::TargetName.eq(target_name)).one(db).await
}

/// Which of `sha256s` some delta stores its file under.
pub async fn delta_sha256s_in(db: &impl ConnectionTrait, sha256s: Vec<String>) -> Result<HashSet<String>, DbErr> {
    use sea_orm::QuerySelect;
    if sha256s.is_empty() {
        return Ok(HashSet::new());
    }
    let found: Vec<String> = Entity::find()
        .select_only()
        .column(release_delta::Column::Sha256)
        .filter(release_delta::Column::Sha256.is_in(sha256s))
        .into_tuple()
        .all(db)
        .await?;
    Ok(found.into_iter().collect())
}

/// The remembered refusal of the delta from release `from` to release `to`, if it was refused.
pub async fn refusal_find(
    db: &impl ConnectionTrait,
    from: i64,
    to: i64,
) -> Result<Option<delta_refusal::Model>, DbErr> {
    delta_refusal::Entity::find()
        .filter(delta_refusal::Column::FromReleaseId.eq(from))
        .filter(delta_refusal::Column::ToReleaseId.eq(to))
        .one(db)
        .await
}

/// Remembers that the pair's delta was refused (a pair already remembered stays as it was).
pub async fn refusal_insert(db: &impl ConnectionTrait, new: delta_refusal::Model) -> Result<(), DbErr> {
    use sea_orm::sea_query::OnConflict;
    delta_refusal::Entity::insert(delta_refusal::ActiveModel {
        product_id: Set(new.product_id),
        from_release_id: Set(new.from_release_id),
        to_release_id: Set(new.to_release_id),
        reason: Set(new.reason),
        delta_length: Set(new.delta_length),
        full_length: Set(new.full_length),
        refused_at: Set(new.refused_at),
        ..Default::default()
    })
    .on_conflict(
        OnConflict::columns([delta_refusal::Column::FromReleaseId, delta_refusal::Column::ToReleaseId])
            .do_nothing()
            .to_owned(),
    )
    .exec_without_returning(db)
    .await?;
    Ok(())
}

/// Every (from, to) pair of a product that has a delta or a remembered refusal: what the delta
/// job need not compute.
pub async fn delta_pairs_settled(db: &impl ConnectionTrait, product_id: i64) -> Result<HashSet<(i64, i64)>, DbErr> {
    use sea_orm::QuerySelect;
    let made: Vec<(i64, i64)> = Entity::find()
        .select_only()
        .columns([release_delta::Column::FromReleaseId, release_delta::Column::ToReleaseId])
        .filter(release_delta::Column::ProductId.eq(product_id))
        .into_tuple()
        .all(db)
        .await?;
    let refused: Vec<(i64, i64)> = delta_refusal::Entity::find()
        .select_only()
        .columns([delta_refusal::Column::FromReleaseId, delta_refusal::Column::ToReleaseId])
        .filter(delta_refusal::Column::ProductId.eq(product_id))
        .into_tuple()
        .all(db)
        .await?;
    Ok(made.into_iter().chain(refused).collect())
}

/// The releases active devices of a product report running, with how many devices run each,
/// most devices first (ties: the newer release first).
pub async fn releases_running(db: &impl ConnectionTrait, product_id: i64) -> Result<Vec<(i64, i64)>, DbErr> {
    use sea_orm::QuerySelect;
    use sea_orm::sea_query::{Expr, ExprTrait};

    use super::entities::device;
    let count = Expr::col(device::Column::Id).count();
    device::Entity::find()
        .select_only()
        .column(device::Column::InstalledReleaseId)
        .column_as(count.clone(), "devices")
        .filter(device::Column::ProductId.eq(product_id))
        .filter(device::Column::Status.eq("active"))
        .filter(device::Column::InstalledReleaseId.is_not_null())
        .group_by(device::Column::InstalledReleaseId)
        .order_by_desc(count)
        .order_by_desc(device::Column::InstalledReleaseId)
        .into_tuple()
        .all(db)
        .await
}
