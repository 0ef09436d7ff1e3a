//! What the admin dashboard shows at a glance: devices per product (by status and by installed
//! version), the rollouts under way with their per-stage figures, the newest failed and rejected
//! reports, and how long each signed root and role has before it expires.
//!
//! Read-only. Rollout figures come from `rollout_status` and expiry margins from
//! `domain::expiry`, so the dashboard never disagrees with the rollout page, the gate job or
//! readiness. Must not import `http`.

use std::collections::HashMap;

use jiff::Timestamp;

use super::image_repo::{DIRECTOR, IMAGE};
use super::rollout_status::{RolloutStatus, rollout_status};
use super::{ServiceError, Services};
use crate::db::entities::device_report;
use crate::db::metadata::metadata_latest_versions;
use crate::db::overview::{
    device_count_by_product_status, device_count_by_product_version, device_list_ids_by_rows,
    device_report_list_problems, device_report_rejected_since, rollout_list_in_states,
};
use crate::db::products::product_list;
use crate::domain::expiry::{ROOT_WARNING, RoleKind, needs_refresh};

/// Failed and rejected reports listed: a screenful, enough to see a pattern.
pub const PROBLEMS_SHOWN: usize = 20;
/// The newest failed or rejected reports read to group them by device: bounded, whatever the
/// history holds (a device's count says "at least" when the oldest read is one of its).
pub const PROBLEM_REPORTS_READ: u64 = 1_000;
/// A rejection this recent raises the security banner (seconds): one working day and night.
pub const REJECTION_ALERT_SECONDS: i64 = 24 * 60 * 60;
/// Rollouts that still need watching: the gate acts on running ones, people on the others.
const UNDER_WAY: [&str; 3] = ["running", "paused", "halted"];

/// A product's devices.
#[derive(Debug, Clone)]
pub struct ProductFleet {
    /// Product name.
    pub product: String,
    /// Active devices.
    pub active: u64,
    /// Decommissioned devices.
    pub decommissioned: u64,
    /// Active devices per installed version, most common first (`None`: not reported yet).
    pub versions: Vec<(Option<String>, u64)>,
}

/// A failed or rejected report.
#[derive(Debug, Clone)]
pub struct Problem {
    /// The device's id.
    pub device_id: String,
    /// Its newest failed or rejected report.
    pub report: device_report::Model,
    /// How many of the reports read were its failures or rejections.
    pub reports: u64,
    /// When its first failure or rejection among them was received (Unix seconds).
    pub since: i64,
    /// Whether older reports were not read, so that it may have more.
    pub at_least: bool,
}

/// How close a signed role is to its expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpiryLevel {
    /// Well within its lifetime.
    Fine,
    /// Inside its margin: an online role the refresh job should have re-signed, or a root
    /// whose ceremony is due.
    Soon,
    /// Past its expiry: clients refuse it.
    Expired,
}

/// The newest version of one role and when it expires.
#[derive(Debug, Clone)]
pub struct RoleExpiry {
    /// `image` or `director`.
    pub repo: &'static str,
    /// Role name (a product name for a delegated role).
    pub role: String,
    /// Its newest version.
    pub version: i64,
    /// Unix seconds.
    pub expires_at: i64,
    /// How close that is.
    pub level: ExpiryLevel,
}

/// Everything on the dashboard.
#[derive(Debug, Clone)]
pub struct Overview {
    /// When the figures were read (Unix seconds).
    pub now: i64,
    /// Every product, by name.
    pub fleet: Vec<ProductFleet>,
    /// Running, paused and halted rollouts, the most recently started first.
    pub rollouts: Vec<RolloutStatus>,
    /// The [`PROBLEMS_SHOWN`] devices that most recently reported a failed or rejected update,
    /// one each, newest first.
    pub problems: Vec<Problem>,
    /// A report rejected an update within [`REJECTION_ALERT_SECONDS`].
    pub recent_rejection: bool,
    /// Image roots and roles (root, targets, snapshot, timestamp, products), then the director root.
    pub expiries: Vec<RoleExpiry>,
}

/// Reads the dashboard's figures.
pub async fn fleet_overview(svc: &Services) -> Result<Overview, ServiceError> {
    let now = svc.clock.now();
    let mut rollouts = Vec::new();
    for r in rollout_list_in_states(&svc.db, &UNDER_WAY).await? {
        rollouts.push(rollout_status(svc, &r.id).await?);
    }
    Ok(Overview {
        now: now.as_second(),
        fleet: fleet(svc).await?,
        rollouts,
        problems: problems(svc).await?,
        recent_rejection: device_report_rejected_since(&svc.db, now.as_second() - REJECTION_ALERT_SECONDS).await?,
        expiries: expiries(svc, now).await?,
    })
}

async fn fleet(svc: &Services) -> Result<Vec<ProductFleet>, ServiceError> {
    let mut products: Vec<(i64, ProductFleet)> = product_list(&svc.db)
        .await?
        .into_iter()
        .map(|p| (p.id, ProductFleet { product: p.name, active: 0, decommissioned: 0, versions: Vec::new() }))
        .collect();
    products.sort_by(|a, b| a.1.product.cmp(&b.1.product));
    let slot: HashMap<i64, usize> = products.iter().enumerate().map(|(i, (id, _))| (*id, i)).collect();
    let count = |n: i64| u64::try_from(n).unwrap_or(0);
    for (product_id, status, n) in device_count_by_product_status(&svc.db).await? {
        if let Some((_, p)) = slot.get(&product_id).and_then(|i| products.get_mut(*i)) {
            match status.as_str() {
                "active" => p.active += count(n),
                _ => p.decommissioned += count(n),
            }
        }
    }
    for (product_id, version, n) in device_count_by_product_version(&svc.db).await? {
        if let Some((_, p)) = slot.get(&product_id).and_then(|i| products.get_mut(*i)) {
            p.versions.push((version, count(n)));
        }
    }
    let mut out: Vec<ProductFleet> = products.into_iter().map(|(_, p)| p).collect();
    for p in &mut out {
        p.versions.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    }
    Ok(out)
}

async fn problems(svc: &Services) -> Result<Vec<Problem>, ServiceError> {
    let reports = device_report_list_problems(&svc.db, PROBLEM_REPORTS_READ).await?;
    let all_read = (reports.len() as u64) < PROBLEM_REPORTS_READ;
    let mut rows: Vec<i64> = reports.iter().map(|r| r.device_row_id).collect();
    rows.sort_unstable();
    rows.dedup();
    let ids: HashMap<i64, String> = device_list_ids_by_rows(&svc.db, rows).await?.into_iter().collect();
    Ok(group_by_device(reports, all_read, &ids))
}

/// One [`Problem`] per device, in the order of each device's newest report (`reports` is
/// newest first), at most [`PROBLEMS_SHOWN`].
fn group_by_device(reports: Vec<device_report::Model>, all_read: bool, ids: &HashMap<i64, String>) -> Vec<Problem> {
    let oldest_read = reports.last().map(|r| r.device_row_id);
    let mut out: Vec<Problem> = Vec::new();
    let mut slot: HashMap<i64, usize> = HashMap::new();
    for report in reports {
        match slot.get(&report.device_row_id) {
            Some(&i) => {
                out[i].reports += 1;
                out[i].since = report.received_at;
            }
            None => {
                slot.insert(report.device_row_id, out.len());
                out.push(Problem {
                    device_id: ids.get(&report.device_row_id).cloned().unwrap_or_default(),
                    reports: 1,
                    since: report.received_at,
                    at_least: !all_read && oldest_read == Some(report.device_row_id),
                    report,
                });
            }
        }
    }
    out.truncate(PROBLEMS_SHOWN);
    out
}

async fn expiries(svc: &Services, now: Timestamp) -> Result<Vec<RoleExpiry>, ServiceError> {
    let order = |role: &str| match role {
        "root" => 0,
        "targets" => 1,
        "snapshot" => 2,
        "timestamp" => 3,
        _ => 4,
    };
    let mut image = metadata_latest_versions(&svc.db, IMAGE).await?;
    image.sort_by(|a, b| order(&a.0).cmp(&order(&b.0)).then_with(|| a.0.cmp(&b.0)));
    let director = metadata_latest_versions(&svc.db, DIRECTOR).await?.into_iter().filter(|(role, _, _)| role == "root");
    let tagged = image.into_iter().map(|row| (IMAGE, row)).chain(director.map(|row| (DIRECTOR, row)));
    Ok(tagged
        .map(|(repo, (role, version, expires_at))| {
            let level = expiry_level(RoleKind::of_image_role(&role), expires_at, now);
            RoleExpiry { repo, role, version, expires_at, level }
        })
        .collect())
}

/// How close a role of `kind` expiring at `expires_at` (Unix seconds) is to expiry at `now`:
/// roots warn [`ROOT_WARNING`] ahead (a ceremony needs several key holders); every other role
/// once less than a third of its lifetime is left, where the refresh job re-signs online roles
/// (an offline-signed role there needs its key holders).
pub fn expiry_level(kind: RoleKind, expires_at: i64, now: Timestamp) -> ExpiryLevel {
    let expires = Timestamp::from_second(expires_at).unwrap_or(Timestamp::UNIX_EPOCH);
    if expires <= now {
        ExpiryLevel::Expired
    } else if match kind {
        RoleKind::Root => expires.duration_since(now) < ROOT_WARNING,
        other => needs_refresh(other, expires, now),
    } {
        ExpiryLevel::Soon
    } else {
        ExpiryLevel::Fine
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_are_one_row_per_device_with_its_count_newest_first() {
        let report = |id: i64, device: i64, at: i64| device_report::Model {
            id,
            device_row_id: device,
            counter: id,
            received_at: at,
            reported_time: String::new(),
            installed_name: None,
            installed_version: None,
            installed_sha256: None,
            attempt_name: Some("pump-x1/1.1.0/fw.bin".into()),
            attempt_state: Some("failed".into()),
            attempt_detail: Some(format!("error {id}")),
            director_targets_version: 1,
        };
        let ids: HashMap<i64, String> = [(1, "pump-a".into()), (2, "pump-b".into())].into();
        // Newest first: pump-a failed three times, pump-b once in between.
        let reports = vec![report(9, 1, 90), report(8, 1, 80), report(7, 2, 70), report(6, 1, 60)];
        let grouped = group_by_device(reports.clone(), true, &ids);
        let summary: Vec<(&str, u64, i64, i64, bool)> =
            grouped.iter().map(|p| (p.device_id.as_str(), p.reports, p.report.id, p.since, p.at_least)).collect();
        assert_eq!(summary, [("pump-a", 3, 9, 60, false), ("pump-b", 1, 7, 70, false)]);
        // Not everything read: the device of the oldest report read may have more.
        let grouped = group_by_device(reports, false, &ids);
        assert!(grouped[0].at_least && !grouped[1].at_least);
    }

    #[test]
    fn expiry_levels_follow_each_role_margin() {
        let now: Timestamp = "2026-11-24T00:00:00Z".parse().unwrap();
        let at = |days: i64, hours: i64| now.as_second() + days * 86_400 + hours * 3_600;
        let cases = [
            (RoleKind::Root, at(91, 0), ExpiryLevel::Fine),
            (RoleKind::Root, at(89, 0), ExpiryLevel::Soon),
            (RoleKind::Root, at(0, -1), ExpiryLevel::Expired),
            (RoleKind::Timestamp, at(0, 9), ExpiryLevel::Fine),
            (RoleKind::Timestamp, at(0, 7), ExpiryLevel::Soon),
            (RoleKind::Snapshot, at(3, 0), ExpiryLevel::Fine),
            (RoleKind::Snapshot, at(2, 0), ExpiryLevel::Soon),
            (RoleKind::Product, at(31, 0), ExpiryLevel::Fine),
            (RoleKind::Product, at(29, 0), ExpiryLevel::Soon),
            (RoleKind::TopTargets, at(0, 0), ExpiryLevel::Expired),
        ];
        for (kind, expires, want) in cases {
            assert_eq!(expiry_level(kind, expires, now), want, "{kind:?} at {expires}");
        }
    }
}
