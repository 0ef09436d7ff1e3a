//! Admin UI pages for rollouts: the list, the "new rollout" form, a rollout's page (stages,
//! gate verdicts, a chart of outcomes over time) and the confirmed actions that steer it.
//!
//! Every page calls the services the API calls (`manage_rollout`, `rollout_status`,
//! `rollout_timeline`); nothing here touches the database. Submodules: `form` (the new-rollout
//! fields), `detail` (the rollout page's figures), `chart` (its SVG), `actions` (confirm and act).

mod actions;
mod chart;
mod detail;
mod form;

use actix_web::http::Method;
use actix_web::http::StatusCode;
use actix_web::http::header::LOCATION;
use actix_web::{HttpResponse, web};
use askama::Template;
use serde::Deserialize;

use self::actions::ActionLink;
use self::chart::Chart;
use self::detail::StageRow;
use self::form::{Input, RolloutForm, StageInputs};
use super::pages::{FieldErrors, Layout, NoticeQuery, ago, when};
use super::session::{UiError, UiUser, html};
use crate::domain::rollout::RolloutState;
use crate::http::resource;
use crate::services::auth::Permission;
use crate::services::cohorts::list_cohorts;
use crate::services::manage_rollout::create_rollout;
use crate::services::products::list_products;
use crate::services::rollout_status::{RolloutStatus, rollout_status};
use crate::services::rollout_timeline::{
    RolloutSummary, RolloutTimeline, SummaryQuery, rollout_summaries, rollout_timeline,
};
use crate::services::{ServiceError, Services};

/// A 303 to `location` (post/redirect/get).
pub fn see_other(location: &str) -> HttpResponse {
    HttpResponse::SeeOther().insert_header((LOCATION, location.to_owned())).finish()
}

/// A rollout state as a badge: the word always, the colour as a second cue.
#[derive(Debug, Clone)]
pub struct StateBadge {
    pub class: &'static str,
    pub word: &'static str,
}

impl StateBadge {
    /// The badge of `state`.
    pub fn of(state: RolloutState) -> Self {
        let (class, word) = match state {
            RolloutState::Draft => ("badge-muted", "draft"),
            RolloutState::Running => ("badge-ok", "running"),
            RolloutState::Paused => ("badge-warn", "paused"),
            RolloutState::Halted => ("badge-bad", "halted"),
            RolloutState::Aborted => ("badge-bad", "aborted"),
            RolloutState::Completed => ("badge-ok", "completed"),
            RolloutState::RolledBack => ("badge-warn", "rolled back"),
        };
        Self { class, word }
    }

    fn of_stored(state: &str) -> Self {
        RolloutState::parse(state).map_or(Self { class: "badge-muted", word: "unknown" }, Self::of)
    }
}

/// The sentence for a notice code; unknown codes show nothing (never echo the query).
fn notice_text(code: &str) -> Option<&'static str> {
    Some(match code {
        "created" => "Rollout created as a draft. Nothing is assigned until you start it.",
        "started" => "Rollout started: devices of stage 1 get the release at their next report.",
        "paused" => "Rollout paused: no new device is assigned, and assignments not yet installing are withdrawn.",
        "resumed" => "Rollout resumed: devices are assigned again at their next report.",
        "advanced" => "Rollout advanced: the next stage is open; its devices get the release at their next report.",
        "completed" => "Rollout completed: its last stage was done, so advancing ended it.",
        "completed_forced" => {
            "Rollout completed although its last stage's checks were not met; the audit log records what was skipped."
        }
        "advanced_forced" => {
            "Rollout advanced although its checks were not met; the audit log records what was skipped."
        }
        "aborted" => "Rollout aborted: no device is assigned the release any more.",
        "rolled_back" => "Rollout rolled back: devices that installed it get the release they ran before.",
        _ => return None,
    })
}

/// One line of the list.
struct ListRow {
    id: String,
    product: String,
    version: String,
    state: StateBadge,
    stage: String,
    started: String,
    gate: Vec<detail::Badge>,
    gate_text: String,
}

/// Rollouts per page of the list.
const LIST_PAGE: u64 = 50;

/// The list's filters as typed (`?product=&state=&before=`).
#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    product: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    before: String,
}

impl ListQuery {
    /// `/ui/rollouts` with these filters, continuing after `before` if given.
    fn link(&self, before: Option<&str>) -> String {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        for (name, value) in [("product", &self.product), ("state", &self.state)] {
            if !value.is_empty() {
                query.append_pair(name, value);
            }
        }
        if let Some(before) = before {
            query.append_pair("before", before);
        }
        let query = query.finish();
        if query.is_empty() { "/ui/rollouts".to_owned() } else { format!("/ui/rollouts?{query}") }
    }

    /// Whether any filter narrows the list.
    fn filtered(&self) -> bool {
        !self.product.is_empty() || !self.state.is_empty()
    }
}

#[derive(Template)]
#[template(path = "ui/rollouts.html")]
struct ListPage {
    layout: Layout,
    q: ListQuery,
    products: Vec<String>,
    states: [RolloutState; 7],
    errors: FieldErrors,
    rows: Vec<ListRow>,
    next_page: Option<String>,
}

impl ListPage {
    /// A product filter naming no product: offered as typed, so the form keeps it.
    fn product_unlisted(&self) -> bool {
        !self.q.product.is_empty() && !self.products.contains(&self.q.product)
    }
}

impl ListRow {
    fn of(s: RolloutSummary, now: i64) -> Self {
        let r = &s.rollout;
        let state = RolloutState::parse(&r.state);
        let (gate, gate_text) = match &s.verdict {
            // The list does not count eligible devices: it only says whether there are outcomes.
            Some(v) => {
                detail::verdict(v, u64::try_from(r.max_failure_rate_bp).unwrap_or(0), r.min_reports, true, (0, 0))
            }
            None if state == Some(RolloutState::Draft) => (Vec::new(), "not started".to_owned()),
            None => (Vec::new(), "finished".to_owned()),
        };
        let stage = if state == Some(RolloutState::Draft) {
            format!("not started ({} stages)", s.stage_count)
        } else {
            format!("{} of {}", r.current_stage + 1, s.stage_count)
        };
        Self {
            id: r.id.clone(),
            state: StateBadge::of_stored(&r.state),
            stage,
            started: r.started_at.map_or_else(|| "—".to_owned(), |at| format!("{} ({})", when(at), ago(at, now))),
            gate,
            gate_text,
            product: s.product,
            version: s.version,
        }
    }
}

/// GET /ui/rollouts: newest first, by product and state, a page at a time.
pub async fn list(svc: web::Data<Services>, user: UiUser, q: web::Query<ListQuery>) -> Result<HttpResponse, UiError> {
    let q = q.into_inner();
    let trim = |s: &str| s.trim().to_owned();
    let q = ListQuery { product: trim(&q.product), state: trim(&q.state), before: trim(&q.before) };
    let products = list_products(&svc).await?.into_iter().map(|p| p.name).collect();
    let mut page = ListPage {
        layout: Layout::of(&user, "rollouts"),
        products,
        states: RolloutState::ALL,
        errors: FieldErrors::default(),
        rows: Vec::new(),
        next_page: None,
        q,
    };
    let given = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    let query = SummaryQuery {
        product: given(&page.q.product),
        state: given(&page.q.state),
        before: given(&page.q.before),
        limit: LIST_PAGE,
    };
    let status = match rollout_summaries(&svc, query).await {
        Ok(found) => {
            page.next_page = found.next_before.map(|before| page.q.link(Some(&before)));
            let now = svc.now_secs();
            page.rows = found.rollouts.into_iter().map(|s| ListRow::of(s, now)).collect();
            StatusCode::OK
        }
        Err(e @ (ServiceError::Invalid { .. } | ServiceError::NotFound { .. })) => {
            let field = match &e {
                ServiceError::NotFound { .. } => "product",
                ServiceError::Invalid { code, .. } if *code == "invalid_state" => "state",
                _ => "before",
            };
            let status = crate::http::error::ApiError::status_of(&e);
            let message = if field == "before" {
                "The page link is malformed: start again from the first page.".to_owned()
            } else {
                e.to_string()
            };
            page.errors.add(field, message);
            status
        }
        Err(e) => return Err(e.into()),
    };
    Ok(html(status, page.render()?))
}

#[derive(Template)]
#[template(path = "ui/rollout.html")]
struct RolloutPage {
    layout: Layout,
    id: String,
    product: String,
    version: String,
    state: StateBadge,
    halted: Option<String>,
    /// A reason recorded while not halted (what a forced advance skipped).
    note: Option<String>,
    rejected: u64,
    facts: Vec<(&'static str, String)>,
    stages: Vec<StageRow>,
    chart: Chart,
    actions: Vec<ActionLink>,
    notice: Option<&'static str>,
}

impl RolloutPage {
    fn new(layout: Layout, status: &RolloutStatus, timeline: &RolloutTimeline, notice: Option<&'static str>) -> Self {
        let r = &status.rollout;
        let state = RolloutState::parse(&r.state);
        let actions = match state {
            Some(s) if layout.can_manage => actions::links(s),
            _ => Vec::new(),
        };
        let (halted, note) = match state {
            Some(RolloutState::Halted) => {
                (Some(r.reason.clone().unwrap_or_else(|| "No reason was recorded.".into())), None)
            }
            _ => (None, r.reason.clone()),
        };
        Self {
            id: r.id.clone(),
            product: status.product.clone(),
            version: status.version.clone(),
            state: StateBadge::of_stored(&r.state),
            halted,
            note,
            rejected: status.stages.iter().map(|s| s.counts.rejected).sum(),
            facts: detail::facts(status),
            stages: detail::stage_rows(status),
            chart: chart::chart(timeline),
            actions,
            notice,
            layout,
        }
    }
}

/// GET /ui/rollouts/{id}
pub async fn show(
    svc: web::Data<Services>,
    user: UiUser,
    id: web::Path<String>,
    q: web::Query<NoticeQuery>,
) -> Result<HttpResponse, UiError> {
    let status = rollout_status(&svc, &id).await?;
    let timeline = rollout_timeline(&svc, &id).await?;
    let page = RolloutPage::new(Layout::of(&user, "rollouts"), &status, &timeline, notice_text(&q.notice));
    Ok(html(StatusCode::OK, page.render()?))
}

#[derive(Template)]
#[template(path = "ui/rollout_new.html")]
struct NewPage {
    layout: Layout,
    /// The product chosen, as posted.
    product: String,
    /// Every product, and whether it is the chosen one.
    products: Vec<(String, bool)>,
    /// A product was posted that is not in the list: kept as an option so it shows.
    product_unknown: bool,
    product_error: Option<String>,
    id_input: Input,
    version_input: Input,
    stages: Vec<StageInputs>,
    gate: Vec<Input>,
    auto_advance: bool,
    cohorts: Vec<(String, String)>,
    notice: Option<String>,
}

async fn render_form(
    svc: &Services,
    user: &UiUser,
    form: &RolloutForm,
    errors: &FieldErrors,
    status: StatusCode,
    notice: Option<String>,
) -> Result<HttpResponse, UiError> {
    let product = form.product.trim().to_owned();
    let products: Vec<(String, bool)> =
        list_products(svc).await?.into_iter().map(|p| (p.name.clone(), p.name == product)).collect();
    let cohorts = list_cohorts(svc, None).await?.into_iter().map(|c| (c.cohort.name, c.product)).collect();
    let (id_input, version_input) = form::release_inputs(form, errors);
    let page = NewPage {
        layout: Layout::of(user, "rollouts"),
        product_unknown: !product.is_empty() && !products.iter().any(|(_, chosen)| *chosen),
        product,
        products,
        product_error: errors.get("product").cloned(),
        id_input,
        version_input,
        stages: form::stage_inputs(form, errors),
        gate: form::gate_inputs(form, errors),
        auto_advance: form.auto_advance == "on",
        cohorts,
        notice,
    };
    Ok(html(status, page.render()?))
}

/// `?product=&version=` to start the form from a release's page.
#[derive(Debug, Deserialize)]
pub struct NewQuery {
    #[serde(default)]
    product: String,
    #[serde(default)]
    version: String,
}

/// GET /ui/rollouts/new
pub async fn new(svc: web::Data<Services>, user: UiUser, q: web::Query<NewQuery>) -> Result<HttpResponse, UiError> {
    user.require(Permission::ManageRollouts)?;
    let q = q.into_inner();
    let form = RolloutForm::blank(q.product, q.version);
    render_form(&svc, &user, &form, &FieldErrors::default(), StatusCode::OK, None).await
}

/// POST /ui/rollouts
pub async fn create(
    svc: web::Data<Services>,
    user: UiUser,
    posted: web::Form<RolloutForm>,
) -> Result<HttpResponse, UiError> {
    user.may_change(Permission::ManageRollouts, &posted.csrf)?;
    let posted = posted.into_inner();
    let mut errors = FieldErrors::default();
    let Some(input) = form::parse(&posted, &mut errors) else {
        return render_form(&svc, &user, &posted, &errors, StatusCode::BAD_REQUEST, None).await;
    };
    let e = match create_rollout(&svc, &user.0.caller(), input).await {
        Ok(r) => return Ok(see_other(&format!("/ui/rollouts/{}?notice=created", r.id))),
        Err(e @ ServiceError::Internal(_)) => return Err(e.into()),
        Err(e) => e,
    };
    let status = crate::http::error::ApiError::status_of(&e);
    let notice = match form::refusal_field(&e, &posted) {
        Some((field, message)) => {
            errors.add(field, message);
            None
        }
        None => Some(e.to_string()),
    };
    render_form(&svc, &user, &posted, &errors, status, notice).await
}

/// Registers this module's routes under `/ui`.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/rollouts", [(Method::GET, web::to(list)), (Method::POST, web::to(create))]))
        .service(resource("/rollouts/new", [(Method::GET, web::to(new))]))
        .service(resource("/rollouts/{id}", [(Method::GET, web::to(show))]))
        .service(resource(
            "/rollouts/{id}/{action}",
            [(Method::GET, web::to(actions::confirm)), (Method::POST, web::to(actions::act))],
        ));
}
