//! Admin UI pages for products and releases: the product list, a product's releases with the
//! upload form, the upload itself, and one release's facts and rollouts.
//!
//! The upload is streamed through the same service path as the API's publish (`store_blob`,
//! then `commit_release`). Its fields may come in any order, the CSRF token after the file
//! included, so the file may be stored before the token is checked: a content-addressed blob
//! that nothing references is harmless; nothing is committed or audited without the check.
//! Reads through services only, never the database.

use actix_multipart::Multipart;
use actix_web::http::Method;
use actix_web::http::StatusCode;
use actix_web::http::header::LOCATION;
use actix_web::{HttpResponse, web};
use askama::Template;

mod upload;

use self::upload::{UploadValues, read_upload};
use super::pages::{FieldErrors, Layout, NoticeQuery, when};
use super::session::{UiError, UiUser, html, urlencode};
use crate::db::entities::{product, release};
use crate::domain::names::ProductName;
use crate::http::resource;
use crate::services::auth::Permission;
use crate::services::catalog::{product_summaries, release_rollouts};
use crate::services::products::{SERVER_SIGNED, get_product};
use crate::services::publish_release::{PublishOutcome, commit_release, get_release, list_releases};
use crate::services::{ServiceError, Services};

/// `?notice=` codes these pages understand (a fixed map: arbitrary text is never echoed).
const NOTICES: &[(&str, &str)] = &[
    ("published", "The release is published: its target is signed into the image repository."),
    ("already_published", "This version was already published with the same file; nothing changed."),
];

/// How the product's key is held, in words an operator can weigh.
fn signing_label(mode: &str) -> &'static str {
    if mode == SERVER_SIGNED { "server-signed (weaker)" } else { "manufacturer-signed" }
}

struct ProductRow {
    name: String,
    hardware_ids: String,
    signing: &'static str,
    releases: usize,
    newest: String,
}

#[derive(Template)]
#[template(path = "ui/products.html")]
struct ProductsPage {
    layout: Layout,
    products: Vec<ProductRow>,
}

/// GET /ui/products
pub async fn products(svc: web::Data<Services>, user: UiUser) -> Result<HttpResponse, UiError> {
    let products = product_summaries(&svc)
        .await?
        .into_iter()
        .map(|s| ProductRow {
            signing: signing_label(&s.product.signing_mode),
            name: s.product.name,
            hardware_ids: s.hardware_ids.join(", "),
            releases: s.releases,
            newest: s.newest.unwrap_or_default(),
        })
        .collect();
    let page = ProductsPage { layout: Layout::of(&user, "products"), products };
    Ok(html(StatusCode::OK, page.render()?))
}

struct ReleaseRow {
    version: String,
    version_path: String,
    target_name: String,
    length: i64,
    published_by: String,
    at: String,
}

#[derive(Template)]
#[template(path = "ui/product.html")]
struct ProductPage {
    layout: Layout,
    name: String,
    hardware_ids: String,
    signing: &'static str,
    keyid: String,
    releases: Vec<ReleaseRow>,
    form: UploadValues,
    errors: FieldErrors,
    message: Option<String>,
}

async fn render_product(
    svc: &Services,
    user: &UiUser,
    product: product::Model,
    form: UploadValues,
    errors: FieldErrors,
    message: Option<String>,
    status: StatusCode,
) -> Result<HttpResponse, UiError> {
    let mut rows = list_releases(svc, &product).await?;
    rows.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
    let releases = rows
        .into_iter()
        .map(|r| ReleaseRow {
            version_path: urlencode(&r.version),
            version: r.version,
            target_name: r.target_name,
            length: r.length,
            published_by: r.published_by,
            at: when(r.created_at),
        })
        .collect();
    let hardware_ids: Vec<String> = serde_json::from_str(&product.hardware_ids).unwrap_or_default();
    let page = ProductPage {
        layout: Layout::of(user, "products"),
        signing: signing_label(&product.signing_mode),
        keyid: product.keyid,
        name: product.name,
        hardware_ids: hardware_ids.join(", "),
        releases,
        form,
        errors,
        message,
    };
    Ok(html(status, page.render()?))
}

/// GET /ui/products/{product}
pub async fn product(svc: web::Data<Services>, user: UiUser, path: web::Path<String>) -> Result<HttpResponse, UiError> {
    let product = get_product(&svc, &path).await?;
    render_product(&svc, &user, product, UploadValues::default(), FieldErrors::default(), None, StatusCode::OK).await
}

/// POST /ui/products/{product}/releases (multipart)
pub async fn publish(
    svc: web::Data<Services>,
    user: UiUser,
    path: web::Path<String>,
    payload: Multipart,
) -> Result<HttpResponse, UiError> {
    // The role does not depend on the body: refuse before reading any of it.
    user.require(Permission::Publish)?;
    let product = get_product(&svc, &path).await?;
    let name = ProductName::parse(&product.name).map_err(ServiceError::from)?;
    let up = read_upload(&svc, &user, payload).await?;
    if up.too_large {
        // Reading stopped at the cap, before a token sent after the file: showing the form
        // again changes nothing, so it needs no token.
        let status = StatusCode::PAYLOAD_TOO_LARGE;
        return render_product(&svc, &user, product, up.values, up.errors, None, status).await;
    }
    user.may_change(Permission::Publish, &up.csrf)?;
    let new = match up.into_release(name) {
        Ok(new) => new,
        Err(up) => {
            return render_product(&svc, &user, product, up.values, up.errors, None, StatusCode::BAD_REQUEST).await;
        }
    };
    let values = UploadValues {
        version: new.version.to_string(),
        rollback_floor: new
            .rollback_floor
            .clone()
            .unwrap_or_else(crate::domain::names::FirmwareVersion::zero)
            .to_string(),
        notes: new.notes.clone().unwrap_or_default(),
    };
    let (code, row) = match commit_release(&svc, &user.0.caller(), new).await {
        Ok(PublishOutcome::Created(row)) => ("published", row),
        Ok(PublishOutcome::Existing(row)) => ("already_published", row),
        Err(e) => return refused(&svc, &user, product, values, e).await,
    };
    let target =
        format!("/ui/products/{}/releases/{}?notice={code}", urlencode(&product.name), urlencode(&row.version));
    Ok(HttpResponse::SeeOther().insert_header((LOCATION, target)).finish())
}

/// GET /ui/products/{product}/releases: the releases are listed on the product's page.
pub async fn to_product(_user: UiUser, path: web::Path<String>) -> HttpResponse {
    HttpResponse::SeeOther().insert_header((LOCATION, format!("/ui/products/{}", urlencode(&path)))).finish()
}

/// A refusal of the publish service, shown next to the field it concerns.
async fn refused(
    svc: &Services,
    user: &UiUser,
    product: product::Model,
    values: UploadValues,
    e: ServiceError,
) -> Result<HttpResponse, UiError> {
    let mut errors = FieldErrors::default();
    let (status, message) = match e {
        ServiceError::Conflict { code: "version_exists", message } => {
            errors.add("version", format!("{message}. Publish the new file under a new version."));
            (StatusCode::CONFLICT, "This version is already published with another file.".to_owned())
        }
        ServiceError::Conflict { message, .. } => (StatusCode::CONFLICT, message),
        ServiceError::Invalid { code: "invalid_rollback_floor", message } => {
            errors.add("rollback_floor", message);
            (StatusCode::BAD_REQUEST, "The release was not published.".to_owned())
        }
        ServiceError::Invalid { message, .. } => (StatusCode::BAD_REQUEST, message),
        other => return Err(other.into()),
    };
    render_product(svc, user, product, values, errors, Some(message), status).await
}

struct RolloutRow {
    id: String,
    id_path: String,
    state: String,
    badge: &'static str,
    created: String,
}

/// The badge style of a rollout state (the word is always shown with it).
fn state_badge(state: &str) -> &'static str {
    match state {
        "running" | "completed" => "badge-ok",
        "paused" | "rolled_back" => "badge-warn",
        "halted" | "aborted" => "badge-bad",
        _ => "badge-muted",
    }
}

#[derive(Template)]
#[template(path = "ui/release.html")]
struct ReleasePage {
    layout: Layout,
    product: String,
    product_path: String,
    release: release::Model,
    rollback_floor: String,
    released_at: String,
    published_at: String,
    signing: &'static str,
    keyid: String,
    rollouts: Vec<RolloutRow>,
    notice: Option<&'static str>,
}

/// GET /ui/products/{product}/releases/{version}
pub async fn release(
    svc: web::Data<Services>,
    user: UiUser,
    path: web::Path<(String, String)>,
    q: web::Query<NoticeQuery>,
) -> Result<HttpResponse, UiError> {
    let (product, version) = path.into_inner();
    let product = get_product(&svc, &product).await?;
    let release = get_release(&svc, &product, &version).await?;
    let rollouts = release_rollouts(&svc, &release)
        .await?
        .into_iter()
        .map(|r| RolloutRow {
            id_path: urlencode(&r.id),
            badge: state_badge(&r.state),
            state: r.state.replace('_', " "),
            created: when(r.created_at),
            id: r.id,
        })
        .collect();
    let custom: patchgate_protocol::TargetCustom =
        serde_json::from_str(&release.custom).map_err(|e| UiError::Render(format!("release custom: {e}")))?;
    let page = ReleasePage {
        layout: Layout::of(&user, "products"),
        product_path: urlencode(&product.name),
        product: product.name,
        rollback_floor: custom.rollback_floor,
        released_at: custom.released_at,
        published_at: when(release.created_at),
        signing: signing_label(&product.signing_mode),
        keyid: product.keyid,
        release,
        rollouts,
        notice: q.text(NOTICES),
    };
    Ok(html(StatusCode::OK, page.render()?))
}

/// Registers this module's routes under `/ui`.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/products", [(Method::GET, web::to(products))]))
        .service(resource("/products/{product}", [(Method::GET, web::to(product))]))
        .service(resource(
            "/products/{product}/releases",
            [(Method::POST, web::to(publish)), (Method::GET, web::to(to_product))],
        ))
        .service(resource("/products/{product}/releases/{version}", [(Method::GET, web::to(release))]));
}
