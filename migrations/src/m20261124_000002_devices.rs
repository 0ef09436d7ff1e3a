//! Devices and rollouts: enrollment tokens, enrolled devices and their report history, each
//! device's director metadata, cohorts, rollouts and per-device assignments.

use sea_orm_migration::prelude::*;

use crate::id_col;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Products {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum Releases {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum EnrollmentTokens {
    Table,
    Id,
    Name,
    ProductId,
    Tags,
    TokenPrefix,
    TokenHash,
    MaxUses,
    Uses,
    ExpiresAt,
    CreatedBy,
    CreatedAt,
    RevokedAt,
}

#[derive(DeriveIden)]
enum Devices {
    Table,
    Id,
    DeviceId,
    ProductId,
    HardwareId,
    PublicKey,
    Keyid,
    Tags,
    TokenPrefix,
    TokenHash,
    Status,
    RekeyAllowed,
    EnrollmentTokenId,
    EnrolledAt,
    EnrollTime,
    DecommissionedAt,
    LastCounter,
    LastSeenAt,
    InstalledName,
    InstalledVersion,
    InstalledSha256,
    InstalledReleaseId,
    AttemptName,
    AttemptState,
    AttemptDetail,
    AssignedReleaseId,
    AssignedRolloutId,
    AssignedAction,
    DirectorTargetsVersion,
    DirectorRefreshAt,
}

#[derive(DeriveIden)]
enum DeviceReports {
    Table,
    Id,
    DeviceRowId,
    Counter,
    ReceivedAt,
    ReportedTime,
    InstalledName,
    InstalledVersion,
    InstalledSha256,
    AttemptName,
    AttemptState,
    AttemptDetail,
    DirectorTargetsVersion,
}

#[derive(DeriveIden)]
enum DeviceMetadata {
    Table,
    Id,
    DeviceRowId,
    Role,
    Version,
    ExpiresAt,
    Body,
    Sha256,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Cohorts {
    Table,
    Id,
    ProductId,
    Name,
    SelectorTags,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum CohortMembers {
    Table,
    CohortId,
    DeviceId,
}

#[derive(DeriveIden)]
enum Rollouts {
    Table,
    Id,
    ProductId,
    ReleaseId,
    State,
    Stages,
    MaxFailureRateBp,
    MinReports,
    StallSeconds,
    AutoAdvance,
    CurrentStage,
    StageStartedAt,
    GateSince,
    Reason,
    CreatedBy,
    CreatedAt,
    UpdatedAt,
    StartedAt,
}

#[derive(DeriveIden)]
enum Assignments {
    Table,
    Id,
    RolloutId,
    DeviceRowId,
    Stage,
    ReleaseId,
    FromReleaseId,
    State,
    Detail,
    AssignedAt,
    UpdatedAt,
    FinalAt,
}

fn index(name: &str, table: impl IntoIden, cols: Vec<DynIden>, unique: bool) -> IndexCreateStatement {
    let mut stmt = Index::create();
    stmt.name(name).table(table);
    for c in cols {
        stmt.col(c);
    }
    if unique {
        stmt.unique();
    }
    stmt.to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(EnrollmentTokens::Table)
                    .col(id_col(EnrollmentTokens::Id))
                    .col(ColumnDef::new(EnrollmentTokens::Name).string().not_null())
                    .col(ColumnDef::new(EnrollmentTokens::ProductId).big_integer().not_null())
                    .col(ColumnDef::new(EnrollmentTokens::Tags).text().not_null())
                    .col(ColumnDef::new(EnrollmentTokens::TokenPrefix).string().not_null())
                    .col(ColumnDef::new(EnrollmentTokens::TokenHash).string().not_null().unique_key())
                    .col(ColumnDef::new(EnrollmentTokens::MaxUses).big_integer().not_null())
                    .col(ColumnDef::new(EnrollmentTokens::Uses).big_integer().not_null())
                    .col(ColumnDef::new(EnrollmentTokens::ExpiresAt).big_integer().not_null())
                    .col(ColumnDef::new(EnrollmentTokens::CreatedBy).string().not_null())
                    .col(ColumnDef::new(EnrollmentTokens::CreatedAt).big_integer().not_null())
                    .col(ColumnDef::new(EnrollmentTokens::RevokedAt).big_integer().null())
                    .foreign_key(
                        ForeignKey::create()
                            .from(EnrollmentTokens::Table, EnrollmentTokens::ProductId)
                            .to(Products::Table, Products::Id),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Devices::Table)
                    .col(id_col(Devices::Id))
                    .col(ColumnDef::new(Devices::DeviceId).string().not_null().unique_key())
                    .col(ColumnDef::new(Devices::ProductId).big_integer().not_null())
                    .col(ColumnDef::new(Devices::HardwareId).string().not_null())
                    .col(ColumnDef::new(Devices::PublicKey).string().not_null())
                    .col(ColumnDef::new(Devices::Keyid).string().not_null())
                    .col(ColumnDef::new(Devices::Tags).text().not_null())
                    .col(ColumnDef::new(Devices::TokenPrefix).string().not_null())
                    .col(ColumnDef::new(Devices::TokenHash).string().not_null().unique_key())
                    .col(ColumnDef::new(Devices::Status).string().not_null())
                    .col(ColumnDef::new(Devices::RekeyAllowed).boolean().not_null())
                    .col(ColumnDef::new(Devices::EnrollmentTokenId).big_integer().null())
                    .col(ColumnDef::new(Devices::EnrolledAt).big_integer().not_null())
                    .col(ColumnDef::new(Devices::EnrollTime).string().not_null())
                    .col(ColumnDef::new(Devices::DecommissionedAt).big_integer().null())
                    .col(ColumnDef::new(Devices::LastCounter).big_integer().null())
                    .col(ColumnDef::new(Devices::LastSeenAt).big_integer().null())
                    .col(ColumnDef::new(Devices::InstalledName).string().null())
                    .col(ColumnDef::new(Devices::InstalledVersion).string().null())
                    .col(ColumnDef::new(Devices::InstalledSha256).string().null())
                    .col(ColumnDef::new(Devices::InstalledReleaseId).big_integer().null())
                    .col(ColumnDef::new(Devices::AttemptName).string().null())
                    .col(ColumnDef::new(Devices::AttemptState).string().null())
                    .col(ColumnDef::new(Devices::AttemptDetail).text().null())
                    .col(ColumnDef::new(Devices::AssignedReleaseId).big_integer().null())
                    .col(ColumnDef::new(Devices::AssignedRolloutId).string().null())
                    .col(ColumnDef::new(Devices::AssignedAction).string().null())
                    .col(ColumnDef::new(Devices::DirectorTargetsVersion).big_integer().not_null())
                    .col(ColumnDef::new(Devices::DirectorRefreshAt).big_integer().not_null().default(0))
                    .foreign_key(
                        ForeignKey::create().from(Devices::Table, Devices::ProductId).to(Products::Table, Products::Id),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index("devices_product", Devices::Table, vec![Devices::ProductId.into_iden()], false))
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(DeviceReports::Table)
                    .col(id_col(DeviceReports::Id))
                    .col(ColumnDef::new(DeviceReports::DeviceRowId).big_integer().not_null())
                    .col(ColumnDef::new(DeviceReports::Counter).big_integer().not_null())
                    .col(ColumnDef::new(DeviceReports::ReceivedAt).big_integer().not_null())
                    .col(ColumnDef::new(DeviceReports::ReportedTime).string().not_null())
                    .col(ColumnDef::new(DeviceReports::InstalledName).string().null())
                    .col(ColumnDef::new(DeviceReports::InstalledVersion).string().null())
                    .col(ColumnDef::new(DeviceReports::InstalledSha256).string().null())
                    .col(ColumnDef::new(DeviceReports::AttemptName).string().null())
                    .col(ColumnDef::new(DeviceReports::AttemptState).string().null())
                    .col(ColumnDef::new(DeviceReports::AttemptDetail).text().null())
                    .col(ColumnDef::new(DeviceReports::DirectorTargetsVersion).big_integer().not_null())
                    .foreign_key(
                        ForeignKey::create()
                            .from(DeviceReports::Table, DeviceReports::DeviceRowId)
                            .to(Devices::Table, Devices::Id),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index(
                "device_reports_device",
                DeviceReports::Table,
                vec![DeviceReports::DeviceRowId.into_iden(), DeviceReports::Id.into_iden()],
                false,
            ))
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(DeviceMetadata::Table)
                    .col(id_col(DeviceMetadata::Id))
                    .col(ColumnDef::new(DeviceMetadata::DeviceRowId).big_integer().not_null())
                    .col(ColumnDef::new(DeviceMetadata::Role).string().not_null())
                    .col(ColumnDef::new(DeviceMetadata::Version).big_integer().not_null())
                    .col(ColumnDef::new(DeviceMetadata::ExpiresAt).big_integer().not_null())
                    .col(ColumnDef::new(DeviceMetadata::Body).blob().not_null())
                    .col(ColumnDef::new(DeviceMetadata::Sha256).string().not_null())
                    .col(ColumnDef::new(DeviceMetadata::CreatedAt).big_integer().not_null())
                    .foreign_key(
                        ForeignKey::create()
                            .from(DeviceMetadata::Table, DeviceMetadata::DeviceRowId)
                            .to(Devices::Table, Devices::Id),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index(
                "device_metadata_device_role_version",
                DeviceMetadata::Table,
                vec![
                    DeviceMetadata::DeviceRowId.into_iden(),
                    DeviceMetadata::Role.into_iden(),
                    DeviceMetadata::Version.into_iden(),
                ],
                true,
            ))
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Cohorts::Table)
                    .col(id_col(Cohorts::Id))
                    .col(ColumnDef::new(Cohorts::ProductId).big_integer().not_null())
                    .col(ColumnDef::new(Cohorts::Name).string().not_null())
                    .col(ColumnDef::new(Cohorts::SelectorTags).text().null())
                    .col(ColumnDef::new(Cohorts::CreatedAt).big_integer().not_null())
                    .col(ColumnDef::new(Cohorts::UpdatedAt).big_integer().not_null())
                    .foreign_key(
                        ForeignKey::create().from(Cohorts::Table, Cohorts::ProductId).to(Products::Table, Products::Id),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index(
                "cohorts_product_name",
                Cohorts::Table,
                vec![Cohorts::ProductId.into_iden(), Cohorts::Name.into_iden()],
                true,
            ))
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(CohortMembers::Table)
                    .col(ColumnDef::new(CohortMembers::CohortId).big_integer().not_null())
                    .col(ColumnDef::new(CohortMembers::DeviceId).string().not_null())
                    .primary_key(Index::create().col(CohortMembers::CohortId).col(CohortMembers::DeviceId))
                    .foreign_key(
                        ForeignKey::create()
                            .from(CohortMembers::Table, CohortMembers::CohortId)
                            .to(Cohorts::Table, Cohorts::Id),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index(
                "cohort_members_device",
                CohortMembers::Table,
                vec![CohortMembers::DeviceId.into_iden()],
                false,
            ))
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Rollouts::Table)
                    .col(ColumnDef::new(Rollouts::Id).string().not_null().primary_key())
                    .col(ColumnDef::new(Rollouts::ProductId).big_integer().not_null())
                    .col(ColumnDef::new(Rollouts::ReleaseId).big_integer().not_null())
                    .col(ColumnDef::new(Rollouts::State).string().not_null())
                    .col(ColumnDef::new(Rollouts::Stages).text().not_null())
                    .col(ColumnDef::new(Rollouts::MaxFailureRateBp).integer().not_null())
                    .col(ColumnDef::new(Rollouts::MinReports).big_integer().not_null())
                    .col(ColumnDef::new(Rollouts::StallSeconds).big_integer().not_null())
                    .col(ColumnDef::new(Rollouts::AutoAdvance).boolean().not_null())
                    .col(ColumnDef::new(Rollouts::CurrentStage).integer().not_null())
                    .col(ColumnDef::new(Rollouts::StageStartedAt).big_integer().not_null())
                    .col(ColumnDef::new(Rollouts::GateSince).big_integer().not_null())
                    .col(ColumnDef::new(Rollouts::Reason).text().null())
                    .col(ColumnDef::new(Rollouts::CreatedBy).string().not_null())
                    .col(ColumnDef::new(Rollouts::CreatedAt).big_integer().not_null())
                    .col(ColumnDef::new(Rollouts::UpdatedAt).big_integer().not_null())
                    .col(ColumnDef::new(Rollouts::StartedAt).big_integer().null())
                    .foreign_key(
                        ForeignKey::create()
                            .from(Rollouts::Table, Rollouts::ProductId)
                            .to(Products::Table, Products::Id),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(Rollouts::Table, Rollouts::ReleaseId)
                            .to(Releases::Table, Releases::Id),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index(
                "rollouts_product_state",
                Rollouts::Table,
                vec![Rollouts::ProductId.into_iden(), Rollouts::State.into_iden()],
                false,
            ))
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Assignments::Table)
                    .col(id_col(Assignments::Id))
                    .col(ColumnDef::new(Assignments::RolloutId).string().not_null())
                    .col(ColumnDef::new(Assignments::DeviceRowId).big_integer().not_null())
                    .col(ColumnDef::new(Assignments::Stage).integer().not_null())
                    .col(ColumnDef::new(Assignments::ReleaseId).big_integer().not_null())
                    .col(ColumnDef::new(Assignments::FromReleaseId).big_integer().null())
                    .col(ColumnDef::new(Assignments::State).string().not_null())
                    .col(ColumnDef::new(Assignments::Detail).text().null())
                    .col(ColumnDef::new(Assignments::AssignedAt).big_integer().not_null())
                    .col(ColumnDef::new(Assignments::UpdatedAt).big_integer().not_null())
                    .col(ColumnDef::new(Assignments::FinalAt).big_integer().null())
                    .foreign_key(
                        ForeignKey::create()
                            .from(Assignments::Table, Assignments::RolloutId)
                            .to(Rollouts::Table, Rollouts::Id),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(Assignments::Table, Assignments::DeviceRowId)
                            .to(Devices::Table, Devices::Id),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index(
                "assignments_rollout_device",
                Assignments::Table,
                vec![Assignments::RolloutId.into_iden(), Assignments::DeviceRowId.into_iden()],
                true,
            ))
            .await?;
        manager
            .create_index(index(
                "assignments_rollout_stage_state",
                Assignments::Table,
                vec![
                    Assignments::RolloutId.into_iden(),
                    Assignments::Stage.into_iden(),
                    Assignments::State.into_iden(),
                ],
                false,
            ))
            .await?;
        Ok(())
    }
}
