//! The OpenAPI document (`/api/openapi.json`) covering every route, and Swagger UI at `/api/docs`.

use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Content, Ref, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use super::{api, ddi, director, error, ops, repo};
use crate::domain::ids::{CohortName, DeviceId, RolloutId, Tag};
use crate::domain::names::{FirmwareVersion, ProductName};
use crate::domain::rollout::RolloutState;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("pgt_…").build()),
        );
        // hawkBit's device API: `Authorization: TargetToken pgd_…` (a device token), or
        // `GatewayToken pgw_…` (a product's gateway token).
        components.add_security_scheme(
            "target_token",
            SecurityScheme::ApiKey(utoipa::openapi::security::ApiKey::Header(
                utoipa::openapi::security::ApiKeyValue::with_description(
                    "Authorization",
                    "`TargetToken ` followed by the device's token, or `GatewayToken ` followed by its product's gateway token",
                ),
            )),
        );
    }
}

/// Statuses that the layers around every handler answer, added to each operation that can meet
/// them so that no route's list depends on its author remembering: 400 where a path, query or
/// body is parsed, 401 where a credential is required, 408 and 413 where a body is read
/// (`http/limits.rs`), 500 everywhere.
struct CommonResponses;

impl CommonResponses {
    fn add(operation: &mut Operation) {
        let secured = operation.security.as_ref().is_some_and(|s| !s.is_empty());
        let has_body = operation.request_body.is_some();
        let parses = has_body || operation.parameters.as_ref().is_some_and(|p| !p.is_empty());
        let common = [
            (parses, "400", "The path, query or body is not valid"),
            (secured, "401", "No valid credential"),
            (has_body, "408", "The body did not arrive in time (body_timeout, upload_too_slow)"),
            (has_body, "413", "The body is larger than this route accepts"),
            (true, "500", "An internal error; it has been logged"),
        ];
        for (applies, status, description) in common {
            if applies && !operation.responses.responses.contains_key(status) {
                let error = Content::new(Some(Ref::from_schema_name("ErrorBody")));
                let response = ResponseBuilder::new().description(description).content("application/json", error);
                operation.responses.responses.insert(status.to_owned(), RefOr::T(response.build()));
            }
        }
    }
}

impl Modify for CommonResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.options,
                &mut item.head,
                &mut item.patch,
                &mut item.trace,
            ];
            for operation in operations.into_iter().flatten() {
                Self::add(operation);
            }
        }
    }
}

/// The API description.
#[derive(OpenApi)]
#[openapi(
    info(title = "patchgate", description = "OTA update server: TUF image repository, releases, devices, the per-device director, cohorts and staged rollouts."),
    paths(
        api::products::create, api::products::list, api::products::update, api::products::retention,
        api::products::role, api::products::submit_role,
        api::releases::publish, api::releases::list, api::releases::get, api::releases::approve, api::releases::yank,
        api::releases::create_delta, api::releases::list_deltas, api::releases::submit_signed_delta,
        api::ceremony::prepare, api::ceremony::metadata,
        api::audit::list,
        api::enrollment::create, api::enrollment::list, api::enrollment::revoke,
        api::devices::enroll, api::devices::report, api::devices::register_ddi,
        api::devices::create_gateway_token, api::devices::revoke_gateway_token,
        api::fleet::list, api::fleet::get, api::fleet::set_tags, api::fleet::decommission, api::fleet::allow_rekey,
        api::installed::list,
        api::cohorts::create, api::cohorts::list, api::cohorts::get, api::cohorts::update,
        api::rollouts::create, api::rollouts::list, api::rollouts::get, api::rollouts::act,
        director::device_metadata,
        repo::image_metadata, repo::director_root, repo::target,
        ops::healthz, ops::readyz, ops::metrics,
        ddi::poll, ddi::deployment, ddi::deployment_feedback, ddi::cancellation, ddi::cancel_feedback, ddi::config_data,
    ),
    // The names parameters use, which no body registers on its own.
    components(schemas(
        error::ErrorBody, ProductName, FirmwareVersion, DeviceId, CohortName, RolloutId, Tag, RolloutState
    )),
    modifiers(&BearerAuth, &CommonResponses)
)]
pub struct ApiDoc;
