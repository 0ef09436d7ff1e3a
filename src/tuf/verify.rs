//! Checking signed metadata the way clients will, before it is stored: a root step N → N+1 must
//! be signed by a threshold of root N's keys and of its own (TUF 5.3.4), and the keys the
//! server signs with must be the keys the current root trusts.

use std::collections::HashSet;

use tough::schema::{RoleType, Root, Signed};

use super::keydir::KeySet;

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

/// Where the online keys of `keys` are not the ones the image root trusts, as sentences.
pub fn image_key_mismatches(root: &Root, keys: &KeySet) -> Vec<String> {
    let mut problems = Vec::new();
    for (role, signer, file) in [
        (RoleType::Targets, &keys.image_targets, "offline/image-targets.pem"),
        (RoleType::Snapshot, &keys.image_snapshot, "online/image-snapshot.pem"),
        (RoleType::Timestamp, &keys.image_timestamp, "online/image-timestamp.pem"),
    ] {
        if !trusted_keyids(root, role).contains(signer.keyid()) {
            problems.push(format!(
                "{file} (key {}) is not the {role:?} key image root v{} trusts",
                signer.keyid(),
                root.version
            ));
        }
    }
    problems
}

/// Where the director's online key is not the one the director root trusts.
pub fn director_key_mismatches(root: &Root, keys: &KeySet) -> Vec<String> {
    [RoleType::Targets, RoleType::Snapshot, RoleType::Timestamp]
        .into_iter()
        .filter(|role| !trusted_keyids(root, *role).contains(keys.director.keyid()))
        .map(|role| {
            format!(
                "online/director.pem (key {}) is not the {role:?} key director root v{} trusts",
                keys.director.keyid(),
                root.version
            )
        })
        .collect()
}
