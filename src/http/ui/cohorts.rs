//! Admin UI pages for cohorts: the list (with live counts of matching devices) and the create
//! form, one cohort's detail and its edit form. Changes go through the same services as
//! `POST /api/v1/cohorts` and `PUT /api/v1/cohorts/{product}/{name}`.

use actix_web::http::Method;
use actix_web::http::StatusCode;
use actix_web::http::header::LOCATION;
use actix_web::{HttpResponse, web};
use askama::Template;
use serde::Deserialize;

use super::pages::{FieldErrors, Layout, NoticeQuery};
use super::session::{UiError, UiUser, html, urlencode};
use crate::domain::ids::{CohortName, DeviceId, Tag};
use crate::http::resource;
use crate::services::auth::Permission;
use crate::services::catalog::{cohort_match_count, cohort_match_counts};
use crate::services::cohorts::{
    CohortDetail, CohortInput, MAX_EXPLICIT_MEMBERS, Selector, create_cohort, get_cohort, list_cohorts, update_cohort,
};
use crate::services::products::list_products;
use crate::services::{ServiceError, Services};

/// `?notice=` codes these pages understand (a fixed map: arbitrary text is never echoed).
const NOTICES: &[(&str, &str)] = &[
    ("created", "The cohort is created."),
    ("saved", "The cohort is saved: rollouts use the new membership at each device's next report."),
];

/// Explicit members listed on the detail page; the edit form holds them all.
const MEMBERS_SHOWN: usize = 200;

/// Items typed into one text field, separated by whitespace or commas.
pub(super) fn split_list(raw: &str) -> Vec<String> {
    raw.split(|c: char| c.is_whitespace() || c == ',').filter(|s| !s.is_empty()).map(str::to_owned).collect()
}

/// Parses selector tags, or says which one is wrong.
pub(super) fn parse_tag_field(raw: &str) -> Result<Vec<String>, String> {
    split_list(raw)
        .into_iter()
        .map(|t| Tag::parse(&t).map(|t| t.to_string()).map_err(|e| format!("{e}, such as region:eu.")))
        .collect()
}

fn parse_members(raw: &str) -> Result<Vec<String>, String> {
    let ids = split_list(raw);
    if ids.len() > MAX_EXPLICIT_MEMBERS {
        return Err(format!("At most {MAX_EXPLICIT_MEMBERS} explicit members; use selector tags for larger groups."));
    }
    ids.into_iter().map(|d| DeviceId::parse(&d).map(|d| d.to_string()).map_err(|e| format!("{e}."))).collect()
}

/// The create and edit forms (the edit form has no product or name).
#[derive(Debug, Default, Deserialize)]
pub struct CohortForm {
    #[serde(default)]
    product: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    tags: String,
    #[serde(default)]
    members: String,
    #[serde(default)]
    csrf: String,
}

/// Tags and members, checked; `errors` says what is wrong.
fn membership(form: &CohortForm, errors: &mut FieldErrors) -> (Vec<String>, Vec<String>) {
    let tags = parse_tag_field(&form.tags).unwrap_or_else(|e| {
        errors.add("tags", e);
        Vec::new()
    });
    let members = parse_members(&form.members).unwrap_or_else(|e| {
        errors.add("members", e);
        Vec::new()
    });
    let typed_well = errors.get("tags").is_none() && errors.get("members").is_none();
    if typed_well && tags.is_empty() && members.is_empty() {
        errors.add("tags", "Give selector tags, explicit members, or both.");
        errors.add("members", "Give explicit members, selector tags, or both.");
    }
    (tags, members)
}

/// A service refusal as a notice (and a field message where one field is to blame).
fn refusal(e: ServiceError, errors: &mut FieldErrors) -> Result<(StatusCode, String), UiError> {
    Ok(match e {
        ServiceError::Conflict { code, message } => {
            if code == "cohort_exists" {
                errors.add("name", "This product already has a cohort of this name.");
            }
            (StatusCode::CONFLICT, message)
        }
        ServiceError::Invalid { message, .. } => (StatusCode::BAD_REQUEST, message),
        ServiceError::NotFound { code: "unknown_product", message } => {
            errors.add("product", "Choose one of the products.");
            (StatusCode::BAD_REQUEST, message)
        }
        other => return Err(other.into()),
    })
}

struct CohortRow {
    product: String,
    name: String,
    path: String,
    tags: String,
    members: usize,
    matching: u64,
}

#[derive(Template)]
#[template(path = "ui/cohorts.html")]
struct CohortsPage {
    layout: Layout,
    cohorts: Vec<CohortRow>,
    products: Vec<String>,
    form: CohortForm,
    errors: FieldErrors,
    message: Option<String>,
}

async fn render_list(
    svc: &Services,
    user: &UiUser,
    form: CohortForm,
    errors: FieldErrors,
    message: Option<String>,
    status: StatusCode,
) -> Result<HttpResponse, UiError> {
    let cohorts = list_cohorts(svc, None).await?;
    let counts = cohort_match_counts(svc, &cohorts).await?;
    let cohorts = cohorts
        .into_iter()
        .zip(counts)
        .map(|(c, matching)| CohortRow {
            path: format!("{}/{}", urlencode(&c.product), urlencode(&c.cohort.name)),
            tags: c.selector_tags.join(" "),
            members: c.devices.len(),
            product: c.product,
            name: c.cohort.name,
            matching,
        })
        .collect();
    let products = list_products(svc).await?.into_iter().map(|p| p.name).collect();
    let page = CohortsPage { layout: Layout::of(user, "cohorts"), cohorts, products, form, errors, message };
    Ok(html(status, page.render()?))
}

/// GET /ui/cohorts
pub async fn list(svc: web::Data<Services>, user: UiUser) -> Result<HttpResponse, UiError> {
    render_list(&svc, &user, CohortForm::default(), FieldErrors::default(), None, StatusCode::OK).await
}

/// POST /ui/cohorts
pub async fn create(
    svc: web::Data<Services>,
    user: UiUser,
    form: web::Form<CohortForm>,
) -> Result<HttpResponse, UiError> {
    user.may_change(Permission::ManageRollouts, &form.csrf)?;
    let form = form.into_inner();
    let mut errors = FieldErrors::default();
    if form.product.trim().is_empty() {
        errors.add("product", "Choose a product.");
    }
    if let Err(e) = CohortName::parse(form.name.trim()) {
        errors.add("name", format!("{e}."));
    }
    let (tags, devices) = membership(&form, &mut errors);
    if !errors.is_empty() {
        let message = Some("The cohort was not created.".to_owned());
        return render_list(&svc, &user, form, errors, message, StatusCode::BAD_REQUEST).await;
    }
    let selector = (!tags.is_empty()).then_some(Selector { tags });
    let input =
        CohortInput { name: form.name.trim().to_owned(), product: form.product.trim().to_owned(), devices, selector };
    match create_cohort(&svc, &user.0.caller(), input).await {
        Ok(c) => Ok(see_other(&c, "created")),
        Err(e) => {
            let (status, message) = refusal(e, &mut errors)?;
            render_list(&svc, &user, form, errors, Some(message), status).await
        }
    }
}

fn see_other(c: &CohortDetail, code: &str) -> HttpResponse {
    let target = format!("/ui/cohorts/{}/{}?notice={code}", urlencode(&c.product), urlencode(&c.cohort.name));
    HttpResponse::SeeOther().insert_header((LOCATION, target)).finish()
}

#[derive(Template)]
#[template(path = "ui/cohort.html")]
struct CohortPage {
    layout: Layout,
    product: String,
    name: String,
    path: String,
    selector: Vec<String>,
    members_shown: Vec<String>,
    member_count: usize,
    matching: u64,
    devices_link: String,
    form: CohortForm,
    errors: FieldErrors,
    message: Option<String>,
    notice: Option<&'static str>,
}

struct Shown {
    form: Option<CohortForm>,
    errors: FieldErrors,
    message: Option<String>,
    notice: Option<&'static str>,
}

async fn render_detail(
    svc: &Services,
    user: &UiUser,
    product: &str,
    name: &str,
    shown: Shown,
    status: StatusCode,
) -> Result<HttpResponse, UiError> {
    let c = get_cohort(svc, product, name).await?;
    let matching = cohort_match_count(svc, &c).await?;
    // The form shows what was typed after a refusal, else what is stored.
    let form = shown.form.unwrap_or_else(|| CohortForm {
        tags: c.selector_tags.join(" "),
        members: c.devices.join("\n"),
        ..CohortForm::default()
    });
    let page = CohortPage {
        layout: Layout::of(user, "cohorts"),
        path: format!("{}/{}", urlencode(&c.product), urlencode(&c.cohort.name)),
        devices_link: format!("/ui/devices?cohort={}&product={}", urlencode(&c.cohort.name), urlencode(&c.product)),
        members_shown: c.devices.iter().take(MEMBERS_SHOWN).cloned().collect(),
        member_count: c.devices.len(),
        selector: c.selector_tags,
        product: c.product,
        name: c.cohort.name,
        matching,
        form,
        errors: shown.errors,
        message: shown.message,
        notice: shown.notice,
    };
    Ok(html(status, page.render()?))
}

/// GET /ui/cohorts/{product}/{name}
pub async fn detail(
    svc: web::Data<Services>,
    user: UiUser,
    path: web::Path<(String, String)>,
    q: web::Query<NoticeQuery>,
) -> Result<HttpResponse, UiError> {
    let (product, name) = path.into_inner();
    let shown = Shown { form: None, errors: FieldErrors::default(), message: None, notice: q.text(NOTICES) };
    render_detail(&svc, &user, &product, &name, shown, StatusCode::OK).await
}

/// POST /ui/cohorts/{product}/{name}
pub async fn update(
    svc: web::Data<Services>,
    user: UiUser,
    path: web::Path<(String, String)>,
    form: web::Form<CohortForm>,
) -> Result<HttpResponse, UiError> {
    user.may_change(Permission::ManageRollouts, &form.csrf)?;
    let (product, name) = path.into_inner();
    let form = form.into_inner();
    let mut errors = FieldErrors::default();
    let (tags, devices) = membership(&form, &mut errors);
    let status = if errors.is_empty() {
        // The form holds the whole definition: no tags removes the selector.
        let selector = Some((!tags.is_empty()).then_some(Selector { tags }));
        match update_cohort(&svc, &user.0.caller(), &product, &name, Some(devices), selector).await {
            Ok(c) => return Ok(see_other(&c, "saved")),
            Err(e) => refusal(e, &mut errors)?,
        }
    } else {
        (StatusCode::BAD_REQUEST, "The cohort was not saved.".to_owned())
    };
    let shown = Shown { form: Some(form), errors, message: Some(status.1), notice: None };
    render_detail(&svc, &user, &product, &name, shown, status.0).await
}

/// Registers this module's routes under `/ui`.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/cohorts", [(Method::GET, web::to(list)), (Method::POST, web::to(create))])).service(
        resource("/cohorts/{product}/{name}", [(Method::GET, web::to(detail)), (Method::POST, web::to(update))]),
    );
}
