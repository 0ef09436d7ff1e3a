//! Product roles signed by the manufacturer's own key, checked before they become current.
//!
//! The server cannot sign a manufacturer-signed product's role; it can only refuse one. A
//! submitted role must verify under the product's delegation, be exactly the next version,
//! delegate nothing, and list only targets whose bytes the server holds, with the same length,
//! hashes and `custom` as stored (or, for a publish, the file just uploaded). A delta it lists
//! must join two images it lists (`~from-` names; docs/design.md §1, "Delta targets"). Whatever
//! the role no longer lists is yanked, unless the submitter asked for it to be delisted and the retention
//! policy (`super::retention`) lets it go; the product's security floor is the highest
//! `rollback_floor` it lists. The same reconciliation serves server-signed products, whose role the server signs.

use std::collections::{HashMap, HashSet};

use jiff::Timestamp;
use patchgate_protocol::TargetCustom;
use sea_orm::{ConnectionTrait, DatabaseTransaction, Set};
use tough::schema::{Delegations, Signed, Targets};

use super::ServiceError;
use super::image_repo::public_key_bytes;
use crate::db::entities::{product, release};
use crate::db::releases::{release_list_by_targets, release_list_listed, release_update};
use crate::domain::names::{FirmwareVersion, ProductName, delegation_pattern};
use crate::tuf::keys::tuf_public_key;
use crate::tuf::metadata::{ProductDelegation, top_targets};
use crate::tuf::sign::SignedMetadata;

/// Roles signed outside the server may not live longer than this (a forgotten role must not
/// stay valid for years after its key is rotated away).
const MAX_ROLE_LIFETIME_DAYS: i64 = 366;

/// One target a product role lists.
#[derive(Debug, Clone)]
pub struct ListedTarget {
    /// `{product}/{version}/{file}`.
    pub name: String,
    /// Bytes.
    pub length: u64,
    /// Hex.
    pub sha256: String,
    /// Hex.
    pub sha512: String,
    /// The signed `custom`, as signed.
    pub custom: serde_json::Map<String, serde_json::Value>,
    /// `custom.version`.
    pub version: FirmwareVersion,
    /// `custom.rollback_floor`.
    pub floor: FirmwareVersion,
}

/// One delta target a product role lists (docs/design.md §1, "Delta targets").
#[derive(Debug, Clone)]
pub struct ListedDelta {
    /// `{product}/{to}/{file}~from-{from}`.
    pub name: String,
    /// Bytes.
    pub length: u64,
    /// Hex.
    pub sha256: String,
    /// Hex.
    pub sha512: String,
    /// The signed `custom`, as signed.
    pub custom: serde_json::Map<String, serde_json::Value>,
    /// What the custom says: the algorithm and both images.
    pub of: patchgate_protocol::DeltaOf,
}

/// A product role that verified, in the canonical bytes clients will receive.
#[derive(Debug, Clone)]
pub struct CheckedRole {
    /// The role as it will be stored and served.
    pub metadata: SignedMetadata,
    /// The release images it lists.
    pub targets: Vec<ListedTarget>,
    /// The deltas it lists.
    pub deltas: Vec<ListedDelta>,
}

fn invalid(code: &'static str, message: impl Into<String>) -> ServiceError {
    ServiceError::invalid(code, message)
}

/// The delegation a product's role verifies under: its registered key for `{product}/*/*`.
pub fn product_delegation(product: &product::Model) -> Result<Delegations, ServiceError> {
    let name = ProductName::parse(&product.name).map_err(|e| anyhow::anyhow!("stored product: {e}"))?;
    let delegation = ProductDelegation {
        name: product.name.clone(),
        key: tuf_public_key(&public_key_bytes(&product.public_key)?),
        pattern: delegation_pattern(&name),
    };
    let targets = top_targets(1, Timestamp::UNIX_EPOCH, &[delegation])?;
    Ok(targets.delegations.unwrap_or_default())
}

/// The delegations of the top-level targets role clients are served now.
pub async fn served_delegations(db: &impl ConnectionTrait) -> Result<Delegations, ServiceError> {
    let row = crate::db::metadata::metadata_latest(db, super::image_repo::IMAGE, "targets")
        .await?
        .ok_or_else(|| ServiceError::conflict("not_initialised", "the image repository has no targets role yet"))?;
    let signed: Signed<Targets> =
        serde_json::from_slice(&row.body).map_err(|e| anyhow::anyhow!("the stored targets role: {e}"))?;
    Ok(signed.signed.delegations.unwrap_or_default())
}

/// The highest `rollback_floor` among releases that are listed (neither yanked nor delisted).
pub fn floor_of(releases: &[release::Model]) -> FirmwareVersion {
    releases
        .iter()
        .filter(|r| r.yanked_at.is_none() && r.delisted_at.is_none())
        .filter_map(|r| serde_json::from_str::<TargetCustom>(&r.custom).ok())
        .filter_map(|c| FirmwareVersion::parse(&c.rollback_floor).ok())
        .max()
        .unwrap_or_else(FirmwareVersion::zero)
}

/// Parses a signed product role and checks everything that does not need the database:
/// signature under `delegations`, version, expiry, no delegations, well-formed targets.
pub fn check_role(
    bytes: &[u8],
    product: &str,
    delegations: &Delegations,
    expected_version: u64,
    now: Timestamp,
) -> Result<CheckedRole, ServiceError> {
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| invalid("invalid_role", format!("the {product} role is not JSON: {e}")))?;
    let signed: Signed<Targets> = serde_json::from_value(value.clone())
        .map_err(|e| invalid("invalid_role", format!("the {product} role is not a signed TUF targets role: {e}")))?;
    delegations.verify_role(&signed, product).map_err(|e| {
        invalid("bad_role_signature", format!("the {product} role is not signed by the product's delegated key: {e}"))
    })?;
    let role = &signed.signed;
    let version = role.version.get();
    if version != expected_version {
        return Err(ServiceError::conflict(
            "role_version_conflict",
            format!(
                "the {product} role is version {version}, the next version is {expected_version} (another publish or \
                 yank landed first: build on the current role and sign again)"
            ),
        ));
    }
    if !role.spec_version.starts_with("1.") {
        return Err(invalid("invalid_role", format!("spec_version {:?} is not TUF 1.x", role.spec_version)));
    }
    let lifetime = role.expires.as_second() - now.as_second();
    if lifetime < 24 * 3600 {
        return Err(invalid(
            "role_expires_too_soon",
            format!("the {product} role expires at {}, less than a day from now", role.expires),
        ));
    }
    if lifetime > MAX_ROLE_LIFETIME_DAYS * 24 * 3600 {
        return Err(invalid(
            "role_expires_too_late",
            format!("the {product} role expires at {}, more than {MAX_ROLE_LIFETIME_DAYS} days from now", role.expires),
        ));
    }
    if role.delegations.as_ref().is_some_and(|d| !d.roles.is_empty() || !d.keys.is_empty()) {
        return Err(invalid("role_delegates", format!("the {product} role delegates; product roles must not")));
    }
    let (mut targets, mut deltas) = (Vec::with_capacity(role.targets.len()), Vec::new());
    for (name, target) in &role.targets {
        if name.raw().contains(patchgate_protocol::delta::NAME_MARKER) {
            deltas.push(listed_delta(product, name.raw(), target)?);
        } else {
            targets.push(listed_target(product, name.raw(), target)?);
        }
    }
    let canonical = patchgate_protocol::canonical_json(&value)
        .map_err(|e| invalid("invalid_role", format!("the {product} role cannot be canonical JSON: {e}")))?;
    let sha256 = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&canonical));
    Ok(CheckedRole {
        metadata: SignedMetadata { role: product.to_owned(), version, expires: role.expires, bytes: canonical, sha256 },
        targets,
        deltas,
    })
}

/// The target's sha512, which every target of ours carries.
fn sha512_of(target: &tough::schema::Target) -> Option<String> {
    target.hashes._extra.get("sha512").and_then(serde_json::Value::as_str).map(str::to_owned)
}

/// A delta entry: named after the image it produces and the release it applies to, both of
/// this product, with a `custom` that says exactly that.
fn listed_delta(product: &str, name: &str, target: &tough::schema::Target) -> Result<ListedDelta, ServiceError> {
    let bad = |why: String| invalid("invalid_role_target", format!("{name}: {why}"));
    let custom: serde_json::Map<String, serde_json::Value> = target.custom.clone().into_iter().collect();
    let typed: patchgate_protocol::DeltaCustom = serde_json::from_value(serde_json::Value::Object(custom.clone()))
        .map_err(|e| bad(format!("custom is not {{delta: {{algorithm, source, target}}}}: {e}")))?;
    let of = typed.delta;
    let version_of = |end: &patchgate_protocol::DeltaEnd| {
        let parts: Vec<&str> = end.name.split('/').collect();
        (parts.len() == 3 && parts[0] == product && !parts.iter().any(|p| p.is_empty() || *p == "." || *p == ".."))
            .then(|| parts[1].to_owned())
    };
    let (Some(from), Some(_)) = (version_of(&of.source), version_of(&of.target)) else {
        return Err(bad(format!("both images a delta names must be {product}/VERSION/FILE")));
    };
    if patchgate_protocol::delta_target_name(&of.target.name, &from) != name {
        return Err(bad(format!(
            "a delta from {} to {} is named {}",
            of.source.name,
            of.target.name,
            patchgate_protocol::delta_target_name(&of.target.name, &from)
        )));
    }
    Ok(ListedDelta {
        name: name.to_owned(),
        length: target.length,
        sha256: hex::encode(&target.hashes.sha256),
        sha512: sha512_of(target).ok_or_else(|| bad("hashes lack sha512".into()))?,
        custom,
        of,
    })
}

fn listed_target(product: &str, name: &str, target: &tough::schema::Target) -> Result<ListedTarget, ServiceError> {
    let bad = |why: String| invalid("invalid_role_target", format!("{name}: {why}"));
    let parts: Vec<&str> = name.split('/').collect();
    if parts.len() != 3 || parts[0] != product || parts.iter().any(|p| p.is_empty() || *p == "." || *p == "..") {
        return Err(bad(format!("target names in the {product} role are {product}/VERSION/FILE")));
    }
    let custom: serde_json::Map<String, serde_json::Value> = target.custom.clone().into_iter().collect();
    let typed: TargetCustom = serde_json::from_value(serde_json::Value::Object(custom.clone()))
        .map_err(|e| bad(format!("custom is not {{version, hardware_ids, rollback_floor, released_at}}: {e}")))?;
    let version = FirmwareVersion::parse(&typed.version).map_err(|e| bad(e.to_string()))?;
    let floor = FirmwareVersion::parse(&typed.rollback_floor).map_err(|e| bad(e.to_string()))?;
    if version.to_string() != parts[1] {
        return Err(bad(format!("custom.version {} differs from the name's version {}", typed.version, parts[1])));
    }
    if floor > version {
        return Err(bad(format!("rollback_floor {floor} is above the version {version}")));
    }
    let sha512 = sha512_of(target).ok_or_else(|| bad("hashes lack sha512".into()))?;
    Ok(ListedTarget {
        name: name.to_owned(),
        length: target.length,
        sha256: hex::encode(&target.hashes.sha256),
        sha512,
        custom,
        version,
        floor,
    })
}

/// A file uploaded with the role that lists it.
#[derive(Debug, Clone)]
pub struct Upload<'a> {
    /// Its target name.
    pub name: &'a str,
    /// Bytes.
    pub length: u64,
    /// Hex.
    pub sha256: &'a str,
    /// Hex.
    pub sha512: &'a str,
}

/// What a role changes in the database.
#[derive(Debug, Default)]
pub struct Reconciled {
    /// The uploaded target, as the role lists it (publish only).
    pub new_target: Option<ListedTarget>,
    /// The uploaded delta, as the role lists it (a manufacturer's delta only).
    pub new_delta: Option<ListedDelta>,
    /// Releases the role no longer lists and were not asked to be delisted (yanked now).
    pub yank: Vec<release::Model>,
    /// Releases the role no longer lists because the retention policy lets them go.
    pub delist: Vec<release::Model>,
    /// Yanked releases the role lists again.
    pub restore: Vec<release::Model>,
    /// Delisted releases the role lists again.
    pub relist: Vec<release::Model>,
    /// Versions it lists.
    pub listed: Vec<String>,
    /// The highest `rollback_floor` it lists.
    pub floor: Option<FirmwareVersion>,
}

/// Matches the role's targets against the product's stored releases (and `upload`). A release
/// the role stops listing is yanked, unless its version is in `delist`: then the retention
/// policy must let it go, or the role is refused.
pub async fn reconcile(
    db: &impl ConnectionTrait,
    product: &product::Model,
    role: &CheckedRole,
    upload: Option<&Upload<'_>>,
    delist: &[FirmwareVersion],
) -> Result<Reconciled, ServiceError> {
    let listed_now = release_list_listed(db, product.id).await?;
    let listed_names: HashSet<&str> = listed_now.iter().map(|r| r.target_name.as_str()).collect();
    let unlisted_names: Vec<String> =
        role.targets.iter().filter(|t| !listed_names.contains(t.name.as_str())).map(|t| t.name.clone()).collect();
    let unlisted = release_list_by_targets(db, product.id, unlisted_names).await?;
    let by_name: HashMap<&str, &release::Model> =
        listed_now.iter().chain(unlisted.iter()).map(|r| (r.target_name.as_str(), r)).collect();
    let mut out = Reconciled::default();
    let mut seen = HashSet::new();
    for t in &role.targets {
        seen.insert(t.name.clone());
        out.listed.push(t.version.to_string());
        out.floor = out.floor.take().max(Some(t.floor.clone()));
        let claim = Claim { name: &t.name, length: t.length, sha256: &t.sha256, sha512: &t.sha512, custom: &t.custom };
        if let Some(stored) = by_name.get(t.name.as_str()) {
            if !claim.matches(stored.length, &stored.sha256, &stored.sha512, &stored.custom) {
                return Err(ServiceError::conflict(
                    "role_target_mismatch",
                    format!("{}: the role's length, hashes or custom differ from the published release", t.name),
                ));
            }
            if stored.yanked_at.is_some() {
                out.restore.push((*stored).clone());
            } else if stored.delisted_at.is_some() {
                out.relist.push((*stored).clone());
            }
            continue;
        }
        claim.is_upload(upload)?;
        out.new_target = Some(t.clone());
    }
    out.new_delta = reconcile_deltas(db, product, role, upload).await?;
    if let Some(u) = upload
        && out.new_target.is_none()
        && out.new_delta.is_none()
    {
        return Err(invalid("role_lacks_target", format!("the role does not list the uploaded {}", u.name)));
    }
    let delist: HashSet<String> = delist.iter().map(ToString::to_string).collect();
    for version in &delist {
        if out.listed.contains(version) {
            return Err(invalid("delist_listed", format!("{version} is to be delisted, but the role still lists it")));
        }
        if !listed_now.iter().any(|r| &r.version == version) {
            return Err(invalid(
                "delist_not_listed",
                format!("{version} is to be delisted, but the current {} role does not list it", product.name),
            ));
        }
    }
    let adding = usize::from(out.new_target.is_some()) + out.relist.len() + out.restore.len();
    for r in listed_now.iter().filter(|r| !seen.contains(&r.target_name)) {
        if !delist.contains(&r.version) {
            out.yank.push(r.clone());
            continue;
        }
        if let Some(why) = super::retention::keep_reason(db, product, &listed_now, adding, r).await? {
            return Err(ServiceError::conflict(
                "release_retained",
                format!(
                    "{} {} cannot be delisted: {} (fetch the retention advice again, sign again)",
                    product.name,
                    r.version,
                    why.describe()
                ),
            ));
        }
        out.delist.push(r.clone());
    }
    Ok(out)
}

/// Checks the role's deltas: each produces an image the role lists from another image it lists
/// (same name, length and sha256 as listed), and each is the delta the server stores under that
/// name (same length, hashes and `custom`) or the uploaded file. Returns the uploaded one.
async fn reconcile_deltas(
    db: &impl ConnectionTrait,
    product: &product::Model,
    role: &CheckedRole,
    upload: Option<&Upload<'_>>,
) -> Result<Option<ListedDelta>, ServiceError> {
    let mut new_delta = None;
    for d in &role.deltas {
        for (end, what) in [(&d.of.source, "source"), (&d.of.target, "target")] {
            let listed =
                role.targets.iter().any(|t| t.name == end.name && t.length == end.length && t.sha256 == end.sha256);
            if !listed {
                return Err(invalid(
                    "delta_end_not_listed",
                    format!(
                        "{}: its {what} {} ({} bytes, sha256 {}) is not an image the role lists",
                        d.name, end.name, end.length, end.sha256
                    ),
                ));
            }
        }
        let claim = Claim { name: &d.name, length: d.length, sha256: &d.sha256, sha512: &d.sha512, custom: &d.custom };
        match crate::db::deltas::delta_find_by_target(db, &d.name).await? {
            Some(stored) => {
                if stored.product_id != product.id
                    || !claim.matches(stored.length, &stored.sha256, &stored.sha512, &stored.custom)
                {
                    return Err(ServiceError::conflict(
                        "role_target_mismatch",
                        format!("{}: the role's length, hashes or custom differ from the stored delta", d.name),
                    ));
                }
            }
            None => {
                claim.is_upload(upload)?;
                new_delta = Some(d.clone());
            }
        }
    }
    Ok(new_delta)
}

/// What a role's entry says of its file.
struct Claim<'a> {
    name: &'a str,
    length: u64,
    sha256: &'a str,
    sha512: &'a str,
    custom: &'a serde_json::Map<String, serde_json::Value>,
}

impl Claim<'_> {
    /// Whether a stored file (its row's length, hashes and `custom` JSON) is exactly this.
    fn matches(&self, length: i64, sha256: &str, sha512: &str, custom: &str) -> bool {
        let stored: serde_json::Value = serde_json::from_str(custom).unwrap_or_default();
        u64::try_from(length).ok() == Some(self.length)
            && sha256 == self.sha256
            && sha512 == self.sha512
            && stored.as_object() == Some(self.custom)
    }

    /// For an entry the server stores no file of: it must be the file uploaded with the role.
    fn is_upload(&self, upload: Option<&Upload<'_>>) -> Result<(), ServiceError> {
        match upload {
            Some(u) if u.name == self.name => {
                if u.length != self.length || u.sha256 != self.sha256 || u.sha512 != self.sha512 {
                    return Err(invalid(
                        "role_target_mismatch",
                        format!(
                            "{}: the role lists {} bytes with sha256 {}, the uploaded file is {} bytes with sha256 {}",
                            self.name, self.length, self.sha256, u.length, u.sha256
                        ),
                    ));
                }
                Ok(())
            }
            _ => Err(ServiceError::conflict(
                "unknown_target",
                format!("the role lists {}, which was never uploaded to this server", self.name),
            )),
        }
    }
}

/// Records yanks, delistings, restores and re-listings (by role `role_version`), and the
/// product's new security floor.
pub async fn apply_reconciled(
    txn: &DatabaseTransaction,
    product: &product::Model,
    change: &Reconciled,
    actor: &str,
    now: Timestamp,
    role_version: u64,
) -> Result<(), ServiceError> {
    for r in &change.yank {
        let mut active: release::ActiveModel = r.clone().into();
        active.yanked_at = Set(Some(now.as_second()));
        active.yanked_by = Set(Some(actor.to_owned()));
        release_update(txn, active).await?;
    }
    for r in &change.delist {
        let mut active: release::ActiveModel = r.clone().into();
        active.delisted_at = Set(Some(now.as_second()));
        release_update(txn, active).await?;
    }
    for r in change.restore.iter().chain(&change.relist) {
        let mut active: release::ActiveModel = r.clone().into();
        active.yanked_at = Set(None);
        active.yanked_by = Set(None);
        active.delisted_at = Set(None);
        active.listed_in_role = Set(i64::try_from(role_version).unwrap_or(i64::MAX));
        release_update(txn, active).await?;
    }
    let floor = change.floor.clone().unwrap_or_else(FirmwareVersion::zero).to_string();
    if floor != product.security_floor {
        crate::db::products::product_set_floor(txn, product.id, &floor).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tuf::keys::Signer;
    use crate::tuf::metadata::{TargetEntry, product_targets};

    fn product_for(key: &Signer) -> product::Model {
        product::Model {
            id: 1,
            name: "pump-x1".into(),
            hardware_ids: "[\"hw\"]".into(),
            signing_mode: "manufacturer".into(),
            public_key: hex::encode(key.public_bytes()),
            keyid: key.keyid().into(),
            created_at: 0,
            status: "active".into(),
            pending_role: None,
            requires_approval: false,
            security_floor: "0.0.0".into(),
            retain_newest: 20,
        }
    }

    fn entry(version: &str, floor: &str) -> TargetEntry {
        TargetEntry {
            name: format!("pump-x1/{version}/fw.bin"),
            length: 3,
            sha256: "aa".repeat(32),
            sha512: "bb".repeat(64),
            custom: TargetCustom {
                version: version.into(),
                hardware_ids: vec!["hw".into()],
                rollback_floor: floor.into(),
                released_at: "2026-11-24T10:00:00Z".into(),
            }
            .into(),
        }
    }

    async fn signed(key: &Signer, version: u64, entries: &[TargetEntry], now: Timestamp) -> Vec<u8> {
        let expires = crate::domain::expiry::expires_at(crate::domain::expiry::RoleKind::Product, now);
        let body = product_targets(version, expires, entries).unwrap();
        crate::tuf::sign::sign_role("pump-x1", version, expires, body, &[key]).await.unwrap().bytes
    }

    #[tokio::test]
    async fn a_role_verifies_only_under_its_key_at_the_next_version() {
        let now = Timestamp::now();
        let key = Signer::generate();
        let delegations = product_delegation(&product_for(&key)).unwrap();
        let bytes = signed(&key, 2, &[entry("1.0.0", "0.0.0")], now).await;
        let ok = check_role(&bytes, "pump-x1", &delegations, 2, now).unwrap();
        assert_eq!(ok.targets.len(), 1);
        assert_eq!(ok.metadata.version, 2);
        let err = check_role(&bytes, "pump-x1", &delegations, 3, now).unwrap_err();
        assert!(matches!(err, ServiceError::Conflict { code: "role_version_conflict", .. }), "{err:?}");
        let other = Signer::generate();
        let forged = signed(&other, 2, &[entry("1.0.0", "0.0.0")], now).await;
        let err = check_role(&forged, "pump-x1", &delegations, 2, now).unwrap_err();
        assert!(matches!(err, ServiceError::Invalid { code: "bad_role_signature", .. }), "{err:?}");
    }

    #[tokio::test]
    async fn malformed_targets_are_refused() {
        let now = Timestamp::now();
        let key = Signer::generate();
        let delegations = product_delegation(&product_for(&key)).unwrap();
        let mut wrong_product = entry("1.0.0", "0.0.0");
        wrong_product.name = "other/1.0.0/fw.bin".into();
        let mut wrong_version = entry("1.0.0", "0.0.0");
        wrong_version.name = "pump-x1/2.0.0/fw.bin".into();
        for e in [wrong_product, wrong_version, entry("1.0.0", "1.1.0")] {
            let bytes = signed(&key, 2, &[e], now).await;
            let err = check_role(&bytes, "pump-x1", &delegations, 2, now).unwrap_err();
            assert!(matches!(err, ServiceError::Invalid { code: "invalid_role_target", .. }), "{err:?}");
        }
    }
}
