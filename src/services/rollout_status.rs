//! A rollout's figures per stage, for people deciding whether to advance, pause or abort: how
//! many devices the plan covers, how far the assigned ones got, and what the gate sees.
//!
//! Read-only. Counts come from `rollout_view::stage_counts` (all time for the progress figures,
//! the gate window for the verdict) and the verdict from `domain::rollout::gate_verdict`, so
//! this page and the gate job can never disagree.

use std::collections::{HashMap, HashSet};

use patchgate_protocol::bucket::bucket;
use sea_orm::{ConnectionTrait, TransactionTrait};

use super::assign_device::selector_matches;
use super::devices::tag_set;
use super::rollout_view::{gate_of, parse_stages, stage_counts};
use super::{ServiceError, Services};
use crate::db::cohorts::{cohort_find, cohort_members};
use crate::db::devices::device_ids_and_tags;
use crate::db::entities::rollout;
use crate::db::products::product_get;
use crate::db::releases::release_get;
use crate::db::rollouts::{rollout_get, traffic_of};
use crate::domain::rollout::{GateVerdict, StageCounts, StagePlan, gate_verdict, stage_for_device};

/// One stage's figures.
#[derive(Debug, Clone)]
pub struct StageStatus {
    /// The stage as planned.
    pub plan: StagePlan,
    /// Active devices of the product whose entry stage is this one once every stage is open:
    /// what the stage will take at most (hardware and version checks at assignment may skip
    /// some).
    pub eligible: u64,
    /// Active devices of the product in the stage's cohort, whatever their place in the order:
    /// with `eligible`, says why a stage takes no device.
    pub in_cohort: u64,
    /// Assignments made in this stage, all time (withdrawn ones excluded).
    pub counts: StageCounts,
    /// Assigned devices silent past the stall time (counted as failed by the gate).
    pub stalled: u64,
    /// The gate's verdict over its current window.
    pub verdict: GateVerdict,
}

impl StageStatus {
    /// Why the stage takes no device, when it takes none: an empty cohort, or a cohort whose
    /// devices all fall beyond this stage's percentage (or entered at an earlier stage).
    pub fn why_empty(&self) -> Option<String> {
        if self.eligible > 0 {
            return None;
        }
        let cohort = &self.plan.cohort;
        Some(match self.in_cohort {
            0 => format!("cohort {cohort} has no active device of this product"),
            n => format!(
                "none of the {n} active device{} of cohort {cohort} enters at this stage: each device's place \
                 in the order is fixed by its id and the rollout, and this stage takes the first {} % of the \
                 cohort (less any an earlier stage took); a stage with a higher percentage takes the others",
                if n == 1 { "" } else { "s" },
                self.plan.percent.as_f64()
            ),
        })
    }
}

/// Firmware devices downloaded for a rollout (with their device token, as the agent does).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Bytes of delta targets.
    pub delta_bytes: u64,
    /// Requests for delta targets (a resumed download is several).
    pub delta_requests: u64,
    /// Bytes of full images.
    pub image_bytes: u64,
    /// Requests for full images.
    pub image_requests: u64,
}

/// A rollout with its product, release and per-stage figures.
#[derive(Debug, Clone)]
pub struct RolloutStatus {
    /// The row.
    pub rollout: rollout::Model,
    /// Product name.
    pub product: String,
    /// Release version.
    pub version: String,
    /// In plan order.
    pub stages: Vec<StageStatus>,
    /// What its devices downloaded, deltas against full images.
    pub traffic: Traffic,
    /// How many of its devices speak hawkBit's device API: they verify no TUF metadata, and the
    /// outcomes they report count in the gate on their word.
    pub ddi_devices: u64,
}

/// The rollout `id` with its figures.
pub async fn rollout_status(svc: &Services, id: &str) -> Result<RolloutStatus, ServiceError> {
    let now = svc.now_secs();
    // One read transaction: on SQLite every figure comes from one snapshot; on PostgreSQL
    // (read committed) figures may straddle a concurrent report, which a status page tolerates.
    let txn = svc.db.begin().await?;
    let r = rollout_get(&txn, id)
        .await?
        .ok_or_else(|| ServiceError::not_found("unknown_rollout", format!("no rollout has id {id:?}")))?;
    let product = product_get(&txn, r.product_id).await?.map(|p| p.name).unwrap_or_default();
    let version = release_get(&txn, r.release_id).await?.map(|rel| rel.version).unwrap_or_default();
    let plans = parse_stages(&r)?;
    let gate = gate_of(&r)?;
    let all_time = stage_counts(&txn, &r, plans.len(), false, now).await?;
    let window = stage_counts(&txn, &r, plans.len(), true, now).await?;
    let (eligible, in_cohort) = eligible_per_stage(&txn, &r, &plans).await?;
    let mut traffic = Traffic::default();
    for row in traffic_of(&txn, &r.id).await? {
        let (bytes, requests) = (u64::try_from(row.bytes).unwrap_or(0), u64::try_from(row.requests).unwrap_or(0));
        match row.kind.as_str() {
            "delta" => (traffic.delta_bytes, traffic.delta_requests) = (bytes, requests),
            _ => (traffic.image_bytes, traffic.image_requests) = (bytes, requests),
        }
    }
    let ddi_devices = crate::db::ddi::assignment_count_ddi(&txn, &r.id).await?;
    txn.commit().await?;
    let stages = plans
        .into_iter()
        .enumerate()
        .map(|(i, plan)| {
            let in_window = window.get(i).copied().unwrap_or_default();
            StageStatus {
                plan,
                eligible: eligible.get(i).copied().unwrap_or(0),
                in_cohort: in_cohort.get(i).copied().unwrap_or(0),
                counts: all_time.get(i).copied().unwrap_or_default(),
                stalled: in_window.stalled,
                verdict: gate_verdict(&gate, &in_window),
            }
        })
        .collect();
    Ok(RolloutStatus { rollout: r, product, version, stages, traffic, ddi_devices })
}

/// A cohort's membership test: explicit members, or a selector over tags.
struct Membership {
    explicit: HashSet<String>,
    selector: Option<String>,
}

/// For each stage, how many active devices of the rollout's product enter the rollout at that
/// stage when all stages are open: the same rule as assignment (`stage_for_device` over the
/// device's bucket and cohorts), applied to the whole product at once; and how many are in the
/// stage's cohort at all.
async fn eligible_per_stage(
    db: &impl ConnectionTrait,
    r: &rollout::Model,
    plans: &[StagePlan],
) -> Result<(Vec<u64>, Vec<u64>), ServiceError> {
    let mut out = vec![0_u64; plans.len()];
    let mut members = vec![0_u64; plans.len()];
    let Some(last) = plans.len().checked_sub(1) else {
        return Ok((out, members));
    };
    let mut cohorts: HashMap<&str, Membership> = HashMap::new();
    for plan in plans {
        if cohorts.contains_key(plan.cohort.as_str()) {
            continue;
        }
        // A cohort missing from the database takes no device.
        let membership = match cohort_find(db, r.product_id, &plan.cohort).await? {
            Some(c) => Membership {
                explicit: cohort_members(db, c.id).await?.into_iter().collect(),
                selector: c.selector_tags,
            },
            None => Membership { explicit: HashSet::new(), selector: None },
        };
        cohorts.insert(&plan.cohort, membership);
    }
    for (_, device_id, tags, attributes) in device_ids_and_tags(db, r.product_id).await? {
        let tags = tag_set(&tags, attributes.as_deref());
        let in_cohort = |name: &str| {
            cohorts
                .get(name)
                .is_some_and(|m| m.explicit.contains(&device_id) || selector_matches(m.selector.as_deref(), &tags))
        };
        for (plan, count) in plans.iter().zip(members.iter_mut()) {
            if in_cohort(&plan.cohort) {
                *count += 1;
            }
        }
        if let Some(slot) =
            stage_for_device(plans, last, bucket(&r.id, &device_id), in_cohort).and_then(|i| out.get_mut(i))
        {
            *slot += 1;
        }
    }
    Ok((out, members))
}
