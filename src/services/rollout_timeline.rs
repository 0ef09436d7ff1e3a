//! Rollouts for people watching them: a rollout over time (cumulative installs, failures and
//! rejections, bucketed for a chart) and every rollout at a glance (the list's summaries).
//!
//! Read-only. The timeline comes from the assignments' outcomes (`final_at`, `state`): each
//! device counts once, with its current outcome, at the time it reported it. Gate figures come
//! from `rollout_view::stage_counts` and `domain::rollout::gate_verdict`, as the gate job's do.
//! Must not import `http`.

use std::collections::HashMap;

use sea_orm::TransactionTrait;

use super::rollout_view::{gate_of, stage_counts, state_of, view_of};
use super::{ServiceError, Services};
use crate::db::entities::rollout;
use crate::db::products::product_list;
use crate::db::releases::release_list_by_ids;
use crate::db::rollouts::{rollout_get, rollout_page};
use crate::db::timeline::assignment_outcome_counts;
use crate::domain::rollout::{GateVerdict, gate_verdict};

/// A chart of more points is no easier to read, and the page carries every point.
pub const MAX_POINTS: usize = 50;
/// The shortest span a timeline covers, so a rollout started a moment ago still has a width.
const MIN_SPAN_SECONDS: i64 = 60;

/// Cumulative outcomes at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimelinePoint {
    /// Unix seconds.
    pub at: i64,
    /// Devices that installed the release by then.
    pub installed: u64,
    /// Devices that reported a failure by then.
    pub failed: u64,
    /// Devices that rejected the release by then.
    pub rejected: u64,
}

/// A rollout's outcomes over time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutTimeline {
    /// When the timeline begins (the rollout's start, or its creation for a draft).
    pub start: i64,
    /// When it ends (now, or the last outcome of a finished rollout).
    pub end: i64,
    /// `start` with zeros, then the cumulative counts at the end of each bucket; at most
    /// [`MAX_POINTS`] + 1 points, times increasing.
    pub points: Vec<TimelinePoint>,
}

impl RolloutTimeline {
    /// The last point's counts (the totals).
    pub fn totals(&self) -> TimelinePoint {
        self.points.last().copied().unwrap_or_default()
    }
}

/// One outcome kind at one time: `(final_at, state, devices)`.
type OutcomeCount = (i64, String, i64);

/// The rollout `id` over time.
pub async fn rollout_timeline(svc: &Services, id: &str) -> Result<RolloutTimeline, ServiceError> {
    let now = svc.now_secs();
    let txn = svc.db.begin().await?;
    let r = rollout_get(&txn, id)
        .await?
        .ok_or_else(|| ServiceError::not_found("unknown_rollout", format!("no rollout has id {id:?}")))?;
    let outcomes = assignment_outcome_counts(&txn, id).await?;
    txn.commit().await?;
    let start = r.started_at.unwrap_or(r.created_at);
    let last_outcome = outcomes.iter().map(|(at, _, _)| *at).max().unwrap_or(start);
    // A finished rollout's chart ends with its last event, so it does not shrink as time passes.
    let end = if state_of(&r)?.is_terminal() { last_outcome.max(r.updated_at) } else { now.max(last_outcome) };
    Ok(cumulative(start, end, &outcomes, MAX_POINTS))
}

/// Buckets `outcomes` into at most `max_points` equal intervals over `start..=end` (widened to
/// [`MIN_SPAN_SECONDS`]) and accumulates them. Outcomes outside the span count in the nearest
/// bucket, so the totals are always every outcome.
fn cumulative(start: i64, end: i64, outcomes: &[OutcomeCount], max_points: usize) -> RolloutTimeline {
    let end = end.max(start.saturating_add(MIN_SPAN_SECONDS));
    let span = u64::try_from(end - start).unwrap_or(1);
    let width_u = span.div_ceil(u64::try_from(max_points.max(1)).unwrap_or(1));
    // Every bucket starts before `end`, so the points' times strictly increase.
    let buckets = span.div_ceil(width_u);
    let width = i64::try_from(width_u).unwrap_or(i64::MAX);
    let mut per_bucket = vec![TimelinePoint::default(); usize::try_from(buckets).unwrap_or(1)];
    let last = per_bucket.len().saturating_sub(1);
    for (at, state, n) in outcomes {
        let index = usize::try_from((at - start).max(0) / width).unwrap_or(last).min(last);
        let n = u64::try_from(*n).unwrap_or(0);
        let slot = &mut per_bucket[index];
        match state.as_str() {
            "installed" => slot.installed += n,
            "failed" => slot.failed += n,
            "rejected" => slot.rejected += n,
            _ => {}
        }
    }
    let mut points = Vec::with_capacity(per_bucket.len() + 1);
    let mut running = TimelinePoint { at: start, ..TimelinePoint::default() };
    points.push(running);
    for (i, bucket) in per_bucket.iter().enumerate() {
        running.installed += bucket.installed;
        running.failed += bucket.failed;
        running.rejected += bucket.rejected;
        let i = i64::try_from(i).unwrap_or(0);
        running.at = start.saturating_add((i + 1) * width).min(end);
        points.push(running);
    }
    RolloutTimeline { start, end, points }
}

/// A rollout in the list.
#[derive(Debug, Clone)]
pub struct RolloutSummary {
    /// The row.
    pub rollout: rollout::Model,
    /// Product name.
    pub product: String,
    /// Release version.
    pub version: String,
    /// How many stages the plan has.
    pub stage_count: usize,
    /// The gate's verdict on the current stage, for rollouts that hold their cohorts
    /// (running, paused, halted); `None` for drafts and finished rollouts.
    pub verdict: Option<GateVerdict>,
}

/// Which rollouts the list shows: every filter optional.
#[derive(Debug, Default, Clone)]
pub struct SummaryQuery {
    /// Only this product's.
    pub product: Option<String>,
    /// Only rollouts in this state.
    pub state: Option<String>,
    /// The page after this rollout (the previous page's `next_before`).
    pub before: Option<String>,
    /// Page size (1 to [`SUMMARY_PAGE_MAX`]).
    pub limit: u64,
}

/// The largest page of rollout summaries: each active one costs a count of its stage.
pub const SUMMARY_PAGE_MAX: u64 = 200;

/// One page of rollout summaries.
#[derive(Debug, Clone)]
pub struct SummaryPage {
    /// Newest first.
    pub rollouts: Vec<RolloutSummary>,
    /// The cursor of the next (older) page; `None` when this is the last.
    pub next_before: Option<String>,
}

/// Rollouts, newest first, one page at a time, with what the list shows.
pub async fn rollout_summaries(svc: &Services, q: SummaryQuery) -> Result<SummaryPage, ServiceError> {
    if !(1..=SUMMARY_PAGE_MAX).contains(&q.limit) {
        return Err(ServiceError::invalid("invalid_limit", format!("limit must be between 1 and {SUMMARY_PAGE_MAX}")));
    }
    if let Some(s) = q.state.as_deref()
        && crate::domain::rollout::RolloutState::parse(s).is_none()
    {
        return Err(ServiceError::invalid("invalid_state", format!("{s:?} is not a rollout state")));
    }
    let now = svc.now_secs();
    let txn = svc.db.begin().await?;
    let products = product_list(&txn).await?;
    let product_id =
        match q.product.as_deref() {
            None => None,
            Some(name) => {
                Some(products.iter().find(|p| p.name == name).map(|p| p.id).ok_or_else(|| {
                    ServiceError::not_found("unknown_product", format!("product {name} does not exist"))
                })?)
            }
        };
    let before = match q.before.as_deref() {
        None => None,
        Some(id) => Some(rollout_get(&txn, id).await?.ok_or_else(|| {
            ServiceError::invalid(
                "invalid_cursor",
                format!("no rollout {id:?} to continue after: start from the first page"),
            )
        })?),
    };
    let mut rows = rollout_page(&txn, product_id, q.state.as_deref(), before.as_ref(), q.limit + 1).await?;
    // One row beyond the page says whether there is a next page, without another query.
    let more = rows.len() as u64 > q.limit;
    rows.truncate(usize::try_from(q.limit).unwrap_or(usize::MAX));
    let next_before = if more { rows.last().map(|r| r.id.clone()) } else { None };
    let products: HashMap<i64, String> = products.into_iter().map(|p| (p.id, p.name)).collect();
    let mut release_ids: Vec<i64> = rows.iter().map(|r| r.release_id).collect();
    release_ids.sort_unstable();
    release_ids.dedup();
    let versions: HashMap<i64, String> =
        release_list_by_ids(&txn, release_ids).await?.into_iter().map(|rel| (rel.id, rel.version)).collect();
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let view = view_of(&r)?;
        let verdict = if view.state.is_active() {
            let counts = stage_counts(&txn, &r, view.stages.len(), true, now).await?;
            let current = counts.get(view.current_stage).copied().unwrap_or_default();
            Some(gate_verdict(&gate_of(&r)?, &current))
        } else {
            None
        };
        out.push(RolloutSummary {
            product: products.get(&r.product_id).cloned().unwrap_or_default(),
            version: versions.get(&r.release_id).cloned().unwrap_or_default(),
            stage_count: view.stages.len(),
            verdict,
            rollout: r,
        });
    }
    txn.commit().await?;
    Ok(SummaryPage { rollouts: out, next_before })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(at: i64, state: &str, n: i64) -> OutcomeCount {
        (at, state.to_owned(), n)
    }

    #[test]
    fn outcomes_accumulate_into_at_most_the_asked_number_of_buckets() {
        let outcomes =
            [o(1_010, "installed", 3), o(1_500, "failed", 1), o(1_990, "installed", 2), o(2_000, "rejected", 1)];
        let t = cumulative(1_000, 2_000, &outcomes, 10);
        assert_eq!(t.points.len(), 11, "the start plus ten buckets");
        assert_eq!(t.points[0], TimelinePoint { at: 1_000, ..Default::default() });
        assert_eq!(t.points[1], TimelinePoint { at: 1_100, installed: 3, failed: 0, rejected: 0 });
        assert_eq!(t.points[6].failed, 1, "1 500 falls in the sixth bucket (1 500..1 600)");
        assert_eq!(t.points[5].failed, 0);
        assert_eq!(t.totals(), TimelinePoint { at: 2_000, installed: 5, failed: 1, rejected: 1 });
        assert!(t.points.windows(2).all(|w| w[0].at < w[1].at && w[0].installed <= w[1].installed));
    }

    #[test]
    fn short_or_empty_timelines_still_have_a_width_and_keep_every_outcome() {
        let t = cumulative(500, 500, &[], MAX_POINTS);
        assert_eq!((t.start, t.end), (500, 500 + MIN_SPAN_SECONDS));
        assert!(t.points.len() <= MAX_POINTS + 1);
        assert!(t.points.windows(2).all(|w| w[0].at < w[1].at), "{:?}", t.points);
        assert_eq!(t.totals().installed, 0);
        // Out of span (clock skew, a reset start): counted at the nearest edge, never dropped.
        let t = cumulative(1_000, 1_100, &[o(900, "installed", 1), o(5_000, "failed", 2)], 5);
        assert_eq!(t.points[1].installed, 1);
        assert_eq!(t.totals(), TimelinePoint { at: 1_100, installed: 1, failed: 2, rejected: 0 });
    }
}
