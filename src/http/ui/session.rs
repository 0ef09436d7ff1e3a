//! Who is signed in to the admin UI: the [`UiUser`] extractor (a valid session cookie, else a
//! redirect to the sign-in page), role checks, CSRF checks, and [`UiError`], which answers with
//! an HTML page instead of JSON.
//!
//! The session cookie is HttpOnly, SameSite=Strict, and Secure when the request came over HTTPS
//! (or the public URL is HTTPS). Every state-changing form carries the session's CSRF token.

use std::future::Future;
use std::pin::Pin;

use actix_web::cookie::{Cookie, SameSite};
use actix_web::http::StatusCode;
use actix_web::http::header::{CONTENT_TYPE, LOCATION};
use actix_web::{FromRequest, HttpRequest, HttpResponse, ResponseError, web};

use crate::services::auth::Permission;
use crate::services::users::{SessionUser, session_user};
use crate::services::{ServiceError, Services};

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "pg_session";

/// A signed-in user.
#[derive(Debug, Clone)]
pub struct UiUser(
    pub SessionUser,
    /// Whether this server signs with the public development keys (every page then says so).
    pub bool,
);

/// What a UI handler can fail with; always answered as HTML (or a redirect).
#[derive(Debug)]
pub enum UiError {
    /// Not signed in: go to the sign-in page, then back to `next`.
    SignIn {
        /// Where to return.
        next: String,
    },
    /// Signed in, but the role may not do this, or the CSRF token is wrong.
    Forbidden(String),
    /// Nothing is there.
    NotFound(String),
    /// A refusal from a service, shown as a page.
    Service(ServiceError),
    /// Rendering failed.
    Render(String),
}

impl std::fmt::Display for UiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::SignIn { next } => write!(f, "sign in to see {next}"),
            Self::Forbidden(m) | Self::NotFound(m) | Self::Render(m) => f.write_str(m),
            Self::Service(e) => write!(f, "{e}"),
        }
    }
}

impl From<ServiceError> for UiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::NotFound { message, .. } => Self::NotFound(message),
            ServiceError::Forbidden { message } => Self::Forbidden(message),
            other => Self::Service(other),
        }
    }
}

impl From<askama::Error> for UiError {
    fn from(e: askama::Error) -> Self {
        Self::Render(e.to_string())
    }
}

impl ResponseError for UiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::SignIn { .. } => StatusCode::SEE_OTHER,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Service(e) => crate::http::error::ApiError::status_of(e),
            Self::Render(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let Self::SignIn { next } = self {
            let target = format!("/ui/login?next={}", urlencode(next));
            return HttpResponse::SeeOther().insert_header((LOCATION, target)).finish();
        }
        let status = self.status_code();
        let message = match self {
            Self::Service(ServiceError::Internal(cause)) => {
                tracing::error!(error = format!("{cause:#}"), "internal error in the admin UI");
                "An internal error occurred; it has been logged.".to_owned()
            }
            Self::Render(m) => {
                tracing::error!(error = %m, "rendering a UI page");
                "An internal error occurred; it has been logged.".to_owned()
            }
            other => other.to_string(),
        };
        super::pages::error_page(status, &message)
    }
}

/// Percent-encodes a path for a query string.
pub fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

impl UiUser {
    /// Refuses (403 page) unless the user's role grants `permission`.
    pub fn require(&self, permission: Permission) -> Result<(), UiError> {
        if self.0.role.allows(permission) {
            Ok(())
        } else {
            Err(UiError::Forbidden(format!("The {} role may not do this.", self.0.role)))
        }
    }

    /// Refuses (403 page) unless `token` is this session's CSRF token.
    pub fn check_csrf(&self, token: &str) -> Result<(), UiError> {
        if self.0.csrf_matches(token) {
            Ok(())
        } else {
            Err(UiError::Forbidden(
                "The form's security token is missing or stale: reload the page and try again.".into(),
            ))
        }
    }

    /// Both checks a state-changing form needs.
    pub fn may_change(&self, permission: Permission, csrf: &str) -> Result<(), UiError> {
        self.check_csrf(csrf)?;
        self.require(permission)
    }
}

/// The session cookie for `secret` (an empty secret clears it).
pub fn session_cookie(req: &HttpRequest, svc: &Services, secret: &str) -> Cookie<'static> {
    let secure = req.connection_info().scheme() == "https"
        || svc.config.public_url.as_deref().is_some_and(|u| u.starts_with("https://"));
    let mut cookie = Cookie::build(SESSION_COOKIE, secret.to_owned())
        .path("/")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(secure)
        .finish();
    if secret.is_empty() {
        cookie.make_removal();
    }
    cookie
}

/// The session user of `req`, if its cookie names a valid session.
pub async fn current_user(req: &HttpRequest) -> Result<Option<SessionUser>, ServiceError> {
    let Some(svc) = req.app_data::<web::Data<Services>>().cloned() else { return Ok(None) };
    let Some(cookie) = req.cookie(SESSION_COOKIE) else { return Ok(None) };
    let activity = !req.headers().contains_key("x-live-refresh");
    session_user(&svc, cookie.value(), activity).await
}

impl FromRequest for UiUser {
    type Error = UiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, UiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let dev_keys = req.app_data::<web::Data<Services>>().is_some_and(|svc| svc.dev_keys);
            match current_user(&req).await? {
                Some(user) => Ok(Self(user, dev_keys)),
                None => {
                    let next = req.uri().path_and_query().map_or("/ui/", |p| p.as_str()).to_owned();
                    Err(UiError::SignIn { next })
                }
            }
        })
    }
}

/// An HTML response.
pub fn html(status: StatusCode, body: String) -> HttpResponse {
    HttpResponse::build(status).insert_header((CONTENT_TYPE, "text/html; charset=utf-8")).body(body)
}
