//! The `/api/v1` JSON API: thin handlers, one file per resource.

pub mod audit;
pub mod products;
pub mod releases;
