//! The blob sweep: removes stored files no release or delta refers to once they are older than a grace
//! period (what a failed or abandoned publish left behind), and staging objects of uploads that
//! a crash cut off. Under a lease, so one instance of a fleet sweeps.
//!
//! A blob is content-addressed, so a new publish of the same bytes rewrites it (fresh time) and
//! then commits its release under the signing lock. The sweep deletes under that same lock,
//! after checking again that no release refers to the blob and that it is still old; the commit
//! checks, under the lock, that its blob is still there. Either the sweep sees the fresh blob
//! and spares it, or the publish sees it gone and asks for the file again: a release is never
//! signed without its file.

use std::time::Duration;

use anyhow::Context as _;

use crate::db::deltas::delta_sha256s_in;
use crate::db::leases::{lease_release, lease_try_acquire};
use crate::db::releases::release_sha256s_in;
use crate::services::Services;

const LEASE_NAME: &str = "blob-sweep";
/// An unreferenced blob younger than this is left alone: its publish may still be committing.
pub const GRACE: Duration = Duration::from_secs(24 * 3600);
/// Staging objects older than this are uploads a crash cut off (as at start-up).
const STAGING_MAX_AGE: Duration = Duration::from_secs(3600);
/// Blobs checked and deleted per hold of the signing lock.
const CHUNK: usize = 200;

/// Sweeps every `every` (the first time after one interval) until the task is dropped.
pub async fn run(svc: Services, holder: String, every: Duration) {
    let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    let lease_seconds = i64::try_from(every.as_secs().saturating_mul(2)).unwrap_or(i64::MAX).max(60);
    loop {
        interval.tick().await;
        let now = svc.now_secs();
        match lease_try_acquire(&svc.db, LEASE_NAME, &holder, now, now.saturating_add(lease_seconds)).await {
            Ok(true) => match sweep(&svc, GRACE).await {
                Ok(0) => {}
                Ok(removed) => tracing::info!(removed, "blob sweep: removed files no release refers to"),
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), "blob sweep failed");
                    let _ = lease_release(&svc.db, LEASE_NAME, &holder).await;
                }
            },
            Ok(false) => {}
            Err(e) => tracing::error!(error = %e, "taking the blob-sweep lease"),
        }
    }
}

/// Which of `sha256s` a release or a delta stores its file under.
async fn referenced_in(
    db: &impl sea_orm::ConnectionTrait,
    sha256s: Vec<String>,
) -> Result<std::collections::HashSet<String>, sea_orm::DbErr> {
    let mut found = release_sha256s_in(db, sha256s.clone()).await?;
    found.extend(delta_sha256s_in(db, sha256s).await?);
    Ok(found)
}

/// Removes the blobs no release or delta refers to that were last written more than `grace` ago, and
/// staging objects older than an hour; returns how many blobs it removed. Tests call it with a
/// short grace.
pub async fn sweep(svc: &Services, grace: Duration) -> anyhow::Result<usize> {
    match svc.store.cleanup_staging(STAGING_MAX_AGE).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(removed = n, "blob sweep: removed unfinished uploads from staging"),
        Err(e) => tracing::warn!(error = format!("{e:#}"), "blob sweep: could not clean the staging area"),
    }
    // The store's times are the wall clock's, whatever the server's clock says.
    let cutoff = jiff::Timestamp::now().as_second().saturating_sub(i64::try_from(grace.as_secs()).unwrap_or(i64::MAX));
    let old: Vec<String> =
        svc.store.list_blobs().await?.into_iter().filter(|(_, at)| *at < cutoff).map(|(sha, _)| sha).collect();
    let mut removed = 0;
    for chunk in old.chunks(CHUNK) {
        let referenced = referenced_in(&svc.db, chunk.to_vec()).await?;
        let candidates: Vec<String> = chunk.iter().filter(|sha| !referenced.contains(*sha)).cloned().collect();
        if candidates.is_empty() {
            continue;
        }
        // Checked again, and deleted, while no release can commit.
        let txn = crate::db::begin_signing(&svc.db).await?;
        let referenced = referenced_in(&txn, candidates.clone()).await?;
        for sha in candidates.iter().filter(|sha| !referenced.contains(*sha)) {
            match svc.store.blob_written_at(sha).await? {
                Some(at) if at < cutoff => {
                    svc.store.delete_blob(sha).await.with_context(|| format!("removing blob {sha}"))?;
                    tracing::info!(sha256 = %sha, "blob sweep: removed a file no release refers to");
                    removed += 1;
                }
                _ => {}
            }
        }
        txn.commit().await?;
    }
    Ok(removed)
}
