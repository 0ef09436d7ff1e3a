//! Read models for the admin UI's catalog pages: products with their release counts, where a
//! release is rolled out, how many active devices each cohort matches right now, and
//! enrollment tokens with their product names. Reads only: every change goes through the
//! resource's own service. Must not import `http`.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};

use super::assign_device::selector_matches;
use super::cohorts::CohortDetail;
use super::devices::tag_set;
use super::{ServiceError, Services};
use crate::db::devices::device_ids_and_tags;
use crate::db::enrollment::{enrollment_token_get, enrollment_token_list};
use crate::db::entities::{enrollment_token, product, release, rollout};
use crate::db::products::product_list;
use crate::db::releases::release_list_by_product;
use crate::db::rollouts::rollout_list;
use crate::domain::names::FirmwareVersion;

/// A product with what its listing shows.
#[derive(Debug, Clone)]
pub struct ProductSummary {
    /// The row.
    pub product: product::Model,
    /// Its hardware ids.
    pub hardware_ids: Vec<String>,
    /// How many releases it has.
    pub releases: usize,
    /// Its highest version (semantic order), if any.
    pub newest: Option<String>,
}

/// Every product with its release count and newest version.
pub async fn product_summaries(svc: &Services) -> Result<Vec<ProductSummary>, ServiceError> {
    let mut out = Vec::new();
    for product in product_list(&svc.db).await? {
        let releases = release_list_by_product(&svc.db, product.id).await?;
        // Semantic order, not text order: 1.10.0 is newer than 1.9.0.
        let newest = releases
            .iter()
            .filter_map(|r| FirmwareVersion::parse(&r.version).ok().map(|v| (v, &r.version)))
            .max_by(|a, b| a.0.cmp(&b.0))
            .map(|(_, v)| v.clone());
        out.push(ProductSummary {
            hardware_ids: serde_json::from_str(&product.hardware_ids).unwrap_or_default(),
            releases: releases.len(),
            newest,
            product,
        });
    }
    Ok(out)
}

/// The rollouts (any state) that send `release`, newest first.
pub async fn release_rollouts(svc: &Services, release: &release::Model) -> Result<Vec<rollout::Model>, ServiceError> {
    // A product has few rollouts; filtering them here avoids a query used by nothing else.
    let rollouts = rollout_list(&svc.db, Some(release.product_id), None).await?;
    Ok(rollouts.into_iter().filter(|r| r.release_id == release.id).collect())
}

/// For each cohort, how many active devices of its product it matches now (explicit members
/// that enrolled, and devices whose tags satisfy its selector): the rule assignment uses.
pub async fn cohort_match_counts(svc: &Services, cohorts: &[CohortDetail]) -> Result<Vec<u64>, ServiceError> {
    let mut fleets: HashMap<i64, Vec<(String, HashSet<String>)>> = HashMap::new();
    let mut out = Vec::with_capacity(cohorts.len());
    for c in cohorts {
        let product_id = c.cohort.product_id;
        if let Entry::Vacant(slot) = fleets.entry(product_id) {
            let devices = device_ids_and_tags(&svc.db, product_id).await?;
            slot.insert(
                devices
                    .into_iter()
                    .map(|(_, id, tags, attributes)| (id, tag_set(&tags, attributes.as_deref())))
                    .collect(),
            );
        }
        let explicit: HashSet<&String> = c.devices.iter().collect();
        let selector = c.cohort.selector_tags.as_deref();
        let count = fleets.get(&product_id).map_or(0, |devices| {
            devices.iter().filter(|(id, tags)| explicit.contains(id) || selector_matches(selector, tags)).count()
        });
        out.push(count as u64);
    }
    Ok(out)
}

/// How many active devices cohort `c` matches now.
pub async fn cohort_match_count(svc: &Services, c: &CohortDetail) -> Result<u64, ServiceError> {
    Ok(cohort_match_counts(svc, std::slice::from_ref(c)).await?.into_iter().next().unwrap_or(0))
}

/// An enrollment token with its product's name.
#[derive(Debug, Clone)]
pub struct TokenSummary {
    /// The row (no secret: only its hash and prefix are stored).
    pub token: enrollment_token::Model,
    /// Its product's name.
    pub product: String,
}

/// Every enrollment token with its product's name.
pub async fn enrollment_token_summaries(svc: &Services) -> Result<Vec<TokenSummary>, ServiceError> {
    let names: HashMap<i64, String> = product_list(&svc.db).await?.into_iter().map(|p| (p.id, p.name)).collect();
    Ok(enrollment_token_list(&svc.db)
        .await?
        .into_iter()
        .map(|token| TokenSummary { product: names.get(&token.product_id).cloned().unwrap_or_default(), token })
        .collect())
}

/// Enrollment token `id` with its product's name, or 404.
pub async fn enrollment_token_summary(svc: &Services, id: i64) -> Result<TokenSummary, ServiceError> {
    let token = enrollment_token_get(&svc.db, id).await?.ok_or_else(|| {
        ServiceError::not_found("unknown_enrollment_token", format!("no enrollment token has id {id}"))
    })?;
    let product = crate::db::products::product_get(&svc.db, token.product_id).await?.map(|p| p.name);
    Ok(TokenSummary { product: product.unwrap_or_default(), token })
}
