//! The rollout gate job: evaluates every running rollout on a schedule, halting those over
//! their gate (including devices that went silent past the stall time) and advancing those
//! whose soak has passed (see `services::manage_rollout::evaluate_rollout`).

use std::time::Duration;

use crate::db::leases::{lease_release, lease_try_acquire};
use crate::db::rollouts::rollout_list_running;
use crate::services::Services;
use crate::services::manage_rollout::evaluate_rollout;

const LEASE_NAME: &str = "rollout-gates";

/// Runs the job every `every` (the first time at once) until the task is dropped.
pub async fn run(svc: Services, holder: String, every: Duration) {
    let mut interval = tokio::time::interval(every);
    let lease_seconds = i64::try_from(every.as_secs().saturating_mul(3)).unwrap_or(i64::MAX).max(3);
    loop {
        interval.tick().await;
        let now = svc.now_secs();
        match lease_try_acquire(&svc.db, LEASE_NAME, &holder, now, now.saturating_add(lease_seconds)).await {
            Ok(true) => {
                if let Err(e) = evaluate_all(&svc).await {
                    tracing::error!(error = format!("{e:#}"), "rollout gate evaluation failed");
                    let _ = lease_release(&svc.db, LEASE_NAME, &holder).await;
                }
            }
            Ok(false) => {}
            Err(e) => tracing::error!(error = %e, "taking the rollout-gates lease"),
        }
    }
}

/// Evaluates every running rollout once; returns how many changed state or stage.
pub async fn evaluate_all(svc: &Services) -> anyhow::Result<usize> {
    let mut changed = 0;
    for r in rollout_list_running(&svc.db).await? {
        // One rollout's failure must not keep the others from being evaluated.
        match evaluate_rollout(svc, &r.id).await {
            Ok(Some(_)) => changed += 1,
            Ok(None) => {}
            Err(e) => tracing::error!(rollout = %r.id, error = %e, "evaluating a rollout"),
        }
    }
    Ok(changed)
}
