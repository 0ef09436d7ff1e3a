//! Queries on `metadata`: every signed version of every role, as served bytes.

use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set,
};

use super::entities::metadata::{self, ActiveModel, Entity, Model};

/// One signed role version to store.
pub struct NewMetadata<'a> {
    /// `image` or `director`.
    pub repo: &'a str,
    /// Role name.
    pub role: &'a str,
    /// Role version.
    pub version: u64,
    /// Expiry, Unix seconds.
    pub expires_at: i64,
    /// The exact bytes served.
    pub body: Vec<u8>,
    /// SHA-256 of `body`, hex.
    pub sha256: String,
    /// Unix seconds.
    pub created_at: i64,
}

/// Stores one signed role version.
pub async fn metadata_insert(db: &impl ConnectionTrait, new: NewMetadata<'_>) -> Result<Model, DbErr> {
    ActiveModel {
        repo: Set(new.repo.to_owned()),
        role: Set(new.role.to_owned()),
        version: Set(i64::try_from(new.version).unwrap_or(i64::MAX)),
        expires_at: Set(new.expires_at),
        body: Set(new.body),
        sha256: Set(new.sha256),
        created_at: Set(new.created_at),
        ..Default::default()
    }
    .insert(db)
    .await
}

/// The newest version of `role` in `repo`.
pub async fn metadata_latest(db: &impl ConnectionTrait, repo: &str, role: &str) -> Result<Option<Model>, DbErr> {
    Entity::find()
        .filter(metadata::Column::Repo.eq(repo))
        .filter(metadata::Column::Role.eq(role))
        .order_by_desc(metadata::Column::Version)
        .one(db)
        .await
}

/// Version `version` of `role` in `repo`.
pub async fn metadata_get(
    db: &impl ConnectionTrait,
    repo: &str,
    role: &str,
    version: i64,
) -> Result<Option<Model>, DbErr> {
    Entity::find()
        .filter(metadata::Column::Repo.eq(repo))
        .filter(metadata::Column::Role.eq(role))
        .filter(metadata::Column::Version.eq(version))
        .one(db)
        .await
}

/// The newest version of every role in `repo` with its expiry (Unix seconds), without bodies.
///
/// One statement, `(role, version) IN (SELECT role, MAX(version) … GROUP BY role)`: it runs
/// inside every publish, and its size must not grow with the number of products (SQLite caps
/// expression depth at 1000).
pub async fn metadata_latest_versions(db: &impl ConnectionTrait, repo: &str) -> Result<Vec<(String, i64, i64)>, DbErr> {
    use sea_orm::ExprTrait;
    use sea_orm::sea_query::{Expr, Func, Query};
    let newest = Query::select()
        .column(metadata::Column::Role)
        .expr(Func::max(Expr::col(metadata::Column::Version)))
        .from(Entity)
        .and_where(Expr::col(metadata::Column::Repo).eq(repo))
        .group_by_col(metadata::Column::Role)
        .to_owned();
    Entity::find()
        .select_only()
        .column(metadata::Column::Role)
        .column(metadata::Column::Version)
        .column(metadata::Column::ExpiresAt)
        .filter(metadata::Column::Repo.eq(repo))
        .filter(
            Expr::tuple([Expr::col(metadata::Column::Role), Expr::col(metadata::Column::Version)]).in_subquery(newest),
        )
        .order_by_asc(metadata::Column::Role)
        .into_tuple()
        .all(db)
        .await
}
