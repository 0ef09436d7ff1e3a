//! The one HTTP error type.
//!
//! Policy: every error response, extractor failures, 404 and 405 included, is JSON
//! `{"error": "snake_case_code", "message": "human sentence"}` with `Cache-Control: no-store`.
//! Codes are stable API; messages are for people. Internal failures are logged once here with
//! their cause chain and answered with a generic 500 that reveals nothing.

use actix_web::http::StatusCode;
use actix_web::http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::services::ServiceError;

/// An error answered to an HTTP client.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: String,
    message: String,
    last_counter: Option<u64>,
}

/// The JSON body of every error.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Stable `snake_case` code.
    pub error: String,
    /// Human sentence.
    pub message: String,
    /// On `stale_counter` only: the highest report counter accepted so far.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_counter: Option<u64>,
}

impl ApiError {
    /// An error with an explicit status.
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self { status, code: code.to_owned(), message: message.into(), last_counter: None }
    }

    /// A 400.
    pub fn bad_request(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// The status a service error is answered with (the UI's HTML pages use the same).
    pub fn status_of(e: &ServiceError) -> StatusCode {
        match e {
            ServiceError::Invalid { .. } => StatusCode::BAD_REQUEST,
            ServiceError::NotFound { .. } => StatusCode::NOT_FOUND,
            ServiceError::Conflict { .. } | ServiceError::StaleCounter { .. } => StatusCode::CONFLICT,
            ServiceError::Forbidden { .. } => StatusCode::FORBIDDEN,
            ServiceError::Unauthenticated { .. } => StatusCode::UNAUTHORIZED,
            ServiceError::Throttled { .. } => StatusCode::TOO_MANY_REQUESTS,
            ServiceError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ServiceError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A 404.
    pub fn not_found(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.code, self.message)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        error_response_with(
            self.status,
            ErrorBody { error: self.code.clone(), message: self.message.clone(), last_counter: self.last_counter },
        )
    }
}

/// A JSON error response.
pub fn json_error(status: StatusCode, code: &str, message: &str) -> HttpResponse {
    error_response_with(status, ErrorBody { error: code.to_owned(), message: message.to_owned(), last_counter: None })
}

fn error_response_with(status: StatusCode, body: ErrorBody) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((CACHE_CONTROL, HeaderValue::from_static("no-store")))
        .insert_header((CONTENT_TYPE, HeaderValue::from_static("application/json")))
        .json(body)
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::Invalid { code, message } => Self::new(StatusCode::BAD_REQUEST, code, message),
            ServiceError::NotFound { code, message } => Self::new(StatusCode::NOT_FOUND, code, message),
            ServiceError::Conflict { code, message } => Self::new(StatusCode::CONFLICT, code, message),
            ServiceError::Forbidden { message } => Self::new(StatusCode::FORBIDDEN, "forbidden", message),
            ServiceError::Unauthenticated { message } => {
                Self::new(StatusCode::UNAUTHORIZED, "unauthenticated", message)
            }
            e @ ServiceError::StaleCounter { last_counter, .. } => Self {
                last_counter: Some(last_counter),
                ..Self::new(StatusCode::CONFLICT, "stale_counter", e.to_string())
            },
            e @ ServiceError::Throttled { .. } => Self::new(StatusCode::TOO_MANY_REQUESTS, "throttled", e.to_string()),
            e @ ServiceError::TooLarge { .. } => {
                Self::new(StatusCode::PAYLOAD_TOO_LARGE, "file_too_large", e.to_string())
            }
            ServiceError::Internal(cause) => {
                tracing::error!(error = format!("{cause:#}"), "internal error");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "an internal error occurred; it has been logged",
                )
            }
        }
    }
}

impl From<crate::domain::names::NameError> for ApiError {
    fn from(e: crate::domain::names::NameError) -> Self {
        Self::bad_request(e.code(), e.to_string())
    }
}

/// Rewrites actix's plain 404, 405 and 413 answers (no route, wrong method, body over a
/// payload cap) into JSON errors.
pub fn default_error_handlers() -> actix_web::middleware::ErrorHandlers<actix_web::body::BoxBody> {
    use actix_web::dev::ServiceResponse;
    use actix_web::middleware::{ErrorHandlerResponse, ErrorHandlers};

    fn rewrite<B>(res: ServiceResponse<B>) -> actix_web::Result<ErrorHandlerResponse<B>> {
        // JSON errors and the admin UI's own HTML error pages stay as they are.
        let is_ours = res
            .headers()
            .get(CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/json") || v.as_bytes().starts_with(b"text/html"));
        if is_ours {
            return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
        }
        let status = res.status();
        let (code, message) = if status == StatusCode::METHOD_NOT_ALLOWED {
            ("method_not_allowed", format!("{} is not allowed on {}", res.request().method(), res.request().path()))
        } else if status == StatusCode::PAYLOAD_TOO_LARGE {
            ("body_too_large", format!("the request body is too large for {}", res.request().path()))
        } else {
            ("not_found", format!("nothing is at {}", res.request().path()))
        };
        let (req, _) = res.into_parts();
        let response = json_error(status, code, &message);
        Ok(ErrorHandlerResponse::Response(ServiceResponse::new(req, response).map_into_right_body()))
    }

    ErrorHandlers::new()
        .handler(StatusCode::NOT_FOUND, rewrite)
        .handler(StatusCode::METHOD_NOT_ALLOWED, rewrite)
        .handler(StatusCode::PAYLOAD_TOO_LARGE, rewrite)
}

/// JSON errors for the body, path and query extractors.
pub fn extractor_configs(cfg: &mut actix_web::web::ServiceConfig) {
    use actix_web::web::{JsonConfig, PathConfig, QueryConfig};
    cfg.app_data(
        JsonConfig::default()
            .limit(64 * 1024)
            .error_handler(|e, _| ApiError::bad_request("invalid_json", e.to_string()).into()),
    )
    .app_data(PathConfig::default().error_handler(|e, _| ApiError::bad_request("invalid_path", e.to_string()).into()))
    .app_data(
        QueryConfig::default().error_handler(|e, _| ApiError::bad_request("invalid_query", e.to_string()).into()),
    );
}
