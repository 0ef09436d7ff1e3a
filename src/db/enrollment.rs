//! Queries on `enrollment_tokens`.

use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, ExprTrait, QueryFilter, QueryOrder, Set,
};

use super::entities::enrollment_token::{self, ActiveModel, Entity, Model};

/// An enrollment token to store (its hash only).
pub struct NewEnrollmentToken {
    /// Display name.
    pub name: String,
    /// The product its devices belong to.
    pub product_id: i64,
    /// JSON array of tags.
    pub tags: String,
    /// First characters, shown in listings.
    pub token_prefix: String,
    /// SHA-256 of the token, hex.
    pub token_hash: String,
    /// How many enrollments it allows.
    pub max_uses: i64,
    /// Unix seconds.
    pub expires_at: i64,
    /// Who created it.
    pub created_by: String,
    /// Unix seconds.
    pub created_at: i64,
}

/// Stores a new enrollment token.
pub async fn enrollment_token_insert(db: &impl ConnectionTrait, new: NewEnrollmentToken) -> Result<Model, DbErr> {
    ActiveModel {
        name: Set(new.name),
        product_id: Set(new.product_id),
        tags: Set(new.tags),
        token_prefix: Set(new.token_prefix),
        token_hash: Set(new.token_hash),
        max_uses: Set(new.max_uses),
        uses: Set(0),
        expires_at: Set(new.expires_at),
        created_by: Set(new.created_by),
        created_at: Set(new.created_at),
        revoked_at: Set(None),
        ..Default::default()
    }
    .insert(db)
    .await
}

/// The token whose hash is `hash`.
pub async fn enrollment_token_find_by_hash(db: &impl ConnectionTrait, hash: &str) -> Result<Option<Model>, DbErr> {
    Entity::find().filter(enrollment_token::Column::TokenHash.eq(hash)).one(db).await
}

/// The token with id `id`.
pub async fn enrollment_token_get(db: &impl ConnectionTrait, id: i64) -> Result<Option<Model>, DbErr> {
    Entity::find_by_id(id).one(db).await
}

/// Every token, newest first.
pub async fn enrollment_token_list(db: &impl ConnectionTrait) -> Result<Vec<Model>, DbErr> {
    Entity::find().order_by_desc(enrollment_token::Column::Id).all(db).await
}

/// Takes one use of token `id` if it is still valid at `now`; false when none is left (the
/// check and the increment are one statement, so concurrent enrollments cannot overspend it).
pub async fn enrollment_token_take_use(db: &impl ConnectionTrait, id: i64, now: i64) -> Result<bool, DbErr> {
    let result = Entity::update_many()
        .col_expr(enrollment_token::Column::Uses, Expr::col(enrollment_token::Column::Uses).add(1))
        .filter(enrollment_token::Column::Id.eq(id))
        .filter(enrollment_token::Column::RevokedAt.is_null())
        .filter(enrollment_token::Column::ExpiresAt.gt(now))
        .filter(Expr::col(enrollment_token::Column::Uses).lt(Expr::col(enrollment_token::Column::MaxUses)))
        .exec(db)
        .await?;
    Ok(result.rows_affected == 1)
}

/// Takes `count` uses of token `id` at once, only if all of them are left (and the token is
/// neither revoked nor expired); false if not.
pub async fn enrollment_token_take_uses(
    db: &impl ConnectionTrait,
    id: i64,
    count: i64,
    now: i64,
) -> Result<bool, DbErr> {
    let result = Entity::update_many()
        .col_expr(enrollment_token::Column::Uses, Expr::col(enrollment_token::Column::Uses).add(count))
        .filter(enrollment_token::Column::Id.eq(id))
        .filter(enrollment_token::Column::RevokedAt.is_null())
        .filter(enrollment_token::Column::ExpiresAt.gt(now))
        .filter(Expr::col(enrollment_token::Column::Uses).add(count).lte(Expr::col(enrollment_token::Column::MaxUses)))
        .exec(db)
        .await?;
    Ok(result.rows_affected == 1)
}

/// Revokes token `id`; false if it does not exist or was already revoked.
pub async fn enrollment_token_revoke(db: &impl ConnectionTrait, id: i64, now: i64) -> Result<bool, DbErr> {
    let result = Entity::update_many()
        .col_expr(enrollment_token::Column::RevokedAt, Expr::value(now))
        .filter(enrollment_token::Column::Id.eq(id))
        .filter(enrollment_token::Column::RevokedAt.is_null())
        .exec(db)
        .await?;
    Ok(result.rows_affected == 1)
}
