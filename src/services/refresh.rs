//! Keeping online metadata fresh, and saying when it is not.
//!
//! The refresh job re-signs a role once less than a third of its lifetime is left (see
//! `domain::expiry`); readiness fails when a served role is inside that margin anyway (the job
//! is not doing its work) or a root expires within 90 days (a ceremony is due).

use jiff::Timestamp;

use super::image_repo::{
    DIRECTOR, IMAGE, commit_timestamp, commit_with_snapshot, from_stored, next_version, sign_product_role,
    sign_top_targets,
};
use super::{ServiceError, Services};
use crate::db::metadata::{metadata_latest, metadata_latest_versions};
use crate::db::products::product_list;
use crate::db::releases::release_list_listed;
use crate::domain::expiry::{RoleKind, is_near_expiry, needs_refresh};

fn due(role: &str, expires: i64, now: Timestamp) -> bool {
    let expires = Timestamp::from_second(expires).unwrap_or(Timestamp::UNIX_EPOCH);
    role != "root" && needs_refresh(RoleKind::of_image_role(role), expires, now)
}

/// Re-signs every image role that is due; returns the roles re-signed (empty if none).
pub async fn refresh_expiring(svc: &Services) -> Result<Vec<String>, ServiceError> {
    let now = svc.clock.now();
    // A cheap look without the lock first: most ticks have nothing to do.
    let latest = metadata_latest_versions(&svc.db, IMAGE).await?;
    if !latest.iter().any(|(role, _, expires)| due(role, *expires, now)) {
        return Ok(Vec::new());
    }
    let txn = crate::db::begin_signing(&svc.db).await?;
    let latest = metadata_latest_versions(&txn, IMAGE).await?;
    let is_due = |name: &str| latest.iter().any(|(role, _, expires)| role == name && due(role, *expires, now));
    let mut changed = Vec::new();
    let products = product_list(&txn).await?;
    if is_due("targets") {
        if svc.keys.image_targets.is_some() {
            changed
                .push(sign_top_targets(&svc.keys, &products, next_version(&txn, IMAGE, "targets").await?, now).await?);
        } else {
            tracing::warn!(
                "the top-level targets role is near expiry and its key is offline: a delegations ceremony is due"
            );
        }
    }
    for product in products.iter().filter(|p| is_due(&p.name)) {
        if product.signing_mode != crate::services::products::SERVER_SIGNED {
            tracing::warn!(product = %product.name,
                "the product role is near expiry: the manufacturer must re-sign it (`patchgate product sign-role`)");
            continue;
        }
        let releases = release_list_listed(&txn, product.id).await?;
        let version = next_version(&txn, IMAGE, &product.name).await?;
        // One product whose key this instance cannot read must not stop the timestamp and
        // snapshot (which every device needs daily) from being refreshed.
        match sign_product_role(svc, &txn, product, &releases, version, now).await {
            Ok(role) => changed.push(role),
            Err(e) => tracing::error!(product = %product.name, error = %e, "cannot re-sign an expiring product role"),
        }
    }
    let mut refreshed: Vec<String> = changed.iter().map(|m| m.role.clone()).collect();
    if !changed.is_empty() || is_due("snapshot") {
        commit_with_snapshot(&txn, svc, now, &changed).await?;
        refreshed.extend(["snapshot".to_owned(), "timestamp".to_owned()]);
    } else if is_due("timestamp") {
        let snapshot = metadata_latest(&txn, IMAGE, "snapshot")
            .await?
            .ok_or_else(|| anyhow::anyhow!("the image repository has no snapshot"))?;
        commit_timestamp(&txn, svc, now, &from_stored(snapshot)).await?;
        refreshed.push("timestamp".to_owned());
    }
    super::image_repo::commit_signed(svc, txn).await?;
    if !refreshed.is_empty() {
        tracing::info!(roles = ?refreshed, "re-signed expiring metadata");
    }
    Ok(refreshed)
}

/// Served metadata that is near expiry, as sentences; empty when all is well.
pub async fn expiry_problems(svc: &Services) -> Result<Vec<String>, ServiceError> {
    let now = svc.clock.now();
    let mut problems = Vec::new();
    for repo in [IMAGE, DIRECTOR] {
        for (role, version, expires) in metadata_latest_versions(&svc.db, repo).await? {
            if repo == DIRECTOR && role != "root" {
                continue;
            }
            let expires = Timestamp::from_second(expires).unwrap_or(Timestamp::UNIX_EPOCH);
            if is_near_expiry(RoleKind::of_image_role(&role), expires, now) {
                problems.push(format!("{repo} {version}.{role}.json expires at {expires}"));
            }
        }
    }
    Ok(problems)
}
