//! `POST/GET /api/v1/products`.

use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::db::entities::product;
use crate::domain::names::{HardwareId, ProductName};
use crate::http::api::patterns::PublicKeyHex;
use crate::http::auth::{AdminAuth, PublisherAuth, ViewerAuth};
use crate::http::error::{ApiError, ErrorBody};
use crate::services::Services;
use crate::services::products::{
    CreateProduct, ManufacturerKey, SERVER_SIGNED, create_product, get_product, list_products,
};
use crate::services::release_review::submit_product_role;

/// A product to create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProductRequest {
    /// `[a-z0-9-]{1,64}`; also the name of its TUF role.
    #[schema(value_type = ProductName, example = "pump-x1")]
    pub name: String,
    /// Hardware ids its images run on (at least one).
    #[schema(value_type = Vec<HardwareId>, min_items = 1, example = json!(["pump-x1-revA"]))]
    pub hardware_ids: Vec<String>,
    /// The manufacturer's product key (64 hex characters: the raw ed25519 public key). Without
    /// it the product is server-signed: weaker, the server holds its key.
    #[serde(default)]
    #[schema(value_type = Option<PublicKeyHex>)]
    pub public_key: Option<String>,
    /// With `public_key`: the product role's version 1, listing no targets, signed by that key
    /// (`patchgate product create --key` makes it).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub initial_role: Option<serde_json::Value>,
    /// Releases need approval by a second person (a release manager) before a rollout.
    #[serde(default)]
    pub two_person_approval: bool,
}

/// A product.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProductDto {
    /// Name.
    pub name: String,
    /// Hardware ids.
    pub hardware_ids: Vec<String>,
    /// `server` (the server holds the product key) or `manufacturer`.
    pub signing_mode: String,
    /// Shown wherever signing mode is: server-signed products are weaker.
    pub signing_note: String,
    /// TUF key id of the product key.
    pub keyid: String,
    /// Hex of the raw ed25519 public key.
    pub public_key: String,
    /// `active`, or `pending_delegation` until the delegation ceremony lands.
    pub status: String,
    /// Releases need a second person's approval before a rollout.
    pub two_person_approval: bool,
    /// The highest `rollback_floor` its role lists: nothing lower is assigned or installed.
    pub security_floor: String,
    /// Unix seconds.
    pub created_at: i64,
}

impl From<product::Model> for ProductDto {
    fn from(p: product::Model) -> Self {
        let signing_note = if p.signing_mode == SERVER_SIGNED {
            "server-signed: the patchgate server holds this product's key, so whoever takes the server can sign firmware for it; use a manufacturer-held key in production"
        } else {
            "manufacturer-signed: only the manufacturer's key can add firmware"
        };
        Self {
            hardware_ids: serde_json::from_str(&p.hardware_ids).unwrap_or_default(),
            name: p.name,
            signing_mode: p.signing_mode,
            signing_note: signing_note.to_owned(),
            keyid: p.keyid,
            public_key: p.public_key,
            status: p.status,
            two_person_approval: p.requires_approval,
            security_floor: p.security_floor,
            created_at: p.created_at,
        }
    }
}

/// Creates a product and delegates `{name}/*/*` to its own role.
#[utoipa::path(post, path = "/api/v1/products", tag = "products", request_body = CreateProductRequest,
    responses((status = 201, body = ProductDto), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create(
    svc: web::Data<Services>,
    auth: AdminAuth,
    body: web::Json<CreateProductRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let manufacturer = match (body.public_key, body.initial_role) {
        (None, None) => None,
        (Some(key), Some(role)) => {
            let raw =
                hex::decode(&key).ok().and_then(|raw| <[u8; 32]>::try_from(raw.as_slice()).ok()).ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_public_key",
                        "public_key must be 64 hex characters (a raw ed25519 public key)",
                    )
                })?;
            let initial_role =
                serde_json::to_vec(&role).map_err(|e| ApiError::bad_request("invalid_role", e.to_string()))?;
            Some(ManufacturerKey { public_key: raw, initial_role })
        }
        (Some(_), None) => {
            return Err(ApiError::bad_request(
                "missing_initial_role",
                "a manufacturer-signed product needs initial_role: its empty role v1 signed by the product key \
                 (`patchgate product create --key product.pem` makes it)",
            ));
        }
        (None, Some(_)) => {
            return Err(ApiError::bad_request(
                "missing_public_key",
                "initial_role needs the public_key that signed it",
            ));
        }
    };
    let input = CreateProduct {
        name: ProductName::parse(&body.name)?,
        hardware_ids: body.hardware_ids.iter().map(|h| HardwareId::parse(h)).collect::<Result<_, _>>()?,
        manufacturer,
        requires_approval: body.two_person_approval,
    };
    let created = create_product(&svc, &auth.0, input).await?;
    Ok(HttpResponse::Created().json(ProductDto::from(created)))
}

/// Lists products.
#[utoipa::path(get, path = "/api/v1/products", tag = "products",
    responses((status = 200, body = Vec<ProductDto>), (status = 401, body = ErrorBody)), security(("bearer" = [])))]
pub async fn list(svc: web::Data<Services>, _auth: ViewerAuth) -> Result<HttpResponse, ApiError> {
    let products: Vec<ProductDto> = list_products(&svc).await?.into_iter().map(ProductDto::from).collect();
    Ok(HttpResponse::Ok().json(products))
}

/// The product's current signed role, exactly as TUF clients get it (404 while it has none).
#[utoipa::path(get, path = "/api/v1/products/{product}/role", tag = "products", params(("product" = ProductName, Path)),
    responses((status = 200, description = "The signed product role (TUF targets metadata)"), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn role(
    svc: web::Data<Services>,
    _auth: ViewerAuth,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let product = get_product(&svc, &path).await?;
    let row = crate::db::metadata::metadata_latest(&svc.db, crate::services::image_repo::IMAGE, &product.name)
        .await
        .map_err(crate::services::ServiceError::from)?
        .ok_or_else(|| {
            ApiError::new(
                actix_web::http::StatusCode::NOT_FOUND,
                "no_role",
                format!("product {} has no served role yet (status {})", product.name, product.status),
            )
        })?;
    Ok(HttpResponse::Ok().content_type("application/json").insert_header(("Cache-Control", "no-store")).body(row.body))
}

/// Makes a manufacturer-signed role current: the next version, signed by the product key. A
/// release it no longer lists is yanked; it also renews the role before it expires.
#[utoipa::path(post, path = "/api/v1/products/{product}/role", tag = "products", params(("product" = ProductName, Path)),
    request_body(content = Object, description = "The signed product role (TUF targets metadata)"),
    responses((status = 200, description = "Stored: {product, version, listed, yanked}"), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn submit_role(
    svc: web::Data<Services>,
    auth: PublisherAuth,
    path: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let outcome = submit_product_role(&svc, &auth.0, &path, &body).await?;
    Ok(HttpResponse::Ok().json(outcome))
}
