//! Queries on `device_metadata`: every signed version of each device's director roles.

use sea_orm::{ActiveModelTrait, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, Set};

use super::entities::device_metadata::{self, ActiveModel, Entity, Model};

/// Stores one signed director role of device row `device_row_id`.
#[expect(
    clippy::too_many_arguments,
    reason = "one argument per column of the row; its only caller (services::director) passes them straight through"
)]
pub async fn device_metadata_insert(
    db: &impl ConnectionTrait,
    device_row_id: i64,
    role: &str,
    version: u64,
    expires_at: i64,
    body: Vec<u8>,
    sha256: String,
    created_at: i64,
) -> Result<Model, DbErr> {
    ActiveModel {
        device_row_id: Set(device_row_id),
        role: Set(role.to_owned()),
        version: Set(i64::try_from(version).unwrap_or(i64::MAX)),
        expires_at: Set(expires_at),
        body: Set(body),
        sha256: Set(sha256),
        created_at: Set(created_at),
        ..Default::default()
    }
    .insert(db)
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
