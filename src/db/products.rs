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
