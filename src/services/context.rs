//! What every service needs, built once at start-up and shared.

use std::sync::Arc;

use sea_orm::DatabaseConnection;

use crate::clock::Clock;
use crate::config::Config;
use crate::storage::BlobStore;
use crate::tuf::keydir::KeySet;

/// Shared handles for services.
#[derive(Debug, Clone)]
pub struct Services {
    /// The database.
    pub db: DatabaseConnection,
    /// Firmware blobs.
    pub store: BlobStore,
    /// The signing keys the server can read.
    pub keys: Arc<KeySet>,
    /// The time source.
    pub clock: Arc<dyn Clock>,
    /// Configuration.
    pub config: Arc<Config>,
    /// Whether the keys are the public development keys.
    pub dev_keys: bool,
}

impl Services {
    /// Now, as Unix seconds.
    pub fn now_secs(&self) -> i64 {
        self.clock.now().as_second()
    }
}
