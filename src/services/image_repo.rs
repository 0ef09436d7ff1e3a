//! Signing and storing the image repository's roles. Every change to a targets role goes
//! through [`commit_with_snapshot`], which also signs the snapshot and timestamp that cover it,
//! all inside the caller's signing transaction (see `db::begin_signing`), so clients only ever
//! see a complete, consistent repository.

use anyhow::Context as _;
use jiff::Timestamp;
use sea_orm::{ConnectionTrait, DatabaseTransaction};
use tough::schema::{RoleType, Root, Signed};

use super::{ServiceError, Services};
use crate::db::entities::{metadata as metadata_row, product, release};
use crate::db::metadata::{NewMetadata, metadata_insert, metadata_latest, metadata_latest_versions};
use crate::domain::expiry::{RoleKind, expires_at};
use crate::domain::names::{ProductName, delegation_pattern};
use crate::tuf::keydir::KeySet;
use crate::tuf::keys::{Signer, tuf_public_key};
use crate::tuf::metadata::{self, ProductDelegation, RoleSpec, TargetEntry};
use crate::tuf::sign::{SignedMetadata, sign_role};
use crate::tuf::verify::{parse_root, trusted_keyids};

/// The image repository's name in the metadata table.
pub const IMAGE: &str = "image";
/// The director repository's name in the metadata table.
pub const DIRECTOR: &str = "director";

/// Stores one signed role.
pub async fn store_role(
    db: &impl ConnectionTrait,
    repo: &str,
    role: &SignedMetadata,
    now: Timestamp,
) -> Result<(), ServiceError> {
    metadata_insert(
        db,
        NewMetadata {
            repo,
            role: &role.role,
            version: role.version,
            expires_at: role.expires.as_second(),
            body: role.bytes.clone(),
            sha256: role.sha256.clone(),
            created_at: now.as_second(),
        },
    )
    .await?;
    Ok(())
}

/// A stored role as signed metadata.
pub fn from_stored(row: metadata_row::Model) -> SignedMetadata {
    SignedMetadata::from_stored(row.role, row.version, row.expires_at, row.body, row.sha256)
}

/// The next version of `role` in `repo` (1 if none yet).
pub async fn next_version(db: &impl ConnectionTrait, repo: &str, role: &str) -> Result<u64, ServiceError> {
    let latest = metadata_latest(db, repo, role).await?;
    Ok(latest.map_or(1, |row| u64::try_from(row.version).unwrap_or(0) + 1))
}

/// Stores `changed` targets roles, then a new snapshot and timestamp covering the newest
/// version of every targets role.
pub async fn commit_with_snapshot(
    txn: &DatabaseTransaction,
    svc: &Services,
    now: Timestamp,
    changed: &[SignedMetadata],
) -> Result<(), ServiceError> {
    for role in changed {
        store_role(txn, IMAGE, role, now).await?;
    }
    let roles: Vec<(String, u64)> = metadata_latest_versions(txn, IMAGE)
        .await?
        .into_iter()
        .filter(|(role, _, _)| !matches!(role.as_str(), "root" | "snapshot" | "timestamp"))
        .map(|(role, version, _)| (role, u64::try_from(version).unwrap_or(0)))
        .collect();
    let version = next_version(txn, IMAGE, "snapshot").await?;
    let expires = expires_at(RoleKind::Snapshot, now);
    let body = metadata::snapshot(version, expires, &roles)?;
    let signer = image_online_signer(txn, svc, RoleType::Snapshot).await?;
    let snapshot = sign_role("snapshot", version, expires, body, &[&signer]).await?;
    store_role(txn, IMAGE, &snapshot, now).await?;
    commit_timestamp(txn, svc, now, &snapshot).await
}

/// Stores a new timestamp naming `snapshot`.
pub async fn commit_timestamp(
    txn: &DatabaseTransaction,
    svc: &Services,
    now: Timestamp,
    snapshot: &SignedMetadata,
) -> Result<(), ServiceError> {
    let version = next_version(txn, IMAGE, "timestamp").await?;
    let expires = expires_at(RoleKind::Timestamp, now);
    let body = metadata::timestamp(version, expires, snapshot)?;
    let signer = image_online_signer(txn, svc, RoleType::Timestamp).await?;
    let timestamp = sign_role("timestamp", version, expires, body, &[&signer]).await?;
    store_role(txn, IMAGE, &timestamp, now).await
}

/// The newest root of `repo`, parsed.
pub async fn current_root(db: &impl ConnectionTrait, repo: &str) -> Result<Signed<Root>, ServiceError> {
    let row = metadata_latest(db, repo, "root").await?.ok_or_else(|| {
        ServiceError::conflict(
            "not_initialised",
            format!("the {repo} repository has no root; run `patchgate repo init`"),
        )
    })?;
    parse_root(&row.body).map_err(|e| ServiceError::Internal(anyhow::anyhow!("the stored {repo} root: {e}")))
}

fn online_key_missing(repo: &str, role: &str, version: u64) -> ServiceError {
    ServiceError::conflict(
        "online_key_missing",
        format!(
            "none of this server's online keys is the {role} key {repo} root v{version} trusts: put that key in the keys \
             directory's online/ on every instance"
        ),
    )
}

/// The online key the current image root trusts for `role` (snapshot or timestamp).
pub async fn image_online_signer(
    db: &impl ConnectionTrait,
    svc: &Services,
    role: RoleType,
) -> Result<Signer, ServiceError> {
    let root = current_root(db, IMAGE).await?;
    let name = if role == RoleType::Snapshot { "snapshot" } else { "timestamp" };
    image_key_for(svc, &root.signed, role).ok_or_else(|| online_key_missing(IMAGE, name, root.signed.version.get()))
}

/// The online key the current director root trusts for targets, snapshot and timestamp.
pub async fn director_online_signer(db: &impl ConnectionTrait, svc: &Services) -> Result<Signer, ServiceError> {
    let root = current_root(db, DIRECTOR).await?;
    director_key_for(svc, &root.signed)
        .ok_or_else(|| online_key_missing(DIRECTOR, "targets/snapshot/timestamp", root.signed.version.get()))
}

/// The online key `root` (of the image repository) trusts for `role` (snapshot or timestamp).
pub fn image_key_for(svc: &Services, root: &Root, role: RoleType) -> Option<Signer> {
    let preferred = if role == RoleType::Snapshot { &svc.keys.image_snapshot } else { &svc.keys.image_timestamp };
    let trusted = trusted_keyids(root, role);
    svc.online_key(preferred, |id| trusted.contains(id))
}

/// The one online key the director `root` trusts for targets, snapshot and timestamp.
pub fn director_key_for(svc: &Services, root: &Root) -> Option<Signer> {
    let roles = [RoleType::Targets, RoleType::Snapshot, RoleType::Timestamp].map(|r| trusted_keyids(root, r));
    svc.online_key(&svc.keys.director, |id| roles.iter().all(|t| t.contains(id)))
}

/// Signs the top-level targets role delegating to every product in `products`.
pub async fn sign_top_targets(
    keys: &KeySet,
    products: &[product::Model],
    version: u64,
    now: Timestamp,
) -> Result<SignedMetadata, ServiceError> {
    let mut delegations = Vec::with_capacity(products.len());
    for p in products.iter().filter(|p| p.status == super::products::ACTIVE) {
        let name = ProductName::parse(&p.name).map_err(|e| anyhow::anyhow!("stored product: {e}"))?;
        delegations.push(ProductDelegation {
            name: p.name.clone(),
            key: tuf_public_key(&public_key_bytes(&p.public_key)?),
            pattern: delegation_pattern(&name),
        });
    }
    let expires = expires_at(RoleKind::TopTargets, now);
    let body = metadata::top_targets(version, expires, &delegations)?;
    let key = keys.targets_key().map_err(offline)?;
    Ok(sign_role("targets", version, expires, body, &[key]).await?)
}

/// An offline key this server does not hold: the change needs a ceremony.
pub fn offline(e: crate::tuf::keydir::KeyDirError) -> ServiceError {
    ServiceError::conflict("key_offline", e.to_string())
}

/// The raw bytes of a stored hex public key.
pub fn public_key_bytes(hex_key: &str) -> Result<[u8; 32], ServiceError> {
    let raw = hex::decode(hex_key).context("stored product public key is not hex")?;
    <[u8; 32]>::try_from(raw.as_slice())
        .map_err(|_| ServiceError::Internal(anyhow::anyhow!("stored product public key is not 32 bytes")))
}

/// The server-held key of a server-signed product.
pub fn product_signer(svc: &Services, product: &str) -> Result<Signer, ServiceError> {
    let path = svc.config.product_keys_dir().join(format!("{product}.pem"));
    let config = &svc.config;
    match crate::tuf::pkcs11::product_key(config.product_keys_pkcs11.as_deref(), config.pkcs11_sessions, product, false)
    {
        Some(Ok(key)) => return Ok(Signer::hsm(key)),
        // A product made while its key went to a file keeps signing with that file after
        // product keys move to a token.
        Some(Err(crate::tuf::pkcs11::HsmError::NoKey { .. })) if path.exists() => {}
        Some(Err(e)) => return Err(ServiceError::Internal(e.into())),
        None => {}
    }
    Signer::load(&path).map_err(|e| ServiceError::Internal(anyhow::Error::new(e)))
}

/// Signs a server-signed product's role listing every release in `releases` neither yanked nor
/// delisted, and every delta of the product (read on `db`, the caller's transaction) between two
/// of those.
pub async fn sign_product_role(
    svc: &Services,
    db: &impl ConnectionTrait,
    product: &product::Model,
    releases: &[release::Model],
    version: u64,
    now: Timestamp,
) -> Result<SignedMetadata, ServiceError> {
    let deltas = crate::db::deltas::delta_list_by_product(db, product.id).await?;
    let signer = product_signer(svc, &product.name)?;
    if signer.keyid() != product.keyid {
        return Err(ServiceError::Internal(anyhow::anyhow!(
            "the key file of product {} does not match its delegation",
            product.name
        )));
    }
    let entry =
        |name: &str, length: i64, sha256: &str, sha512: &str, custom: &str| -> Result<TargetEntry, ServiceError> {
            Ok(TargetEntry {
                name: name.to_owned(),
                length: u64::try_from(length).unwrap_or(0),
                sha256: sha256.to_owned(),
                sha512: sha512.to_owned(),
                custom: serde_json::from_str(custom).with_context(|| format!("stored custom of {name}"))?,
            })
        };
    let listed: Vec<&release::Model> =
        releases.iter().filter(|r| r.yanked_at.is_none() && r.delisted_at.is_none()).collect();
    let ids: std::collections::HashSet<i64> = listed.iter().map(|r| r.id).collect();
    let mut entries = Vec::with_capacity(listed.len());
    for r in &listed {
        entries.push(entry(&r.target_name, r.length, &r.sha256, &r.sha512, &r.custom)?);
    }
    // A delta is listed while both of its releases are.
    for d in deltas.iter().filter(|d| ids.contains(&d.from_release_id) && ids.contains(&d.to_release_id)) {
        entries.push(entry(&d.target_name, d.length, &d.sha256, &d.sha512, &d.custom)?);
    }
    let expires = expires_at(RoleKind::Product, now);
    let body = metadata::product_targets(version, expires, &entries)?;
    Ok(sign_role(&product.name, version, expires, body, &[&signer]).await?)
}

/// Signs image root `version` listing the keys of `keys`, with signatures from `signers`.
pub async fn sign_image_root(
    keys: &KeySet,
    version: u64,
    now: Timestamp,
    signers: &[&Signer],
) -> Result<SignedMetadata, ServiceError> {
    let root_keys: Vec<_> = keys.image_root.iter().map(Signer::public_key).collect();
    let targets = [keys.targets_key().map_err(offline)?.public_key()];
    let snapshot = [keys.image_snapshot.public_key()];
    let timestamp = [keys.image_timestamp.public_key()];
    let expires = expires_at(RoleKind::Root, now);
    let body = metadata::root(
        version,
        expires,
        &[
            RoleSpec { role: RoleType::Root, keys: &root_keys, threshold: keys.image_root_threshold },
            RoleSpec { role: RoleType::Targets, keys: &targets, threshold: 1 },
            RoleSpec { role: RoleType::Snapshot, keys: &snapshot, threshold: 1 },
            RoleSpec { role: RoleType::Timestamp, keys: &timestamp, threshold: 1 },
        ],
    )?;
    Ok(sign_role("root", version, expires, body, signers).await?)
}

/// Signs director root `version`: the director root key for root, the online director key for
/// targets, snapshot and timestamp (Uptane allows one online key for all three).
pub async fn sign_director_root(keys: &KeySet, version: u64, now: Timestamp) -> Result<SignedMetadata, ServiceError> {
    let root_signer = keys.director_root_key().map_err(offline)?;
    let root_key = [root_signer.public_key()];
    let online = [keys.director.public_key()];
    let expires = expires_at(RoleKind::Root, now);
    let body = metadata::root(
        version,
        expires,
        &[
            RoleSpec { role: RoleType::Root, keys: &root_key, threshold: 1 },
            RoleSpec { role: RoleType::Targets, keys: &online, threshold: 1 },
            RoleSpec { role: RoleType::Snapshot, keys: &online, threshold: 1 },
            RoleSpec { role: RoleType::Timestamp, keys: &online, threshold: 1 },
        ],
    )?;
    Ok(sign_role("root", version, expires, body, &[root_signer]).await?)
}

/// Commits a transaction from [`crate::db::begin_signing`] and then drops what it made stale
/// from this instance's caches (`timestamp.json`): clients see the new metadata at once.
pub async fn commit_signed(svc: &Services, txn: sea_orm::DatabaseTransaction) -> Result<(), ServiceError> {
    txn.commit().await?;
    svc.caches.invalidate_repo();
    Ok(())
}
