//! A device's signed version report: verify it, record it (counter rules), update its
//! assignment's progress, decide what the device should install, and re-sign its director
//! metadata only if that changed (or a role is inside its refresh margin).
//!
//! A report that repeats what is stored, for a device whose decision was made at the current
//! plan epoch, changes nothing but counter and last-seen time: it is recorded by the
//! group-commit writer (`group_commit`, `unchanged_reports`) and answered without deciding or
//! signing. One whose decision predates the plan is decided again by the writer, together with
//! the others of its group (`redecide`). History (`device_reports`) keeps the reports that
//! changed something.

use std::sync::Arc;

use patchgate_protocol::report::{
    Attempt, AttemptState, DEVICE_REPORT_TYPE, DeviceReport, InstalledImage, ReportAnswer,
};
use sea_orm::{DatabaseTransaction, Set};

use super::assign_device::desired_assignment;
use super::caches::DeviceIdentity;
use super::director::{DirectorAssignment, refresh_device_metadata, sign_device_metadata};
use super::unchanged_reports::{FastOutcome, UnchangedReport};
use super::{ServiceError, Services};
use crate::db::devices::{ReportRecord, device_get, device_record_report, device_set_plan_epoch};
use crate::db::entities::device;
use crate::db::epochs::plan_epoch_current;
use crate::db::releases::{release_find_by_target, release_get};
use crate::db::rollouts::{assignment_find, assignment_touch, assignment_update};

/// The outcome of a report, for the HTTP answer and the gate.
#[derive(Debug)]
pub struct ReportOutcome {
    /// What the device is told.
    pub answer: ReportAnswer,
    /// A rollout that just received a failure or rejection (its gate is checked at once).
    pub failure_in: Option<String>,
}

fn refusal(e: patchgate_protocol::ProtocolError) -> ServiceError {
    ServiceError::from_envelope(e, "report", "invalid_report")
}

/// Verifies `body`, signed by `key`, through the batching checker and reads the report in it.
async fn open_report(
    svc: &Services,
    body: &[u8],
    key: &ed25519_dalek::VerifyingKey,
) -> Result<DeviceReport, patchgate_protocol::ProtocolError> {
    let unchecked = patchgate_protocol::envelope::unchecked(body, key)?;
    let verified = match unchecked.signatures() {
        [] => false,
        [one] => svc.signatures.verify(unchecked.message(), *one, *key).await,
        // Several signatures by the one key: rare enough to check here, strictly.
        _ => unchecked.verifies_strictly(key),
    };
    unchecked.open(verified)
}

/// Records `body`, a signed report from `device` (authenticated by its token) posted to the
/// path of `path_id`.
///
/// An unchanged report (the usual poll) goes through the group-commit writer and is answered
/// from what is stored; anything the writer does not apply takes [`record_changed_report`].
pub async fn record_report(
    svc: &Services,
    device: &Arc<DeviceIdentity>,
    path_id: &str,
    body: &[u8],
) -> Result<ReportOutcome, ServiceError> {
    if path_id != device.device_id {
        return Err(ServiceError::Forbidden {
            message: format!("this token belongs to device {}, not {path_id}", device.device_id),
        });
    }
    let Some(key) = &device.key else {
        return Err(ServiceError::Forbidden {
            message: format!(
                "device {} speaks hawkBit's device API and has no key to sign reports with",
                device.device_id
            ),
        });
    };
    let report: DeviceReport = open_report(svc, body, key).await.map_err(refusal)?;
    report.validate().map_err(refusal)?;
    if report.device_id != device.device_id {
        return Err(ServiceError::Forbidden {
            message: format!("the report names device {}, but it was sent for {}", report.device_id, device.device_id),
        });
    }
    let counter = i64::try_from(report.counter)
        .map_err(|_| ServiceError::invalid("invalid_report", "the counter is larger than 2^63 - 1"))?;
    let now = svc.clock.now();
    match record_if_unchanged(svc, device.id, counter, now, &report).await? {
        Some(outcome) => Ok(outcome),
        None => record_changed_report(svc, device.clone(), report, counter, now).await,
    }
}

/// Records `report` through the group-commit writer if it repeats what is stored (the usual
/// poll); `None` when it does not, and the full path must take it.
async fn record_if_unchanged(
    svc: &Services,
    device_row: i64,
    counter: i64,
    now: jiff::Timestamp,
    report: &DeviceReport,
) -> Result<Option<ReportOutcome>, ServiceError> {
    let unchanged = UnchangedReport {
        device_row,
        counter,
        seen_at: now.as_second(),
        installed: report.installed.as_ref().map(|i| (i.name.clone(), i.sha256.clone())),
        attempt: report.attempt.as_ref().map(|a| (a.name.clone(), a.state.as_str().to_owned(), a.detail.clone())),
    };
    let version = match svc.writes.record_unchanged(svc, unchanged).await? {
        FastOutcome::Recorded { director_targets_version } => director_targets_version,
        FastOutcome::Decided { director_targets_version, signed } => {
            if signed {
                svc.caches.invalidate_director(device_row);
            }
            director_targets_version
        }
        FastOutcome::NotApplied => return Ok(None),
    };
    let version = u64::try_from(version).unwrap_or(0);
    Ok(Some(ReportOutcome { answer: answer(svc, version, report), failure_in: None }))
}

/// The full path, through group commit: record the report (counter rules), move its
/// assignment along, decide what the device should install, and sign only if that changed.
async fn record_changed_report(
    svc: &Services,
    device: Arc<DeviceIdentity>,
    report: DeviceReport,
    counter: i64,
    now: jiff::Timestamp,
) -> Result<ReportOutcome, ServiceError> {
    let device_row = device.id;
    let worker = svc.clone();
    let (outcome, signed_anew) = svc
        .writes
        .run(move |txn| Box::pin(async move { record_changed_in(txn, &worker, &device, &report, counter, now).await }))
        .await?;
    if signed_anew {
        svc.caches.invalidate_director(device_row);
    }
    Ok(outcome)
}

/// Records what the server itself saw of a device that signs nothing (a DDI device: its
/// poll, its feedback) as a report with the device's next counter, through the same rules as a
/// signed one: assignment, gate, history. `installed` and `attempt` default to what is stored,
/// and a report that repeats what is stored goes through the group-commit writer as an
/// unchanged signed report does (no history row, no decision unless the plan moved). Two
/// observations of one device at once may meet a stale counter (409): the device polls again.
/// Returns the device row as it is afterwards.
pub async fn record_observed(
    svc: &Services,
    device: Arc<DeviceIdentity>,
    installed: Option<InstalledImage>,
    attempt: Option<Attempt>,
) -> Result<(device::Model, ReportOutcome), ServiceError> {
    let vanished = || ServiceError::Internal(anyhow::anyhow!("device row vanished"));
    let row = device_get(&svc.db, device.id).await?.ok_or_else(vanished)?;
    let stored_installed = match (&row.installed_name, &row.installed_sha256) {
        (Some(name), Some(sha256)) => Some(InstalledImage {
            name: name.clone(),
            sha256: sha256.clone(),
            version: row.installed_version.clone().unwrap_or_default(),
        }),
        _ => None,
    };
    let stored_attempt =
        row.attempt_state.as_deref().and_then(AttemptState::parse).and_then(|state| {
            Some(Attempt { name: row.attempt_name.clone()?, state, detail: row.attempt_detail.clone() })
        });
    let counter = row.last_counter.unwrap_or(0).saturating_add(1);
    let now = svc.clock.now();
    let report = DeviceReport {
        kind: DEVICE_REPORT_TYPE.to_owned(),
        device_id: row.device_id.clone(),
        counter: u64::try_from(counter).unwrap_or(0),
        time: now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        installed: installed.or(stored_installed),
        attempt: attempt.or(stored_attempt),
        director_targets_version: u64::try_from(row.director_targets_version).unwrap_or(0),
    };
    let outcome = match record_if_unchanged(svc, device.id, counter, now, &report).await? {
        Some(outcome) => outcome,
        None => record_changed_report(svc, device.clone(), report, counter, now).await?,
    };
    let row = device_get(&svc.db, device.id).await?.ok_or_else(vanished)?;
    Ok((row, outcome))
}

/// [`record_changed_report`] inside its transaction; also says whether it signed.
async fn record_changed_in(
    txn: &DatabaseTransaction,
    svc: &Services,
    device: &DeviceIdentity,
    report: &DeviceReport,
    counter: i64,
    now: jiff::Timestamp,
) -> Result<(ReportOutcome, bool), ServiceError> {
    let now_secs = now.as_second();
    // Read before anything the decision depends on: a change committed after this read raises
    // the epoch past what is stored below, so the next report decides again.
    let plan_epoch = plan_epoch_current(txn).await?;
    // What the device runs is known only when name and sha256 match a release; then the
    // version comes from the repository, not from the device's word.
    let installed_release = match &report.installed {
        Some(i) => release_find_by_target(txn, &i.name).await?.filter(|r| r.sha256 == i.sha256),
        None => None,
    };
    let installed_release_id = installed_release.as_ref().map(|r| r.id);
    let record = ReportRecord {
        counter,
        received_at: now_secs,
        reported_time: report.time.clone(),
        installed: report.installed.as_ref().map(|i| {
            let version = installed_release.as_ref().map_or_else(|| i.version.clone(), |r| r.version.clone());
            (i.name.clone(), version, i.sha256.clone())
        }),
        installed_release_id,
        attempt: report.attempt.as_ref().map(|a| (a.name.clone(), a.state.as_str().to_owned(), a.detail.clone())),
        director_targets_version: i64::try_from(report.director_targets_version).unwrap_or(i64::MAX),
    };
    if !device_record_report(txn, device.id, &record).await? {
        return match device_get(txn, device.id).await? {
            Some(d) if d.status == "active" => Err(ServiceError::StaleCounter {
                counter: report.counter,
                last_counter: u64::try_from(d.last_counter.unwrap_or(0)).unwrap_or(0),
            }),
            _ => Err(ServiceError::Forbidden { message: format!("device {} is decommissioned", device.device_id) }),
        };
    }
    let device = device_get(txn, device.id)
        .await?
        .ok_or_else(|| ServiceError::Internal(anyhow::anyhow!("device row vanished")))?;
    let failure_in = track_attempt(txn, &device, report, now_secs).await?;

    let desired = desired_assignment(txn, &svc.plans, &device, plan_epoch, now_secs).await?;
    let mut version = u64::try_from(device.director_targets_version).unwrap_or(0);
    let mut signed_anew = false;
    if !DirectorAssignment::is_stored_on(desired.as_ref(), &device) || version == 0 {
        let signed = sign_device_metadata(txn, svc, &device, desired.as_ref(), now).await?;
        version = signed.targets_version;
        signed_anew = true;
        let (release, rollout, action) = DirectorAssignment::columns(desired.as_ref());
        let mut active: device::ActiveModel = device.clone().into();
        active.assigned_release_id = Set(release);
        active.assigned_rollout_id = Set(rollout);
        active.assigned_action = Set(action);
        active.director_targets_version = Set(i64::try_from(version).unwrap_or(i64::MAX));
        active.director_refresh_at = Set(signed.refresh_at);
        active.plan_epoch = Set(plan_epoch);
        crate::db::devices::device_update(txn, active).await?;
    } else {
        if now_secs >= device.director_refresh_at {
            // A role is inside its margin: re-sign lazily, now that the device is here. A
            // re-signed targets role has the same content and a new version to fetch.
            let signed = refresh_device_metadata(txn, svc, &device, desired.as_ref(), now).await?;
            version = signed.targets_version;
            signed_anew = true;
            crate::db::devices::device_set_director_version(txn, device.id, version, signed.refresh_at).await?;
        }
        if device.plan_epoch != plan_epoch {
            device_set_plan_epoch(txn, device.id, plan_epoch).await?;
        }
    }
    Ok((ReportOutcome { answer: answer(svc, version, report), failure_in }, signed_anew))
}

/// What the device is told: its director targets version now, and whether it has it already.
fn answer(svc: &Services, version: u64, report: &DeviceReport) -> ReportAnswer {
    ReportAnswer {
        director_targets_version: version,
        changed: version != report.director_targets_version,
        poll_seconds: svc.config.device_poll_seconds,
    }
}

/// Moves the device's current assignment along with the attempt it reports; returns the
/// rollout id when the attempt just failed or was rejected.
async fn track_attempt(
    txn: &DatabaseTransaction,
    device: &device::Model,
    report: &DeviceReport,
    now: i64,
) -> Result<Option<String>, ServiceError> {
    let (Some(rollout_id), Some(release_id)) = (&device.assigned_rollout_id, device.assigned_release_id) else {
        return Ok(None);
    };
    // Rollback outcomes are the device's own record; the assignment tracks the rollout's release.
    if device.assigned_action.as_deref() != Some("install") {
        return Ok(None);
    }
    let Some(row) = assignment_find(txn, rollout_id, device.id).await? else {
        return Ok(None);
    };
    if row.state == "withdrawn" {
        return Ok(None);
    }
    let release = match &report.attempt {
        Some(_) => release_get(txn, release_id).await?,
        None => None,
    };
    let attempt = report.attempt.as_ref().filter(|a| release.as_ref().is_some_and(|r| r.target_name == a.name));
    let Some(attempt) = attempt else {
        assignment_touch(txn, row.id, now).await?;
        return Ok(None);
    };
    let state = attempt.state.as_str();
    // A failure stays on record until the device proves success: a retry's `downloading`
    // must not erase it from the gate. `installed` counts only if the device reports running
    // exactly the assigned image (docs/design.md §2.6).
    let keeps_failure = matches!(row.state.as_str(), "failed" | "rejected") && attempt.state != AttemptState::Installed;
    let runs_assigned = report
        .installed
        .as_ref()
        .zip(release.as_ref())
        .is_some_and(|(i, r)| i.sha256 == r.sha256 && i.name == r.target_name);
    let unproven = attempt.state == AttemptState::Installed && !runs_assigned;
    if row.state == state || keeps_failure || unproven {
        if unproven {
            tracing::warn!(device = %device.device_id, rollout = %rollout_id,
                "the device reports the attempt installed but does not run the assigned image; not counted");
        }
        assignment_touch(txn, row.id, now).await?;
        return Ok(None);
    }
    let mut active: crate::db::entities::assignment::ActiveModel = row.into();
    active.state = Set(state.to_owned());
    active.detail = Set(attempt.detail.clone());
    active.updated_at = Set(now);
    active.final_at = Set(attempt.state.is_final().then_some(now));
    assignment_update(txn, active).await?;
    if attempt.state == AttemptState::Rejected {
        tracing::warn!(device = %device.device_id, rollout = %rollout_id, detail = ?attempt.detail, "a device rejected its assignment");
        metrics::counter!("patchgate_rejections_total").increment(1);
    }
    Ok(attempt.state.is_failure().then(|| rollout_id.clone()))
}
