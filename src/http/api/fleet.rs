//! The fleet as people see it: `GET /api/v1/devices`, `GET /api/v1/devices/{id}`, and the admin
//! changes `PUT /api/v1/devices/{id}/tags`, `POST /api/v1/devices/{id}/decommission` and
//! `POST /api/v1/devices/{id}/allow-rekey`. (What devices themselves call is in `devices`.)

use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::db::entities::device_report;
use crate::domain::ids::{CohortName, DeviceId, RolloutId, Tag};
use crate::domain::names::ProductName;
use crate::http::auth::{AdminAuth, ManagerAuth, ViewerAuth};
use crate::http::error::{ApiError, ErrorBody};
use crate::http::query::ApiQuery;
use crate::services::Services;
use crate::services::device_search::{DeviceQuery, list_devices};
use crate::services::devices::{AssignmentView, DeviceDetail, DeviceView, get_device};
use crate::services::manage_device::{allow_device_rekey, decommission_device, set_device_tags};

/// The image a device runs.
#[derive(Debug, Serialize, ToSchema)]
pub struct InstalledDto {
    /// Target name, e.g. `pump-x1/1.0.0/fw.bin`.
    pub name: String,
    /// Release version.
    pub version: String,
    /// SHA-256, hex.
    pub sha256: String,
}

impl InstalledDto {
    /// From the three stored columns (a report without `installed` stores none of them).
    fn of(name: Option<String>, version: Option<String>, sha256: Option<String>) -> Option<Self> {
        Some(Self { name: name?, version: version?, sha256: sha256? })
    }
}

/// The update a device last reported working on.
#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptDto {
    /// Target name.
    pub name: String,
    /// `downloading|installing|awaiting_reboot|installed|failed|rejected`.
    pub state: String,
    /// The device's explanation, if any.
    pub detail: Option<String>,
}

impl AttemptDto {
    /// From the stored columns (a report without `attempt` stores none of them).
    fn of(name: Option<String>, state: Option<String>, detail: Option<String>) -> Option<Self> {
        Some(Self { name: name?, state: state?, detail })
    }
}

/// What the device's director currently names.
#[derive(Debug, Serialize, ToSchema)]
pub struct AssignedDto {
    /// Release version.
    pub version: String,
    /// Target name.
    pub target: String,
    /// The rollout that decided it.
    pub rollout_id: Option<String>,
    /// `install` or `rollback`.
    pub action: Option<String>,
}

/// A device.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeviceDto {
    /// The manufacturer's id.
    pub device_id: String,
    /// Product name.
    pub product: String,
    /// Hardware id.
    pub hardware_id: String,
    /// Admin-set tags, sorted.
    pub tags: Vec<String>,
    /// `active` or `decommissioned`.
    pub status: String,
    /// `tuf` (the agent: signed reports, verified metadata) or `ddi` (hawkBit's device API: it
    /// verifies no TUF metadata and its success is its word).
    pub protocol: String,
    /// TUF keyid of the device key (empty for a DDI device).
    pub keyid: String,
    /// The attributes a DDI device sent (`configData`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attributes: Option<std::collections::BTreeMap<String, String>>,
    /// The next enrollment may bring a new key.
    pub rekey_allowed: bool,
    /// Unix seconds.
    pub enrolled_at: i64,
    /// Unix seconds, if decommissioned.
    pub decommissioned_at: Option<i64>,
    /// Unix seconds of the last accepted report.
    pub last_seen_at: Option<i64>,
    /// Counter of the last accepted report.
    pub last_counter: Option<i64>,
    /// What it runs, as it last reported.
    pub installed: Option<InstalledDto>,
    /// The update it last reported.
    pub attempt: Option<AttemptDto>,
    /// What its director names now.
    pub assignment: Option<AssignedDto>,
    /// Version of its director targets metadata.
    pub director_targets_version: i64,
    /// With `?rollout=`: where its assignment in that rollout stands.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_rollout: Option<RolloutOutcomeDto>,
}

/// Where a device's assignment in one rollout stands.
#[derive(Debug, Serialize, ToSchema)]
pub struct RolloutOutcomeDto {
    /// The rollout.
    pub rollout_id: String,
    /// The stage (0-based) at which it entered.
    pub stage: i32,
    /// `assigned`, an attempt state, or `withdrawn`.
    pub state: String,
    /// The device's explanation (a failure's error), if any.
    pub detail: Option<String>,
    /// Unix seconds of the last change.
    pub updated_at: i64,
    /// Unix seconds of its outcome (installed, failed, rejected).
    pub final_at: Option<i64>,
}

impl From<DeviceView> for DeviceDto {
    fn from(v: DeviceView) -> Self {
        let d = v.device;
        let installed = InstalledDto::of(d.installed_name, d.installed_version, d.installed_sha256);
        let attempt = AttemptDto::of(d.attempt_name, d.attempt_state, d.attempt_detail);
        let assignment = v.assigned.map(|r| AssignedDto {
            version: r.version,
            target: r.target_name,
            rollout_id: d.assigned_rollout_id,
            action: d.assigned_action,
        });
        Self {
            device_id: d.device_id,
            product: v.product,
            hardware_id: d.hardware_id,
            tags: serde_json::from_str(&d.tags).unwrap_or_default(),
            status: d.status,
            protocol: d.protocol,
            keyid: d.keyid,
            attributes: d.attributes.as_deref().and_then(|a| serde_json::from_str(a).ok()),
            rekey_allowed: d.rekey_allowed,
            enrolled_at: d.enrolled_at,
            decommissioned_at: d.decommissioned_at,
            last_seen_at: d.last_seen_at,
            last_counter: d.last_counter,
            installed,
            attempt,
            assignment,
            director_targets_version: d.director_targets_version,
            in_rollout: v.in_rollout.map(|a| RolloutOutcomeDto {
                rollout_id: a.rollout_id,
                stage: a.stage,
                state: a.state,
                detail: a.detail,
                updated_at: a.updated_at,
                final_at: a.final_at,
            }),
        }
    }
}

/// A page of devices.
#[derive(Debug, Serialize, ToSchema)]
pub struct DevicePageDto {
    /// The devices, in the order asked.
    pub devices: Vec<DeviceDto>,
    /// Pass as `after` for the next page; null on the last page.
    pub next_after: Option<String>,
    /// Devices matching the filters, all pages together.
    pub total: u64,
}

/// One stored report.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReportDto {
    /// The device's counter.
    pub counter: i64,
    /// Unix seconds at the server.
    pub received_at: i64,
    /// The device's own time, as sent.
    pub reported_time: String,
    /// What it ran.
    pub installed: Option<InstalledDto>,
    /// The update it reported.
    pub attempt: Option<AttemptDto>,
    /// The director targets version it had.
    pub director_targets_version: i64,
}

impl From<device_report::Model> for ReportDto {
    fn from(r: device_report::Model) -> Self {
        let installed = InstalledDto::of(r.installed_name, r.installed_version, r.installed_sha256);
        let attempt = AttemptDto::of(r.attempt_name, r.attempt_state, r.attempt_detail);
        Self {
            counter: r.counter,
            received_at: r.received_at,
            reported_time: r.reported_time,
            installed,
            attempt,
            director_targets_version: r.director_targets_version,
        }
    }
}

/// A device's part in one rollout.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeviceAssignmentDto {
    /// The rollout.
    pub rollout_id: String,
    /// The stage (0-based) at which it entered.
    pub stage: i32,
    /// `assigned`, an attempt state, or `withdrawn`.
    pub state: String,
    /// Version assigned.
    pub version: String,
    /// Unix seconds.
    pub assigned_at: i64,
    /// Unix seconds of its outcome (installed, failed, rejected).
    pub final_at: Option<i64>,
    /// The device's explanation, if any.
    pub detail: Option<String>,
}

impl From<AssignmentView> for DeviceAssignmentDto {
    fn from(v: AssignmentView) -> Self {
        let a = v.assignment;
        Self {
            rollout_id: a.rollout_id,
            stage: a.stage,
            state: a.state,
            version: v.version,
            assigned_at: a.assigned_at,
            final_at: a.final_at,
            detail: a.detail,
        }
    }
}

/// A device with its history.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeviceDetailDto {
    /// The device.
    #[serde(flatten)]
    pub device: DeviceDto,
    /// Its 50 newest reports, newest first.
    pub reports: Vec<ReportDto>,
    /// Its assignments, newest first.
    pub assignments: Vec<DeviceAssignmentDto>,
}

impl From<DeviceDetail> for DeviceDetailDto {
    fn from(d: DeviceDetail) -> Self {
        Self {
            device: d.view.into(),
            reports: d.reports.into_iter().map(ReportDto::from).collect(),
            assignments: d.assignments.into_iter().map(DeviceAssignmentDto::from).collect(),
        }
    }
}

/// Filters and paging of the device list.
#[derive(Debug, Deserialize, IntoParams)]
// In the query string: utoipa infers it from `web::Query`, not from our `ApiQuery`.
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only this product.
    #[param(value_type = Option<ProductName>)]
    pub product: Option<String>,
    /// Only this cohort (its explicit members and the devices its selector takes); without
    /// `product`, the cohort of that name in every product that has one.
    #[param(value_type = Option<CohortName>)]
    pub cohort: Option<String>,
    /// Only devices with this tag.
    #[param(value_type = Option<Tag>)]
    pub tag: Option<String>,
    /// `active` or `decommissioned`.
    #[param(pattern = "^(active|decommissioned)$")]
    pub status: Option<String>,
    /// Only devices running this version.
    pub installed_version: Option<String>,
    /// Only devices this rollout assigned; each then carries `in_rollout`.
    #[param(value_type = Option<RolloutId>)]
    pub rollout: Option<String>,
    /// Only devices whose assignment in `rollout` (or, without it, in any rollout) stands here.
    #[param(pattern = "^(failed|rejected|installed|assigned|downloading|installing|awaiting_reboot|withdrawn)$")]
    pub outcome: Option<String>,
    /// Only devices that entered `rollout` (or, without it, any rollout) at this stage (0-based,
    /// as `current_stage` and `in_rollout.stage`); within the rollout's stages when one is named.
    #[param(minimum = 0, maximum = 31)] // MAX_STAGES - 1
    pub stage: Option<u32>,
    /// `online`: reported within three poll intervals (`device_poll_seconds`); `offline`:
    /// reported before, not since; `never`: never reported.
    #[param(pattern = "^(online|offline|never)$")]
    pub seen: Option<String>,
    /// Only devices not heard from for at least this many seconds: no report in that time
    /// and, if they never reported, enrolled before it.
    #[param(minimum = 1, maximum = 316_224_000)]
    pub silent_for: Option<u64>,
    /// `device_id` (default), `last_seen` (the longest silent first, never-seen devices
    /// before all) or `-last_seen` (the most recently seen first).
    #[param(pattern = "^(device_id|last_seen|-last_seen)$")]
    pub sort: Option<String>,
    /// Page size, 1–1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u64>,
    /// The previous page's `next_after` (with the same `sort`; empty: the first page): a device id, preceded by its
    /// sort key and `:` when sorted by last seen. There a bare id starts after that device as it
    /// sorts now (404 if there is none). By last seen, a device that reports while the pages
    /// are walked may be listed twice or passed over; by id, every device is listed once.
    #[param(pattern = "^((-?[0-9]{1,18}:)?[A-Za-z0-9._-]{1,128})?$")]
    pub after: Option<String>,
}

/// New tags for a device.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TagsRequest {
    /// The device's whole tag list (it replaces the old one).
    #[schema(value_type = Vec<Tag>, example = json!(["region:eu", "ward:icu"]))]
    pub tags: Vec<String>,
}

/// Lists devices, filtered, in the order asked (by id unless told), one page at a time.
#[utoipa::path(get, path = "/api/v1/devices", tag = "devices", params(ListQuery),
    responses((status = 200, body = DevicePageDto), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    svc: web::Data<Services>,
    _auth: ViewerAuth,
    q: ApiQuery<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let q = q.into_inner();
    let query = DeviceQuery {
        product: q.product,
        cohort: q.cohort,
        tag: q.tag,
        status: q.status,
        installed_version: q.installed_version,
        rollout: q.rollout,
        outcome: q.outcome,
        stage: q.stage,
        seen: q.seen,
        silent_for: q.silent_for,
        sort: q.sort,
        limit: q.limit,
        after: q.after,
    };
    let page = list_devices(&svc, query).await?;
    let devices = page.devices.into_iter().map(DeviceDto::from).collect();
    Ok(HttpResponse::Ok().json(DevicePageDto { devices, next_after: page.next_after, total: page.total }))
}

/// One device with its newest reports and its assignments.
#[utoipa::path(get, path = "/api/v1/devices/{device_id}", tag = "devices", params(("device_id" = DeviceId, Path)),
    responses((status = 200, body = DeviceDetailDto), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get(svc: web::Data<Services>, _auth: ViewerAuth, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(DeviceDetailDto::from(get_device(&svc, &id).await?)))
}

/// Replaces a device's tags (release managers and admins); its cohorts follow at its next report.
#[utoipa::path(put, path = "/api/v1/devices/{device_id}/tags", tag = "devices", params(("device_id" = DeviceId, Path)),
    request_body = TagsRequest,
    responses((status = 200, body = DeviceDto), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn set_tags(
    svc: web::Data<Services>,
    auth: ManagerAuth,
    id: web::Path<String>,
    body: web::Json<TagsRequest>,
) -> Result<HttpResponse, ApiError> {
    let updated = set_device_tags(&svc, &auth.0, &id, &body.tags).await?;
    Ok(HttpResponse::Ok().json(DeviceDto::from(updated)))
}

/// Decommissions a device (admins): its token stops working and it cannot enroll again.
#[utoipa::path(post, path = "/api/v1/devices/{device_id}/decommission", tag = "devices",
    params(("device_id" = DeviceId, Path)),
    responses((status = 200, body = DeviceDto), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn decommission(
    svc: web::Data<Services>,
    auth: AdminAuth,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(DeviceDto::from(decommission_device(&svc, &auth.0, &id).await?)))
}

/// Lets the device's next enrollment bring a new key (admins).
#[utoipa::path(post, path = "/api/v1/devices/{device_id}/allow-rekey", tag = "devices",
    params(("device_id" = DeviceId, Path)),
    responses((status = 200, body = DeviceDto), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn allow_rekey(
    svc: web::Data<Services>,
    auth: AdminAuth,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(DeviceDto::from(allow_device_rekey(&svc, &auth.0, &id).await?)))
}
