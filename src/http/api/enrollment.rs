//! `POST/GET /api/v1/enrollment-tokens`, `POST /api/v1/enrollment-tokens/{id}/revoke`.

use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::db::entities::enrollment_token;
use crate::domain::ids::Tag;
use crate::domain::names::ProductName;
use crate::http::auth::{ManagerAuth, ViewerAuth};
use crate::http::error::{ApiError, ErrorBody};
use crate::services::enrollment::{
    CreateEnrollmentToken, create_enrollment_token, list_enrollment_tokens, revoke_enrollment_token,
};
use crate::services::{Services, whole_number};

/// An enrollment token to create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEnrollmentTokenRequest {
    /// Product its devices belong to.
    #[schema(value_type = ProductName, example = "pump-x1")]
    pub product: String,
    /// Label for listings and the audit log: 1 to 128 characters, not only spaces.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 128, pattern = "\\S")]
    pub name: Option<String>,
    /// Tags every device enrolling with it receives.
    #[serde(default)]
    #[schema(value_type = Vec<Tag>, example = json!(["region:eu"]))]
    pub tags: Vec<String>,
    /// Lifetime in seconds, 60 to 366 days (default 86 400).
    #[serde(default, deserialize_with = "whole_number::optional")]
    #[schema(minimum = 60, maximum = 31_622_400)]
    pub expires_in_seconds: Option<i64>,
    /// How many devices may use it, 1 to 10 000 000 (default 1 000).
    #[serde(default, deserialize_with = "whole_number::optional")]
    #[schema(minimum = 1, maximum = 10_000_000)]
    pub max_uses: Option<i64>,
}

/// An enrollment token (the secret only in the creation answer).
#[derive(Debug, Serialize, ToSchema)]
pub struct EnrollmentTokenDto {
    /// Id (for revoking).
    pub id: i64,
    /// Label.
    pub name: String,
    /// First characters of the secret.
    pub prefix: String,
    /// Tags given to devices.
    pub tags: Vec<String>,
    /// Enrollments allowed.
    pub max_uses: i64,
    /// Enrollments so far.
    pub uses: i64,
    /// Unix seconds.
    pub expires_at: i64,
    /// Unix seconds, if revoked.
    pub revoked_at: Option<i64>,
    /// Who created it.
    pub created_by: String,
    /// The secret, shown once, at creation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

impl EnrollmentTokenDto {
    fn from_row(t: enrollment_token::Model, token: Option<String>) -> Self {
        Self {
            id: t.id,
            name: t.name,
            prefix: t.token_prefix,
            tags: serde_json::from_str(&t.tags).unwrap_or_default(),
            max_uses: t.max_uses,
            uses: t.uses,
            expires_at: t.expires_at,
            revoked_at: t.revoked_at,
            created_by: t.created_by,
            token,
        }
    }
}

/// Creates an enrollment token; the answer holds the secret, shown only this once.
#[utoipa::path(post, path = "/api/v1/enrollment-tokens", tag = "devices", request_body = CreateEnrollmentTokenRequest,
    responses((status = 201, body = EnrollmentTokenDto), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create(
    svc: web::Data<Services>,
    auth: ManagerAuth,
    body: web::Json<CreateEnrollmentTokenRequest>,
) -> Result<HttpResponse, ApiError> {
    let b = body.into_inner();
    let input = CreateEnrollmentToken {
        product: b.product,
        name: b.name,
        tags: b.tags,
        expires_in_seconds: b.expires_in_seconds,
        max_uses: b.max_uses,
    };
    let (row, secret) = create_enrollment_token(&svc, &auth.0, input).await?;
    Ok(HttpResponse::Created().json(EnrollmentTokenDto::from_row(row, Some(secret))))
}

/// Lists enrollment tokens.
#[utoipa::path(get, path = "/api/v1/enrollment-tokens", tag = "devices",
    responses((status = 200, body = Vec<EnrollmentTokenDto>), (status = 401, body = ErrorBody)), security(("bearer" = [])))]
pub async fn list(svc: web::Data<Services>, _auth: ViewerAuth) -> Result<HttpResponse, ApiError> {
    let rows = list_enrollment_tokens(&svc).await?;
    Ok(HttpResponse::Ok().json(rows.into_iter().map(|t| EnrollmentTokenDto::from_row(t, None)).collect::<Vec<_>>()))
}

/// Revokes an enrollment token (devices enrolled with it keep working).
#[utoipa::path(post, path = "/api/v1/enrollment-tokens/{id}/revoke", tag = "devices", params(("id" = i64, Path)),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn revoke(svc: web::Data<Services>, auth: ManagerAuth, id: web::Path<i64>) -> Result<HttpResponse, ApiError> {
    revoke_enrollment_token(&svc, &auth.0, id.into_inner()).await?;
    Ok(HttpResponse::NoContent().finish())
}
