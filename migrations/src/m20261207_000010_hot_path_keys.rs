//! No foreign keys on the rows the device path writes by the thousand, on PostgreSQL.
//!
//! When a stage opens, every device's first report inserts one assignment and three signed
//! director roles. PostgreSQL checks each foreign key of each inserted row with a query of its
//! own that also locks the referenced row (`SELECT … FOR KEY SHARE`): five checks per device,
//! about a tenth of the database's CPU on those reports (the README's Benchmarks section). They
//! guard nothing the code does not already: devices and rollouts are never deleted (a device is
//! decommissioned, a rollout ends), and every one of these rows is inserted in the transaction
//! that has just inserted, read or updated the device, and names a rollout of the plan it read.
//!
//! So this drops the foreign keys of `assignments` (to `devices` and `rollouts`) and of
//! `device_metadata` (to `devices`) on PostgreSQL. SQLite keeps them: its checks are an index
//! lookup in the same process, and dropping a constraint there means rebuilding the table.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Drops every foreign key of the two tables, whatever PostgreSQL named them.
const DROP: &str = "DO $$
DECLARE fk record;
BEGIN
    FOR fk IN SELECT conrelid::regclass AS tbl, conname FROM pg_constraint
              WHERE contype = 'f' AND conrelid IN ('assignments'::regclass, 'device_metadata'::regclass)
    LOOP
        EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I', fk.tbl, fk.conname);
    END LOOP;
END $$";

const RESTORE: &str = "ALTER TABLE assignments ADD FOREIGN KEY (rollout_id) REFERENCES rollouts (id); \
    ALTER TABLE assignments ADD FOREIGN KEY (device_row_id) REFERENCES devices (id); \
    ALTER TABLE device_metadata ADD FOREIGN KEY (device_row_id) REFERENCES devices (id)";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DbBackend::Postgres {
            return Ok(());
        }
        manager.get_connection().execute_unprepared(DROP).await.map(drop)
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DbBackend::Postgres {
            return Ok(());
        }
        manager.get_connection().execute_unprepared(RESTORE).await.map(drop)
    }
}
