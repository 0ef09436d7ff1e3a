//! Key ceremonies: changes to a root or to the top-level targets role, signed by key holders
//! the server never meets. `prepare_*` builds the unsigned next version from what is served;
//! the holders sign it offline (`patchgate repo sign`), one after another; `submit` checks it
//! the way clients will (root chain and thresholds, delegations that name real products with
//! their keys, product roles under the new delegations) and only then makes it current, with a
//! fresh snapshot and timestamp signed by whichever online keys the new root trusts.

use std::collections::{BTreeMap, HashMap};

use jiff::Timestamp;
use sea_orm::DatabaseTransaction;
use tough::schema::key::Key;
use tough::schema::{PathSet, RoleType, Root, Signed, Targets};

use super::auth::Caller;
use super::image_repo::{
    DIRECTOR, IMAGE, commit_with_snapshot, current_root, director_key_for, image_key_for, next_version, store_role,
};
use super::product_role::{apply_reconciled, check_role, reconcile, served_delegations};
use super::products::{ACTIVE, MANUFACTURER_SIGNED, first_role};
use super::{ServiceError, Services};
use crate::db::audit::{NewAudit, audit_insert};
use crate::db::entities::product;
use crate::db::metadata::metadata_latest;
use crate::db::products::{product_clear_pending, product_list, product_update};
use crate::domain::expiry::{RoleKind, expires_at};
use crate::domain::names::{ProductName, delegation_pattern};
use crate::tuf::keys::{key_id, tuf_public_key};
use crate::tuf::metadata::{self, ProductDelegation, RoleSpec};
use crate::tuf::sign::SignedMetadata;
use crate::tuf::verify::{parse_root, verify_root_step};

fn invalid(code: &'static str, message: impl Into<String>) -> ServiceError {
    ServiceError::invalid(code, message)
}

fn check_repo(repo: &str) -> Result<(), ServiceError> {
    if repo == IMAGE || repo == DIRECTOR {
        Ok(())
    } else {
        Err(invalid("invalid_repo", format!("repo must be image or director, not {repo:?}")))
    }
}

/// Changes for the next root. Keys are raw ed25519 public keys.
#[derive(Debug, Default, Clone)]
pub struct RootChange {
    /// New root keys.
    pub add_root_keys: Vec<[u8; 32]>,
    /// Root key ids to drop.
    pub remove_root_keys: Vec<String>,
    /// New root threshold (default: unchanged).
    pub root_threshold: Option<u64>,
    /// Image: the new top-level targets key.
    pub targets_key: Option<[u8; 32]>,
    /// Image: the new snapshot key.
    pub snapshot_key: Option<[u8; 32]>,
    /// Image: the new timestamp key.
    pub timestamp_key: Option<[u8; 32]>,
    /// Director: the new online key (targets, snapshot and timestamp).
    pub online_key: Option<[u8; 32]>,
}

fn keys_of(root: &Root, role: RoleType) -> Vec<Key> {
    root.roles
        .get(&role)
        .map(|r| r.keyids.iter().filter_map(|id| root.keys.get(id).cloned()).collect())
        .unwrap_or_default()
}

fn envelope<T: serde::Serialize>(signed: &T) -> Result<serde_json::Value, ServiceError> {
    Ok(serde_json::json!({"signed": serde_json::to_value(signed).map_err(anyhow::Error::new)?, "signatures": []}))
}

/// The unsigned next root of `repo` with `change` applied.
pub async fn prepare_root(svc: &Services, repo: &str, change: RootChange) -> Result<serde_json::Value, ServiceError> {
    check_repo(repo)?;
    let current = current_root(&svc.db, repo).await?.signed;
    let mut root_keys = keys_of(&current, RoleType::Root);
    for id in &change.remove_root_keys {
        let before = root_keys.len();
        root_keys.retain(|k| &key_id(k) != id);
        if root_keys.len() == before {
            return Err(invalid("unknown_key", format!("{repo} root v{} has no root key {id}", current.version)));
        }
    }
    for raw in &change.add_root_keys {
        let key = tuf_public_key(raw);
        if root_keys.iter().any(|k| key_id(k) == key_id(&key)) {
            return Err(invalid("duplicate_key", format!("root key {} is already in the root", key_id(&key))));
        }
        root_keys.push(key);
    }
    let threshold =
        change.root_threshold.unwrap_or_else(|| current.roles.get(&RoleType::Root).map_or(1, |r| r.threshold.get()));
    if threshold == 0 || threshold > root_keys.len() as u64 {
        return Err(invalid(
            "invalid_threshold",
            format!("root threshold {threshold} must be between 1 and the {} root keys", root_keys.len()),
        ));
    }
    let replace =
        |new: Option<[u8; 32]>, role| new.map_or_else(|| keys_of(&current, role), |k| vec![tuf_public_key(&k)]);
    let (targets, snapshot, timestamp) = if repo == IMAGE {
        if change.online_key.is_some() {
            return Err(invalid(
                "invalid_change",
                "online_key is for the director; the image repository has snapshot_key and timestamp_key",
            ));
        }
        (
            replace(change.targets_key, RoleType::Targets),
            replace(change.snapshot_key, RoleType::Snapshot),
            replace(change.timestamp_key, RoleType::Timestamp),
        )
    } else {
        if change.targets_key.is_some() || change.snapshot_key.is_some() || change.timestamp_key.is_some() {
            return Err(invalid("invalid_change", "the director has one online key: use online_key"));
        }
        (
            replace(change.online_key, RoleType::Targets),
            replace(change.online_key, RoleType::Snapshot),
            replace(change.online_key, RoleType::Timestamp),
        )
    };
    let version = current.version.get() + 1;
    let root = metadata::root(
        version,
        expires_at(RoleKind::Root, svc.clock.now()),
        &[
            RoleSpec { role: RoleType::Root, keys: &root_keys, threshold },
            RoleSpec { role: RoleType::Targets, keys: &targets, threshold: 1 },
            RoleSpec { role: RoleType::Snapshot, keys: &snapshot, threshold: 1 },
            RoleSpec { role: RoleType::Timestamp, keys: &timestamp, threshold: 1 },
        ],
    )?;
    envelope(&root)
}

/// The unsigned next top-level targets role: one delegation per product (active and pending),
/// with `product_keys` replacing a product's key (a product key rotation).
pub async fn prepare_delegations(
    svc: &Services,
    product_keys: &HashMap<String, [u8; 32]>,
) -> Result<serde_json::Value, ServiceError> {
    let products = product_list(&svc.db).await?;
    for name in product_keys.keys() {
        if !products.iter().any(|p| &p.name == name) {
            return Err(ServiceError::not_found("unknown_product", format!("product {name:?} does not exist")));
        }
    }
    let mut delegations = Vec::with_capacity(products.len());
    for p in &products {
        let name = ProductName::parse(&p.name).map_err(|e| anyhow::anyhow!("stored product: {e}"))?;
        let key = match product_keys.get(&p.name) {
            Some(raw) => tuf_public_key(raw),
            None => tuf_public_key(&super::image_repo::public_key_bytes(&p.public_key)?),
        };
        delegations.push(ProductDelegation { name: p.name.clone(), key, pattern: delegation_pattern(&name) });
    }
    let version = next_version(&svc.db, IMAGE, "targets").await?;
    let targets = metadata::top_targets(version, expires_at(RoleKind::TopTargets, svc.clock.now()), &delegations)?;
    envelope(&targets)
}

/// The canonical bytes of submitted metadata (what clients will be served).
fn canonical(role: &str, value: &serde_json::Value) -> Result<Vec<u8>, ServiceError> {
    patchgate_protocol::canonical_json(value)
        .map_err(|e| invalid("invalid_metadata", format!("the {role} metadata cannot be canonical JSON: {e}")))
}

fn signed_metadata(role: &str, version: u64, expires: Timestamp, bytes: Vec<u8>) -> SignedMetadata {
    let sha256 = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
    SignedMetadata { role: role.to_owned(), version, expires, bytes, sha256 }
}

/// One role stored by a ceremony.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StoredRole {
    /// Role name.
    pub role: String,
    /// Its version.
    pub version: u64,
}

/// Checks and makes current the metadata a ceremony produced: `root`, `targets` and product
/// roles (keyed by role name) for the image repository; `root` for the director.
pub async fn submit(
    svc: &Services,
    caller: &Caller,
    repo: &str,
    mut roles: BTreeMap<String, serde_json::Value>,
) -> Result<Vec<StoredRole>, ServiceError> {
    check_repo(repo)?;
    if roles.is_empty() {
        return Err(invalid("no_metadata", "nothing to submit: roles is empty"));
    }
    let txn = crate::db::begin_signing(&svc.db).await?;
    let now = svc.clock.now();
    let mut stored = Vec::new();
    let root = match roles.remove("root") {
        Some(value) => Some(submit_root(&txn, svc, repo, &value, now).await?),
        None => None,
    };
    if let Some((root, meta)) = &root {
        stored.push(StoredRole { role: "root".into(), version: meta.version });
        if repo == DIRECTOR {
            // Every device's roles are checked at its next report and re-signed if the online
            // key changed (see services::director).
            crate::db::devices::device_refresh_all_director(&txn).await?;
        }
        let _ = root;
    }
    if repo == DIRECTOR {
        if let Some(role) = roles.keys().next() {
            return Err(invalid("invalid_role", format!("a director ceremony changes only its root, not {role:?}")));
        }
    } else {
        stored.extend(submit_image_roles(&txn, svc, root.as_ref().map(|(r, _)| r), roles, now).await?);
    }
    let after = serde_json::json!({"repo": repo, "stored": stored});
    let audit = NewAudit {
        at: now.as_second(),
        actor: &caller.name,
        action: "repo.ceremony",
        object: &format!("{repo}:metadata"),
        before: None,
        after: Some(after.to_string()),
    };
    audit_insert(&txn, audit).await?;
    super::image_repo::commit_signed(svc, txn).await?;
    tracing::info!(repo, roles = ?stored.iter().map(|s| format!("{} v{}", s.role, s.version)).collect::<Vec<_>>(), "key ceremony landed");
    Ok(stored)
}

async fn submit_root(
    txn: &DatabaseTransaction,
    svc: &Services,
    repo: &str,
    value: &serde_json::Value,
    now: Timestamp,
) -> Result<(Signed<Root>, SignedMetadata), ServiceError> {
    let bytes = canonical("root", value)?;
    let current = metadata_latest(txn, repo, "root")
        .await?
        .ok_or_else(|| ServiceError::conflict("not_initialised", format!("the {repo} repository has no root")))?;
    let next = parse_root(&bytes).map_err(|e| invalid("invalid_metadata", e.to_string()))?;
    verify_root_step(&current.body, &bytes).map_err(|e| {
        ServiceError::conflict(
            "root_chain_broken",
            format!(
                "{repo} root v{} would be refused by clients holding v{}: {e}",
                next.signed.version, current.version
            ),
        )
    })?;
    if next.signed.expires <= now {
        return Err(invalid(
            "expired_metadata",
            format!("{repo} root v{} expired at {}", next.signed.version, next.signed.expires),
        ));
    }
    let missing = if repo == IMAGE {
        [RoleType::Snapshot, RoleType::Timestamp]
            .into_iter()
            .filter(|r| image_key_for(svc, &next.signed, *r).is_none())
            .map(|r| format!("{r:?}"))
            .collect::<Vec<_>>()
    } else if director_key_for(svc, &next.signed).is_none() {
        vec!["director online".to_owned()]
    } else {
        Vec::new()
    };
    if !missing.is_empty() {
        return Err(ServiceError::conflict(
            "online_key_missing",
            format!(
                "{repo} root v{} names {} key(s) this server does not hold: put the new key file in the keys directory's \
                 online/ on every instance (and restart them) before submitting",
                next.signed.version,
                missing.join(", ")
            ),
        ));
    }
    let meta = signed_metadata("root", next.signed.version.get(), next.signed.expires, bytes);
    store_role(txn, repo, &meta, now).await?;
    Ok((next, meta))
}

fn delegated_key_hex(targets: &Targets, d: &tough::schema::DelegatedRole) -> Result<String, ServiceError> {
    let bad = |why: &str| invalid("invalid_delegation", format!("delegation {}: {why}", d.name));
    if d.keyids.len() != 1 || d.threshold.get() != 1 {
        return Err(bad("a product is delegated to exactly one key with threshold 1"));
    }
    if !d.terminating {
        return Err(bad("product delegations are terminating"));
    }
    let name = ProductName::parse(&d.name).map_err(|e| bad(&e.to_string()))?;
    let expected = serde_json::json!([delegation_pattern(&name)]);
    match &d.paths {
        PathSet::Paths(paths) if serde_json::to_value(paths).ok() == Some(expected) => {}
        _ => return Err(bad(&format!("paths must be exactly [\"{}\"]", delegation_pattern(&name)))),
    }
    let key = targets
        .delegations
        .as_ref()
        .and_then(|ds| ds.keys.get(&d.keyids[0]))
        .ok_or_else(|| bad("its key is not listed"))?;
    match key {
        Key::Ed25519 { keyval, .. } => Ok(hex::encode(keyval.public.as_ref())),
        _ => Err(bad("product keys are ed25519")),
    }
}

async fn submit_image_roles(
    txn: &DatabaseTransaction,
    svc: &Services,
    new_root: Option<&Signed<Root>>,
    mut roles: BTreeMap<String, serde_json::Value>,
    now: Timestamp,
) -> Result<Vec<StoredRole>, ServiceError> {
    let root = match new_root {
        Some(r) => r.clone(),
        None => current_root(txn, IMAGE).await?,
    };
    let mut stored = Vec::new();
    let mut changed: Vec<SignedMetadata> = Vec::new();
    let products = product_list(txn).await?;
    let by_name: HashMap<&str, &product::Model> = products.iter().map(|p| (p.name.as_str(), p)).collect();
    let delegations = match roles.remove("targets") {
        Some(value) => {
            let bytes = canonical("targets", &value)?;
            let signed: Signed<Targets> = serde_json::from_slice(&bytes)
                .map_err(|e| invalid("invalid_metadata", format!("not a signed targets role: {e}")))?;
            let version = next_version(txn, IMAGE, "targets").await?;
            if signed.signed.version.get() != version {
                return Err(ServiceError::conflict(
                    "role_version_conflict",
                    format!("the targets role is version {}, the next version is {version}", signed.signed.version),
                ));
            }
            root.signed.verify_role(&signed).map_err(|e| {
                invalid(
                    "bad_signature",
                    format!(
                        "targets v{version} is not signed by a threshold of the targets keys root v{} trusts: {e}",
                        root.signed.version
                    ),
                )
            })?;
            if signed.signed.expires <= now {
                return Err(invalid(
                    "expired_metadata",
                    format!("targets v{version} expired at {}", signed.signed.expires),
                ));
            }
            if !signed.signed.targets.is_empty() {
                return Err(invalid(
                    "invalid_metadata",
                    "the top-level targets role lists no targets of its own; products do",
                ));
            }
            let ds = signed.signed.delegations.clone().unwrap_or_default();
            let mut seen = std::collections::HashSet::new();
            for d in &ds.roles {
                if !seen.insert(d.name.clone()) {
                    return Err(invalid("invalid_delegation", format!("{} is delegated twice", d.name)));
                }
                let product = by_name.get(d.name.as_str()).ok_or_else(|| {
                    invalid("unknown_product", format!("the delegation names {:?}, which is not a product", d.name))
                })?;
                let key = delegated_key_hex(&signed.signed, d)?;
                if product.status != ACTIVE {
                    if key != product.public_key {
                        return Err(ServiceError::conflict(
                            "key_mismatch",
                            format!("{} is delegated to another key than the one it was created with", d.name),
                        ));
                    }
                    // Activation: its first role becomes servable with this delegation.
                    changed.push(first_role(svc, txn, product, now).await?);
                    product_clear_pending(txn, product.id).await?;
                } else if key != product.public_key {
                    rotate_product_key(txn, product, &key, &ds, roles.remove(&d.name), now, &mut changed).await?;
                }
            }
            if let Some(p) = products.iter().find(|p| p.status == ACTIVE && !seen.contains(&p.name)) {
                return Err(ServiceError::conflict(
                    "delegation_missing",
                    format!("targets v{version} drops product {}, whose devices would lose their updates", p.name),
                ));
            }
            let meta = signed_metadata("targets", version, signed.signed.expires, bytes);
            stored.push(StoredRole { role: "targets".into(), version });
            changed.insert(0, meta);
            ds
        }
        None => {
            if new_root.is_some() {
                // A root that changes the targets keys must come with targets signed by them.
                let row =
                    metadata_latest(txn, IMAGE, "targets").await?.ok_or_else(|| anyhow::anyhow!("no targets role"))?;
                let served: Signed<Targets> = serde_json::from_slice(&row.body).map_err(anyhow::Error::new)?;
                root.signed.verify_role(&served).map_err(|_| {
                    ServiceError::conflict(
                        "targets_resign_needed",
                        format!(
                            "root v{} changes the top-level targets key: submit it together with targets v{} signed by the new key",
                            root.signed.version,
                            row.version + 1
                        ),
                    )
                })?;
            }
            served_delegations(txn).await?
        }
    };
    for (name, value) in roles {
        let product = by_name
            .get(name.as_str())
            .ok_or_else(|| invalid("unknown_role", format!("{name:?} is not a product role")))?;
        if product.signing_mode != MANUFACTURER_SIGNED || product.status != ACTIVE {
            return Err(invalid(
                "invalid_role",
                format!("{name}'s role cannot be submitted here: it is not an active manufacturer-signed product"),
            ));
        }
        let bytes = canonical(&name, &value)?;
        let version = next_version(txn, IMAGE, &name).await?;
        let checked = check_role(&bytes, &name, &delegations, version, now)?;
        let change = reconcile(txn, product, &checked, None, &[]).await?;
        apply_reconciled(txn, product, &change, "ceremony", now, version).await?;
        changed.push(checked.metadata);
    }
    stored.extend(
        changed.iter().filter(|m| m.role != "targets").map(|m| StoredRole { role: m.role.clone(), version: m.version }),
    );
    commit_with_snapshot(txn, svc, now, &changed).await?;
    Ok(stored)
}

/// A product's key changes with a new delegation: its role must come along, signed by the new
/// key (else every device of the product would be stranded until the next publish).
async fn rotate_product_key(
    txn: &DatabaseTransaction,
    product: &product::Model,
    key_hex: &str,
    delegations: &tough::schema::Delegations,
    role: Option<serde_json::Value>,
    now: Timestamp,
    changed: &mut Vec<SignedMetadata>,
) -> Result<(), ServiceError> {
    if product.signing_mode != MANUFACTURER_SIGNED {
        return Err(ServiceError::conflict(
            "server_signed",
            format!("{} is server-signed: its key cannot be rotated by ceremony", product.name),
        ));
    }
    let value = role.ok_or_else(|| {
        ServiceError::conflict(
            "product_role_needed",
            format!(
                "the delegation gives {} a new key: submit its role re-signed with that key in the same request \
                 (`patchgate product sign-role --key NEW --current-key OLD --out FILE`, then `repo submit … {}=FILE`)",
                product.name, product.name
            ),
        )
    })?;
    let bytes = canonical(&product.name, &value)?;
    let version = next_version(txn, IMAGE, &product.name).await?;
    let checked = check_role(&bytes, &product.name, delegations, version, now)?;
    let change = reconcile(txn, product, &checked, None, &[]).await?;
    apply_reconciled(txn, product, &change, "ceremony", now, version).await?;
    let raw = hex::decode(key_hex).map_err(anyhow::Error::new)?;
    let raw: [u8; 32] = raw.as_slice().try_into().map_err(anyhow::Error::new)?;
    let mut active: product::ActiveModel = product.clone().into();
    active.public_key = sea_orm::Set(key_hex.to_owned());
    active.keyid = sea_orm::Set(key_id(&tuf_public_key(&raw)));
    product_update(txn, active).await?;
    changed.push(checked.metadata);
    Ok(())
}
