//! `GET /api/v1/audit`: the newest audit entries.

use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::http::auth::ViewerAuth;
use crate::http::error::{ApiError, ErrorBody};
use crate::services::Services;

/// Query parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// How many entries, newest first (1–1000, default 100).
    pub limit: Option<u64>,
}

/// One audit entry.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditDto {
    /// Unix seconds.
    pub at: i64,
    /// Who (`token:NAME`, `cli:USER`).
    pub actor: String,
    /// What, e.g. `release.publish`.
    pub action: String,
    /// To what, e.g. `release:pump-x1/1.0.0/fw.bin`.
    pub object: String,
    /// State before, if any.
    #[schema(value_type = Object)]
    pub before: Option<serde_json::Value>,
    /// State after, if any.
    #[schema(value_type = Object)]
    pub after: Option<serde_json::Value>,
}

/// The newest audit entries.
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", params(AuditQuery),
    responses((status = 200, body = Vec<AuditDto>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    svc: web::Data<Services>,
    _auth: ViewerAuth,
    query: web::Query<AuditQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = query.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request("invalid_limit", "limit must be between 1 and 1000"));
    }
    let parse = |raw: Option<String>| raw.and_then(|s| serde_json::from_str(&s).ok());
    let entries: Vec<AuditDto> = crate::services::audit::recent(&svc, limit)
        .await?
        .into_iter()
        .map(|e| AuditDto {
            at: e.at,
            actor: e.actor,
            action: e.action,
            object: e.object,
            before: parse(e.before),
            after: parse(e.after),
        })
        .collect();
    Ok(HttpResponse::Ok().json(entries))
}
