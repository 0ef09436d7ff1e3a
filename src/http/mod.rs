//! HTTP: routes, thin handlers, authentication extractors, DTOs. Handlers call one service
//! each and never touch the database, signing or storage directly.

pub mod api;
pub mod auth;
pub mod ddi;
pub mod director;
pub mod error;
pub mod limits;
pub mod openapi;
pub mod ops;
pub mod query;
pub mod repo;
pub mod sendfile;
pub mod ui;

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{ALLOW, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::{HttpRequest, Resource, Route, web};
use utoipa::OpenApi;
use utoipa_swagger_ui::SwaggerUi;

/// The largest JSON body a route accepts: a product role or a ceremony's metadata.
pub const MAX_ROLE_BODY: usize = 4 * 1024 * 1024;

/// Registers every route.
pub fn routes(cfg: &mut web::ServiceConfig) {
    const GET: Method = Method::GET;
    const HEAD: Method = Method::HEAD;
    const POST: Method = Method::POST;
    const PUT: Method = Method::PUT;
    const PATCH: Method = Method::PATCH;
    const DELETE: Method = Method::DELETE;
    error::extractor_configs(cfg);
    cfg.service(
        web::scope("/api/v1")
            .service(resource(
                "/products",
                [(POST, web::to(api::products::create)), (GET, web::to(api::products::list))],
            ))
            .service(resource("/products/{product}", [(PATCH, web::to(api::products::update))]))
            .service(resource("/products/{product}/retention", [(GET, web::to(api::products::retention))]))
            .service(resource(
                "/products/{product}/ddi-gateway-token",
                [
                    (POST, web::to(api::devices::create_gateway_token)),
                    (DELETE, web::to(api::devices::revoke_gateway_token)),
                ],
            ))
            .service(resource(
                "/products/{product}/releases",
                [(POST, web::to(api::releases::publish)), (GET, web::to(api::releases::list))],
            ))
            .service(resource("/products/{product}/releases/{version}", [(GET, web::to(api::releases::get))]))
            .service(resource(
                "/products/{product}/releases/{version}/approve",
                [(POST, web::to(api::releases::approve))],
            ))
            .service(resource("/products/{product}/releases/{version}/yank", [(POST, web::to(api::releases::yank))]))
            .service(resource(
                "/products/{product}/releases/{version}/deltas",
                [(POST, web::to(api::releases::create_delta)), (GET, web::to(api::releases::list_deltas))],
            ))
            .service(resource(
                "/products/{product}/releases/{version}/deltas/signed",
                [(POST, web::to(api::releases::submit_signed_delta))],
            ))
            .service(
                resource(
                    "/products/{product}/role",
                    [(GET, web::to(api::products::role)), (POST, web::to(api::products::submit_role))],
                )
                .app_data(web::PayloadConfig::new(MAX_ROLE_BODY)),
            )
            .service(resource("/repo/prepare", [(POST, web::to(api::ceremony::prepare))]))
            .service(
                resource("/repo/metadata", [(POST, web::to(api::ceremony::metadata))])
                    .app_data(error::json_config(MAX_ROLE_BODY)),
            )
            .service(resource("/products/{product}/installed", [(GET, web::to(api::installed::list))]))
            .service(resource("/audit", [(GET, web::to(api::audit::list))]))
            .service(resource(
                "/enrollment-tokens",
                [(POST, web::to(api::enrollment::create)), (GET, web::to(api::enrollment::list))],
            ))
            .service(resource("/enrollment-tokens/{id}/revoke", [(POST, web::to(api::enrollment::revoke))]))
            .service(
                resource("/devices/enroll", [(POST, web::to(api::devices::enroll))])
                    .app_data(web::PayloadConfig::new(api::devices::MAX_DEVICE_BODY)),
            )
            .service(
                resource("/devices/{device_id}/report", [(POST, web::to(api::devices::report))])
                    .app_data(web::PayloadConfig::new(api::devices::MAX_DEVICE_BODY)),
            )
            .service(resource("/ddi-devices", [(POST, web::to(api::devices::register_ddi))]))
            .service(resource("/devices", [(GET, web::to(api::fleet::list))]))
            .service(resource("/devices/{device_id}", [(GET, web::to(api::fleet::get))]))
            .service(resource("/devices/{device_id}/tags", [(PUT, web::to(api::fleet::set_tags))]))
            .service(resource("/devices/{device_id}/decommission", [(POST, web::to(api::fleet::decommission))]))
            .service(resource("/devices/{device_id}/allow-rekey", [(POST, web::to(api::fleet::allow_rekey))]))
            .service(resource("/cohorts", [(POST, web::to(api::cohorts::create)), (GET, web::to(api::cohorts::list))]))
            .service(resource(
                "/cohorts/{product}/{name}",
                [(GET, web::to(api::cohorts::get)), (PUT, web::to(api::cohorts::update))],
            ))
            .service(resource(
                "/rollouts",
                [(POST, web::to(api::rollouts::create)), (GET, web::to(api::rollouts::list))],
            ))
            .service(resource("/rollouts/{id}", [(GET, web::to(api::rollouts::get))]))
            .service(resource("/rollouts/{id}/{action}", [(POST, web::to(api::rollouts::act))])),
    )
    .service(resource(
        "/repo/metadata/{file}",
        [(GET, web::to(repo::image_metadata)), (HEAD, web::to(repo::image_metadata))],
    ))
    .service(resource("/repo/targets/{path:.+}", [(GET, web::to(repo::target)), (HEAD, web::to(repo::target))]))
    .service(resource(
        "/director/metadata/{file}",
        [(GET, web::to(repo::director_root)), (HEAD, web::to(repo::director_root))],
    ))
    .service(resource(
        "/director/{device_id}/metadata/{file}",
        [(GET, web::to(director::device_metadata)), (HEAD, web::to(director::device_metadata))],
    ))
    .configure(ui::routes)
    .service(resource("/healthz", [(GET, web::to(ops::healthz))]))
    .service(resource("/readyz", [(GET, web::to(ops::readyz))]))
    .service(resource("/metrics", [(GET, web::to(ops::metrics))]))
    .service(web::redirect("/api/docs", "/api/docs/"))
    .service(SwaggerUi::new("/api/docs/{_:.*}").url("/api/openapi.json", openapi::ApiDoc::openapi()))
    .configure(ddi::routes);
}

/// One resource per path (not one route per method, which would make a wrong method fall through
/// to 404): it answers exactly `routes`, and any other method with a JSON 405 whose `Allow` header
/// lists them, as RFC 9110 asks.
pub(crate) fn resource<const N: usize>(path: &str, routes: [(Method, Route); N]) -> Resource {
    let allow = routes.iter().map(|(method, _)| method.as_str()).collect::<Vec<_>>().join(", ");
    let resource =
        routes.into_iter().fold(web::resource(path), |resource, (method, route)| resource.route(route.method(method)));
    resource.default_service(web::to(move |req: HttpRequest| {
        let mut response = error::json_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            &format!("{} is not allowed on {}; allowed: {}", req.method(), req.path(), allow),
        );
        // Method names are header tokens, so this always holds.
        if let Ok(allow) = HeaderValue::from_str(&allow) {
            response.headers_mut().insert(ALLOW, allow);
        }
        async move { response }
    }))
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
