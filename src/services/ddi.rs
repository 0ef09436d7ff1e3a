//! Devices that speak hawkBit's Direct Device Integration API (SWUpdate's suricatta,
//! rauc-hawkbit-updater) instead of running the agent.
//!
//! Such a device is a device row with `protocol = ddi`: registered by an admin, holding a device
//! token (sent as `Authorization: TargetToken …`) and no key. It verifies no TUF metadata, so
//! its trust rests on the HTTP channel and on the signature inside the vendor's own bundle
//! (a signed `.swu` or RAUC bundle); its success is its word, not a signed report.
//!
//! The server turns what it sees of the device into reports with the device's next counter
//! (`device_report::record_observed`), so the same planner assigns it, the same assignment rows
//! track its attempt and the same gate counts its failures:
//! - a poll is a report of what is stored (the assignment is decided again when the plan moved);
//! - an action is the device's assignment in a rollout (its id is the assignment's id), offered
//!   while the assignment is neither finished nor withdrawn;
//! - feedback moves the attempt: `scheduled` and `download` → downloading, `proceeding`,
//!   `resumed` and `downloaded` → installing, `closed` with `success` (or `none`) → installed,
//!   `closed` with `failure` → failed, `rejected` and `canceled` → rejected;
//! - an assignment withdrawn (the rollout paused or aborted before the device started) is
//!   offered as a cancellation until the device acknowledges it.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures_util::TryStreamExt;
use patchgate_protocol::report::{Attempt, AttemptState, InstalledImage};
use serde_json::json;

use super::audit::record;
use super::auth::{Caller, new_secret, token_hash};
use super::caches::DeviceIdentity;
use super::device_report::{ReportOutcome, record_observed};
use super::enrollment::{DDI, DEVICE_TOKEN_PREFIX, authenticate_device, check_hardware_id, identity_of};
use super::{ServiceError, Services};
use crate::db::ddi::{
    NewDdiDevice, assignment_get, assignment_last_changed, device_close_ddi_action, device_insert_ddi,
    device_set_attributes, gateway_token_delete, gateway_token_find, gateway_token_put, release_digest_get,
    release_digest_put,
};
use crate::db::devices::{device_find, device_get};
use crate::db::entities::{assignment, ddi_gateway_token, device, release, release_digest};
use crate::db::products::{product_get, product_get_by_name};
use crate::db::releases::release_get;
use crate::domain::ids::{DeviceId, parse_tags};
use crate::domain::plan::AssignmentState;

/// What an admin sends to register a DDI device.
#[derive(Debug, Clone, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterDdiDevice {
    /// The device's id, which is its DDI `controllerId`.
    pub device_id: String,
    pub product: String,
    /// One of the product's hardware ids.
    pub hardware_id: String,
    /// Tags for cohort selectors.
    #[serde(default)]
    pub tags: Vec<String>,
}

/// Registers a device that will speak hawkBit's device API; returns it and its token (shown
/// once).
pub async fn register(
    svc: &Services,
    caller: &Caller,
    input: RegisterDdiDevice,
) -> Result<(device::Model, String), ServiceError> {
    let device_id = DeviceId::parse(&input.device_id)?;
    let tags = parse_tags(&input.tags)?;
    let product = product_get_by_name(&svc.db, &input.product).await?.ok_or_else(|| {
        ServiceError::not_found("unknown_product", format!("product {} does not exist", input.product))
    })?;
    check_hardware_id(&product, &input.hardware_id)?;
    let (secret, shown, hash) = new_secret(DEVICE_TOKEN_PREFIX);
    let now = svc.now_secs();
    let tags_json: Vec<&str> = tags.iter().map(|t| t.as_str()).collect();
    let txn = crate::db::begin_write(&svc.db).await?;
    if device_find(&txn, device_id.as_str()).await?.is_some() {
        return Err(ServiceError::conflict("device_exists", format!("device {device_id} already exists")));
    }
    let row = device_insert_ddi(
        &txn,
        NewDdiDevice {
            device_id: device_id.as_str().to_owned(),
            product_id: product.id,
            hardware_id: input.hardware_id.clone(),
            tags: serde_json::to_string(&tags_json).map_err(anyhow::Error::new)?,
            token_prefix: shown,
            token_hash: hash,
            registered_at: now,
        },
    )
    .await?;
    let after = json!({"product": product.name, "hardware_id": input.hardware_id, "tags": tags_json, "protocol": DDI});
    record(&txn, now, caller, "device.register_ddi", &format!("device:{device_id}"), None, Some(after)).await?;
    txn.commit().await?;
    Ok((row, secret))
}

/// Why a DDI request is not answered.
#[derive(Debug)]
pub enum DdiRefusal {
    /// No valid `TargetToken` for this controller (hawkBit: 401, no body).
    Unauthenticated,
    /// Anything else, as the services say it.
    Service(ServiceError),
    /// The action is finished (hawkBit: 410, no body).
    Gone,
}

impl From<ServiceError> for DdiRefusal {
    fn from(e: ServiceError) -> Self {
        Self::Service(e)
    }
}

impl From<sea_orm::DbErr> for DdiRefusal {
    fn from(e: sea_orm::DbErr) -> Self {
        Self::Service(e.into())
    }
}

/// The prefix of a product's DDI gateway token.
pub const GATEWAY_TOKEN_PREFIX: &str = "pgw_";

/// The DDI device behind `authorization` (the header's value: `TargetToken` with the device's
/// own token, or `GatewayToken` with its product's gateway token), which must be the device
/// `controller_id` of a product named `tenant` (or the tenant `DEFAULT`).
pub async fn authenticate(
    svc: &Services,
    authorization: Option<&str>,
    tenant: &str,
    controller_id: &str,
) -> Result<Arc<DeviceIdentity>, DdiRefusal> {
    let header = authorization.unwrap_or_default();
    let identity = if let Some(token) = header.strip_prefix("TargetToken ") {
        let identity = match authenticate_device(svc, token.trim()).await {
            Ok(identity) => identity,
            Err(ServiceError::Unauthenticated { .. }) => return Err(DdiRefusal::Unauthenticated),
            Err(e) => return Err(e.into()),
        };
        // Another device's token: as hawkBit, which checks the token against the controller.
        if identity.device_id != controller_id {
            return Err(DdiRefusal::Unauthenticated);
        }
        identity
    } else if let Some(token) = header.strip_prefix("GatewayToken ") {
        through_gateway(svc, token.trim(), controller_id).await?
    } else {
        return Err(DdiRefusal::Unauthenticated);
    };
    if identity.key.is_some() {
        return Err(ServiceError::Forbidden {
            message: format!("device {controller_id} runs the patchgate agent, not hawkBit's device API"),
        }
        .into());
    }
    if tenant != "DEFAULT" {
        let product = product_get(&svc.db, identity.product_id).await?;
        if product.is_none_or(|p| p.name != tenant) {
            return Err(ServiceError::not_found(
                "unknown_tenant",
                format!("tenant {tenant} is neither DEFAULT nor the product of device {controller_id}"),
            )
            .into());
        }
    }
    Ok(identity)
}

/// The device `controller_id`, reached with its product's gateway token.
async fn through_gateway(svc: &Services, token: &str, controller_id: &str) -> Result<Arc<DeviceIdentity>, DdiRefusal> {
    if !token.starts_with(GATEWAY_TOKEN_PREFIX) {
        return Err(DdiRefusal::Unauthenticated);
    }
    let Some(gateway) = gateway_token_find(&svc.db, &token_hash(token)).await? else {
        return Err(DdiRefusal::Unauthenticated);
    };
    let Some(device) = device_find(&svc.db, controller_id).await? else {
        return Err(ServiceError::not_found(
            "unknown_device",
            format!("no device {controller_id}: register it first (POST /api/v1/ddi-devices)"),
        )
        .into());
    };
    // A gateway speaks for its own product's devices only.
    if device.product_id != gateway.product_id {
        return Err(DdiRefusal::Unauthenticated);
    }
    Ok(identity_of(device)?)
}

/// Creates (or replaces) the product's gateway token; returns it, shown once.
pub async fn create_gateway_token(svc: &Services, caller: &Caller, product: &str) -> Result<String, ServiceError> {
    let product = product_get_by_name(&svc.db, product)
        .await?
        .ok_or_else(|| ServiceError::not_found("unknown_product", format!("product {product} does not exist")))?;
    let (secret, shown, hash) = new_secret(GATEWAY_TOKEN_PREFIX);
    let now = svc.now_secs();
    let txn = crate::db::begin_write(&svc.db).await?;
    let row = ddi_gateway_token::Model {
        product_id: product.id,
        token_prefix: shown.clone(),
        token_hash: hash,
        created_by: caller.name.clone(),
        created_at: now,
    };
    gateway_token_put(&txn, row).await?;
    let object = format!("product:{}", product.name);
    record(&txn, now, caller, "ddi_gateway_token.create", &object, None, Some(json!({"prefix": shown}))).await?;
    txn.commit().await?;
    Ok(secret)
}

/// Revokes the product's gateway token.
pub async fn revoke_gateway_token(svc: &Services, caller: &Caller, product: &str) -> Result<(), ServiceError> {
    let product = product_get_by_name(&svc.db, product)
        .await?
        .ok_or_else(|| ServiceError::not_found("unknown_product", format!("product {product} does not exist")))?;
    let now = svc.now_secs();
    let txn = crate::db::begin_write(&svc.db).await?;
    if !gateway_token_delete(&txn, product.id).await? {
        return Err(ServiceError::not_found(
            "no_gateway_token",
            format!("product {} has no DDI gateway token", product.name),
        ));
    }
    record(&txn, now, caller, "ddi_gateway_token.revoke", &format!("product:{}", product.name), None, None).await?;
    txn.commit().await?;
    Ok(())
}

/// What a DDI device has to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Install the release of this assignment.
    Deploy(i64),
    /// Give up this assignment, which was withdrawn.
    Cancel(i64),
}

/// What a poll answers.
#[derive(Debug)]
pub struct Poll {
    pub action: Option<Action>,
    /// Whether the device has not sent its attributes yet.
    pub wants_config_data: bool,
}

/// A poll: recorded as a report of what is stored, then the device's action.
pub async fn poll(svc: &Services, device: Arc<DeviceIdentity>) -> Result<Poll, DdiRefusal> {
    let (row, outcome) = record_observed(svc, device, None, None).await?;
    evaluate_gate(svc, outcome).await;
    Ok(Poll { action: action_of(svc, &row).await?, wants_config_data: row.attributes.is_none() })
}

/// The device's action now, if any.
async fn action_of(svc: &Services, row: &device::Model) -> Result<Option<Action>, ServiceError> {
    let Some(a) = assignment_last_changed(&svc.db, row.id).await? else { return Ok(None) };
    if closed(row, &a) {
        return Ok(None);
    }
    let state = AssignmentState::parse(&a.state);
    Ok(match state {
        Some(AssignmentState::Withdrawn) => Some(Action::Cancel(a.id)),
        Some(AssignmentState::Attempt(s)) if s.is_final() => None,
        _ if offered(row, &a) => Some(Action::Deploy(a.id)),
        _ => None,
    })
}

/// Whether the device closed this assignment (or acknowledged its cancellation) since it was
/// last assigned.
fn closed(row: &device::Model, a: &assignment::Model) -> bool {
    row.ddi_closed_action == Some(a.id) && row.ddi_closed_at.is_some_and(|at| at > a.assigned_at)
}

/// Whether the director would tell the device to install this assignment's release (not a
/// rollback: a DDI device is offered rollout installs only).
fn offered(row: &device::Model, a: &assignment::Model) -> bool {
    row.assigned_action.as_deref() == Some("install")
        && row.assigned_rollout_id.as_deref() == Some(a.rollout_id.as_str())
        && row.assigned_release_id == Some(a.release_id)
}

/// An action of this device, by id, with what the device runs: the assignment must be the
/// device's own.
async fn own_assignment(
    svc: &Services,
    device: &DeviceIdentity,
    action_id: i64,
) -> Result<(device::Model, assignment::Model), DdiRefusal> {
    let not_found = || ServiceError::not_found("unknown_action", format!("action {action_id} does not exist"));
    let a = assignment_get(&svc.db, action_id).await?.filter(|a| a.device_row_id == device.id).ok_or_else(not_found)?;
    let row = device_get(&svc.db, device.id).await?.ok_or_else(not_found)?;
    Ok((row, a))
}

/// An action to deploy, as `deploymentBase` describes it.
#[derive(Debug)]
pub struct Deployment {
    pub action_id: i64,
    pub release: release::Model,
    pub product: String,
    pub digests: release_digest::Model,
}

/// The deployment of `action_id`, which must be the device's current action.
pub async fn deployment(svc: &Services, device: &DeviceIdentity, action_id: i64) -> Result<Deployment, DdiRefusal> {
    let (row, a) = own_assignment(svc, device, action_id).await?;
    if action_of(svc, &row).await? != Some(Action::Deploy(action_id)) {
        return Err(ServiceError::not_found("unknown_action", format!("action {action_id} is not open")).into());
    }
    let vanished = || ServiceError::Internal(anyhow::anyhow!("the release of assignment {action_id} vanished"));
    let release = release_get(&svc.db, a.release_id).await?.ok_or_else(vanished)?;
    let product = product_get(&svc.db, release.product_id).await?.ok_or_else(vanished)?.name;
    let digests = digests(svc, &release).await?;
    Ok(Deployment { action_id, release, product, digests })
}

/// One computation of digests at a time in this process: when a rollout opens, its devices ask
/// for the same release at once, and one of them reads the image while the others wait for its
/// answer in the database.
static COMPUTING_DIGESTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A release's SHA-1 and MD5, computed from its blob the first time (SHA-256 checked on the way).
async fn digests(svc: &Services, release: &release::Model) -> Result<release_digest::Model, ServiceError> {
    use md5::Digest as _;
    if let Some(known) = release_digest_get(&svc.db, release.id).await? {
        return Ok(known);
    }
    let _computing = COMPUTING_DIGESTS.lock().await;
    if let Some(known) = release_digest_get(&svc.db, release.id).await? {
        return Ok(known);
    }
    let mut stream = svc.store.read(&release.sha256, None).await?;
    let (mut sha1, mut md5, mut sha256) = (sha1::Sha1::new(), md5::Md5::new(), sha2::Sha256::new());
    while let Some(chunk) = stream.try_next().await.map_err(anyhow::Error::new)? {
        sha1.update(&chunk);
        md5.update(&chunk);
        sha256.update(&chunk);
    }
    if hex::encode(sha256.finalize()) != release.sha256 {
        return Err(ServiceError::Internal(anyhow::anyhow!(
            "the stored image of {} does not match its SHA-256",
            release.target_name
        )));
    }
    let row = release_digest::Model {
        release_id: release.id,
        sha1: hex::encode(sha1.finalize()),
        md5: hex::encode(md5.finalize()),
    };
    release_digest_put(&svc.db, row.clone()).await?;
    Ok(row)
}

/// What a device says of an action (`status` of hawkBit's `DdiActionFeedback`).
#[derive(Debug, Clone, serde::Deserialize, utoipa::ToSchema)]
pub struct Feedback {
    pub status: FeedbackStatus,
}

/// The status part of a [`Feedback`]; clients' other fields (`id`, `time`, `timestamp`) are
/// ignored, as hawkBit does.
#[derive(Debug, Clone, serde::Deserialize, utoipa::ToSchema)]
pub struct FeedbackStatus {
    /// `closed`, `proceeding`, `canceled`, `scheduled`, `rejected`, `resumed`, `downloaded` or
    /// `download`.
    pub execution: String,
    pub result: FeedbackResult,
    #[serde(default)]
    pub details: Vec<String>,
}

/// The result part of a [`FeedbackStatus`].
#[derive(Debug, Clone, serde::Deserialize, utoipa::ToSchema)]
pub struct FeedbackResult {
    /// `success`, `failure` or `none`.
    pub finished: String,
}

/// The attempt state a deployment's feedback means.
fn attempt_state(execution: &str, finished: &str) -> Result<AttemptState, ServiceError> {
    let unknown = |what: &str, value: &str| {
        ServiceError::invalid("invalid_feedback", format!("status{what} {value:?} is not one hawkBit defines"))
    };
    if !matches!(finished, "success" | "failure" | "none") {
        return Err(unknown(".result.finished", finished));
    }
    Ok(match execution {
        "closed" if finished == "failure" => AttemptState::Failed,
        "closed" => AttemptState::Installed,
        "scheduled" | "download" => AttemptState::Downloading,
        "proceeding" | "resumed" | "downloaded" => AttemptState::Installing,
        "rejected" | "canceled" => AttemptState::Rejected,
        other => return Err(unknown(".execution", other)),
    })
}

/// The detail a feedback's messages make (at most what a report may carry).
fn detail_of(status: &FeedbackStatus) -> Option<String> {
    let joined = status.details.iter().map(|d| d.trim()).filter(|d| !d.is_empty()).collect::<Vec<_>>().join("; ");
    (!joined.is_empty()).then(|| joined.chars().take(patchgate_protocol::report::MAX_DETAIL_CHARS).collect())
}

/// Feedback on the deployment `action_id`.
pub async fn deployment_feedback(
    svc: &Services,
    device: Arc<DeviceIdentity>,
    action_id: i64,
    feedback: &Feedback,
) -> Result<(), DdiRefusal> {
    let state = attempt_state(&feedback.status.execution, &feedback.status.result.finished)?;
    let (row, a) = own_assignment(svc, &device, action_id).await?;
    match action_of(svc, &row).await? {
        Some(Action::Deploy(id)) if id == action_id => {}
        _ => return Err(DdiRefusal::Gone),
    }
    let release = release_get(&svc.db, a.release_id)
        .await?
        .ok_or_else(|| ServiceError::Internal(anyhow::anyhow!("the release of assignment {action_id} vanished")))?;
    let installed = (state == AttemptState::Installed).then(|| InstalledImage {
        name: release.target_name.clone(),
        sha256: release.sha256.clone(),
        version: release.version.clone(),
    });
    let attempt = Attempt { name: release.target_name.clone(), state, detail: detail_of(&feedback.status) };
    let (_, outcome) = record_observed(svc, device, installed, Some(attempt)).await?;
    evaluate_gate(svc, outcome).await;
    Ok(())
}

/// The cancellation `action_id`, which must be the device's current one.
pub async fn cancellation(svc: &Services, device: &DeviceIdentity, action_id: i64) -> Result<(), DdiRefusal> {
    let (row, _) = own_assignment(svc, device, action_id).await?;
    if action_of(svc, &row).await? != Some(Action::Cancel(action_id)) {
        return Err(
            ServiceError::not_found("unknown_action", format!("action {action_id} is not being canceled")).into()
        );
    }
    Ok(())
}

/// Feedback on the cancellation `action_id`: `closed` acknowledges it (hawkBit: "to finally
/// accept a cancellation, you must send a closed status"); anything else is noted and changes
/// nothing.
pub async fn cancel_feedback(
    svc: &Services,
    device: &DeviceIdentity,
    action_id: i64,
    feedback: &Feedback,
) -> Result<(), DdiRefusal> {
    attempt_state(&feedback.status.execution, &feedback.status.result.finished)?;
    let (row, _) = own_assignment(svc, device, action_id).await?;
    if action_of(svc, &row).await? != Some(Action::Cancel(action_id)) {
        return Err(DdiRefusal::Gone);
    }
    if feedback.status.execution == "closed" {
        device_close_ddi_action(&svc.db, device.id, action_id, svc.now_secs()).await?;
    } else {
        tracing::info!(device = %device.device_id, action_id, execution = %feedback.status.execution,
            "a DDI device answered a cancellation without closing it");
    }
    Ok(())
}

/// What a device sends as `configData`.
#[derive(Debug, Clone, serde::Deserialize, utoipa::ToSchema)]
pub struct ConfigData {
    /// `merge` (the default), `replace` or `remove`.
    #[serde(default)]
    pub mode: Option<String>,
    /// Attribute names and values.
    pub data: BTreeMap<String, String>,
}

/// Limits on attributes, so that a device cannot fill the database.
const MAX_ATTRIBUTES: usize = 64;
const MAX_ATTRIBUTE_CHARS: usize = 256;

/// Stores a device's attributes (`configData`).
pub async fn config_data(svc: &Services, device: &DeviceIdentity, input: &ConfigData) -> Result<(), DdiRefusal> {
    if input.data.is_empty() {
        return Err(ServiceError::invalid("invalid_config_data", "data must name at least one attribute").into());
    }
    if let Some((name, value)) = input.data.iter().find(|(k, v)| {
        k.is_empty() || k.chars().count() > MAX_ATTRIBUTE_CHARS || v.chars().count() > MAX_ATTRIBUTE_CHARS
    }) {
        return Err(ServiceError::invalid(
            "invalid_config_data",
            format!("attribute {name:?} = {value:?}: names must be 1 to {MAX_ATTRIBUTE_CHARS} characters, values at most {MAX_ATTRIBUTE_CHARS}"),
        )
        .into());
    }
    let row = device_get(&svc.db, device.id)
        .await?
        .ok_or_else(|| ServiceError::Internal(anyhow::anyhow!("device row vanished")))?;
    let mut attributes: BTreeMap<String, String> =
        row.attributes.as_deref().and_then(|a| serde_json::from_str(a).ok()).unwrap_or_default();
    match input.mode.as_deref().unwrap_or("merge") {
        "merge" => attributes.extend(input.data.clone()),
        "replace" => attributes.clone_from(&input.data),
        "remove" => attributes.retain(|k, _| !input.data.contains_key(k)),
        other => {
            return Err(ServiceError::invalid(
                "invalid_config_data",
                format!("mode {other:?} is not merge, replace or remove"),
            )
            .into());
        }
    }
    if attributes.len() > MAX_ATTRIBUTES {
        return Err(ServiceError::invalid(
            "invalid_config_data",
            format!("a device may have at most {MAX_ATTRIBUTES} attributes; this would make {}", attributes.len()),
        )
        .into());
    }
    let json = serde_json::to_string(&attributes).map_err(anyhow::Error::new).map_err(ServiceError::from)?;
    device_set_attributes(&svc.db, device.id, json).await?;
    Ok(())
}

/// A failure just recorded: the gate looks at once, as for a signed report.
async fn evaluate_gate(svc: &Services, outcome: ReportOutcome) {
    if let Some(rollout) = outcome.failure_in
        && let Err(e) = super::manage_rollout::evaluate_rollout(svc, &rollout).await
    {
        tracing::error!(rollout, error = %e, "evaluating the gate after a DDI failure");
    }
}

/// `device_poll_seconds` as DDI's `HH:MM:SS` (at most a day less a second).
pub fn sleep_of(seconds: u64) -> String {
    let s = seconds.min(24 * 3600 - 1);
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feedback_maps_to_attempt_states() {
        use AttemptState::*;
        let cases = [
            ("closed", "success", Installed),
            ("closed", "none", Installed),
            ("closed", "failure", Failed),
            ("proceeding", "none", Installing),
            ("resumed", "none", Installing),
            ("downloaded", "success", Installing),
            ("scheduled", "none", Downloading),
            ("download", "none", Downloading),
            ("rejected", "none", Rejected),
            ("canceled", "success", Rejected),
        ];
        for (execution, finished, want) in cases {
            assert_eq!(attempt_state(execution, finished).unwrap(), want, "{execution}/{finished}");
        }
        assert!(attempt_state("exploded", "none").is_err());
        assert!(attempt_state("closed", "maybe").is_err());
    }

    #[test]
    fn sleep_is_hours_minutes_seconds() {
        assert_eq!(sleep_of(60), "00:01:00");
        assert_eq!(sleep_of(3725), "01:02:05");
        assert_eq!(sleep_of(10 * 24 * 3600), "23:59:59");
    }
}
