//! hawkBit's Direct Device Integration API, the subset SWUpdate's suricatta and
//! rauc-hawkbit-updater use, under `/{tenant}/controller/v1/{controllerId}` (`services::ddi`
//! says how it maps onto devices, assignments and the gate).
//!
//! Shapes, statuses and error bodies are hawkBit's: links are absolute, `id`s are strings,
//! feedback is answered 200 with no body (SWUpdate takes only 200, 206 and 226 for success), a
//! missing or wrong `TargetToken` is 401 with no body, feedback on a finished action is 410 with
//! no body, and other refusals carry `{exceptionClass, errorCode, message}`.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use crate::services::ddi::{self, Action, ConfigData, DdiRefusal, Feedback};
use crate::services::{ServiceError, Services};

/// A DDI body is small: feedback with up to 48 log lines (SWUpdate), or attributes.
const MAX_DDI_BODY: usize = 64 * 1024;

/// hawkBit's error body.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DdiErrorBody {
    /// The Java exception hawkBit would have raised.
    pub exception_class: String,
    /// Stable code, e.g. `hawkbit.server.error.repo.entityNotFound`.
    pub error_code: String,
    /// Human sentence.
    pub message: String,
}

fn hawkbit_error(status: StatusCode, class: &str, code: &str, message: &str) -> HttpResponse {
    HttpResponse::build(status).insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-store"))).json(
        DdiErrorBody { exception_class: class.to_owned(), error_code: code.to_owned(), message: message.to_owned() },
    )
}

fn not_readable(message: &str) -> HttpResponse {
    hawkbit_error(
        StatusCode::BAD_REQUEST,
        "org.eclipse.hawkbit.rest.exception.MessageNotReadableException",
        "hawkbit.server.error.rest.body.notReadable",
        message,
    )
}

/// hawkBit's answer with no body (a 401, a 410).
fn empty(status: StatusCode) -> HttpResponse {
    let mut response = HttpResponse::build(status).insert_header((header::CACHE_CONTROL, "no-store")).finish();
    response.extensions_mut().insert(super::error::EmptyByDesign);
    response
}

fn refusal(r: DdiRefusal) -> HttpResponse {
    let e = match r {
        DdiRefusal::Unauthenticated => return empty(StatusCode::UNAUTHORIZED),
        DdiRefusal::Gone => return empty(StatusCode::GONE),
        DdiRefusal::Service(e) => e,
    };
    match e {
        ServiceError::Invalid { message, .. } => not_readable(&message),
        ServiceError::NotFound { message, .. } => hawkbit_error(
            StatusCode::NOT_FOUND,
            "org.eclipse.hawkbit.repository.exception.EntityNotFoundException",
            "hawkbit.server.error.repo.entityNotFound",
            &message,
        ),
        ServiceError::Forbidden { message } => hawkbit_error(
            StatusCode::FORBIDDEN,
            "org.eclipse.hawkbit.repository.exception.InsufficientPermissionException",
            "hawkbit.server.error.insufficientpermission",
            &message,
        ),
        ServiceError::Unauthenticated { .. } => empty(StatusCode::UNAUTHORIZED),
        // Two polls of one device at once: the second finds the counter moved; poll again.
        e @ (ServiceError::Conflict { .. } | ServiceError::StaleCounter { .. }) => hawkbit_error(
            StatusCode::CONFLICT,
            "org.eclipse.hawkbit.repository.exception.ConcurrentModificationException",
            "hawkbit.server.error.repo.concurrentModification",
            &e.to_string(),
        ),
        e @ (ServiceError::Throttled { .. } | ServiceError::TooLarge { .. }) => hawkbit_error(
            StatusCode::TOO_MANY_REQUESTS,
            "org.eclipse.hawkbit.repository.exception.AssignmentQuotaExceededException",
            "hawkbit.server.error.quota.tooManyEntries",
            &e.to_string(),
        ),
        ServiceError::Internal(cause) => {
            tracing::error!(error = format!("{cause:#}"), "internal error on a DDI route");
            hawkbit_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "java.lang.RuntimeException",
                "hawkbit.server.error.unknown",
                "an internal error occurred; it has been logged",
            )
        }
    }
}

/// The device of a request, by its `TargetToken`.
async fn device(
    svc: &Services,
    req: &HttpRequest,
    tenant: &str,
    controller_id: &str,
) -> Result<std::sync::Arc<crate::services::caches::DeviceIdentity>, DdiRefusal> {
    let authorization = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    ddi::authenticate(svc, authorization, tenant, controller_id).await
}

/// A handler's answer: what it made, or hawkBit's refusal.
fn answer(result: Result<HttpResponse, DdiRefusal>) -> HttpResponse {
    result.unwrap_or_else(refusal)
}

/// `https://host` as the client reached this server (links must be absolute).
fn origin(req: &HttpRequest) -> String {
    let info = req.connection_info();
    format!("{}://{}", info.scheme(), info.host())
}

fn action_id(raw: &str) -> Result<i64, DdiRefusal> {
    raw.parse::<i64>().map_err(|_| ServiceError::not_found("unknown_action", format!("no action {raw:?}")).into())
}

fn body<T: serde::de::DeserializeOwned>(raw: &[u8]) -> Result<T, DdiRefusal> {
    serde_json::from_slice(raw).map_err(|e| {
        ServiceError::invalid("invalid_body", format!("the given request body is not well formed: {e}")).into()
    })
}

/// The base poll: how long to sleep, and links to what the device should do.
#[utoipa::path(get, path = "/{tenant}/controller/v1/{controller_id}", tag = "ddi",
    params(("tenant" = String, Path, description = "`DEFAULT`, or the name of the device's product"),
        ("controller_id" = String, Path, description = "The device's id")),
    responses((status = 200, body = Object, description = "`config.polling.sleep` and `_links` (deploymentBase, cancelAction, configData)"),
        (status = 401, description = "No valid `Authorization: TargetToken …` (or `GatewayToken …`) for this device (no body)"),
        (status = 403, body = DdiErrorBody), (status = 404, body = DdiErrorBody), (status = 409, body = DdiErrorBody),
        (status = 500, body = DdiErrorBody)),
    security(("target_token" = [])))]
pub async fn poll(svc: web::Data<Services>, req: HttpRequest, path: web::Path<(String, String)>) -> HttpResponse {
    answer(poll_answer(&svc, &req, path.into_inner()).await)
}

async fn poll_answer(
    svc: &Services,
    req: &HttpRequest,
    (tenant, controller_id): (String, String),
) -> Result<HttpResponse, DdiRefusal> {
    let device = device(svc, req, &tenant, &controller_id).await?;
    let poll = ddi::poll(svc, device).await?;
    let base = format!("{}/{tenant}/controller/v1/{controller_id}", origin(req));
    let mut links = serde_json::Map::new();
    match poll.action {
        // hawkBit's `c` changes when an action changes; clients ignore it.
        Some(Action::Deploy(id)) => {
            links.insert("deploymentBase".into(), json!({"href": format!("{base}/deploymentBase/{id}?c={id}")}));
        }
        // No query: SWUpdate appends `/feedback` to this link.
        Some(Action::Cancel(id)) => {
            links.insert("cancelAction".into(), json!({"href": format!("{base}/cancelAction/{id}")}));
        }
        None => {}
    }
    if poll.wants_config_data {
        links.insert("configData".into(), json!({"href": format!("{base}/configData")}));
    }
    let mut body = json!({"config": {"polling": {"sleep": ddi::sleep_of(svc.config.device_poll_seconds)}}});
    if !links.is_empty() {
        body["_links"] = serde_json::Value::Object(links);
    }
    Ok(HttpResponse::Ok().insert_header((header::CACHE_CONTROL, "no-store")).json(body))
}

/// The deployment of an open action: one chunk, one artifact (the release's image), its
/// digests, size and download link.
#[utoipa::path(get, path = "/{tenant}/controller/v1/{controller_id}/deploymentBase/{action_id}", tag = "ddi",
    params(("tenant" = String, Path), ("controller_id" = String, Path), ("action_id" = String, Path, description = "The action's id (digits)")),
    responses((status = 200, body = Object, description = "`id`, `deployment` {download, update, chunks[{part, version, name, artifacts[{filename, hashes {sha1, md5, sha256}, size, _links}]}]}"),
        (status = 401, description = "No valid `Authorization: TargetToken …` (or `GatewayToken …`) for this device (no body)"),
        (status = 403, body = DdiErrorBody), (status = 404, body = DdiErrorBody), (status = 500, body = DdiErrorBody)),
    security(("target_token" = [])))]
pub async fn deployment(
    svc: web::Data<Services>,
    req: HttpRequest,
    path: web::Path<(String, String, String)>,
) -> HttpResponse {
    answer(deployment_answer(&svc, &req, path.into_inner()).await)
}

async fn deployment_answer(
    svc: &Services,
    req: &HttpRequest,
    (tenant, controller_id, raw_id): (String, String, String),
) -> Result<HttpResponse, DdiRefusal> {
    let device = device(svc, req, &tenant, &controller_id).await?;
    let d = ddi::deployment(svc, &device, action_id(&raw_id)?).await?;
    // The repository's consistent-snapshot name of the image: `{product}/{version}/{sha256}.{file}`.
    let (dir, file) = d.release.target_name.rsplit_once('/').unwrap_or(("", d.release.target_name.as_str()));
    let origin = origin(req);
    let href = format!("{origin}/repo/targets/{dir}/{}.{file}", d.release.sha256);
    // hawkBit names the link by the scheme it uses.
    let link = if origin.starts_with("https:") { "download" } else { "download-http" };
    let body = json!({
        "id": d.action_id.to_string(),
        "deployment": {
            "download": "forced",
            "update": "forced",
            "chunks": [{
                "part": "os",
                "version": d.release.version,
                "name": d.product,
                "artifacts": [{
                    "filename": d.release.filename,
                    "hashes": {"sha1": d.digests.sha1, "md5": d.digests.md5, "sha256": d.release.sha256},
                    "size": d.release.length,
                    "_links": {link: {"href": href}},
                }],
            }],
        },
    });
    Ok(HttpResponse::Ok().insert_header((header::CACHE_CONTROL, "no-store")).json(body))
}

/// Feedback on a deployment: moves the device's attempt (and counts in the rollout's gate).
#[utoipa::path(post, path = "/{tenant}/controller/v1/{controller_id}/deploymentBase/{action_id}/feedback", tag = "ddi",
    params(("tenant" = String, Path), ("controller_id" = String, Path), ("action_id" = String, Path)),
    request_body = Feedback,
    responses((status = 200, description = "Recorded (no body)"),
        (status = 400, body = DdiErrorBody), (status = 401, description = "No valid `Authorization: TargetToken …` (or `GatewayToken …`) for this device (no body)"),
        (status = 403, body = DdiErrorBody), (status = 404, body = DdiErrorBody), (status = 409, body = DdiErrorBody),
        (status = 410, description = "The action is finished (no body)"), (status = 500, body = DdiErrorBody)),
    security(("target_token" = [])))]
pub async fn deployment_feedback(
    svc: web::Data<Services>,
    req: HttpRequest,
    path: web::Path<(String, String, String)>,
    raw: web::Bytes,
) -> HttpResponse {
    feedback(&svc, &req, path.into_inner(), &raw, FeedbackOn::Deployment).await
}

/// What a feedback is about.
#[derive(Debug, Clone, Copy)]
enum FeedbackOn {
    Deployment,
    Cancellation,
}

/// Feedback on an action: 200 with no body once recorded.
async fn feedback(
    svc: &Services,
    req: &HttpRequest,
    (tenant, controller_id, raw_id): (String, String, String),
    raw: &[u8],
    on: FeedbackOn,
) -> HttpResponse {
    answer(
        async {
            let device = device(svc, req, &tenant, &controller_id).await?;
            let feedback = body::<Feedback>(raw)?;
            let id = action_id(&raw_id)?;
            match on {
                FeedbackOn::Deployment => ddi::deployment_feedback(svc, device, id, &feedback).await?,
                FeedbackOn::Cancellation => ddi::cancel_feedback(svc, &device, id, &feedback).await?,
            }
            Ok(HttpResponse::Ok().finish())
        }
        .await,
    )
}

/// A cancellation: the device should give up the action.
#[utoipa::path(get, path = "/{tenant}/controller/v1/{controller_id}/cancelAction/{action_id}", tag = "ddi",
    params(("tenant" = String, Path), ("controller_id" = String, Path), ("action_id" = String, Path)),
    responses((status = 200, body = Object, description = "`id` and `cancelAction.stopId`"),
        (status = 401, description = "No valid `Authorization: TargetToken …` (or `GatewayToken …`) for this device (no body)"),
        (status = 403, body = DdiErrorBody), (status = 404, body = DdiErrorBody), (status = 500, body = DdiErrorBody)),
    security(("target_token" = [])))]
pub async fn cancellation(
    svc: web::Data<Services>,
    req: HttpRequest,
    path: web::Path<(String, String, String)>,
) -> HttpResponse {
    let (tenant, controller_id, raw_id) = path.into_inner();
    answer(
        async {
            let device = device(&svc, &req, &tenant, &controller_id).await?;
            let id = action_id(&raw_id)?;
            ddi::cancellation(&svc, &device, id).await?;
            Ok(HttpResponse::Ok()
                .insert_header((header::CACHE_CONTROL, "no-store"))
                .json(json!({"id": id.to_string(), "cancelAction": {"stopId": id.to_string()}})))
        }
        .await,
    )
}

/// Feedback on a cancellation: `closed` acknowledges it.
#[utoipa::path(post, path = "/{tenant}/controller/v1/{controller_id}/cancelAction/{action_id}/feedback", tag = "ddi",
    params(("tenant" = String, Path), ("controller_id" = String, Path), ("action_id" = String, Path)),
    request_body = Feedback,
    responses((status = 200, description = "Recorded (no body)"),
        (status = 400, body = DdiErrorBody), (status = 401, description = "No valid `Authorization: TargetToken …` (or `GatewayToken …`) for this device (no body)"),
        (status = 403, body = DdiErrorBody), (status = 404, body = DdiErrorBody),
        (status = 410, description = "The cancellation is no longer open (no body)"), (status = 500, body = DdiErrorBody)),
    security(("target_token" = [])))]
pub async fn cancel_feedback(
    svc: web::Data<Services>,
    req: HttpRequest,
    path: web::Path<(String, String, String)>,
    raw: web::Bytes,
) -> HttpResponse {
    feedback(&svc, &req, path.into_inner(), &raw, FeedbackOn::Cancellation).await
}

/// The device's attributes (`merge`, `replace` or `remove`); the poll stops asking for them.
#[utoipa::path(put, path = "/{tenant}/controller/v1/{controller_id}/configData", tag = "ddi",
    params(("tenant" = String, Path), ("controller_id" = String, Path)),
    request_body = ConfigData,
    responses((status = 200, description = "Stored (no body)"),
        (status = 400, body = DdiErrorBody), (status = 401, description = "No valid `Authorization: TargetToken …` (or `GatewayToken …`) for this device (no body)"),
        (status = 403, body = DdiErrorBody), (status = 404, body = DdiErrorBody), (status = 500, body = DdiErrorBody)),
    security(("target_token" = [])))]
pub async fn config_data(
    svc: web::Data<Services>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    raw: web::Bytes,
) -> HttpResponse {
    let (tenant, controller_id) = path.into_inner();
    answer(
        async {
            let device = device(&svc, &req, &tenant, &controller_id).await?;
            ddi::config_data(&svc, &device, &body::<ConfigData>(&raw)?).await?;
            Ok(HttpResponse::Ok().finish())
        }
        .await,
    )
}

/// The DDI routes (registered after every other: their first segment is any tenant).
pub fn routes(cfg: &mut web::ServiceConfig) {
    use super::resource;
    use actix_web::http::Method;
    cfg.service(
        web::scope("/{tenant}/controller/v1/{controller_id}")
            .app_data(web::PayloadConfig::new(MAX_DDI_BODY))
            .service(resource("", [(Method::GET, web::to(poll))]))
            .service(resource("/deploymentBase/{action_id}", [(Method::GET, web::to(deployment))]))
            .service(resource("/deploymentBase/{action_id}/feedback", [(Method::POST, web::to(deployment_feedback))]))
            .service(resource("/cancelAction/{action_id}", [(Method::GET, web::to(cancellation))]))
            .service(resource("/cancelAction/{action_id}/feedback", [(Method::POST, web::to(cancel_feedback))]))
            .service(resource("/configData", [(Method::PUT, web::to(config_data))])),
    );
}
