//! Publishing a release: stream the file into the blob store while hashing it (no lock held,
//! never whole in memory), then one signing transaction adds the release row and re-signs the
//! product role, snapshot and timestamp. A crash anywhere leaves either the previous
//! repository or the complete new one; an orphaned blob is harmless (content-addressed).

use std::time::Instant;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use sha2::{Digest, Sha256, Sha512};

use super::auth::Caller;
use super::image_repo::{IMAGE, commit_with_snapshot, next_version, sign_product_role};
use super::product_role::{Reconciled, Upload, apply_reconciled, check_role, floor_of, reconcile, served_delegations};
use super::products::{MANUFACTURER_SIGNED, PENDING_DELEGATION};
use super::{ServiceError, Services};
use crate::db::audit::{NewAudit, audit_insert};
use crate::db::entities::{product, release};
use crate::db::products::product_get_by_name;
use crate::db::releases::{release_find, release_insert, release_list_by_product, release_list_listed};
use crate::domain::expiry::whole_seconds;
use crate::domain::names::{FileName, FirmwareVersion, ProductName, target_name};

/// A file stored in the blob store, with what was measured on the way in.
#[derive(Debug, Clone)]
pub struct StoredBlob {
    /// SHA-256, lowercase hex.
    pub sha256: String,
    /// SHA-512, lowercase hex.
    pub sha512: String,
    /// Bytes.
    pub length: u64,
}

/// Streams `body` into the blob store, hashing it, refusing more than `limit` bytes.
pub async fn store_blob<S, E>(svc: &Services, mut body: S, limit: u64) -> Result<StoredBlob, ServiceError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let mut upload = svc.store.begin_upload().await?;
    let mut sha256 = Sha256::new();
    let mut sha512 = Sha512::new();
    let mut length: u64 = 0;
    while let Some(chunk) = body.next().await {
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(e) => {
                upload.abort().await;
                return Err(ServiceError::invalid("upload_interrupted", format!("the upload was interrupted: {e}")));
            }
        };
        length += chunk.len() as u64;
        if length > limit {
            upload.abort().await;
            return Err(ServiceError::TooLarge { limit });
        }
        sha256.update(&chunk);
        sha512.update(&chunk);
        if let Err(e) = upload.write(&chunk).await {
            upload.abort().await;
            return Err(e.into());
        }
    }
    if length == 0 {
        upload.abort().await;
        return Err(ServiceError::invalid("empty_file", "the firmware file is empty"));
    }
    let blob = StoredBlob { sha256: hex::encode(sha256.finalize()), sha512: hex::encode(sha512.finalize()), length };
    upload.finish(&blob.sha256).await?;
    Ok(blob)
}

/// A release to commit once its file is stored.
pub struct NewRelease {
    /// Product.
    pub product: ProductName,
    /// Version.
    pub version: FirmwareVersion,
    /// File name (last part of the target name).
    pub file_name: FileName,
    /// Optional release notes.
    pub notes: Option<String>,
    /// Lowest version a device may go back to after installing this one (server-signed: default
    /// 0.0.0; manufacturer-signed: the signed role says, and this must agree if given).
    pub rollback_floor: Option<FirmwareVersion>,
    /// The stored file.
    pub blob: StoredBlob,
    /// The product role the manufacturer signed, listing the new target (manufacturer-signed
    /// products only).
    pub role: Option<Vec<u8>>,
    /// Versions the signed role leaves out because the retention policy lets them go
    /// (manufacturer-signed products; any other release it leaves out is yanked).
    pub delist: Vec<FirmwareVersion>,
}

/// Whether the release is new or a retry of an identical publish.
#[derive(Debug)]
pub enum PublishOutcome {
    /// Published now (201).
    Created(release::Model),
    /// The same version with the same content already existed (200).
    Existing(release::Model),
}

/// A product that is still waiting for its delegation ceremony cannot take releases.
pub fn require_active(product: &product::Model) -> Result<(), ServiceError> {
    if product.status == PENDING_DELEGATION {
        return Err(ServiceError::conflict(
            "pending_delegation",
            format!(
                "product {} waits for its delegation ceremony (`patchgate repo prepare delegations`, signed with the \
                 offline targets key, then `patchgate repo submit`)",
                product.name
            ),
        ));
    }
    Ok(())
}

/// Commits a release whose file is already stored. Publishing the file of a delisted release
/// again lists it again.
pub async fn commit_release(svc: &Services, caller: &Caller, new: NewRelease) -> Result<PublishOutcome, ServiceError> {
    let started = Instant::now();
    let product_name = new.product.as_str();
    caller.require_product(product_name)?;
    if let Some(floor) = &new.rollback_floor
        && floor > &new.version
    {
        return Err(ServiceError::invalid(
            "invalid_rollback_floor",
            format!("rollback_floor {floor} is above the release version {}", new.version),
        ));
    }
    let txn = crate::db::begin_signing(&svc.db).await?;
    let product = product_get_by_name(&txn, product_name).await?.ok_or_else(|| {
        ServiceError::not_found("unknown_product", format!("product {product_name:?} does not exist"))
    })?;
    let version = new.version.to_string();
    let relisting = match release_find(&txn, product.id, &version).await? {
        Some(existing) if existing.sha256 != new.blob.sha256 => {
            return Err(ServiceError::conflict(
                "version_exists",
                format!(
                    "{product_name} {version} is already published with different content (sha256 {})",
                    existing.sha256
                ),
            ));
        }
        Some(existing) if existing.delisted_at.is_none() || existing.yanked_at.is_some() => {
            return Ok(PublishOutcome::Existing(existing));
        }
        delisted => delisted,
    };
    require_active(&product)?;
    // Under the signing lock, which the blob sweep (`jobs::blobs`) also holds while it deletes:
    // an unreferenced blob it removed a moment ago cannot be signed as this release's file.
    if svc.store.blob_size(&new.blob.sha256).await?.is_none() {
        return Err(ServiceError::conflict(
            "blob_missing",
            format!("the uploaded file (sha256 {}) is no longer stored: publish it again", new.blob.sha256),
        ));
    }
    let now = svc.clock.now();
    let role_version = next_version(&txn, IMAGE, product_name).await?;
    let (role, change) = if product.signing_mode == MANUFACTURER_SIGNED {
        let bytes = new.role.as_deref().ok_or_else(|| {
            ServiceError::invalid(
                "missing_role",
                format!(
                    "product {product_name} is manufacturer-signed: publish with the product key \
                     (`patchgate release publish --key product.pem`), which sends the signed role with the file"
                ),
            )
        })?;
        let checked = check_role(bytes, product_name, &served_delegations(&txn).await?, role_version, now)?;
        let name = target_name(&new.product, &new.version, &new.file_name);
        let upload =
            Upload { name: &name, length: new.blob.length, sha256: &new.blob.sha256, sha512: &new.blob.sha512 };
        let upload = relisting.is_none().then_some(upload);
        let change = reconcile(&txn, &product, &checked, upload.as_ref(), &new.delist).await?;
        if let Some(old) = &relisting
            && !change.relist.iter().any(|r| r.id == old.id)
        {
            return Err(invalid_role_lacks(&old.target_name));
        }
        if let Some(listed) = &change.new_target {
            if new.rollback_floor.as_ref().is_some_and(|f| f != &listed.floor) {
                return Err(ServiceError::invalid(
                    "invalid_rollback_floor",
                    format!("the form's rollback_floor differs from the signed role's {}", listed.floor),
                ));
            }
            release_insert(&txn, release_row(&product, caller, &new, listed.custom.clone(), now, role_version)?)
                .await?;
        }
        apply_reconciled(&txn, &product, &change, &caller.name, now, role_version).await?;
        (checked.metadata, change)
    } else {
        if new.role.is_some() {
            return Err(ServiceError::invalid(
                "role_not_expected",
                format!("product {product_name} is server-signed: the server signs its role, send no `role`"),
            ));
        }
        if !new.delist.is_empty() {
            return Err(ServiceError::invalid(
                "delist_not_expected",
                format!("product {product_name} is server-signed: the server applies its retention policy itself"),
            ));
        }
        if relisting.is_none() {
            let custom = server_custom(&product, &new, now)?;
            release_insert(&txn, release_row(&product, caller, &new, custom, now, role_version)?).await?;
        }
        sign_retained_role(svc, &txn, &product, relisting.clone(), role_version, now, &caller.name).await?
    };
    commit_with_snapshot(&txn, svc, now, &[role]).await?;
    let row = release_find(&txn, product.id, &version)
        .await?
        .ok_or_else(|| anyhow::anyhow!("the release just committed is missing"))?;
    let yanked: Vec<&str> = change.yank.iter().map(|r| r.version.as_str()).collect();
    let delisted: Vec<&str> = change.delist.iter().map(|r| r.version.as_str()).collect();
    audit_insert(
        &txn,
        NewAudit {
            at: now.as_second(),
            actor: &caller.name,
            action: if relisting.is_some() { "release.relist" } else { "release.publish" },
            object: &format!("release:{}", row.target_name),
            before: None,
            after: Some(
                serde_json::json!({"sha256": row.sha256, "length": row.length, "signing_mode": product.signing_mode,
                    "yanked": yanked, "delisted": delisted})
                .to_string(),
            ),
        },
    )
    .await?;
    super::image_repo::commit_signed(svc, txn).await?;
    metrics::histogram!("patchgate_publish_commit_seconds").record(started.elapsed().as_secs_f64());
    if relisting.is_some() {
        tracing::info!(target = %row.target_name, actor = %caller.name, "delisted release listed again");
        return Ok(PublishOutcome::Existing(row));
    }
    tracing::info!(target = %row.target_name, sha256 = %row.sha256, length = row.length, actor = %caller.name, "release published");
    Ok(PublishOutcome::Created(row))
}

fn invalid_role_lacks(target: &str) -> ServiceError {
    ServiceError::invalid(
        "role_lacks_target",
        format!("the role does not list {target}, which this publish lists again"),
    )
}

/// Lists `relist` again (if given), delists what the retention policy lets go of a server-signed
/// product, then signs its role listing the rest. Returns the role and what changed.
pub async fn sign_retained_role(
    svc: &Services,
    txn: &sea_orm::DatabaseTransaction,
    product: &product::Model,
    relist: Option<release::Model>,
    role_version: u64,
    now: jiff::Timestamp,
    actor: &str,
) -> Result<(crate::tuf::sign::SignedMetadata, Reconciled), ServiceError> {
    let mut listed = release_list_listed(txn, product.id).await?;
    listed.extend(relist.iter().cloned().map(|mut r| {
        r.delisted_at = None;
        r.listed_in_role = i64::try_from(role_version).unwrap_or(i64::MAX);
        r
    }));
    let advice = super::retention::advise(txn, product, &listed, 0).await?;
    let gone: std::collections::HashSet<i64> = advice.delist.iter().map(|r| r.id).collect();
    listed.retain(|r| !gone.contains(&r.id));
    let change = Reconciled {
        delist: advice.delist,
        relist: relist.into_iter().collect(),
        floor: Some(floor_of(&listed)),
        ..Reconciled::default()
    };
    apply_reconciled(txn, product, &change, actor, now, role_version).await?;
    let role = sign_product_role(svc, txn, product, &listed, role_version, now).await?;
    Ok((role, change))
}

/// The `custom` the server signs for a server-signed release.
fn server_custom(
    product: &product::Model,
    new: &NewRelease,
    now: jiff::Timestamp,
) -> Result<serde_json::Map<String, serde_json::Value>, ServiceError> {
    let hardware_ids: Vec<String> = serde_json::from_str(&product.hardware_ids).map_err(anyhow::Error::new)?;
    let custom = patchgate_protocol::TargetCustom {
        version: new.version.to_string(),
        hardware_ids,
        rollback_floor: new.rollback_floor.clone().unwrap_or_else(FirmwareVersion::zero).to_string(),
        released_at: whole_seconds(now).to_string(),
    };
    match serde_json::to_value(&custom).map_err(anyhow::Error::new)? {
        serde_json::Value::Object(map) => Ok(map),
        _ => Err(ServiceError::Internal(anyhow::anyhow!("custom is not an object"))),
    }
}

fn release_row(
    product: &product::Model,
    caller: &Caller,
    new: &NewRelease,
    custom: serde_json::Map<String, serde_json::Value>,
    now: jiff::Timestamp,
    role_version: u64,
) -> Result<release::Model, ServiceError> {
    Ok(release::Model {
        id: 0,
        product_id: product.id,
        version: new.version.to_string(),
        target_name: target_name(&new.product, &new.version, &new.file_name),
        filename: new.file_name.as_str().to_owned(),
        length: i64::try_from(new.blob.length).map_err(anyhow::Error::new)?,
        sha256: new.blob.sha256.clone(),
        sha512: new.blob.sha512.clone(),
        notes: new.notes.clone(),
        custom: serde_json::to_string(&custom).map_err(anyhow::Error::new)?,
        published_by: caller.name.clone(),
        created_at: now.as_second(),
        yanked_at: None,
        yanked_by: None,
        approved_by: None,
        approved_at: None,
        delisted_at: None,
        listed_in_role: i64::try_from(role_version).unwrap_or(i64::MAX),
    })
}

/// Every release of `product`.
pub async fn list_releases(svc: &Services, product: &product::Model) -> Result<Vec<release::Model>, ServiceError> {
    Ok(release_list_by_product(&svc.db, product.id).await?)
}

/// Up to `limit` releases of `product`, newest first, those published before the release with
/// id `before` if given (keyset paging: a page stays the same while new releases arrive).
pub async fn page_releases(
    svc: &Services,
    product: &product::Model,
    before: Option<i64>,
    limit: u64,
) -> Result<Vec<release::Model>, ServiceError> {
    Ok(crate::db::releases::release_page(&svc.db, product.id, before, limit).await?)
}

/// One release, or 404.
pub async fn get_release(
    svc: &Services,
    product: &product::Model,
    version: &str,
) -> Result<release::Model, ServiceError> {
    release_find(&svc.db, product.id, version).await?.ok_or_else(|| {
        ServiceError::not_found("unknown_release", format!("{} has no release {version:?}", product.name))
    })
}
