//! `POST /api/v1/repo/prepare` and `POST /api/v1/repo/metadata`: key ceremonies (admin).

use std::collections::{BTreeMap, HashMap};

use actix_web::{HttpResponse, web};
use serde::Deserialize;
use utoipa::ToSchema;

use crate::domain::names::ProductName;
use crate::http::api::patterns::PublicKeyHex;
use crate::http::auth::AdminAuth;
use crate::http::error::{ApiError, ErrorBody};
use crate::services::ceremony::{RootChange, prepare_delegations, prepare_root, submit};
use crate::services::{Services, whole_number};

/// What the next root or top-level targets role should change. Keys are 64 hex characters
/// (raw ed25519 public keys); key ids are TUF key ids.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PrepareRequest {
    /// `image` or `director`.
    #[schema(pattern = "^(image|director)$")]
    pub repo: String,
    /// `root` or `delegations` (image only).
    #[schema(pattern = "^(root|delegations)$")]
    pub kind: String,
    /// Root keys to add.
    #[serde(default)]
    #[schema(value_type = Vec<PublicKeyHex>)]
    pub add_root_keys: Vec<String>,
    /// Root key ids to remove.
    #[serde(default)]
    pub remove_root_keys: Vec<String>,
    /// The new root threshold.
    #[serde(default, deserialize_with = "whole_number::optional")]
    #[schema(minimum = 1)]
    pub root_threshold: Option<u64>,
    /// Image: new top-level targets key.
    #[schema(value_type = Option<PublicKeyHex>)]
    pub targets_key: Option<String>,
    /// Image: new snapshot key.
    #[schema(value_type = Option<PublicKeyHex>)]
    pub snapshot_key: Option<String>,
    /// Image: new timestamp key.
    #[schema(value_type = Option<PublicKeyHex>)]
    pub timestamp_key: Option<String>,
    /// Director: new online key.
    #[schema(value_type = Option<PublicKeyHex>)]
    pub online_key: Option<String>,
    /// Delegations: products whose key changes (rotation), product name → new key.
    #[serde(default)]
    #[schema(value_type = HashMap<ProductName, PublicKeyHex>)]
    pub product_keys: HashMap<String, String>,
}

fn public_key(field: &str, hex_key: &str) -> Result<[u8; 32], ApiError> {
    hex::decode(hex_key).ok().and_then(|raw| <[u8; 32]>::try_from(raw.as_slice()).ok()).ok_or_else(|| {
        ApiError::bad_request(
            "invalid_public_key",
            format!("{field}: {hex_key:?} is not 64 hex characters (a raw ed25519 public key)"),
        )
    })
}

fn optional_key(field: &str, key: Option<&String>) -> Result<Option<[u8; 32]>, ApiError> {
    key.map(|k| public_key(field, k)).transpose()
}

/// Builds the unsigned next version for key holders to sign (`patchgate repo sign`).
#[utoipa::path(post, path = "/api/v1/repo/prepare", tag = "repository", request_body = PrepareRequest,
    responses((status = 200, description = "The unsigned metadata: {\"signed\": …, \"signatures\": []}"),
        (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn prepare(
    svc: web::Data<Services>,
    _auth: AdminAuth,
    body: web::Json<PrepareRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    // A field the kind does not use is a mistake in the request, not something to ignore.
    let not_for = |field: &str, kind: &str| {
        Err(ApiError::bad_request("invalid_change", format!("{field} is not used by kind {kind}")))
    };
    let unsigned = match body.kind.as_str() {
        "root" => {
            if !body.product_keys.is_empty() {
                return not_for("product_keys", "root");
            }
            let change = RootChange {
                add_root_keys: body
                    .add_root_keys
                    .iter()
                    .map(|k| public_key("add_root_keys", k))
                    .collect::<Result<_, _>>()?,
                remove_root_keys: body.remove_root_keys,
                root_threshold: body.root_threshold,
                targets_key: optional_key("targets_key", body.targets_key.as_ref())?,
                snapshot_key: optional_key("snapshot_key", body.snapshot_key.as_ref())?,
                timestamp_key: optional_key("timestamp_key", body.timestamp_key.as_ref())?,
                online_key: optional_key("online_key", body.online_key.as_ref())?,
            };
            prepare_root(&svc, &body.repo, change).await?
        }
        "delegations" => {
            if body.repo != "image" {
                return Err(ApiError::bad_request("invalid_repo", "delegations exist only in the image repository"));
            }
            let root_fields = [
                ("add_root_keys", !body.add_root_keys.is_empty()),
                ("remove_root_keys", !body.remove_root_keys.is_empty()),
                ("root_threshold", body.root_threshold.is_some()),
                ("targets_key", body.targets_key.is_some()),
                ("snapshot_key", body.snapshot_key.is_some()),
                ("timestamp_key", body.timestamp_key.is_some()),
                ("online_key", body.online_key.is_some()),
            ];
            if let Some((field, _)) = root_fields.iter().find(|(_, given)| *given) {
                return not_for(field, "delegations");
            }
            let keys = body
                .product_keys
                .iter()
                .map(|(name, k)| Ok((name.clone(), public_key(&format!("product_keys.{name}"), k)?)))
                .collect::<Result<HashMap<_, _>, ApiError>>()?;
            prepare_delegations(&svc, &keys).await?
        }
        other => {
            return Err(ApiError::bad_request(
                "invalid_kind",
                format!("kind must be root or delegations, not {other:?}"),
            ));
        }
    };
    Ok(HttpResponse::Ok().json(unsigned))
}

/// Signed metadata from a ceremony.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitRequest {
    /// `image` or `director`.
    #[schema(pattern = "^(image|director)$")]
    pub repo: String,
    /// Role name → signed metadata: `root`, `targets`, or a product's role (at least one).
    #[schema(value_type = Object)]
    pub roles: BTreeMap<String, serde_json::Value>,
}

/// Verifies a ceremony's metadata (root chain and thresholds, delegations, product roles) and
/// makes it current, with a new snapshot and timestamp.
#[utoipa::path(post, path = "/api/v1/repo/metadata", tag = "repository", request_body = SubmitRequest,
    responses((status = 200, description = "Stored: {repo, stored: [{role, version}]}"), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn metadata(
    svc: web::Data<Services>,
    auth: AdminAuth,
    body: web::Json<SubmitRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let stored = submit(&svc, &auth.0, &body.repo, body.roles).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({"repo": body.repo, "stored": stored})))
}
