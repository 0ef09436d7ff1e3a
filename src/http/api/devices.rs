//! Device-facing routes: `POST /api/v1/devices/enroll` and `POST /api/v1/devices/{id}/report`.
//! Both bodies are TUF envelopes signed by the device key; the body is read raw so that the
//! signature is checked over exactly what the device sent.

use actix_web::{HttpResponse, web};
use patchgate_protocol::report::{EnrollAnswer, ReportAnswer};

use crate::http::auth::DeviceAuth;
use crate::http::error::{ApiError, ErrorBody};
use crate::services::Services;
use crate::services::device_report::record_report;
use crate::services::enrollment::enroll_device;

/// Reports and enrollments are small; a cap keeps a misbehaving device from wasting memory.
pub const MAX_DEVICE_BODY: usize = 16 * 1024;

/// Enrolls a device: a signed `device-enroll` envelope with an enrollment token.
#[utoipa::path(post, path = "/api/v1/devices/enroll", tag = "devices",
    request_body(content = serde_json::Value, description = "TUF envelope: signed = {_type: device-enroll, device_id, product, hardware_id, public_key, enrollment_token, time}"),
    responses((status = 201, description = "the device token, shown once", body = serde_json::Value),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn enroll(svc: web::Data<Services>, body: web::Bytes) -> Result<HttpResponse, ApiError> {
    let answer: EnrollAnswer = enroll_device(&svc, &body).await?;
    Ok(HttpResponse::Created().json(answer))
}

/// A device's signed version report; answers what its director metadata is now.
#[utoipa::path(post, path = "/api/v1/devices/{device_id}/report", tag = "devices", params(("device_id" = String, Path)),
    request_body(content = serde_json::Value, description = "TUF envelope: signed = device-report (DESIGN.md §3)"),
    responses((status = 200, body = serde_json::Value, description = "{director_targets_version, changed, poll_seconds}"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "stale counter; the body carries last_counter")),
    security(("bearer" = [])))]
pub async fn report(
    svc: web::Data<Services>,
    auth: DeviceAuth,
    path: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let outcome = record_report(&svc, &auth.0, &path, &body).await?;
    if let Some(rollout) = outcome.failure_in {
        // The gate looks at once: a failing stage stops assigning before the next report.
        if let Err(e) = crate::services::manage_rollout::evaluate_rollout(&svc, &rollout).await {
            tracing::error!(rollout, error = %e, "evaluating the gate after a failure report");
        }
    }
    let answer: ReportAnswer = outcome.answer;
    Ok(HttpResponse::Ok().json(answer))
}
