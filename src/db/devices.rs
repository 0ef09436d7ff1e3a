//! Queries on `devices` and `device_reports`.

use sea_orm::sea_query::{Expr, Func};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, DbErr, EntityTrait, ExprTrait, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect, Set,
};

use super::entities::assignment;
use super::entities::device::{self, ActiveModel, Entity, Model};
use super::entities::device_report;

/// A newly enrolled device.
#[derive(Debug, Clone)]
pub struct NewDevice {
    /// The manufacturer's id.
    pub device_id: String,
    /// Its product.
    pub product_id: i64,
    /// Its hardware id.
    pub hardware_id: String,
    /// Hex of its ed25519 public key.
    pub public_key: String,
    /// TUF keyid of that key.
    pub keyid: String,
    /// JSON array of tags.
    pub tags: String,
    /// Device token prefix.
    pub token_prefix: String,
    /// SHA-256 of the device token.
    pub token_hash: String,
    /// The enrollment token used.
    pub enrollment_token_id: i64,
    /// Unix seconds.
    pub enrolled_at: i64,
    /// The request's `time`.
    pub enroll_time: String,
}

/// The row of a newly enrolled device whose director serves targets version `targets_version`
/// (0: nothing signed yet), with a refresh due at `refresh_at`.
fn new_row(new: NewDevice, targets_version: i64, refresh_at: i64) -> ActiveModel {
    ActiveModel {
        device_id: Set(new.device_id),
        product_id: Set(new.product_id),
        hardware_id: Set(new.hardware_id),
        public_key: Set(new.public_key),
        keyid: Set(new.keyid),
        tags: Set(new.tags),
        token_prefix: Set(new.token_prefix),
        token_hash: Set(new.token_hash),
        status: Set("active".into()),
        rekey_allowed: Set(false),
        enrollment_token_id: Set(Some(new.enrollment_token_id)),
        enrolled_at: Set(new.enrolled_at),
        enroll_time: Set(new.enroll_time),
        director_targets_version: Set(targets_version),
        director_refresh_at: Set(refresh_at),
        ..Default::default()
    }
}

/// Stores a newly enrolled device (director version 0: nothing signed yet).
pub async fn device_insert(db: &impl ConnectionTrait, new: NewDevice) -> Result<Model, DbErr> {
    new_row(new, 0, 0).insert(db).await
}

/// Stores newly enrolled devices in one statement, each with its first director roles already
/// signed (`targets_version`, refresh due at `refresh_at`); returns the rows.
pub async fn devices_insert_signed(
    db: &impl ConnectionTrait,
    new: Vec<NewDevice>,
    targets_version: i64,
    refresh_at: i64,
) -> Result<Vec<Model>, DbErr> {
    if new.is_empty() {
        return Ok(Vec::new());
    }
    let rows = new.into_iter().map(|new| new_row(new, targets_version, refresh_at));
    Entity::insert_many(rows).exec_with_returning(db).await
}

/// The devices among `device_ids` (manufacturer ids) that exist, in one query.
pub async fn devices_find_many(db: &impl ConnectionTrait, device_ids: Vec<String>) -> Result<Vec<Model>, DbErr> {
    if device_ids.is_empty() {
        return Ok(Vec::new());
    }
    Entity::find().filter(device::Column::DeviceId.is_in(device_ids)).all(db).await
}

/// Re-enrolls an existing device row: new key, token, hardware id and tags; everything else
/// (counter, director versions, history) is kept so re-enrolling cannot roll the device back.
pub async fn device_reenroll(db: &impl ConnectionTrait, row: Model, new: NewDevice) -> Result<Model, DbErr> {
    let mut active: ActiveModel = row.into();
    active.hardware_id = Set(new.hardware_id);
    active.public_key = Set(new.public_key);
    active.keyid = Set(new.keyid);
    active.tags = Set(new.tags);
    active.token_prefix = Set(new.token_prefix);
    active.token_hash = Set(new.token_hash);
    active.rekey_allowed = Set(false);
    active.enrollment_token_id = Set(Some(new.enrollment_token_id));
    active.enroll_time = Set(new.enroll_time);
    active.update(db).await
}

/// The device with the manufacturer id `device_id`.
pub async fn device_find(db: &impl ConnectionTrait, device_id: &str) -> Result<Option<Model>, DbErr> {
    Entity::find().filter(device::Column::DeviceId.eq(device_id)).one(db).await
}

/// The device row `id`.
pub async fn device_get(db: &impl ConnectionTrait, id: i64) -> Result<Option<Model>, DbErr> {
    Entity::find_by_id(id).one(db).await
}

/// The device whose token hashes to `hash`.
pub async fn device_find_by_token_hash(db: &impl ConnectionTrait, hash: &str) -> Result<Option<Model>, DbErr> {
    Entity::find().filter(device::Column::TokenHash.eq(hash)).one(db).await
}

/// Saves changed columns of a device.
pub async fn device_update(db: &impl ConnectionTrait, active: ActiveModel) -> Result<Model, DbErr> {
    active.update(db).await
}

/// What a report says, stored on the device row and in its history.
pub struct ReportRecord {
    /// The report counter.
    pub counter: i64,
    /// Unix seconds at the server.
    pub received_at: i64,
    /// The device's own time, as sent.
    pub reported_time: String,
    /// Installed image name, version, sha256.
    pub installed: Option<(String, String, String)>,
    /// The release the installed image is, if known.
    pub installed_release_id: Option<i64>,
    /// Attempt name, state, detail.
    pub attempt: Option<(String, String, Option<String>)>,
    /// The director targets version the device has.
    pub director_targets_version: i64,
}

/// Records a report if its counter is above the last accepted one and the device is active;
/// false otherwise (then nothing was written). One conditional statement: two concurrent
/// reports with the same counter cannot both pass.
pub async fn device_record_report(db: &impl ConnectionTrait, id: i64, r: &ReportRecord) -> Result<bool, DbErr> {
    let (iname, iversion, isha) = match &r.installed {
        Some((n, v, s)) => (Some(n.clone()), Some(v.clone()), Some(s.clone())),
        None => (None, None, None),
    };
    let (aname, astate, adetail) = match &r.attempt {
        Some((n, s, d)) => (Some(n.clone()), Some(s.clone()), d.clone()),
        None => (None, None, None),
    };
    let result = Entity::update_many()
        .col_expr(device::Column::LastCounter, Expr::value(r.counter))
        .col_expr(device::Column::LastSeenAt, Expr::value(r.received_at))
        .col_expr(device::Column::InstalledName, Expr::value(iname.clone()))
        .col_expr(device::Column::InstalledVersion, Expr::value(iversion.clone()))
        .col_expr(device::Column::InstalledSha256, Expr::value(isha.clone()))
        .col_expr(device::Column::InstalledReleaseId, Expr::value(r.installed_release_id))
        .col_expr(device::Column::AttemptName, Expr::value(aname.clone()))
        .col_expr(device::Column::AttemptState, Expr::value(astate.clone()))
        .col_expr(device::Column::AttemptDetail, Expr::value(adetail.clone()))
        .filter(device::Column::Id.eq(id))
        .filter(device::Column::Status.eq("active"))
        .filter(
            Condition::any().add(device::Column::LastCounter.is_null()).add(device::Column::LastCounter.lt(r.counter)),
        )
        .exec(db)
        .await?;
    if result.rows_affected != 1 {
        return Ok(false);
    }
    device_report::ActiveModel {
        device_row_id: Set(id),
        counter: Set(r.counter),
        received_at: Set(r.received_at),
        reported_time: Set(r.reported_time.clone()),
        installed_name: Set(iname),
        installed_version: Set(iversion),
        installed_sha256: Set(isha),
        attempt_name: Set(aname),
        attempt_state: Set(astate),
        attempt_detail: Set(adetail),
        director_targets_version: Set(r.director_targets_version),
        ..Default::default()
    }
    .insert(db)
    .await?;
    Ok(true)
}

/// The newest `limit` reports of device row `id`.
pub async fn device_reports_recent(
    db: &impl ConnectionTrait,
    id: i64,
    limit: u64,
) -> Result<Vec<device_report::Model>, DbErr> {
    device_report::Entity::find()
        .filter(device_report::Column::DeviceRowId.eq(id))
        .order_by_desc(device_report::Column::Id)
        .limit(limit)
        .all(db)
        .await
}

/// Filters for listing devices; all optional, combined with AND.
#[derive(Debug, Default, Clone)]
pub struct DeviceFilter {
    /// Only this product.
    pub product_id: Option<i64>,
    /// Only these device ids (a cohort's resolved members).
    pub device_ids: Option<Vec<String>>,
    /// Only devices whose tag list contains this tag.
    pub tag: Option<String>,
    /// `active` or `decommissioned`.
    pub status: Option<String>,
    /// Installed version equals.
    pub installed_version: Option<String>,
    /// Device id contains this, ignoring ASCII case (a search box).
    pub id_contains: Option<String>,
    /// Only devices assigned by this rollout.
    pub rollout: Option<String>,
    /// Only devices with an assignment in this state (in `rollout`, or in any rollout).
    pub outcome: Option<String>,
    /// Only devices that entered `rollout` at this stage (0-based).
    pub stage: Option<i32>,
    /// When the device last reported.
    pub seen: Option<Seen>,
    /// Only devices not heard from since this time: no report since, and (if they never
    /// reported) enrolled before it.
    pub silent_since: Option<i64>,
}

/// A filter on when a device last reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Reported at this time or later.
    Since(i64),
    /// Reported, but not since this time.
    NotSince(i64),
    /// Never reported.
    Never,
}

/// The order of a device list; ties go by device id.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum DeviceOrder {
    /// By device id.
    #[default]
    Id,
    /// The longest silent first: never reported, then the oldest last report.
    LastSeen,
    /// The most recent report first; never reported last.
    LastSeenDesc,
}

/// Where a page of a device list starts: after this sort key and device id. The key is
/// [`DeviceOrder`]'s value for the device (0 when ordered by id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceCursor {
    /// The previous page's last sort key.
    pub key: i64,
    /// The previous page's last device id.
    pub id: String,
}

/// A device that never reported sorts as if it last reported at this time.
const NEVER_SEEN: i64 = -1;

impl DeviceOrder {
    /// The sort key of a device (ascending; ties by device id).
    pub fn key_of(self, last_seen_at: Option<i64>) -> i64 {
        let seen = last_seen_at.unwrap_or(NEVER_SEEN);
        match self {
            Self::Id => 0,
            Self::LastSeen => seen,
            Self::LastSeenDesc => -seen,
        }
    }

    /// The same key in SQL.
    fn key_expr(self) -> Option<Expr> {
        let seen = || Expr::expr(Func::coalesce([Expr::col(device::Column::LastSeenAt), Expr::val(NEVER_SEEN)]));
        match self {
            Self::Id => None,
            Self::LastSeen => Some(seen()),
            Self::LastSeenDesc => Some(Expr::val(0_i64).sub(seen())),
        }
    }
}

fn apply_filter(mut query: sea_orm::Select<Entity>, f: &DeviceFilter) -> sea_orm::Select<Entity> {
    if let Some(p) = f.product_id {
        query = query.filter(device::Column::ProductId.eq(p));
    }
    if let Some(ids) = &f.device_ids {
        query = query.filter(device::Column::DeviceId.is_in(ids.clone()));
    }
    if let Some(tag) = &f.tag {
        // Tags are stored as a sorted JSON array of slugs (no quotes inside), so the quoted
        // tag appears in the text exactly when the device carries it (`_` escaped: a slug
        // character, but a LIKE wildcard).
        query = query.filter(device::Column::Tags.like(super::like_pattern("%\"", tag, "\"%")));
    }
    if let Some(s) = &f.status {
        query = query.filter(device::Column::Status.eq(s.clone()));
    }
    if let Some(v) = &f.installed_version {
        query = query.filter(device::Column::InstalledVersion.eq(v.clone()));
    }
    if f.rollout.is_some() || f.outcome.is_some() || f.stage.is_some() {
        use sea_orm::sea_query::Query;
        let mut rows = Query::select();
        rows.column(assignment::Column::DeviceRowId).from(assignment::Entity);
        if let Some(rollout) = &f.rollout {
            rows.and_where(assignment::Column::RolloutId.eq(rollout.clone()));
        }
        if let Some(state) = &f.outcome {
            rows.and_where(assignment::Column::State.eq(state.clone()));
        }
        if let Some(stage) = f.stage {
            rows.and_where(assignment::Column::Stage.eq(stage));
        }
        query = query.filter(device::Column::Id.in_subquery(rows.to_owned()));
    }
    match f.seen {
        Some(Seen::Since(t)) => query = query.filter(device::Column::LastSeenAt.gte(t)),
        Some(Seen::NotSince(t)) => query = query.filter(device::Column::LastSeenAt.lt(t)),
        Some(Seen::Never) => query = query.filter(device::Column::LastSeenAt.is_null()),
        None => {}
    }
    if let Some(t) = f.silent_since {
        let heard =
            Expr::expr(Func::coalesce([Expr::col(device::Column::LastSeenAt), Expr::col(device::Column::EnrolledAt)]));
        query = query.filter(heard.lte(t));
    }
    if let Some(part) = &f.id_contains {
        // Lowercased on both sides: SQLite's LIKE ignores ASCII case, PostgreSQL's does not.
        let lowered = Expr::expr(Func::lower(Expr::col(device::Column::DeviceId)));
        query = query.filter(lowered.like(super::like_pattern("%", &part.to_ascii_lowercase(), "%")));
    }
    query
}

/// One page of devices matching `filter`, in `order`, after `after` (keyset paging).
pub async fn device_list(
    db: &impl ConnectionTrait,
    filter: &DeviceFilter,
    order: DeviceOrder,
    after: Option<&DeviceCursor>,
    limit: u64,
) -> Result<Vec<Model>, DbErr> {
    let mut query = apply_filter(Entity::find(), filter);
    match (order.key_expr(), after) {
        (None, Some(after)) => query = query.filter(device::Column::DeviceId.gt(after.id.as_str())),
        (Some(key), Some(after)) => {
            query = query.filter(
                Condition::any()
                    .add(key.clone().gt(after.key))
                    .add(Condition::all().add(key.eq(after.key)).add(device::Column::DeviceId.gt(after.id.as_str()))),
            );
        }
        (_, None) => {}
    }
    if let Some(key) = order.key_expr() {
        query = query.order_by(key, sea_orm::Order::Asc);
    }
    query.order_by_asc(device::Column::DeviceId).limit(limit).all(db).await
}

/// How many devices match `filter`.
pub async fn device_count(db: &impl ConnectionTrait, filter: &DeviceFilter) -> Result<u64, DbErr> {
    apply_filter(Entity::find(), filter).count(db).await
}

/// Device id, tags, attributes and last report time of every device matching `filter`, ordered
/// by device id: the narrow columns a caller needs to test cohort membership over a whole
/// product and order the members.
pub async fn device_list_ids_and_tags(
    db: &impl ConnectionTrait,
    filter: &DeviceFilter,
) -> Result<Vec<(String, String, Option<String>, Option<i64>)>, DbErr> {
    apply_filter(Entity::find(), filter)
        .select_only()
        .column(device::Column::DeviceId)
        .column(device::Column::Tags)
        .column(device::Column::Attributes)
        .column(device::Column::LastSeenAt)
        .order_by_asc(device::Column::DeviceId)
        .into_tuple()
        .all(db)
        .await
}

/// Every active device of a product: id, device id, tags and attributes (for counting
/// eligibility per stage).
pub async fn device_ids_and_tags(
    db: &impl ConnectionTrait,
    product_id: i64,
) -> Result<Vec<(i64, String, String, Option<String>)>, DbErr> {
    Entity::find()
        .select_only()
        .column(device::Column::Id)
        .column(device::Column::DeviceId)
        .column(device::Column::Tags)
        .column(device::Column::Attributes)
        .filter(device::Column::ProductId.eq(product_id))
        .filter(device::Column::Status.eq("active"))
        .into_tuple()
        .all(db)
        .await
}

/// Sets the director targets version a device was last signed at, and when its roles next
/// need a refresh.
pub async fn device_set_director_version(
    db: &impl ConnectionTrait,
    id: i64,
    version: u64,
    refresh_at: i64,
) -> Result<(), DbErr> {
    Entity::update_many()
        .col_expr(device::Column::DirectorTargetsVersion, Expr::value(i64::try_from(version).unwrap_or(i64::MAX)))
        .col_expr(device::Column::DirectorRefreshAt, Expr::value(refresh_at))
        .filter(device::Column::Id.eq(id))
        .exec(db)
        .await?;
    Ok(())
}

/// Remembers the `plan` epoch the device's stored assignment was decided at.
pub async fn device_set_plan_epoch(db: &impl ConnectionTrait, id: i64, epoch: i64) -> Result<(), DbErr> {
    Entity::update_many()
        .col_expr(device::Column::PlanEpoch, Expr::value(epoch))
        .filter(device::Column::Id.eq(id))
        .exec(db)
        .await?;
    Ok(())
}

/// A device's decision, as [`devices_set_decisions`] stores it.
#[derive(Debug, serde::Serialize)]
pub struct DecisionRow {
    /// Device row.
    pub id: i64,
    /// The release the director names, if any.
    pub assigned_release: Option<i64>,
    /// The rollout that decided it.
    pub assigned_rollout: Option<String>,
    /// `install` or `rollback`.
    pub assigned_action: Option<String>,
    /// Director targets version now served.
    pub targets_version: i64,
    /// When a director role next enters its refresh margin (Unix seconds).
    pub refresh_at: i64,
    /// The `plan` epoch it was decided at.
    pub plan_epoch: i64,
    /// The release the device runs, when known.
    pub installed_release: Option<i64>,
    /// The version the device runs.
    pub installed_version: Option<String>,
}

/// Stores many devices' decisions with one statement (the rows travel as one JSON parameter).
pub async fn devices_set_decisions(db: &impl ConnectionTrait, rows: &[DecisionRow]) -> Result<(), DbErr> {
    if rows.is_empty() {
        return Ok(());
    }
    let backend = db.get_database_backend();
    let set = "assigned_release_id = v.assigned_release, assigned_rollout_id = v.assigned_rollout, \
               assigned_action = v.assigned_action, director_targets_version = v.targets_version, \
               director_refresh_at = v.refresh_at, plan_epoch = v.plan_epoch, \
               installed_release_id = v.installed_release, installed_version = v.installed_version";
    let sql = match backend {
        sea_orm::DbBackend::Postgres => format!(
            "UPDATE devices SET {set} FROM jsonb_to_recordset($1::jsonb) AS v(id bigint, assigned_release bigint, \
             assigned_rollout text, assigned_action text, targets_version bigint, refresh_at bigint, plan_epoch bigint, \
             installed_release bigint, installed_version text) WHERE devices.id = v.id"
        ),
        _ => {
            let fields: Vec<String> = [
                "id",
                "assigned_release",
                "assigned_rollout",
                "assigned_action",
                "targets_version",
                "refresh_at",
                "plan_epoch",
                "installed_release",
                "installed_version",
            ]
            .iter()
            .map(|f| format!("json_extract(value, '$.{f}') AS {f}"))
            .collect();
            format!(
                "WITH v AS (SELECT {} FROM json_each(?)) UPDATE devices SET {set} FROM v WHERE devices.id = v.id",
                fields.join(", ")
            )
        }
    };
    let json = serde_json::to_string(rows).map_err(|e| DbErr::Custom(format!("encoding decisions: {e}")))?;
    db.execute_raw(sea_orm::Statement::from_sql_and_values(backend, sql, [sea_orm::Value::from(json)])).await?;
    Ok(())
}

/// Makes every device's director roles due for a check at its next report (after a director
/// root ceremony).
pub async fn device_refresh_all_director(db: &impl ConnectionTrait) -> Result<(), DbErr> {
    Entity::update_many().col_expr(device::Column::DirectorRefreshAt, Expr::value(0i64)).exec(db).await?;
    Ok(())
}
