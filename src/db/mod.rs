//! Database access: connecting, migrating, the signing lock, and `noun_verb` query functions.
//!
//! Owns SQL and sea-orm; knows nothing of HTTP or TUF semantics.

pub mod audit;
pub mod cohorts;
pub mod ddi;
pub mod deltas;
pub mod device_metadata;
pub mod devices;
pub mod enrollment;
pub mod entities;
pub mod epochs;
pub mod leases;
pub mod metadata;
pub mod overview;
pub mod products;
pub mod releases;
pub mod rollouts;
pub mod timeline;
pub mod tokens;
pub mod users;

use std::time::Duration;

use migration::{Migrator, MigratorTrait};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr,
    SqliteTransactionMode, TransactionOptions, TransactionTrait,
};

/// How long a SQLite writer waits for another: publishes hold the lock only while signing
/// (milliseconds), so 30 s means something is badly wrong rather than merely busy.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// Pooled connections idle at least this long are pinged before use (a restarted PostgreSQL
/// shows up there rather than as a failed request); busier ones are not.
const POOL_PING_IDLE: Duration = Duration::from_secs(30);

/// An arbitrary, fixed advisory lock key for "signing the image repository" on PostgreSQL.
const PG_SIGNING_LOCK_KEY: i64 = 0x7061_7463_6867; // "patchg"

/// Connects to `url` (creating a SQLite file's directory if needed) and runs migrations.
pub async fn connect(url: &str) -> anyhow::Result<DatabaseConnection> {
    use anyhow::Context as _;
    if let Some(path) = sqlite_path(url)
        && let Some(dir) = std::path::Path::new(&path).parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).with_context(|| format!("creating database directory {}", dir.display()))?;
    }
    // `sqlite://path` as written in a configuration file creates the file like the default URL
    // (which says `?mode=rwc`) does; an explicit `mode=` is left as it is.
    let create = sqlite_path(url).is_some() && !url.split_once('?').is_some_and(|(_, q)| q.contains("mode="));
    let mut options = ConnectOptions::new(url.to_owned());
    // A ping on every acquire is a round trip per transaction (on SQLite two thread hand-offs);
    // only connections idle for a while are checked before use.
    options.sqlx_logging(false).max_connections(16).min_connections(1).test_before_acquire_if_idle_for(POOL_PING_IDLE);
    options.map_sqlx_sqlite_opts(move |o| {
        use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
        // WAL lets readers (clients fetching metadata) proceed while a publish writes;
        // FULL sync makes a committed release survive power loss, not only a crash.
        let o = if create { o.create_if_missing(true) } else { o };
        o.journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(SQLITE_BUSY_TIMEOUT)
            .foreign_keys(true)
    });
    let db = Database::connect(options).await.with_context(|| format!("connecting to the database {}", redact(url)))?;
    let lock = MigrationLock::take(url, &db).await?;
    let migrated = Migrator::up(&db, None).await.context("running database migrations");
    lock.release().await;
    migrated?;
    Ok(db)
}

/// An arbitrary, fixed advisory lock key for "migrating the schema" on PostgreSQL.
const PG_MIGRATION_LOCK_KEY: i64 = 0x7061_7463_686d; // "patchm"

/// Held while the schema is migrated: processes that start together on one database (a server
/// and a CLI command, several instances) migrate it one after the other, and the later ones
/// find nothing left to do. Without it two of them created the same tables at once and one
/// failed.
enum MigrationLock {
    /// PostgreSQL: a session advisory lock on a connection of its own (a crashed holder's
    /// session ends, and the lock with it).
    Postgres(DatabaseConnection),
    /// SQLite: an exclusive lock on `{database file}.migrate-lock` (released by the kernel if
    /// the process dies).
    Sqlite(std::fs::File),
    /// An in-memory database is this process's alone.
    None,
}

impl MigrationLock {
    async fn take(url: &str, db: &DatabaseConnection) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        if db.get_database_backend() == DbBackend::Postgres {
            let mut options = ConnectOptions::new(url.to_owned());
            options.sqlx_logging(false).max_connections(1).min_connections(1);
            let holder = Database::connect(options).await.context("connecting for the migration lock")?;
            let locked = holder
                .query_one_raw(sea_orm::Statement::from_string(
                    DbBackend::Postgres,
                    format!("SELECT pg_try_advisory_lock({PG_MIGRATION_LOCK_KEY}) AS locked"),
                ))
                .await?
                .map(|row| row.try_get::<bool>("", "locked"))
                .transpose()?
                .unwrap_or(false);
            if !locked {
                tracing::info!("another process is migrating the database; waiting for it");
                holder
                    .execute_unprepared(&format!("SELECT pg_advisory_lock({PG_MIGRATION_LOCK_KEY})"))
                    .await
                    .context("waiting for the migration lock")?;
            }
            return Ok(Self::Postgres(holder));
        }
        let Some(path) = sqlite_path(url) else { return Ok(Self::None) };
        let lock_path = format!("{path}.migrate-lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .with_context(|| format!("opening the migration lock file {lock_path}"))?;
        let file = match file.try_lock() {
            Ok(()) => file,
            Err(std::fs::TryLockError::WouldBlock) => {
                tracing::info!(lock = %lock_path, "another process is migrating the database; waiting for it");
                tokio::task::spawn_blocking(move || file.lock().map(|()| file))
                    .await
                    .context("waiting for the migration lock")?
                    .with_context(|| format!("locking {lock_path}"))?
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("locking {lock_path}"));
            }
        };
        Ok(Self::Sqlite(file))
    }

    /// Lets the next process migrate (it will find the schema current).
    async fn release(self) {
        match self {
            Self::Postgres(holder) => {
                let unlock = format!("SELECT pg_advisory_unlock({PG_MIGRATION_LOCK_KEY})");
                if let Err(e) = holder.execute_unprepared(&unlock).await {
                    tracing::warn!(error = %e, "releasing the migration lock (closing its session releases it too)");
                }
                let _ = holder.close().await;
            }
            Self::Sqlite(file) => {
                let _ = file.unlock();
            }
            Self::None => {}
        }
    }
}

fn sqlite_path(url: &str) -> Option<String> {
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or_default();
    (!path.is_empty() && path != ":memory:").then(|| path.to_owned())
}

/// The URL without its password, for logs.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

/// Begins a transaction that will write: on SQLite `BEGIN IMMEDIATE`, so a transaction that
/// reads and then writes never fails on upgrading its lock (it waits for the busy timeout
/// instead); on PostgreSQL an ordinary transaction (row locks and conditional updates suffice).
pub async fn begin_write(db: &DatabaseConnection) -> Result<DatabaseTransaction, DbErr> {
    let options =
        TransactionOptions { sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate), ..Default::default() };
    db.begin_with_options(options).await
}

/// Begins a transaction that holds the repository signing lock until it ends.
///
/// SQLite: `BEGIN IMMEDIATE` takes the write lock up front, so two signers never both read the
/// same "current version". PostgreSQL: a transaction-scoped advisory lock does the same.
pub async fn begin_signing(db: &DatabaseConnection) -> Result<DatabaseTransaction, DbErr> {
    let options =
        TransactionOptions { sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate), ..Default::default() };
    let txn = db.begin_with_options(options).await?;
    if txn.get_database_backend() == DbBackend::Postgres {
        txn.execute_unprepared(&format!("SELECT pg_advisory_xact_lock({PG_SIGNING_LOCK_KEY})")).await?;
    }
    Ok(txn)
}

/// The escape character of [`like_pattern`]: not a character of any slug, name or action, and
/// needs no quoting in SQL string literals on either backend (a backslash would on some).
const LIKE_ESCAPE: char = '!';

/// A `LIKE` pattern matching `text` literally between `prefix` and `suffix` (which may hold
/// `%`): `_` and `%` in `text` would otherwise be wildcards, and tags and actions contain `_`.
pub fn like_pattern(prefix: &str, text: &str, suffix: &str) -> sea_orm::sea_query::LikeExpr {
    let mut pattern = String::with_capacity(prefix.len() + text.len() + suffix.len() + 4);
    pattern.push_str(prefix);
    for c in text.chars() {
        if matches!(c, '%' | '_') || c == LIKE_ESCAPE {
            pattern.push(LIKE_ESCAPE);
        }
        pattern.push(c);
    }
    pattern.push_str(suffix);
    sea_orm::sea_query::LikeExpr::new(pattern).escape(LIKE_ESCAPE)
}

/// Whether `err` is a unique-constraint violation.
pub fn is_unique_violation(err: &DbErr) -> bool {
    matches!(err.sql_err(), Some(sea_orm::SqlErr::UniqueConstraintViolation(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_sqlite_url_without_a_mode_creates_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data/patchgate.db");
        let db = connect(&format!("sqlite://{}", path.display())).await.unwrap();
        assert!(path.exists());
        db.close().await.unwrap();
        // And an existing file opens the same way.
        connect(&format!("sqlite://{}", path.display())).await.unwrap();
    }
}
