//! Checking signed metadata the way clients will, before it is stored: a root step N → N+1 must
//! be signed by a threshold of root N's keys and of its own (TUF 5.3.4), and the keys the
//! server signs with must be the keys the current root trusts.

use std::collections::HashSet;

use tough::schema::{RoleType, Root, Signed};

use super::keydir::KeySet;
use super::keys::Signer;

/// Metadata that clients would refuse.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The bytes are not a signed root.
    #[error("not a signed root: {0}")]
    Parse(String),
    /// The version does not follow.
    #[error("root version {next} does not follow version {current}")]
    Version {
        /// Current version.
        current: u64,
        /// Proposed version.
        next: u64,
    },
    /// Signatures are missing.
    #[error("root version {version} is not signed by a threshold of {which} root keys: {message}")]
    Signatures {
        /// Proposed version.
        version: u64,
        /// `the current` or `its own`.
        which: &'static str,
        /// tough's reason.
        message: String,
    },
}

/// Parses a signed root.
pub fn parse_root(bytes: &[u8]) -> Result<Signed<Root>, VerifyError> {
    serde_json::from_slice(bytes).map_err(|e| VerifyError::Parse(e.to_string()))
}

/// Checks that `next` is a root clients holding `current` will accept.
pub fn verify_root_step(current: &[u8], next: &[u8]) -> Result<(), VerifyError> {
    let current = parse_root(current)?;
    let next = parse_root(next)?;
    let (cv, nv) = (current.signed.version.get(), next.signed.version.get());
    if nv != cv + 1 {
        return Err(VerifyError::Version { current: cv, next: nv });
    }
    current.signed.verify_role(&next).map_err(|e| VerifyError::Signatures {
        version: nv,
        which: "the current",
        message: e.to_string(),
    })?;
    next.signed.verify_role(&next).map_err(|e| VerifyError::Signatures {
        version: nv,
        which: "its own",
        message: e.to_string(),
    })
}

/// The key ids `root` trusts for `role`.
pub fn trusted_keyids(root: &Root, role: RoleType) -> HashSet<String> {
    root.roles.get(&role).map(|r| r.keyids.iter().map(|k| hex::encode(k.as_ref())).collect()).unwrap_or_default()
}

/// Where the keys of `keys` are not the ones the image root trusts, as sentences: the targets
/// key if this set holds it, and for snapshot and timestamp, no online key the root trusts.
pub fn image_key_mismatches(root: &Root, keys: &KeySet) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(targets) = &keys.image_targets
        && !trusted_keyids(root, RoleType::Targets).contains(targets.keyid())
    {
        problems.push(format!(
            "offline/image-targets.pem (key {}) is not the Targets key image root v{} trusts",
            targets.keyid(),
            root.version
        ));
    }
    for (role, preferred, name) in [
        (RoleType::Snapshot, &keys.image_snapshot, "image-snapshot"),
        (RoleType::Timestamp, &keys.image_timestamp, "image-timestamp"),
    ] {
        let trusted = trusted_keyids(root, role);
        if keys.online_trusted(preferred, |id| trusted.contains(id)).is_none() {
            problems.push(format!(
                "no online key is the {role:?} key image root v{} trusts ({} is key {})",
                root.version,
                key_source(preferred, name),
                preferred.keyid()
            ));
        }
    }
    problems
}

/// Where no online key is the one the director root trusts for targets, snapshot and timestamp.
pub fn director_key_mismatches(root: &Root, keys: &KeySet) -> Vec<String> {
    if director_online_key(root, keys).is_some() {
        return Vec::new();
    }
    vec![format!(
        "no online key is the director key director root v{} trusts for targets, snapshot and timestamp \
         ({} is key {})",
        root.version,
        key_source(&keys.director, "director"),
        keys.director.keyid()
    )]
}

/// Where the online key `name` came from: its file, or the `pkcs11_keys` entry naming its token.
fn key_source(key: &Signer, name: &str) -> String {
    match key.token_key() {
        Some(_) => format!("pkcs11_keys.{name}"),
        None => format!("online/{name}.pem"),
    }
}

/// The online key the image root trusts for `role` (snapshot or timestamp).
pub fn image_online_key<'a>(root: &Root, keys: &'a KeySet, role: RoleType) -> Option<&'a Signer> {
    let preferred = if role == RoleType::Snapshot { &keys.image_snapshot } else { &keys.image_timestamp };
    let trusted = trusted_keyids(root, role);
    keys.online_trusted(preferred, |id| trusted.contains(id))
}

/// The one online key the director root trusts for targets, snapshot and timestamp.
pub fn director_online_key<'a>(root: &Root, keys: &'a KeySet) -> Option<&'a Signer> {
    let roles = [RoleType::Targets, RoleType::Snapshot, RoleType::Timestamp].map(|r| trusted_keyids(root, r));
    keys.online_trusted(&keys.director, |id| roles.iter().all(|t| t.contains(id)))
}
