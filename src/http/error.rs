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

/// Rewrites every error answer that is not JSON yet (actix's own 404, 405 and 413, an
/// extractor's or a payload's plain-text error) into a JSON error.
/// Marks an error answer whose empty body is part of a protocol (hawkBit's 401 and 410), which
/// [`default_error_handlers`] leaves as it is.
#[derive(Debug, Clone, Copy)]
pub struct EmptyByDesign;

pub fn default_error_handlers() -> actix_web::middleware::ErrorHandlers<actix_web::body::BoxBody> {
    use actix_web::dev::ServiceResponse;
    use actix_web::middleware::{ErrorHandlerResponse, ErrorHandlers};

    fn rewrite<B>(res: ServiceResponse<B>) -> actix_web::Result<ErrorHandlerResponse<B>> {
        // JSON errors and the admin UI's own HTML error pages stay as they are.
        let is_ours = res
            .headers()
            .get(CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/json") || v.as_bytes().starts_with(b"text/html"));
        if is_ours || res.response().extensions().contains::<EmptyByDesign>() {
            return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
        }
        let status = res.status();
        let path = res.request().path().to_owned();
        let cause = res.response().error().map(ToString::to_string).filter(|c| !c.is_empty());
        let (code, message) = match status {
            StatusCode::NOT_FOUND => ("not_found", format!("nothing is at {path}")),
            StatusCode::METHOD_NOT_ALLOWED => {
                ("method_not_allowed", format!("{} is not allowed on {path}", res.request().method()))
            }
            StatusCode::PAYLOAD_TOO_LARGE => ("body_too_large", format!("the request body is too large for {path}")),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => (
                "unsupported_media_type",
                cause.unwrap_or_else(|| "the body's content type is not accepted here".into()),
            ),
            StatusCode::REQUEST_TIMEOUT => ("request_timeout", "the request did not arrive in time".to_owned()),
            s if s.is_server_error() => {
                tracing::error!(status = s.as_u16(), %path, cause = cause.as_deref().unwrap_or(""), "error answer");
                ("internal", "an internal error occurred; it has been logged".to_owned())
            }
            _ => ("bad_request", cause.unwrap_or_else(|| format!("the request to {path} is not valid"))),
        };
        let (req, _) = res.into_parts();
        let response = json_error(status, code, &message);
        Ok(ErrorHandlerResponse::Response(ServiceResponse::new(req, response).map_into_right_body()))
    }

    ErrorHandlers::new().default_handler(rewrite)
}

/// A JSON body extractor's configuration: at most `limit` bytes, errors as JSON.
pub fn json_config(limit: usize) -> actix_web::web::JsonConfig {
    actix_web::web::JsonConfig::default().limit(limit).error_handler(|e, _| {
        use actix_web::error::JsonPayloadError;
        match e {
            JsonPayloadError::Overflow { .. } | JsonPayloadError::OverflowKnownLength { .. } => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", e.to_string()).into()
            }
            e => ApiError::bad_request("invalid_json", e.to_string()).into(),
        }
    })
}

/// JSON errors for the body, path and query extractors.
pub fn extractor_configs(cfg: &mut actix_web::web::ServiceConfig) {
    use actix_web::web::{PathConfig, QueryConfig};
    cfg.app_data(json_config(64 * 1024))
        .app_data(
            PathConfig::default().error_handler(|e, _| ApiError::bad_request("invalid_path", e.to_string()).into()),
        )
        .app_data(
            QueryConfig::default().error_handler(|e, _| ApiError::bad_request("invalid_query", e.to_string()).into()),
        );
}
