//! What the delta job needs to remember, and what each rollout's downloads cost.
//!
//! - `delta_refusals`: a (from, to) pair of releases whose delta was computed and found not
//!   worth publishing (larger than the share of the compressed image a delta may take). Deltas
//!   are deterministic, so the pair is never computed again; both the job and the API answer
//!   from this row.
//! - `rollout_traffic`: bytes of firmware served to devices assigned by a rollout, per kind of
//!   target (`image` or `delta`), attributed when a device downloads with its token. Summed by
//!   every instance with `bytes = bytes + n`, so no instance owns the figure.

use sea_orm_migration::prelude::*;

use crate::id_col;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum DeltaRefusals {
    Table,
    Id,
    ProductId,
    FromReleaseId,
    ToReleaseId,
    Reason,
    DeltaLength,
    FullLength,
    RefusedAt,
}

#[derive(DeriveIden)]
enum RolloutTraffic {
    Table,
    RolloutId,
    Kind,
    Bytes,
    Requests,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(DeltaRefusals::Table)
                    .col(id_col(DeltaRefusals::Id))
                    .col(ColumnDef::new(DeltaRefusals::ProductId).big_integer().not_null())
                    .col(ColumnDef::new(DeltaRefusals::FromReleaseId).big_integer().not_null())
                    .col(ColumnDef::new(DeltaRefusals::ToReleaseId).big_integer().not_null())
                    .col(ColumnDef::new(DeltaRefusals::Reason).string().not_null())
                    .col(ColumnDef::new(DeltaRefusals::DeltaLength).big_integer().not_null())
                    .col(ColumnDef::new(DeltaRefusals::FullLength).big_integer().not_null())
                    .col(ColumnDef::new(DeltaRefusals::RefusedAt).big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("delta_refusals_pair")
                    .table(DeltaRefusals::Table)
                    .col(DeltaRefusals::FromReleaseId)
                    .col(DeltaRefusals::ToReleaseId)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(RolloutTraffic::Table)
                    .col(ColumnDef::new(RolloutTraffic::RolloutId).string().not_null())
                    .col(ColumnDef::new(RolloutTraffic::Kind).string().not_null())
                    .col(ColumnDef::new(RolloutTraffic::Bytes).big_integer().not_null())
                    .col(ColumnDef::new(RolloutTraffic::Requests).big_integer().not_null())
                    .primary_key(Index::create().col(RolloutTraffic::RolloutId).col(RolloutTraffic::Kind))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(RolloutTraffic::Table).to_owned()).await?;
        manager.drop_table(Table::drop().table(DeltaRefusals::Table).to_owned()).await
    }
}
