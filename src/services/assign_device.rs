//! Deciding, when a device reports, what its director should say: gather (the product's plan
//! snapshot and the device's assignment rows), decide (`domain::plan::decide`, pure), apply
//! (the assignment rows it changes). Assignment happens only here, when a device reports,
//! never by sweeping the fleet (docs/design.md §4).
//!
//! The plan snapshot is kept in memory per product and keyed by the `plan` epoch, which
//! database triggers raise with every change a decision depends on. A report reads the epoch
//! first in its transaction: equal to the snapshot's, the snapshot is current; otherwise the
//! plan is read again. No invalidation call can be forgotten, on this instance or another.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use patchgate_protocol::bucket::bucket;
use patchgate_protocol::director::DirectorAction;
use sea_orm::{ConnectionTrait, Set};

use super::ServiceError;
use super::director::DirectorAssignment;
use super::rollout_view::{parse_stages, state_of};
use crate::db::cohorts::{cohort_list, cohort_members};
use crate::db::entities::{assignment, device, release};
use crate::db::releases::release_list_by_product;
use crate::db::rollouts::{
    assignment_insert_many, assignment_list_for_device, assignment_update, rollout_list_started,
};
use crate::domain::names::FirmwareVersion;
use crate::domain::plan::{
    AssignmentFacts, AssignmentState, Change, CohortFacts, Decision, DeviceFacts, ProductPlan, ReleaseFacts,
    RolloutFacts, decide,
};

/// Only this many of a product's most recently started rollouts are considered.
const ROLLOUTS_CONSIDERED: u64 = 50;

/// Whether a device with `tags` is selected by a stored selector (all its tags, at least one).
pub fn selector_matches(selector: Option<&str>, tags: &HashSet<String>) -> bool {
    let wanted = parse_selector(selector);
    !wanted.is_empty() && wanted.iter().all(|t| tags.contains(t))
}

fn parse_selector(selector: Option<&str>) -> Vec<String> {
    selector.and_then(|s| serde_json::from_str(s).ok()).unwrap_or_default()
}

/// One product's plan as of one epoch, with the release rows the director signs from.
#[derive(Debug)]
pub struct PlanSnapshot {
    /// The `plan` epoch it was read at.
    pub epoch: i64,
    /// What the rules see.
    pub plan: ProductPlan,
    /// The product's releases by id.
    pub releases: HashMap<i64, release::Model>,
}

/// The newest plan snapshot of each product this instance has needed.
#[derive(Debug, Default)]
pub struct Plans {
    by_product: RwLock<HashMap<i64, Arc<PlanSnapshot>>>,
}

impl Plans {
    /// The plan of `product_id` at `epoch` (read by the caller in its transaction, before this).
    pub async fn get(
        &self,
        db: &impl ConnectionTrait,
        product_id: i64,
        epoch: i64,
    ) -> Result<Arc<PlanSnapshot>, ServiceError> {
        let known = self.by_product.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(&product_id).cloned();
        if let Some(snapshot) = known.filter(|s| s.epoch == epoch) {
            return Ok(snapshot);
        }
        let snapshot = Arc::new(load_plan(db, product_id, epoch).await?);
        let mut map = self.by_product.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.get(&product_id).is_none_or(|s| s.epoch <= epoch) {
            map.insert(product_id, snapshot.clone());
        }
        Ok(snapshot)
    }
}

fn version(raw: &str) -> Option<FirmwareVersion> {
    FirmwareVersion::parse(raw).ok()
}

fn release_facts(r: &release::Model) -> ReleaseFacts {
    let custom = serde_json::from_str::<serde_json::Value>(&r.custom).unwrap_or_default();
    ReleaseFacts {
        id: r.id,
        version: version(&r.version),
        yanked: r.yanked_at.is_some(),
        hardware_ids: custom
            .get("hardware_ids")
            .cloned()
            .and_then(|h| serde_json::from_value(h).ok())
            .unwrap_or_default(),
        rollback_floor: custom.get("rollback_floor").and_then(|f| f.as_str()).and_then(version),
    }
}

async fn load_plan(db: &impl ConnectionTrait, product_id: i64, epoch: i64) -> Result<PlanSnapshot, ServiceError> {
    let mut rollouts = Vec::new();
    for r in rollout_list_started(db, product_id, ROLLOUTS_CONSIDERED).await? {
        rollouts.push(RolloutFacts {
            state: state_of(&r)?,
            stages: parse_stages(&r)?,
            current_stage: usize::try_from(r.current_stage).unwrap_or(0),
            release_id: r.release_id,
            id: r.id,
        });
    }
    let mut cohorts = HashMap::new();
    for c in cohort_list(db, Some(product_id)).await? {
        let members = cohort_members(db, c.id).await?.into_iter().collect();
        cohorts.insert(c.name, CohortFacts { members, selector: parse_selector(c.selector_tags.as_deref()) });
    }
    let releases: HashMap<i64, release::Model> =
        release_list_by_product(db, product_id).await?.into_iter().map(|r| (r.id, r)).collect();
    let security_floor =
        crate::db::products::product_get(db, product_id).await?.and_then(|p| version(&p.security_floor));
    let plan = ProductPlan {
        security_floor,
        rollouts,
        cohorts,
        releases: releases.values().map(|r| (r.id, release_facts(r))).collect(),
    };
    Ok(PlanSnapshot { epoch, plan, releases })
}

fn device_facts(device: &device::Model, rows: &[assignment::Model]) -> Result<DeviceFacts, ServiceError> {
    let assignments = rows
        .iter()
        .map(|a| {
            let state = AssignmentState::parse(&a.state).ok_or_else(|| {
                ServiceError::Internal(anyhow::anyhow!("assignment {}: stored state {:?} is invalid", a.id, a.state))
            })?;
            Ok(AssignmentFacts {
                rollout_id: a.rollout_id.clone(),
                release_id: a.release_id,
                from_release_id: a.from_release_id,
                state,
            })
        })
        .collect::<Result<_, ServiceError>>()?;
    Ok(DeviceFacts {
        device_id: device.device_id.clone(),
        hardware_id: device.hardware_id.clone(),
        tags: super::devices::tag_set(&device.tags, device.attributes.as_deref()),
        installed_release_id: device.installed_release_id,
        installed_version: device.installed_version.as_deref().and_then(version),
        assignments,
    })
}

/// What deciding for one device gave: the assignment rows to change, and what the director
/// should say.
#[derive(Debug)]
pub struct Planned {
    /// Assignments to withdraw, renew or create.
    pub changes: Vec<Change>,
    /// What the device should install; `None`: nothing.
    pub assignment: Option<DirectorAssignment>,
}

/// Decides for `device` under `snapshot`, from its assignment rows for the snapshot's
/// rollouts. Reads and writes nothing.
pub fn plan_device(
    snapshot: &PlanSnapshot,
    device: &device::Model,
    rows: &[assignment::Model],
) -> Result<Planned, ServiceError> {
    if snapshot.plan.rollouts.is_empty() {
        return Ok(Planned { changes: Vec::new(), assignment: None });
    }
    let facts = device_facts(device, rows)?;
    let outcome = decide(&snapshot.plan, &facts, |rollout| bucket(rollout, &device.device_id))
        .map_err(|e| ServiceError::Internal(anyhow::Error::new(e)))?;
    for reason in &outcome.held_back {
        tracing::warn!(device = %device.device_id, "{reason}");
    }
    let release = |id: i64| {
        snapshot
            .releases
            .get(&id)
            .cloned()
            .ok_or_else(|| ServiceError::Internal(anyhow::anyhow!("release {id} vanished")))
    };
    let assignment = match outcome.decision {
        Decision::Nothing => None,
        Decision::Install { release_id, rollout_id } => {
            Some(DirectorAssignment { release: release(release_id)?, rollout_id, action: DirectorAction::Install })
        }
        Decision::Rollback { release_id, rollout_id } => {
            Some(DirectorAssignment { release: release(release_id)?, rollout_id, action: DirectorAction::Rollback })
        }
    };
    Ok(Planned { changes: outcome.changes, assignment })
}

/// Writes `changes` for device row `device_row`, whose assignment rows are `rows`: withdrawals
/// and renewals at once, new assignments into `inserts`, for the caller to store in one
/// statement ([`assignment_insert_many`]).
pub async fn apply_changes(
    db: &impl ConnectionTrait,
    snapshot: &PlanSnapshot,
    device_row: i64,
    rows: Vec<assignment::Model>,
    changes: Vec<Change>,
    now: i64,
    inserts: &mut Vec<assignment::ActiveModel>,
) -> Result<(), ServiceError> {
    let mut rows: HashMap<String, assignment::Model> = rows.into_iter().map(|a| (a.rollout_id.clone(), a)).collect();
    for change in changes {
        match change {
            Change::Withdraw { rollout_id } => {
                if let Some(row) = rows.remove(&rollout_id) {
                    withdraw(db, row, now).await?;
                }
            }
            Change::Assign { rollout_id, stage, from_release_id } => {
                let release_id = snapshot.plan.rollouts.iter().find(|r| r.id == rollout_id).map(|r| r.release_id);
                let release_id = release_id
                    .ok_or_else(|| ServiceError::Internal(anyhow::anyhow!("rollout {rollout_id} left the plan")))?;
                let new = NewAssignment { device_row, rollout_id: &rollout_id, release_id, from_release_id };
                assign(db, new, rows.remove(&rollout_id), stage, now, inserts).await?;
            }
        }
    }
    Ok(())
}

/// What `device` should be told now, under the plan at `epoch`; records new, renewed and
/// withdrawn assignments.
pub async fn desired_assignment(
    db: &impl ConnectionTrait,
    plans: &Plans,
    device: &device::Model,
    epoch: i64,
    now: i64,
) -> Result<Option<DirectorAssignment>, ServiceError> {
    let snapshot = plans.get(db, device.product_id, epoch).await?;
    if snapshot.plan.rollouts.is_empty() {
        return Ok(None);
    }
    let ids = snapshot.plan.rollouts.iter().map(|r| r.id.clone()).collect();
    let rows = assignment_list_for_device(db, device.id, ids).await?;
    let planned = plan_device(&snapshot, device, &rows)?;
    let mut inserts = Vec::new();
    apply_changes(db, &snapshot, device.id, rows, planned.changes, now, &mut inserts).await?;
    assignment_insert_many(db, inserts).await?;
    Ok(planned.assignment)
}

async fn withdraw(db: &impl ConnectionTrait, row: assignment::Model, now: i64) -> Result<(), ServiceError> {
    let mut active: assignment::ActiveModel = row.into();
    active.state = Set(AssignmentState::Withdrawn.as_str().into());
    active.updated_at = Set(now);
    assignment_update(db, active).await?;
    Ok(())
}

struct NewAssignment<'a> {
    device_row: i64,
    rollout_id: &'a str,
    release_id: i64,
    from_release_id: Option<i64>,
}

async fn assign(
    db: &impl ConnectionTrait,
    new: NewAssignment<'_>,
    existing: Option<assignment::Model>,
    stage: usize,
    now: i64,
    inserts: &mut Vec<assignment::ActiveModel>,
) -> Result<(), ServiceError> {
    let stage = i32::try_from(stage).unwrap_or(i32::MAX);
    let assigned = AssignmentState::Assigned.as_str().to_owned();
    match existing {
        // A withdrawn assignment comes back (the rollout resumed): a fresh start for the gate.
        Some(a) => {
            let mut active: assignment::ActiveModel = a.into();
            active.stage = Set(stage);
            active.state = Set(assigned);
            active.detail = Set(None);
            active.from_release_id = Set(new.from_release_id);
            active.assigned_at = Set(now);
            active.updated_at = Set(now);
            active.final_at = Set(None);
            assignment_update(db, active).await?;
        }
        None => {
            inserts.push(assignment::ActiveModel {
                rollout_id: Set(new.rollout_id.to_owned()),
                device_row_id: Set(new.device_row),
                stage: Set(stage),
                release_id: Set(new.release_id),
                from_release_id: Set(new.from_release_id),
                state: Set(assigned),
                detail: Set(None),
                assigned_at: Set(now),
                updated_at: Set(now),
                final_at: Set(None),
                ..Default::default()
            });
        }
    }
    Ok(())
}
