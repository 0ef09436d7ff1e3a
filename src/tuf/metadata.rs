//! Builders for every role of the image repository and the director's root: plain functions
//! from plain inputs to tough schema types, signed afterwards by [`super::sign::sign_role`].

use std::collections::HashMap;
use std::num::NonZeroU64;

use jiff::Timestamp;
use patchgate_protocol::{SPEC_VERSION, TargetCustom};
use tough::TargetName;
use tough::schema::key::Key;
use tough::schema::{
    DelegatedRole, Delegations, Hashes, Metafile, PathPattern, PathSet, RoleKeys, RoleType, Root, Snapshot, Target,
    Targets, Timestamp as TimestampRole,
};

use super::keys::key_id;
use super::sign::SignedMetadata;

/// Invalid builder input (a caller bug or corrupt stored data).
#[derive(Debug, thiserror::Error)]
#[error("cannot build TUF metadata: {0}")]
pub struct BuildError(pub String);

fn nz(v: u64) -> Result<NonZeroU64, BuildError> {
    NonZeroU64::new(v).ok_or_else(|| BuildError("versions and thresholds start at 1".into()))
}

fn keyid_bytes(key: &Key) -> tough::schema::decoded::Decoded<tough::schema::decoded::Hex> {
    hex::decode(key_id(key)).unwrap_or_default().into()
}

/// The keys and threshold of one top-level role.
pub struct RoleSpec<'a> {
    /// Which role.
    pub role: RoleType,
    /// Its keys.
    pub keys: &'a [Key],
    /// Signatures it needs.
    pub threshold: u64,
}

/// A root listing `roles` (all four top-level roles must be present).
pub fn root(version: u64, expires: Timestamp, roles: &[RoleSpec<'_>]) -> Result<Root, BuildError> {
    let mut keys = HashMap::new();
    let mut role_map = HashMap::new();
    for spec in roles {
        let keyids = spec.keys.iter().map(keyid_bytes).collect::<Vec<_>>();
        for key in spec.keys {
            keys.insert(keyid_bytes(key), key.clone());
        }
        if spec.threshold as usize > keyids.len() {
            return Err(BuildError(format!("threshold {} exceeds {} keys", spec.threshold, keyids.len())));
        }
        role_map.insert(spec.role, RoleKeys { keyids, threshold: nz(spec.threshold)?, _extra: HashMap::new() });
    }
    for needed in [RoleType::Root, RoleType::Targets, RoleType::Snapshot, RoleType::Timestamp] {
        if !role_map.contains_key(&needed) {
            return Err(BuildError(format!("root lacks the {needed:?} role")));
        }
    }
    Ok(Root {
        spec_version: SPEC_VERSION.to_owned(),
        consistent_snapshot: true,
        version: nz(version)?,
        expires,
        keys,
        roles: role_map,
        _extra: HashMap::new(),
    })
}

/// One product's delegation from the top-level targets role.
pub struct ProductDelegation {
    /// Product (and role) name.
    pub name: String,
    /// The product key.
    pub key: Key,
    /// Path pattern (see `domain::names::delegation_pattern`).
    pub pattern: String,
}

/// The top-level targets role: no targets of its own, one terminating delegation per product.
pub fn top_targets(version: u64, expires: Timestamp, products: &[ProductDelegation]) -> Result<Targets, BuildError> {
    let mut targets = Targets::new(SPEC_VERSION.to_owned(), nz(version)?, expires);
    let mut delegations = Delegations::new();
    for product in products {
        delegations.keys.insert(keyid_bytes(&product.key), product.key.clone());
        let pattern = PathPattern::new(product.pattern.clone()).map_err(|e| BuildError(e.to_string()))?;
        delegations.roles.push(DelegatedRole {
            name: product.name.clone(),
            keyids: vec![keyid_bytes(&product.key)],
            threshold: nz(1)?,
            paths: PathSet::Paths(vec![pattern]),
            terminating: true,
            targets: None,
        });
    }
    targets.delegations = Some(delegations);
    Ok(targets)
}

/// One firmware file as the image repository lists it.
pub struct TargetEntry {
    /// `{product}/{version}/{file}`.
    pub name: String,
    /// Size in bytes.
    pub length: u64,
    /// SHA-256, lowercase hex.
    pub sha256: String,
    /// SHA-512, lowercase hex.
    pub sha512: String,
    /// The image repository's `custom`.
    pub custom: EntryCustom,
}

/// The `custom` of a product role's target: a release's, or a delta's (docs/design.md §1). The
/// two never parse as each other (both refuse unknown fields), so a stored `custom` reads back as
/// what it was.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
pub enum EntryCustom {
    /// A release's image.
    Release(TargetCustom),
    /// A delta between two release images.
    Delta(patchgate_protocol::DeltaCustom),
}

impl From<TargetCustom> for EntryCustom {
    fn from(custom: TargetCustom) -> Self {
        Self::Release(custom)
    }
}

/// A product's delegated targets role listing `entries`.
pub fn product_targets(version: u64, expires: Timestamp, entries: &[TargetEntry]) -> Result<Targets, BuildError> {
    let mut targets = Targets::new(SPEC_VERSION.to_owned(), nz(version)?, expires);
    // A product role delegates nothing further (tough's constructor starts with an empty set).
    targets.delegations = None;
    for entry in entries {
        let custom = serde_json::to_value(&entry.custom).map_err(|e| BuildError(e.to_string()))?;
        let custom: HashMap<String, serde_json::Value> =
            serde_json::from_value(custom).map_err(|e| BuildError(e.to_string()))?;
        let (name, target) = target(&entry.name, entry.length, &entry.sha256, &entry.sha512, custom)?;
        targets.targets.insert(name, target);
    }
    Ok(targets)
}

/// The one target a device's director lists: the image repository's entry, byte for byte,
/// with the director's `custom` (the image's plus `device_id`, `rollout_id`, `action`).
#[derive(Debug, Clone)]
pub struct DirectorTarget {
    /// `{product}/{version}/{file}`.
    pub name: String,
    /// Size in bytes.
    pub length: u64,
    /// SHA-256, lowercase hex.
    pub sha256: String,
    /// SHA-512, lowercase hex.
    pub sha512: String,
    /// The director's `custom`.
    pub custom: serde_json::Map<String, serde_json::Value>,
}

fn target(
    name: &str,
    length: u64,
    sha256: &str,
    sha512: &str,
    custom: HashMap<String, serde_json::Value>,
) -> Result<(TargetName, Target), BuildError> {
    let sha256 = hex::decode(sha256).map_err(|e| BuildError(e.to_string()))?;
    let mut extra = HashMap::new();
    extra.insert("sha512".to_owned(), serde_json::Value::String(sha512.to_owned()));
    let name = TargetName::new(name.to_owned()).map_err(|e| BuildError(e.to_string()))?;
    let target =
        Target { length, hashes: Hashes { sha256: sha256.into(), _extra: extra }, custom, _extra: HashMap::new() };
    Ok((name, target))
}

/// A snapshot listing the current version of every targets role (`targets` and each product).
pub fn snapshot(version: u64, expires: Timestamp, roles: &[(String, u64)]) -> Result<Snapshot, BuildError> {
    let mut snapshot = Snapshot::new(SPEC_VERSION.to_owned(), nz(version)?, expires);
    for (role, role_version) in roles {
        snapshot.meta.insert(
            format!("{role}.json"),
            Metafile { length: None, hashes: None, version: nz(*role_version)?, _extra: HashMap::new() },
        );
    }
    Ok(snapshot)
}

/// A timestamp naming `snapshot` with its version, length and SHA-256.
pub fn timestamp(version: u64, expires: Timestamp, snapshot: &SignedMetadata) -> Result<TimestampRole, BuildError> {
    let mut ts = TimestampRole::new(SPEC_VERSION.to_owned(), nz(version)?, expires);
    let sha256 = hex::decode(&snapshot.sha256).map_err(|e| BuildError(e.to_string()))?;
    ts.meta.insert(
        "snapshot.json".to_owned(),
        Metafile {
            length: Some(snapshot.bytes.len() as u64),
            hashes: Some(Hashes { sha256: sha256.into(), _extra: HashMap::new() }),
            version: nz(snapshot.version)?,
            _extra: HashMap::new(),
        },
    );
    Ok(ts)
}
