//! The device path at scale: epochs that tell every instance when cached state went stale.
//!
//! `cache_epochs` holds one counter per kind of change. Triggers raise them in the same
//! transaction as the change itself, whichever code path (or hand-written SQL) made it, so a
//! cache can never miss one:
//! - `plan`: anything a device's assignment is decided from (rollouts, cohorts and their
//!   members, releases, products, a device's tags). A device row remembers in `plan_epoch` the
//!   epoch its stored decision was made at; an unchanged report is answered without deciding
//!   again only while the two are equal (checked inside the report's conditional update).
//! - `device_auth`: a device's token, key or status changed (re-enrollment, decommissioning):
//!   other instances drop their cached device tokens.
//! - `repo`: new image or director repository metadata (other instances drop cached metadata).

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum CacheEpochs {
    Table,
    Name,
    Epoch,
}

#[derive(DeriveIden)]
enum Devices {
    Table,
    PlanEpoch,
}

/// Tables whose every change may change a device's assignment.
const PLAN_TABLES: [&str; 5] = ["rollouts", "cohorts", "cohort_members", "releases", "products"];

fn sqlite_bump(name: &str, trigger: &str, when: &str) -> String {
    format!(
        "CREATE TRIGGER {trigger} {when} BEGIN UPDATE cache_epochs SET epoch = epoch + 1 WHERE name = '{name}'; END"
    )
}

fn sqlite_triggers() -> Vec<String> {
    let mut out = Vec::new();
    for table in PLAN_TABLES {
        for event in ["INSERT", "UPDATE", "DELETE"] {
            let trigger = format!("plan_epoch_{table}_{}", event.to_ascii_lowercase());
            out.push(sqlite_bump("plan", &trigger, &format!("AFTER {event} ON {table}")));
        }
    }
    out.push(sqlite_bump("plan", "plan_epoch_device_tags", "AFTER UPDATE OF tags ON devices"));
    out.push(sqlite_bump(
        "device_auth",
        "device_auth_epoch_update",
        "AFTER UPDATE OF token_hash, public_key, status ON devices",
    ));
    out.push(sqlite_bump("device_auth", "device_auth_epoch_delete", "AFTER DELETE ON devices"));
    out.push(sqlite_bump("repo", "repo_epoch_metadata", "AFTER INSERT ON metadata"));
    out
}

fn postgres_triggers() -> Vec<String> {
    let mut out = Vec::new();
    for name in ["plan", "device_auth", "repo"] {
        out.push(format!(
            "CREATE OR REPLACE FUNCTION patchgate_bump_{name}_epoch() RETURNS trigger AS $$ \
             BEGIN UPDATE cache_epochs SET epoch = epoch + 1 WHERE name = '{name}'; RETURN NULL; END; \
             $$ LANGUAGE plpgsql"
        ));
    }
    let statement = |trigger: &str, when: &str, name: &str| {
        format!("CREATE TRIGGER {trigger} {when} FOR EACH STATEMENT EXECUTE FUNCTION patchgate_bump_{name}_epoch()")
    };
    for table in PLAN_TABLES {
        out.push(statement(
            &format!("plan_epoch_{table}"),
            &format!("AFTER INSERT OR UPDATE OR DELETE ON {table}"),
            "plan",
        ));
    }
    out.push(statement("plan_epoch_device_tags", "AFTER UPDATE OF tags ON devices", "plan"));
    out.push(statement(
        "device_auth_epoch",
        "AFTER UPDATE OF token_hash, public_key, status OR DELETE ON devices",
        "device_auth",
    ));
    out.push(statement("repo_epoch_metadata", "AFTER INSERT ON metadata", "repo"));
    out
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(CacheEpochs::Table)
                    .col(ColumnDef::new(CacheEpochs::Name).string().not_null().primary_key())
                    .col(ColumnDef::new(CacheEpochs::Epoch).big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        let seed = Query::insert()
            .into_table(CacheEpochs::Table)
            .columns([CacheEpochs::Name, CacheEpochs::Epoch])
            .values_panic(["plan".into(), 1i64.into()])
            .values_panic(["device_auth".into(), 1i64.into()])
            .values_panic(["repo".into(), 1i64.into()])
            .to_owned();
        manager.exec_stmt(seed).await?;
        // 0 is never a current epoch: every device decides afresh at its first report.
        manager
            .alter_table(
                Table::alter()
                    .table(Devices::Table)
                    .add_column(ColumnDef::new(Devices::PlanEpoch).big_integer().not_null().default(0))
                    .to_owned(),
            )
            .await?;
        let db = manager.get_connection();
        let triggers = match manager.get_database_backend() {
            DbBackend::Postgres => postgres_triggers(),
            _ => sqlite_triggers(),
        };
        for sql in triggers {
            db.execute_unprepared(&sql).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        match manager.get_database_backend() {
            DbBackend::Postgres => {
                for table in PLAN_TABLES {
                    db.execute_unprepared(&format!("DROP TRIGGER IF EXISTS plan_epoch_{table} ON {table}")).await?;
                }
                for (trigger, table) in [
                    ("plan_epoch_device_tags", "devices"),
                    ("device_auth_epoch", "devices"),
                    ("repo_epoch_metadata", "metadata"),
                ] {
                    db.execute_unprepared(&format!("DROP TRIGGER IF EXISTS {trigger} ON {table}")).await?;
                }
                for name in ["plan", "device_auth", "repo"] {
                    db.execute_unprepared(&format!("DROP FUNCTION IF EXISTS patchgate_bump_{name}_epoch()")).await?;
                }
            }
            _ => {
                for sql in sqlite_triggers() {
                    if let Some(name) = sql.split_whitespace().nth(2) {
                        db.execute_unprepared(&format!("DROP TRIGGER IF EXISTS {name}")).await?;
                    }
                }
            }
        }
        manager.alter_table(Table::alter().table(Devices::Table).drop_column(Devices::PlanEpoch).to_owned()).await?;
        manager.drop_table(Table::drop().table(CacheEpochs::Table).to_owned()).await
    }
}
