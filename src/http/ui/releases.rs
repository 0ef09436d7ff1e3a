//! Admin UI pages for products and releases: the product list, a product's releases with the
//! upload form, the upload itself, and one release's facts, rollouts and actions (approve, yank,
//! roll out: `review`).
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

mod review;
mod upload;

use self::review::{Review, blocked};
use self::upload::{UploadValues, read_upload};
use super::pages::{FieldErrors, Layout, NoticeQuery, when};
use super::session::{UiError, UiUser, html, urlencode};
use crate::db::entities::{product, release};
use crate::domain::names::ProductName;
use crate::http::resource;
use crate::services::auth::Permission;
use crate::services::catalog::{product_summaries, release_rollouts};
use crate::services::manage_rollout::check_release_may_roll_out;
use crate::services::products::{SERVER_SIGNED, get_product};
use crate::services::publish_release::{PublishOutcome, commit_release, get_release, page_releases};
use crate::services::{ServiceError, Services};

/// `?notice=` codes these pages understand (a fixed map: arbitrary text is never echoed).
const NOTICES: &[(&str, &str)] = &[
    ("published", "The release is published: its target is signed into the image repository."),
    ("already_published", "This version was already published with the same file; nothing changed."),
    ("approved", "The release is approved: rollouts of it may be created."),
    ("yanked", "Done: the release is yanked."),
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
    status: StatusBadge,
}

/// A release's state in one word, with its badge style.
struct StatusBadge {
    word: &'static str,
    class: &'static str,
}

fn release_status(product: &product::Model, r: &release::Model) -> StatusBadge {
    let (word, class) = if r.yanked_at.is_some() {
        ("yanked", "badge-bad")
    } else if r.delisted_at.is_some() {
        ("delisted", "badge-muted")
    } else if r.approved_by.is_some() {
        ("approved", "badge-ok")
    } else if product.requires_approval {
        ("awaiting approval", "badge-warn")
    } else {
        ("listed", "badge-ok")
    };
    StatusBadge { word, class }
}

#[derive(Template)]
#[template(path = "ui/product.html")]
struct ProductPage {
    layout: Layout,
    name: String,
    hardware_ids: String,
    signing: &'static str,
    keyid: String,
    security_floor: String,
    two_person: bool,
    retain_newest: i64,
    releases: Vec<ReleaseRow>,
    form: UploadValues,
    errors: FieldErrors,
    message: Option<String>,
    /// Keyset paging of the releases: this page is older than the newest ones.
    older_page: bool,
    next_page: Option<String>,
}

/// Releases per page of a product's list.
const RELEASES_PAGE: u64 = 50;

/// The upload form as it is shown again: what was typed, what is wrong with it, and the
/// page's message.
#[derive(Default)]
struct UploadState {
    values: UploadValues,
    errors: FieldErrors,
    message: Option<String>,
}

async fn render_product(
    svc: &Services,
    user: &UiUser,
    product: product::Model,
    upload: UploadState,
    status: StatusCode,
    before: Option<i64>,
) -> Result<HttpResponse, UiError> {
    // One more than shown says whether there is an older page.
    let mut rows = page_releases(svc, &product, before, RELEASES_PAGE + 1).await?;
    let more = rows.len() as u64 > RELEASES_PAGE;
    rows.truncate(usize::try_from(RELEASES_PAGE).unwrap_or(usize::MAX));
    let next_page = rows
        .last()
        .filter(|_| more)
        .map(|last| format!("/ui/products/{}?before={}", urlencode(&product.name), last.id));
    let releases = rows
        .into_iter()
        .map(|r| ReleaseRow {
            status: release_status(&product, &r),
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
        security_floor: product.security_floor,
        two_person: product.requires_approval,
        retain_newest: product.retain_newest,
        name: product.name,
        hardware_ids: hardware_ids.join(", "),
        releases,
        form: upload.values,
        errors: upload.errors,
        message: upload.message,
        older_page: before.is_some(),
        next_page,
    };
    Ok(html(status, page.render()?))
}

/// `?before=<release id>`: a page of older releases.
#[derive(Debug, serde::Deserialize)]
pub struct PageQuery {
    #[serde(default)]
    before: String,
}

impl PageQuery {
    /// The release id to page before, if any; anything else is a 400 page that says so.
    fn before(&self) -> Result<Option<i64>, UiError> {
        match self.before.as_str() {
            "" => Ok(None),
            raw => raw.parse().map(Some).map_err(|_| {
                UiError::Service(ServiceError::invalid("invalid_before", format!("before={raw:?} is not a release id")))
            }),
        }
    }
}

/// GET /ui/products/{product}
pub async fn product(
    svc: web::Data<Services>,
    user: UiUser,
    path: web::Path<String>,
    q: web::Query<PageQuery>,
) -> Result<HttpResponse, UiError> {
    let product = get_product(&svc, &path).await?;
    render_product(&svc, &user, product, UploadState::default(), StatusCode::OK, q.before()?).await
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
        let upload = UploadState { values: up.values, errors: up.errors, message: None };
        return render_product(&svc, &user, product, upload, status, None).await;
    }
    user.may_change(Permission::Publish, &up.csrf)?;
    let new = match up.into_release(name) {
        Ok(new) => new,
        Err(up) => {
            let upload = UploadState { values: up.values, errors: up.errors, message: None };
            return render_product(&svc, &user, product, upload, StatusCode::BAD_REQUEST, None).await;
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
    let upload = UploadState { values, errors, message: Some(message) };
    render_product(svc, user, product, upload, status, None).await
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

/// A button on the release page, or why it cannot be used now.
struct ReleaseAction {
    href: String,
    label: &'static str,
    class: &'static str,
    blocked: Option<String>,
}

/// The actions `user` may take on `release`, in the order they appear: roll it out, approve it,
/// yank it. An action the role does not allow is not shown; one the release's state forbids
/// says why in place of its button.
fn release_actions(user: &UiUser, product: &product::Model, release: &release::Model) -> Vec<ReleaseAction> {
    let base = format!("/ui/products/{}/releases/{}", urlencode(&product.name), urlencode(&release.version));
    let role = user.0.role;
    let mut out = Vec::new();
    if role.allows(Permission::ManageRollouts) && release.yanked_at.is_none() {
        out.push(ReleaseAction {
            href: format!(
                "/ui/rollouts/new?product={}&version={}",
                urlencode(&product.name),
                urlencode(&release.version)
            ),
            label: "Roll out this release",
            class: "primary",
            blocked: check_release_may_roll_out(product, release).err().map(|e| format!("{e}.")),
        });
    }
    let awaiting = product.requires_approval && release.approved_by.is_none() && release.yanked_at.is_none();
    if role.allows(Permission::ManageRollouts) && awaiting {
        out.push(ReleaseAction {
            href: format!("{base}/approve"),
            label: "Approve",
            class: "primary",
            blocked: blocked(Review::Approve, user, product, release),
        });
    }
    if role.allows(Permission::Withdraw) && release.yanked_at.is_none() {
        out.push(ReleaseAction {
            href: format!("{base}/yank"),
            label: "Yank",
            class: "danger",
            blocked: blocked(Review::Yank, user, product, release),
        });
    }
    out
}

#[derive(Template)]
#[template(path = "ui/release.html")]
struct ReleasePage {
    layout: Layout,
    product: String,
    product_path: String,
    release: release::Model,
    status: StatusBadge,
    approval: String,
    yanked: Option<String>,
    delisted: Option<String>,
    rollback_floor: String,
    released_at: String,
    published_at: String,
    signing: &'static str,
    keyid: String,
    rollouts: Vec<RolloutRow>,
    actions: Vec<ReleaseAction>,
    audit_path: String,
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
    let approval = match (&release.approved_by, release.approved_at) {
        (Some(by), Some(at)) => format!("approved by {by} on {}", when(at)),
        _ if release.yanked_at.is_some() => "none: it is yanked".to_owned(),
        _ if product.requires_approval => "awaiting a second person's approval: no rollout of it until then".to_owned(),
        _ => "not required for this product".to_owned(),
    };
    let yanked = match (&release.yanked_by, release.yanked_at) {
        (Some(by), Some(at)) => Some(format!("by {by} on {}", when(at))),
        _ => None,
    };
    let page = ReleasePage {
        layout: Layout::of(&user, "products"),
        status: release_status(&product, &release),
        actions: release_actions(&user, &product, &release),
        audit_path: format!("/ui/audit?object={}", urlencode(&format!("release:{}", release.target_name))),
        approval,
        yanked,
        delisted: release.delisted_at.map(when),
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
        .service(resource("/products/{product}/releases/{version}", [(Method::GET, web::to(release))]))
        .service(review_resource(Review::Approve))
        .service(review_resource(Review::Yank));
}

/// `/products/{product}/releases/{version}/{approve|yank}`: the confirmation page and its POST.
fn review_resource(review: Review) -> actix_web::Resource {
    resource(
        &format!("/products/{{product}}/releases/{{version}}/{}", review.name()),
        [
            (
                Method::GET,
                web::to(move |svc: web::Data<Services>, user: UiUser, path: web::Path<(String, String)>| {
                    review::confirm(svc, user, path, review)
                }),
            ),
            (
                Method::POST,
                web::to(
                    move |svc: web::Data<Services>,
                          user: UiUser,
                          path: web::Path<(String, String)>,
                          form: web::Form<super::pages::CsrfForm>| {
                        review::apply(svc, user, path, form, review)
                    },
                ),
            ),
        ],
    )
}
