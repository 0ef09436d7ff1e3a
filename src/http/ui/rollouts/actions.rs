//! Steering a rollout from the UI: which actions a state allows (for the buttons), the
//! confirmation page that says what an action will do, and the POST that applies it through
//! `manage_rollout::act_on_rollout`, the same service as `POST /api/v1/rollouts/{id}/{action}`.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use askama::Template;
use serde::Deserialize;

use super::super::pages::Layout;
use super::super::session::{UiError, UiUser, html};
use super::{StateBadge, see_other};
use crate::domain::rollout::{RolloutAction, RolloutState, RolloutView};
use crate::services::auth::Permission;
use crate::services::manage_rollout::{act_on_rollout, get_rollout, rollback_preview};
use crate::services::rollout_view::view_of;
use crate::services::{ServiceError, Services};

/// Every action, in the order the buttons appear.
const ACTIONS: [&str; 6] = ["start", "pause", "resume", "advance", "abort", "rollback"];

/// The actions `state` allows (`apply_action` refuses the others as not allowed).
pub fn allowed(state: RolloutState) -> &'static [&'static str] {
    match state {
        RolloutState::Draft => &["start"],
        RolloutState::Running => &["pause", "advance", "abort", "rollback"],
        RolloutState::Paused | RolloutState::Halted => &["resume", "abort", "rollback"],
        RolloutState::Aborted | RolloutState::Completed => &["rollback"],
        RolloutState::RolledBack => &[],
    }
}

/// A button on the rollout page: a link to the action's confirmation page.
#[derive(Debug, Clone)]
pub struct ActionLink {
    /// The action's name in the URL.
    pub name: &'static str,
    /// The button's text.
    pub label: &'static str,
    /// `primary` or `danger`.
    pub class: &'static str,
}

/// The buttons for a rollout in `state`.
pub fn links(state: RolloutState) -> Vec<ActionLink> {
    allowed(state)
        .iter()
        .map(|name| ActionLink {
            name,
            label: label(name),
            class: if matches!(*name, "abort" | "rollback") { "danger" } else { "primary" },
        })
        .collect()
}

fn label(action: &str) -> &'static str {
    match action {
        "start" => "Start",
        "pause" => "Pause",
        "resume" => "Resume",
        "advance" => "Advance",
        "abort" => "Abort",
        _ => "Roll back",
    }
}

/// The `?notice=` code after a successful action.
fn notice_code(action: RolloutAction) -> &'static str {
    match action {
        RolloutAction::Start => "started",
        RolloutAction::Pause => "paused",
        RolloutAction::Resume => "resumed",
        RolloutAction::Advance { force: false } => "advanced",
        RolloutAction::Advance { force: true } => "advanced_forced",
        RolloutAction::Abort => "aborted",
        RolloutAction::Rollback => "rolled_back",
    }
}

/// How many devices a rollback sends back, and to which versions, in sentences.
fn rollback_counts(preview: &[(Option<String>, u64)]) -> String {
    let total: u64 = preview.iter().map(|(_, n)| n).sum();
    if total == 0 {
        return "No device has installed this release or is installing it: none is sent back.".into();
    }
    let mut text = if total == 1 {
        "1 device installed this release or is installing it.".to_owned()
    } else {
        format!("{total} devices installed this release or are installing it.")
    };
    let back: Vec<String> = preview.iter().filter_map(|(v, n)| v.as_ref().map(|v| format!("{n} to {v}"))).collect();
    if !back.is_empty() {
        text.push_str(&format!(" Going back: {}.", back.join(", ")));
    }
    let kept: u64 = preview.iter().filter(|(v, _)| v.is_none()).map(|(_, n)| n).sum();
    if kept > 0 {
        text.push_str(&format!(" {kept} ran no release on record before it and keep this one."));
    }
    text
}

/// What `action` will do to this rollout, in sentences.
fn effects(action: &str, view: &RolloutView) -> Vec<String> {
    let stage = |i: usize| {
        view.stages.get(i).map(|s| format!("stage {} (cohort {}, {})", i + 1, s.cohort, s.percent)).unwrap_or_default()
    };
    let withdraw = "At each device's next report, assignments that have not started installing are withdrawn; \
        devices already installing finish.";
    match action {
        "start" => vec![
            format!("Opens {}: its devices get the release at their next report.", stage(0)),
            "Refused if another active rollout of this product covers one of its cohorts.".into(),
        ],
        "pause" => vec![
            "Stops assigning the release to new devices.".into(),
            withdraw.into(),
            "The soak clock keeps running; resume to continue.".into(),
        ],
        "resume" if view.state == RolloutState::Halted => vec![
            "You acknowledge the failures that halted the rollout.".into(),
            "The current stage's soak and the gate's counting window restart now; devices are assigned again.".into(),
        ],
        "resume" => vec!["Devices of the open stages are assigned the release again at their next report.".into()],
        "advance" => {
            let next = view.current_stage + 1;
            let target = if next < view.stages.len() {
                format!("Opens {}.", stage(next))
            } else {
                "Completes the rollout: this is its last stage.".into()
            };
            vec![
                target,
                "Refused unless the current stage has soaked and has its minimum of final reports.".into(),
                "Forcing skips those checks; the skipped checks are recorded in the audit log.".into(),
            ]
        }
        "abort" => vec![
            "Ends the rollout for good: no device is assigned the release any more.".into(),
            withdraw.into(),
            "Devices that installed the release keep it.".into(),
        ],
        _ => vec![
            "Every device that installed this release, or is installing it, is assigned the release it ran \
             before, at its next report."
                .into(),
            "Other assignments are withdrawn. This cannot be undone.".into(),
        ],
    }
}

#[derive(Template)]
#[template(path = "ui/rollout_confirm.html")]
struct ConfirmPage {
    layout: Layout,
    id: String,
    action: &'static str,
    label: &'static str,
    danger: bool,
    state: StateBadge,
    effects: Vec<String>,
    /// The state does not allow the action (the service would refuse it).
    warning: Option<String>,
    /// The service's refusal of a confirmed action.
    refusal: Option<String>,
    force: bool,
    /// The note as typed, and what is wrong with it.
    note: String,
    note_error: Option<String>,
}

/// The action named in the path, or a 404 page.
fn action_name(name: &str) -> Result<&'static str, UiError> {
    ACTIONS.into_iter().find(|a| *a == name).ok_or_else(|| {
        UiError::NotFound(format!("{name:?} is not an action: start, pause, resume, advance, abort, rollback."))
    })
}

async fn render(
    svc: &Services,
    user: &UiUser,
    id: &str,
    action: &'static str,
    typed: Typed,
    refusal: Option<(StatusCode, ServiceError)>,
) -> Result<HttpResponse, UiError> {
    let r = get_rollout(svc, id).await?;
    let view = view_of(&r)?;
    let warning = (!allowed(view.state).contains(&action)).then(|| {
        format!(
            "This rollout is {}: it cannot {} now.",
            view.state.as_str().replace('_', " "),
            label(action).to_lowercase()
        )
    });
    let (status, refusal) = refusal.map_or((StatusCode::OK, None), |(s, e)| (s, Some(e)));
    let (note_error, refusal) = match refusal {
        Some(e @ ServiceError::Invalid { code: "invalid_note", .. }) => {
            (Some(format!("{e}. Nothing was changed.")), None)
        }
        other => (None, other.map(|e| e.to_string())),
    };
    let mut effects = effects(action, &view);
    if action == "rollback" {
        effects.insert(0, rollback_counts(&rollback_preview(svc, id).await?));
    }
    let page = ConfirmPage {
        layout: Layout::of(user, "rollouts"),
        id: r.id.clone(),
        action,
        label: label(action),
        danger: matches!(action, "abort" | "rollback"),
        state: StateBadge::of(view.state),
        effects,
        warning,
        refusal,
        force: typed.force,
        note: typed.note,
        note_error,
    };
    Ok(html(status, page.render()?))
}

/// GET /ui/rollouts/{id}/{action}
pub async fn confirm(
    svc: web::Data<Services>,
    user: UiUser,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, UiError> {
    user.require(Permission::ManageRollouts)?;
    let (id, name) = path.into_inner();
    render(&svc, &user, &id, action_name(&name)?, Typed::default(), None).await
}

/// What the confirmation form held, shown again when the action is refused.
#[derive(Debug, Default)]
struct Typed {
    force: bool,
    note: String,
}

/// The confirmation form.
#[derive(Debug, Deserialize)]
pub struct ActionForm {
    #[serde(default)]
    csrf: String,
    /// `on` when "advance even if…" is ticked.
    #[serde(default)]
    force: String,
    /// Why, for the audit log (optional).
    #[serde(default)]
    note: String,
}

/// POST /ui/rollouts/{id}/{action}
pub async fn act(
    svc: web::Data<Services>,
    user: UiUser,
    path: web::Path<(String, String)>,
    form: web::Form<ActionForm>,
) -> Result<HttpResponse, UiError> {
    user.may_change(Permission::ManageRollouts, &form.csrf)?;
    let (id, name) = path.into_inner();
    let name = action_name(&name)?;
    let form = form.into_inner();
    let force = form.force == "on";
    let action = RolloutAction::parse(name, force).ok_or_else(|| UiError::NotFound(name.to_owned()))?;
    match act_on_rollout(&svc, &user.0.caller(), &id, action, Some(&form.note)).await {
        Ok(r) => {
            let completed = r.state == RolloutState::Completed.as_str();
            let code = match action {
                RolloutAction::Advance { force: false } if completed => "completed",
                RolloutAction::Advance { force: true } if completed => "completed_forced",
                _ => notice_code(action),
            };
            Ok(see_other(&format!("/ui/rollouts/{}?notice={code}", r.id)))
        }
        Err(e @ (ServiceError::Conflict { .. } | ServiceError::Invalid { .. })) => {
            let status = crate::http::error::ApiError::status_of(&e);
            render(&svc, &user, &id, name, Typed { force, note: form.note }, Some((status, e))).await
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::rollout::{FailureRate, Gate, Percent, RolloutError, StageCounts, StagePlan, apply_action};

    #[test]
    fn a_rollback_says_how_many_devices_go_back_and_to_what() {
        assert_eq!(
            rollback_counts(&[]),
            "No device has installed this release or is installing it: none is sent back."
        );
        let preview = [(Some("1.0.0".to_owned()), 12), (Some("0.9.2".to_owned()), 3), (None, 1)];
        assert_eq!(
            rollback_counts(&preview),
            "16 devices installed this release or are installing it. Going back: 12 to 1.0.0, 3 to 0.9.2. 1 ran no \
             release on record before it and keep this one."
        );
        assert_eq!(
            rollback_counts(&[(Some("1.0.0".to_owned()), 1)]),
            "1 device installed this release or is installing it. Going back: 1 to 1.0.0."
        );
    }

    #[test]
    fn the_buttons_are_exactly_the_actions_the_state_machine_allows() {
        let states = [
            RolloutState::Draft,
            RolloutState::Running,
            RolloutState::Paused,
            RolloutState::Halted,
            RolloutState::Aborted,
            RolloutState::Completed,
            RolloutState::RolledBack,
        ];
        let plan =
            StagePlan { cohort: "eu".into(), percent: Percent::from_basis_points(100).unwrap(), soak_seconds: 0 };
        let gate =
            Gate { max_failure_rate: FailureRate::from_basis_points(500).unwrap(), min_reports: 0, stall_seconds: 60 };
        for state in states {
            let view = RolloutView {
                state,
                stages: vec![plan.clone(), plan.clone()],
                current_stage: 0,
                stage_started_at: 0,
                gate,
                auto_advance: false,
            };
            for name in ACTIONS {
                let action = RolloutAction::parse(name, false).unwrap();
                let result = apply_action(&view, action, 10, &StageCounts::default());
                let refused = matches!(result, Err(RolloutError::NotAllowed { .. }));
                assert_eq!(allowed(state).contains(&name), !refused, "{state:?} {name}");
            }
        }
    }
}
