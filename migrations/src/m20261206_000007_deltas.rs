//! Delta targets: patches from one release's image to another's, listed in the product's role
//! beside the images they produce.
//!
//! - `release_deltas`: one row per (from, to) pair of releases of a product; its file is a
//!   content-addressed blob like a release's, `custom` the signed `DeltaCustom` JSON. The role
//!   lists a delta while both its releases are listed; deleting a release row never happens, so
//!   no foreign key action is needed.

use sea_orm_migration::prelude::*;

use crate::id_col;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum ReleaseDeltas {
    Table,
    Id,
    ProductId,
    FromReleaseId,
    ToReleaseId,
    TargetName,
    Algorithm,
    Length,
    Sha256,
    Sha512,
    Custom,
    CreatedBy,
    CreatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(ReleaseDeltas::Table)
                    .col(id_col(ReleaseDeltas::Id))
                    .col(ColumnDef::new(ReleaseDeltas::ProductId).big_integer().not_null())
                    .col(ColumnDef::new(ReleaseDeltas::FromReleaseId).big_integer().not_null())
                    .col(ColumnDef::new(ReleaseDeltas::ToReleaseId).big_integer().not_null())
                    .col(ColumnDef::new(ReleaseDeltas::TargetName).string().not_null().unique_key())
                    .col(ColumnDef::new(ReleaseDeltas::Algorithm).string().not_null())
                    .col(ColumnDef::new(ReleaseDeltas::Length).big_integer().not_null())
                    .col(ColumnDef::new(ReleaseDeltas::Sha256).string().not_null())
                    .col(ColumnDef::new(ReleaseDeltas::Sha512).string().not_null())
                    .col(ColumnDef::new(ReleaseDeltas::Custom).text().not_null())
                    .col(ColumnDef::new(ReleaseDeltas::CreatedBy).string().not_null())
                    .col(ColumnDef::new(ReleaseDeltas::CreatedAt).big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("release_deltas_pair")
                    .table(ReleaseDeltas::Table)
                    .col(ReleaseDeltas::FromReleaseId)
                    .col(ReleaseDeltas::ToReleaseId)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("release_deltas_product")
                    .table(ReleaseDeltas::Table)
                    .col(ReleaseDeltas::ProductId)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("release_deltas_sha256")
                    .table(ReleaseDeltas::Table)
                    .col(ReleaseDeltas::Sha256)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(ReleaseDeltas::Table).to_owned()).await
    }
}
