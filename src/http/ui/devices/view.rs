//! What the device pages show: the list's filters (kept as typed, turned into the service's
//! query and into paging links), and devices, reports and assignments as display strings and
//! status badges. Every badge carries its word; a rejection wears the security style.

use serde::Deserialize;

use crate::domain::rollout::MAX_STAGES;
use crate::http::ui::pages::{ago, when};
use crate::services::device_search::{DeviceQuery, is_offline};
use crate::services::devices::{AssignmentView, DeviceDetail, DeviceView};

/// A status word and its badge class.
#[derive(Debug, Clone)]
pub struct Badge {
    /// `badge-ok`, `badge-warn`, `badge-bad`, `badge-security` or `badge-muted`.
    pub class: &'static str,
    /// The word.
    pub label: String,
}

impl Badge {
    /// An attempt or assignment state (`installed`, `failed`, `rejected`, …).
    pub fn attempt(state: &str) -> Self {
        let class = match state {
            "installed" => "badge-ok",
            "failed" => "badge-bad",
            // The device refused what it was sent: a security event, not a flaky install.
            "rejected" => "badge-security",
            "downloading" | "installing" | "awaiting_reboot" => "badge-warn",
            _ => "badge-muted",
        };
        Self { class, label: state.replace('_', " ") }
    }

    /// A device status.
    pub fn device_status(status: &str) -> Self {
        let class = if status == "active" { "badge-ok" } else { "badge-muted" };
        Self { class, label: status.to_owned() }
    }
}

/// The device list's search and filters, as typed
/// (`?q=&product=&status=&tag=&cohort=&version=&rollout=&stage=&outcome=&seen=&sort=&after=`).
#[derive(Debug, Default, Clone, Deserialize)]
pub struct Filters {
    /// Part of a device id.
    #[serde(default)]
    pub q: String,
    /// Product name.
    #[serde(default)]
    pub product: String,
    /// `active` or `decommissioned`.
    #[serde(default)]
    pub status: String,
    /// A tag.
    #[serde(default)]
    pub tag: String,
    /// A cohort of `product`.
    #[serde(default)]
    pub cohort: String,
    /// Installed version.
    #[serde(default)]
    pub version: String,
    /// A rollout id: its devices, each with its assignment there.
    #[serde(default)]
    pub rollout: String,
    /// The assignment state (`failed`, `rejected`, …) in `rollout`, or in any rollout.
    #[serde(default)]
    pub outcome: String,
    /// The stage (1-based) at which devices entered `rollout`.
    #[serde(default)]
    pub stage: String,
    /// When last seen: `online`, `offline`, `never`, or silent for a day (`1d`) or a week (`7d`).
    #[serde(default)]
    pub seen: String,
    /// `device_id` (or empty), `last_seen` or `-last_seen`.
    #[serde(default)]
    pub sort: String,
    /// Paging cursor: the last device id of the previous page.
    #[serde(default)]
    pub after: String,
}

fn given(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

impl Filters {
    /// Without surrounding blanks.
    pub fn trimmed(self) -> Self {
        let t = |s: String| s.trim().to_owned();
        Self {
            q: t(self.q),
            product: t(self.product),
            status: t(self.status),
            tag: t(self.tag),
            cohort: t(self.cohort),
            version: t(self.version),
            rollout: t(self.rollout),
            outcome: t(self.outcome),
            stage: t(self.stage),
            seen: t(self.seen),
            sort: t(self.sort),
            after: t(self.after),
        }
    }

    /// The labels of the filters in effect (the order does not count), for the folded form's summary.
    pub fn set_filters(&self) -> String {
        let fields = [
            (&self.q, "id"),
            (&self.product, "product"),
            (&self.status, "status"),
            (&self.tag, "tag"),
            (&self.cohort, "cohort"),
            (&self.version, "version"),
            (&self.rollout, "rollout"),
            (&self.outcome, "outcome"),
            (&self.stage, "stage"),
            (&self.seen, "last seen"),
        ];
        let set: Vec<&str> = fields.iter().filter(|(v, _)| !v.is_empty()).map(|(_, label)| *label).collect();
        set.join(", ")
    }

    /// The service's query (default page size), or the field whose value cannot be one and
    /// what is wrong with it.
    pub fn query(&self) -> Result<DeviceQuery, (&'static str, String)> {
        let stage = match self.stage.as_str() {
            "" => None,
            typed => match typed.parse::<u32>() {
                Ok(0) | Err(_) => return Err(("stage", "A stage is a number: 1 is the first.".to_owned())),
                Ok(n) if n as usize > MAX_STAGES => {
                    return Err(("stage", format!("A rollout has at most {MAX_STAGES} stages.")));
                }
                // The page counts stages from 1, the service from 0.
                Ok(n) => Some(n - 1),
            },
        };
        let (seen, silent_for) = match self.seen.as_str() {
            "" => (None, None),
            "1d" => (None, Some(86_400)),
            "7d" => (None, Some(7 * 86_400)),
            other => (Some(other.to_owned()), None),
        };
        Ok(DeviceQuery {
            product: given(&self.product),
            cohort: given(&self.cohort),
            tag: given(&self.tag),
            status: given(&self.status),
            installed_version: given(&self.version),
            rollout: given(&self.rollout),
            outcome: given(&self.outcome),
            stage,
            seen,
            silent_for,
            sort: given(&self.sort),
            limit: None,
            after: given(&self.after),
        })
    }

    /// The link to the page after `after`, with the same filters.
    pub fn link(&self, after: &str) -> String {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        let fields = [
            ("q", &self.q),
            ("product", &self.product),
            ("status", &self.status),
            ("tag", &self.tag),
            ("cohort", &self.cohort),
            ("version", &self.version),
            ("rollout", &self.rollout),
            ("outcome", &self.outcome),
            ("stage", &self.stage),
            ("seen", &self.seen),
            ("sort", &self.sort),
        ];
        for (name, value) in fields.into_iter().filter(|(_, v)| !v.is_empty()) {
            query.append_pair(name, value);
        }
        query.append_pair("after", after);
        format!("/ui/devices?{}", query.finish())
    }

    /// The outcomes the select offers, with their labels.
    pub fn outcomes(&self) -> [(&'static str, &'static str); 9] {
        [
            ("", "Any outcome"),
            ("failed", "failed"),
            ("rejected", "rejected"),
            ("installed", "installed"),
            ("assigned", "assigned, nothing reported"),
            ("downloading", "downloading"),
            ("installing", "installing"),
            ("awaiting_reboot", "awaiting reboot"),
            ("withdrawn", "withdrawn"),
        ]
    }

    /// Whether `outcome` is one the select offers.
    pub fn outcome_is_known(&self) -> bool {
        self.outcomes().iter().any(|(value, _)| *value == self.outcome)
    }

    /// The last-seen choices the select offers, with their labels (`window`: how long a
    /// device may be silent and still count as online, in words).
    pub fn seen_choices(window: &str) -> [(&'static str, String); 6] {
        [
            ("", "Any time".to_owned()),
            ("online", format!("online (reported in the last {window})")),
            ("offline", format!("offline (silent for over {window})")),
            ("1d", "silent for a day or more".to_owned()),
            ("7d", "silent for a week or more".to_owned()),
            ("never", "never reported".to_owned()),
        ]
    }

    /// Whether `seen` is one the select offers.
    pub fn seen_is_known(&self) -> bool {
        matches!(self.seen.as_str(), "" | "online" | "offline" | "1d" | "7d" | "never")
    }

    /// The device the page continues after (the cursor without its sort key).
    pub fn continued_after(&self) -> &str {
        match self.sort.as_str() {
            "last_seen" | "-last_seen" => self.after.split_once(':').map_or(self.after.as_str(), |(_, id)| id),
            _ => &self.after,
        }
    }

    /// The orders the select offers, with their labels.
    pub fn sorts(&self) -> [(&'static str, &'static str); 3] {
        [("", "Device id"), ("last_seen", "Longest silent first"), ("-last_seen", "Most recently seen first")]
    }

    /// Whether `sort` is one the select offers.
    pub fn sort_is_known(&self) -> bool {
        matches!(self.sort.as_str(), "" | "device_id" | "last_seen" | "-last_seen")
    }

    /// Whether `status` is one the select offers.
    pub fn status_is_known(&self) -> bool {
        matches!(self.status.as_str(), "" | "active" | "decommissioned")
    }
}

/// The filter field a refusal of the device search concerns, by the service's error code.
pub fn field_of(code: &str) -> Option<&'static str> {
    match code {
        "invalid_device_search" => Some("q"),
        "unknown_product" | "invalid_product_name" => Some("product"),
        "invalid_status" => Some("status"),
        "invalid_tag" => Some("tag"),
        "unknown_cohort" | "invalid_cohort_name" => Some("cohort"),
        "unknown_rollout" | "invalid_rollout_id" => Some("rollout"),
        "invalid_outcome" => Some("outcome"),
        "invalid_stage" => Some("stage"),
        "invalid_seen" | "invalid_silent_for" => Some("seen"),
        "invalid_sort" => Some("sort"),
        _ => None,
    }
}

fn tags_of(stored: &str) -> String {
    let tags: Vec<String> = serde_json::from_str(stored).unwrap_or_default();
    tags.join(", ")
}

/// When a device last reported, and how long ago that was.
fn seen(at: Option<i64>, now: i64) -> String {
    at.map_or_else(|| "never".to_owned(), |at| format!("{} ({})", when(at), ago(at, now)))
}

/// The time the page is drawn at, and how long a device may be silent before it counts as
/// offline (the server's poll interval times [`crate::services::device_search::OFFLINE_AFTER_POLLS`]).
#[derive(Debug, Clone, Copy)]
pub struct Now {
    /// Unix seconds.
    pub at: i64,
    /// Seconds.
    pub offline_after: i64,
}

impl Now {
    /// Whether a device last seen at `last_seen_at` is offline.
    pub fn offline(self, last_seen_at: Option<i64>) -> bool {
        is_offline(last_seen_at, self.at, self.offline_after)
    }
}

/// One row of the device list.
#[derive(Debug, Clone)]
pub struct DeviceRow {
    /// Device id.
    pub id: String,
    /// Product name.
    pub product: String,
    /// Hardware id.
    pub hardware_id: String,
    /// Tags, comma-separated.
    pub tags: String,
    /// Active or decommissioned.
    pub status: Badge,
    /// Installed version, or empty.
    pub installed: String,
    /// The last reported attempt's state.
    pub attempt: Option<Badge>,
    /// Last report, or "never".
    pub last_seen: String,
    /// Silent for longer than the offline window.
    pub offline: bool,
    /// With a rollout filter: its assignment there (state, 1-based stage, the device's error).
    pub in_rollout: Option<RolloutOutcome>,
}

/// Where a listed device's assignment in the filtered rollout stands.
#[derive(Debug, Clone)]
pub struct RolloutOutcome {
    /// Its state.
    pub state: Badge,
    /// 1-based stage.
    pub stage: i32,
    /// The device's explanation (a failure's error), or empty.
    pub detail: String,
    /// When it last changed.
    pub updated: String,
}

impl DeviceRow {
    /// The row of `v`, its last report counted back from `now`.
    pub fn new(v: DeviceView, now: Now) -> Self {
        let d = v.device;
        Self {
            in_rollout: v.in_rollout.map(|a| RolloutOutcome {
                state: Badge::attempt(&a.state),
                stage: a.stage + 1,
                detail: a.detail.unwrap_or_default(),
                updated: format!("{} ({})", when(a.updated_at), ago(a.updated_at, now.at)),
            }),
            offline: now.offline(d.last_seen_at),
            tags: tags_of(&d.tags),
            status: Badge::device_status(&d.status),
            installed: d.installed_version.unwrap_or_default(),
            attempt: d.attempt_state.as_deref().map(Badge::attempt),
            last_seen: seen(d.last_seen_at, now.at),
            id: d.device_id,
            product: v.product,
            hardware_id: d.hardware_id,
        }
    }
}

/// One report in a device's history.
#[derive(Debug, Clone)]
pub struct ReportRow {
    /// The device's counter, or the range of a run of identical reports ("31 – 37").
    pub counters: String,
    /// How many identical reports in a row this row stands for.
    pub times: usize,
    /// When the server received it (the newest of a run).
    pub received: String,
    /// When the oldest of a run was received, or empty for a single report.
    pub first_received: String,
    /// What the device ran (version and target), or empty.
    pub installed: String,
    /// The attempt's state.
    pub attempt: Option<Badge>,
    /// The attempt's target and the device's explanation.
    pub attempt_text: String,
    /// The director targets version the device had.
    pub director_version: i64,
}

/// One of the device's assignments.
#[derive(Debug, Clone)]
pub struct AssignmentRow {
    /// The rollout.
    pub rollout_id: String,
    /// 1-based stage.
    pub stage: i32,
    /// Version assigned.
    pub version: String,
    /// Its state.
    pub state: Badge,
    /// When assigned.
    pub assigned: String,
    /// When it reached its outcome, or empty.
    pub outcome_at: String,
    /// The device's explanation.
    pub detail: String,
}

impl From<AssignmentView> for AssignmentRow {
    fn from(v: AssignmentView) -> Self {
        let a = v.assignment;
        Self {
            state: Badge::attempt(&a.state),
            stage: a.stage + 1,
            version: v.version,
            assigned: when(a.assigned_at),
            outcome_at: a.final_at.map(when).unwrap_or_default(),
            detail: a.detail.unwrap_or_default(),
            rollout_id: a.rollout_id,
        }
    }
}

/// The release the director names for the device now.
#[derive(Debug, Clone)]
pub struct Assigned {
    /// Version.
    pub version: String,
    /// Target name.
    pub target: String,
    /// The rollout that decided it.
    pub rollout_id: Option<String>,
    /// `install` or `rollback`.
    pub action: String,
}

/// Everything the device page shows.
#[derive(Debug, Clone)]
pub struct DeviceFacts {
    /// Device id.
    pub id: String,
    /// Product name.
    pub product: String,
    /// Hardware id.
    pub hardware_id: String,
    /// Tags, comma-separated (empty: none).
    pub tags: String,
    /// TUF keyid of its key (empty for a DDI device).
    pub keyid: String,
    /// Speaks hawkBit's device API: verifies no TUF metadata, its success is its word.
    pub ddi: bool,
    /// The attributes a DDI device sent, `name=value` comma-separated (empty: none).
    pub attributes: String,
    /// Active or decommissioned.
    pub status: Badge,
    /// Still active (can be decommissioned).
    pub active: bool,
    /// When decommissioned, or empty.
    pub decommissioned: String,
    /// Installed `(name, version, sha256)`.
    pub installed: Option<(String, String, String)>,
    /// The last attempt: state, target name, detail.
    pub attempt: Option<(Badge, String, String)>,
    /// Current assignment.
    pub assigned: Option<Assigned>,
    /// When enrolled.
    pub enrolled: String,
    /// Last report, or "never".
    pub last_seen: String,
    /// Silent for longer than the offline window.
    pub offline: bool,
    /// Counter of the last report, or empty.
    pub counter: String,
    /// Director targets version.
    pub director_version: i64,
    /// The next enrollment may bring a new key.
    pub rekey_allowed: bool,
    /// Newest first.
    pub reports: Vec<ReportRow>,
    /// Newest first.
    pub assignments: Vec<AssignmentRow>,
}

impl DeviceFacts {
    /// The facts of `detail`, its last report counted back from `now`.
    pub fn new(detail: DeviceDetail, now: Now) -> Self {
        let DeviceView { device: d, product, assigned, in_rollout: _ } = detail.view;
        let installed = match (d.installed_name, d.installed_version, d.installed_sha256) {
            (Some(name), Some(version), Some(sha)) => Some((name, version, sha)),
            _ => None,
        };
        let attempt = d.attempt_state.map(|state| {
            (Badge::attempt(&state), d.attempt_name.unwrap_or_default(), d.attempt_detail.unwrap_or_default())
        });
        let assigned = assigned.map(|r| Assigned {
            version: r.version,
            target: r.target_name,
            rollout_id: d.assigned_rollout_id,
            action: d.assigned_action.unwrap_or_default(),
        });
        let reports = collapse(detail.reports.into_iter().map(|r| (r.counter, report_row(r))).collect());
        Self {
            tags: tags_of(&d.tags),
            status: Badge::device_status(&d.status),
            active: d.status == "active",
            decommissioned: d.decommissioned_at.map(when).unwrap_or_default(),
            installed,
            attempt,
            assigned,
            enrolled: when(d.enrolled_at),
            last_seen: seen(d.last_seen_at, now.at),
            offline: now.offline(d.last_seen_at),
            counter: d.last_counter.map(|c| c.to_string()).unwrap_or_default(),
            director_version: d.director_targets_version,
            rekey_allowed: d.rekey_allowed,
            reports,
            assignments: detail.assignments.into_iter().map(AssignmentRow::from).collect(),
            id: d.device_id,
            product,
            hardware_id: d.hardware_id,
            keyid: d.keyid,
            ddi: d.protocol == crate::services::enrollment::DDI,
            attributes: d
                .attributes
                .as_deref()
                .and_then(|a| serde_json::from_str::<std::collections::BTreeMap<String, String>>(a).ok())
                .map(|m| m.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", "))
                .unwrap_or_default(),
        }
    }
}

fn report_row(r: crate::db::entities::device_report::Model) -> ReportRow {
    let installed = match (r.installed_version, r.installed_name) {
        (Some(version), Some(name)) => format!("{version} ({name})"),
        _ => String::new(),
    };
    let attempt_text = match (r.attempt_name, r.attempt_detail) {
        (Some(name), Some(detail)) => format!("{name}: {detail}"),
        (Some(name), None) => name,
        (None, detail) => detail.unwrap_or_default(),
    };
    ReportRow {
        counters: r.counter.to_string(),
        times: 1,
        received: when(r.received_at),
        first_received: String::new(),
        installed,
        attempt: r.attempt_state.as_deref().map(Badge::attempt),
        attempt_text,
        director_version: r.director_targets_version,
    }
}

/// Runs of identical reports (same image, attempt and director version: a device polling with
/// nothing new to say), newest first, as one row each: the history shows what changed, not
/// thirty polls that did not.
fn collapse(reports: Vec<(i64, ReportRow)>) -> Vec<ReportRow> {
    let same = |a: &ReportRow, b: &ReportRow| {
        a.installed == b.installed
            && a.attempt.as_ref().map(|x| &x.label) == b.attempt.as_ref().map(|x| &x.label)
            && a.attempt_text == b.attempt_text
            && a.director_version == b.director_version
    };
    let mut out: Vec<(i64, i64, ReportRow)> = Vec::new();
    for (counter, row) in reports {
        match out.last_mut() {
            Some((_, oldest, run)) if same(run, &row) => {
                run.times += 1;
                run.first_received = row.received;
                *oldest = counter;
            }
            _ => out.push((counter, counter, row)),
        }
    }
    out.into_iter()
        .map(|(newest, oldest, mut row)| {
            if row.times > 1 {
                row.counters = format!("{oldest} – {newest}");
            }
            row
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_reports_in_a_row_are_one_row() {
        let row = |counter: i64, at: &str, state: Option<&str>| {
            (
                counter,
                ReportRow {
                    counters: counter.to_string(),
                    times: 1,
                    received: at.to_owned(),
                    first_received: String::new(),
                    installed: "1.0.0 (pump-x1/1.0.0/fw.bin)".to_owned(),
                    attempt: state.map(Badge::attempt),
                    attempt_text: String::new(),
                    director_version: 2,
                },
            )
        };
        let rows = collapse(vec![
            row(40, "t40", None),
            row(39, "t39", None),
            row(38, "t38", None),
            row(37, "t37", Some("failed")),
            row(36, "t36", None),
        ]);
        let summary: Vec<(&str, usize, &str, &str)> = rows
            .iter()
            .map(|r| (r.counters.as_str(), r.times, r.received.as_str(), r.first_received.as_str()))
            .collect();
        assert_eq!(summary, [("38 – 40", 3, "t40", "t38"), ("37", 1, "t37", ""), ("36", 1, "t36", "")]);
    }

    #[test]
    fn paging_links_keep_the_filters_and_encode_them() {
        let f = Filters { q: "pump 1".into(), tag: "region:eu".into(), after: "old".into(), ..Filters::default() };
        assert_eq!(f.link("pump-0100"), "/ui/devices?q=pump+1&tag=region%3Aeu&after=pump-0100");
    }

    #[test]
    fn rejections_look_like_security_events() {
        assert_eq!(Badge::attempt("rejected").class, "badge-security");
        assert_eq!(Badge::attempt("awaiting_reboot").label, "awaiting reboot");
        assert_eq!(Badge::attempt("failed").class, "badge-bad");
    }
}
