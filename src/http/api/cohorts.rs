//! `POST/GET /api/v1/cohorts`, `GET/PUT /api/v1/cohorts/{product}/{name}`.

use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::domain::ids::{CohortName, DeviceId};
use crate::domain::names::ProductName;
use crate::http::auth::{ManagerAuth, ViewerAuth};
use crate::http::error::{ApiError, ErrorBody};
use crate::http::query::ApiQuery;
use crate::services::Services;
use crate::services::cohorts::{
    CohortDetail, CohortInput, Selector, create_cohort, get_cohort, list_cohorts, update_cohort,
};

/// A cohort.
#[derive(Debug, Serialize, ToSchema)]
pub struct CohortDto {
    /// Name.
    pub name: String,
    /// Product.
    pub product: String,
    /// Explicit members.
    pub devices: Vec<String>,
    /// Selector tags (a device with all of them belongs); empty: no selector.
    pub selector_tags: Vec<String>,
    /// Unix seconds.
    pub updated_at: i64,
}

impl From<CohortDetail> for CohortDto {
    fn from(c: CohortDetail) -> Self {
        Self {
            name: c.cohort.name,
            product: c.product,
            devices: c.devices,
            selector_tags: c.selector_tags,
            updated_at: c.cohort.updated_at,
        }
    }
}

/// Changes to a cohort: fields left out stay; `"selector": null` removes the selector.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateCohortRequest {
    /// Replaces the explicit members.
    #[serde(default)]
    #[schema(value_type = Option<Vec<DeviceId>>, max_items = 100_000)]
    pub devices: Option<Vec<String>>,
    /// Replaces (or with null removes) the selector.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Selector>)]
    pub selector: Option<Option<Selector>>,
}

/// Tells a field given as `null` (Some(None)) from a field left out (None).
fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// Query of the cohort list.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    /// Only this product's cohorts.
    pub product: Option<String>,
}

/// Creates a cohort.
#[utoipa::path(post, path = "/api/v1/cohorts", tag = "rollouts", request_body = CohortInput,
    responses((status = 201, body = CohortDto), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create(
    svc: web::Data<Services>,
    auth: ManagerAuth,
    body: web::Json<CohortInput>,
) -> Result<HttpResponse, ApiError> {
    let created = create_cohort(&svc, &auth.0, body.into_inner()).await?;
    Ok(HttpResponse::Created().json(CohortDto::from(created)))
}

/// Lists cohorts.
#[utoipa::path(get, path = "/api/v1/cohorts", tag = "rollouts", params(("product" = Option<ProductName>, Query)),
    responses((status = 200, body = Vec<CohortDto>), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    svc: web::Data<Services>,
    _auth: ViewerAuth,
    q: ApiQuery<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let rows = list_cohorts(&svc, q.product.as_deref()).await?;
    Ok(HttpResponse::Ok().json(rows.into_iter().map(CohortDto::from).collect::<Vec<_>>()))
}

/// One cohort.
#[utoipa::path(get, path = "/api/v1/cohorts/{product}/{name}", tag = "rollouts",
    params(("product" = ProductName, Path), ("name" = CohortName, Path)),
    responses((status = 200, body = CohortDto), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get(
    svc: web::Data<Services>,
    _auth: ViewerAuth,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (product, name) = path.into_inner();
    Ok(HttpResponse::Ok().json(CohortDto::from(get_cohort(&svc, &product, &name).await?)))
}

/// Replaces a cohort's members and/or selector.
#[utoipa::path(put, path = "/api/v1/cohorts/{product}/{name}", tag = "rollouts",
    params(("product" = ProductName, Path), ("name" = CohortName, Path)), request_body = UpdateCohortRequest,
    responses((status = 200, body = CohortDto), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn update(
    svc: web::Data<Services>,
    auth: ManagerAuth,
    path: web::Path<(String, String)>,
    body: web::Json<UpdateCohortRequest>,
) -> Result<HttpResponse, ApiError> {
    let (product, name) = path.into_inner();
    let b = body.into_inner();
    let updated = update_cohort(&svc, &auth.0, &product, &name, b.devices, b.selector).await?;
    Ok(HttpResponse::Ok().json(CohortDto::from(updated)))
}
