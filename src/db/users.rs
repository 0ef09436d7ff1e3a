//! Queries on `users`, `sessions` and `login_failures`.

use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, Set,
};

use super::entities::{login_failure, session, user};

/// Stores a new user.
pub async fn user_insert(
    db: &impl ConnectionTrait,
    name: &str,
    role: &str,
    password_hash: &str,
    now: i64,
) -> Result<user::Model, DbErr> {
    user::ActiveModel {
        name: Set(name.to_owned()),
        role: Set(role.to_owned()),
        password_hash: Set(password_hash.to_owned()),
        created_at: Set(now),
        updated_at: Set(now),
        ..Default::default()
    }
    .insert(db)
    .await
}

/// The user named `name`.
pub async fn user_get_by_name(db: &impl ConnectionTrait, name: &str) -> Result<Option<user::Model>, DbErr> {
    user::Entity::find().filter(user::Column::Name.eq(name)).one(db).await
}

/// The user with row id `id`.
pub async fn user_get(db: &impl ConnectionTrait, id: i64) -> Result<Option<user::Model>, DbErr> {
    user::Entity::find_by_id(id).one(db).await
}

/// Every user, by name.
pub async fn user_list(db: &impl ConnectionTrait) -> Result<Vec<user::Model>, DbErr> {
    user::Entity::find().order_by_asc(user::Column::Name).all(db).await
}

/// Changes a user's role (and `updated_at`).
pub async fn user_set_role(db: &impl ConnectionTrait, id: i64, role: &str, now: i64) -> Result<(), DbErr> {
    user::Entity::update_many()
        .col_expr(user::Column::Role, Expr::value(role))
        .col_expr(user::Column::UpdatedAt, Expr::value(now))
        .filter(user::Column::Id.eq(id))
        .exec(db)
        .await
        .map(drop)
}

/// Changes a user's password hash.
pub async fn user_set_password(db: &impl ConnectionTrait, id: i64, hash: &str, now: i64) -> Result<(), DbErr> {
    user::Entity::update_many()
        .col_expr(user::Column::PasswordHash, Expr::value(hash))
        .col_expr(user::Column::UpdatedAt, Expr::value(now))
        .filter(user::Column::Id.eq(id))
        .exec(db)
        .await
        .map(drop)
}

/// A session to store.
pub struct NewSession<'a> {
    /// Owner.
    pub user_id: i64,
    /// SHA-256 of the cookie secret.
    pub token_hash: &'a str,
    /// The session's CSRF token.
    pub csrf_token: &'a str,
    /// Unix seconds.
    pub now: i64,
    /// Absolute expiry.
    pub expires_at: i64,
}

/// Stores a new session.
pub async fn session_insert(db: &impl ConnectionTrait, new: NewSession<'_>) -> Result<session::Model, DbErr> {
    session::ActiveModel {
        user_id: Set(new.user_id),
        token_hash: Set(new.token_hash.to_owned()),
        csrf_token: Set(new.csrf_token.to_owned()),
        created_at: Set(new.now),
        last_seen_at: Set(new.now),
        expires_at: Set(new.expires_at),
        revoked_at: Set(None),
        ..Default::default()
    }
    .insert(db)
    .await
}

/// The unrevoked session whose secret hashes to `hash`.
pub async fn session_find_active(db: &impl ConnectionTrait, hash: &str) -> Result<Option<session::Model>, DbErr> {
    session::Entity::find()
        .filter(session::Column::TokenHash.eq(hash))
        .filter(session::Column::RevokedAt.is_null())
        .one(db)
        .await
}

/// Records activity on a session.
pub async fn session_touch(db: &impl ConnectionTrait, id: i64, now: i64) -> Result<(), DbErr> {
    session::Entity::update_many()
        .col_expr(session::Column::LastSeenAt, Expr::value(now))
        .filter(session::Column::Id.eq(id))
        .exec(db)
        .await
        .map(drop)
}

/// Revokes one session.
pub async fn session_revoke(db: &impl ConnectionTrait, id: i64, now: i64) -> Result<(), DbErr> {
    session::Entity::update_many()
        .col_expr(session::Column::RevokedAt, Expr::value(now))
        .filter(session::Column::Id.eq(id))
        .filter(session::Column::RevokedAt.is_null())
        .exec(db)
        .await
        .map(drop)
}

/// Revokes every session of a user; returns how many.
pub async fn session_revoke_for_user(db: &impl ConnectionTrait, user_id: i64, now: i64) -> Result<u64, DbErr> {
    let result = session::Entity::update_many()
        .col_expr(session::Column::RevokedAt, Expr::value(now))
        .filter(session::Column::UserId.eq(user_id))
        .filter(session::Column::RevokedAt.is_null())
        .exec(db)
        .await?;
    Ok(result.rows_affected)
}

/// Records a sign-in attempt as failed (until it succeeds); returns its id.
pub async fn login_failure_insert(db: &impl ConnectionTrait, name: &str, remote: &str, now: i64) -> Result<i64, DbErr> {
    login_failure::ActiveModel {
        name: Set(name.to_owned()),
        remote: Set(remote.to_owned()),
        at: Set(now),
        ..Default::default()
    }
    .insert(db)
    .await
    .map(|row| row.id)
}

/// Failed sign-ins for `name` since `since` stored before attempt `before`, and the newest
/// one's time.
pub async fn login_failures_before(
    db: &impl ConnectionTrait,
    name: &str,
    since: i64,
    before: i64,
) -> Result<(u64, Option<i64>), DbErr> {
    let query = login_failure::Entity::find()
        .filter(login_failure::Column::Name.eq(name))
        .filter(login_failure::Column::At.gte(since))
        .filter(login_failure::Column::Id.lt(before));
    let count = query.clone().count(db).await?;
    let newest = query.order_by_desc(login_failure::Column::At).one(db).await?.map(|f| f.at);
    Ok((count, newest))
}

/// Forgets one attempt (one that was refused before its password was checked).
pub async fn login_failure_delete(db: &impl ConnectionTrait, id: i64) -> Result<(), DbErr> {
    login_failure::Entity::delete_by_id(id).exec(db).await.map(drop)
}

/// Forgets the failed sign-ins of `name` (after a successful one).
pub async fn login_failure_clear(db: &impl ConnectionTrait, name: &str) -> Result<(), DbErr> {
    login_failure::Entity::delete_many().filter(login_failure::Column::Name.eq(name)).exec(db).await.map(drop)
}
