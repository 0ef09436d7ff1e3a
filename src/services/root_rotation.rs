//! Root rotation and export.
//!
//! A new root N+1 is signed by a threshold of the old root's keys and of the new root's keys,
//! so clients holding root N verify the step (TUF 5.3.4).

use jiff::Timestamp;
use sha2::{Digest, Sha256};

use super::auth::Caller;
use super::image_repo::{DIRECTOR, IMAGE, sign_image_root, store_role};
use super::{ServiceError, Services};
use crate::db::audit::{NewAudit, audit_insert};
use crate::db::metadata::metadata_latest;
use crate::tuf::keydir::KeySet;
use crate::tuf::keys::Signer;
use crate::tuf::sign::SignedMetadata;
use crate::tuf::verify::{parse_root, trusted_keyids, verify_root_step};

/// Signs image root N+1 listing `new_keys`, signed by `old_root_keys` and the new ones, and
/// stores it only if clients holding root N will accept it (a root version, once served, is
/// cached for a year: a broken one would strand every device).
pub async fn rotate_image_root(
    svc: &Services,
    actor: &Caller,
    old_root_keys: &[Signer],
    new_keys: &KeySet,
) -> Result<SignedMetadata, ServiceError> {
    let txn = crate::db::begin_signing(&svc.db).await?;
    let now: Timestamp = svc.clock.now();
    let Some(current) = metadata_latest(&txn, IMAGE, "root").await? else {
        return Err(ServiceError::conflict(
            "not_initialised",
            "the image repository has no root yet; run `patchgate repo init`",
        ));
    };
    let version = u64::try_from(current.version).unwrap_or(0) + 1;
    let mut signers: Vec<&Signer> = old_root_keys.iter().collect();
    signers.extend(new_keys.image_root.iter());
    let root = sign_image_root(new_keys, version, now, &signers).await?;
    verify_root_step(&current.body, &root.bytes).map_err(|e| {
        ServiceError::conflict(
            "root_chain_broken",
            format!(
                "refusing to store image root v{version}, clients holding v{} would reject it: {e}",
                current.version
            ),
        )
    })?;
    store_role(&txn, IMAGE, &root, now).await?;
    let keyids = |signers: &[Signer]| signers.iter().map(|k| k.keyid().to_owned()).collect::<Vec<_>>();
    let before = serde_json::json!({"version": current.version, "root_keyids": keyids(old_root_keys)});
    let after = serde_json::json!({
        "version": version, "root_keyids": keyids(&new_keys.image_root), "threshold": new_keys.image_root_threshold
    });
    let audit = NewAudit {
        at: now.as_second(),
        actor: &actor.name,
        action: "repo.rotate_root",
        object: "image:root",
        before: Some(before.to_string()),
        after: Some(after.to_string()),
    };
    audit_insert(&txn, audit).await?;
    super::image_repo::commit_signed(svc, txn).await?;
    Ok(root)
}

/// The newest root of a repository, with its SHA-256 and root key ids.
pub struct ExportedRoot {
    /// The root's bytes as served.
    pub bytes: Vec<u8>,
    /// Its version.
    pub version: i64,
    /// SHA-256 of `bytes`, hex.
    pub sha256: String,
    /// Key ids trusted for the root role.
    pub root_keyids: Vec<String>,
}

/// The newest root of `repo` (`image` or `director`).
pub async fn export_root(svc: &Services, repo: &str) -> Result<ExportedRoot, ServiceError> {
    if repo != IMAGE && repo != DIRECTOR {
        return Err(ServiceError::invalid("invalid_repo", format!("--repo must be image or director, not {repo:?}")));
    }
    let row = metadata_latest(&svc.db, repo, "root").await?.ok_or_else(|| {
        ServiceError::not_found(
            "not_initialised",
            format!("the {repo} repository has no root; run `patchgate repo init`"),
        )
    })?;
    let parsed = parse_root(&row.body).map_err(|e| anyhow::anyhow!("the stored {repo} root: {e}"))?;
    let mut root_keyids: Vec<String> =
        trusted_keyids(&parsed.signed, tough::schema::RoleType::Root).into_iter().collect();
    root_keyids.sort();
    Ok(ExportedRoot {
        sha256: hex::encode(Sha256::digest(&row.body)),
        version: row.version,
        bytes: row.body,
        root_keyids,
    })
}
