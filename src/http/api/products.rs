//! `POST/GET /api/v1/products`.

use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::db::entities::product;
use crate::domain::names::{HardwareId, ProductName};
use crate::http::api::patterns::PublicKeyHex;
use crate::http::auth::{AdminAuth, PublisherAuth, ViewerAuth};
use crate::http::error::{ApiError, ErrorBody};
use crate::services::products::{
    CreateProduct, ManufacturerKey, SERVER_SIGNED, create_product, get_product, list_products, retention_advice,
    set_retain_newest,
};
use crate::services::release_review::submit_product_role;
use crate::services::retention::Keep;
use crate::services::{Services, whole_number};

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
    /// How many of the most recently listed releases always stay in the product's role
    /// (default 20). Older ones leave it once no device runs or is assigned them and no rollout
    /// or rollback needs them; their files stay stored.
    #[serde(default, deserialize_with = "whole_number::optional")]
    #[schema(minimum = 1, maximum = 10000)]
    pub retain_newest: Option<i64>,
}

/// Changes to a product.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateProductRequest {
    /// How many of the most recently listed releases always stay in the product's role; the
    /// role follows at the next publish.
    #[serde(deserialize_with = "whole_number::exact")]
    #[schema(minimum = 1, maximum = 10000)]
    pub retain_newest: i64,
}

/// A listed release the retention policy keeps although it is not among the newest, and why.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeptReleaseDto {
    /// Version.
    pub version: String,
    /// Why it stays listed.
    pub reason: Keep,
}

/// What the retention policy says about a product's role, were one more release published now.
#[derive(Debug, Serialize, ToSchema)]
pub struct RetentionDto {
    /// Product.
    pub product: String,
    /// How many recently listed releases always stay listed.
    pub retain_newest: i64,
    /// How many releases the role lists now.
    pub listed: usize,
    /// Versions the next publish leaves out of the role (oldest listed first): what
    /// `patchgate release publish --key` delists in the role it signs.
    pub delist_on_publish: Vec<String>,
    /// Older listed releases that stay listed, and why.
    pub kept: Vec<KeptReleaseDto>,
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
    /// How many of the most recently listed releases always stay in its role.
    pub retain_newest: i64,
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
            retain_newest: p.retain_newest,
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
        retain_newest: body.retain_newest,
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

/// Changes a product's retention (how many recently listed releases always stay listed).
#[utoipa::path(patch, path = "/api/v1/products/{product}", tag = "products", params(("product" = ProductName, Path)),
    request_body = UpdateProductRequest,
    responses((status = 200, body = ProductDto), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn update(
    svc: web::Data<Services>,
    auth: AdminAuth,
    path: web::Path<String>,
    body: web::Json<UpdateProductRequest>,
) -> Result<HttpResponse, ApiError> {
    let product = set_retain_newest(&svc, &auth.0, &path, body.retain_newest).await?;
    Ok(HttpResponse::Ok().json(ProductDto::from(product)))
}

/// What the retention policy would take out of the product's role at the next publish, and
/// which older releases it keeps and why.
#[utoipa::path(get, path = "/api/v1/products/{product}/retention", tag = "products",
    params(("product" = ProductName, Path)),
    responses((status = 200, body = RetentionDto), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn retention(
    svc: web::Data<Services>,
    _auth: ViewerAuth,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let product = get_product(&svc, &path).await?;
    let (listed, advice) = retention_advice(&svc, &product).await?;
    Ok(HttpResponse::Ok().insert_header(("Cache-Control", "no-store")).json(RetentionDto {
        product: product.name,
        retain_newest: product.retain_newest,
        listed,
        delist_on_publish: advice.delist.into_iter().map(|r| r.version).collect(),
        kept: advice.kept.into_iter().map(|(r, reason)| KeptReleaseDto { version: r.version, reason }).collect(),
    }))
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
/// release it no longer lists is yanked (to delist one for retention, leave it out of the role
/// of a `publish`, with the form's `delist`); it also renews the role before it expires.
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
