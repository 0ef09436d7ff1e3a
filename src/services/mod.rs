//! Use cases. Services own transactions and are the only layer that touches the database, TUF
//! signing and blob storage together. They must not import `http`.

pub mod assign_device;
pub mod audit;
pub mod auth;
pub mod caches;
pub mod catalog;
pub mod ceremony;
pub mod cohorts;
pub mod context;
pub mod ddi;
pub mod delta_compute;
pub mod deltas;
pub mod device_report;
pub mod device_search;
pub mod devices;
pub mod director;
pub mod enrollment;
pub mod error;
pub mod group_commit;
pub mod image_repo;
pub mod init_repo;
pub mod manage_device;
pub mod manage_rollout;
pub mod overview;
pub mod product_role;
pub mod products;
pub mod publish_release;
pub mod redecide;
pub mod refresh;
pub mod release_review;
pub mod retention;
pub mod rollout_status;
pub mod rollout_timeline;
pub mod rollout_view;
pub mod root_rotation;
pub mod serve;
pub mod signature_batch;
pub mod unchanged_reports;
pub mod users;
pub mod whole_number;

pub use context::Services;
pub use error::ServiceError;
