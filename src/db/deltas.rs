//! Queries on `release_deltas`.

use std::collections::HashSet;

use sea_orm::{ActiveModelTrait, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, Set};

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
