//! Device-facing routes: `POST /api/v1/devices/enroll` and `POST /api/v1/devices/{id}/report`.
//! Both bodies are TUF envelopes signed by the device key; the body is read raw so that the
//! signature is checked over exactly what the device sent.

use actix_web::{HttpResponse, web};
use patchgate_protocol::report::{EnrollAnswer, ReportAnswer};

use crate::domain::ids::DeviceId;
use crate::http::auth::DeviceAuth;
use crate::http::error::{ApiError, ErrorBody};
use crate::services::Services;
use crate::services::device_report::record_report;
use crate::services::enrollment::enroll_device;

/// Reports and enrollments are small; a cap keeps a misbehaving device from wasting memory.
pub const MAX_DEVICE_BODY: usize = 16 * 1024;

/// A message signed by the device key, as TUF writes signed metadata.
#[derive(utoipa::ToSchema)]
#[expect(dead_code, reason = "describes the body for the OpenAPI document; the body is read raw")]
pub struct Envelope {
    /// The message; its canonical JSON (OLPC) is what the signatures sign.
    #[schema(value_type = Object)]
    signed: serde_json::Value,
    /// One ed25519 signature by the device key.
    #[schema(min_items = 1)]
    signatures: Vec<EnvelopeSignature>,
}

/// A signature of an [`Envelope`].
#[derive(utoipa::ToSchema)]
#[expect(dead_code, reason = "describes the body for the OpenAPI document")]
pub struct EnvelopeSignature {
    /// The key's TUF key id: hex SHA-256 of its canonical key object.
    keyid: String,
    /// Hex of the 64-byte ed25519 signature.
    sig: String,
}

/// Enrolls a device: a signed `device-enroll` envelope with an enrollment token.
#[utoipa::path(post, path = "/api/v1/devices/enroll", tag = "devices",
    request_body(content = Envelope, description = "signed = {_type: device-enroll, device_id, product, hardware_id, public_key, enrollment_token, time}"),
    responses((status = 201, description = "the device token, shown once", body = serde_json::Value),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn enroll(svc: web::Data<Services>, body: web::Bytes) -> Result<HttpResponse, ApiError> {
    let answer: EnrollAnswer = enroll_device(&svc, &body).await?;
    Ok(HttpResponse::Created().json(answer))
}

/// A device's signed version report; answers what its director metadata is now.
#[utoipa::path(post, path = "/api/v1/devices/{device_id}/report", tag = "devices", params(("device_id" = DeviceId, Path)),
    request_body(content = Envelope, description = "signed = {_type: device-report, device_id, counter, time, installed, attempt, director_targets_version}"),
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

/// A device registered to speak hawkBit's device API, with its token (shown once).
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct DdiDeviceRegistered {
    /// The device's id: its DDI `controllerId`.
    pub device_id: String,
    pub product: String,
    /// Sent as `Authorization: TargetToken …`; shown only this once.
    pub token: String,
    /// Where the device polls, under this server's address: `/{tenant}/controller/v1/{device_id}`
    /// with tenant `DEFAULT` (or the product's name).
    pub poll_path: String,
}

/// Registers a device that speaks hawkBit's device API (SWUpdate, rauc-hawkbit-updater). It
/// verifies no TUF metadata: see the README's section on DDI devices.
#[utoipa::path(post, path = "/api/v1/ddi-devices", tag = "devices", request_body = crate::services::ddi::RegisterDdiDevice,
    responses((status = 201, body = DdiDeviceRegistered), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn register_ddi(
    svc: web::Data<Services>,
    auth: crate::http::auth::ManagerAuth,
    body: web::Json<crate::services::ddi::RegisterDdiDevice>,
) -> Result<HttpResponse, ApiError> {
    let input = body.into_inner();
    let product = input.product.clone();
    let (row, token) = crate::services::ddi::register(&svc, &auth.0, input).await?;
    Ok(HttpResponse::Created().json(DdiDeviceRegistered {
        poll_path: format!("/DEFAULT/controller/v1/{}", row.device_id),
        device_id: row.device_id,
        product,
        token,
    }))
}

/// A product's DDI gateway token, shown once.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct DdiGatewayToken {
    pub product: String,
    /// Sent as `Authorization: GatewayToken …` by a gateway polling for any of the product's DDI
    /// devices; shown only this once.
    pub token: String,
}

/// Creates the product's DDI gateway token, replacing the one it had (off until created).
#[utoipa::path(post, path = "/api/v1/products/{product}/ddi-gateway-token", tag = "devices",
    params(("product" = crate::domain::names::ProductName, Path)),
    responses((status = 201, body = DdiGatewayToken), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create_gateway_token(
    svc: web::Data<Services>,
    auth: crate::http::auth::ManagerAuth,
    product: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let product = product.into_inner();
    let token = crate::services::ddi::create_gateway_token(&svc, &auth.0, &product).await?;
    Ok(HttpResponse::Created().json(DdiGatewayToken { product, token }))
}

/// Revokes the product's DDI gateway token.
#[utoipa::path(delete, path = "/api/v1/products/{product}/ddi-gateway-token", tag = "devices",
    params(("product" = crate::domain::names::ProductName, Path)),
    responses((status = 204, description = "Revoked"), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn revoke_gateway_token(
    svc: web::Data<Services>,
    auth: crate::http::auth::ManagerAuth,
    product: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    crate::services::ddi::revoke_gateway_token(&svc, &auth.0, &product.into_inner()).await?;
    Ok(HttpResponse::NoContent().finish())
}
