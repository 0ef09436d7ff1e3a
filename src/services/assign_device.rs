//! Deciding, when a device reports, what its director should say: walk the product's started
//! rollouts (most recently started first) and let the first that takes the device decide,
//! following each rollout's state (DESIGN.md §4). Assignment happens only here, when a device
//! reports, never by sweeping the fleet.

use std::collections::{HashMap, HashSet};

use patchgate_protocol::bucket::bucket;
use patchgate_protocol::director::DirectorAction;
use sea_orm::{ConnectionTrait, Set};

use super::ServiceError;
use super::director::DirectorAssignment;
use super::rollout_view::{parse_stages, state_of};
use crate::db::cohorts::{cohort_ids_listing, cohort_list};
use crate::db::entities::{assignment, device, release, rollout};
use crate::db::releases::release_get;
use crate::db::rollouts::{assignment_insert, assignment_list_for_device, assignment_update, rollout_list_started};
use crate::domain::names::FirmwareVersion;
use crate::domain::rollout::{AssignmentPolicy, assignment_policy, stage_for_device};

/// Only this many of a product's most recently started rollouts are considered.
const ROLLOUTS_CONSIDERED: u64 = 50;

/// Assignment states from which a device keeps its assignment through a pause, halt or abort
/// ("installing or later").
const STARTED: [&str; 3] = ["installing", "awaiting_reboot", "installed"];
/// Started and not finished: the device is busy with this assignment.
const IN_PROGRESS: [&str; 2] = ["installing", "awaiting_reboot"];
/// States that are withdrawn by a pause, halt or abort.
const NOT_STARTED: [&str; 2] = ["assigned", "downloading"];

/// The cohort names of the device's product that contain it.
pub async fn cohorts_of(db: &impl ConnectionTrait, device: &device::Model) -> Result<HashSet<String>, ServiceError> {
    let tags: HashSet<String> =
        serde_json::from_str::<Vec<String>>(&device.tags).unwrap_or_default().into_iter().collect();
    let listed: HashSet<i64> = cohort_ids_listing(db, &device.device_id).await?.into_iter().collect();
    let mut names = HashSet::new();
    for c in cohort_list(db, Some(device.product_id)).await? {
        if listed.contains(&c.id) || selector_matches(c.selector_tags.as_deref(), &tags) {
            names.insert(c.name);
        }
    }
    Ok(names)
}

/// Whether a device with `tags` is selected by a stored selector (all its tags, at least one).
pub fn selector_matches(selector: Option<&str>, tags: &HashSet<String>) -> bool {
    let wanted: Vec<String> = selector.and_then(|s| serde_json::from_str(s).ok()).unwrap_or_default();
    !wanted.is_empty() && wanted.iter().all(|t| tags.contains(t))
}

struct Releases<'a, C> {
    db: &'a C,
    cache: HashMap<i64, release::Model>,
}

impl<C: ConnectionTrait> Releases<'_, C> {
    async fn get(&mut self, id: i64) -> Result<release::Model, ServiceError> {
        if let Some(r) = self.cache.get(&id) {
            return Ok(r.clone());
        }
        let r = release_get(self.db, id)
            .await?
            .ok_or_else(|| ServiceError::Internal(anyhow::anyhow!("release {id} vanished")))?;
        self.cache.insert(id, r.clone());
        Ok(r)
    }
}

fn runs_newer(device: &device::Model, release: &release::Model) -> bool {
    let installed = device.installed_version.as_deref().and_then(|v| FirmwareVersion::parse(v).ok());
    match (installed, FirmwareVersion::parse(&release.version)) {
        (Some(installed), Ok(offered)) => installed > offered,
        _ => false,
    }
}

/// Whether `target` is below the `rollback_floor` of `installed`.
fn below_floor(target: &release::Model, installed: &release::Model) -> bool {
    let floor = serde_json::from_str::<serde_json::Value>(&installed.custom)
        .ok()
        .and_then(|c| c.get("rollback_floor").and_then(|f| f.as_str()).map(str::to_owned))
        .and_then(|f| FirmwareVersion::parse(&f).ok());
    match (floor, FirmwareVersion::parse(&target.version)) {
        (Some(floor), Ok(target)) => target < floor,
        _ => false,
    }
}

/// Whether the director may name `release` at all: listed by the product's role (not yanked)
/// and not below the product's security floor (the agent would refuse either).
fn assignable(release: &release::Model, floor: Option<&FirmwareVersion>) -> bool {
    let below = match (floor, FirmwareVersion::parse(&release.version)) {
        (Some(floor), Ok(version)) => &version < floor,
        _ => false,
    };
    release.yanked_at.is_none() && !below
}

fn fits_hardware(device: &device::Model, release: &release::Model) -> bool {
    serde_json::from_str::<serde_json::Value>(&release.custom)
        .ok()
        .and_then(|c| c.get("hardware_ids").cloned())
        .and_then(|h| serde_json::from_value::<Vec<String>>(h).ok())
        .is_some_and(|ids| ids.contains(&device.hardware_id))
}

async fn withdraw(db: &impl ConnectionTrait, row: assignment::Model, now: i64) -> Result<(), ServiceError> {
    let mut active: assignment::ActiveModel = row.into();
    active.state = Set("withdrawn".into());
    active.updated_at = Set(now);
    assignment_update(db, active).await?;
    Ok(())
}

/// What `device` should be told now; records new, renewed and withdrawn assignments.
pub async fn desired_assignment(
    db: &impl ConnectionTrait,
    device: &device::Model,
    now: i64,
) -> Result<Option<DirectorAssignment>, ServiceError> {
    let rollouts = rollout_list_started(db, device.product_id, ROLLOUTS_CONSIDERED).await?;
    if rollouts.is_empty() {
        return Ok(None);
    }
    let ids = rollouts.iter().map(|r| r.id.clone()).collect();
    let mut rows: HashMap<String, assignment::Model> =
        assignment_list_for_device(db, device.id, ids).await?.into_iter().map(|a| (a.rollout_id.clone(), a)).collect();
    let mut releases = Releases { db, cache: HashMap::new() };
    let assigning =
        rollouts.iter().any(|r| state_of(r).is_ok_and(|s| assignment_policy(s) == AssignmentPolicy::Assign));
    let member_of = if assigning { cohorts_of(db, device).await? } else { HashSet::new() };
    let floor = crate::db::products::product_get(db, device.product_id)
        .await?
        .and_then(|p| FirmwareVersion::parse(&p.security_floor).ok());
    let floor = floor.as_ref();
    for r in &rollouts {
        let existing = rows.remove(&r.id);
        match assignment_policy(state_of(r)?) {
            AssignmentPolicy::Nothing => {}
            AssignmentPolicy::Assign => {
                let stages = parse_stages(r)?;
                let current = usize::try_from(r.current_stage).unwrap_or(0);
                let stage =
                    stage_for_device(&stages, current, bucket(&r.id, &device.device_id), |c| member_of.contains(c));
                match existing {
                    // Not started yet: it follows membership (a device an admin took out of the
                    // cohort loses it at its next report).
                    Some(a) if NOT_STARTED.contains(&a.state.as_str()) && stage.is_none() => {
                        withdraw(db, a, now).await?;
                        continue;
                    }
                    Some(a) if a.state != "withdrawn" => {
                        let release = releases.get(a.release_id).await?;
                        if assignable(&release, floor) {
                            return Ok(Some(install(release, r)));
                        }
                        // Yanked or below the floor since: unassigned (if not yet started).
                        if NOT_STARTED.contains(&a.state.as_str()) {
                            withdraw(db, a, now).await?;
                        }
                        continue;
                    }
                    _ => {}
                }
                let release = releases.get(r.release_id).await?;
                let runs_it = device.installed_release_id == Some(r.release_id);
                if !assignable(&release, floor)
                    || !fits_hardware(device, &release)
                    || runs_newer(device, &release)
                    || runs_it
                {
                    continue;
                }
                let Some(stage) = stage else {
                    continue;
                };
                // A device in the middle of installing another rollout's release finishes that
                // first (an older rollout below keeps it); open assignments that never started
                // elsewhere are superseded, so they cannot go stale and count as stalled.
                if rows.values().any(|o| IN_PROGRESS.contains(&o.state.as_str())) {
                    continue;
                }
                for other in rows.values().filter(|o| NOT_STARTED.contains(&o.state.as_str())) {
                    withdraw(db, other.clone(), now).await?;
                }
                assign(db, device, r, existing, stage, now).await?;
                return Ok(Some(install(release, r)));
            }
            AssignmentPolicy::KeepStarted => match existing {
                Some(a) if STARTED.contains(&a.state.as_str()) => {
                    let release = releases.get(a.release_id).await?;
                    if assignable(&release, floor) {
                        return Ok(Some(install(release, r)));
                    }
                }
                Some(a) if NOT_STARTED.contains(&a.state.as_str()) => withdraw(db, a, now).await?,
                _ => {}
            },
            AssignmentPolicy::RollBack => match existing {
                Some(a) if STARTED.contains(&a.state.as_str()) && a.from_release_id.is_some() => {
                    let from = releases.get(a.from_release_id.unwrap_or_default()).await?;
                    let rolled_back = releases.get(a.release_id).await?;
                    if below_floor(&from, &rolled_back) || !assignable(&from, floor) {
                        // The agent would refuse it (never below the installed release's
                        // floor): keep the device where it is and say why in the log.
                        tracing::warn!(device = %device.device_id, rollout = %r.id, from = %from.version,
                            "rollback target is below the rolled-back release's rollback_floor; not assigned");
                        if assignable(&rolled_back, floor) {
                            return Ok(Some(install(rolled_back, r)));
                        }
                        continue;
                    }
                    return Ok(Some(DirectorAssignment {
                        release: from,
                        rollout_id: r.id.clone(),
                        action: DirectorAction::Rollback,
                    }));
                }
                Some(a) if NOT_STARTED.contains(&a.state.as_str()) => withdraw(db, a, now).await?,
                _ => {}
            },
        }
    }
    Ok(None)
}

fn install(release: release::Model, r: &rollout::Model) -> DirectorAssignment {
    DirectorAssignment { release, rollout_id: r.id.clone(), action: DirectorAction::Install }
}

async fn assign(
    db: &impl ConnectionTrait,
    device: &device::Model,
    r: &rollout::Model,
    existing: Option<assignment::Model>,
    stage: usize,
    now: i64,
) -> Result<(), ServiceError> {
    let stage = i32::try_from(stage).unwrap_or(i32::MAX);
    match existing {
        // A withdrawn assignment comes back (the rollout resumed): a fresh start for the gate.
        Some(a) => {
            let mut active: assignment::ActiveModel = a.into();
            active.stage = Set(stage);
            active.state = Set("assigned".into());
            active.detail = Set(None);
            active.from_release_id = Set(device.installed_release_id);
            active.assigned_at = Set(now);
            active.updated_at = Set(now);
            active.final_at = Set(None);
            assignment_update(db, active).await?;
        }
        None => {
            assignment_insert(
                db,
                assignment::ActiveModel {
                    rollout_id: Set(r.id.clone()),
                    device_row_id: Set(device.id),
                    stage: Set(stage),
                    release_id: Set(r.release_id),
                    from_release_id: Set(device.installed_release_id),
                    state: Set("assigned".into()),
                    detail: Set(None),
                    assigned_at: Set(now),
                    updated_at: Set(now),
                    final_at: Set(None),
                    ..Default::default()
                },
            )
            .await?;
        }
    }
    Ok(())
}
