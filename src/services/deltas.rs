//! Delta targets of a server-signed product (docs/design.md §1, "Delta targets"): compute the
//! patch from one listed release's image to another's, store it as a content-addressed blob,
//! and re-sign the product role listing it beside the images.
//!
//! The delta is computed with no lock held (seconds to minutes for large images); the signing
//! transaction then checks again that both releases are still listed and commits the row, the
//! role, snapshot and timestamp together. The server signs deltas only into a role it signs
//! itself: a manufacturer-signed product's deltas are computed and signed in its CI
//! (`submit_signed_delta` checks the role that lists one, as a publish's role is checked).

use std::time::Instant;

use serde::Serialize;
use utoipa::ToSchema;

use super::auth::Caller;
use super::image_repo::{IMAGE, commit_signed, commit_with_snapshot, next_version, sign_product_role};
use super::product_role::{Upload, apply_reconciled, check_role, reconcile, served_delegations};
use super::products::{MANUFACTURER_SIGNED, get_product};
use super::publish_release::{StoredBlob, require_active, store_blob};
use super::release_review::check_release_listed;
use super::{ServiceError, Services, delta_compute};
use crate::db::audit::{NewAudit, audit_insert};
use crate::db::deltas::{
    delta_find, delta_insert, delta_list_by_product, delta_pairs_settled, refusal_find, refusal_insert,
    releases_running,
};
use crate::db::entities::{delta_refusal, release, release_delta};
use crate::db::products::product_list;
use crate::db::releases::{release_find, release_list_by_ids, release_list_listed};
use crate::db::rollouts::rollout_release_ids_underway;
use crate::domain::delta;
use crate::domain::delta_policy::{Listed, ProductFacts, wanted_pairs};

/// A delta target, as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeltaView {
    /// The delta's target name, `{product}/{to}/{file}~from-{from}`.
    pub target_name: String,
    /// The release whose image it applies to.
    pub from_version: String,
    /// The release whose image it produces.
    pub to_version: String,
    /// `bsdiff-zstd` or `zstd-patch`.
    pub algorithm: String,
    /// The delta's length in bytes.
    pub length: i64,
    /// The full image's length in bytes, for comparison.
    pub image_length: i64,
    /// SHA-256 of the delta, hex.
    pub sha256: String,
    /// Whether the product's role lists it now: while both releases are listed.
    pub listed: bool,
}

/// Whether the delta is new.
#[derive(Debug)]
pub enum DeltaOutcome {
    /// Computed and signed now (201).
    Created(DeltaView),
    /// It already existed (200).
    Existing(DeltaView),
}

fn view(row: &release_delta::Model, from: &release::Model, to: &release::Model) -> DeltaView {
    DeltaView {
        target_name: row.target_name.clone(),
        from_version: from.version.clone(),
        to_version: to.version.clone(),
        algorithm: row.algorithm.clone(),
        length: row.length,
        image_length: to.length,
        sha256: row.sha256.clone(),
        listed: [from, to].iter().all(|r| r.yanked_at.is_none() && r.delisted_at.is_none()),
    }
}

/// A listed release of `product` at `version`, or the error that says why not.
async fn listed_release(
    db: &impl sea_orm::ConnectionTrait,
    product: &crate::db::entities::product::Model,
    version: &str,
) -> Result<release::Model, ServiceError> {
    let row = release_find(db, product.id, version).await?.ok_or_else(|| {
        ServiceError::not_found("unknown_release", format!("{} has no release {version:?}", product.name))
    })?;
    check_release_listed(product, &row, "ask for the delta again")?;
    Ok(row)
}

/// The error code of a pair whose delta is not worth publishing.
pub const NOT_WORTHWHILE: &str = "delta_not_worthwhile";

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The 409 of a delta that would save too little.
fn not_worthwhile(from: &str, to: &str, delta_length: i64, full_length: i64) -> ServiceError {
    ServiceError::conflict(
        NOT_WORTHWHILE,
        format!(
            "the delta from {from} to {to} is {delta_length} bytes, more than {}% of the compressed image \
             ({full_length} bytes): devices are better served by the full image",
            delta::MAX_SHARE_PERCENT
        ),
    )
}

fn to_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// Computes, stores and signs the delta from release `from` to release `to` of a server-signed
/// product; an existing delta of the same pair is returned as it is.
pub async fn create_delta(
    svc: &Services,
    caller: &Caller,
    product_name: &str,
    from: &str,
    to: &str,
) -> Result<DeltaOutcome, ServiceError> {
    caller.require_product(product_name)?;
    let product = get_product(svc, product_name).await?;
    require_active(&product)?;
    if product.signing_mode == MANUFACTURER_SIGNED {
        return Err(ServiceError::conflict(
            "manufacturer_signed",
            format!(
                "product {product_name} is manufacturer-signed: the server never signs into its role; compute and \
                 sign the delta with the product key (`patchgate release delta --key product.pem`)"
            ),
        ));
    }
    if from == to {
        return Err(ServiceError::invalid("same_release", format!("a delta from {from} to itself changes nothing")));
    }
    let source = listed_release(&svc.db, &product, from).await?;
    let target = listed_release(&svc.db, &product, to).await?;
    if let Some(existing) = delta_find(&svc.db, source.id, target.id).await? {
        return Ok(DeltaOutcome::Existing(view(&existing, &source, &target)));
    }
    // A delta is a pure function of the two images: a refused pair stays refused.
    if let Some(refused) = refusal_find(&svc.db, source.id, target.id).await? {
        return Err(not_worthwhile(from, to, refused.delta_length, refused.full_length));
    }
    let limit = svc.config.delta_max_image_bytes;
    for r in [&source, &target] {
        if u64::try_from(r.length).unwrap_or(u64::MAX) > limit {
            return Err(ServiceError::conflict(
                "image_too_large",
                format!(
                    "{} is {} bytes, above delta_max_image_bytes ({limit}): raise it in the configuration (computing a \
                     delta takes seconds per megabyte of a core)",
                    r.target_name, r.length
                ),
            ));
        }
    }
    let started = Instant::now();
    let stored = |r: &release::Model| (r.sha256.clone(), to_u64(r.length));
    let computed = delta_compute::compute_stored(&svc.store, stored(&source), stored(&target)).await?;
    let (patch_len, full, algorithm) = (computed.length, computed.full_compressed, computed.algorithm);
    tracing::info!(from = %source.target_name, to = %target.target_name, algorithm, delta = patch_len,
        full_compressed = full, seconds = started.elapsed().as_secs_f64(), "delta computed");
    if !delta::worthwhile(patch_len, full) {
        let (delta_length, full_length) = (to_i64(patch_len), to_i64(full));
        refusal_insert(
            &svc.db,
            delta_refusal::Model {
                id: 0,
                product_id: product.id,
                from_release_id: source.id,
                to_release_id: target.id,
                reason: NOT_WORTHWHILE.into(),
                delta_length,
                full_length,
                refused_at: svc.now_secs(),
            },
        )
        .await?;
        return Err(not_worthwhile(from, to, delta_length, full_length));
    }
    let body = tokio_util::io::ReaderStream::with_capacity(tokio::fs::File::from_std(computed.file), 256 * 1024);
    let blob = store_blob(svc, body, u64::MAX).await?;

    let txn = crate::db::begin_signing(&svc.db).await?;
    // Checked again under the signing lock: a yank or a retention pass may have run meanwhile.
    let source = listed_release(&txn, &product, from).await?;
    let target = listed_release(&txn, &product, to).await?;
    if let Some(existing) = delta_find(&txn, source.id, target.id).await? {
        return Ok(DeltaOutcome::Existing(view(&existing, &source, &target)));
    }
    if svc.store.blob_size(&blob.sha256).await?.is_none() {
        return Err(ServiceError::conflict("blob_missing", "the delta's file was removed meanwhile: ask again"));
    }
    let end = |r: &release::Model| patchgate_protocol::DeltaEnd {
        name: r.target_name.clone(),
        length: to_u64(r.length),
        sha256: r.sha256.clone(),
    };
    let custom = patchgate_protocol::DeltaCustom {
        delta: patchgate_protocol::DeltaOf { algorithm: algorithm.into(), source: end(&source), target: end(&target) },
    };
    let now = svc.clock.now();
    let stored = StoredDelta {
        algorithm,
        length: blob.length,
        sha256: &blob.sha256,
        sha512: &blob.sha512,
        custom: serde_json::to_string(&custom).map_err(anyhow::Error::new)?,
    };
    let row = insert_delta(&txn, &product, (&source, &target), stored, caller, now).await?;
    let role_version = next_version(&txn, IMAGE, product_name).await?;
    let listed = release_list_listed(&txn, product.id).await?;
    let role = sign_product_role(svc, &txn, &product, &listed, role_version, now).await?;
    commit_with_snapshot(&txn, svc, now, &[role]).await?;
    audit_delta(&txn, caller, now, &row, (&source, &target), serde_json::json!({"full_compressed_length": full}))
        .await?;
    commit_signed(svc, txn).await?;
    tracing::info!(target = %row.target_name, length = row.length, actor = %caller.name, "delta published");
    Ok(DeltaOutcome::Created(view(&row, &source, &target)))
}

/// A delta's file and signed `custom`, as stored.
struct StoredDelta<'a> {
    algorithm: &'a str,
    length: u64,
    sha256: &'a str,
    sha512: &'a str,
    /// The `DeltaCustom` JSON the role signs.
    custom: String,
}

/// Inserts the row of the delta from `ends.0` to `ends.1` (committed with the role listing it).
async fn insert_delta(
    txn: &impl sea_orm::ConnectionTrait,
    product: &crate::db::entities::product::Model,
    (source, target): (&release::Model, &release::Model),
    file: StoredDelta<'_>,
    caller: &Caller,
    now: jiff::Timestamp,
) -> Result<release_delta::Model, ServiceError> {
    let row = delta_insert(
        txn,
        release_delta::Model {
            id: 0,
            product_id: product.id,
            from_release_id: source.id,
            to_release_id: target.id,
            target_name: patchgate_protocol::delta_target_name(&target.target_name, &source.version),
            algorithm: file.algorithm.to_owned(),
            length: i64::try_from(file.length).map_err(anyhow::Error::new)?,
            sha256: file.sha256.to_owned(),
            sha512: file.sha512.to_owned(),
            custom: file.custom,
            created_by: caller.name.clone(),
            created_at: now.as_second(),
        },
    )
    .await?;
    Ok(row)
}

/// The audit record of a published delta; `extra` joins its fields.
async fn audit_delta(
    txn: &impl sea_orm::ConnectionTrait,
    caller: &Caller,
    now: jiff::Timestamp,
    row: &release_delta::Model,
    (source, target): (&release::Model, &release::Model),
    extra: serde_json::Value,
) -> Result<(), ServiceError> {
    let mut after = serde_json::json!({"delta": row.target_name, "from": source.version, "length": row.length,
        "sha256": row.sha256});
    if let (Some(after), serde_json::Value::Object(extra)) = (after.as_object_mut(), extra) {
        after.extend(extra);
    }
    audit_insert(
        txn,
        NewAudit {
            at: now.as_second(),
            actor: &caller.name,
            action: "release.delta",
            object: &format!("release:{}", target.target_name),
            before: None,
            after: Some(after.to_string()),
        },
    )
    .await?;
    Ok(())
}

/// A delta computed and signed in the manufacturer's CI (`patchgate release delta --key`): its
/// file, already stored, and the product role listing it, signed with the product key.
pub struct SignedDelta {
    /// The release whose image it applies to.
    pub from: String,
    /// The stored file.
    pub blob: StoredBlob,
    /// The product role's next version, listing the delta beside every current target.
    pub role: Vec<u8>,
}

/// Lists a manufacturer's delta from release `from` to release `to`: the role must verify under
/// the product's key, be the next version, and list this file as the delta between the two
/// listed images (same names, lengths and sha256 as stored), and nothing unknown to the server.
/// The server signs nothing but snapshot and timestamp.
pub async fn submit_signed_delta(
    svc: &Services,
    caller: &Caller,
    product_name: &str,
    to: &str,
    delta: SignedDelta,
) -> Result<DeltaOutcome, ServiceError> {
    caller.require_product(product_name)?;
    let from = delta.from.as_str();
    if from == to {
        return Err(ServiceError::invalid("same_release", format!("a delta from {from} to itself changes nothing")));
    }
    let product = get_product(svc, product_name).await?;
    require_active(&product)?;
    if product.signing_mode != MANUFACTURER_SIGNED {
        return Err(ServiceError::conflict(
            "server_signed",
            format!(
                "product {product_name} is server-signed: the server computes and signs its deltas (`patchgate release \
                 delta` without --key, or POST …/releases/{to}/deltas {{\"from\": …}})"
            ),
        ));
    }
    // The rule the server applies to its own deltas: at most 70 % of the compressed image (the
    // CLI checks it before signing; this holds it for any other tool too). Measured before the
    // signing lock is taken: compressing an image takes seconds.
    let image = listed_release(&svc.db, &product, to).await?;
    let full = delta_compute::compressed_len_stored(&svc.store, &image.sha256, to_u64(image.length)).await?;
    if !delta::worthwhile(delta.blob.length, full) {
        return Err(not_worthwhile(from, to, to_i64(delta.blob.length), to_i64(full)));
    }
    let txn = crate::db::begin_signing(&svc.db).await?;
    let source = listed_release(&txn, &product, from).await?;
    let target = listed_release(&txn, &product, to).await?;
    if let Some(existing) = delta_find(&txn, source.id, target.id).await? {
        if existing.sha256 == delta.blob.sha256 {
            return Ok(DeltaOutcome::Existing(view(&existing, &source, &target)));
        }
        return Err(ServiceError::conflict(
            "delta_exists",
            format!("the delta from {from} to {to} is already published with other bytes (sha256 {})", existing.sha256),
        ));
    }
    if svc.store.blob_size(&delta.blob.sha256).await?.is_none() {
        return Err(ServiceError::conflict("blob_missing", "the delta's file was removed meanwhile: send it again"));
    }
    let now = svc.clock.now();
    let role_version = next_version(&txn, IMAGE, product_name).await?;
    let checked = check_role(&delta.role, product_name, &served_delegations(&txn).await?, role_version, now)?;
    let name = patchgate_protocol::delta_target_name(&target.target_name, &source.version);
    let blob = &delta.blob;
    let upload = Upload { name: &name, length: blob.length, sha256: &blob.sha256, sha512: &blob.sha512 };
    let change = reconcile(&txn, &product, &checked, Some(&upload), &[]).await?;
    let listed = change.new_delta.as_ref().ok_or_else(|| {
        ServiceError::invalid("role_lacks_target", format!("the role does not list the uploaded delta as {name}"))
    })?;
    if listed.of.source.name != source.target_name || listed.of.target.name != target.target_name {
        return Err(ServiceError::invalid(
            "role_target_mismatch",
            format!("{name}: the role's custom names {} → {}", listed.of.source.name, listed.of.target.name),
        ));
    }
    let stored = StoredDelta {
        algorithm: &listed.of.algorithm,
        length: blob.length,
        sha256: &blob.sha256,
        sha512: &blob.sha512,
        custom: serde_json::to_string(&listed.custom).map_err(anyhow::Error::new)?,
    };
    let row = insert_delta(&txn, &product, (&source, &target), stored, caller, now).await?;
    apply_reconciled(&txn, &product, &change, &caller.name, now, role_version).await?;
    commit_with_snapshot(&txn, svc, now, &[checked.metadata]).await?;
    let yanked: Vec<&str> = change.yank.iter().map(|r| r.version.as_str()).collect();
    audit_delta(
        &txn,
        caller,
        now,
        &row,
        (&source, &target),
        serde_json::json!({"signed_by": "manufacturer", "yanked": yanked}),
    )
    .await?;
    commit_signed(svc, txn).await?;
    tracing::info!(target = %row.target_name, length = row.length, actor = %caller.name, "manufacturer-signed delta listed");
    Ok(DeltaOutcome::Created(view(&row, &source, &target)))
}

/// The deltas that produce release `to` of a product (listed or not), oldest first.
pub async fn list_deltas(svc: &Services, product_name: &str, to: &str) -> Result<Vec<DeltaView>, ServiceError> {
    let product = get_product(svc, product_name).await?;
    let target = release_find(&svc.db, product.id, to)
        .await?
        .ok_or_else(|| ServiceError::not_found("unknown_release", format!("{product_name} has no release {to:?}")))?;
    let rows: Vec<release_delta::Model> = delta_list_by_product(&svc.db, product.id)
        .await?
        .into_iter()
        .filter(|d| d.to_release_id == target.id)
        .collect();
    let sources = release_list_by_ids(&svc.db, rows.iter().map(|d| d.from_release_id).collect()).await?;
    Ok(rows
        .iter()
        .filter_map(|row| sources.iter().find(|r| r.id == row.from_release_id).map(|source| view(row, source, &target)))
        .collect())
}

/// A delta the policy asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WantedDelta {
    /// Product name.
    pub product: String,
    /// The release devices run.
    pub from: String,
    /// The release they are headed for.
    pub to: String,
}

/// The pairs the delta policy wants (`domain::delta_policy::wanted_pairs`) that have neither a
/// delta nor a remembered refusal, for every active server-signed product.
pub async fn wanted_deltas(svc: &Services) -> Result<Vec<WantedDelta>, ServiceError> {
    let cap = usize::try_from(svc.config.delta_sources_per_release).unwrap_or(usize::MAX);
    let mut wanted = Vec::new();
    for product in product_list(&svc.db).await? {
        if product.signing_mode == MANUFACTURER_SIGNED || require_active(&product).is_err() {
            continue;
        }
        let listed = release_list_listed(&svc.db, product.id).await?;
        let facts = ProductFacts {
            listed: listed
                .iter()
                .map(|r| Listed {
                    id: r.id,
                    fits: u64::try_from(r.length).is_ok_and(|n| n <= svc.config.delta_max_image_bytes),
                })
                .collect(),
            underway: rollout_release_ids_underway(&svc.db, product.id).await?,
            running: releases_running(&svc.db, product.id).await?,
            settled: delta_pairs_settled(&svc.db, product.id).await?,
        };
        let version = |id: i64| listed.iter().find(|r| r.id == id).map(|r| r.version.clone()).unwrap_or_default();
        wanted.extend(wanted_pairs(&facts, cap).into_iter().map(|(from, to)| WantedDelta {
            product: product.name.clone(),
            from: version(from),
            to: version(to),
        }));
    }
    Ok(wanted)
}
