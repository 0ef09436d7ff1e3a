//! Devices that speak hawkBit's Direct Device Integration API (SWUpdate, rauc-hawkbit-updater).
//!
//! - `devices.protocol`: `tuf` (the agent: signed reports, verified metadata) or `ddi`.
//! - `devices.attributes`: the JSON object of string attributes a DDI device sent with
//!   `configData` (`NULL`: never sent, so the poll asks for it).
//! - `devices.ddi_closed_action`, `devices.ddi_closed_at`: the newest DDI action (an assignment
//!   id) the device closed (success, failure or an acknowledged cancellation), and when, so that
//!   it is not offered again unless the assignment is renewed after that.
//! - `release_digests`: SHA-1 and MD5 of a release's image, which DDI artifacts carry beside
//!   SHA-256 (SWUpdate checks SHA-1), computed the first time a DDI device needs them. A table
//!   of its own: a change to `releases` raises the plan epoch, and every device would decide
//!   again.
//! - `ddi_gateway_tokens`: at most one per product, for a gateway that polls for the product's
//!   DDI devices (`Authorization: GatewayToken …`); none unless an admin creates one.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Devices {
    Table,
    Protocol,
    Attributes,
    DdiClosedAction,
    DdiClosedAt,
}

#[derive(DeriveIden)]
enum DdiGatewayTokens {
    Table,
    ProductId,
    TokenPrefix,
    TokenHash,
    CreatedBy,
    CreatedAt,
}

#[derive(DeriveIden)]
enum ReleaseDigests {
    Table,
    ReleaseId,
    Sha1,
    Md5,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite alters one column at a time.
        let device_columns = [
            ColumnDef::new(Devices::Protocol).string().not_null().default("tuf").to_owned(),
            ColumnDef::new(Devices::Attributes).text().null().to_owned(),
            ColumnDef::new(Devices::DdiClosedAction).big_integer().null().to_owned(),
            ColumnDef::new(Devices::DdiClosedAt).big_integer().null().to_owned(),
        ];
        for mut column in device_columns {
            manager.alter_table(Table::alter().table(Devices::Table).add_column(&mut column).to_owned()).await?;
        }
        manager
            .create_table(
                Table::create()
                    .table(ReleaseDigests::Table)
                    .col(ColumnDef::new(ReleaseDigests::ReleaseId).big_integer().not_null().primary_key())
                    .col(ColumnDef::new(ReleaseDigests::Sha1).string().not_null())
                    .col(ColumnDef::new(ReleaseDigests::Md5).string().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(DdiGatewayTokens::Table)
                    .col(ColumnDef::new(DdiGatewayTokens::ProductId).big_integer().not_null().primary_key())
                    .col(ColumnDef::new(DdiGatewayTokens::TokenPrefix).string().not_null())
                    .col(ColumnDef::new(DdiGatewayTokens::TokenHash).string().not_null().unique_key())
                    .col(ColumnDef::new(DdiGatewayTokens::CreatedBy).string().not_null())
                    .col(ColumnDef::new(DdiGatewayTokens::CreatedAt).big_integer().not_null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [Devices::Protocol, Devices::Attributes, Devices::DdiClosedAction, Devices::DdiClosedAt] {
            manager.alter_table(Table::alter().table(Devices::Table).drop_column(column).to_owned()).await?;
        }
        manager.drop_table(Table::drop().table(DdiGatewayTokens::Table).to_owned()).await?;
        manager.drop_table(Table::drop().table(ReleaseDigests::Table).to_owned()).await
    }
}
