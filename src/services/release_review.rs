//! What happens to a release after it is published: a second person approves it (products
//! with two-person approval), or it is withdrawn (yanked). For a manufacturer-signed product a
//! yank is a new role signed by the manufacturer that no longer lists the release; the server
//! only checks and serves it.

use jiff::Timestamp;
use sea_orm::Set;

use super::auth::Caller;
use super::image_repo::{IMAGE, commit_with_snapshot, next_version, sign_product_role};
use super::product_role::{Reconciled, apply_reconciled, check_role, floor_of, reconcile, served_delegations};
use super::products::{MANUFACTURER_SIGNED, get_product};
use super::publish_release::require_active;
use super::{ServiceError, Services};
use crate::db::audit::{NewAudit, audit_insert};
use crate::db::entities::release;
use crate::db::products::product_get_by_name;
use crate::db::releases::{release_find, release_list_listed, release_update};

fn audit<'a>(
    caller: &'a Caller,
    now: Timestamp,
    action: &'a str,
    object: &'a str,
    after: serde_json::Value,
) -> NewAudit<'a> {
    NewAudit { at: now.as_second(), actor: &caller.name, action, object, before: None, after: Some(after.to_string()) }
}

async fn find(
    db: &impl sea_orm::ConnectionTrait,
    product_id: i64,
    product: &str,
    version: &str,
) -> Result<release::Model, ServiceError> {
    release_find(db, product_id, version)
        .await?
        .ok_or_else(|| ServiceError::not_found("unknown_release", format!("{product} has no release {version:?}")))
}

/// Approves a release for rollouts; the approver must not be its publisher.
pub async fn approve_release(
    svc: &Services,
    caller: &Caller,
    product: &str,
    version: &str,
) -> Result<release::Model, ServiceError> {
    let product = get_product(svc, product).await?;
    let txn = crate::db::begin_signing(&svc.db).await?;
    let row = find(&txn, product.id, &product.name, version).await?;
    if row.approved_by.is_some() {
        return Ok(row);
    }
    if row.yanked_at.is_some() {
        return Err(ServiceError::conflict("release_yanked", format!("{} is yanked", row.target_name)));
    }
    if row.published_by == caller.name {
        return Err(ServiceError::conflict(
            "same_person",
            format!("{} was published by {}: another person must approve it", row.target_name, row.published_by),
        ));
    }
    let now = svc.clock.now();
    let mut active: release::ActiveModel = row.clone().into();
    active.approved_by = Set(Some(caller.name.clone()));
    active.approved_at = Set(Some(now.as_second()));
    let row = release_update(&txn, active).await?;
    let object = format!("release:{}", row.target_name);
    let after = serde_json::json!({"published_by": row.published_by, "approved_by": caller.name});
    audit_insert(&txn, audit(caller, now, "release.approve", &object, after)).await?;
    super::image_repo::commit_signed(svc, txn).await?;
    Ok(row)
}

/// Yanks a release of a server-signed product: the server signs a role without it.
pub async fn yank_release(
    svc: &Services,
    caller: &Caller,
    product: &str,
    version: &str,
) -> Result<release::Model, ServiceError> {
    caller.require_product(product)?;
    let txn = crate::db::begin_signing(&svc.db).await?;
    let product = product_get_by_name(&txn, product)
        .await?
        .ok_or_else(|| ServiceError::not_found("unknown_product", format!("product {product:?} does not exist")))?;
    if product.signing_mode == MANUFACTURER_SIGNED {
        return Err(ServiceError::conflict(
            "manufacturer_signed",
            format!(
                "product {} is manufacturer-signed: only its key can withdraw a release (`patchgate release yank --key`)",
                product.name
            ),
        ));
    }
    require_active(&product)?;
    let row = find(&txn, product.id, &product.name, version).await?;
    if row.yanked_at.is_some() {
        return Ok(row);
    }
    let now = svc.clock.now();
    let change = Reconciled { yank: vec![row.clone()], ..Reconciled::default() };
    let mut releases = release_list_listed(&txn, product.id).await?;
    releases.retain(|r| r.id != row.id);
    let change = Reconciled { floor: Some(floor_of(&releases)), ..change };
    let role_version = next_version(&txn, IMAGE, &product.name).await?;
    apply_reconciled(&txn, &product, &change, &caller.name, now, role_version).await?;
    let role = sign_product_role(svc, &txn, &product, &releases, role_version, now).await?;
    commit_with_snapshot(&txn, svc, now, &[role]).await?;
    let object = format!("release:{}", row.target_name);
    audit_insert(&txn, audit(caller, now, "release.yank", &object, serde_json::json!({"signing_mode": "server"})))
        .await?;
    super::image_repo::commit_signed(svc, txn).await?;
    find(&svc.db, product.id, &product.name, version).await
}

/// What a submitted product role changed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RoleOutcome {
    /// Product.
    pub product: String,
    /// The role's version, now served.
    pub version: u64,
    /// Versions it lists.
    pub listed: Vec<String>,
    /// Versions it yanked now.
    pub yanked: Vec<String>,
}

/// Makes a manufacturer-signed role current (a yank, or a renewal before expiry).
pub async fn submit_product_role(
    svc: &Services,
    caller: &Caller,
    product: &str,
    bytes: &[u8],
) -> Result<RoleOutcome, ServiceError> {
    caller.require_product(product)?;
    let txn = crate::db::begin_signing(&svc.db).await?;
    let product = product_get_by_name(&txn, product)
        .await?
        .ok_or_else(|| ServiceError::not_found("unknown_product", format!("product {product:?} does not exist")))?;
    if product.signing_mode != MANUFACTURER_SIGNED {
        return Err(ServiceError::conflict(
            "server_signed",
            format!("product {} is server-signed: the server signs its role", product.name),
        ));
    }
    require_active(&product)?;
    let now = svc.clock.now();
    let version = next_version(&txn, IMAGE, &product.name).await?;
    let checked = check_role(bytes, &product.name, &served_delegations(&txn).await?, version, now)?;
    let change = reconcile(&txn, &product, &checked, None, &[]).await?;
    apply_reconciled(&txn, &product, &change, &caller.name, now, version).await?;
    commit_with_snapshot(&txn, svc, now, &[checked.metadata]).await?;
    let yanked: Vec<String> = change.yank.iter().map(|r| r.version.clone()).collect();
    for r in &change.yank {
        let object = format!("release:{}", r.target_name);
        let after = serde_json::json!({"signing_mode": MANUFACTURER_SIGNED, "role_version": version});
        audit_insert(&txn, audit(caller, now, "release.yank", &object, after)).await?;
    }
    let object = format!("product:{}", product.name);
    let after = serde_json::json!({"role_version": version, "listed": change.listed, "yanked": yanked});
    audit_insert(&txn, audit(caller, now, "product.role", &object, after)).await?;
    super::image_repo::commit_signed(svc, txn).await?;
    Ok(RoleOutcome { product: product.name, version, listed: change.listed, yanked })
}

/// Refuses a release the product's role does not list now: yanked, or delisted by the retention
/// policy. `then` ends the delisted case's advice with what to do once the file is published
/// again (a rollout and a delta both need their releases listed).
pub fn check_release_listed(
    product: &crate::db::entities::product::Model,
    release: &release::Model,
    then: &str,
) -> Result<(), ServiceError> {
    if release.yanked_at.is_some() {
        return Err(ServiceError::conflict("release_yanked", format!("{} is yanked", release.target_name)));
    }
    if release.delisted_at.is_some() {
        return Err(ServiceError::conflict(
            "release_delisted",
            format!(
                "{} is stored but no longer listed in the {} role (retention policy): publish the same file again \
                 to list it, then {then}",
                release.target_name, product.name
            ),
        ));
    }
    Ok(())
}
