//! `POST/GET /api/v1/rollouts`, `GET /api/v1/rollouts/{id}`, and the actions
//! `POST /api/v1/rollouts/{id}/{start|pause|resume|advance|abort|rollback}`.

use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::db::entities::rollout;
use crate::domain::ids::RolloutId;
use crate::domain::names::ProductName;
use crate::domain::rollout::{RolloutAction, RolloutState};
use crate::http::auth::{ManagerAuth, ViewerAuth};
use crate::http::error::{ApiError, ErrorBody};
use crate::http::query::ApiQuery;
use crate::services::Services;
use crate::services::manage_rollout::{CreateRollout, act_on_rollout, create_rollout, list_rollouts};
use crate::services::rollout_status::{RolloutStatus, StageStatus, rollout_status};
use crate::services::rollout_view::StoredStage;

/// A rollout's stage.
#[derive(Debug, Serialize, ToSchema)]
pub struct StageDto {
    /// Cohort.
    pub cohort: String,
    /// Share of the cohort, percent.
    pub percent: f64,
    /// Soak, minutes.
    pub soak_minutes: i64,
    /// Devices and gate figures (in `GET /api/v1/rollouts/{id}` only).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub figures: Option<StageFiguresDto>,
}

/// A stage's devices and what its gate sees.
#[derive(Debug, Serialize, ToSchema)]
pub struct StageFiguresDto {
    /// Active devices of the product that enter the rollout at this stage once every stage
    /// is open (hardware and version checks at assignment may skip some).
    pub eligible: u64,
    /// Active devices of the product in the stage's cohort, whatever their place in the order.
    pub in_cohort: u64,
    /// Why the stage takes no device, when `eligible` is 0 (an empty cohort, or every device of
    /// it beyond the stage's percentage).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Devices assigned in this stage, all time (withdrawn excluded).
    pub assigned: u64,
    /// Reported `installing` or `awaiting_reboot`.
    pub installing: u64,
    /// Reported `installed`.
    pub installed: u64,
    /// Reported `failed`.
    pub failed: u64,
    /// Reported `rejected`.
    pub rejected: u64,
    /// Silent past the stall time (the gate counts them as failed).
    pub stalled: u64,
    /// The gate over its current window.
    pub gate: GateDto,
}

/// A stage's gate verdict.
#[derive(Debug, Serialize, ToSchema)]
pub struct GateDto {
    /// Installed, failed, rejected and stalled devices in the window.
    pub final_reports: u64,
    /// Failed, rejected and stalled.
    pub failures: u64,
    /// failures / final_reports (fraction, rounded down to 0.0001).
    pub failure_rate: f64,
    /// At least `min_reports` final reports.
    pub enough_reports: bool,
    /// Failures put the stage over the gate (a running rollout halts).
    pub over_gate: bool,
    /// A device rejected the release: someone should look.
    pub alert: bool,
    /// Why it is over the gate.
    pub reason: Option<String>,
}

impl From<StageStatus> for StageDto {
    fn from(s: StageStatus) -> Self {
        let note = s.why_empty();
        let v = s.verdict;
        Self {
            cohort: s.plan.cohort,
            percent: s.plan.percent.as_f64(),
            soak_minutes: s.plan.soak_seconds / 60,
            figures: Some(StageFiguresDto {
                eligible: s.eligible,
                in_cohort: s.in_cohort,
                note,
                assigned: s.counts.assigned,
                installing: s.counts.installing,
                installed: s.counts.installed,
                failed: s.counts.failed,
                rejected: s.counts.rejected,
                stalled: s.stalled,
                gate: GateDto {
                    final_reports: v.final_reports,
                    failures: v.failures,
                    failure_rate: f64::from(v.failure_rate_bp) / 10_000.0,
                    enough_reports: v.enough_reports,
                    over_gate: v.over_gate,
                    alert: v.alert,
                    reason: v.reason,
                },
            }),
        }
    }
}

/// A rollout.
#[derive(Debug, Serialize, ToSchema)]
pub struct RolloutDto {
    /// Id.
    pub id: String,
    /// `draft|running|paused|halted|aborted|completed|rolled_back`.
    pub state: String,
    /// Stages in order.
    pub stages: Vec<StageDto>,
    /// Index of the current stage (0-based).
    pub current_stage: i32,
    /// When the current stage started, Unix seconds.
    pub stage_started_at: i64,
    /// Gate: highest failure rate (fraction).
    pub max_failure_rate: f64,
    /// Gate: final reports needed to advance.
    pub min_reports: i64,
    /// Gate: minutes of silence after which an assigned device counts as failed.
    pub stall_minutes: i64,
    /// Advances on schedule by itself.
    pub auto_advance: bool,
    /// Why it halted, or what a forced advance skipped.
    pub reason: Option<String>,
    /// Who created it.
    pub created_by: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub started_at: Option<i64>,
}

impl From<rollout::Model> for RolloutDto {
    fn from(r: rollout::Model) -> Self {
        let stored: Vec<StoredStage> = serde_json::from_str(&r.stages).unwrap_or_default();
        Self {
            stages: stored
                .into_iter()
                .map(|s| StageDto {
                    cohort: s.cohort,
                    percent: f64::from(s.basis_points) / 100.0,
                    soak_minutes: s.soak_seconds / 60,
                    figures: None,
                })
                .collect(),
            id: r.id,
            state: r.state,
            current_stage: r.current_stage,
            stage_started_at: r.stage_started_at,
            max_failure_rate: f64::from(r.max_failure_rate_bp) / 10_000.0,
            min_reports: r.min_reports,
            stall_minutes: r.stall_seconds / 60,
            auto_advance: r.auto_advance,
            reason: r.reason,
            created_by: r.created_by,
            created_at: r.created_at,
            started_at: r.started_at,
        }
    }
}

/// A rollout with its product, release and per-stage figures.
#[derive(Debug, Serialize, ToSchema)]
pub struct RolloutStatusDto {
    /// The rollout; its stages carry their figures.
    #[serde(flatten)]
    pub rollout: RolloutDto,
    /// Product name.
    pub product: String,
    /// Release version.
    pub version: String,
    /// What the rollout's devices downloaded: deltas against full images.
    pub traffic: TrafficDto,
    /// How many of its devices speak hawkBit's device API: they verify no TUF metadata, and the
    /// outcomes they report count in the gate on their word, not a signed report.
    pub ddi_devices: u64,
}

/// Firmware bytes the rollout's devices downloaded, counted by the server when a device
/// downloads the release's image or a delta to it with its device token (the agent does);
/// counted whether the server or, with presigned downloads, the object store sent the bytes.
#[derive(Debug, Serialize, ToSchema)]
pub struct TrafficDto {
    /// Bytes of delta targets.
    pub delta_bytes: u64,
    /// Download requests for delta targets (a resumed download counts once per request).
    pub delta_requests: u64,
    /// Bytes of full images.
    pub image_bytes: u64,
    /// Download requests for full images.
    pub image_requests: u64,
}

impl From<RolloutStatus> for RolloutStatusDto {
    fn from(s: RolloutStatus) -> Self {
        let mut rollout = RolloutDto::from(s.rollout);
        rollout.stages = s.stages.into_iter().map(StageDto::from).collect();
        let t = s.traffic;
        let traffic = TrafficDto {
            delta_bytes: t.delta_bytes,
            delta_requests: t.delta_requests,
            image_bytes: t.image_bytes,
            image_requests: t.image_requests,
        };
        Self { rollout, product: s.product, version: s.version, traffic, ddi_devices: s.ddi_devices }
    }
}

/// Query of the rollout list.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    /// Only this product.
    pub product: Option<String>,
    /// Only this state.
    pub state: Option<String>,
}

/// Options of an action.
#[derive(Debug, Deserialize, Default)]
pub struct ActionQuery {
    /// `advance` only: skip the soak and `min_reports` checks (audited).
    #[serde(default)]
    pub force: bool,
}

/// Creates a rollout in `draft`.
#[utoipa::path(post, path = "/api/v1/rollouts", tag = "rollouts", request_body = CreateRollout,
    responses((status = 201, body = RolloutDto), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create(
    svc: web::Data<Services>,
    auth: ManagerAuth,
    body: web::Json<CreateRollout>,
) -> Result<HttpResponse, ApiError> {
    let created = create_rollout(&svc, &auth.0, body.into_inner()).await?;
    Ok(HttpResponse::Created().json(RolloutDto::from(created)))
}

/// Lists rollouts, newest first.
#[utoipa::path(get, path = "/api/v1/rollouts", tag = "rollouts",
    params(("product" = Option<ProductName>, Query), ("state" = Option<RolloutState>, Query)),
    responses((status = 200, body = Vec<RolloutDto>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "unknown_product")),
    security(("bearer" = [])))]
pub async fn list(
    svc: web::Data<Services>,
    _auth: ViewerAuth,
    q: ApiQuery<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let rows = list_rollouts(&svc, q.product.as_deref(), q.state.as_deref()).await?;
    Ok(HttpResponse::Ok().json(rows.into_iter().map(RolloutDto::from).collect::<Vec<_>>()))
}

/// One rollout with its per-stage device counts and gate verdicts.
#[utoipa::path(get, path = "/api/v1/rollouts/{id}", tag = "rollouts", params(("id" = RolloutId, Path)),
    responses((status = 200, body = RolloutStatusDto), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get(svc: web::Data<Services>, _auth: ViewerAuth, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(RolloutStatusDto::from(rollout_status(&svc, &id).await?)))
}

/// An action's optional body.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActionBody {
    /// Why (up to 500 characters; line breaks and tabs, but no other control characters), kept
    /// with the action in the audit log.
    #[schema(max_length = 500, pattern = "^[^\\u0000-\\u0008\\u000B\\u000C\\u000E-\\u001F\\u007F-\\u009F]*$")]
    pub note: Option<String>,
}

/// Applies an action: `start`, `pause`, `resume`, `advance` (`?force=true` to skip checks), `abort`, `rollback`.
/// An optional JSON body `{"note": "…"}` says why, in the audit log.
#[utoipa::path(post, path = "/api/v1/rollouts/{id}/{action}", tag = "rollouts", request_body = Option<ActionBody>,
    params(("id" = RolloutId, Path), ("action" = String, Path, pattern = "^(start|pause|resume|advance|abort|rollback)$"), ("force" = Option<bool>, Query)),
    responses((status = 200, body = RolloutDto), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn act(
    svc: web::Data<Services>,
    auth: ManagerAuth,
    path: web::Path<(String, String)>,
    q: ApiQuery<ActionQuery>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let (id, name) = path.into_inner();
    // No body, as older clients send, is an action without a note.
    let body: ActionBody = if body.iter().all(u8::is_ascii_whitespace) {
        ActionBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request("invalid_json", format!("the body: {e}")))?
    };
    let action = RolloutAction::parse(&name, q.force).ok_or_else(|| {
        ApiError::not_found(
            "unknown_action",
            format!("{name:?} is not an action: start, pause, resume, advance, abort, rollback"),
        )
    })?;
    let updated = act_on_rollout(&svc, &auth.0, &id, action, body.note.as_deref()).await?;
    Ok(HttpResponse::Ok().json(RolloutDto::from(updated)))
}
