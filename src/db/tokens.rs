//! Queries on `api_tokens`.

use sea_orm::{ActiveModelTrait, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, ExprTrait, QueryFilter, Set};

use super::entities::api_token::{self, ActiveModel, Entity, Model};

/// A token to store (its hash only).
pub struct NewToken<'a> {
    /// Display name.
    pub name: &'a str,
    /// Role name.
    pub role: &'a str,
    /// Product scope, if any.
    pub product: Option<&'a str>,
    /// First characters, shown in listings.
    pub token_prefix: String,
    /// SHA-256 of the whole token, hex.
    pub token_hash: String,
    /// Unix seconds.
    pub created_at: i64,
}

/// Stores a new token.
pub async fn token_insert(db: &impl ConnectionTrait, new: NewToken<'_>) -> Result<Model, DbErr> {
    ActiveModel {
        name: Set(new.name.to_owned()),
        role: Set(new.role.to_owned()),
        product: Set(new.product.map(str::to_owned)),
        token_prefix: Set(new.token_prefix),
        token_hash: Set(new.token_hash),
        created_at: Set(new.created_at),
        revoked_at: Set(None),
        ..Default::default()
    }
    .insert(db)
    .await
}

/// The token whose hash is `hash`, revoked or not.
pub async fn token_find_by_hash(db: &impl ConnectionTrait, hash: &str) -> Result<Option<Model>, DbErr> {
    Entity::find().filter(api_token::Column::TokenHash.eq(hash)).one(db).await
}

/// Revokes the unrevoked tokens named `name` or whose prefix is `name`; returns how many.
pub async fn token_revoke(db: &impl ConnectionTrait, name: &str, now: i64) -> Result<u64, DbErr> {
    let result = Entity::update_many()
        .col_expr(api_token::Column::RevokedAt, sea_orm::sea_query::Expr::value(now))
        .filter(api_token::Column::RevokedAt.is_null())
        .filter(api_token::Column::Name.eq(name).or(api_token::Column::TokenPrefix.eq(name)))
        .exec(db)
        .await?;
    Ok(result.rows_affected)
}
