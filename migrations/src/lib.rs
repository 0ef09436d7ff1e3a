//! Database schema for patchgate, as sea-orm migrations run by the server at start-up.
//!
//! Owns table layout only; it must not import the server crate. Every migration works on both
//! SQLite and PostgreSQL (tested in CI on both). Times are stored as Unix seconds (`BIGINT`) so
//! that both backends compare and sort them the same way.

pub use sea_orm_migration::prelude::*;

mod m20261124_000001_init;
mod m20261124_000002_devices;
mod m20261124_000003_users;
mod m20261124_000004_split_trust;
mod m20261202_000005_fleet_scale;
mod m20261205_000006_retention;
mod m20261206_000007_deltas;
mod m20261207_000008_delta_policy;
mod m20261207_000009_ddi;
mod m20261207_000010_hot_path_keys;

/// The surrogate key every table has: a 64-bit auto-increment `id` (same on SQLite and PostgreSQL).
pub(crate) fn id_col<T: IntoIden>(col: T) -> ColumnDef {
    ColumnDef::new(col).big_integer().not_null().auto_increment().primary_key().to_owned()
}

/// The migrator the server runs at start-up.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261124_000001_init::Migration),
            Box::new(m20261124_000002_devices::Migration),
            Box::new(m20261124_000003_users::Migration),
            Box::new(m20261124_000004_split_trust::Migration),
            Box::new(m20261202_000005_fleet_scale::Migration),
            Box::new(m20261205_000006_retention::Migration),
            Box::new(m20261206_000007_deltas::Migration),
            Box::new(m20261207_000008_delta_policy::Migration),
            Box::new(m20261207_000009_ddi::Migration),
            Box::new(m20261207_000010_hot_path_keys::Migration),
        ]
    }
}
