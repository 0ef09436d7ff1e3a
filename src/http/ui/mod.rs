//! The admin web UI at `/ui/`: server-rendered pages (askama templates in `templates/ui/`),
//! usable with JavaScript off, calling the same services as the API. One module per resource;
//! each registers its own routes. Every page needs a session ([`session::UiUser`]); every
//! change checks the session's CSRF token and the role, and is audited by the service it calls.

pub mod pages;
pub mod progress;
pub mod session;

mod audit;
mod cohorts;
mod dashboard;
mod devices;
mod enrollment;
mod login;
mod releases;
mod rollouts;

use actix_web::http::Method;
use actix_web::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use actix_web::middleware::DefaultHeaders;
use actix_web::{HttpResponse, web};

use crate::http::resource;

/// Content Security Policy: everything from patchgate itself, nothing inline, no framing.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
    form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Largest urlencoded form: a cohort's members, 100 000 ids of up to 40 characters.
const MAX_FORM_BYTES: usize = 4 * 1024 * 1024;

const STYLE: &str = include_str!("static/style.css");
const SCRIPT: &str = include_str!("static/ui.js");

/// Registers `/ui` and everything under it, and sends a browser at the server's root there.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::redirect("/", "/ui/")).service(web::redirect("/ui", "/ui/")).service(
        web::scope("/ui")
            .wrap(
                DefaultHeaders::new()
                    .add(("Content-Security-Policy", CSP))
                    .add(("X-Content-Type-Options", "nosniff"))
                    .add(("Referrer-Policy", "same-origin"))
                    .add(("X-Frame-Options", "DENY"))
                    // Pages hold fleet data: not kept in a shared PC's cache after sign-out.
                    .add(("Cache-Control", "no-store")),
            )
            // Big enough for a cohort of 100 000 explicit members; a refused form is a page.
            .app_data(web::FormConfig::default().limit(MAX_FORM_BYTES).error_handler(|e, _| {
                actix_web::error::InternalError::from_response(
                    e.to_string(),
                    pages::error_page(
                        actix_web::http::StatusCode::BAD_REQUEST,
                        &format!("The form could not be read: {e}."),
                    ),
                )
                .into()
            }))
            .service(resource(
                "/static/style.css",
                [(Method::GET, web::to(|| asset(STYLE, "text/css; charset=utf-8")))],
            ))
            .service(resource(
                "/static/ui.js",
                [(Method::GET, web::to(|| asset(SCRIPT, "text/javascript; charset=utf-8")))],
            ))
            .service(resource("/login", [(Method::GET, web::to(login::form)), (Method::POST, web::to(login::submit))]))
            .service(resource("/logout", [(Method::POST, web::to(login::logout))]))
            .configure(dashboard::routes)
            .configure(releases::routes)
            .configure(cohorts::routes)
            .configure(enrollment::routes)
            .configure(rollouts::routes)
            .configure(devices::routes)
            .configure(audit::routes)
            .default_service(web::to(not_found)),
    );
}

async fn asset(body: &'static str, content_type: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, content_type))
        .insert_header((CACHE_CONTROL, "public, max-age=3600"))
        .body(body)
}

async fn not_found(req: actix_web::HttpRequest) -> HttpResponse {
    pages::error_page(actix_web::http::StatusCode::NOT_FOUND, &format!("Nothing is at {}.", req.path()))
}
