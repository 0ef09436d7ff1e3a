//! What one device should run, decided from an immutable snapshot of its product's fleet plan
//! (started rollouts, their stages, cohorts, releases, yanks, the security floor) and the
//! device's own facts (tags, what it runs, its assignment rows). Pure: the services layer
//! gathers the inputs, calls [`decide`], then applies the returned changes and signs only if
//! the decision differs from what is stored (docs/design.md §4, "Gather → decide → apply").
//!
//! The rules, in the order a device meets them:
//! - Rollouts are considered most recently started first; the first that takes the device
//!   decides. Draft rollouts assign nothing.
//! - Running or completed: a device in a stage (cohort member and `bucket < percent`) is
//!   assigned the release unless it already runs it or something newer, its hardware is not
//!   listed, or the release may not be named (yanked, below the product's security floor). An
//!   assignment not yet started follows membership: out of the stage, it is withdrawn. A device
//!   busy installing another rollout's release finishes that first; another rollout's
//!   assignment that never started is superseded (withdrawn).
//! - Paused, halted, aborted: an assignment the device started (`installing` or later) is kept;
//!   one not started is withdrawn; nobody new is assigned.
//! - Rolled back: a device that started this release goes back to the release it ran before,
//!   unless that is below the rolled-back release's `rollback_floor` or may not be named (the
//!   agent would refuse it): then it keeps the rolled-back release.

use std::collections::{HashMap, HashSet};

use patchgate_protocol::report::AttemptState;

use super::names::FirmwareVersion;
use super::rollout::{AssignmentPolicy, RolloutState, StagePlan, assignment_policy, stage_for_device};

/// A release as the rules see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReleaseFacts {
    /// Its row id.
    pub id: i64,
    /// Its version (`None` if stored unparsable: never newer, never below a floor).
    pub version: Option<FirmwareVersion>,
    /// Yanked releases are no longer listed by the product's role.
    pub yanked: bool,
    /// Hardware it runs on.
    pub hardware_ids: Vec<String>,
    /// The lowest version a device running it may go back to.
    pub rollback_floor: Option<FirmwareVersion>,
}

/// A started rollout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RolloutFacts {
    /// Its id.
    pub id: String,
    /// Its state.
    pub state: RolloutState,
    /// The release it sends.
    pub release_id: i64,
    /// Its stages.
    pub stages: Vec<StagePlan>,
    /// The stage it has reached.
    pub current_stage: usize,
}

/// A cohort: explicit members and/or a tag selector (all of its tags, at least one).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CohortFacts {
    /// Device ids listed explicitly.
    pub members: HashSet<String>,
    /// Tags a device must all carry; empty: no selector.
    pub selector: Vec<String>,
}

/// One product's plan, as of one `plan` epoch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProductPlan {
    /// The product's security floor.
    pub security_floor: Option<FirmwareVersion>,
    /// Started rollouts, most recently started first.
    pub rollouts: Vec<RolloutFacts>,
    /// Cohorts by name.
    pub cohorts: HashMap<String, CohortFacts>,
    /// Every release of the product by id.
    pub releases: HashMap<i64, ReleaseFacts>,
}

/// Where a device's assignment in one rollout stands: assigned, one of the attempt states the
/// device reported since, or withdrawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AssignmentState {
    /// Assigned, nothing reported yet.
    Assigned,
    /// What the device last reported of its attempt.
    Attempt(AttemptState),
    /// Taken back.
    Withdrawn,
}

impl AssignmentState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Assigned => "assigned",
            Self::Attempt(state) => state.as_str(),
            Self::Withdrawn => "withdrawn",
        }
    }

    /// From the stored name.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "assigned" => Some(Self::Assigned),
            "withdrawn" => Some(Self::Withdrawn),
            other => AttemptState::parse(other).map(Self::Attempt),
        }
    }

    /// Not started: a pause, halt or abort withdraws it.
    fn not_started(self) -> bool {
        matches!(self, Self::Assigned | Self::Attempt(AttemptState::Downloading))
    }

    /// Started ("installing or later"): kept through a pause, halt or abort.
    fn started(self) -> bool {
        matches!(self, Self::Attempt(state) if state.is_started())
    }

    /// Started and not finished: the device is busy with it.
    fn in_progress(self) -> bool {
        matches!(self, Self::Attempt(AttemptState::Installing | AttemptState::AwaitingReboot))
    }
}

/// The device's assignment row in one rollout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AssignmentFacts {
    /// The rollout.
    pub rollout_id: String,
    /// The release it assigned.
    pub release_id: i64,
    /// What the device ran when assigned (the rollback target).
    pub from_release_id: Option<i64>,
    /// Where it stands.
    pub state: AssignmentState,
}

/// What the rules need to know about one device.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceFacts {
    /// Its id (cohort membership).
    pub device_id: String,
    /// Its hardware id.
    pub hardware_id: String,
    /// Its admin-set tags.
    pub tags: HashSet<String>,
    /// The release it runs, if known.
    pub installed_release_id: Option<i64>,
    /// The version it runs, if known.
    pub installed_version: Option<FirmwareVersion>,
    /// Its assignment rows in the plan's rollouts.
    pub assignments: Vec<AssignmentFacts>,
}

/// What the director should say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Nothing to install.
    Nothing,
    /// Install `release_id`, as rollout `rollout_id` decided.
    Install {
        /// The release.
        release_id: i64,
        /// The rollout.
        rollout_id: String,
    },
    /// Go back to `release_id` (the rollout was rolled back).
    Rollback {
        /// The release the device ran before.
        release_id: i64,
        /// The rollout.
        rollout_id: String,
    },
}

/// A change to the device's assignment rows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Mark the device's assignment in this rollout withdrawn.
    Withdraw {
        /// The rollout.
        rollout_id: String,
    },
    /// Assign the device afresh (a new row, or a withdrawn one renewed) at `stage`.
    Assign {
        /// The rollout.
        rollout_id: String,
        /// The stage it enters at.
        stage: usize,
        /// The release it runs now (the rollback target).
        from_release_id: Option<i64>,
    },
}

/// The decision, the row changes that go with it, and why anything was held back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// What the director says.
    pub decision: Decision,
    /// Assignment rows to change, in order.
    pub changes: Vec<Change>,
    /// Human-readable reasons a rollback was held back (for the log).
    pub held_back: Vec<String>,
}

/// The plan names a release it does not hold: the snapshot is inconsistent.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("release {0} is not in the product's plan")]
pub struct UnknownRelease(pub i64);

impl ProductPlan {
    fn release(&self, id: i64) -> Result<&ReleaseFacts, UnknownRelease> {
        self.releases.get(&id).ok_or(UnknownRelease(id))
    }

    /// Whether the director may name `release` at all: listed (not yanked) and not below the
    /// product's security floor (the agent would refuse either).
    fn assignable(&self, release: &ReleaseFacts) -> bool {
        let below = match (&self.security_floor, &release.version) {
            (Some(floor), Some(version)) => version < floor,
            _ => false,
        };
        !release.yanked && !below
    }

    fn in_cohort(&self, cohort: &str, device: &DeviceFacts) -> bool {
        self.cohorts.get(cohort).is_some_and(|c| {
            c.members.contains(&device.device_id)
                || (!c.selector.is_empty() && c.selector.iter().all(|t| device.tags.contains(t)))
        })
    }
}

/// Decides what `device` should run under `plan`. `bucket` gives the device's bucket in a
/// rollout (by rollout id): `patchgate_protocol::bucket::bucket(rollout_id, device_id)`.
pub fn decide(
    plan: &ProductPlan,
    device: &DeviceFacts,
    bucket: impl Fn(&str) -> u16,
) -> Result<Outcome, UnknownRelease> {
    let mut rows: HashMap<&str, &AssignmentFacts> =
        device.assignments.iter().map(|a| (a.rollout_id.as_str(), a)).collect();
    let mut out = Outcome { decision: Decision::Nothing, changes: Vec::new(), held_back: Vec::new() };
    let withdraw = |out: &mut Outcome, a: &AssignmentFacts| {
        out.changes.push(Change::Withdraw { rollout_id: a.rollout_id.clone() });
    };
    let install = |release_id: i64, r: &RolloutFacts| Decision::Install { release_id, rollout_id: r.id.clone() };
    for r in &plan.rollouts {
        let existing = rows.remove(r.id.as_str());
        match assignment_policy(r.state) {
            AssignmentPolicy::Nothing => {}
            AssignmentPolicy::Assign => {
                let stage = stage_for_device(&r.stages, r.current_stage, bucket(&r.id), |c| plan.in_cohort(c, device));
                match existing {
                    // Not started yet: it follows membership.
                    Some(a) if a.state.not_started() && stage.is_none() => {
                        withdraw(&mut out, a);
                        continue;
                    }
                    Some(a) if a.state != AssignmentState::Withdrawn => {
                        if plan.assignable(plan.release(a.release_id)?) {
                            out.decision = install(a.release_id, r);
                            return Ok(out);
                        }
                        // Yanked or below the floor since: unassigned (if not yet started).
                        if a.state.not_started() {
                            withdraw(&mut out, a);
                        }
                        continue;
                    }
                    _ => {}
                }
                let release = plan.release(r.release_id)?;
                let runs_newer = match (&device.installed_version, &release.version) {
                    (Some(installed), Some(offered)) => installed > offered,
                    _ => false,
                };
                if !plan.assignable(release)
                    || !release.hardware_ids.contains(&device.hardware_id)
                    || runs_newer
                    || device.installed_release_id == Some(r.release_id)
                {
                    continue;
                }
                let Some(stage) = stage else {
                    continue;
                };
                // Busy installing an older rollout's release: finish that first. Older
                // assignments that never started are superseded.
                if rows.values().any(|o| o.state.in_progress()) {
                    continue;
                }
                let mut superseded: Vec<&AssignmentFacts> =
                    rows.values().copied().filter(|o| o.state.not_started()).collect();
                superseded.sort_by(|a, b| a.rollout_id.cmp(&b.rollout_id));
                for other in superseded {
                    withdraw(&mut out, other);
                }
                out.changes.push(Change::Assign {
                    rollout_id: r.id.clone(),
                    stage,
                    from_release_id: device.installed_release_id,
                });
                out.decision = install(r.release_id, r);
                return Ok(out);
            }
            AssignmentPolicy::KeepStarted => match existing {
                Some(a) if a.state.started() => {
                    // Kept unless it may no longer be named (yanked, below the floor since).
                    let keep = plan.assignable(plan.release(a.release_id)?);
                    if keep {
                        out.decision = install(a.release_id, r);
                        return Ok(out);
                    }
                }
                Some(a) if a.state.not_started() => withdraw(&mut out, a),
                _ => {}
            },
            AssignmentPolicy::RollBack => match existing {
                Some(a) if a.state.started() && a.from_release_id.is_some() => {
                    let from_id = a.from_release_id.unwrap_or_default();
                    let from = plan.release(from_id)?;
                    let rolled_back = plan.release(a.release_id)?;
                    let below_floor = match (&rolled_back.rollback_floor, &from.version) {
                        (Some(floor), Some(version)) => version < floor,
                        _ => false,
                    };
                    if below_floor || !plan.assignable(from) {
                        out.held_back.push(format!(
                            "rollout {}: the release before it (id {from_id}) is below the rolled-back release's \
                             rollback_floor or may not be named; not assigned",
                            r.id
                        ));
                        if plan.assignable(rolled_back) {
                            out.decision = install(a.release_id, r);
                            return Ok(out);
                        }
                        continue;
                    }
                    out.decision = Decision::Rollback { release_id: from_id, rollout_id: r.id.clone() };
                    return Ok(out);
                }
                Some(a) if a.state.not_started() => withdraw(&mut out, a),
                _ => {}
            },
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
