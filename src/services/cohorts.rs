//! Cohorts: named sets of one product's devices, by explicit ids and/or a tag selector.

use serde::Deserialize;
use serde_json::json;

use super::audit::record;
use super::auth::Caller;
use super::{ServiceError, Services};
use crate::db::cohorts::{
    cohort_find, cohort_insert, cohort_list, cohort_members, cohort_set_members, cohort_set_selector,
};
use crate::db::entities::{cohort, product};
use crate::db::products::{product_get_by_name, product_list};
use crate::domain::ids::{CohortName, DeviceId, Tag, parse_tags};
use crate::domain::names::ProductName;

/// Explicit member lists are capped so one request stays bounded; larger groups use tags.
pub const MAX_EXPLICIT_MEMBERS: usize = 100_000;

/// A cohort definition as an admin writes it.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CohortInput {
    /// Name, unique within the product.
    #[schema(value_type = CohortName)]
    pub name: String,
    /// Product name.
    #[schema(value_type = ProductName)]
    pub product: String,
    /// Explicit device ids (they need not have enrolled yet).
    #[serde(default)]
    #[schema(value_type = Vec<DeviceId>, max_items = 100_000)]
    pub devices: Vec<String>,
    /// Devices carrying all of these tags belong too.
    #[serde(default)]
    pub selector: Option<Selector>,
}

/// A tag selector.
#[derive(Debug, Clone, Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Selector {
    /// Tags a device must all carry (at least one).
    #[schema(value_type = Vec<Tag>, min_items = 1)]
    pub tags: Vec<String>,
}

/// A cohort with its explicit members.
#[derive(Debug, Clone)]
pub struct CohortDetail {
    /// The row.
    pub cohort: cohort::Model,
    /// Its product's name.
    pub product: String,
    /// Explicit members.
    pub devices: Vec<String>,
    /// Selector tags (empty: none).
    pub selector_tags: Vec<String>,
}

fn parse_members(devices: &[String]) -> Result<Vec<String>, ServiceError> {
    if devices.len() > MAX_EXPLICIT_MEMBERS {
        return Err(ServiceError::invalid(
            "too_many_members",
            format!("at most {MAX_EXPLICIT_MEMBERS} explicit members; use a tag selector for larger groups"),
        ));
    }
    let mut ids = devices.iter().map(|d| DeviceId::parse(d).map(|d| d.to_string())).collect::<Result<Vec<_>, _>>()?;
    ids.sort();
    ids.dedup();
    Ok(ids)
}

fn selector_json(selector: Option<&Selector>) -> Result<Option<String>, ServiceError> {
    match selector {
        None => Ok(None),
        Some(s) => {
            let tags = parse_tags(&s.tags)?;
            if tags.is_empty() {
                return Err(ServiceError::invalid("invalid_selector", "a selector needs at least one tag"));
            }
            let tags: Vec<&str> = tags.iter().map(|t| t.as_str()).collect();
            Ok(Some(serde_json::to_string(&tags).map_err(anyhow::Error::new)?))
        }
    }
}

async fn product_named(svc: &Services, name: &str) -> Result<product::Model, ServiceError> {
    product_get_by_name(&svc.db, name)
        .await?
        .ok_or_else(|| ServiceError::not_found("unknown_product", format!("product {name} does not exist")))
}

/// Creates a cohort.
pub async fn create_cohort(svc: &Services, caller: &Caller, input: CohortInput) -> Result<CohortDetail, ServiceError> {
    let name = CohortName::parse(&input.name)?;
    let product = product_named(svc, &input.product).await?;
    let members = parse_members(&input.devices)?;
    let selector = selector_json(input.selector.as_ref())?;
    if members.is_empty() && selector.is_none() {
        return Err(ServiceError::invalid("empty_cohort", "a cohort needs explicit devices, a tag selector, or both"));
    }
    let now = svc.now_secs();
    let txn = crate::db::begin_write(&svc.db).await?;
    if cohort_find(&txn, product.id, name.as_str()).await?.is_some() {
        return Err(ServiceError::conflict(
            "cohort_exists",
            format!("product {} already has a cohort {name}", product.name),
        ));
    }
    let row = cohort_insert(&txn, product.id, name.as_str(), selector.clone(), now).await?;
    cohort_set_members(&txn, row.id, &members).await?;
    // Membership decides who gets firmware: the audit keeps the ids, not only a count.
    let after = json!({"product": product.name, "devices": members, "selector": selector});
    record(&txn, now, caller, "cohort.create", &format!("cohort:{}/{name}", product.name), None, Some(after)).await?;
    txn.commit().await?;
    detail(svc, row, product.name).await
}

/// Replaces a cohort's members and/or selector (fields left out stay as they are).
pub async fn update_cohort(
    svc: &Services,
    caller: &Caller,
    product: &str,
    name: &str,
    devices: Option<Vec<String>>,
    selector: Option<Option<Selector>>,
) -> Result<CohortDetail, ServiceError> {
    let product = product_named(svc, product).await?;
    let now = svc.now_secs();
    let txn = crate::db::begin_write(&svc.db).await?;
    let row = cohort_find(&txn, product.id, name).await?.ok_or_else(|| {
        ServiceError::not_found("unknown_cohort", format!("product {} has no cohort {name}", product.name))
    })?;
    let old_members = cohort_members(&txn, row.id).await?;
    let before = json!({"devices": old_members.len(), "selector": row.selector_tags});
    let members = match &devices {
        Some(d) => parse_members(d)?,
        None => cohort_members(&txn, row.id).await?,
    };
    let selector_value = match &selector {
        Some(s) => selector_json(s.as_ref())?,
        None => row.selector_tags.clone(),
    };
    if members.is_empty() && selector_value.is_none() {
        return Err(ServiceError::invalid("empty_cohort", "a cohort needs explicit devices, a tag selector, or both"));
    }
    let row = cohort_set_selector(&txn, row, selector_value.clone(), now).await?;
    if devices.is_some() {
        cohort_set_members(&txn, row.id, &members).await?;
    }
    // Membership decides who gets firmware: the audit keeps which ids came and went.
    let old: std::collections::BTreeSet<&String> = old_members.iter().collect();
    let new: std::collections::BTreeSet<&String> = members.iter().collect();
    let after = json!({"devices": members.len(), "selector": selector_value,
        "added": new.difference(&old).collect::<Vec<_>>(), "removed": old.difference(&new).collect::<Vec<_>>()});
    record(&txn, now, caller, "cohort.update", &format!("cohort:{}/{name}", product.name), Some(before), Some(after))
        .await?;
    txn.commit().await?;
    detail(svc, row, product.name).await
}

async fn detail(svc: &Services, row: cohort::Model, product: String) -> Result<CohortDetail, ServiceError> {
    let devices = cohort_members(&svc.db, row.id).await?;
    let selector_tags = row.selector_tags.as_deref().and_then(|s| serde_json::from_str(s).ok()).unwrap_or_default();
    Ok(CohortDetail { cohort: row, product, devices, selector_tags })
}

/// One cohort.
pub async fn get_cohort(svc: &Services, product: &str, name: &str) -> Result<CohortDetail, ServiceError> {
    let product = product_named(svc, product).await?;
    let row = cohort_find(&svc.db, product.id, name).await?.ok_or_else(|| {
        ServiceError::not_found("unknown_cohort", format!("product {} has no cohort {name}", product.name))
    })?;
    detail(svc, row, product.name).await
}

/// Every cohort (of one product if given).
pub async fn list_cohorts(svc: &Services, product: Option<&str>) -> Result<Vec<CohortDetail>, ServiceError> {
    let product_id = match product {
        Some(p) => Some(product_named(svc, p).await?.id),
        None => None,
    };
    let names: std::collections::HashMap<i64, String> =
        product_list(&svc.db).await?.into_iter().map(|p| (p.id, p.name)).collect();
    let mut out = Vec::new();
    for row in cohort_list(&svc.db, product_id).await? {
        let product = names.get(&row.product_id).cloned().unwrap_or_default();
        out.push(detail(svc, row, product).await?);
    }
    Ok(out)
}
