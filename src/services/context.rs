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
    /// Online keys found in `online/` after start (a rotation's next key).
    pub late_keys: Arc<std::sync::RwLock<Vec<crate::tuf::keys::Signer>>>,
    /// Device tokens, repository metadata and director ETags kept in memory.
    pub caches: Arc<super::caches::Caches>,
    /// Each product's fleet plan, as of the newest `plan` epoch seen.
    pub plans: Arc<super::assign_device::Plans>,
    /// Group commit for device reports and enrollments.
    pub writes: super::group_commit::GroupCommit,
    /// Checks reports' signatures, many at once under load.
    pub signatures: super::signature_batch::SignatureBatcher,
}

impl Services {
    /// The online key (`preferred` first) that `trusted` accepts: among the keys read at start,
    /// else among those in `online/` now (read again only when none matches).
    pub fn online_key(
        &self,
        preferred: &crate::tuf::keys::Signer,
        trusted: impl Fn(&str) -> bool,
    ) -> Option<crate::tuf::keys::Signer> {
        if let Some(k) = self.keys.online_trusted(preferred, &trusted) {
            return Some(k.clone());
        }
        let late = self.late_keys.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(k) = late.iter().find(|k| trusted(k.keyid())) {
            return Some(k.clone());
        }
        drop(late);
        let found = crate::tuf::keydir::load_online(&self.config.keys_dir)
            .map_err(|e| tracing::warn!(error = %e, "cannot read the online keys again"))
            .unwrap_or_default();
        let key = found.iter().find(|k| trusted(k.keyid())).cloned();
        if key.is_some() {
            tracing::info!("using an online key added to the keys directory after start");
            *self.late_keys.write().unwrap_or_else(std::sync::PoisonError::into_inner) = found;
        }
        key
    }

    /// Now, as Unix seconds.
    pub fn now_secs(&self) -> i64 {
        self.clock.now().as_second()
    }
}
