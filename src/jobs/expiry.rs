//! Re-signs online metadata before it expires (see `services::refresh`).

use std::time::Duration;

use crate::db::leases::{lease_release, lease_try_acquire};
use crate::services::Services;
use crate::services::refresh::{expiry_problems, refresh_expiring};

const LEASE_NAME: &str = "metadata-refresh";

/// Runs the job every `every` (the first time at once) until the task is dropped.
pub async fn run(svc: Services, holder: String, every: Duration) {
    let mut interval = tokio::time::interval(every);
    // A lease outlives a few ticks so one instance keeps the job while it is alive.
    let lease_seconds = i64::try_from(every.as_secs().saturating_mul(3)).unwrap_or(i64::MAX).max(3);
    loop {
        interval.tick().await;
        if let Err(e) = tick(&svc, &holder, lease_seconds).await {
            tracing::error!(error = format!("{e:#}"), "metadata refresh failed");
        }
    }
}

async fn tick(svc: &Services, holder: &str, lease_seconds: i64) -> anyhow::Result<()> {
    let now = svc.now_secs();
    if !lease_try_acquire(&svc.db, LEASE_NAME, holder, now, now.saturating_add(lease_seconds)).await? {
        return Ok(());
    }
    if let Err(e) = refresh_expiring(svc).await {
        // Another instance (perhaps with the keys this one lacks) should try next.
        let _ = lease_release(&svc.db, LEASE_NAME, holder).await;
        return Err(e.into());
    }
    for problem in expiry_problems(svc).await.map_err(anyhow::Error::new)? {
        tracing::warn!(%problem, "metadata near expiry");
    }
    Ok(())
}
