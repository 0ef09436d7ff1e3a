//! Which releases a product's role keeps listing: the retention policy.
//!
//! A role that lists every release ever published grows by about 380 bytes a release, and every
//! device downloads it whole after each publish. So a release leaves the role ("delisted") once
//! nothing needs it; its file stays stored and publishing the same file again lists it again. A
//! listed release stays listed while any of these holds:
//! - it is among the product's `retain_newest` most recently listed releases;
//! - a device runs it, or is assigned it;
//! - a rollout that has not finished targets it (a draft one included);
//! - a rollback could send devices back to it: some device came from it in a rollout that can
//!   still be rolled back and whose own release is still listed.
//!
//! Delisting is not yanking: a yank withdraws a release for good, a delisted release is only out
//! of the metadata devices download. For a server-signed product the server applies the policy
//! when it signs; a manufacturer's CI asks for [`Advice`] and signs a role without the releases
//! it names, and the server checks each one again before it accepts the role.

use std::collections::HashSet;

use sea_orm::ConnectionTrait;

use super::ServiceError;
use crate::db::entities::{product, release};
use crate::db::releases::release_on_devices;
use crate::db::rollouts::{assignment_came_from, rollout_list};
use crate::domain::rollout::RolloutState;

/// The most a product may keep listed by recency alone.
pub const MAX_RETAIN_NEWEST: i64 = 10_000;

/// Why a release stays listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Keep {
    /// Among the `retain_newest` most recently listed.
    Newest,
    /// A device runs it or is assigned it.
    Devices,
    /// A rollout that has not finished targets it.
    RolloutTarget,
    /// A rollback could send devices back to it.
    RollbackTarget,
}

impl Keep {
    /// In words, for error messages.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Newest => "it is among the product's most recently listed releases",
            Self::Devices => "a device runs it or is assigned it",
            Self::RolloutTarget => "a rollout that has not finished targets it",
            Self::RollbackTarget => "a rollback could send devices back to it",
        }
    }
}

/// What the policy says about a product's listed releases.
#[derive(Debug, Default)]
pub struct Advice {
    /// Listed releases that may leave the role, oldest listed first.
    pub delist: Vec<release::Model>,
    /// Listed releases beyond the newest that stay, and why.
    pub kept: Vec<(release::Model, Keep)>,
}

/// Applies the policy to `listed` (the releases the role will list, oldest listed first, the
/// newest `adding` of them not yet published: they count towards the newest, but are not in
/// `listed`).
pub async fn advise(
    db: &impl ConnectionTrait,
    product: &product::Model,
    listed: &[release::Model],
    adding: usize,
) -> Result<Advice, ServiceError> {
    let keep_newest = usize::try_from(product.retain_newest).unwrap_or(0).saturating_sub(adding);
    let older = listed.len().saturating_sub(keep_newest);
    let mut advice = Advice::default();
    if older == 0 {
        return Ok(advice);
    }
    let facts = Facts::load(db, product, listed).await?;
    for r in &listed[..older] {
        match facts.keep(db, r).await? {
            Some(why) => advice.kept.push((r.clone(), why)),
            None => advice.delist.push(r.clone()),
        }
    }
    Ok(advice)
}

/// Why `release` must stay listed, or `None` if the policy lets it go (checked whatever its
/// recency: for a version a manufacturer asked to delist).
pub async fn keep_reason(
    db: &impl ConnectionTrait,
    product: &product::Model,
    listed: &[release::Model],
    adding: usize,
    release: &release::Model,
) -> Result<Option<Keep>, ServiceError> {
    let keep_newest = usize::try_from(product.retain_newest).unwrap_or(0).saturating_sub(adding);
    let older = listed.len().saturating_sub(keep_newest);
    if listed[older..].iter().any(|r| r.id == release.id) {
        return Ok(Some(Keep::Newest));
    }
    Facts::load(db, product, listed).await?.keep(db, release).await
}

/// The product's rollouts, read once per decision.
struct Facts {
    /// Releases targeted by rollouts that have not finished.
    targets: HashSet<i64>,
    /// Started rollouts whose own release is still listed.
    rollbackable: Vec<String>,
}

impl Facts {
    async fn load(
        db: &impl ConnectionTrait,
        product: &product::Model,
        listed: &[release::Model],
    ) -> Result<Self, ServiceError> {
        let listed_ids: HashSet<i64> = listed.iter().map(|r| r.id).collect();
        let rollouts = rollout_list(db, Some(product.id), None).await?;
        let mut facts = Self { targets: HashSet::new(), rollbackable: Vec::new() };
        for r in rollouts {
            let Some(state) = RolloutState::parse(&r.state) else { continue };
            if state == RolloutState::Draft || state.is_active() {
                facts.targets.insert(r.release_id);
            }
            // Rolled back too: its devices go back to where they came from at their next poll.
            if state != RolloutState::Draft && listed_ids.contains(&r.release_id) {
                facts.rollbackable.push(r.id);
            }
        }
        Ok(facts)
    }

    async fn keep(&self, db: &impl ConnectionTrait, r: &release::Model) -> Result<Option<Keep>, ServiceError> {
        if self.targets.contains(&r.id) {
            return Ok(Some(Keep::RolloutTarget));
        }
        if release_on_devices(db, r.id).await? {
            return Ok(Some(Keep::Devices));
        }
        if assignment_came_from(db, r.id, &self.rollbackable).await? {
            return Ok(Some(Keep::RollbackTarget));
        }
        Ok(None)
    }
}
