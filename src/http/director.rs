//! Per-device director metadata: `GET /director/{device_id}/metadata/{file}` with that device's
//! token (another device's token: 403). Roots are also public at `/director/metadata/`.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};

use super::auth::DeviceAuth;
use super::error::{ApiError, ErrorBody, json_error};
use super::repo::signed_json_response;
use crate::domain::ids::DeviceId;
use crate::services::Services;
use crate::services::director::{find_device_metadata, known_device_timestamp};

/// Per-device and behind a token: never in a shared cache.
const PRIVATE: &str = "private, no-cache";

/// One of the device's director files.
#[utoipa::path(get, path = "/director/{device_id}/metadata/{file}", tag = "director",
    params(("device_id" = DeviceId, Path), ("file" = String, Path, description = "`N.root.json`, `timestamp.json`, `N.snapshot.json` or `N.targets.json`",
        pattern = "^(timestamp|[1-9][0-9]{0,17}[.](root|snapshot|targets))[.]json$")),
    responses((status = 200, description = "signed metadata", content_type = "application/json"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn device_metadata(
    svc: web::Data<Services>,
    req: HttpRequest,
    auth: DeviceAuth,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (device_id, file) = path.into_inner();
    if auth.0.device_id != device_id {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("this token belongs to device {}, not {device_id}", auth.0.device_id),
        ));
    }
    if file == "timestamp.json"
        && let Some(sha256) = known_device_timestamp(&svc, auth.0.id)
        && let Some(not_modified) = super::repo::not_modified(&req, &sha256, PRIVATE)
    {
        return Ok(not_modified);
    }
    let Some((body, sha256)) = find_device_metadata(&svc, auth.0.id, &file).await? else {
        return Ok(json_error(StatusCode::NOT_FOUND, "not_found", &format!("no director metadata {file}")));
    };
    Ok(signed_json_response(&req, body, &sha256, PRIVATE))
}
