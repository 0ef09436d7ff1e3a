//! Authentication extractors: a handler states the permission it needs in its signature
//! (`AdminAuth`, `PublisherAuth`, `ViewerAuth`), so it cannot forget to check.

use std::future::Future;
use std::pin::Pin;

use actix_web::http::header::AUTHORIZATION;
use actix_web::{FromRequest, HttpRequest, web};

use super::error::ApiError;
use crate::services::Services;
use crate::services::auth::{Caller, Permission, authenticate_token};

fn services(req: &HttpRequest) -> Result<web::Data<Services>, ApiError> {
    req.app_data::<web::Data<Services>>()
        .cloned()
        .ok_or_else(|| ApiError::new(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR, "internal", "no services"))
}

fn bearer<'a>(req: &'a HttpRequest, kind: &str) -> Result<&'a str, ApiError> {
    let header = req.headers().get(AUTHORIZATION).and_then(|v| v.to_str().ok());
    header.and_then(|h| h.strip_prefix("Bearer ")).map(str::trim).ok_or_else(|| {
        ApiError::new(
            actix_web::http::StatusCode::UNAUTHORIZED,
            "unauthenticated",
            format!("this route needs {kind}: Authorization: Bearer …"),
        )
    })
}

/// A UI session used on the API (no Authorization header): state-changing methods also need
/// the session's CSRF token in `X-CSRF-Token`, so another site cannot ride on the cookie.
async fn session_caller(req: &HttpRequest) -> Result<Option<Caller>, ApiError> {
    let Some(user) = super::ui::session::current_user(req).await? else { return Ok(None) };
    let safe = matches!(req.method().as_str(), "GET" | "HEAD" | "OPTIONS");
    let csrf = req.headers().get("x-csrf-token").and_then(|v| v.to_str().ok()).unwrap_or_default();
    if !safe && !user.csrf_matches(csrf) {
        return Err(ApiError::new(
            actix_web::http::StatusCode::FORBIDDEN,
            "csrf_token_required",
            "a session used on the API needs its CSRF token in X-CSRF-Token for this method",
        ));
    }
    Ok(Some(user.caller()))
}

async fn authenticate(req: HttpRequest, permission: Permission) -> Result<Caller, ApiError> {
    let svc = services(&req)?;
    let caller = if req.headers().contains_key(AUTHORIZATION) {
        authenticate_token(&svc, bearer(&req, "an API token (pgt_…)")?).await?
    } else if let Some(caller) = session_caller(&req).await? {
        caller
    } else {
        return Err(ApiError::new(
            actix_web::http::StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "this route needs an API token (Authorization: Bearer pgt_…) or a signed-in session",
        ));
    };
    if !caller.role.allows(permission) {
        return Err(ApiError::new(
            actix_web::http::StatusCode::FORBIDDEN,
            "forbidden",
            format!("the {} role may not do this", caller.role),
        ));
    }
    Ok(caller)
}

macro_rules! auth_extractor {
    ($name:ident, $permission:expr, $doc:literal) => {
        #[doc = $doc]
        #[derive(Debug, Clone)]
        pub struct $name(pub Caller);

        impl FromRequest for $name {
            type Error = ApiError;
            type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

            fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
                let req = req.clone();
                Box::pin(async move { authenticate(req, $permission).await.map($name) })
            }
        }
    };
}

auth_extractor!(ViewerAuth, Permission::Read, "Any valid token: reads.");
auth_extractor!(PublisherAuth, Permission::Publish, "A token that may publish releases.");
auth_extractor!(
    ManagerAuth,
    Permission::ManageRollouts,
    "A token that may steer rollouts, cohorts and enrollment tokens."
);
auth_extractor!(WithdrawAuth, Permission::Withdraw, "A token that may yank releases (publishers, release managers).");
auth_extractor!(AdminAuth, Permission::Admin, "An admin token.");

/// A device, by its device token (`pgd_…`); decommissioned devices are refused (403).
#[derive(Debug, Clone)]
pub struct DeviceAuth(pub std::sync::Arc<crate::services::caches::DeviceIdentity>);

impl FromRequest for DeviceAuth {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let svc = services(&req)?;
            let token = bearer(&req, "a device token (pgd_…)")?;
            Ok(DeviceAuth(crate::services::enrollment::authenticate_device(&svc, token).await?))
        })
    }
}
