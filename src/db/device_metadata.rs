//! Queries on `device_metadata`: every signed version of each device's director roles.

use sea_orm::{ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, Set};

use super::entities::device_metadata::{self, ActiveModel, Entity, Model};

/// One signed director role of a device, to store.
pub struct NewDeviceMetadata {
    /// The device row.
    pub device_row_id: i64,
    /// `targets`, `snapshot` or `timestamp`.
    pub role: String,
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

/// Rows per insert statement: far below SQLite's 32 766 bound parameters at 7 per row.
const INSERT_CHUNK: usize = 2_000;

/// Stores signed director roles, in one statement per [`INSERT_CHUNK`] rows.
pub async fn device_metadata_insert_many(
    db: &impl ConnectionTrait,
    mut rows: Vec<NewDeviceMetadata>,
) -> Result<(), DbErr> {
    while rows.len() > INSERT_CHUNK {
        let rest = rows.split_off(INSERT_CHUNK);
        insert_chunk(db, rows).await?;
        rows = rest;
    }
    insert_chunk(db, rows).await
}

async fn insert_chunk(db: &impl ConnectionTrait, rows: Vec<NewDeviceMetadata>) -> Result<(), DbErr> {
    if rows.is_empty() {
        return Ok(());
    }
    let rows = rows.into_iter().map(|m| ActiveModel {
        device_row_id: Set(m.device_row_id),
        role: Set(m.role),
        version: Set(i64::try_from(m.version).unwrap_or(i64::MAX)),
        expires_at: Set(m.expires_at),
        body: Set(m.body),
        sha256: Set(m.sha256),
        created_at: Set(m.created_at),
        ..Default::default()
    });
    Entity::insert_many(rows).exec_without_returning(db).await?;
    Ok(())
}

/// The newest version of each role of the device.
pub async fn device_metadata_latest_versions(
    db: &impl ConnectionTrait,
    device_row_id: i64,
) -> Result<Vec<(String, i64)>, DbErr> {
    use sea_orm::QuerySelect;
    use sea_orm::sea_query::{Expr, Func};
    Entity::find()
        .select_only()
        .column(device_metadata::Column::Role)
        .expr(Func::max(Expr::col(device_metadata::Column::Version)))
        .filter(device_metadata::Column::DeviceRowId.eq(device_row_id))
        .group_by(device_metadata::Column::Role)
        .into_tuple()
        .all(db)
        .await
}

/// The newest version of each role of each of `device_rows`: `(device row, role, version)`.
pub async fn device_metadata_latest_versions_of(
    db: &impl ConnectionTrait,
    device_rows: Vec<i64>,
) -> Result<Vec<(i64, String, i64)>, DbErr> {
    use sea_orm::QuerySelect;
    use sea_orm::sea_query::{Expr, Func};
    if device_rows.is_empty() {
        return Ok(Vec::new());
    }
    Entity::find()
        .select_only()
        .column(device_metadata::Column::DeviceRowId)
        .column(device_metadata::Column::Role)
        .expr(Func::max(Expr::col(device_metadata::Column::Version)))
        .filter(device_metadata::Column::DeviceRowId.is_in(device_rows))
        .group_by(device_metadata::Column::DeviceRowId)
        .group_by(device_metadata::Column::Role)
        .into_tuple()
        .all(db)
        .await
}

/// The newest version of `role` for the device.
pub async fn device_metadata_latest(
    db: &impl ConnectionTrait,
    device_row_id: i64,
    role: &str,
) -> Result<Option<Model>, DbErr> {
    Entity::find()
        .filter(device_metadata::Column::DeviceRowId.eq(device_row_id))
        .filter(device_metadata::Column::Role.eq(role))
        .order_by_desc(device_metadata::Column::Version)
        .one(db)
        .await
}

/// Version `version` of `role` for the device.
pub async fn device_metadata_get(
    db: &impl ConnectionTrait,
    device_row_id: i64,
    role: &str,
    version: i64,
) -> Result<Option<Model>, DbErr> {
    Entity::find()
        .filter(device_metadata::Column::DeviceRowId.eq(device_row_id))
        .filter(device_metadata::Column::Role.eq(role))
        .filter(device_metadata::Column::Version.eq(version))
        .one(db)
        .await
}
