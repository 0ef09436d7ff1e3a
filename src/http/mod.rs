//! HTTP: routes, thin handlers, authentication extractors, DTOs. Handlers call one service
//! each and never touch the database, signing or storage directly.

pub mod api;
pub mod auth;
pub mod director;
pub mod error;
pub mod limits;
pub mod openapi;
pub mod ops;
pub mod repo;
pub mod ui;

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::web;
use utoipa::OpenApi;
use utoipa_swagger_ui::SwaggerUi;

/// The largest JSON body a route accepts: a product role or a ceremony's metadata.
pub const MAX_ROLE_BODY: usize = 4 * 1024 * 1024;

/// Registers every route.
pub fn routes(cfg: &mut web::ServiceConfig) {
    error::extractor_configs(cfg);
    cfg.service(
        // One resource per path (not one route per method), so a wrong method is 405, not 404.
        web::scope("/api/v1")
            .service(
                web::resource("/products")
                    .route(web::post().to(api::products::create))
                    .route(web::get().to(api::products::list)),
            )
            .service(
                web::resource("/products/{product}/releases")
                    .route(web::post().to(api::releases::publish))
                    .route(web::get().to(api::releases::list)),
            )
            .service(web::resource("/products/{product}/releases/{version}").route(web::get().to(api::releases::get)))
            .service(
                web::resource("/products/{product}/releases/{version}/approve")
                    .route(web::post().to(api::releases::approve)),
            )
            .service(
                web::resource("/products/{product}/releases/{version}/yank").route(web::post().to(api::releases::yank)),
            )
            .service(
                web::resource("/products/{product}/role")
                    .app_data(web::PayloadConfig::new(MAX_ROLE_BODY))
                    .route(web::get().to(api::products::role))
                    .route(web::post().to(api::products::submit_role)),
            )
            .service(web::resource("/repo/prepare").route(web::post().to(api::ceremony::prepare)))
            .service(
                web::resource("/repo/metadata")
                    .app_data(error::json_config(MAX_ROLE_BODY))
                    .route(web::post().to(api::ceremony::metadata)),
            )
            .service(web::resource("/products/{product}/installed").route(web::get().to(api::installed::list)))
            .service(web::resource("/audit").route(web::get().to(api::audit::list)))
            .service(
                web::resource("/enrollment-tokens")
                    .route(web::post().to(api::enrollment::create))
                    .route(web::get().to(api::enrollment::list)),
            )
            .service(web::resource("/enrollment-tokens/{id}/revoke").route(web::post().to(api::enrollment::revoke)))
            .service(
                web::resource("/devices/enroll")
                    .app_data(web::PayloadConfig::new(api::devices::MAX_DEVICE_BODY))
                    .route(web::post().to(api::devices::enroll)),
            )
            .service(
                web::resource("/devices/{device_id}/report")
                    .app_data(web::PayloadConfig::new(api::devices::MAX_DEVICE_BODY))
                    .route(web::post().to(api::devices::report)),
            )
            .service(web::resource("/devices").route(web::get().to(api::fleet::list)))
            .service(web::resource("/devices/{device_id}").route(web::get().to(api::fleet::get)))
            .service(web::resource("/devices/{device_id}/tags").route(web::put().to(api::fleet::set_tags)))
            .service(web::resource("/devices/{device_id}/decommission").route(web::post().to(api::fleet::decommission)))
            .service(web::resource("/devices/{device_id}/allow-rekey").route(web::post().to(api::fleet::allow_rekey)))
            .service(
                web::resource("/cohorts")
                    .route(web::post().to(api::cohorts::create))
                    .route(web::get().to(api::cohorts::list)),
            )
            .service(
                web::resource("/cohorts/{product}/{name}")
                    .route(web::get().to(api::cohorts::get))
                    .route(web::put().to(api::cohorts::update)),
            )
            .service(
                web::resource("/rollouts")
                    .route(web::post().to(api::rollouts::create))
                    .route(web::get().to(api::rollouts::list)),
            )
            .service(web::resource("/rollouts/{id}").route(web::get().to(api::rollouts::get)))
            .service(web::resource("/rollouts/{id}/{action}").route(web::post().to(api::rollouts::act))),
    )
    .service(
        web::resource("/repo/metadata/{file}")
            .route(web::get().to(repo::image_metadata))
            .route(web::head().to(repo::image_metadata)),
    )
    .service(
        web::resource("/repo/targets/{path:.+}").route(web::get().to(repo::target)).route(web::head().to(repo::target)),
    )
    .service(
        web::resource("/director/metadata/{file}")
            .route(web::get().to(repo::director_root))
            .route(web::head().to(repo::director_root)),
    )
    .service(
        web::resource("/director/{device_id}/metadata/{file}")
            .route(web::get().to(director::device_metadata))
            .route(web::head().to(director::device_metadata)),
    )
    .configure(ui::routes)
    .service(web::resource("/healthz").route(web::get().to(ops::healthz)))
    .service(web::resource("/readyz").route(web::get().to(ops::readyz)))
    .service(web::resource("/metrics").route(web::get().to(ops::metrics)))
    .service(web::redirect("/api/docs", "/api/docs/"))
    .service(SwaggerUi::new("/api/docs/{_:.*}").url("/api/openapi.json", openapi::ApiDoc::openapi()));
}

/// Counts requests by route pattern (not raw path, to bound cardinality) and status.
pub async fn request_metrics(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let method = req.method().to_string();
    let res = next.call(req).await?;
    let route = res.request().match_pattern().unwrap_or_else(|| "unmatched".to_owned());
    let status = res.status().as_u16().to_string();
    metrics::counter!("patchgate_http_requests_total", "route" => route.clone(), "method" => method, "status" => status).increment(1);
    metrics::histogram!("patchgate_http_request_seconds", "route" => route).record(started.elapsed().as_secs_f64());
    Ok(res)
}
