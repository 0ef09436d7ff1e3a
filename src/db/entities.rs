//! sea-orm entities, one module per table (layout in `migrations/`).

#![allow(missing_docs)]

pub mod product {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "products")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        #[sea_orm(unique)]
        pub name: String,
        /// JSON array of hardware ids.
        pub hardware_ids: String,
        /// `server` (the server holds the product key) or `manufacturer`.
        pub signing_mode: String,
        /// Hex of the raw ed25519 public key.
        pub public_key: String,
        pub keyid: String,
        pub created_at: i64,
        /// `active`, or `pending_delegation` until a delegation ceremony lists it.
        pub status: String,
        /// A manufacturer's signed first role, kept until the delegation lands.
        pub pending_role: Option<Vec<u8>>,
        /// Releases need a second person's approval before a rollout.
        pub requires_approval: bool,
        /// The highest `rollback_floor` of the releases its role lists.
        pub security_floor: String,
        /// How many of the most recently listed releases the retention policy always keeps
        /// listed (`services::retention`).
        pub retain_newest: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod release {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "releases")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub product_id: i64,
        pub version: String,
        #[sea_orm(unique)]
        pub target_name: String,
        pub filename: String,
        pub length: i64,
        pub sha256: String,
        pub sha512: String,
        pub notes: Option<String>,
        /// The target's `custom`, JSON.
        pub custom: String,
        pub published_by: String,
        pub created_at: i64,
        /// When the product role stopped listing it (withdrawn).
        pub yanked_at: Option<i64>,
        pub yanked_by: Option<String>,
        /// Who approved it for rollouts (two-person products).
        pub approved_by: Option<String>,
        pub approved_at: Option<i64>,
        /// When the retention policy took it out of the role (stored, not withdrawn).
        pub delisted_at: Option<i64>,
        /// The product role version that last put it in the role (its publish, or a
        /// re-listing): the retention policy's "newest" counts by it, then by id.
        pub listed_in_role: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// A delta target: a patch from one release's image to another's (`release_deltas`).
pub mod release_delta {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "release_deltas")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub product_id: i64,
        /// The release whose image the delta applies to.
        pub from_release_id: i64,
        /// The release whose image it produces.
        pub to_release_id: i64,
        #[sea_orm(unique)]
        pub target_name: String,
        pub algorithm: String,
        pub length: i64,
        pub sha256: String,
        pub sha512: String,
        /// The target's signed `custom` (`DeltaCustom`), JSON.
        pub custom: String,
        pub created_by: String,
        pub created_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod delta_refusal {
    use sea_orm::entity::prelude::*;

    /// A pair of releases whose delta was computed and not published (not worthwhile).
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "delta_refusals")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub product_id: i64,
        pub from_release_id: i64,
        pub to_release_id: i64,
        /// The error code the API answers with, e.g. `delta_not_worthwhile`.
        pub reason: String,
        /// The delta's length when it was computed.
        pub delta_length: i64,
        /// The compressed full image's length it was measured against.
        pub full_length: i64,
        pub refused_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod rollout_traffic {
    use sea_orm::entity::prelude::*;

    /// Firmware bytes served to the devices of one rollout, per kind of target.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "rollout_traffic")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub rollout_id: String,
        /// `image` or `delta`.
        #[sea_orm(primary_key, auto_increment = false)]
        pub kind: String,
        pub bytes: i64,
        /// Download requests (a resumed download is several).
        pub requests: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod metadata {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "metadata")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        /// `image` or `director`.
        pub repo: String,
        pub role: String,
        pub version: i64,
        pub expires_at: i64,
        pub body: Vec<u8>,
        pub sha256: String,
        pub created_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod api_token {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "api_tokens")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub name: String,
        pub role: String,
        pub product: Option<String>,
        pub token_prefix: String,
        #[sea_orm(unique)]
        pub token_hash: String,
        pub created_at: i64,
        pub revoked_at: Option<i64>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod audit {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "audit_log")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub at: i64,
        pub actor: String,
        pub action: String,
        pub object: String,
        pub before: Option<String>,
        pub after: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod job_lease {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "job_leases")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub name: String,
        pub holder: String,
        pub expires_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod enrollment_token {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "enrollment_tokens")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub name: String,
        pub product_id: i64,
        /// JSON array of tags given to the devices that enroll with it.
        pub tags: String,
        pub token_prefix: String,
        #[sea_orm(unique)]
        pub token_hash: String,
        pub max_uses: i64,
        pub uses: i64,
        pub expires_at: i64,
        pub created_by: String,
        pub created_at: i64,
        pub revoked_at: Option<i64>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod device {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "devices")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        #[sea_orm(unique)]
        pub device_id: String,
        pub product_id: i64,
        pub hardware_id: String,
        /// Hex of the raw ed25519 public key.
        pub public_key: String,
        pub keyid: String,
        /// JSON array of admin-set tags.
        pub tags: String,
        pub token_prefix: String,
        #[sea_orm(unique)]
        pub token_hash: String,
        /// `active` or `decommissioned`.
        pub status: String,
        pub rekey_allowed: bool,
        pub enrollment_token_id: Option<i64>,
        pub enrolled_at: i64,
        /// The device's own `time` in its last accepted enrollment request: a re-enrollment must
        /// carry a later one, so a captured request cannot be replayed.
        pub enroll_time: String,
        pub decommissioned_at: Option<i64>,
        pub last_counter: Option<i64>,
        pub last_seen_at: Option<i64>,
        pub installed_name: Option<String>,
        pub installed_version: Option<String>,
        pub installed_sha256: Option<String>,
        pub installed_release_id: Option<i64>,
        pub attempt_name: Option<String>,
        pub attempt_state: Option<String>,
        pub attempt_detail: Option<String>,
        pub assigned_release_id: Option<i64>,
        pub assigned_rollout_id: Option<String>,
        pub assigned_action: Option<String>,
        pub director_targets_version: i64,
        /// When one of the device's director roles next enters its refresh margin (Unix
        /// seconds): polls before then need not look at its metadata at all.
        pub director_refresh_at: i64,
        /// The `plan` cache epoch the stored assignment was decided at (0: decide again).
        pub plan_epoch: i64,
        /// `tuf` (the agent) or `ddi` (hawkBit's device API: no key, no verified metadata).
        pub protocol: String,
        /// JSON object of the attributes a DDI device sent (`configData`); `None`: never sent.
        pub attributes: Option<String>,
        /// The newest DDI action (assignment id) the device closed or whose cancellation it
        /// acknowledged, and when: an assignment renewed later is a new action.
        pub ddi_closed_action: Option<i64>,
        pub ddi_closed_at: Option<i64>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod device_report {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "device_reports")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub device_row_id: i64,
        pub counter: i64,
        pub received_at: i64,
        pub reported_time: String,
        pub installed_name: Option<String>,
        pub installed_version: Option<String>,
        pub installed_sha256: Option<String>,
        pub attempt_name: Option<String>,
        pub attempt_state: Option<String>,
        pub attempt_detail: Option<String>,
        pub director_targets_version: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod device_metadata {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "device_metadata")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub device_row_id: i64,
        pub role: String,
        pub version: i64,
        pub expires_at: i64,
        pub body: Vec<u8>,
        pub sha256: String,
        pub created_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod cohort {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "cohorts")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub product_id: i64,
        pub name: String,
        /// JSON array of tags a device must all carry to be selected; `None`: no selector.
        pub selector_tags: Option<String>,
        pub created_at: i64,
        pub updated_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod cohort_member {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "cohort_members")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub cohort_id: i64,
        /// A device id; it may name a device that has not enrolled yet.
        #[sea_orm(primary_key, auto_increment = false)]
        pub device_id: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod rollout {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "rollouts")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub product_id: i64,
        pub release_id: i64,
        pub state: String,
        /// JSON array of `{cohort, basis_points, soak_seconds}`.
        pub stages: String,
        pub max_failure_rate_bp: i32,
        pub min_reports: i64,
        pub stall_seconds: i64,
        pub auto_advance: bool,
        pub current_stage: i32,
        pub stage_started_at: i64,
        /// Start of the gate's counting window (reset when an admin resumes a halted rollout).
        pub gate_since: i64,
        /// Why it halted (or what a forced advance skipped).
        pub reason: Option<String>,
        pub created_by: String,
        pub created_at: i64,
        pub updated_at: i64,
        pub started_at: Option<i64>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod assignment {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "assignments")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub rollout_id: String,
        pub device_row_id: i64,
        /// The stage (0-based) at which the device entered the rollout.
        pub stage: i32,
        pub release_id: i64,
        /// The release the device ran when it was assigned (the rollback target).
        pub from_release_id: Option<i64>,
        /// `assigned`, an attempt state, or `withdrawn`.
        pub state: String,
        pub detail: Option<String>,
        pub assigned_at: i64,
        pub updated_at: i64,
        pub final_at: Option<i64>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod user {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "users")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        #[sea_orm(unique)]
        pub name: String,
        pub role: String,
        /// argon2id PHC string.
        pub password_hash: String,
        pub created_at: i64,
        pub updated_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod session {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "sessions")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub user_id: i64,
        /// SHA-256 of the cookie secret, hex.
        #[sea_orm(unique)]
        pub token_hash: String,
        pub csrf_token: String,
        pub created_at: i64,
        pub last_seen_at: i64,
        /// Absolute expiry, Unix seconds.
        pub expires_at: i64,
        pub revoked_at: Option<i64>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod login_failure {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "login_failures")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub name: String,
        pub remote: String,
        pub at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod release_digest {
    use sea_orm::entity::prelude::*;

    /// SHA-1 and MD5 of a release's image (hex), which hawkBit's device API lists beside
    /// SHA-256; computed the first time a DDI device needs them.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "release_digests")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub release_id: i64,
        pub sha1: String,
        pub md5: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod ddi_gateway_token {
    use sea_orm::entity::prelude::*;

    /// A product's DDI gateway token (`Authorization: GatewayToken …`), stored as SHA-256.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "ddi_gateway_tokens")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub product_id: i64,
        pub token_prefix: String,
        #[sea_orm(unique)]
        pub token_hash: String,
        pub created_by: String,
        pub created_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
