//! Initialising the repositories: image root 1, first targets, snapshot and timestamp, and the
//! director's root 1. Idempotent: does nothing where a root already exists.

use super::auth::Caller;
use super::image_repo::{
    DIRECTOR, IMAGE, commit_with_snapshot, sign_director_root, sign_image_root, sign_top_targets, store_role,
};
use super::{ServiceError, Services};
use crate::db::audit::{NewAudit, audit_insert};
use crate::db::metadata::metadata_latest;

/// What initialisation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InitOutcome {
    /// The image repository was created now.
    pub image_created: bool,
    /// The director root was created now.
    pub director_created: bool,
}

/// Creates whatever does not exist yet.
pub async fn init_repositories(svc: &Services, actor: &Caller) -> Result<InitOutcome, ServiceError> {
    let txn = crate::db::begin_signing(&svc.db).await?;
    let now = svc.clock.now();
    let mut outcome = InitOutcome { image_created: false, director_created: false };
    if metadata_latest(&txn, IMAGE, "root").await?.is_none() {
        let signers: Vec<_> = svc.keys.image_root.iter().collect();
        let root = sign_image_root(&svc.keys, 1, now, &signers).await?;
        store_role(&txn, IMAGE, &root, now).await?;
        let targets = sign_top_targets(&svc.keys, &[], 1, now).await?;
        commit_with_snapshot(&txn, svc, now, &[targets]).await?;
        outcome.image_created = true;
        let root_keyids: Vec<&str> = svc.keys.image_root.iter().map(|k| k.keyid()).collect();
        let after =
            serde_json::json!({"version": 1, "root_keyids": root_keyids, "threshold": svc.keys.image_root_threshold});
        audit_insert(&txn, init_audit(actor, now, "image:root", &after)).await?;
    }
    if metadata_latest(&txn, DIRECTOR, "root").await?.is_none() {
        let root = sign_director_root(&svc.keys, 1, now).await?;
        store_role(&txn, DIRECTOR, &root, now).await?;
        outcome.director_created = true;
        let root_keyids: Vec<&str> = svc.keys.director_root.iter().map(|k| k.keyid()).collect();
        let after = serde_json::json!({"version": 1, "root_keyids": root_keyids});
        audit_insert(&txn, init_audit(actor, now, "director:root", &after)).await?;
    }
    super::image_repo::commit_signed(svc, txn).await?;
    Ok(outcome)
}

fn init_audit<'a>(actor: &'a Caller, now: jiff::Timestamp, object: &'a str, after: &serde_json::Value) -> NewAudit<'a> {
    NewAudit {
        at: now.as_second(),
        actor: &actor.name,
        action: "repo.init",
        object,
        before: None,
        after: Some(after.to_string()),
    }
}
