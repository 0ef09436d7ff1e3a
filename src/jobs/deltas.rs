//! The delta job: computes the deltas the policy wants (`services::deltas::wanted_deltas`: to
//! the releases devices are headed for, from the releases most of them run), one at a time,
//! under a lease so that one instance of a fleet computes them.
//!
//! Resumable by construction: each pass plans again from the database, so a pair cut off by a
//! crash or a lost lease is simply still wanted on the next pass (on whichever instance holds
//! the lease then); a pair that has a delta or a remembered refusal is never computed again.

use std::time::Duration;

use crate::db::leases::{lease_release, lease_try_acquire};
use crate::services::auth::Caller;
use crate::services::deltas::{DeltaOutcome, NOT_WORTHWHILE, create_delta, wanted_deltas};
use crate::services::{ServiceError, Services};

const LEASE_NAME: &str = "delta-job";

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PassReport {
    /// Deltas computed, signed and listed.
    pub created: usize,
    /// Pairs computed and found not worth publishing (remembered).
    pub not_worthwhile: usize,
    /// Pairs that failed for another reason (logged; tried again on the next pass).
    pub failed: usize,
}

/// Holds the job's lease while a pass runs: renewed before each delta, so a crash frees it
/// within `seconds` and a live instance keeps it however many deltas a pass computes.
#[derive(Debug, Clone)]
pub struct Lease {
    /// This instance's holder name.
    pub holder: String,
    /// How long each renewal lasts.
    pub seconds: i64,
}

/// Plans every `every` (the first time after one interval) until the task is dropped.
pub async fn run(svc: Services, holder: String, every: Duration) {
    let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    // A delta of a large image takes minutes: the lease outlives one comfortably.
    let lease =
        Lease { holder, seconds: i64::try_from(every.as_secs()).unwrap_or(i64::MAX).saturating_mul(2).max(600) };
    loop {
        interval.tick().await;
        match pass(&svc, Some(&lease)).await {
            Ok(PassReport { created: 0, not_worthwhile: 0, failed: 0 }) => {}
            Ok(report) => tracing::info!(
                created = report.created,
                not_worthwhile = report.not_worthwhile,
                failed = report.failed,
                "delta job: pass finished"
            ),
            Err(e) => {
                tracing::error!(error = format!("{e:#}"), "delta job failed");
                let _ = lease_release(&svc.db, LEASE_NAME, &lease.holder).await;
            }
        }
    }
}

/// One pass: computes every wanted delta in turn. With `lease`, only while this instance holds
/// the job's lease (renewed before each delta); tests pass `None`.
pub async fn pass(svc: &Services, lease: Option<&Lease>) -> anyhow::Result<PassReport> {
    let mut report = PassReport::default();
    if let Some(lease) = lease
        && !holds(svc, lease).await?
    {
        return Ok(report);
    }
    for wanted in wanted_deltas(svc).await? {
        if let Some(lease) = lease
            && !holds(svc, lease).await?
        {
            break;
        }
        match create_delta(svc, &Caller::system(), &wanted.product, &wanted.from, &wanted.to).await {
            Ok(DeltaOutcome::Created(view)) => {
                tracing::info!(delta = %view.target_name, length = view.length, image = view.image_length,
                    "delta job: published a delta");
                report.created += 1;
            }
            Ok(DeltaOutcome::Existing(_)) => {}
            Err(e @ ServiceError::Conflict { code: NOT_WORTHWHILE, .. }) => {
                tracing::info!(product = %wanted.product, from = %wanted.from, to = %wanted.to, reason = %e,
                    "delta job: not published");
                report.not_worthwhile += 1;
            }
            Err(e) => {
                tracing::warn!(product = %wanted.product, from = %wanted.from, to = %wanted.to, error = format!("{e:#}"),
                    "delta job: could not make a delta; trying again on the next pass");
                report.failed += 1;
            }
        }
    }
    Ok(report)
}

/// Takes or renews the job's lease; whether this instance holds it now.
async fn holds(svc: &Services, lease: &Lease) -> Result<bool, sea_orm::DbErr> {
    let now = svc.now_secs();
    lease_try_acquire(&svc.db, LEASE_NAME, &lease.holder, now, now.saturating_add(lease.seconds)).await
}
