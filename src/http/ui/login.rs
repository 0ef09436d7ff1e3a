//! Signing in and out. The sign-in form is the only UI form without a session; it is protected
//! by SameSite=Strict (no session cookie to ride on) and by throttling of repeated failures.

use actix_web::http::StatusCode;
use actix_web::http::header::LOCATION;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use serde::Deserialize;

use super::pages::{CsrfForm, FieldErrors};
use super::session::{UiError, UiUser, current_user, html, session_cookie};
use crate::services::users::{sign_in, sign_out};
use crate::services::{ServiceError, Services};

#[derive(Template)]
#[template(path = "ui/login.html")]
struct LoginPage<'a> {
    name: &'a str,
    next: &'a str,
    errors: FieldErrors,
    message: Option<String>,
}

/// `?next=` on the sign-in page.
#[derive(Debug, Deserialize)]
pub struct NextQuery {
    #[serde(default)]
    next: String,
}

/// The sign-in form.
#[derive(Debug, Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    next: String,
}

/// Only paths inside the UI: an open redirect would send a phished admin anywhere.
fn safe_next(next: &str) -> &str {
    if next.starts_with("/ui/") && !next.starts_with("//") && !next.contains('\\') { next } else { "/ui/" }
}

/// GET /ui/login
pub async fn form(req: HttpRequest, q: web::Query<NextQuery>) -> Result<HttpResponse, UiError> {
    if current_user(&req).await?.is_some() {
        return Ok(HttpResponse::SeeOther().insert_header((LOCATION, safe_next(&q.next).to_owned())).finish());
    }
    let page = LoginPage { name: "", next: safe_next(&q.next), errors: FieldErrors::default(), message: None };
    Ok(html(StatusCode::OK, page.render()?))
}

/// POST /ui/login
pub async fn submit(
    req: HttpRequest,
    svc: web::Data<Services>,
    form: web::Form<LoginForm>,
) -> Result<HttpResponse, UiError> {
    let form = form.into_inner();
    let next = safe_next(&form.next);
    let mut errors = FieldErrors::default();
    if form.name.trim().is_empty() {
        errors.add("name", "Enter your user name.");
    }
    if form.password.is_empty() {
        errors.add("password", "Enter your password.");
    }
    let (status, message) = if errors.is_empty() {
        // The peer itself, not a client-supplied X-Forwarded-For: this goes to the audit log.
        let remote = req.peer_addr().map_or_else(|| "unknown".to_owned(), |a| a.ip().to_string());
        match sign_in(&svc, form.name.trim(), &form.password, &remote).await {
            Ok(signed_in) => {
                // A browser that was signed in (as anyone) leaves that session behind for good.
                if let Some(previous) = current_user(&req).await? {
                    crate::services::users::sign_out(&svc, &previous).await?;
                }
                return Ok(HttpResponse::SeeOther()
                    .cookie(session_cookie(&req, &svc, &signed_in.secret))
                    .insert_header((LOCATION, next.to_owned()))
                    .finish());
            }
            Err(ServiceError::Unauthenticated { .. }) => {
                (StatusCode::UNAUTHORIZED, "Wrong user name or password.".to_owned())
            }
            Err(ServiceError::Throttled { retry_after }) => (
                StatusCode::TOO_MANY_REQUESTS,
                format!("Too many failed sign-ins for this name. Try again in {retry_after} seconds."),
            ),
            Err(e) => return Err(e.into()),
        }
    } else {
        (StatusCode::BAD_REQUEST, "Both fields are needed.".to_owned())
    };
    let page = LoginPage { name: form.name.trim(), next, errors, message: Some(message) };
    Ok(html(status, page.render()?))
}

/// POST /ui/logout
pub async fn logout(
    req: HttpRequest,
    svc: web::Data<Services>,
    user: UiUser,
    form: web::Form<CsrfForm>,
) -> Result<HttpResponse, UiError> {
    user.check_csrf(&form.csrf)?;
    sign_out(&svc, &user.0).await?;
    Ok(HttpResponse::SeeOther().cookie(session_cookie(&req, &svc, "")).insert_header((LOCATION, "/ui/login")).finish())
}

#[cfg(test)]
mod tests {
    use super::safe_next;

    #[test]
    fn only_ui_paths_are_followed_after_sign_in() {
        assert_eq!(safe_next("/ui/rollouts/r-1"), "/ui/rollouts/r-1");
        for hostile in ["https://evil.example", "//evil.example/ui/", "/api/v1/audit", "/ui/\\evil", ""] {
            assert_eq!(safe_next(hostile), "/ui/", "{hostile}");
        }
    }
}
