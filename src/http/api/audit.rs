//! `GET /api/v1/audit`: audit entries, newest first, filtered and paged by id.

use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::http::auth::ViewerAuth;
use crate::http::error::{ApiError, ErrorBody};
use crate::http::query::ApiQuery;
use crate::services::Services;
use crate::services::audit::{AuditQuery as Query, list_audit};

/// Query parameters.
#[derive(Debug, Deserialize, IntoParams)]
// In the query string: utoipa infers it from `web::Query`, not from our `ApiQuery`.
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// How many entries, newest first (1–1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u64>,
    /// Only entries older than this id: pass the last `id` of a page to get the next one.
    pub before: Option<i64>,
    /// Only this actor, e.g. `token:ci`.
    pub actor: Option<String>,
    /// Only actions starting with this, e.g. `rollout.` or `device.decommission`.
    pub action: Option<String>,
    /// Only this object, e.g. `device:pump-0001`.
    pub object: Option<String>,
}

/// One audit entry.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditDto {
    /// Id, increasing with time: the paging cursor (`before`).
    pub id: i64,
    /// Unix seconds.
    pub at: i64,
    /// Who (`token:NAME`, `cli:USER`).
    pub actor: String,
    /// What, e.g. `release.publish`.
    pub action: String,
    /// To what, e.g. `release:pump-x1/1.0.0/fw.bin`.
    pub object: String,
    /// State before, if any.
    #[schema(value_type = Option<Object>)]
    pub before: Option<serde_json::Value>,
    /// State after, if any.
    #[schema(value_type = Option<Object>)]
    pub after: Option<serde_json::Value>,
}

impl From<crate::db::entities::audit::Model> for AuditDto {
    fn from(e: crate::db::entities::audit::Model) -> Self {
        let parse = |raw: Option<String>| raw.and_then(|s| serde_json::from_str(&s).ok());
        Self {
            id: e.id,
            at: e.at,
            actor: e.actor,
            action: e.action,
            object: e.object,
            before: parse(e.before),
            after: parse(e.after),
        }
    }
}

/// Audit entries, newest first; page with `before` = the last `id` of the previous page.
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", params(AuditQuery),
    responses((status = 200, body = Vec<AuditDto>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    svc: web::Data<Services>,
    _auth: ViewerAuth,
    query: ApiQuery<AuditQuery>,
) -> Result<HttpResponse, ApiError> {
    let q = query.into_inner();
    let query = Query { limit: q.limit, before: q.before, actor: q.actor, action: q.action, object: q.object };
    let entries: Vec<AuditDto> = list_audit(&svc, query).await?.into_iter().map(AuditDto::from).collect();
    Ok(HttpResponse::Ok().json(entries))
}
