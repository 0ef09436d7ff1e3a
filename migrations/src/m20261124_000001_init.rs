//! The first schema: products, releases, signed metadata versions, API tokens, audit log, job
//! leases and the signing lock row.

use sea_orm_migration::prelude::*;

use crate::id_col;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Products {
    Table,
    Id,
    Name,
    HardwareIds,
    SigningMode,
    PublicKey,
    Keyid,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Releases {
    Table,
    Id,
    ProductId,
    Version,
    TargetName,
    Filename,
    Length,
    Sha256,
    Sha512,
    Notes,
    Custom,
    PublishedBy,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Metadata {
    Table,
    Id,
    Repo,
    Role,
    Version,
    ExpiresAt,
    Body,
    Sha256,
    CreatedAt,
}

#[derive(DeriveIden)]
enum ApiTokens {
    Table,
    Id,
    Name,
    Role,
    Product,
    TokenPrefix,
    TokenHash,
    CreatedAt,
    RevokedAt,
}

#[derive(DeriveIden)]
enum AuditLog {
    Table,
    Id,
    At,
    Actor,
    Action,
    Object,
    Before,
    After,
}

#[derive(DeriveIden)]
enum JobLeases {
    Table,
    Name,
    Holder,
    ExpiresAt,
}

#[derive(DeriveIden)]
enum SigningLock {
    Table,
    Id,
    Counter,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Products::Table)
                    .col(id_col(Products::Id))
                    .col(ColumnDef::new(Products::Name).string().not_null().unique_key())
                    .col(ColumnDef::new(Products::HardwareIds).text().not_null())
                    .col(ColumnDef::new(Products::SigningMode).string().not_null())
                    .col(ColumnDef::new(Products::PublicKey).string().not_null())
                    .col(ColumnDef::new(Products::Keyid).string().not_null())
                    .col(ColumnDef::new(Products::CreatedAt).big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Releases::Table)
                    .col(id_col(Releases::Id))
                    .col(ColumnDef::new(Releases::ProductId).big_integer().not_null())
                    .col(ColumnDef::new(Releases::Version).string().not_null())
                    .col(ColumnDef::new(Releases::TargetName).string().not_null().unique_key())
                    .col(ColumnDef::new(Releases::Filename).string().not_null())
                    .col(ColumnDef::new(Releases::Length).big_integer().not_null())
                    .col(ColumnDef::new(Releases::Sha256).string().not_null())
                    .col(ColumnDef::new(Releases::Sha512).string().not_null())
                    .col(ColumnDef::new(Releases::Notes).text().null())
                    .col(ColumnDef::new(Releases::Custom).text().not_null())
                    .col(ColumnDef::new(Releases::PublishedBy).string().not_null())
                    .col(ColumnDef::new(Releases::CreatedAt).big_integer().not_null())
                    .foreign_key(
                        ForeignKey::create()
                            .from(Releases::Table, Releases::ProductId)
                            .to(Products::Table, Products::Id),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("releases_product_version")
                    .table(Releases::Table)
                    .col(Releases::ProductId)
                    .col(Releases::Version)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Metadata::Table)
                    .col(id_col(Metadata::Id))
                    .col(ColumnDef::new(Metadata::Repo).string().not_null())
                    .col(ColumnDef::new(Metadata::Role).string().not_null())
                    .col(ColumnDef::new(Metadata::Version).big_integer().not_null())
                    .col(ColumnDef::new(Metadata::ExpiresAt).big_integer().not_null())
                    .col(ColumnDef::new(Metadata::Body).blob().not_null())
                    .col(ColumnDef::new(Metadata::Sha256).string().not_null())
                    .col(ColumnDef::new(Metadata::CreatedAt).big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("metadata_repo_role_version")
                    .table(Metadata::Table)
                    .col(Metadata::Repo)
                    .col(Metadata::Role)
                    .col(Metadata::Version)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(ApiTokens::Table)
                    .col(id_col(ApiTokens::Id))
                    .col(ColumnDef::new(ApiTokens::Name).string().not_null())
                    .col(ColumnDef::new(ApiTokens::Role).string().not_null())
                    .col(ColumnDef::new(ApiTokens::Product).string().null())
                    .col(ColumnDef::new(ApiTokens::TokenPrefix).string().not_null())
                    .col(ColumnDef::new(ApiTokens::TokenHash).string().not_null().unique_key())
                    .col(ColumnDef::new(ApiTokens::CreatedAt).big_integer().not_null())
                    .col(ColumnDef::new(ApiTokens::RevokedAt).big_integer().null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(AuditLog::Table)
                    .col(id_col(AuditLog::Id))
                    .col(ColumnDef::new(AuditLog::At).big_integer().not_null())
                    .col(ColumnDef::new(AuditLog::Actor).string().not_null())
                    .col(ColumnDef::new(AuditLog::Action).string().not_null())
                    .col(ColumnDef::new(AuditLog::Object).string().not_null())
                    .col(ColumnDef::new(AuditLog::Before).text().null())
                    .col(ColumnDef::new(AuditLog::After).text().null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(Index::create().name("audit_log_at").table(AuditLog::Table).col(AuditLog::At).to_owned())
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(JobLeases::Table)
                    .col(ColumnDef::new(JobLeases::Name).string().not_null().primary_key())
                    .col(ColumnDef::new(JobLeases::Holder).string().not_null())
                    .col(ColumnDef::new(JobLeases::ExpiresAt).big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(SigningLock::Table)
                    .col(ColumnDef::new(SigningLock::Id).big_integer().not_null().primary_key())
                    .col(ColumnDef::new(SigningLock::Counter).big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        let seed = Query::insert()
            .into_table(SigningLock::Table)
            .columns([SigningLock::Id, SigningLock::Counter])
            .values_panic([1.into(), 0.into()])
            .to_owned();
        manager.exec_stmt(seed).await?;
        Ok(())
    }
}
