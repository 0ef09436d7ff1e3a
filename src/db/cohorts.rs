//! Queries on `cohorts` and `cohort_members`.

use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set,
};

use super::entities::cohort::{self, ActiveModel, Entity, Model};
use super::entities::cohort_member;

/// Stores a new cohort.
pub async fn cohort_insert(
    db: &impl ConnectionTrait,
    product_id: i64,
    name: &str,
    selector_tags: Option<String>,
    now: i64,
) -> Result<Model, DbErr> {
    ActiveModel {
        product_id: Set(product_id),
        name: Set(name.to_owned()),
        selector_tags: Set(selector_tags),
        created_at: Set(now),
        updated_at: Set(now),
        ..Default::default()
    }
    .insert(db)
    .await
}

/// Replaces a cohort's selector.
pub async fn cohort_set_selector(
    db: &impl ConnectionTrait,
    row: Model,
    selector_tags: Option<String>,
    now: i64,
) -> Result<Model, DbErr> {
    let mut active: ActiveModel = row.into();
    active.selector_tags = Set(selector_tags);
    active.updated_at = Set(now);
    active.update(db).await
}

/// Replaces a cohort's explicit members.
pub async fn cohort_set_members(db: &impl ConnectionTrait, cohort_id: i64, device_ids: &[String]) -> Result<(), DbErr> {
    cohort_member::Entity::delete_many().filter(cohort_member::Column::CohortId.eq(cohort_id)).exec(db).await?;
    // Chunks keep each statement well under SQLite's bound-parameter limit.
    for chunk in device_ids.chunks(500) {
        let rows =
            chunk.iter().map(|d| cohort_member::ActiveModel { cohort_id: Set(cohort_id), device_id: Set(d.clone()) });
        cohort_member::Entity::insert_many(rows).exec(db).await?;
    }
    Ok(())
}

/// The explicit members of a cohort.
pub async fn cohort_members(db: &impl ConnectionTrait, cohort_id: i64) -> Result<Vec<String>, DbErr> {
    cohort_member::Entity::find()
        .select_only()
        .column(cohort_member::Column::DeviceId)
        .filter(cohort_member::Column::CohortId.eq(cohort_id))
        .order_by_asc(cohort_member::Column::DeviceId)
        .into_tuple()
        .all(db)
        .await
}

/// The ids of the cohorts that list `device_id` explicitly.
pub async fn cohort_ids_listing(db: &impl ConnectionTrait, device_id: &str) -> Result<Vec<i64>, DbErr> {
    cohort_member::Entity::find()
        .select_only()
        .column(cohort_member::Column::CohortId)
        .filter(cohort_member::Column::DeviceId.eq(device_id))
        .into_tuple()
        .all(db)
        .await
}

/// The cohorts of a product (all products if `None`), by name.
pub async fn cohort_list(db: &impl ConnectionTrait, product_id: Option<i64>) -> Result<Vec<Model>, DbErr> {
    let mut query = Entity::find();
    if let Some(p) = product_id {
        query = query.filter(cohort::Column::ProductId.eq(p));
    }
    query.order_by_asc(cohort::Column::ProductId).order_by_asc(cohort::Column::Name).all(db).await
}

/// The cohort `name` of a product.
pub async fn cohort_find(db: &impl ConnectionTrait, product_id: i64, name: &str) -> Result<Option<Model>, DbErr> {
    Entity::find().filter(cohort::Column::ProductId.eq(product_id)).filter(cohort::Column::Name.eq(name)).one(db).await
}
