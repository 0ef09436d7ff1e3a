//! Deciding again for many devices at once: reports that repeat what is stored, from devices
//! whose stored decision predates the current plan (the first poll of each device after an
//! admin opened a stage, paused, yanked…).
//!
//! The group-commit writer hands over the reports its conditional update did not record. In
//! the group's transaction, with a fixed number of statements whatever the group's size:
//!
//! 1. read the `plan` epoch (before anything the decision depends on, as the full path does);
//! 2. record every counter with one conditional update that accepts any stored plan epoch
//!    ([`record_for_decision`]); a report it does not record (stale counter, changed attempt,
//!    a role due for refresh) goes the full path;
//! 3. read the assignment rows of all recorded devices in one query and decide for each in
//!    memory (`assign_device::plan_device`);
//! 4. for devices whose decision changed, read their roles' versions in one query;
//! 5. store the new assignments with one insert, and every device's decision and the epoch it
//!    was made at with one update, while new director roles are signed (on every core:
//!    `director::sign_new_roles_many`): the versions and refresh time a decision stores are
//!    known before the signing ends (`director::Signed::of_new_roles`). On SQLite the writer
//!    is the one path every first report takes, so its statements and the signing no longer
//!    wait for each other;
//! 6. store the signed roles with one insert.
//!
//! Only the rare withdrawals and renewals are a statement per row. A failure anywhere fails
//! the whole step; the writer rolls it back and every report takes the full path on its own.

use std::collections::HashMap;
use std::sync::Arc;

use super::assign_device::{PlanSnapshot, apply_changes, plan_device};
use super::director::{DirectorAssignment, SignJob, Signed, latest_versions_of, metadata_rows, sign_new_roles_many};
use super::image_repo::director_online_signer;
use super::unchanged_reports::{FastOutcome, UnchangedReport, record_for_decision};
use super::{ServiceError, Services};
use crate::db::device_metadata::device_metadata_insert_many;
use crate::db::devices::{DecisionRow, devices_set_decisions};
use crate::db::entities::{assignment, device};
use crate::db::epochs::plan_epoch_current;
use crate::db::rollouts::{assignment_insert_many, assignment_list_for_devices};

/// The device as the decision must see it: the release it runs recognised from the plan's
/// releases when its image (name and SHA-256) is one of them; otherwise as stored.
fn with_installed_release(snapshot: &PlanSnapshot, mut d: device::Model) -> device::Model {
    let (Some(name), Some(sha)) = (&d.installed_name, &d.installed_sha256) else {
        return d;
    };
    if let Some(r) = snapshot.releases.values().find(|r| &r.target_name == name && &r.sha256 == sha) {
        d.installed_release_id = Some(r.id);
        d.installed_version = Some(r.version.clone());
    }
    d
}

/// Records and decides `reports` in `txn`; one outcome per report, in order:
/// [`FastOutcome::Decided`] or [`FastOutcome::NotApplied`] (the full path must look at it).
/// Only the first report of each device is taken; later ones go the full path.
pub async fn redecide_reports(
    txn: &impl sea_orm::ConnectionTrait,
    svc: &Services,
    reports: &[&UnchangedReport],
) -> Result<Vec<FastOutcome>, ServiceError> {
    let mut outcomes = vec![FastOutcome::NotApplied; reports.len()];
    let mut index_of: HashMap<i64, usize> = HashMap::new();
    for (i, r) in reports.iter().enumerate() {
        index_of.entry(r.device_row).or_insert(i);
    }
    let members: Vec<&UnchangedReport> = {
        let mut firsts: Vec<usize> = index_of.values().copied().collect();
        firsts.sort_unstable();
        firsts.into_iter().map(|i| reports[i]).collect()
    };
    if members.is_empty() {
        return Ok(outcomes);
    }
    let epoch = plan_epoch_current(txn).await?;
    let now = svc.clock.now();
    let now_secs = now.as_second();
    let recorded = record_for_decision(txn, &members).await?;
    if recorded.is_empty() {
        return Ok(outcomes);
    }

    let mut snapshots: HashMap<i64, Arc<PlanSnapshot>> = HashMap::new();
    for d in &recorded {
        if let std::collections::hash_map::Entry::Vacant(slot) = snapshots.entry(d.product_id) {
            slot.insert(svc.plans.get(txn, d.product_id, epoch).await?);
        }
    }
    let rollout_ids: Vec<String> =
        snapshots.values().flat_map(|s| s.plan.rollouts.iter().map(|r| r.id.clone())).collect();
    let planned_rows: Vec<i64> = recorded
        .iter()
        .filter(|d| snapshots.get(&d.product_id).is_some_and(|s| !s.plan.rollouts.is_empty()))
        .map(|d| d.id)
        .collect();
    let mut rows_of: HashMap<i64, Vec<assignment::Model>> = HashMap::new();
    for row in assignment_list_for_devices(txn, planned_rows, rollout_ids).await? {
        rows_of.entry(row.device_row_id).or_default().push(row);
    }

    let mut inserts = Vec::new();
    let mut decisions = Vec::with_capacity(recorded.len());
    let mut to_sign = Vec::new();
    for stored in recorded {
        let snapshot = snapshots
            .get(&stored.product_id)
            .ok_or_else(|| ServiceError::Internal(anyhow::anyhow!("no plan for product {}", stored.product_id)))?;
        let d = with_installed_release(snapshot, stored);
        let rows = rows_of.remove(&d.id).unwrap_or_default();
        let planned = plan_device(snapshot, &d, &rows)?;
        apply_changes(txn, snapshot, d.id, rows, planned.changes, now_secs, &mut inserts).await?;
        if DirectorAssignment::is_stored_on(planned.assignment.as_ref(), &d) {
            let stored = (d.assigned_release_id, d.assigned_rollout_id.clone(), d.assigned_action.clone());
            decisions.push(decision_row(&d, stored, d.director_targets_version, d.director_refresh_at, epoch));
            set_outcome(&mut outcomes, &index_of, &d, d.director_targets_version, false);
        } else {
            to_sign.push((d, planned.assignment));
        }
    }
    if to_sign.is_empty() {
        store_decisions(txn, inserts, &decisions).await?;
        return Ok(outcomes);
    }
    let key = director_online_signer(txn, svc).await?;
    let mut versions = latest_versions_of(txn, to_sign.iter().map(|(d, _)| d.id).collect()).await?;
    let mut jobs = Vec::with_capacity(to_sign.len());
    for (d, assignment) in &to_sign {
        let job_versions = versions.remove(&d.id).unwrap_or_default();
        let signed = Signed::of_new_roles(job_versions, now);
        let version = i64::try_from(signed.targets_version).unwrap_or(i64::MAX);
        let assigned = DirectorAssignment::columns(assignment.as_ref());
        decisions.push(decision_row(d, assigned, version, signed.refresh_at, epoch));
        set_outcome(&mut outcomes, &index_of, d, version, true);
        jobs.push(SignJob { device_id: d.device_id.clone(), versions: job_versions, assignment: assignment.clone() });
    }
    // The signing (on every core) runs while the statements that do not need its result do;
    // the statements first, so that the first is on its way before any signing starts.
    let (stored, signed_roles) =
        tokio::join!(store_decisions(txn, inserts, &decisions), sign_new_roles_many(&key, jobs, now));
    stored?;
    let signed_roles = signed_roles?;
    let mut metadata = Vec::with_capacity(3 * to_sign.len());
    for ((d, _), (roles, _)) in to_sign.iter().zip(&signed_roles) {
        let [targets, snapshot, timestamp] = roles;
        metadata.extend(metadata_rows(d.id, &[targets, snapshot, timestamp], now));
    }
    device_metadata_insert_many(txn, metadata).await?;
    Ok(outcomes)
}

/// Stores a group's new assignments and every device's decision (two statements).
async fn store_decisions(
    txn: &impl sea_orm::ConnectionTrait,
    inserts: Vec<assignment::ActiveModel>,
    decisions: &[DecisionRow],
) -> Result<(), sea_orm::DbErr> {
    assignment_insert_many(txn, inserts).await?;
    devices_set_decisions(txn, decisions).await
}

/// What a decision names: release, rollout and action.
type Assigned = (Option<i64>, Option<String>, Option<String>);

/// The row that stores `d`'s decision `assigned`, made at plan epoch `epoch`.
fn decision_row(
    d: &device::Model,
    assigned: Assigned,
    targets_version: i64,
    refresh_at: i64,
    epoch: i64,
) -> DecisionRow {
    let (assigned_release, assigned_rollout, assigned_action) = assigned;
    DecisionRow {
        id: d.id,
        assigned_release,
        assigned_rollout,
        assigned_action,
        targets_version,
        refresh_at,
        plan_epoch: epoch,
        installed_release: d.installed_release_id,
        installed_version: d.installed_version.clone(),
    }
}

fn set_outcome(
    outcomes: &mut [FastOutcome],
    index_of: &HashMap<i64, usize>,
    d: &device::Model,
    version: i64,
    signed: bool,
) {
    if let Some(&i) = index_of.get(&d.id) {
        outcomes[i] = FastOutcome::Decided { director_targets_version: version, signed };
    }
}
