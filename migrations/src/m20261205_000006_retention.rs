//! Retention: a release can leave the product's role without being withdrawn.
//!
//! - `releases.delisted_at`: set when the product's retention policy took the release out of the
//!   role (its file stays stored; publishing the same file again lists it again). A yank is
//!   different: it withdraws the release for good.
//! - `releases.listed_in_role`: the version of the product's role that last put the release in
//!   (its publish, or a re-listing); "the newest N" counts by it, then by id. Existing rows take
//!   0, so they rank by publish order (id) below anything listed from now on.
//! - `products.retain_newest`: how many of the most recently listed releases always stay listed.
//! - Indexes that answer "does a device run it, is a device assigned it, may a rollback need it"
//!   for one release without scanning the fleet.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// What existing and new products keep listed unless told otherwise.
const DEFAULT_RETAIN_NEWEST: i64 = 20;

#[derive(DeriveIden)]
enum Releases {
    Table,
    DelistedAt,
    ListedInRole,
}

#[derive(DeriveIden)]
enum Products {
    Table,
    RetainNewest,
}

#[derive(DeriveIden)]
enum Devices {
    Table,
    InstalledReleaseId,
    AssignedReleaseId,
}

#[derive(DeriveIden)]
enum Assignments {
    Table,
    FromReleaseId,
}

fn index<T: IntoIden + 'static, C: IntoIden>(name: &str, table: T, col: C) -> IndexCreateStatement {
    Index::create().name(name).table(table).col(col).to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Releases::Table)
                    .add_column(ColumnDef::new(Releases::DelistedAt).big_integer().null())
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Releases::Table)
                    .add_column(ColumnDef::new(Releases::ListedInRole).big_integer().not_null().default(0))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Products::Table)
                    .add_column(
                        ColumnDef::new(Products::RetainNewest).big_integer().not_null().default(DEFAULT_RETAIN_NEWEST),
                    )
                    .to_owned(),
            )
            .await?;
        manager.create_index(index("devices_installed_release", Devices::Table, Devices::InstalledReleaseId)).await?;
        manager.create_index(index("devices_assigned_release", Devices::Table, Devices::AssignedReleaseId)).await?;
        manager.create_index(index("assignments_from_release", Assignments::Table, Assignments::FromReleaseId)).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for (name, table) in [
            ("assignments_from_release", Assignments::Table.into_iden()),
            ("devices_assigned_release", Devices::Table.into_iden()),
            ("devices_installed_release", Devices::Table.into_iden()),
        ] {
            manager.drop_index(Index::drop().name(name).table(table).to_owned()).await?;
        }
        manager
            .alter_table(Table::alter().table(Products::Table).drop_column(Products::RetainNewest).to_owned())
            .await?;
        manager
            .alter_table(Table::alter().table(Releases::Table).drop_column(Releases::ListedInRole).to_owned())
            .await?;
        manager.alter_table(Table::alter().table(Releases::Table).drop_column(Releases::DelistedAt).to_owned()).await
    }
}
