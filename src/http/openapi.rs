//! The OpenAPI document (`/api/openapi.json`) covering every route, and Swagger UI at `/api/docs`.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{api, director, error, ops, repo};

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("pgt_…").build()),
        );
    }
}

/// The API description.
#[derive(OpenApi)]
#[openapi(
    info(title = "patchgate", description = "OTA update server: TUF image repository, releases, devices, the per-device director, cohorts and staged rollouts."),
    paths(
        api::products::create, api::products::list, api::products::role, api::products::submit_role,
        api::releases::publish, api::releases::list, api::releases::get, api::releases::approve, api::releases::yank,
        api::ceremony::prepare, api::ceremony::metadata,
        api::audit::list,
        api::enrollment::create, api::enrollment::list, api::enrollment::revoke,
        api::devices::enroll, api::devices::report,
        api::fleet::list, api::fleet::get, api::fleet::set_tags, api::fleet::decommission, api::fleet::allow_rekey,
        api::installed::list,
        api::cohorts::create, api::cohorts::list, api::cohorts::get, api::cohorts::update,
        api::rollouts::create, api::rollouts::list, api::rollouts::get, api::rollouts::act,
        director::device_metadata,
        repo::image_metadata, repo::director_root, repo::target,
        ops::healthz, ops::readyz, ops::metrics,
    ),
    components(schemas(error::ErrorBody)),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;
