//! `POST /api/v1/products/{product}/releases` (multipart) and release reads.

use actix_multipart::{Field, Multipart};
use actix_web::{HttpResponse, web};
use futures_util::{StreamExt, TryStreamExt};
use serde::Serialize;
use utoipa::ToSchema;

use crate::db::entities::release;
use crate::domain::names::{FileName, FirmwareVersion, ProductName};
use crate::http::auth::{ManagerAuth, PublisherAuth, ViewerAuth, WithdrawAuth};
use crate::http::error::{ApiError, ErrorBody};
use crate::services::Services;
use crate::services::deltas::{DeltaOutcome, DeltaView};
use crate::services::products::get_product;
use crate::services::publish_release::{
    NewRelease, PublishOutcome, StoredBlob, commit_release, get_release, list_releases, store_blob,
};
use crate::services::release_review::{approve_release, yank_release};

/// The form of a publish (documentation only; the handler streams it).
#[derive(ToSchema)]
#[expect(dead_code, reason = "describes the multipart form for the OpenAPI document")]
pub struct PublishForm {
    /// Semantic version.
    #[schema(value_type = FirmwareVersion)]
    version: String,
    /// The firmware file; its file name becomes the last part of the target name.
    #[schema(value_type = String, format = Binary, content_media_type = "application/octet-stream")]
    file: String,
    /// Optional release notes.
    notes: Option<String>,
    /// Optional lowest version a device may go back to after this release (default 0.0.0).
    #[schema(value_type = Option<FirmwareVersion>)]
    rollback_floor: Option<String>,
    /// Manufacturer-signed products: the product role's next version listing every current
    /// target and this one, signed with the product key (`patchgate release publish --key`).
    role: Option<String>,
    /// Manufacturer-signed products: versions, separated by commas or spaces, that `role` leaves
    /// out because the retention policy lets them go (`GET .../retention`); they are delisted,
    /// not yanked. Any other current release the role leaves out is yanked.
    delist: Option<String>,
}

/// Hashes of a target.
#[derive(Debug, Serialize, ToSchema)]
pub struct HashesDto {
    /// Hex.
    pub sha256: String,
    /// Hex.
    pub sha512: String,
}

/// A target as the image repository lists it.
#[derive(Debug, Serialize, ToSchema)]
pub struct TargetDto {
    /// `{product}/{version}/{file}`.
    pub name: String,
    /// Bytes.
    pub length: i64,
    /// Hashes.
    pub hashes: HashesDto,
}

/// A published release.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReleaseDto {
    /// Product.
    pub product: String,
    /// Version.
    pub version: String,
    /// Its target.
    pub target: TargetDto,
    /// The target's `custom` (version, hardware_ids, rollback_floor, released_at).
    #[schema(value_type = Object)]
    pub custom: serde_json::Value,
    /// Release notes.
    pub notes: Option<String>,
    /// Who published it.
    pub published_by: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Withdrawn: no longer listed by the product role; never assigned again.
    pub yanked: bool,
    /// Who yanked it.
    pub yanked_by: Option<String>,
    /// Who approved it for rollouts (two-person products).
    pub approved_by: Option<String>,
    /// Stored, but out of the product's role under its retention policy: devices cannot be
    /// sent it until the same file is published again.
    pub delisted: bool,
    /// When it was delisted (Unix seconds).
    pub delisted_at: Option<i64>,
}

fn release_dto(product: &str, r: release::Model) -> ReleaseDto {
    ReleaseDto {
        product: product.to_owned(),
        custom: serde_json::from_str(&r.custom).unwrap_or_default(),
        target: TargetDto {
            name: r.target_name,
            length: r.length,
            hashes: HashesDto { sha256: r.sha256, sha512: r.sha512 },
        },
        version: r.version,
        notes: r.notes,
        published_by: r.published_by,
        created_at: r.created_at,
        yanked: r.yanked_at.is_some(),
        yanked_by: r.yanked_by,
        approved_by: r.approved_by,
        delisted: r.delisted_at.is_some(),
        delisted_at: r.delisted_at,
    }
}

/// Publishes a firmware file: streamed, hashed, signed into the product's role.
#[utoipa::path(post, path = "/api/v1/products/{product}/releases", tag = "releases",
    params(("product" = ProductName, Path)), request_body(content = PublishForm, content_type = "multipart/form-data"),
    responses((status = 201, body = ReleaseDto, description = "Published"), (status = 200, body = ReleaseDto, description = "Already published with the same content"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 413, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn publish(
    svc: web::Data<Services>,
    auth: PublisherAuth,
    path: web::Path<String>,
    form: Multipart,
) -> Result<HttpResponse, ApiError> {
    let product = ProductName::parse(&path)?;
    auth.0.require_product(product.as_str())?;
    get_product(&svc, product.as_str()).await?;
    let started = std::time::Instant::now();
    let form = read_form(&svc, form).await?;
    let release = commit_release(&svc, &auth.0, form.into_release(product)?).await?;
    metrics::histogram!("patchgate_publish_duration_seconds").record(started.elapsed().as_secs_f64());
    Ok(match release {
        PublishOutcome::Created(r) => HttpResponse::Created().json(release_dto(&path, r)),
        PublishOutcome::Existing(r) => HttpResponse::Ok().json(release_dto(&path, r)),
    })
}

#[derive(Default)]
struct ReadForm {
    version: Option<FirmwareVersion>,
    notes: Option<String>,
    rollback_floor: Option<FirmwareVersion>,
    role: Option<Vec<u8>>,
    delist: Vec<FirmwareVersion>,
    file: Option<(FileName, StoredBlob)>,
}

impl ReadForm {
    fn into_release(self, product: ProductName) -> Result<NewRelease, ApiError> {
        let version =
            self.version.ok_or_else(|| ApiError::bad_request("missing_version", "the form has no `version` field"))?;
        let (file_name, blob) =
            self.file.ok_or_else(|| ApiError::bad_request("missing_file", "the form has no `file` field"))?;
        Ok(NewRelease {
            product,
            version,
            file_name,
            notes: self.notes,
            rollback_floor: self.rollback_floor,
            blob,
            role: self.role,
            delist: self.delist,
        })
    }
}

/// Reads the fields in any order, streaming `file` to the blob store as it arrives.
async fn read_form(svc: &Services, mut form: Multipart) -> Result<ReadForm, ApiError> {
    let mut out = ReadForm::default();
    let mut seen = std::collections::HashSet::new();
    while let Some((name, field)) = next_field(&mut form, &mut seen).await? {
        match name.as_str() {
            "version" => out.version = Some(FirmwareVersion::parse(&read_text(field, "version", 256).await?)?),
            "rollback_floor" => {
                out.rollback_floor = Some(FirmwareVersion::parse(&read_text(field, "rollback_floor", 256).await?)?)
            }
            "notes" => out.notes = Some(read_text(field, "notes", 64 * 1024).await?),
            "role" => out.role = Some(read_text(field, "role", 4 * 1024 * 1024).await?.into_bytes()),
            "delist" => {
                let text = read_text(field, "delist", 1024 * 1024).await?;
                for v in text.split([',', ' ', '\n', '\t']).filter(|v| !v.is_empty()) {
                    let version = FirmwareVersion::parse(v).map_err(|e| {
                        ApiError::bad_request("invalid_delist", format!("`delist` holds {v:?}, not a version: {e}"))
                    })?;
                    out.delist.push(version);
                }
            }
            "file" => {
                let file_name =
                    field.content_disposition().and_then(|cd| cd.get_filename()).unwrap_or_default().to_owned();
                if file_name.is_empty() {
                    return Err(ApiError::bad_request("missing_file_name", "the `file` field has no file name"));
                }
                let file_name = FileName::parse(&file_name)?;
                let blob = store_blob(svc, field, svc.config.max_upload_bytes).await?;
                out.file = Some((file_name, blob));
            }
            other => return Err(ApiError::bad_request("unknown_field", format!("unexpected form field {other:?}"))),
        }
    }
    Ok(out)
}

/// The form's next field with its name; a name seen before (in `seen`) is refused.
async fn next_field(
    form: &mut Multipart,
    seen: &mut std::collections::HashSet<String>,
) -> Result<Option<(String, Field)>, ApiError> {
    let Some(field) = form.try_next().await.map_err(multipart_error)? else { return Ok(None) };
    let name = field.name().unwrap_or_default().to_owned();
    if !seen.insert(name.clone()) {
        return Err(ApiError::bad_request("duplicate_field", format!("the form has more than one `{name}`")));
    }
    Ok(Some((name, field)))
}

fn multipart_error(e: actix_multipart::MultipartError) -> ApiError {
    ApiError::bad_request("invalid_multipart", format!("the body is not a valid multipart/form-data form: {e}"))
}

async fn read_text(mut field: Field, name: &str, limit: usize) -> Result<String, ApiError> {
    let mut buf = Vec::new();
    while let Some(chunk) = field.next().await {
        buf.extend_from_slice(&chunk.map_err(multipart_error)?);
        if buf.len() > limit {
            return Err(ApiError::bad_request("field_too_large", format!("`{name}` is longer than {limit} bytes")));
        }
    }
    String::from_utf8(buf).map_err(|_| ApiError::bad_request("invalid_field", format!("`{name}` is not UTF-8 text")))
}

/// Lists a product's releases.
#[utoipa::path(get, path = "/api/v1/products/{product}/releases", tag = "releases", params(("product" = ProductName, Path)),
    responses((status = 200, body = Vec<ReleaseDto>), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn list(
    svc: web::Data<Services>,
    _auth: ViewerAuth,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let product = get_product(&svc, &path).await?;
    let releases: Vec<ReleaseDto> =
        list_releases(&svc, &product).await?.into_iter().map(|r| release_dto(&product.name, r)).collect();
    Ok(HttpResponse::Ok().json(releases))
}

/// One release.
#[utoipa::path(get, path = "/api/v1/products/{product}/releases/{version}", tag = "releases",
    params(("product" = ProductName, Path), ("version" = FirmwareVersion, Path)),
    responses((status = 200, body = ReleaseDto), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn get(
    svc: web::Data<Services>,
    _auth: ViewerAuth,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (product, version) = path.into_inner();
    let product = get_product(&svc, &product).await?;
    let release = get_release(&svc, &product, &version).await?;
    Ok(HttpResponse::Ok().json(release_dto(&product.name, release)))
}

/// Approves a release for rollouts (products with two-person approval): a release manager
/// other than its publisher.
#[utoipa::path(post, path = "/api/v1/products/{product}/releases/{version}/approve", tag = "releases",
    params(("product" = ProductName, Path), ("version" = FirmwareVersion, Path)),
    responses((status = 200, body = ReleaseDto), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "same_person: the publisher cannot approve; release_yanked")),
    security(("bearer" = [])))]
pub async fn approve(
    svc: web::Data<Services>,
    auth: ManagerAuth,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (product, version) = path.into_inner();
    let release = approve_release(&svc, &auth.0, &product, &version).await?;
    Ok(HttpResponse::Ok().json(release_dto(&product, release)))
}

/// Yanks a release of a server-signed product (the server re-signs the role without it):
/// publishers and release managers. For a manufacturer-signed product, post a role signed by
/// its key to `/products/{product}/role`.
#[utoipa::path(post, path = "/api/v1/products/{product}/releases/{version}/yank", tag = "releases",
    params(("product" = ProductName, Path), ("version" = FirmwareVersion, Path)),
    responses((status = 200, body = ReleaseDto), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "manufacturer_signed")),
    security(("bearer" = [])))]
pub async fn yank(
    svc: web::Data<Services>,
    auth: WithdrawAuth,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (product, version) = path.into_inner();
    let release = yank_release(&svc, &auth.0, &product, &version).await?;
    Ok(HttpResponse::Ok().json(release_dto(&product, release)))
}

/// What delta to compute.
#[derive(Debug, serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeltaRequest {
    /// The release whose image the delta applies to (a device running it downloads the delta).
    #[schema(value_type = FirmwareVersion)]
    pub from: String,
}

/// Computes the delta from release `from` to this release of a server-signed product, stores it
/// and signs it into the product's role beside the images (docs/design.md §1, "Delta targets").
/// Takes seconds per megabyte of image; asking again for the same pair returns the existing
/// delta (200).
#[utoipa::path(post, path = "/api/v1/products/{product}/releases/{version}/deltas", tag = "releases",
    params(("product" = ProductName, Path), ("version" = FirmwareVersion, Path)),
    request_body = DeltaRequest,
    responses((status = 201, body = DeltaView, description = "Computed and signed"),
        (status = 200, body = DeltaView, description = "It already existed"),
        (status = 400, body = ErrorBody, description = "same_release, a malformed body"),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody, description = "unknown_product, unknown_release"),
        (status = 409, body = ErrorBody, description = "manufacturer_signed, release_yanked, release_delisted, \
            image_too_large, delta_not_worthwhile (the delta would be more than 70 % of the compressed image)")),
    security(("bearer" = [])))]
pub async fn create_delta(
    svc: web::Data<Services>,
    auth: PublisherAuth,
    path: web::Path<(String, String)>,
    body: web::Json<DeltaRequest>,
) -> Result<HttpResponse, ApiError> {
    let (product, version) = path.into_inner();
    Ok(match crate::services::deltas::create_delta(&svc, &auth.0, &product, &body.from, &version).await? {
        DeltaOutcome::Created(view) => HttpResponse::Created().json(view),
        DeltaOutcome::Existing(view) => HttpResponse::Ok().json(view),
    })
}

/// The deltas that produce this release.
#[utoipa::path(get, path = "/api/v1/products/{product}/releases/{version}/deltas", tag = "releases",
    params(("product" = ProductName, Path), ("version" = FirmwareVersion, Path)),
    responses((status = 200, body = Vec<DeltaView>), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn list_deltas(
    svc: web::Data<Services>,
    _auth: ViewerAuth,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (product, version) = path.into_inner();
    Ok(HttpResponse::Ok().json(crate::services::deltas::list_deltas(&svc, &product, &version).await?))
}

/// The form of a manufacturer's delta (documentation only; the handler streams it).
#[derive(ToSchema)]
#[expect(dead_code, reason = "describes the multipart form for the OpenAPI document")]
pub struct SignedDeltaForm {
    /// The release whose image the delta applies to.
    #[schema(value_type = FirmwareVersion)]
    from: String,
    /// The delta, as the role lists it.
    #[schema(value_type = String, format = Binary, content_media_type = "application/octet-stream")]
    file: String,
    /// The product role's next version listing every current target and this delta
    /// (`{product}/{version}/{file}~from-{from}`), signed with the product key.
    role: String,
}

/// Lists a delta that a manufacturer-signed product's CI computed and signed
/// (`patchgate release delta --key`): the server checks the role as it checks a publish's (its
/// key, the next version, this file as the delta between two listed images) and signs only
/// snapshot and timestamp.
#[utoipa::path(post, path = "/api/v1/products/{product}/releases/{version}/deltas/signed", tag = "releases",
    params(("product" = ProductName, Path), ("version" = FirmwareVersion, Path)),
    request_body(content = SignedDeltaForm, content_type = "multipart/form-data"),
    responses((status = 201, body = DeltaView, description = "Listed"),
        (status = 200, body = DeltaView, description = "The same delta was already listed"),
        (status = 400, body = ErrorBody, description = "same_release, bad_role_signature, invalid_role_target, \
            delta_end_not_listed, role_target_mismatch, role_lacks_target, a malformed form"),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody, description = "unknown_product, unknown_release"),
        (status = 409, body = ErrorBody, description = "server_signed, role_version_conflict, release_yanked, \
            release_delisted, delta_exists, delta_not_worthwhile (no smaller than the image)"),
        (status = 413, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn submit_signed_delta(
    svc: web::Data<Services>,
    auth: PublisherAuth,
    path: web::Path<(String, String)>,
    mut form: Multipart,
) -> Result<HttpResponse, ApiError> {
    let (product, version) = path.into_inner();
    let (mut from, mut blob, mut role) = (None, None, None);
    let mut seen = std::collections::HashSet::new();
    while let Some((name, field)) = next_field(&mut form, &mut seen).await? {
        match name.as_str() {
            "from" => from = Some(FirmwareVersion::parse(&read_text(field, "from", 256).await?)?.to_string()),
            "role" => role = Some(read_text(field, "role", 4 * 1024 * 1024).await?.into_bytes()),
            "file" => blob = Some(store_blob(&svc, field, svc.config.max_upload_bytes).await?),
            other => return Err(ApiError::bad_request("unknown_field", format!("unexpected form field {other:?}"))),
        }
    }
    let missing = |field: &str| ApiError::bad_request("missing_field", format!("the form has no `{field}` field"));
    let delta = crate::services::deltas::SignedDelta {
        from: from.ok_or_else(|| missing("from"))?,
        blob: blob.ok_or_else(|| missing("file"))?,
        role: role.ok_or_else(|| missing("role"))?,
    };
    Ok(match crate::services::deltas::submit_signed_delta(&svc, &auth.0, &product, &version, delta).await? {
        DeltaOutcome::Created(view) => HttpResponse::Created().json(view),
        DeltaOutcome::Existing(view) => HttpResponse::Ok().json(view),
    })
}
