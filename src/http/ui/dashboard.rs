//! The dashboard: the fleet by product, status and version; the rollouts under way with a
//! progress bar and the gate's verdict per stage; the newest failed and rejected reports (a
//! rejection is a security event and looks like one); and how long each signed root and role
//! has left. Figures come from `services::overview`; the page only puts them into words.

use actix_web::http::Method;
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use askama::Template;

use super::devices::view::Badge;
use super::pages::{Layout, countdown, when};
use super::progress::{Segment, bp_percent, segments};
use super::session::{UiError, UiUser, html};
use crate::http::resource;
use crate::services::Services;
use crate::services::overview::{ExpiryLevel, Overview, Problem, ProductFleet, RoleExpiry, fleet_overview};
use crate::services::rollout_status::{RolloutStatus, StageStatus};

/// One product's devices.
struct FleetRow {
    product: String,
    active: u64,
    decommissioned: u64,
    total: u64,
}

/// How many active devices of a product run a version.
struct VersionRow {
    product: String,
    version: String,
    devices: u64,
}

struct StageLine {
    number: usize,
    current: bool,
    cohort: String,
    percent: String,
    segments: Vec<Segment>,
    /// The bar in words.
    text: String,
    verdict: Vec<Badge>,
    verdict_text: String,
}

struct RolloutCard {
    id: String,
    product: String,
    version: String,
    state: Badge,
    reason: Option<String>,
    stages: Vec<StageLine>,
}

struct ProblemRow {
    device_id: String,
    target: String,
    state: Badge,
    detail: String,
    when: String,
    /// How many such reports, since when ("3 since 2026-12-04 17:59 UTC").
    count: String,
}

struct ExpiryRow {
    repo: &'static str,
    role: String,
    version: i64,
    expires: String,
    left: String,
    /// `expiry-warn`, `expiry-bad` or empty.
    class: &'static str,
}

#[derive(Template)]
#[template(path = "ui/dashboard.html")]
struct DashboardPage {
    layout: Layout,
    fleet: Vec<FleetRow>,
    versions: Vec<VersionRow>,
    rollouts: Vec<RolloutCard>,
    problems: Vec<ProblemRow>,
    recent_rejection: bool,
    expiries: Vec<ExpiryRow>,
    /// At the top of the page when a role expires soon or has expired: (any expired, which).
    expiry_alert: Option<(bool, String)>,
}

/// GET /ui/
pub async fn show(user: UiUser, svc: web::Data<Services>) -> Result<HttpResponse, UiError> {
    let overview = fleet_overview(&svc).await?;
    let page = DashboardPage::new(Layout::of(&user, "dashboard"), overview);
    Ok(html(StatusCode::OK, page.render()?))
}

impl DashboardPage {
    fn new(layout: Layout, o: Overview) -> Self {
        let versions = o.fleet.iter().flat_map(version_rows).collect();
        let expiries: Vec<ExpiryRow> = o.expiries.into_iter().map(|e| ExpiryRow::new(e, o.now)).collect();
        let due: Vec<String> = expiries
            .iter()
            .filter(|e| !e.class.is_empty())
            .map(|e| format!("{} {} ({})", e.repo, e.role, e.left))
            .collect();
        let expiry_alert =
            (!due.is_empty()).then(|| (expiries.iter().any(|e| e.class == "expiry-bad"), due.join("; ")));
        Self {
            layout,
            fleet: o.fleet.into_iter().map(FleetRow::from).collect(),
            versions,
            rollouts: o.rollouts.iter().map(RolloutCard::from).collect(),
            problems: o.problems.into_iter().map(ProblemRow::from).collect(),
            recent_rejection: o.recent_rejection,
            expiries,
            expiry_alert,
        }
    }
}

impl From<ProductFleet> for FleetRow {
    fn from(p: ProductFleet) -> Self {
        Self {
            total: p.active + p.decommissioned,
            product: p.product,
            active: p.active,
            decommissioned: p.decommissioned,
        }
    }
}

fn version_rows(p: &ProductFleet) -> Vec<VersionRow> {
    p.versions
        .iter()
        .map(|(version, devices)| VersionRow {
            product: p.product.clone(),
            version: version.clone().unwrap_or_else(|| "not reported yet".to_owned()),
            devices: *devices,
        })
        .collect()
}

impl From<&RolloutStatus> for RolloutCard {
    fn from(status: &RolloutStatus) -> Self {
        let r = &status.rollout;
        let class = match r.state.as_str() {
            "running" => "badge-ok",
            "halted" => "badge-bad",
            _ => "badge-warn",
        };
        let current = usize::try_from(r.current_stage).unwrap_or(0);
        let ceiling = u64::try_from(r.max_failure_rate_bp).unwrap_or(0);
        Self {
            id: r.id.clone(),
            product: status.product.clone(),
            version: status.version.clone(),
            state: Badge { class, label: r.state.clone() },
            reason: r.reason.clone().filter(|_| r.state == "halted"),
            stages: status
                .stages
                .iter()
                .enumerate()
                .map(|(i, s)| stage_line(i, s, current, ceiling, r.min_reports))
                .collect(),
        }
    }
}

fn stage_line(i: usize, s: &StageStatus, current: usize, ceiling: u64, min_reports: i64) -> StageLine {
    let c = &s.counts;
    // Devices assigned before their tags changed count too: never draw past the end.
    let total = s.eligible.max(c.assigned).max(c.installed + c.installing + c.failed + c.rejected);
    let text = format!(
        "{} of {total} installed, {} installing, {} failed, {} rejected",
        c.installed, c.installing, c.failed, c.rejected
    );
    let segments = segments(c, total);
    let (verdict, verdict_text) = if i > current && c.assigned == 0 {
        (vec![Badge { class: "badge-muted", label: "not started".into() }], String::new())
    } else {
        let v = &s.verdict;
        let (class, word) = super::progress::gate_word(v, c.assigned, s.eligible);
        let mut badges = vec![Badge { class, label: word.into() }];
        if v.alert {
            badges.push(Badge { class: "badge-security", label: "rejections".into() });
        }
        let text = format!(
            "failure rate {} ({} of {} final reports, {min_reports} needed), gate {}",
            bp_percent(u64::from(v.failure_rate_bp)),
            v.failures,
            v.final_reports,
            bp_percent(ceiling)
        );
        (badges, text)
    };
    StageLine {
        number: i + 1,
        current: i == current,
        cohort: s.plan.cohort.clone(),
        percent: bp_percent(u64::from(s.plan.percent.basis_points())),
        segments,
        text,
        verdict,
        verdict_text,
    }
}

impl From<Problem> for ProblemRow {
    fn from(p: Problem) -> Self {
        let r = p.report;
        Self {
            device_id: p.device_id,
            target: r.attempt_name.unwrap_or_default(),
            state: Badge::attempt(r.attempt_state.as_deref().unwrap_or_default()),
            detail: r.attempt_detail.unwrap_or_default(),
            when: when(r.received_at),
            count: match (p.reports, p.at_least) {
                (1, false) => "1".to_owned(),
                (n, false) => format!("{n} since {}", when(p.since)),
                (n, true) => format!("at least {n} since {}", when(p.since)),
            },
        }
    }
}

impl ExpiryRow {
    fn new(e: RoleExpiry, now: i64) -> Self {
        let left = countdown(e.expires_at - now);
        let (class, left) = match e.level {
            ExpiryLevel::Fine => ("", format!("{left} left")),
            ExpiryLevel::Soon => ("expiry-warn", format!("soon: {left} left")),
            ExpiryLevel::Expired => ("expiry-bad", "expired".to_owned()),
        };
        Self { repo: e.repo, role: e.role, version: e.version, expires: when(e.expires_at), left, class }
    }
}

/// Registers this module's routes under `/ui`.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/", [(Method::GET, web::to(show))]));
}
