//! Operations routes: liveness, readiness (database and metadata expiry), Prometheus metrics.

use actix_web::{HttpResponse, web};
use metrics_exporter_prometheus::PrometheusHandle;
use sea_orm::ConnectionTrait;
use serde::Serialize;
use utoipa::ToSchema;

use crate::services::Services;
use crate::services::refresh::expiry_problems;

/// Readiness verdict.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// `ready` or `not_ready`.
    pub status: String,
    /// What is wrong, as sentences.
    pub problems: Vec<String>,
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "Alive")))]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

/// Set once the process was asked to stop: `/readyz` then says so while requests are still
/// served (the drain of `startup::Application::run_until_stopped`).
#[derive(Debug, Clone, Default)]
pub struct Draining(pub std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Draining {
    /// Whether the process is shutting down.
    pub fn is_set(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Acquire)
    }
}

/// Ready to serve: not shutting down, the database answers and no served metadata is near
/// expiry.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, body = Readiness), (status = 503, body = Readiness)))]
pub async fn readyz(svc: web::Data<Services>, draining: web::Data<Draining>) -> HttpResponse {
    let mut problems = Vec::new();
    if draining.is_set() {
        problems.push("shutting down: this instance finishes the requests in flight and stops".to_owned());
    } else if let Err(e) = svc.db.execute_unprepared("SELECT 1").await {
        problems.push(format!("database: {e}"));
    } else {
        match expiry_problems(&svc).await {
            Ok(found) => problems.extend(found),
            Err(e) => problems.push(format!("checking metadata expiry: {e}")),
        }
    }
    if problems.is_empty() {
        HttpResponse::Ok().json(Readiness { status: "ready".into(), problems })
    } else {
        tracing::warn!(?problems, "not ready");
        HttpResponse::ServiceUnavailable().json(Readiness { status: "not_ready".into(), problems })
    }
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "Prometheus text format")))]
pub async fn metrics(handle: web::Data<PrometheusHandle>) -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(handle.render())
}
