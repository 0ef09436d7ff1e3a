//! Searching the fleet: devices by product, cohort, tag, status, installed version, rollout,
//! stage, outcome and last report, ordered by id or by when they were last seen, one page at a
//! time (keyset paging, so a fleet of any size pages in constant memory).
//!
//! By id, a walk through the pages lists every device once. By last seen, the key moves
//! whenever a device reports: one that reports while the pages are walked may be listed twice
//! or passed over (the sort answers "who has been silent longest", not "list everyone").
//!
//! Read-only. What a device looks like to readers is `devices`.

use std::collections::{HashMap, HashSet};

use sea_orm::ConnectionTrait;

use super::assign_device::selector_matches;
use super::devices::{DeviceView, product_named, tag_set, views};
use super::{ServiceError, Services};
use crate::db::cohorts::{cohort_find, cohort_members};
use crate::db::devices::{
    DeviceCursor, DeviceFilter, DeviceOrder, Seen, device_count, device_find, device_list, device_list_ids_and_tags,
};
use crate::db::entities::{assignment, device, product};
use crate::db::products::product_list;
use crate::db::rollouts::{assignment_list_for_devices, rollout_get};
use crate::domain::plan::AssignmentState;
use crate::domain::rollout::MAX_STAGES;

/// Devices per page unless the caller asks otherwise.
pub const DEFAULT_PAGE: u64 = 100;
/// The largest page: a screenful for people, a sensible step for scripts.
pub const MAX_PAGE: u64 = 1_000;
/// A device that missed this many polls in a row counts as offline.
pub const OFFLINE_AFTER_POLLS: u64 = 3;
/// The longest `silent_for` accepted: ten years.
const SILENT_FOR_MAX: u64 = 10 * 366 * 86_400;

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
    /// Only devices that entered `rollout` (or, without one, any rollout) at this stage
    /// (0-based, as `current_stage`).
    pub stage: Option<u32>,
    /// `online` (reported within [`OFFLINE_AFTER_POLLS`] poll intervals), `offline` (reported
    /// before, not since) or `never` (never reported).
    pub seen: Option<String>,
    /// Only devices not heard from for at least this many seconds: no report in that time,
    /// and, if they never reported, enrolled before it.
    pub silent_for: Option<u64>,
    /// `device_id` (the default), `last_seen` (the longest silent first) or `-last_seen`
    /// (the most recently seen first).
    pub sort: Option<String>,
    /// Page size (1 to [`MAX_PAGE`], default [`DEFAULT_PAGE`]).
    pub limit: Option<u64>,
    /// The previous page's `next_after`: a device id, preceded by its sort key and `:` when
    /// sorted by last seen. A bare id there places the page after that device as it sorts now.
    pub after: Option<String>,
}

/// One page of devices.
#[derive(Debug, Clone)]
pub struct DevicePage {
    /// The devices, in the order asked.
    pub devices: Vec<DeviceView>,
    /// The cursor of the next page; `None` when this is the last.
    pub next_after: Option<String>,
    /// How many devices match the filters, all pages together.
    pub total: u64,
    /// The time (Unix seconds) the last-seen filters were judged at: who is offline is judged
    /// at this time too.
    pub now: i64,
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

/// Whether `p` could be (part of) a device id: up to 128 of `[A-Za-z0-9._-]`.
fn id_chars(p: &str) -> bool {
    p.len() <= 128 && p.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// Lists devices matching `q`, one page at a time.
pub async fn list_devices(svc: &Services, q: DeviceQuery) -> Result<DevicePage, ServiceError> {
    search_devices(svc, None, q).await
}

/// Like [`list_devices`], and only devices whose id contains `id_part`, ignoring ASCII case
/// (the admin UI's search box; an empty part matches every device).
pub async fn search_devices(svc: &Services, id_part: Option<&str>, q: DeviceQuery) -> Result<DevicePage, ServiceError> {
    let id_part = id_part.filter(|p| !p.is_empty());
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
    let (rollout, outcome, stage) =
        assignment_filter(&svc.db, q.rollout.as_deref(), q.outcome.as_deref(), q.stage).await?;
    let now = svc.now_secs();
    let order = parse_sort(q.sort.as_deref())?;
    let after = match q.after.as_deref().filter(|a| !a.is_empty()) {
        Some(a) => Some(parse_cursor(&svc.db, order, a).await?),
        None => None,
    };
    let mut filter = DeviceFilter {
        rollout: rollout.clone(),
        outcome,
        stage,
        seen: parse_seen(q.seen.as_deref(), now, offline_after(svc))?,
        silent_since: q.silent_for.map(|s| silent_since(s, now)).transpose()?,
        product_id: product.as_ref().map(|p| p.id),
        device_ids: None,
        // Parsed, so the filter means the same on SQLite (case-blind LIKE) and PostgreSQL.
        tag: q.tag.map(|t| crate::domain::ids::Tag::parse(&t).map(|t| t.to_string())).transpose()?,
        status: parse_status(q.status)?,
        installed_version: q.installed_version,
        id_contains: id_part.map(str::to_owned),
    };
    let (rows, total, next_after) = match (cohort.as_ref().map(crate::domain::ids::CohortName::as_str), &product) {
        (None, _) => {
            let total = device_count(&svc.db, &filter).await?;
            // One row beyond the page says whether there is a next page, without another query.
            let mut rows = device_list(&svc.db, &filter, order, after.as_ref(), limit + 1).await?;
            let more = rows.len() as u64 > limit;
            rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
            let next_after = rows.last().filter(|_| more).map(|d| cursor_text(order, &cursor_of(order, d)));
            (rows, total, next_after)
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
                members.extend(
                    cohort_matches(&svc.db, product, cohort, &filter)
                        .await?
                        .into_iter()
                        .map(|(id, last_seen)| DeviceCursor { key: order.key_of(last_seen), id }),
                );
            }
            // Ordered and paged in Rust's byte order, which PostgreSQL's collation need not share.
            let by_key = |a: &DeviceCursor, b: &DeviceCursor| a.key.cmp(&b.key).then_with(|| a.id.cmp(&b.id));
            members.sort_unstable_by(by_key);
            let total = members.len() as u64;
            let start = after.as_ref().map_or(0, |after| members.partition_point(|m| by_key(m, after).is_le()));
            let mut page: Vec<DeviceCursor> =
                members.into_iter().skip(start).take(usize::try_from(limit + 1).unwrap_or(usize::MAX)).collect();
            // Paged on the keys the members were sorted by: the rows read next may have moved
            // (a report in between) or dropped out of a last-seen filter.
            let more = page.len() as u64 > limit;
            page.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
            let next_after = page.last().filter(|_| more).map(|c| cursor_text(order, c));
            filter.device_ids = Some(page.iter().map(|m| m.id.clone()).collect());
            let mut rows = device_list(&svc.db, &filter, DeviceOrder::Id, None, limit).await?;
            let place: HashMap<&str, usize> = page.iter().enumerate().map(|(i, m)| (m.id.as_str(), i)).collect();
            rows.sort_unstable_by_key(|d| place.get(d.device_id.as_str()).copied().unwrap_or(usize::MAX));
            (rows, total, next_after)
        }
    };
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
    Ok(DevicePage { devices, next_after, total, now })
}

/// The assignment filters of a device search, checked: the rollout (which must exist), the
/// assignment state and the stage (within the rollout's, when one is named).
async fn assignment_filter(
    db: &impl ConnectionTrait,
    rollout: Option<&str>,
    outcome: Option<&str>,
    stage: Option<u32>,
) -> Result<(Option<String>, Option<String>, Option<i32>), ServiceError> {
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
    let Some(rollout) = rollout else {
        // Like an outcome, a stage without a rollout means "in any rollout": devices that
        // entered some rollout at that stage (every schema-valid query is a question).
        if let Some(n) = stage.filter(|&n| n as usize >= MAX_STAGES) {
            return Err(ServiceError::invalid(
                "invalid_stage",
                format!("a rollout has at most {MAX_STAGES} stages, numbered from 0: there is no stage {n}"),
            ));
        }
        return Ok((None, outcome, stage.map(stage_column)));
    };
    let id = crate::domain::ids::RolloutId::parse(rollout)?;
    let Some(row) = rollout_get(db, id.as_str()).await? else {
        return Err(ServiceError::not_found("unknown_rollout", format!("no rollout has id {rollout:?}")));
    };
    let stage = match stage {
        None => None,
        Some(n) => {
            let count = super::rollout_view::view_of(&row)?.stages.len();
            if n as usize >= count {
                let plural = if count == 1 { "" } else { "s" };
                return Err(ServiceError::invalid(
                    "invalid_stage",
                    format!("rollout {rollout} has {count} stage{plural}, numbered from 0: there is no stage {n}"),
                ));
            }
            Some(stage_column(n))
        }
    };
    Ok((Some(id.as_str().to_owned()), outcome, stage))
}

/// A stage number as the assignment table stores it (the API bounds it far below `i32::MAX`).
fn stage_column(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// How long a device may stay silent before it counts as offline: [`OFFLINE_AFTER_POLLS`]
/// poll intervals, as this server asks devices to poll.
pub fn offline_after(svc: &Services) -> i64 {
    i64::try_from(OFFLINE_AFTER_POLLS * svc.config.device_poll_seconds).unwrap_or(i64::MAX)
}

/// Whether a device last seen at `last_seen_at` counts as offline at `now` (one that never
/// reported is not: it is "never seen").
pub fn is_offline(last_seen_at: Option<i64>, now: i64, offline_after: i64) -> bool {
    last_seen_at.is_some_and(|at| now.saturating_sub(at) > offline_after)
}

fn parse_seen(seen: Option<&str>, now: i64, offline_after: i64) -> Result<Option<Seen>, ServiceError> {
    let cutoff = now.saturating_sub(offline_after);
    match seen {
        None => Ok(None),
        Some("online") => Ok(Some(Seen::Since(cutoff))),
        Some("offline") => Ok(Some(Seen::NotSince(cutoff))),
        Some("never") => Ok(Some(Seen::Never)),
        Some(other) => Err(ServiceError::invalid(
            "invalid_seen",
            format!("{other:?} is not a last-seen filter: online, offline or never"),
        )),
    }
}

fn silent_since(seconds: u64, now: i64) -> Result<i64, ServiceError> {
    if !(1..=SILENT_FOR_MAX).contains(&seconds) {
        return Err(ServiceError::invalid(
            "invalid_silent_for",
            format!("silent_for is a number of seconds from 1 to {SILENT_FOR_MAX} (ten years)"),
        ));
    }
    Ok(now.saturating_sub(i64::try_from(seconds).unwrap_or(i64::MAX)))
}

fn parse_sort(sort: Option<&str>) -> Result<DeviceOrder, ServiceError> {
    match sort {
        None | Some("device_id") => Ok(DeviceOrder::Id),
        Some("last_seen") => Ok(DeviceOrder::LastSeen),
        Some("-last_seen") => Ok(DeviceOrder::LastSeenDesc),
        Some(other) => Err(ServiceError::invalid(
            "invalid_sort",
            format!("{other:?} is not a sort order: device_id, last_seen (longest silent first) or -last_seen"),
        )),
    }
}

/// The cursor after device `d`: its id when ordered by id, else `key:id`.
/// Where `d` sorts in `order`.
fn cursor_of(order: DeviceOrder, d: &device::Model) -> DeviceCursor {
    DeviceCursor { key: order.key_of(d.last_seen_at), id: d.device_id.clone() }
}

/// A page cursor as `next_after` gives it: the id alone by id, `key:id` by last seen.
fn cursor_text(order: DeviceOrder, c: &DeviceCursor) -> String {
    match order {
        DeviceOrder::Id => c.id.clone(),
        _ => format!("{}:{}", c.key, c.id),
    }
}

/// Reads a cursor (`id` or `key:id`, the API's pattern). By id the key is not needed; by last
/// seen a bare id is placed where that device sorts now, so it must exist.
async fn parse_cursor(
    db: &impl ConnectionTrait,
    order: DeviceOrder,
    after: &str,
) -> Result<DeviceCursor, ServiceError> {
    let malformed = || {
        ServiceError::invalid(
            "invalid_cursor",
            "after must be a previous page's next_after: a device id, after its sort key and ':' when sorted by \
             last_seen",
        )
    };
    let (key, id) = match after.split_once(':') {
        Some((key, id)) => {
            // Digits only (Rust's parse would take a leading '+'), as the API's pattern says.
            let digits = key.strip_prefix('-').unwrap_or(key);
            if !(1..=18).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(malformed());
            }
            (Some(key.parse::<i64>().map_err(|_| malformed())?), id)
        }
        None => (None, after),
    };
    if id.is_empty() || !id_chars(id) {
        return Err(malformed());
    }
    let key = match (order, key) {
        (DeviceOrder::Id, _) => 0,
        (_, Some(key)) => key,
        (_, None) => match device_find(db, id).await? {
            Some(d) => order.key_of(d.last_seen_at),
            None => {
                return Err(ServiceError::not_found(
                    "unknown_device",
                    format!("device {id} (the page cursor) does not exist"),
                ));
            }
        },
    };
    Ok(DeviceCursor { key, id: id.to_owned() })
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
) -> Result<Vec<(String, Option<i64>)>, ServiceError> {
    let cohort = cohort_find(db, product.id, name).await?.ok_or_else(|| {
        ServiceError::not_found("unknown_cohort", format!("product {} has no cohort {name}", product.name))
    })?;
    let explicit: HashSet<String> = cohort_members(db, cohort.id).await?.into_iter().collect();
    let selector = cohort.selector_tags.as_deref();
    Ok(device_list_ids_and_tags(db, filter)
        .await?
        .into_iter()
        .filter(|(id, tags, attributes, _)| {
            explicit.contains(id) || selector_matches(selector, &tag_set(tags, attributes.as_deref()))
        })
        .map(|(id, _, _, last_seen)| (id, last_seen))
        .collect())
}
