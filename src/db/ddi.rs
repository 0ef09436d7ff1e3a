//! Queries for devices that speak hawkBit's device API (`services::ddi`).

use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, Set,
};

use super::entities::{assignment, ddi_gateway_token, device, release_digest};

/// A device registered by an admin to speak hawkBit's device API.
#[derive(Debug, Clone)]
pub struct NewDdiDevice {
    pub device_id: String,
    pub product_id: i64,
    pub hardware_id: String,
    /// JSON array of tags.
    pub tags: String,
    pub token_prefix: String,
    pub token_hash: String,
    pub registered_at: i64,
}

/// Stores a DDI device: no key, no enrollment token, nothing signed yet.
pub async fn device_insert_ddi(db: &impl ConnectionTrait, new: NewDdiDevice) -> Result<device::Model, DbErr> {
    device::ActiveModel {
        device_id: Set(new.device_id),
        product_id: Set(new.product_id),
        hardware_id: Set(new.hardware_id),
        public_key: Set(String::new()),
        keyid: Set(String::new()),
        tags: Set(new.tags),
        token_prefix: Set(new.token_prefix),
        token_hash: Set(new.token_hash),
        status: Set("active".into()),
        rekey_allowed: Set(false),
        enrollment_token_id: Set(None),
        enrolled_at: Set(new.registered_at),
        enroll_time: Set(String::new()),
        director_targets_version: Set(0),
        director_refresh_at: Set(0),
        protocol: Set(crate::services::enrollment::DDI.into()),
        ..Default::default()
    }
    .insert(db)
    .await
}

/// Stores the attributes a DDI device sent (a JSON object). Cohort selectors see them, so the
/// device's next poll decides again (plan epoch 0).
pub async fn device_set_attributes(db: &impl ConnectionTrait, id: i64, attributes: String) -> Result<(), DbErr> {
    device::ActiveModel { id: Set(id), attributes: Set(Some(attributes)), plan_epoch: Set(0), ..Default::default() }
        .update(db)
        .await?;
    Ok(())
}

/// Records that a DDI device closed `action` (or acknowledged its cancellation) at `at`.
pub async fn device_close_ddi_action(db: &impl ConnectionTrait, id: i64, action: i64, at: i64) -> Result<(), DbErr> {
    device::ActiveModel {
        id: Set(id),
        ddi_closed_action: Set(Some(action)),
        ddi_closed_at: Set(Some(at)),
        ..Default::default()
    }
    .update(db)
    .await?;
    Ok(())
}

/// The device's assignment that changed last, in any rollout.
pub async fn assignment_last_changed(
    db: &impl ConnectionTrait,
    device_row_id: i64,
) -> Result<Option<assignment::Model>, DbErr> {
    assignment::Entity::find()
        .filter(assignment::Column::DeviceRowId.eq(device_row_id))
        .order_by_desc(assignment::Column::UpdatedAt)
        .order_by_desc(assignment::Column::Id)
        .one(db)
        .await
}

/// A device's assignment by id.
pub async fn assignment_get(db: &impl ConnectionTrait, id: i64) -> Result<Option<assignment::Model>, DbErr> {
    assignment::Entity::find_by_id(id).one(db).await
}

/// The SHA-1 and MD5 of a release's image, if computed.
pub async fn release_digest_get(
    db: &impl ConnectionTrait,
    release_id: i64,
) -> Result<Option<release_digest::Model>, DbErr> {
    release_digest::Entity::find_by_id(release_id).one(db).await
}

/// Stores a release's digests (the same on every instance that computes them: the first wins).
pub async fn release_digest_put(db: &impl ConnectionTrait, row: release_digest::Model) -> Result<(), DbErr> {
    let active: release_digest::ActiveModel = row.into();
    release_digest::Entity::insert(active)
        .on_conflict(OnConflict::column(release_digest::Column::ReleaseId).do_nothing().to_owned())
        .try_insert()
        .exec(db)
        .await?;
    Ok(())
}

/// How many of a rollout's assignments (withdrawn ones aside) are to DDI devices.
pub async fn assignment_count_ddi(db: &impl ConnectionTrait, rollout_id: &str) -> Result<u64, DbErr> {
    assignment::Entity::find()
        .filter(assignment::Column::RolloutId.eq(rollout_id))
        .filter(assignment::Column::State.ne("withdrawn"))
        .filter(
            assignment::Column::DeviceRowId.in_subquery(
                sea_orm::sea_query::Query::select()
                    .column(device::Column::Id)
                    .from(device::Entity)
                    .and_where(device::Column::Protocol.eq(crate::services::enrollment::DDI))
                    .to_owned(),
            ),
        )
        .count(db)
        .await
}

/// Stores a product's gateway token, replacing the one it had.
pub async fn gateway_token_put(db: &impl ConnectionTrait, row: ddi_gateway_token::Model) -> Result<(), DbErr> {
    use ddi_gateway_token::Column;
    let active: ddi_gateway_token::ActiveModel = row.into();
    ddi_gateway_token::Entity::insert(active)
        .on_conflict(
            OnConflict::column(Column::ProductId)
                .update_columns([Column::TokenPrefix, Column::TokenHash, Column::CreatedBy, Column::CreatedAt])
                .to_owned(),
        )
        .exec(db)
        .await?;
    Ok(())
}

/// Removes a product's gateway token; whether it had one.
pub async fn gateway_token_delete(db: &impl ConnectionTrait, product_id: i64) -> Result<bool, DbErr> {
    Ok(ddi_gateway_token::Entity::delete_by_id(product_id).exec(db).await?.rows_affected > 0)
}

/// The gateway token with this SHA-256 (hex), if any.
pub async fn gateway_token_find(
    db: &impl ConnectionTrait,
    hash: &str,
) -> Result<Option<ddi_gateway_token::Model>, DbErr> {
    ddi_gateway_token::Entity::find().filter(ddi_gateway_token::Column::TokenHash.eq(hash)).one(db).await
}
