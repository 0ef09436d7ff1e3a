//! `POST/GET /api/v1/products`.

use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::db::entities::product;
use crate::domain::names::{HardwareId, ProductName};
use crate::http::auth::{AdminAuth, ViewerAuth};
use crate::http::error::{ApiError, ErrorBody};
use crate::services::Services;
use crate::services::products::{CreateProduct, SERVER_SIGNED, create_product, list_products};

/// A product to create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProductRequest {
    /// `[a-z0-9-]{1,64}`; also the name of its TUF role.
    #[schema(example = "pump-x1")]
    pub name: String,
    /// Hardware ids its images run on.
    #[schema(example = json!(["pump-x1-revA"]))]
    pub hardware_ids: Vec<String>,
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
    let input = CreateProduct {
        name: ProductName::parse(&body.name)?,
        hardware_ids: body.hardware_ids.iter().map(|h| HardwareId::parse(h)).collect::<Result<_, _>>()?,
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
