//! Split trust: products wait for their delegation ceremony (`status`, the manufacturer's first
//! role kept until then in `pending_role`), may need a second person's approval per release,
//! and carry their security floor (the highest `rollback_floor` their key has signed); releases
//! can be yanked and approved.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Products {
    Table,
    Status,
    PendingRole,
    RequiresApproval,
    SecurityFloor,
}

#[derive(DeriveIden)]
enum Releases {
    Table,
    YankedAt,
    YankedBy,
    ApprovedBy,
    ApprovedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // SQLite adds one column per ALTER TABLE.
        let product_cols = [
            ColumnDef::new(Products::Status).string().not_null().default("active").to_owned(),
            ColumnDef::new(Products::PendingRole).binary().null().to_owned(),
            ColumnDef::new(Products::RequiresApproval).boolean().not_null().default(false).to_owned(),
            ColumnDef::new(Products::SecurityFloor).string().not_null().default("0.0.0").to_owned(),
        ];
        for mut col in product_cols {
            manager.alter_table(Table::alter().table(Products::Table).add_column(&mut col).to_owned()).await?;
        }
        let release_cols = [
            ColumnDef::new(Releases::YankedAt).big_integer().null().to_owned(),
            ColumnDef::new(Releases::YankedBy).string().null().to_owned(),
            ColumnDef::new(Releases::ApprovedBy).string().null().to_owned(),
            ColumnDef::new(Releases::ApprovedAt).big_integer().null().to_owned(),
        ];
        for mut col in release_cols {
            manager.alter_table(Table::alter().table(Releases::Table).add_column(&mut col).to_owned()).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for col in [Releases::YankedAt, Releases::YankedBy, Releases::ApprovedBy, Releases::ApprovedAt] {
            manager.alter_table(Table::alter().table(Releases::Table).drop_column(col).to_owned()).await?;
        }
        for col in [Products::Status, Products::PendingRole, Products::RequiresApproval, Products::SecurityFloor] {
            manager.alter_table(Table::alter().table(Products::Table).drop_column(col).to_owned()).await?;
        }
        Ok(())
    }
}
