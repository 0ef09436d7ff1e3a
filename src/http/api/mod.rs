//! The `/api/v1` JSON API: thin handlers, one file per resource.

pub mod audit;
pub mod ceremony;
pub mod cohorts;
pub mod devices;
pub mod enrollment;
pub mod fleet;
pub mod installed;
pub mod patterns;
pub mod products;
pub mod releases;
pub mod rollouts;
