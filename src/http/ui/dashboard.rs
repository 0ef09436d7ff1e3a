//! The dashboard: the fleet and what is running at a glance.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use askama::Template;

use super::pages::Layout;
use super::session::{UiError, UiUser, html};

#[derive(Template)]
#[template(path = "ui/dashboard.html")]
struct DashboardPage {
    layout: Layout,
}

/// GET /ui/
pub async fn show(user: UiUser) -> Result<HttpResponse, UiError> {
    let page = DashboardPage { layout: Layout::of(&user, "dashboard") };
    Ok(html(StatusCode::OK, page.render()?))
}

/// Registers this module's routes under `/ui`.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/").route(web::get().to(show)));
}
