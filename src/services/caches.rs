//! The read path from memory: device tokens, enrollment tokens, repository metadata and each
//! device's director timestamp ETag. The database stays the record; these maps only spare it a
//! read.
//!
//! Each cache has one way in (`get`/`fill`) and one way out (`invalidate…`), called by the use
//! case that changed the data right after its transaction committed, so this instance never
//! serves what a request that already returned revoked. Other instances learn of changes from
//! [`watch`], which polls the `cache_epochs` counters (raised by database triggers) and the
//! director metadata log twice a second.
//!
//! A fill races with an invalidation: a reader may load the old row just before a change
//! commits and store it just after the invalidation ran. Every cache therefore carries a
//! generation, bumped by each invalidation; a fill that started under an older generation is
//! dropped instead of stored.
//!
//! Must not import `http`.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use ed25519_dalek::VerifyingKey;
use sea_orm::{DatabaseConnection, DbErr, FromQueryResult, Statement};

use crate::db::entities::{enrollment_token, product};

/// How often other instances' changes are looked for: the "within a second" of docs/design.md §5.
pub const WATCH_INTERVAL: Duration = Duration::from_millis(500);

/// At most this many entries per map; past it the map starts again empty (cheaper than an LRU
/// and, at a million devices, refilled in one polling interval). A device costs about 330
/// bytes of token entry (its parsed key alone is 192) and 60 of director ETag; with what the
/// allocator keeps, the server grew by about 0.8 KiB per polling device on PostgreSQL and
/// 1.5 KiB on SQLite between 10 000 and 100 000 devices (README, "Memory").
const MAX_ENTRIES: usize = 2_000_000;

/// A map with a generation, filled on a miss and emptied by invalidations.
#[derive(Debug)]
struct GuardedMap<K, V> {
    map: RwLock<HashMap<K, V>>,
    generation: AtomicU64,
}

impl<K: Eq + Hash, V: Clone> GuardedMap<K, V> {
    fn new() -> Self {
        Self { map: RwLock::new(HashMap::new()), generation: AtomicU64::new(0) }
    }

    fn get(&self, key: &K) -> Option<V> {
        self.map.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(key).cloned()
    }

    /// The generation to pass to [`Self::fill`]: read it before loading the value.
    fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn fill(&self, generation: u64, key: K, value: V) {
        let mut map = self.map.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        // Checked under the write lock, which every invalidation also takes after bumping it.
        if self.generation.load(Ordering::Acquire) != generation {
            return;
        }
        if map.len() >= MAX_ENTRIES {
            map.clear();
        }
        map.insert(key, value);
    }

    fn remove_where(&self, keep: impl Fn(&K, &V) -> bool) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.map.write().unwrap_or_else(std::sync::PoisonError::into_inner).retain(|k, v| keep(k, v));
    }

    fn remove(&self, key: &K) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.map.write().unwrap_or_else(std::sync::PoisonError::into_inner).remove(key);
    }

    fn clear(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.map.write().unwrap_or_else(std::sync::PoisonError::into_inner).clear();
    }
}

/// What a valid device token proves: which active device is calling, and its key.
#[derive(Debug, Clone)]
pub struct DeviceIdentity {
    /// The device row.
    pub id: i64,
    /// The manufacturer's device id.
    pub device_id: String,
    /// Its product.
    pub product_id: i64,
    /// Its ed25519 key, parsed once; `None` for a DDI device, which signs nothing.
    pub key: Option<VerifyingKey>,
}

/// A cached metadata file: bytes and SHA-256 (the ETag).
pub type CachedFile = Arc<(bytes::Bytes, String)>;

/// An enrollment token as read when a device first used it, with its product. Only the fields
/// that never change after creation may be trusted from here (product, tags, expiry; the
/// product's name and hardware ids): revocation and uses are checked again by the conditional
/// update that takes a use (`enrollment_token_take_uses`), on every instance.
pub type EnrollmentGrant = Arc<(enrollment_token::Model, product::Model)>;

/// The caches of one server instance.
#[derive(Debug)]
pub struct Caches {
    /// SHA-256 of a device token → the device it authenticates (active devices only).
    tokens: GuardedMap<[u8; 32], Arc<DeviceIdentity>>,
    /// (repository, file name) → bytes. Versioned files never change; `timestamp.json` does.
    repo: GuardedMap<(&'static str, String), CachedFile>,
    /// Device row → SHA-256 of its current director `timestamp.json` (raw bytes: 40 bytes an
    /// entry where hex would take 100).
    director: GuardedMap<i64, [u8; 32]>,
    /// SHA-256 of an enrollment token → the token and its product (valid when read).
    enrollment: GuardedMap<[u8; 32], EnrollmentGrant>,
    /// SHA-256 of a metadata file → its gzip encoding, for the files fetched since the last
    /// change to the repository (what devices fetch is nearly always the newest).
    gzipped: GuardedMap<String, bytes::Bytes>,
}

impl Default for Caches {
    fn default() -> Self {
        Self {
            tokens: GuardedMap::new(),
            repo: GuardedMap::new(),
            director: GuardedMap::new(),
            enrollment: GuardedMap::new(),
            gzipped: GuardedMap::new(),
        }
    }
}

/// A generation read before a database load, handed back to the matching `fill`.
#[derive(Debug, Clone, Copy)]
pub struct FillTicket(u64);

impl Caches {
    /// The device a token (by its SHA-256) authenticates, if cached.
    pub fn device_token(&self, hash: &[u8; 32]) -> Option<Arc<DeviceIdentity>> {
        self.tokens.get(hash)
    }

    /// Read before loading a device by its token.
    pub fn device_token_ticket(&self) -> FillTicket {
        FillTicket(self.tokens.generation())
    }

    /// Remembers an active device's token.
    pub fn fill_device_token(&self, ticket: FillTicket, hash: [u8; 32], device: Arc<DeviceIdentity>) {
        self.tokens.fill(ticket.0, hash, device);
    }

    /// A device's token, key or status changed: forget every token of that device.
    pub fn invalidate_device(&self, device_row: i64) {
        self.tokens.remove_where(|_, d| d.id != device_row);
        self.director.remove(&device_row);
    }

    /// A repository file, if cached.
    pub fn repo_file(&self, repo: &'static str, file: &str) -> Option<CachedFile> {
        self.repo.get(&(repo, file.to_owned()))
    }

    /// Read before loading a repository file.
    pub fn repo_ticket(&self) -> FillTicket {
        FillTicket(self.repo.generation())
    }

    /// Remembers a repository file that exists (a missing one may appear at the next publish).
    pub fn fill_repo_file(&self, ticket: FillTicket, repo: &'static str, file: &str, body: CachedFile) {
        self.repo.fill(ticket.0, (repo, file.to_owned()), body);
    }

    /// The gzip encoding of the metadata file whose SHA-256 is `sha256`, if cached.
    pub fn gzipped(&self, sha256: &str) -> Option<bytes::Bytes> {
        self.gzipped.get(&sha256.to_owned())
    }

    /// Remembers a metadata file's gzip encoding.
    pub fn fill_gzipped(&self, sha256: &str, gzipped: bytes::Bytes) {
        let generation = self.gzipped.generation();
        self.gzipped.fill(generation, sha256.to_owned(), gzipped);
    }

    /// New repository metadata was committed: `timestamp.json` is no longer current. Versioned
    /// files are immutable and stay; their gzip encodings go (the new files will be fetched
    /// instead, and memory stays bounded by what is fetched between two changes).
    pub fn invalidate_repo(&self) {
        self.repo.remove_where(|(_, file), _| file != "timestamp.json");
        self.gzipped.clear();
    }

    /// The SHA-256 (hex) of a device's director `timestamp.json`, if cached.
    pub fn director_etag(&self, device_row: i64) -> Option<String> {
        self.director.get(&device_row).map(hex::encode)
    }

    /// Read before loading a device's director timestamp.
    pub fn director_ticket(&self) -> FillTicket {
        FillTicket(self.director.generation())
    }

    /// Remembers the SHA-256 (hex) of a device's current director timestamp.
    pub fn fill_director_etag(&self, ticket: FillTicket, device_row: i64, sha256: &str) {
        let mut raw = [0u8; 32];
        if hex::decode_to_slice(sha256, &mut raw).is_ok() {
            self.director.fill(ticket.0, device_row, raw);
        }
    }

    /// The device's director metadata was re-signed.
    pub fn invalidate_director(&self, device_row: i64) {
        self.director.remove(&device_row);
    }

    /// The enrollment token (by its SHA-256) and its product, if cached.
    pub fn enrollment_token(&self, hash: &[u8; 32]) -> Option<EnrollmentGrant> {
        self.enrollment.get(hash)
    }

    /// Read before loading an enrollment token.
    pub fn enrollment_ticket(&self) -> FillTicket {
        FillTicket(self.enrollment.generation())
    }

    /// Remembers a valid enrollment token and its product.
    pub fn fill_enrollment_token(&self, ticket: FillTicket, hash: [u8; 32], grant: EnrollmentGrant) {
        self.enrollment.fill(ticket.0, hash, grant);
    }

    /// An enrollment token was revoked: forget them all (they are few, and revocations rare).
    pub fn invalidate_enrollment_tokens(&self) {
        self.enrollment.clear();
    }
}

#[derive(Debug, FromQueryResult)]
struct EpochRow {
    name: String,
    epoch: i64,
}

#[derive(Debug, FromQueryResult)]
struct SignedRow {
    id: i64,
    device_row_id: i64,
}

/// What [`watch`] has seen so far.
#[derive(Debug, Default)]
struct Seen {
    epochs: HashMap<String, i64>,
    director_metadata_id: i64,
}

async fn epochs(db: &DatabaseConnection) -> Result<HashMap<String, i64>, DbErr> {
    let stmt = Statement::from_string(db.get_database_backend(), "SELECT name, epoch FROM cache_epochs");
    Ok(EpochRow::find_by_statement(stmt).all(db).await?.into_iter().map(|r| (r.name, r.epoch)).collect())
}

async fn director_signed_since(db: &DatabaseConnection, after: i64) -> Result<Vec<SignedRow>, DbErr> {
    let backend = db.get_database_backend();
    let sql = match backend {
        sea_orm::DbBackend::Postgres => {
            "SELECT id, device_row_id FROM device_metadata WHERE id > $1 AND role = 'timestamp' ORDER BY id LIMIT 100000"
        }
        _ => {
            "SELECT id, device_row_id FROM device_metadata WHERE id > ? AND role = 'timestamp' ORDER BY id LIMIT 100000"
        }
    };
    SignedRow::find_by_statement(Statement::from_sql_and_values(backend, sql, [after.into()])).all(db).await
}

async fn newest_director_metadata(db: &DatabaseConnection) -> Result<i64, DbErr> {
    #[derive(FromQueryResult)]
    struct Max {
        id: Option<i64>,
    }
    let stmt = Statement::from_string(db.get_database_backend(), "SELECT MAX(id) AS id FROM device_metadata");
    Ok(Max::find_by_statement(stmt).one(db).await?.and_then(|m| m.id).unwrap_or(0))
}

impl Seen {
    async fn start(db: &DatabaseConnection) -> Result<Self, DbErr> {
        Ok(Self { epochs: epochs(db).await?, director_metadata_id: newest_director_metadata(db).await? })
    }

    /// Drops what changed elsewhere since the last look.
    async fn catch_up(&mut self, db: &DatabaseConnection, caches: &Caches) -> Result<(), DbErr> {
        let now = epochs(db).await?;
        let changed = |name: &str| now.get(name) != self.epochs.get(name);
        if changed("device_auth") {
            caches.tokens.clear();
            caches.director.clear();
        }
        if changed("repo") {
            caches.invalidate_repo();
        }
        self.epochs = now;
        let signed = director_signed_since(db, self.director_metadata_id).await?;
        if signed.len() >= 100_000 {
            caches.director.clear();
        } else {
            for row in &signed {
                caches.invalidate_director(row.device_row_id);
            }
        }
        if let Some(last) = signed.last() {
            self.director_metadata_id = last.id;
        }
        Ok(())
    }
}

/// Runs for the life of the server: applies other instances' changes to this one's caches.
pub async fn watch(db: DatabaseConnection, caches: Arc<Caches>) {
    let mut seen = loop {
        match Seen::start(&db).await {
            Ok(seen) => break seen,
            Err(e) => {
                tracing::warn!(error = %e, "cache watch: cannot read the cache epochs; retrying");
                tokio::time::sleep(WATCH_INTERVAL).await;
            }
        }
    };
    let mut tick = tokio::time::interval(WATCH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = seen.catch_up(&db, &caches).await {
            // Unknown what changed meanwhile: nothing cached may be trusted.
            caches.tokens.clear();
            caches.director.clear();
            caches.invalidate_repo();
            tracing::warn!(error = %e, "cache watch: cannot read the cache epochs; caches emptied");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fill_that_started_before_an_invalidation_is_dropped() {
        let map: GuardedMap<i64, String> = GuardedMap::new();
        let before = map.generation();
        map.remove(&1);
        map.fill(before, 1, "old".into());
        assert_eq!(map.get(&1), None);
        let now = map.generation();
        map.fill(now, 1, "new".into());
        assert_eq!(map.get(&1).as_deref(), Some("new"));
    }

    #[test]
    fn repo_invalidation_keeps_versioned_files() {
        let caches = Caches::default();
        let ticket = caches.repo_ticket();
        caches.fill_repo_file(
            ticket,
            "image",
            "timestamp.json",
            Arc::new((bytes::Bytes::from_static(b"t"), "a".into())),
        );
        caches.fill_repo_file(ticket, "image", "1.root.json", Arc::new((bytes::Bytes::from_static(b"r"), "b".into())));
        caches.invalidate_repo();
        assert!(caches.repo_file("image", "timestamp.json").is_none());
        assert!(caches.repo_file("image", "1.root.json").is_some());
    }
}
