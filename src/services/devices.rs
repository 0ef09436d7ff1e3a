//! Reading the fleet: listing devices with filters and keyset paging, one device with its
//! report history and assignments, and a product's installed versions for recalls (read page by
//! page, so a fleet of any size never sits in memory at once).
//!
//! Read-only: changes to devices are in `manage_device`.

use std::collections::{HashMap, HashSet};

use futures_util::Stream;
use sea_orm::{ConnectionTrait, DatabaseConnection};

use super::assign_device::selector_matches;
use super::{ServiceError, Services};
use crate::db::cohorts::{cohort_find, cohort_members};
use crate::db::devices::{
    DeviceFilter, device_count, device_find, device_list, device_list_ids_and_tags, device_reports_recent,
};
use crate::db::entities::{assignment, device, device_report, product, release};
use crate::db::products::{product_get_by_name, product_list};
use crate::db::releases::release_list_by_ids;
use crate::db::rollouts::{assignment_list_by_device, assignment_list_for_devices, rollout_get};
use crate::domain::plan::AssignmentState;

/// Devices per page unless the caller asks otherwise.
pub const DEFAULT_PAGE: u64 = 100;
/// The largest page: a screenful for people, a sensible step for scripts.
pub const MAX_PAGE: u64 = 1_000;
/// Reports shown with one device: enough to see its last days of polling.
pub const REPORTS_SHOWN: u64 = 50;
/// Rows read per step of the installed-version export: bounded memory whatever the fleet size.
pub const EXPORT_CHUNK: u64 = 1_000;

/// Which devices to list; every filter optional.
#[derive(Debug, Default, Clone)]
pub struct DeviceQuery {
    /// Product name.
    pub product: Option<String>,
    /// Cohort name (needs `product`): explicit members and devices its selector picks.
    pub cohort: Option<String>,
    /// Devices carrying this tag.
    pub tag: Option<String>,
    /// `active` or `decommissioned`.
    pub status: Option<String>,
    /// Installed version equals.
    pub installed_version: Option<String>,
    /// Only devices this rollout assigned (each listed with its assignment there).
    pub rollout: Option<String>,
    /// Only devices whose assignment in `rollout` (or, without one, in any rollout) stands
    /// here: `failed`, `rejected`, `installed`, `assigned`, `downloading`, `installing`,
    /// `awaiting_reboot`, `withdrawn`.
    pub outcome: Option<String>,
    /// Page size (1 to [`MAX_PAGE`], default [`DEFAULT_PAGE`]).
    pub limit: Option<u64>,
    /// Only devices whose id sorts after this one (the previous page's `next_after`).
    pub after: Option<String>,
}

/// A device as readers see it.
#[derive(Debug, Clone)]
pub struct DeviceView {
    /// The row.
    pub device: device::Model,
    /// Its product's name.
    pub product: String,
    /// The release its director currently names, if any.
    pub assigned: Option<release::Model>,
    /// Its assignment in the rollout the list was filtered by (the newest, if several).
    pub in_rollout: Option<assignment::Model>,
}

/// One page of devices.
#[derive(Debug, Clone)]
pub struct DevicePage {
    /// The devices, by id.
    pub devices: Vec<DeviceView>,
    /// The cursor of the next page; `None` when this is the last.
    pub next_after: Option<String>,
    /// How many devices match the filters, all pages together.
    pub total: u64,
}

/// An assignment with the version it assigns.
#[derive(Debug, Clone)]
pub struct AssignmentView {
    /// The row.
    pub assignment: assignment::Model,
    /// The assigned release's version (empty if the release row is gone).
    pub version: String,
}

/// One device in full.
#[derive(Debug, Clone)]
pub struct DeviceDetail {
    /// The device.
    pub view: DeviceView,
    /// Its newest reports, newest first.
    pub reports: Vec<device_report::Model>,
    /// Its assignments in every rollout, newest first.
    pub assignments: Vec<AssignmentView>,
}

/// Whether `status` is a device status.
fn parse_status(status: Option<String>) -> Result<Option<String>, ServiceError> {
    match status.as_deref() {
        None | Some("active" | "decommissioned") => Ok(status),
        Some(other) => Err(ServiceError::invalid(
            "invalid_status",
            format!("{other:?} is not a device status: active or decommissioned"),
        )),
    }
}

pub(super) async fn product_named(db: &impl ConnectionTrait, name: &str) -> Result<product::Model, ServiceError> {
    product_get_by_name(db, name)
        .await?
        .ok_or_else(|| ServiceError::not_found("unknown_product", format!("product {name} does not exist")))
}

pub(super) fn device_not_found(id: &str) -> ServiceError {
    ServiceError::not_found("unknown_device", format!("no device has id {id:?}"))
}

/// Product names and assigned releases for a batch of rows.
pub(super) async fn views(
    db: &impl ConnectionTrait,
    rows: Vec<device::Model>,
) -> Result<Vec<DeviceView>, ServiceError> {
    let names: HashMap<i64, String> = product_list(db).await?.into_iter().map(|p| (p.id, p.name)).collect();
    let mut ids: Vec<i64> = rows.iter().filter_map(|d| d.assigned_release_id).collect();
    ids.sort_unstable();
    ids.dedup();
    let releases: HashMap<i64, release::Model> =
        release_list_by_ids(db, ids).await?.into_iter().map(|r| (r.id, r)).collect();
    Ok(rows
        .into_iter()
        .map(|device| DeviceView {
            product: names.get(&device.product_id).cloned().unwrap_or_default(),
            assigned: device.assigned_release_id.and_then(|id| releases.get(&id).cloned()),
            in_rollout: None,
            device,
        })
        .collect())
}

/// Lists devices matching `q`, one page at a time.
pub async fn list_devices(svc: &Services, q: DeviceQuery) -> Result<DevicePage, ServiceError> {
    search_devices(svc, None, q).await
}

/// Like [`list_devices`], and only devices whose id contains `id_part`, ignoring ASCII case
/// (the admin UI's search box; an empty part matches every device).
pub async fn search_devices(svc: &Services, id_part: Option<&str>, q: DeviceQuery) -> Result<DevicePage, ServiceError> {
    let id_part = id_part.filter(|p| !p.is_empty());
    let id_chars = |p: &str| p.len() <= 128 && p.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if id_part.is_some_and(|p| !id_chars(p)) {
        return Err(ServiceError::invalid(
            "invalid_device_search",
            "search for part of a device id: up to 128 of A-Z, a-z, 0-9, '.', '_' and '-'",
        ));
    }
    let limit = q.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ServiceError::invalid("invalid_limit", format!("limit must be between 1 and {MAX_PAGE}")));
    }
    // A malformed cohort name is a 400 before anything is looked up, not a 404 after.
    let cohort = q.cohort.as_deref().map(crate::domain::ids::CohortName::parse).transpose()?;
    let product = match &q.product {
        Some(name) => Some(product_named(&svc.db, name).await?),
        None => None,
    };
    let (rollout, outcome) = assignment_filter(&svc.db, q.rollout.as_deref(), q.outcome.as_deref()).await?;
    let mut filter = DeviceFilter {
        rollout: rollout.clone(),
        outcome,
        product_id: product.as_ref().map(|p| p.id),
        device_ids: None,
        // Parsed, so the filter means the same on SQLite (case-blind LIKE) and PostgreSQL.
        tag: q.tag.map(|t| crate::domain::ids::Tag::parse(&t).map(|t| t.to_string())).transpose()?,
        status: parse_status(q.status)?,
        installed_version: q.installed_version,
        id_contains: id_part.map(str::to_owned),
    };
    let (mut rows, total) = match (cohort.as_ref().map(crate::domain::ids::CohortName::as_str), &product) {
        (None, _) => {
            let total = device_count(&svc.db, &filter).await?;
            (device_list(&svc.db, &filter, q.after.as_deref(), limit + 1).await?, total)
        }
        (Some(cohort), product) => {
            // Without a product: that cohort in every product that has one by that name.
            let products = match product {
                Some(product) => vec![product.clone()],
                None => products_with_cohort(&svc.db, cohort).await?,
            };
            let mut members = Vec::new();
            for product in &products {
                let filter = DeviceFilter { product_id: Some(product.id), ..filter.clone() };
                members.extend(cohort_matches(&svc.db, product, cohort, &filter).await?);
            }
            // Paged in Rust's byte order, which PostgreSQL's collation need not share.
            members.sort_unstable();
            let total = members.len() as u64;
            let after = q.after.as_deref().unwrap_or_default();
            let start = members.partition_point(|id| id.as_str() <= after);
            let page: Vec<String> =
                members.into_iter().skip(start).take(usize::try_from(limit + 1).unwrap_or(usize::MAX)).collect();
            filter.device_ids = Some(page);
            let mut rows = device_list(&svc.db, &filter, None, limit + 1).await?;
            rows.sort_unstable_by(|a, b| a.device_id.cmp(&b.device_id));
            (rows, total)
        }
    };
    // One row beyond the page says whether there is a next page, without another query.
    let more = rows.len() as u64 > limit;
    rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let next_after = if more { rows.last().map(|d| d.device_id.clone()) } else { None };
    let mut devices = views(&svc.db, rows).await?;
    if let Some(rollout) = rollout {
        let rows = devices.iter().map(|v| v.device.id).collect();
        let mut newest: HashMap<i64, assignment::Model> = HashMap::new();
        for a in assignment_list_for_devices(&svc.db, rows, vec![rollout]).await? {
            if newest.get(&a.device_row_id).is_none_or(|kept| kept.id < a.id) {
                newest.insert(a.device_row_id, a);
            }
        }
        for v in &mut devices {
            v.in_rollout = newest.remove(&v.device.id);
        }
    }
    Ok(DevicePage { devices, next_after, total })
}

/// The assignment filters of a device search, checked: the rollout (which must exist) and the
/// assignment state.
async fn assignment_filter(
    db: &impl ConnectionTrait,
    rollout: Option<&str>,
    outcome: Option<&str>,
) -> Result<(Option<String>, Option<String>), ServiceError> {
    let outcome = outcome
        .map(|o| {
            AssignmentState::parse(o).map(|s| s.as_str().to_owned()).ok_or_else(|| {
                ServiceError::invalid(
                    "invalid_outcome",
                    format!(
                        "{o:?} is not an outcome: failed, rejected, installed, assigned, downloading, installing, \
                         awaiting_reboot or withdrawn"
                    ),
                )
            })
        })
        .transpose()?;
    let Some(rollout) = rollout else { return Ok((None, outcome)) };
    let id = crate::domain::ids::RolloutId::parse(rollout)?;
    if rollout_get(db, id.as_str()).await?.is_none() {
        return Err(ServiceError::not_found("unknown_rollout", format!("no rollout has id {rollout:?}")));
    }
    Ok((Some(id.as_str().to_owned()), outcome))
}

/// The products that have a cohort called `name`; none is a 404.
async fn products_with_cohort(db: &impl ConnectionTrait, name: &str) -> Result<Vec<product::Model>, ServiceError> {
    let mut found = Vec::new();
    for product in product_list(db).await? {
        if cohort_find(db, product.id, name).await?.is_some() {
            found.push(product);
        }
    }
    if found.is_empty() {
        return Err(ServiceError::not_found("unknown_cohort", format!("no product has a cohort {name}")));
    }
    Ok(found)
}

/// The ids of the devices matching `filter` that belong to cohort `name`: explicit
/// members, and devices whose tags satisfy its selector.
///
/// Membership is decided here with the same rule the assignment uses
/// ([`selector_matches`]), over the narrow (id, tags) columns of the product's matching
/// devices; a page of the result is then read in full. Passing every member id to SQL
/// instead would overrun the bound-parameter limits for large cohorts.
async fn cohort_matches(
    db: &impl ConnectionTrait,
    product: &product::Model,
    name: &str,
    filter: &DeviceFilter,
) -> Result<Vec<String>, ServiceError> {
    let cohort = cohort_find(db, product.id, name).await?.ok_or_else(|| {
        ServiceError::not_found("unknown_cohort", format!("product {} has no cohort {name}", product.name))
    })?;
    let explicit: HashSet<String> = cohort_members(db, cohort.id).await?.into_iter().collect();
    let selector = cohort.selector_tags.as_deref();
    Ok(device_list_ids_and_tags(db, filter)
        .await?
        .into_iter()
        .filter(|(id, tags)| explicit.contains(id) || selector_matches(selector, &tag_set(tags)))
        .map(|(id, _)| id)
        .collect())
}

/// A device's stored tags (a JSON array) as a set.
pub(super) fn tag_set(stored: &str) -> HashSet<String> {
    serde_json::from_str::<Vec<String>>(stored).unwrap_or_default().into_iter().collect()
}

/// One device with its newest reports and its assignments.
pub async fn get_device(svc: &Services, device_id: &str) -> Result<DeviceDetail, ServiceError> {
    let row = device_find(&svc.db, device_id).await?.ok_or_else(|| device_not_found(device_id))?;
    let reports = device_reports_recent(&svc.db, row.id, REPORTS_SHOWN).await?;
    let assignments = assignment_list_by_device(&svc.db, row.id).await?;
    let mut ids: Vec<i64> = assignments.iter().map(|a| a.release_id).collect();
    ids.sort_unstable();
    ids.dedup();
    let versions: HashMap<i64, String> =
        release_list_by_ids(&svc.db, ids).await?.into_iter().map(|r| (r.id, r.version)).collect();
    let assignments = assignments
        .into_iter()
        .map(|a| AssignmentView { version: versions.get(&a.release_id).cloned().unwrap_or_default(), assignment: a })
        .collect();
    let view = views(&svc.db, vec![row]).await?.into_iter().next().ok_or_else(|| device_not_found(device_id))?;
    Ok(DeviceDetail { view, reports, assignments })
}

/// Every device of `product`, in pages of [`EXPORT_CHUNK`] ordered by device id, for the
/// installed-version export. The product is checked before the first page, so an unknown one
/// is an error rather than an empty export. Pages are separate queries: a device enrolled
/// while the export runs appears if its id sorts after the cursor; none appears twice.
pub async fn installed_devices(
    svc: &Services,
    product: &str,
) -> Result<impl Stream<Item = Result<Vec<device::Model>, ServiceError>> + 'static, ServiceError> {
    let product = product_named(&svc.db, product).await?;
    let db: DatabaseConnection = svc.db.clone();
    let filter = DeviceFilter { product_id: Some(product.id), ..Default::default() };
    Ok(futures_util::stream::try_unfold(Cursor::Start, move |cursor| {
        let (db, filter) = (db.clone(), filter.clone());
        async move {
            let after = match cursor {
                Cursor::Start => None,
                Cursor::After(id) => Some(id),
                Cursor::Done => return Ok(None),
            };
            let page = device_list(&db, &filter, after.as_deref(), EXPORT_CHUNK).await?;
            let next = match page.last() {
                Some(last) if page.len() as u64 == EXPORT_CHUNK => Cursor::After(last.device_id.clone()),
                Some(_) => Cursor::Done,
                None => return Ok(None),
            };
            Ok(Some((page, next)))
        }
    }))
}

/// Where the export stands.
enum Cursor {
    Start,
    After(String),
    Done,
}
