//! Queries on `products`.

use sea_orm::{ActiveModelTrait, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, Set};

use super::entities::product::{self, ActiveModel, Entity, Model};

/// A product to insert.
pub struct NewProduct<'a> {
    /// Name.
    pub name: &'a str,
    /// JSON array of hardware ids.
    pub hardware_ids_json: String,
    /// `server` or `manufacturer`.
    pub signing_mode: &'a str,
    /// Hex public key.
    pub public_key: String,
    /// TUF key id.
    pub keyid: String,
    /// Unix seconds.
    pub created_at: i64,
    /// `active` or `pending_delegation`.
    pub status: &'a str,
    /// A manufacturer's first role, kept until the delegation lands.
    pub pending_role: Option<Vec<u8>>,
    /// Releases need a second person's approval.
    pub requires_approval: bool,
    /// How many recently listed releases always stay listed.
    pub retain_newest: i64,
}

/// Inserts a product.
pub async fn product_insert(db: &impl ConnectionTrait, new: NewProduct<'_>) -> Result<Model, DbErr> {
    ActiveModel {
        name: Set(new.name.to_owned()),
        hardware_ids: Set(new.hardware_ids_json),
        signing_mode: Set(new.signing_mode.to_owned()),
        public_key: Set(new.public_key),
        keyid: Set(new.keyid),
        created_at: Set(new.created_at),
        status: Set(new.status.to_owned()),
        pending_role: Set(new.pending_role),
        requires_approval: Set(new.requires_approval),
        security_floor: Set("0.0.0".to_owned()),
        retain_newest: Set(new.retain_newest),
        ..Default::default()
    }
    .insert(db)
    .await
}

/// The product named `name`.
pub async fn product_get_by_name(db: &impl ConnectionTrait, name: &str) -> Result<Option<Model>, DbErr> {
    Entity::find().filter(product::Column::Name.eq(name)).one(db).await
}

/// Every product, by name.
pub async fn product_list(db: &impl ConnectionTrait) -> Result<Vec<Model>, DbErr> {
    Entity::find().order_by_asc(product::Column::Name).all(db).await
}

/// The product row `id`.
pub async fn product_get(db: &impl ConnectionTrait, id: i64) -> Result<Option<Model>, DbErr> {
    Entity::find_by_id(id).one(db).await
}

/// Saves changed columns of a product.
pub async fn product_update(db: &impl ConnectionTrait, active: ActiveModel) -> Result<Model, DbErr> {
    active.update(db).await
}

/// Sets a product's security floor.
pub async fn product_set_floor(db: &impl ConnectionTrait, id: i64, floor: &str) -> Result<(), DbErr> {
    ActiveModel { id: sea_orm::ActiveValue::Unchanged(id), security_floor: Set(floor.to_owned()), ..Default::default() }
        .update(db)
        .await
        .map(|_| ())
}

/// Marks a product's delegation as served and forgets its pending first role.
pub async fn product_clear_pending(db: &impl ConnectionTrait, id: i64) -> Result<(), DbErr> {
    ActiveModel {
        id: sea_orm::ActiveValue::Unchanged(id),
        status: Set("active".to_owned()),
        pending_role: Set(None),
        ..Default::default()
    }
    .update(db)
    .await
    .map(|_| ())
}

/// Sets a product's `retain_newest`.
pub async fn product_set_retain_newest(db: &impl ConnectionTrait, id: i64, retain_newest: i64) -> Result<(), DbErr> {
    ActiveModel { id: sea_orm::ActiveValue::Unchanged(id), retain_newest: Set(retain_newest), ..Default::default() }
        .update(db)
        .await?;
    Ok(())
}
