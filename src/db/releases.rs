//! Queries on `releases`.

use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set,
};

use super::entities::release::{self, ActiveModel, Entity, Model};

/// Inserts a release (the row is committed with the metadata that lists it).
pub async fn release_insert(db: &impl ConnectionTrait, new: Model) -> Result<Model, DbErr> {
    ActiveModel {
        product_id: Set(new.product_id),
        version: Set(new.version),
        target_name: Set(new.target_name),
        filename: Set(new.filename),
        length: Set(new.length),
        sha256: Set(new.sha256),
        sha512: Set(new.sha512),
        notes: Set(new.notes),
        custom: Set(new.custom),
        published_by: Set(new.published_by),
        created_at: Set(new.created_at),
        listed_in_role: Set(new.listed_in_role),
        ..Default::default()
    }
    .insert(db)
    .await
}

/// Saves changed columns of a release.
pub async fn release_update(db: &impl ConnectionTrait, active: ActiveModel) -> Result<Model, DbErr> {
    active.update(db).await
}

/// The release of `product_id` at `version`.
pub async fn release_find(db: &impl ConnectionTrait, product_id: i64, version: &str) -> Result<Option<Model>, DbErr> {
    Entity::find()
        .filter(release::Column::ProductId.eq(product_id))
        .filter(release::Column::Version.eq(version))
        .one(db)
        .await
}

/// Up to `limit` releases of a product, newest first, those before id `before` if given.
pub async fn release_page(
    db: &impl ConnectionTrait,
    product_id: i64,
    before: Option<i64>,
    limit: u64,
) -> Result<Vec<Model>, DbErr> {
    let mut query = Entity::find().filter(release::Column::ProductId.eq(product_id));
    if let Some(before) = before {
        query = query.filter(release::Column::Id.lt(before));
    }
    query.order_by_desc(release::Column::Id).limit(limit).all(db).await
}

/// Every release of a product, oldest first.
pub async fn release_list_by_product(db: &impl ConnectionTrait, product_id: i64) -> Result<Vec<Model>, DbErr> {
    Entity::find().filter(release::Column::ProductId.eq(product_id)).order_by_asc(release::Column::Id).all(db).await
}

/// The releases a product's role lists now (neither yanked nor delisted), least recently listed
/// first.
pub async fn release_list_listed(db: &impl ConnectionTrait, product_id: i64) -> Result<Vec<Model>, DbErr> {
    Entity::find()
        .filter(release::Column::ProductId.eq(product_id))
        .filter(release::Column::YankedAt.is_null())
        .filter(release::Column::DelistedAt.is_null())
        .order_by_asc(release::Column::ListedInRole)
        .order_by_asc(release::Column::Id)
        .all(db)
        .await
}

/// The releases of a product whose target names are among `names`.
pub async fn release_list_by_targets(
    db: &impl ConnectionTrait,
    product_id: i64,
    names: Vec<String>,
) -> Result<Vec<Model>, DbErr> {
    if names.is_empty() {
        return Ok(Vec::new());
    }
    Entity::find()
        .filter(release::Column::ProductId.eq(product_id))
        .filter(release::Column::TargetName.is_in(names))
        .all(db)
        .await
}

/// Whether some active (not decommissioned) device runs release `id` or is assigned it.
pub async fn release_on_devices(db: &impl ConnectionTrait, id: i64) -> Result<bool, DbErr> {
    use super::entities::device;
    let found: Option<i64> = device::Entity::find()
        .select_only()
        .column(device::Column::Id)
        .filter(
            sea_orm::Condition::any()
                .add(device::Column::InstalledReleaseId.eq(id))
                .add(device::Column::AssignedReleaseId.eq(id)),
        )
        .filter(device::Column::Status.eq("active"))
        .limit(1)
        .into_tuple()
        .one(db)
        .await?;
    Ok(found.is_some())
}

/// The release whose target is `target_name`.
pub async fn release_find_by_target(db: &impl ConnectionTrait, target_name: &str) -> Result<Option<Model>, DbErr> {
    Entity::find().filter(release::Column::TargetName.eq(target_name)).one(db).await
}

/// The release row `id`.
pub async fn release_get(db: &impl ConnectionTrait, id: i64) -> Result<Option<Model>, DbErr> {
    Entity::find_by_id(id).one(db).await
}

/// The releases with these row ids (in no particular order).
pub async fn release_list_by_ids(db: &impl ConnectionTrait, ids: Vec<i64>) -> Result<Vec<Model>, DbErr> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    Entity::find().filter(release::Column::Id.is_in(ids)).all(db).await
}

/// Which of `sha256s` some release (yanked or not) stores its file under.
pub async fn release_sha256s_in(
    db: &impl ConnectionTrait,
    sha256s: Vec<String>,
) -> Result<std::collections::HashSet<String>, DbErr> {
    use sea_orm::QuerySelect;
    if sha256s.is_empty() {
        return Ok(std::collections::HashSet::new());
    }
    let found: Vec<String> = Entity::find()
        .select_only()
        .column(release::Column::Sha256)
        .filter(release::Column::Sha256.is_in(sha256s))
        .into_tuple()
        .all(db)
        .await?;
    Ok(found.into_iter().collect())
}
