//! The director: each device's own small TUF repository (Uptane), signed online with the one
//! director key. It names at most one target, exactly the image repository's entry plus
//! `device_id`, `rollout_id` and `action`. A device's roles are re-signed only when its
//! assignment changes, or lazily when the device reports within a role's refresh margin; an
//! unchanged poll signs nothing.

use std::collections::HashMap;

use anyhow::Context as _;
use jiff::Timestamp;
use patchgate_protocol::director::{DirectorAction, DirectorFields, director_custom};
use sea_orm::ConnectionTrait;

use super::image_repo::{DIRECTOR, director_online_signer};
use super::{ServiceError, Services};
use crate::db::device_metadata::{
    NewDeviceMetadata, device_metadata_get, device_metadata_insert_many, device_metadata_latest,
    device_metadata_latest_versions, device_metadata_latest_versions_of,
};
use crate::db::entities::{device, release};
use crate::domain::expiry::{RoleKind, expires_at, needs_refresh};
use crate::domain::metadata_file::MetadataFile;
use crate::tuf::director_json;
use crate::tuf::keys::Signer;
use crate::tuf::metadata::DirectorTarget;
use crate::tuf::sign::{SignedMetadata, sign_director_role};

/// What the director tells one device to install.
#[derive(Debug, Clone)]
pub struct DirectorAssignment {
    /// The release to install.
    pub release: release::Model,
    /// The rollout that decided it.
    pub rollout_id: String,
    /// `install`, or `rollback` to the release the device ran before.
    pub action: DirectorAction,
}

/// What the director names for a device: release, rollout and action.
type DecisionKey = (i64, String, String);

impl DirectorAssignment {
    /// Whether this is what `device`'s row says the director names now.
    pub fn is_stored_on(assignment: Option<&Self>, device: &device::Model) -> bool {
        let stored: Option<DecisionKey> = device.assigned_release_id.map(|id| {
            (
                id,
                device.assigned_rollout_id.clone().unwrap_or_default(),
                device.assigned_action.clone().unwrap_or_default(),
            )
        });
        assignment.map(|a| (a.release.id, a.rollout_id.clone(), a.action.as_str().to_owned())) == stored
    }

    /// The device row's columns that store `assignment`: release, rollout and action (all
    /// `None` when the director names nothing).
    pub fn columns(assignment: Option<&Self>) -> (Option<i64>, Option<String>, Option<String>) {
        match assignment {
            Some(a) => (Some(a.release.id), Some(a.rollout_id.clone()), Some(a.action.as_str().to_owned())),
            None => (None, None, None),
        }
    }
}

fn target_for(device_id: &str, a: &DirectorAssignment) -> Result<DirectorTarget, ServiceError> {
    let image_custom: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&a.release.custom).context("stored release custom")?;
    let fields = DirectorFields { device_id: device_id.to_owned(), rollout_id: a.rollout_id.clone(), action: a.action };
    let custom = director_custom(&image_custom, &fields).map_err(|e| anyhow::anyhow!("director custom: {e}"))?;
    Ok(DirectorTarget {
        name: a.release.target_name.clone(),
        length: u64::try_from(a.release.length).unwrap_or(0),
        sha256: a.release.sha256.clone(),
        sha512: a.release.sha512.clone(),
        custom,
    })
}

/// Where a role's version goes in a `[targets, snapshot, timestamp]` triple.
fn role_slot(role: &str) -> Option<usize> {
    match role {
        "targets" => Some(0),
        "snapshot" => Some(1),
        "timestamp" => Some(2),
        _ => None,
    }
}

/// The newest version of each of the device's roles (0 when none), in one query.
async fn latest_versions(db: &impl ConnectionTrait, device_row: i64) -> Result<[u64; 3], ServiceError> {
    let mut out = [0u64; 3];
    for (role, version) in device_metadata_latest_versions(db, device_row).await? {
        if let Some(slot) = role_slot(&role) {
            out[slot] = u64::try_from(version).unwrap_or(0);
        }
    }
    Ok(out)
}

/// [`latest_versions`] of many devices in one query; a device with no roles is absent.
pub async fn latest_versions_of(
    db: &impl ConnectionTrait,
    device_rows: Vec<i64>,
) -> Result<HashMap<i64, [u64; 3]>, ServiceError> {
    let mut out: HashMap<i64, [u64; 3]> = HashMap::new();
    for (device_row, role, version) in device_metadata_latest_versions_of(db, device_rows).await? {
        if let Some(slot) = role_slot(&role) {
            out.entry(device_row).or_default()[slot] = u64::try_from(version).unwrap_or(0);
        }
    }
    Ok(out)
}

/// The rows that store `roles`, signed for device row `device_row` at `now`.
pub fn metadata_rows(device_row: i64, roles: &[&SignedMetadata], now: Timestamp) -> Vec<NewDeviceMetadata> {
    roles
        .iter()
        .map(|m| NewDeviceMetadata {
            device_row_id: device_row,
            role: m.role.clone(),
            version: m.version,
            expires_at: m.expires.as_second(),
            body: m.bytes.clone(),
            sha256: m.sha256.clone(),
            created_at: now.as_second(),
        })
        .collect()
}

async fn store_all(
    db: &impl ConnectionTrait,
    device_row: i64,
    roles: &[&SignedMetadata],
    now: Timestamp,
) -> Result<(), ServiceError> {
    device_metadata_insert_many(db, metadata_rows(device_row, roles, now)).await?;
    Ok(())
}

/// When a role of `kind` expiring at `expires` enters its refresh margin.
fn refresh_due(kind: RoleKind, expires: Timestamp) -> i64 {
    expires.as_second() - kind.refresh_margin().as_secs()
}

/// A device's director roles after a signing: the new targets version, and when the next
/// refresh is due.
#[derive(Debug, Clone, Copy)]
pub struct Signed {
    /// Targets version now served.
    pub targets_version: u64,
    /// Unix seconds when a role next enters its refresh margin.
    pub refresh_at: i64,
}

impl Signed {
    /// What [`sign_new_roles`] at `now` from `versions` yields, known before it signs: the
    /// caller may store it while the signing runs.
    pub fn of_new_roles(versions: [u64; 3], now: Timestamp) -> Self {
        let due = |kind: RoleKind| refresh_due(kind, expires_at(kind, now));
        Self {
            targets_version: versions[0] + 1,
            refresh_at: due(RoleKind::DirectorTargets).min(due(RoleKind::Snapshot)).min(due(RoleKind::Timestamp)),
        }
    }
}

/// New director targets, snapshot and timestamp for the device `device_id`, one version
/// above `versions` (`[targets, snapshot, timestamp]`), signed with `key`; nothing stored.
/// What it returns beside the roles is [`Signed::of_new_roles`].
pub async fn sign_new_roles(
    key: &Signer,
    device_id: &str,
    versions: [u64; 3],
    assignment: Option<&DirectorAssignment>,
    now: Timestamp,
) -> Result<([SignedMetadata; 3], Signed), ServiceError> {
    let entry = assignment.map(|a| target_for(device_id, a)).transpose()?;
    let [targets_v, snapshot_v, timestamp_v] = versions;
    let targets = sign_targets(key, targets_v + 1, entry.as_ref(), now).await?;
    let snapshot = sign_snapshot(key, snapshot_v + 1, targets.version, now).await?;
    let timestamp = sign_timestamp(key, timestamp_v + 1, &snapshot, now).await?;
    Ok(([targets, snapshot, timestamp], Signed::of_new_roles(versions, now)))
}

/// One device's new director roles to sign: see [`sign_new_roles`].
pub struct SignJob {
    /// The device's id.
    pub device_id: String,
    /// Its roles' current versions, `[targets, snapshot, timestamp]`.
    pub versions: [u64; 3],
    /// What its targets should name.
    pub assignment: Option<DirectorAssignment>,
}

/// The fewest devices worth a task of their own: one device's three roles take about a
/// tenth of a millisecond to encode and sign, a spawned task a few microseconds.
const MIN_SIGN_JOBS_PER_TASK: usize = 8;

/// [`sign_new_roles`] for each of `jobs`, in order, spread over the runtime's worker threads.
/// The group-commit writer signs a whole group's first reports after a stage opens (three
/// roles per device); on the writer alone that signing was most of the group's time, while
/// the other core waited.
pub async fn sign_new_roles_many(
    key: &Signer,
    jobs: Vec<SignJob>,
    now: Timestamp,
) -> Result<Vec<([SignedMetadata; 3], Signed)>, ServiceError> {
    // A key in memory signs on the CPUs; a key in a token waits on the token, so as many tasks
    // as it signs in parallel, however few jobs each.
    let (threads, min_per_task) = match key.concurrency() {
        Some(parallel) => (parallel, 1),
        None => (tokio::runtime::Handle::current().metrics().num_workers().max(1), MIN_SIGN_JOBS_PER_TASK),
    };
    let per_task = jobs.len().div_ceil(threads).max(min_per_task);
    if jobs.len() <= per_task {
        return sign_jobs(key, jobs, now).await;
    }
    let mut tasks = Vec::with_capacity(threads);
    let mut jobs = jobs.into_iter().peekable();
    while jobs.peek().is_some() {
        let chunk: Vec<SignJob> = jobs.by_ref().take(per_task).collect();
        let key = key.clone();
        tasks.push(tokio::spawn(async move { sign_jobs(&key, chunk, now).await }));
    }
    let mut signed = Vec::new();
    for task in tasks {
        let chunk = task.await.map_err(|e| ServiceError::Internal(anyhow::anyhow!("signing director roles: {e}")))?;
        signed.extend(chunk?);
    }
    Ok(signed)
}

async fn sign_jobs(
    key: &Signer,
    jobs: Vec<SignJob>,
    now: Timestamp,
) -> Result<Vec<([SignedMetadata; 3], Signed)>, ServiceError> {
    let mut signed = Vec::with_capacity(jobs.len());
    for job in jobs {
        signed.push(sign_new_roles(key, &job.device_id, job.versions, job.assignment.as_ref(), now).await?);
    }
    Ok(signed)
}

/// Signs and stores new director targets, snapshot and timestamp for `device`.
pub async fn sign_device_metadata(
    db: &impl ConnectionTrait,
    svc: &Services,
    device: &device::Model,
    assignment: Option<&DirectorAssignment>,
    now: Timestamp,
) -> Result<Signed, ServiceError> {
    let versions = latest_versions(db, device.id).await?;
    let key = director_online_signer(db, svc).await?;
    let (roles, signed) = sign_new_roles(&key, &device.device_id, versions, assignment, now).await?;
    let [targets, snapshot, timestamp] = &roles;
    store_all(db, device.id, &[targets, snapshot, timestamp], now).await?;
    Ok(signed)
}

async fn sign_targets(
    key: &Signer,
    version: u64,
    entry: Option<&DirectorTarget>,
    now: Timestamp,
) -> Result<SignedMetadata, ServiceError> {
    let expires = expires_at(RoleKind::DirectorTargets, now);
    let body = director_json::targets(version, expires, entry)?;
    Ok(sign_director_role("targets", version, expires, body, key).await?)
}

async fn sign_snapshot(
    key: &Signer,
    version: u64,
    targets_version: u64,
    now: Timestamp,
) -> Result<SignedMetadata, ServiceError> {
    let expires = expires_at(RoleKind::Snapshot, now);
    let body = director_json::snapshot(version, expires, targets_version)?;
    Ok(sign_director_role("snapshot", version, expires, body, key).await?)
}

async fn sign_timestamp(
    key: &Signer,
    version: u64,
    snapshot: &SignedMetadata,
    now: Timestamp,
) -> Result<SignedMetadata, ServiceError> {
    let expires = expires_at(RoleKind::Timestamp, now);
    let body = director_json::timestamp(version, expires, snapshot)?;
    Ok(sign_director_role("timestamp", version, expires, body, key).await?)
}

/// Re-signs whichever of the device's roles is inside its refresh margin (and those that must
/// change with it). Called only once the device's `director_refresh_at` has passed.
pub async fn refresh_device_metadata(
    db: &impl ConnectionTrait,
    svc: &Services,
    device: &device::Model,
    assignment: Option<&DirectorAssignment>,
    now: Timestamp,
) -> Result<Signed, ServiceError> {
    let latest = |role: &'static str| device_metadata_latest(db, device.id, role);
    let (Some(targets), Some(snapshot), Some(timestamp)) =
        (latest("targets").await?, latest("snapshot").await?, latest("timestamp").await?)
    else {
        return sign_device_metadata(db, svc, device, assignment, now).await;
    };
    let expiry = |m: &crate::db::entities::device_metadata::Model| {
        Timestamp::from_second(m.expires_at).unwrap_or(Timestamp::UNIX_EPOCH)
    };
    let key = director_online_signer(db, svc).await?;
    // After a director root ceremony changed the online key, the device's roles signed with the
    // old one would no longer verify: sign all three again.
    if needs_refresh(RoleKind::DirectorTargets, expiry(&targets), now) || signed_by(&timestamp.body) != key.keyid() {
        return sign_device_metadata(db, svc, device, assignment, now).await;
    }
    let targets_version = u64::try_from(targets.version).unwrap_or(0);
    let targets_due = refresh_due(RoleKind::DirectorTargets, expiry(&targets));
    let (snapshot, signed_snapshot) = if needs_refresh(RoleKind::Snapshot, expiry(&snapshot), now) {
        let version = u64::try_from(snapshot.version).unwrap_or(0) + 1;
        (sign_snapshot(&key, version, targets_version, now).await?, true)
    } else {
        (from_stored_device(snapshot), false)
    };
    let timestamp = if signed_snapshot || needs_refresh(RoleKind::Timestamp, expiry(&timestamp), now) {
        let version = u64::try_from(timestamp.version).unwrap_or(0) + 1;
        let signed = sign_timestamp(&key, version, &snapshot, now).await?;
        let mut fresh = vec![&signed];
        if signed_snapshot {
            fresh.insert(0, &snapshot);
        }
        store_all(db, device.id, &fresh, now).await?;
        signed.expires
    } else {
        expiry(&timestamp)
    };
    let refresh_at = targets_due
        .min(refresh_due(RoleKind::Snapshot, snapshot.expires))
        .min(refresh_due(RoleKind::Timestamp, timestamp));
    Ok(Signed { targets_version, refresh_at })
}

/// The key id of the first signature on stored metadata (empty if unreadable).
fn signed_by(body: &[u8]) -> String {
    serde_json::from_slice::<tough::schema::Signed<serde_json::Value>>(body)
        .ok()
        .and_then(|s| s.signatures.first().map(|sig| hex::encode(sig.keyid.as_ref())))
        .unwrap_or_default()
}

fn from_stored_device(m: crate::db::entities::device_metadata::Model) -> SignedMetadata {
    SignedMetadata::from_stored(m.role, m.version, m.expires_at, m.body, m.sha256)
}

/// The bytes of one of a device's director files (`N.root.json`, `timestamp.json`,
/// `N.snapshot.json`, `N.targets.json`), with their SHA-256; `None` if it does not exist.
pub async fn find_device_metadata(
    svc: &Services,
    device_row: i64,
    file: &str,
) -> Result<Option<(bytes::Bytes, String)>, ServiceError> {
    match MetadataFile::parse(file) {
        Some(MetadataFile::Timestamp) => {
            let ticket = svc.caches.director_ticket();
            let latest = device_metadata_latest(&svc.db, device_row, "timestamp").await?;
            if let Some(m) = &latest {
                svc.caches.fill_director_etag(ticket, device_row, &m.sha256);
            }
            Ok(latest.map(|m| (m.body.into(), m.sha256)))
        }
        // Roots are the director repository's own, the same for every device.
        Some(MetadataFile::Versioned { role: "root", .. }) => super::serve::find_metadata(svc, DIRECTOR, file).await,
        Some(MetadataFile::Versioned { version, role: role @ ("snapshot" | "targets") }) => {
            Ok(device_metadata_get(&svc.db, device_row, role, version).await?.map(|m| (m.body.into(), m.sha256)))
        }
        Some(MetadataFile::Versioned { .. }) | None => Ok(None),
    }
}

/// The SHA-256 of the device's current director `timestamp.json` when this instance knows it
/// without asking the database (a poll that already has it is answered 304 from memory).
pub fn known_device_timestamp(svc: &Services, device_row: i64) -> Option<String> {
    svc.caches.director_etag(device_row)
}

#[cfg(test)]
mod tests {
    use super::{RoleKind, SignJob, Signed, refresh_due, sign_new_roles, sign_new_roles_many};
    use crate::tuf::keys::Signer;

    /// What the writer stores before the signing finished is what the signed roles say.
    #[tokio::test]
    async fn what_a_signing_yields_is_known_before_it() {
        let key = Signer::generate();
        for (now, versions) in [(1_800_000_000, [0, 0, 0]), (1_800_000_123, [4, 9, 30])] {
            let now = jiff::Timestamp::from_second(now).unwrap();
            let (roles, signed) = sign_new_roles(&key, "dev-1", versions, None, now).await.unwrap();
            let [targets, snapshot, timestamp] = &roles;
            let refresh_at = refresh_due(RoleKind::DirectorTargets, targets.expires)
                .min(refresh_due(RoleKind::Snapshot, snapshot.expires))
                .min(refresh_due(RoleKind::Timestamp, timestamp.expires));
            assert_eq!((signed.targets_version, signed.refresh_at), (targets.version, refresh_at));
            let known = Signed::of_new_roles(versions, now);
            assert_eq!((known.targets_version, known.refresh_at), (signed.targets_version, signed.refresh_at));
        }
    }

    /// Spread over the workers, every job is signed once and the results keep the jobs' order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_devices_are_signed_in_order_across_the_workers() {
        let key = Signer::generate();
        let now = jiff::Timestamp::from_second(1_800_000_000).unwrap();
        for count in [0, 1, 8, 9, 17, 64] {
            let jobs = (0..count)
                .map(|i| SignJob { device_id: format!("dev-{i}"), versions: [i, i + 1, i + 2], assignment: None })
                .collect();
            let signed = sign_new_roles_many(&key, jobs, now).await.unwrap();
            let versions: Vec<[u64; 3]> =
                signed.iter().map(|(roles, _)| [roles[0].version, roles[1].version, roles[2].version]).collect();
            let expected: Vec<[u64; 3]> = (0..count).map(|i| [i + 1, i + 2, i + 3]).collect();
            assert_eq!(versions, expected, "{count} jobs");
        }
    }
}
