//! Admin UI pages for the fleet: the device list (search by id, the same filters as
//! `GET /api/v1/devices`, keyset paging), one device with its report history and assignments,
//! editing its tags (release managers), and decommissioning it (admins, after a confirmation
//! page), through the same services as the API. What the pages show of a device is built in
//! `view`.

pub(super) mod view;

use actix_web::http::Method;
use actix_web::http::StatusCode;
use actix_web::http::header::LOCATION;
use actix_web::{HttpResponse, web};
use askama::Template;
use serde::Deserialize;

use super::pages::countdown;
use super::pages::{CsrfForm, FieldErrors, Layout, NoticeQuery};
use super::session::{UiError, UiUser, html, urlencode};
use crate::http::error::ApiError;
use crate::http::resource;
use crate::services::auth::Permission;
use crate::services::device_search::{offline_after, search_devices};
use crate::services::devices::get_device;
use crate::services::manage_device::{decommission_device, set_device_tags};
use crate::services::products::list_products;
use crate::services::{ServiceError, Services};
use view::{DeviceFacts, DeviceRow, Filters, Now, field_of};

#[derive(Template)]
#[template(path = "ui/devices.html")]
struct DevicesPage {
    layout: Layout,
    filters: Filters,
    /// The last-seen select's choices.
    seen_choices: [(&'static str, String); 6],
    products: Vec<String>,
    errors: FieldErrors,
    message: Option<String>,
    rows: Vec<DeviceRow>,
    total: u64,
    next_page: Option<String>,
}

impl DevicesPage {
    /// A product filter naming no product: offered as typed, so the form keeps it.
    fn product_unlisted(&self) -> bool {
        !self.filters.product.is_empty() && !self.products.contains(&self.filters.product)
    }
}

#[derive(Template)]
#[template(path = "ui/device.html")]
struct DevicePage {
    layout: Layout,
    notice: Option<&'static str>,
    d: DeviceFacts,
    /// The tags field as typed (or as stored), and what is wrong with it.
    tags_value: String,
    tags_error: Option<String>,
}

#[derive(Template)]
#[template(path = "ui/device_confirm.html")]
struct ConfirmPage {
    layout: Layout,
    device_id: String,
    active: bool,
    message: Option<String>,
}

/// GET /ui/devices
pub async fn list(user: UiUser, svc: web::Data<Services>, q: web::Query<Filters>) -> Result<HttpResponse, UiError> {
    let filters = q.into_inner().trimmed();
    let products = list_products(&svc).await?.into_iter().map(|p| p.name).collect();
    let now = now(&svc);
    let mut page = DevicesPage {
        layout: Layout::of(&user, "devices"),
        seen_choices: Filters::seen_choices(&countdown(now.offline_after)),
        products,
        errors: FieldErrors::default(),
        message: None,
        rows: Vec::new(),
        total: 0,
        next_page: None,
        filters,
    };
    let query = match page.filters.query() {
        Ok(query) => query,
        Err((field, message)) => {
            page.errors.add(field, message);
            return Ok(html(StatusCode::BAD_REQUEST, page.render()?));
        }
    };
    let status = match search_devices(&svc, Some(&page.filters.q), query).await {
        Ok(found) => {
            page.next_page = found.next_after.map(|after| page.filters.link(&after));
            page.total = found.total;
            // Offline as the search judged it, at the same instant.
            let now = Now { at: found.now, ..now };
            page.rows = found.devices.into_iter().map(|v| DeviceRow::new(v, now)).collect();
            StatusCode::OK
        }
        Err(e) => refusal(e, &mut page.errors, &mut page.message)?,
    };
    Ok(html(status, page.render()?))
}

/// The time now, and when a device counts as offline.
fn now(svc: &Services) -> Now {
    Now { at: svc.now_secs(), offline_after: offline_after(svc) }
}

/// A refused search: its message next to the field it concerns (or as a notice).
fn refusal(e: ServiceError, errors: &mut FieldErrors, message: &mut Option<String>) -> Result<StatusCode, UiError> {
    let code = match &e {
        ServiceError::Invalid { code, .. } | ServiceError::NotFound { code, .. } => *code,
        _ => return Err(e.into()),
    };
    match field_of(code) {
        // The service counts stages from 0; the page from 1.
        Some("stage") => errors.add("stage", "The rollout has no such stage."),
        Some(field) => errors.add(field, e.to_string()),
        // A cursor naming a device that is gone is as stale as a malformed one.
        None if code == "invalid_cursor" || code == "unknown_device" => {
            *message = Some("The page link is malformed: start again from the first page.".to_owned());
        }
        None => *message = Some(e.to_string()),
    }
    Ok(ApiError::status_of(&e))
}

/// GET /ui/devices/{id}
pub async fn show(
    user: UiUser,
    svc: web::Data<Services>,
    id: web::Path<String>,
    q: web::Query<NoticeQuery>,
) -> Result<HttpResponse, UiError> {
    let detail = get_device(&svc, &id).await?;
    let notice = match q.notice.as_str() {
        "decommissioned" => Some("The device is decommissioned: its token no longer works and it cannot enroll again."),
        "tags" => Some("The tags are saved: the device's cohorts follow them from its next report on."),
        _ => None,
    };
    let d = DeviceFacts::new(detail, now(&svc));
    let page = DevicePage {
        layout: Layout::of(&user, "devices"),
        notice,
        tags_value: d.tags.replace(',', ""),
        tags_error: None,
        d,
    };
    Ok(html(StatusCode::OK, page.render()?))
}

/// The tags form.
#[derive(Debug, Deserialize)]
pub struct TagsForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    tags: String,
}

/// POST /ui/devices/{id}/tags: replaces the device's tags (separated by spaces or commas; empty
/// clears them).
pub async fn set_tags(
    user: UiUser,
    svc: web::Data<Services>,
    id: web::Path<String>,
    form: web::Form<TagsForm>,
) -> Result<HttpResponse, UiError> {
    user.may_change(Permission::ManageRollouts, &form.csrf)?;
    let tags: Vec<String> =
        form.tags.split(|c: char| c == ',' || c.is_whitespace()).filter(|t| !t.is_empty()).map(str::to_owned).collect();
    match set_device_tags(&svc, &user.0.caller(), &id, &tags).await {
        Ok(_) => {
            let target = format!("/ui/devices/{}?notice=tags", urlencode(&id));
            Ok(HttpResponse::SeeOther().insert_header((LOCATION, target)).finish())
        }
        Err(e @ (ServiceError::Invalid { .. } | ServiceError::Conflict { .. })) => {
            let status = ApiError::status_of(&e);
            let d = DeviceFacts::new(get_device(&svc, &id).await?, now(&svc));
            let layout = Layout::of(&user, "devices");
            let page = DevicePage {
                layout,
                notice: None,
                d,
                tags_value: form.into_inner().tags,
                tags_error: Some(format!("{e}. Nothing was changed.")),
            };
            Ok(html(status, page.render()?))
        }
        Err(e) => Err(e.into()),
    }
}

/// GET /ui/devices/{id}/decommission: what will happen, and the button that does it.
pub async fn confirm(user: UiUser, svc: web::Data<Services>, id: web::Path<String>) -> Result<HttpResponse, UiError> {
    user.require(Permission::Admin)?;
    let detail = get_device(&svc, &id).await?;
    let active = detail.view.device.status == "active";
    let message = (!active).then(|| format!("Device {id} is already decommissioned."));
    let page = ConfirmPage { layout: Layout::of(&user, "devices"), device_id: id.into_inner(), active, message };
    Ok(html(StatusCode::OK, page.render()?))
}

/// POST /ui/devices/{id}/decommission
pub async fn decommission(
    user: UiUser,
    svc: web::Data<Services>,
    id: web::Path<String>,
    form: web::Form<CsrfForm>,
) -> Result<HttpResponse, UiError> {
    user.may_change(Permission::Admin, &form.csrf)?;
    match decommission_device(&svc, &user.0.caller(), &id).await {
        Ok(_) => {
            let target = format!("/ui/devices/{}?notice=decommissioned", urlencode(&id));
            Ok(HttpResponse::SeeOther().insert_header((LOCATION, target)).finish())
        }
        Err(e @ ServiceError::Conflict { .. }) => {
            let message = Some(e.to_string());
            let page = ConfirmPage {
                layout: Layout::of(&user, "devices"),
                device_id: id.into_inner(),
                active: false,
                message,
            };
            Ok(html(StatusCode::CONFLICT, page.render()?))
        }
        Err(e) => Err(e.into()),
    }
}

/// Registers this module's routes under `/ui`.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/devices", [(Method::GET, web::to(list))]))
        .service(resource("/devices/{id}", [(Method::GET, web::to(show))]))
        .service(resource("/devices/{id}/tags", [(Method::POST, web::to(set_tags))]))
        .service(resource(
            "/devices/{id}/decommission",
            [(Method::GET, web::to(confirm)), (Method::POST, web::to(decommission))],
        ));
}
