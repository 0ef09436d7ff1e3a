//! Creating and steering rollouts: admin actions go through the pure state machine
//! (`domain::rollout`), are saved with the audit entry in one transaction, and the gate job
//! (and a failing report) evaluates running rollouts the same way.

use serde::Deserialize;
use serde_json::json;

use super::audit::record;
use super::auth::Caller;
use super::rollout_view::{StoredStage, stage_counts, view_of};
use super::{ServiceError, Services, whole_number};
use crate::db::cohorts::cohort_find;
use crate::db::entities::rollout;
use crate::db::products::product_get_by_name;
use crate::db::releases::release_find;
use crate::db::rollouts::{
    product_lock, rollout_get, rollout_get_for_update, rollout_insert, rollout_list, rollout_update,
};
use crate::domain::ids::{CohortName, RolloutId};
use crate::domain::names::{FirmwareVersion, ProductName};
use crate::domain::rollout::{
    FailureRate, Gate, Percent, RolloutAction, RolloutError, RolloutState, StagePlan, Transition, apply_action,
    evaluate, validate_plan,
};

/// A stage as an admin writes it.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StageInput {
    /// Cohort name within the product.
    #[schema(value_type = CohortName)]
    pub cohort: String,
    /// Share of the cohort, 0.01 to 100, at most two decimals. A later stage of the same cohort
    /// may not lower it.
    #[schema(exclusive_minimum = 0, maximum = 100, multiple_of = 0.01)]
    pub percent: f64,
    /// Minutes to watch the stage before the next one, 0 to 30 days.
    #[serde(default, deserialize_with = "whole_number::exact")]
    #[schema(minimum = 0, maximum = 43_200)]
    pub soak_minutes: i64,
}

/// The health gate as an admin writes it.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GateInput {
    /// Highest tolerated share of failed devices among final reports, 0 to 1 (0.05 = 5%), at
    /// most four decimals.
    #[schema(minimum = 0, maximum = 1, multiple_of = 0.0001)]
    pub max_failure_rate: f64,
    /// Final reports a stage needs before it may advance, at most 1 000 000.
    #[serde(deserialize_with = "whole_number::exact")]
    #[schema(minimum = 0, maximum = 1_000_000)]
    pub min_reports: u32,
    /// Minutes after which an assigned device that went silent counts as failed, 1 minute to
    /// 30 days.
    #[serde(deserialize_with = "whole_number::exact")]
    #[schema(minimum = 1, maximum = 43_200)]
    pub stall_minutes: i64,
}

/// A rollout to create.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRollout {
    /// Optional id (`[a-z0-9._:-]{1,64}`); generated if absent. It seeds every device's bucket.
    #[serde(default)]
    #[schema(value_type = Option<RolloutId>)]
    pub id: Option<String>,
    /// Product name.
    #[schema(value_type = ProductName)]
    pub product: String,
    /// Release version to roll out.
    #[schema(value_type = FirmwareVersion)]
    pub version: String,
    /// Ordered stages, 1 to 32; each cohort at most once.
    #[schema(min_items = 1, max_items = 32)]
    pub stages: Vec<StageInput>,
    /// Health gate.
    pub gate: GateInput,
    /// Advance after each soak on its own while the gate holds.
    #[serde(default)]
    pub auto_advance: bool,
}

fn domain_error(e: RolloutError) -> ServiceError {
    match e {
        RolloutError::NotAllowed { .. } => ServiceError::conflict("invalid_transition", e.to_string()),
        RolloutError::NotReady { .. } => ServiceError::conflict("stage_not_ready", e.to_string()),
        RolloutError::InvalidPercent(_) => ServiceError::invalid("invalid_percent", e.to_string()),
        RolloutError::InvalidFailureRate(_) => ServiceError::invalid("invalid_gate", e.to_string()),
        RolloutError::InvalidPlan(_) => ServiceError::invalid("invalid_plan", e.to_string()),
    }
}

fn not_found(id: &str) -> ServiceError {
    ServiceError::not_found("unknown_rollout", format!("no rollout has id {id:?}"))
}

/// Refuses a release that may not enter a rollout: yanked, delisted by the retention policy,
/// below its product's security floor, or waiting for a second person's approval. (The release page asks it too, to say why its
/// "roll out" button is missing.)
pub fn check_release_may_roll_out(
    product: &crate::db::entities::product::Model,
    release: &crate::db::entities::release::Model,
) -> Result<(), ServiceError> {
    super::release_review::check_release_listed(product, release, "start the rollout")?;
    let floor = crate::domain::names::FirmwareVersion::parse(&product.security_floor).ok();
    let version = crate::domain::names::FirmwareVersion::parse(&release.version).ok();
    if let (Some(floor), Some(version)) = (floor, version)
        && version < floor
    {
        return Err(ServiceError::conflict(
            "below_security_floor",
            format!(
                "{} is below {}'s security floor {floor}: devices would refuse it",
                release.target_name, product.name
            ),
        ));
    }
    if product.requires_approval && release.approved_by.is_none() {
        return Err(ServiceError::conflict(
            "release_not_approved",
            format!(
                "{} needs a second person's approval before a rollout (a release manager other than {})",
                release.target_name, release.published_by
            ),
        ));
    }
    Ok(())
}

/// Creates a rollout in `draft`.
pub async fn create_rollout(
    svc: &Services,
    caller: &Caller,
    input: CreateRollout,
) -> Result<rollout::Model, ServiceError> {
    let product = product_get_by_name(&svc.db, &input.product).await?.ok_or_else(|| {
        ServiceError::not_found("unknown_product", format!("product {} does not exist", input.product))
    })?;
    let release = release_find(&svc.db, product.id, &input.version).await?.ok_or_else(|| {
        ServiceError::not_found("unknown_release", format!("product {} has no release {}", product.name, input.version))
    })?;
    check_release_may_roll_out(&product, &release)?;
    let mut plan = Vec::with_capacity(input.stages.len());
    for s in &input.stages {
        let cohort = CohortName::parse(&s.cohort)?;
        if cohort_find(&svc.db, product.id, cohort.as_str()).await?.is_none() {
            return Err(ServiceError::not_found(
                "unknown_cohort",
                format!("product {} has no cohort {cohort}", product.name),
            ));
        }
        let soak_seconds = s.soak_minutes.checked_mul(60).unwrap_or(-1);
        plan.push(StagePlan {
            cohort: cohort.to_string(),
            percent: Percent::parse(s.percent).map_err(domain_error)?,
            soak_seconds,
        });
    }
    let gate = Gate {
        max_failure_rate: FailureRate::parse(input.gate.max_failure_rate).map_err(domain_error)?,
        min_reports: input.gate.min_reports,
        stall_seconds: input.gate.stall_minutes.checked_mul(60).unwrap_or(-1),
    };
    validate_plan(&plan, &gate).map_err(domain_error)?;
    let id = match &input.id {
        Some(id) => RolloutId::parse(id)?.to_string(),
        None => format!("r-{}", crate::storage::random_hex(6)),
    };
    let stored: Vec<StoredStage> = plan
        .iter()
        .map(|s| StoredStage {
            cohort: s.cohort.clone(),
            basis_points: s.percent.basis_points(),
            soak_seconds: s.soak_seconds,
        })
        .collect();
    let now = svc.now_secs();
    let row = rollout::Model {
        id: id.clone(),
        product_id: product.id,
        release_id: release.id,
        state: RolloutState::Draft.as_str().to_owned(),
        stages: serde_json::to_string(&stored).map_err(anyhow::Error::new)?,
        max_failure_rate_bp: i32::from(gate.max_failure_rate.basis_points()),
        min_reports: i64::from(gate.min_reports),
        stall_seconds: gate.stall_seconds,
        auto_advance: input.auto_advance,
        current_stage: 0,
        stage_started_at: now,
        gate_since: now,
        reason: None,
        created_by: caller.name.clone(),
        created_at: now,
        updated_at: now,
        started_at: None,
    };
    let txn = crate::db::begin_write(&svc.db).await?;
    if rollout_get(&txn, &id).await?.is_some() {
        return Err(ServiceError::conflict("rollout_exists", format!("a rollout with id {id} already exists")));
    }
    let created = rollout_insert(&txn, row).await?;
    let after = json!({"product": product.name, "version": release.version, "stages": stored, "auto_advance": input.auto_advance,
        "gate": {"max_failure_rate_bp": gate.max_failure_rate.basis_points(), "min_reports": gate.min_reports, "stall_seconds": gate.stall_seconds}});
    record(&txn, now, caller, "rollout.create", &format!("rollout:{id}"), None, Some(after)).await?;
    txn.commit().await?;
    Ok(created)
}

/// One rollout.
/// Where a rollback of rollout `id` would send its devices: per version they ran before (`None`:
/// none on record, so they keep this release), how many devices, most first. The planner may
/// still keep a device on the release (an earlier one below its rollback floor, or yanked).
pub async fn rollback_preview(svc: &Services, id: &str) -> Result<Vec<(Option<String>, u64)>, ServiceError> {
    let counts = crate::db::rollouts::assignment_started_by_origin(&svc.db, id).await?;
    let ids: Vec<i64> = counts.iter().filter_map(|(from, _)| *from).collect();
    let versions: std::collections::HashMap<i64, String> =
        crate::db::releases::release_list_by_ids(&svc.db, ids).await?.into_iter().map(|r| (r.id, r.version)).collect();
    let mut out: Vec<(Option<String>, u64)> = counts
        .into_iter()
        .map(|(from, n)| {
            (
                from.map(|f| versions.get(&f).cloned().unwrap_or_else(|| format!("release {f}"))),
                u64::try_from(n).unwrap_or(0),
            )
        })
        .collect();
    out.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    Ok(out)
}

pub async fn get_rollout(svc: &Services, id: &str) -> Result<rollout::Model, ServiceError> {
    rollout_get(&svc.db, id).await?.ok_or_else(|| not_found(id))
}

/// Rollouts, newest first.
pub async fn list_rollouts(
    svc: &Services,
    product: Option<&str>,
    state: Option<&str>,
) -> Result<Vec<rollout::Model>, ServiceError> {
    let product_id = match product {
        Some(name) => Some(
            product_get_by_name(&svc.db, name)
                .await?
                .ok_or_else(|| ServiceError::not_found("unknown_product", format!("product {name} does not exist")))?
                .id,
        ),
        None => None,
    };
    if let Some(s) = state
        && RolloutState::parse(s).is_none()
    {
        return Err(ServiceError::invalid("invalid_state", format!("{s:?} is not a rollout state")));
    }
    Ok(rollout_list(&svc.db, product_id, state).await?)
}

/// The most characters an action's note may have.
pub const NOTE_MAX_CHARS: usize = 500;

/// Checks the note an admin gives with an action (why they pause, abort, roll back…), kept in
/// the audit entry: surrounding space trimmed, empty means none, at most [`NOTE_MAX_CHARS`]
/// characters, no control characters but line breaks and tabs.
pub fn parse_note(raw: Option<&str>) -> Result<Option<String>, ServiceError> {
    let Some(note) = raw.map(str::trim).filter(|n| !n.is_empty()) else { return Ok(None) };
    let chars = note.chars().count();
    if chars > NOTE_MAX_CHARS {
        return Err(ServiceError::invalid(
            "invalid_note",
            format!("the note is {chars} characters long: at most {NOTE_MAX_CHARS}"),
        ));
    }
    if note.chars().any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t')) {
        return Err(ServiceError::invalid("invalid_note", "the note may not hold control characters"));
    }
    Ok(Some(note.to_owned()))
}

fn snapshot(r: &rollout::Model) -> serde_json::Value {
    json!({"state": r.state, "current_stage": r.current_stage, "reason": r.reason})
}

async fn save(
    txn: &sea_orm::DatabaseTransaction,
    r: rollout::Model,
    t: &Transition,
    now: i64,
    starting: bool,
) -> Result<rollout::Model, ServiceError> {
    let mut active: rollout::ActiveModel = r.into();
    active.state = sea_orm::Set(t.state.as_str().to_owned());
    active.current_stage = sea_orm::Set(i32::try_from(t.current_stage).unwrap_or(i32::MAX));
    active.stage_started_at = sea_orm::Set(t.stage_started_at);
    active.reason = sea_orm::Set(t.reason.clone());
    active.updated_at = sea_orm::Set(now);
    if t.gate_reset || starting {
        active.gate_since = sea_orm::Set(now);
    }
    if starting {
        active.started_at = sea_orm::Set(Some(now));
    }
    Ok(rollout_update(txn, active).await?)
}

/// Refuses to start a rollout while another one of the same product covers one of its cohorts.
async fn check_no_overlap(txn: &sea_orm::DatabaseTransaction, r: &rollout::Model) -> Result<(), ServiceError> {
    let mine: std::collections::HashSet<String> = view_of(r)?.stages.into_iter().map(|s| s.cohort).collect();
    for other in rollout_list(txn, Some(r.product_id), None).await? {
        if other.id == r.id {
            continue;
        }
        let view = view_of(&other)?;
        if !view.state.is_active() {
            continue;
        }
        if let Some(shared) = view.stages.iter().map(|s| &s.cohort).find(|c| mine.contains(*c)) {
            return Err(ServiceError::conflict(
                "cohort_busy",
                format!("rollout {} ({}) is already rolling out to cohort {shared}", other.id, other.state),
            ));
        }
    }
    Ok(())
}

/// Applies an admin action (`start`, `pause`, `resume`, `advance`, `abort`, `rollback`).
pub async fn act_on_rollout(
    svc: &Services,
    caller: &Caller,
    id: &str,
    action: RolloutAction,
    note: Option<&str>,
) -> Result<rollout::Model, ServiceError> {
    let note = parse_note(note)?;
    let now = svc.now_secs();
    let txn = crate::db::begin_write(&svc.db).await?;
    if action == RolloutAction::Start
        && let Some(r) = rollout_get(&txn, id).await?
    {
        product_lock(&txn, r.product_id).await?;
    }
    let r = rollout_get_for_update(&txn, id).await?.ok_or_else(|| not_found(id))?;
    let view = view_of(&r)?;
    let counts = stage_counts(&txn, &r, view.stages.len(), true, now).await?;
    let current = counts.get(view.current_stage).copied().unwrap_or_default();
    let transition = apply_action(&view, action, now, &current).map_err(domain_error)?;
    let starting = action == RolloutAction::Start;
    if starting {
        check_no_overlap(&txn, &r).await?;
        let product = crate::db::products::product_get(&txn, r.product_id).await?;
        let release = crate::db::releases::release_get(&txn, r.release_id).await?;
        if let (Some(product), Some(release)) = (product, release) {
            check_release_may_roll_out(&product, &release)?;
        }
    }
    let before = snapshot(&r);
    let saved = save(&txn, r, &transition, now, starting).await?;
    let mut after = snapshot(&saved);
    if let RolloutAction::Advance { force } = action {
        after["force"] = json!(force);
    }
    if let Some(note) = note {
        after["note"] = json!(note);
    }
    record(
        &txn,
        now,
        caller,
        &format!("rollout.{}", action.as_str()),
        &format!("rollout:{id}"),
        Some(before),
        Some(after),
    )
    .await?;
    txn.commit().await?;
    tracing::info!(rollout = id, action = action.as_str(), state = %saved.state, actor = %caller.name, "rollout action");
    Ok(saved)
}

/// Evaluates one running rollout's gate and schedule: halts it, advances it, completes it, or
/// leaves it. Returns the new state if it changed.
pub async fn evaluate_rollout(svc: &Services, id: &str) -> Result<Option<RolloutState>, ServiceError> {
    let now = svc.now_secs();
    let txn = crate::db::begin_write(&svc.db).await?;
    let Some(r) = rollout_get_for_update(&txn, id).await? else {
        return Ok(None);
    };
    let view = view_of(&r)?;
    if view.state != RolloutState::Running {
        return Ok(None);
    }
    let counts = stage_counts(&txn, &r, view.stages.len(), true, now).await?;
    let upto = view.current_stage.min(counts.len().saturating_sub(1));
    let Some(transition) = evaluate(&view, &counts[..=upto], now) else {
        return Ok(None);
    };
    let action = match transition.state {
        RolloutState::Halted => "rollout.halt",
        RolloutState::Completed => "rollout.complete",
        _ => "rollout.advance",
    };
    let before = snapshot(&r);
    let saved = save(&txn, r, &transition, now, false).await?;
    record(&txn, now, &Caller::system(), action, &format!("rollout:{id}"), Some(before), Some(snapshot(&saved)))
        .await?;
    txn.commit().await?;
    if transition.state == RolloutState::Halted {
        tracing::warn!(rollout = id, reason = ?transition.reason, "rollout halted by its gate");
    } else {
        tracing::info!(rollout = id, state = %saved.state, stage = saved.current_stage, "rollout moved on by its schedule");
    }
    Ok(Some(transition.state))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_note_is_trimmed_bounded_and_free_of_control_characters() {
        assert_eq!(parse_note(None).unwrap(), None);
        assert_eq!(parse_note(Some("  \n ")).unwrap(), None, "blank is no note");
        assert_eq!(parse_note(Some(" ward 3 reports alarms\n")).unwrap().as_deref(), Some("ward 3 reports alarms"));
        assert_eq!(parse_note(Some("two\nlines\tand a tab")).unwrap().as_deref(), Some("two\nlines\tand a tab"));
        let longest = "é".repeat(NOTE_MAX_CHARS);
        assert_eq!(parse_note(Some(&longest)).unwrap().as_deref(), Some(&*longest), "characters, not bytes");
        for bad in ["x".repeat(NOTE_MAX_CHARS + 1), "bell\u{7}".to_owned(), "esc\u{1b}[31m".to_owned()] {
            let err = parse_note(Some(&bad)).unwrap_err();
            assert!(matches!(err, ServiceError::Invalid { code: "invalid_note", .. }), "{bad:?}: {err}");
        }
    }
}
