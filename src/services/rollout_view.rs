//! Converting stored rollouts to the pure domain's view, and counting a rollout's assignments
//! per stage for the gate and for readers.

use sea_orm::ConnectionTrait;
use serde::{Deserialize, Serialize};

use super::ServiceError;
use crate::db::entities::rollout;
use crate::db::rollouts::{assignment_counts, assignment_stalled_counts};
use crate::domain::rollout::{FailureRate, Gate, Percent, RolloutState, RolloutView, StageCounts, StagePlan};

/// A stage as stored in `rollouts.stages` (JSON): integers only.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredStage {
    /// Cohort name within the rollout's product.
    pub cohort: String,
    /// Percent × 100.
    pub basis_points: u16,
    /// Soak before the next stage, seconds.
    pub soak_seconds: i64,
}

fn corrupt(what: &str, id: &str) -> ServiceError {
    ServiceError::Internal(anyhow::anyhow!("rollout {id}: stored {what} is invalid"))
}

/// The rollout's state.
pub fn state_of(r: &rollout::Model) -> Result<RolloutState, ServiceError> {
    RolloutState::parse(&r.state).ok_or_else(|| corrupt("state", &r.id))
}

/// The rollout's stages.
pub fn parse_stages(r: &rollout::Model) -> Result<Vec<StagePlan>, ServiceError> {
    let stored: Vec<StoredStage> = serde_json::from_str(&r.stages).map_err(|_| corrupt("stages", &r.id))?;
    stored
        .into_iter()
        .map(|s| {
            Ok(StagePlan {
                cohort: s.cohort,
                percent: Percent::from_basis_points(s.basis_points).map_err(|_| corrupt("percent", &r.id))?,
                soak_seconds: s.soak_seconds,
            })
        })
        .collect()
}

/// The rollout's gate.
pub fn gate_of(r: &rollout::Model) -> Result<Gate, ServiceError> {
    let rate = u16::try_from(r.max_failure_rate_bp).map_err(|_| corrupt("gate", &r.id))?;
    Ok(Gate {
        max_failure_rate: FailureRate::from_basis_points(rate).map_err(|_| corrupt("gate", &r.id))?,
        min_reports: u32::try_from(r.min_reports).unwrap_or(u32::MAX),
        stall_seconds: r.stall_seconds,
    })
}

/// The pure view the domain rules work on.
pub fn view_of(r: &rollout::Model) -> Result<RolloutView, ServiceError> {
    Ok(RolloutView {
        state: state_of(r)?,
        stages: parse_stages(r)?,
        current_stage: usize::try_from(r.current_stage).unwrap_or(0),
        stage_started_at: r.stage_started_at,
        gate: gate_of(r)?,
        auto_advance: r.auto_advance,
    })
}

fn add(counts: &mut StageCounts, state: &str, n: u64) {
    counts.assigned += n;
    match state {
        "installing" | "awaiting_reboot" => counts.installing += n,
        "installed" => counts.installed += n,
        "failed" => counts.failed += n,
        "rejected" => counts.rejected += n,
        _ => {}
    }
}

/// Per-stage counts of a rollout's assignments. With `gate_window`, as the gate sees them:
/// outcomes only since the gate window opened (`gate_since`), and open assignments silent past
/// the stall time counted as stalled.
pub async fn stage_counts(
    db: &impl ConnectionTrait,
    r: &rollout::Model,
    stages: usize,
    gate_window: bool,
    now: i64,
) -> Result<Vec<StageCounts>, ServiceError> {
    let mut out = vec![StageCounts::default(); stages];
    let slot = |stage: i32| usize::try_from(stage).ok().filter(|s| *s < stages);
    for (stage, state, n) in assignment_counts(db, &r.id, None).await? {
        if let Some(i) = slot(stage) {
            let n = u64::try_from(n).unwrap_or(0);
            if gate_window && matches!(state.as_str(), "installed" | "failed" | "rejected") {
                // Counted below, within the window only; still part of the stage's population.
                out[i].assigned += n;
            } else {
                add(&mut out[i], &state, n);
            }
        }
    }
    if gate_window {
        for (stage, state, n) in assignment_counts(db, &r.id, Some(r.gate_since)).await? {
            if let Some(i) = slot(stage)
                && matches!(state.as_str(), "installed" | "failed" | "rejected")
            {
                let mut c = StageCounts::default();
                add(&mut c, &state, u64::try_from(n).unwrap_or(0));
                out[i].installed += c.installed;
                out[i].failed += c.failed;
                out[i].rejected += c.rejected;
            }
        }
        // Silent since before `now - stall`, and the window has been open at least that long.
        let before = now - r.stall_seconds;
        if r.gate_since <= before {
            for (stage, n) in assignment_stalled_counts(db, &r.id, before).await? {
                if let Some(i) = slot(stage) {
                    out[i].stalled += u64::try_from(n).unwrap_or(0);
                }
            }
        }
    }
    Ok(out)
}
