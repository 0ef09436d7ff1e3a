//! Admin UI pages: enrollment tokens (to be written).

use actix_web::web;

/// Registers this module's routes under `/ui`.
pub fn routes(_cfg: &mut web::ServiceConfig) {}
