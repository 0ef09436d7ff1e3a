//! Reading the fleet: devices as readers see them, one device with its report history and
//! assignments, and a product's installed versions for recalls (read page by page, so a fleet of
//! any size never sits in memory at once). Searching the fleet is `device_search`.
//!
//! Read-only: changes to devices are in `manage_device`.

use std::collections::{HashMap, HashSet};

use futures_util::Stream;
use sea_orm::{ConnectionTrait, DatabaseConnection};

use super::{ServiceError, Services};
use crate::db::devices::{DeviceCursor, DeviceFilter, DeviceOrder, device_find, device_list, device_reports_recent};
use crate::db::entities::{assignment, device, device_report, product, release};
use crate::db::products::{product_get_by_name, product_list};
use crate::db::releases::release_list_by_ids;
use crate::db::rollouts::assignment_list_by_device;

/// Reports shown with one device: enough to see its last days of polling.
pub const REPORTS_SHOWN: u64 = 50;
/// Rows read per step of the installed-version export: bounded memory whatever the fleet size.
pub const EXPORT_CHUNK: u64 = 1_000;

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

/// A device's stored tags (a JSON array) as a set.
pub(super) fn tag_set(stored: &str, attributes: Option<&str>) -> HashSet<String> {
    let mut tags: HashSet<String> =
        serde_json::from_str::<Vec<String>>(stored).unwrap_or_default().into_iter().collect();
    // A DDI device's attributes (`configData`) count as tags `name:value`, lowercased, so that
    // cohort selectors can use them; one that would not make a valid tag is left out.
    let attributes: std::collections::BTreeMap<String, String> =
        attributes.and_then(|a| serde_json::from_str(a).ok()).unwrap_or_default();
    for (name, value) in attributes {
        let tag = format!("{name}:{value}").to_lowercase();
        if crate::domain::ids::Tag::parse(&tag).is_ok() {
            tags.insert(tag);
        }
    }
    tags
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
                Cursor::After(id) => Some(DeviceCursor { key: 0, id }),
                Cursor::Done => return Ok(None),
            };
            let page = device_list(&db, &filter, DeviceOrder::Id, after.as_ref(), EXPORT_CHUNK).await?;
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
