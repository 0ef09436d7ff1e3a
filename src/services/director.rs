//! The director: each device's own small TUF repository (Uptane), signed online with the one
//! director key. It names at most one target, exactly the image repository's entry plus
//! `device_id`, `rollout_id` and `action`. A device's roles are re-signed only when its
//! assignment changes, or lazily when the device reports within a role's refresh margin; an
//! unchanged poll signs nothing.

use anyhow::Context as _;
use jiff::Timestamp;
use patchgate_protocol::director::{DirectorAction, DirectorFields, director_custom};
use sea_orm::ConnectionTrait;

use super::image_repo::{DIRECTOR, from_stored};
use super::{ServiceError, Services};
use crate::db::device_metadata::{device_metadata_get, device_metadata_insert, device_metadata_latest};
use crate::db::entities::{device, release};
use crate::db::metadata::{metadata_get, metadata_latest};
use crate::domain::expiry::{RoleKind, expires_at, needs_refresh};
use crate::tuf::metadata::{self, DirectorTarget};
use crate::tuf::sign::{SignedMetadata, sign_director_role};

/// What the director tells one device to install.
#[derive(Debug, Clone)]
pub struct DirectorAssignment {
    /// The release to install.
    pub release: release::Model,
    /// The rollout that decided it.
    pub rollout_id: String,
    /// `install`, or `rollback` to the release the device ran before.
    pub action: DirectorAction,
}

fn target_for(device_id: &str, a: &DirectorAssignment) -> Result<DirectorTarget, ServiceError> {
    let image_custom: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&a.release.custom).context("stored release custom")?;
    let fields = DirectorFields { device_id: device_id.to_owned(), rollout_id: a.rollout_id.clone(), action: a.action };
    let custom = director_custom(&image_custom, &fields).map_err(|e| anyhow::anyhow!("director custom: {e}"))?;
    Ok(DirectorTarget {
        name: a.release.target_name.clone(),
        length: u64::try_from(a.release.length).unwrap_or(0),
        sha256: a.release.sha256.clone(),
        sha512: a.release.sha512.clone(),
        custom,
    })
}

async fn next(db: &impl ConnectionTrait, device_row: i64, role: &str) -> Result<u64, ServiceError> {
    let latest = device_metadata_latest(db, device_row, role).await?;
    Ok(latest.map_or(1, |m| u64::try_from(m.version).unwrap_or(0) + 1))
}

async fn store(
    db: &impl ConnectionTrait,
    device_row: i64,
    m: &SignedMetadata,
    now: Timestamp,
) -> Result<(), ServiceError> {
    device_metadata_insert(
        db,
        device_row,
        &m.role,
        m.version,
        m.expires.as_second(),
        m.bytes.clone(),
        m.sha256.clone(),
        now.as_second(),
    )
    .await?;
    Ok(())
}

/// Signs and stores new director targets, snapshot and timestamp for `device`; returns the new
/// targets version.
pub async fn sign_device_metadata(
    db: &impl ConnectionTrait,
    svc: &Services,
    device: &device::Model,
    assignment: Option<&DirectorAssignment>,
    now: Timestamp,
) -> Result<u64, ServiceError> {
    let entry = assignment.map(|a| target_for(&device.device_id, a)).transpose()?;
    let version = next(db, device.id, "targets").await?;
    let expires = expires_at(RoleKind::DirectorTargets, now);
    let body = metadata::director_targets(version, expires, entry.as_ref())?;
    let targets = sign_director_role("targets", version, expires, body, &svc.keys.director).await?;
    store(db, device.id, &targets, now).await?;
    sign_snapshot_and_timestamp(db, svc, device.id, version, now).await?;
    Ok(version)
}

async fn sign_snapshot_and_timestamp(
    db: &impl ConnectionTrait,
    svc: &Services,
    device_row: i64,
    targets_version: u64,
    now: Timestamp,
) -> Result<(), ServiceError> {
    let version = next(db, device_row, "snapshot").await?;
    let expires = expires_at(RoleKind::Snapshot, now);
    let body = metadata::snapshot(version, expires, &[("targets".to_owned(), targets_version)])?;
    let snapshot = sign_director_role("snapshot", version, expires, body, &svc.keys.director).await?;
    store(db, device_row, &snapshot, now).await?;
    sign_timestamp(db, svc, device_row, &snapshot, now).await
}

async fn sign_timestamp(
    db: &impl ConnectionTrait,
    svc: &Services,
    device_row: i64,
    snapshot: &SignedMetadata,
    now: Timestamp,
) -> Result<(), ServiceError> {
    let version = next(db, device_row, "timestamp").await?;
    let expires = expires_at(RoleKind::Timestamp, now);
    let body = metadata::timestamp(version, expires, snapshot)?;
    let timestamp = sign_director_role("timestamp", version, expires, body, &svc.keys.director).await?;
    store(db, device_row, &timestamp, now).await
}

/// Re-signs whichever of the device's roles is inside its refresh margin (and those that must
/// change with it); signs nothing when all are fresh. Returns the new targets version when the
/// targets role itself was re-signed.
pub async fn refresh_device_metadata(
    db: &impl ConnectionTrait,
    svc: &Services,
    device: &device::Model,
    assignment: Option<&DirectorAssignment>,
    now: Timestamp,
) -> Result<Option<u64>, ServiceError> {
    let expiry = |m: &Option<crate::db::entities::device_metadata::Model>| {
        m.as_ref().and_then(|m| Timestamp::from_second(m.expires_at).ok()).unwrap_or(Timestamp::UNIX_EPOCH)
    };
    let targets = device_metadata_latest(db, device.id, "targets").await?;
    if targets.is_none() || needs_refresh(RoleKind::DirectorTargets, expiry(&targets), now) {
        return Ok(Some(sign_device_metadata(db, svc, device, assignment, now).await?));
    }
    let targets_version = targets.map_or(0, |t| u64::try_from(t.version).unwrap_or(0));
    let snapshot = device_metadata_latest(db, device.id, "snapshot").await?;
    if needs_refresh(RoleKind::Snapshot, expiry(&snapshot), now) {
        sign_snapshot_and_timestamp(db, svc, device.id, targets_version, now).await?;
        return Ok(None);
    }
    let timestamp = device_metadata_latest(db, device.id, "timestamp").await?;
    if needs_refresh(RoleKind::Timestamp, expiry(&timestamp), now)
        && let Some(snapshot) = snapshot
    {
        sign_timestamp(db, svc, device.id, &from_stored_device(snapshot), now).await?;
    }
    Ok(None)
}

fn from_stored_device(m: crate::db::entities::device_metadata::Model) -> SignedMetadata {
    SignedMetadata {
        role: m.role,
        version: u64::try_from(m.version).unwrap_or(0),
        expires: Timestamp::from_second(m.expires_at).unwrap_or(Timestamp::UNIX_EPOCH),
        bytes: m.body,
        sha256: m.sha256,
    }
}

/// The bytes of one of a device's director files (`N.root.json`, `timestamp.json`,
/// `N.snapshot.json`, `N.targets.json`), with their SHA-256; `None` if it does not exist.
pub async fn find_device_metadata(
    svc: &Services,
    device: &device::Model,
    file: &str,
) -> Result<Option<(Vec<u8>, String)>, ServiceError> {
    if file == "timestamp.json" {
        let latest = device_metadata_latest(&svc.db, device.id, "timestamp").await?;
        return Ok(latest.map(|m| (m.body, m.sha256)));
    }
    let Some((version, role)) = file.strip_suffix(".json").and_then(|f| f.split_once('.')) else {
        return Ok(None);
    };
    let Ok(version) = version.parse::<i64>() else {
        return Ok(None);
    };
    match role {
        "root" => Ok(metadata_get(&svc.db, DIRECTOR, "root", version).await?.map(|m| (m.body, m.sha256))),
        "snapshot" | "targets" => {
            Ok(device_metadata_get(&svc.db, device.id, role, version).await?.map(|m| (m.body, m.sha256)))
        }
        _ => Ok(None),
    }
}

/// The director's newest root (for provisioning and checks).
pub async fn director_root(svc: &Services) -> Result<SignedMetadata, ServiceError> {
    let row = metadata_latest(&svc.db, DIRECTOR, "root")
        .await?
        .ok_or_else(|| ServiceError::Internal(anyhow::anyhow!("the director root has not been signed")))?;
    Ok(from_stored(row))
}
