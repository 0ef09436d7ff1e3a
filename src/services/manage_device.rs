//! Admin changes to one device: its tags, decommissioning it, and allowing it a new key. Each
//! change is saved with its audit entry (before → after) in one transaction.

use sea_orm::{DatabaseTransaction, Set};
use serde_json::json;

use super::audit::record;
use super::auth::Caller;
use super::devices::{DeviceView, device_not_found, views};
use super::{ServiceError, Services};
use crate::db::devices::{device_find, device_update};
use crate::db::entities::device;
use crate::db::products::product_get;
use crate::db::rollouts::assignment_withdraw_open;
use crate::domain::ids::parse_tags;

/// The device `device_id`, read inside `txn`, if the caller may change it.
async fn editable(txn: &DatabaseTransaction, caller: &Caller, device_id: &str) -> Result<device::Model, ServiceError> {
    let row = device_find(txn, device_id).await?.ok_or_else(|| device_not_found(device_id))?;
    if caller.product.is_some() {
        let product = product_get(txn, row.product_id)
            .await?
            .ok_or_else(|| ServiceError::Internal(anyhow::anyhow!("device {device_id} without product")))?;
        caller.require_product(&product.name)?;
    }
    Ok(row)
}

async fn view(txn: &DatabaseTransaction, row: device::Model) -> Result<DeviceView, ServiceError> {
    let id = row.device_id.clone();
    views(txn, vec![row]).await?.into_iter().next().ok_or_else(|| device_not_found(&id))
}

/// Replaces a device's tags (which decide its cohorts from its next report on).
pub async fn set_device_tags(
    svc: &Services,
    caller: &Caller,
    device_id: &str,
    tags: &[String],
) -> Result<DeviceView, ServiceError> {
    let tags = parse_tags(tags)?;
    let tags: Vec<&str> = tags.iter().map(|t| t.as_str()).collect();
    let stored = serde_json::to_string(&tags).map_err(anyhow::Error::new)?;
    let now = svc.now_secs();
    let txn = crate::db::begin_write(&svc.db).await?;
    let row = editable(&txn, caller, device_id).await?;
    let before: Vec<String> = serde_json::from_str(&row.tags).unwrap_or_default();
    let mut active: device::ActiveModel = row.into();
    active.tags = Set(stored);
    let saved = device_update(&txn, active).await?;
    let object = format!("device:{device_id}");
    record(&txn, now, caller, "device.tags", &object, Some(json!({"tags": before})), Some(json!({"tags": tags})))
        .await?;
    let out = view(&txn, saved).await?;
    txn.commit().await?;
    Ok(out)
}

/// Decommissions a device: its token stops working at once, it can never enroll again, and
/// its assignments without an outcome are withdrawn, so a retired device does not count as a
/// stalled (failed) one in a rollout's gate.
pub async fn decommission_device(svc: &Services, caller: &Caller, device_id: &str) -> Result<DeviceView, ServiceError> {
    let now = svc.now_secs();
    let txn = crate::db::begin_write(&svc.db).await?;
    let row = editable(&txn, caller, device_id).await?;
    if row.status != "active" {
        return Err(ServiceError::conflict(
            "already_decommissioned",
            format!("device {device_id} is already decommissioned"),
        ));
    }
    let row_id = row.id;
    let mut active: device::ActiveModel = row.into();
    active.status = Set("decommissioned".into());
    active.decommissioned_at = Set(Some(now));
    active.rekey_allowed = Set(false);
    let saved = device_update(&txn, active).await?;
    let withdrawn = assignment_withdraw_open(&txn, row_id, now).await?;
    let after = json!({"status": "decommissioned", "decommissioned_at": now, "withdrawn_assignments": withdrawn});
    record(
        &txn,
        now,
        caller,
        "device.decommission",
        &format!("device:{device_id}"),
        Some(json!({"status": "active"})),
        Some(after),
    )
    .await?;
    let out = view(&txn, saved).await?;
    txn.commit().await?;
    // Its token is refused from the next request on; other instances follow within a second.
    svc.caches.invalidate_device(row_id);
    tracing::info!(device = device_id, actor = %caller.name, withdrawn, "device decommissioned");
    Ok(out)
}

/// Lets the device's next enrollment bring a new key (a replaced secure element, a wiped
/// device). Good for one enrollment: the next one clears it, whatever key it brings.
pub async fn allow_device_rekey(svc: &Services, caller: &Caller, device_id: &str) -> Result<DeviceView, ServiceError> {
    let now = svc.now_secs();
    let txn = crate::db::begin_write(&svc.db).await?;
    let row = editable(&txn, caller, device_id).await?;
    if row.status != "active" {
        return Err(ServiceError::conflict(
            "device_decommissioned",
            format!("device {device_id} is decommissioned and cannot enroll again"),
        ));
    }
    let before = json!({"rekey_allowed": row.rekey_allowed, "keyid": row.keyid});
    let mut active: device::ActiveModel = row.into();
    active.rekey_allowed = Set(true);
    let saved = device_update(&txn, active).await?;
    record(
        &txn,
        now,
        caller,
        "device.allow_rekey",
        &format!("device:{device_id}"),
        Some(before),
        Some(json!({"rekey_allowed": true})),
    )
    .await?;
    let out = view(&txn, saved).await?;
    txn.commit().await?;
    Ok(out)
}
