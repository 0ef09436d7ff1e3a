//! Admin UI rollout pages: the list, the new-rollout form (field messages, values kept, service
//! refusals), a rollout's page with its stages, gate verdicts, halt reason, rejections and
//! chart, and the confirmed actions; a viewer sees everything and changes nothing, and no
//! change happens without the session's CSRF token.

use patchgate::services::auth::Role;
use patchgate_protocol::report::AttemptState;
use serde_json::{Value, json};

use crate::common::{TestApp, firmware, spawn_app};
use crate::fleet::{Device, Image, enrollment_token};
use crate::ui_common::{Browser, Page, audit_actions};

const PRODUCT: &str = "pump-x1";
const HW: &str = "pump-x1-revA";

/// A product with releases 1.0.0 and 1.1.0 and a cohort `eu` (selector `region:eu`).
async fn setup() -> (TestApp, Image, Image) {
    let app = spawn_app().await;
    app.create_product(PRODUCT, &[HW]).await;
    let old = Image::from_publish(&app.publish(PRODUCT, "1.0.0", "fw.bin", firmware(1, 2048)).await);
    let new = Image::from_publish(&app.publish(PRODUCT, "1.1.0", "fw.bin", firmware(2, 2048)).await);
    let res = app
        .client
        .post(app.url("/api/v1/cohorts"))
        .bearer_auth(&app.admin)
        .json(&json!({"name": "eu", "product": PRODUCT, "selector": {"tags": ["region:eu"]}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    (app, old, new)
}

/// Creates a draft rollout of 1.1.0 to `eu` over the API.
async fn api_rollout(app: &TestApp, id: &str, max_failure_rate: f64) {
    let body = json!({"id": id, "product": PRODUCT, "version": "1.1.0",
        "stages": [{"cohort": "eu", "percent": 100, "soak_minutes": 60}],
        "gate": {"max_failure_rate": max_failure_rate, "min_reports": 1, "stall_minutes": 1440}});
    let res = app.client.post(app.url("/api/v1/rollouts")).bearer_auth(&app.admin).json(&body).send().await.unwrap();
    assert_eq!(res.status(), 201);
}

async fn api_act(app: &TestApp, id: &str, action: &str) {
    let url = app.url(&format!("/api/v1/rollouts/{id}/{action}"));
    assert_eq!(app.client.post(url).bearer_auth(&app.admin).send().await.unwrap().status(), 200);
}

async fn rollout(app: &TestApp, id: &str) -> Value {
    app.get_json(&format!("/api/v1/rollouts/{id}")).await
}

/// The new-rollout form as a release manager fills it in.
fn good_form(id: &'static str) -> Vec<(&'static str, &'static str)> {
    vec![
        ("id", id),
        ("product", PRODUCT),
        ("version", "1.1.0"),
        ("stage1_cohort", "eu"),
        ("stage1_percent", "50"),
        ("stage1_soak_minutes", "60"),
        ("stage2_cohort", "eu"),
        ("stage2_percent", "100"),
        ("stage2_soak_minutes", "60"),
        ("stage3_cohort", ""),
        ("stage3_percent", ""),
        ("stage3_soak_minutes", ""),
        ("max_failure_rate", "5"),
        ("min_reports", "1"),
        ("stall_minutes", "1440"),
        ("auto_advance", "on"),
    ]
}

fn with(
    mut fields: Vec<(&'static str, &'static str)>,
    changes: &[(&'static str, &'static str)],
) -> Vec<(&'static str, &'static str)> {
    for (name, value) in changes {
        fields.retain(|(n, _)| n != name);
        fields.push((name, value));
    }
    fields
}

/// The message shown next to `field`.
fn field_error(page: &Page, field: &str) -> String {
    let marker = format!("id=\"{field}-error\">");
    let at = page.body.find(&marker).unwrap_or_else(|| panic!("no message for {field}:\n{}", page.body));
    let rest = &page.body[at + marker.len()..];
    rest[..rest.find('<').unwrap()].to_owned()
}

#[tokio::test]
async fn the_rollout_list_filters_by_product_and_state_and_pages_fifty_at_a_time() {
    let (app, _, _) = setup().await;
    for i in 0..52 {
        api_rollout(&app, &format!("r-{i:03}"), 0.5).await;
    }
    api_act(&app, "r-000", "start").await;
    let mut viewer = Browser::signed_in(&app, "vera", Role::Viewer).await;
    let rows = |page: &Page| -> Vec<String> {
        page.body
            .split("<th scope=\"row\"><a href=\"/ui/rollouts/")
            .skip(1)
            .map(|rest| rest[..rest.find('"').unwrap()].to_owned())
            .collect()
    };
    let newest: Vec<String> = (2..52).rev().map(|i| format!("r-{i:03}")).collect();

    let first = viewer.get("/ui/rollouts").await;
    assert_eq!(rows(&first), newest);
    assert!(first.body.contains("<a href=\"/ui/rollouts?before=r-002\" rel=\"next\">Older rollouts</a>"));
    let second = viewer.get("/ui/rollouts?before=r-002").await;
    assert_eq!(rows(&second), ["r-001", "r-000"]);
    assert!(second.body.contains("UTC (just now)"), "start times count back");
    assert!(!second.body.contains("rel=\"next\"") && second.body.contains("Newest first</a>"));

    let running = viewer.get("/ui/rollouts?state=running").await;
    assert_eq!(rows(&running), ["r-000"]);
    assert!(running.body.contains("<option value=\"running\" selected>"));
    let drafts = viewer.get("/ui/rollouts?product=pump-x1&state=draft").await;
    assert_eq!(rows(&drafts), newest[..50]);
    assert!(drafts.body.contains("/ui/rollouts?product=pump-x1&#38;state=draft&#38;before=r-002"), "{}", drafts.body);
    let later = viewer.get("/ui/rollouts?product=pump-x1&state=draft&before=r-002").await;
    assert_eq!(rows(&later), ["r-001"]);
    let none = viewer.get("/ui/rollouts?state=halted").await;
    assert!(rows(&none).is_empty() && none.body.contains("No rollout matches."));

    for (query, status, text) in [
        ("state=broken", 400, "broken&#34; is not a rollout state"),
        ("product=nope", 404, "product nope does not exist"),
        ("before=r-nope", 400, "The page link is malformed: start again from the first page."),
    ] {
        let page = viewer.get(&format!("/ui/rollouts?{query}")).await;
        assert_eq!(page.status, status, "{query}");
        assert!(page.body.contains(text), "{query}: {}", page.body);
        assert!(rows(&page).is_empty());
    }
}

#[tokio::test]
async fn a_viewer_sees_stages_gate_halt_reason_rejections_and_chart_but_no_change_buttons() {
    let (app, old, new) = setup().await;
    api_rollout(&app, "r-watch", 0.5).await;
    api_act(&app, "r-watch", "start").await;
    let token = enrollment_token(&app, PRODUCT, &["region:eu"], 3).await;
    let mut devices = Vec::new();
    for i in 0..3 {
        let mut d = Device::enroll(&app, &format!("pump-{i:04}"), PRODUCT, HW, &token).await;
        d.installed = Some(old.clone());
        d.report(&app, None).await;
        devices.push(d);
    }
    devices[0].report(&app, Some((&new, AttemptState::Installed))).await;
    devices[1].report(&app, Some((&new, AttemptState::Rejected))).await;

    let mut viewer = Browser::signed_in(&app, "vera", Role::Viewer).await;
    let list = viewer.get("/ui/rollouts").await;
    assert_eq!(list.status, 200);
    assert!(list.body.contains("href=\"/ui/rollouts/r-watch\""), "{}", list.body);
    assert!(list.body.contains(">running</span>") && list.body.contains("1 of 1"), "{}", list.body);
    assert!(list.body.contains("within gate") && list.body.contains(">rejections</span>"), "{}", list.body);
    assert!(!list.body.contains("/ui/rollouts/new"), "a viewer is not offered a new rollout");

    let page = viewer.get("/ui/rollouts/r-watch").await;
    assert_eq!(page.status, 200);
    for expected in [
        "data-live=\"rollout-stages\"",
        "<th scope=\"col\">Gate</th>",
        "1 of 3 installed (33 %), 0 installing, 0 failed, 1 rejected",
        "within gate",
        "Failure rate 50.00 % (1 of 2 final reports) against a gate of 50.00 %",
        "notice notice-security",
        "badge badge-security\">1 rejected",
        "<svg class=\"chart\" role=\"img\" aria-labelledby=\"chart-title chart-desc\"",
        "1 installed, 0 failed, 1 rejected.",
        "Installed (solid line)",
        "href=\"/ui/products/pump-x1/releases/1.1.0\"",
    ] {
        assert!(page.body.contains(expected), "{expected:?} missing:\n{}", page.body);
    }
    assert!(!page.body.contains("/ui/rollouts/r-watch/pause"), "no change buttons for a viewer");
    assert!(!page.body.contains("Why it halted"));

    // A second failure puts the stage over its 50 % gate: halted, and the page says why.
    devices[2].report(&app, Some((&new, AttemptState::Failed))).await;
    let page = viewer.get("/ui/rollouts/r-watch").await;
    assert!(page.body.contains(">halted</span>"), "{}", page.body);
    let why = &page.body[page.body.find("Why it halted").expect("the halt reason")..];
    assert!(why.contains("over the gate of 50.00%"), "{why}");
    assert!(page.body.contains("1 installed, 1 failed, 1 rejected."));
    // A stage's counts lead to that stage's devices.
    for (outcome, device) in [("failed", "pump-0002"), ("rejected", "pump-0001")] {
        let link = format!("/ui/devices?rollout=r-watch&amp;stage=1&amp;outcome={outcome}");
        assert!(page.body.contains(&format!("href=\"{link}\"")), "{link}:\n{}", page.body);
        let listed = viewer.get(&link.replace("&amp;", "&")).await;
        assert!(listed.body.contains(&format!("href=\"/ui/devices/{device}\"")), "{}", listed.body);
    }
    assert!(!page.body.contains("/ui/rollouts/r-watch/resume"));
    assert_eq!(viewer.get("/ui/rollouts/r-watch/resume").await.status, 403);
    assert_eq!(viewer.get("/ui/rollouts/new").await.status, 403);
    assert_eq!(viewer.get("/ui/rollouts/nope").await.status, 404);
}

#[tokio::test]
async fn a_release_manager_creates_a_rollout_with_the_form_and_steers_it_with_confirmations() {
    let (app, _, _) = setup().await;
    let mut rita = Browser::signed_in(&app, "rita", Role::ReleaseManager).await;
    assert!(rita.get("/ui/rollouts").await.body.contains("href=\"/ui/rollouts/new\""));
    let form = rita.get("/ui/rollouts/new").await;
    assert_eq!(form.status, 200);
    for expected in
        ["id=\"rollout-form\"", "<label for=\"stage4_soak_minutes\">", "<option value=\"pump-x1\">", "Create rollout"]
    {
        assert!(form.body.contains(expected), "{expected:?} missing:\n{}", form.body);
    }
    let created = rita.submit("/ui/rollouts/new", "/ui/rollouts", &good_form("r-ui")).await;
    assert_eq!((created.status, created.location.as_deref()), (303, Some("/ui/rollouts/r-ui?notice=created")));
    let r = rollout(&app, "r-ui").await;
    assert_eq!((r["state"].as_str(), r["auto_advance"].as_bool()), (Some("draft"), Some(true)));
    assert_eq!(r["stages"][0]["percent"], 50.0);
    assert_eq!(r["stages"][1]["soak_minutes"], 60);
    assert_eq!(r["max_failure_rate"], 0.05);
    let page = rita.get("/ui/rollouts/r-ui?notice=created").await;
    assert!(page.body.contains("Rollout created as a draft."), "{}", page.body);
    assert!(page.body.contains("href=\"/ui/rollouts/r-ui/start\">Start</a>"));
    assert!(!page.body.contains("/ui/rollouts/r-ui/pause"), "a draft cannot be paused");
    assert!(!rita.get("/ui/rollouts/r-ui?notice=<b>hi</b>").await.body.contains("<b>hi"), "codes only, never echoed");

    let confirm = rita.get("/ui/rollouts/r-ui/start").await;
    assert!(confirm.body.contains("id=\"confirm-form\"") && confirm.body.contains("Confirm start"), "{}", confirm.body);
    let started = rita.submit("/ui/rollouts/r-ui/start", "/ui/rollouts/r-ui/start", &[]).await;
    assert_eq!(started.location.as_deref(), Some("/ui/rollouts/r-ui?notice=started"));
    assert_eq!(rollout(&app, "r-ui").await["state"], "running");

    // Not soaked: the service refuses and the confirmation page says why; forcing goes through.
    let advance = rita.get("/ui/rollouts/r-ui/advance").await;
    assert!(advance.body.contains("name=\"force\" type=\"checkbox\" value=\"on\""), "{}", advance.body);
    let refused = rita.submit("/ui/rollouts/r-ui/advance", "/ui/rollouts/r-ui/advance", &[]).await;
    assert_eq!(refused.status, 409);
    assert!(
        refused.body.contains("not ready to advance") && refused.body.contains("Confirm advance"),
        "{}",
        refused.body
    );
    assert_eq!(rollout(&app, "r-ui").await["current_stage"], 0);
    let forced = rita.submit("/ui/rollouts/r-ui/advance", "/ui/rollouts/r-ui/advance", &[("force", "on")]).await;
    assert_eq!(forced.location.as_deref(), Some("/ui/rollouts/r-ui?notice=advanced_forced"));
    assert_eq!(rollout(&app, "r-ui").await["current_stage"], 1);
    assert!(rita.get("/ui/rollouts/r-ui").await.body.contains("forced: soak"));

    // A note that is too long: refused next to its field, kept as typed, nothing done.
    let long = "n".repeat(501);
    let refused = rita.submit("/ui/rollouts/r-ui/pause", "/ui/rollouts/r-ui/pause", &[("note", &long)]).await;
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert!(
        refused.body.contains("id=\"note-error\">the note is 501 characters long: at most 500"),
        "{}",
        refused.body
    );
    assert!(refused.body.contains(&format!(">{long}</textarea>")), "kept as typed");
    assert_eq!(rollout(&app, "r-ui").await["state"], "running");
    for (action, code, state) in
        [("pause", "paused", "paused"), ("resume", "resumed", "running"), ("abort", "aborted", "aborted")]
    {
        let path = format!("/ui/rollouts/r-ui/{action}");
        let note = format!("{action}: ward 3 asked");
        let done = rita.submit(&path, &path, &[("note", &note)]).await;
        assert_eq!(done.location, Some(format!("/ui/rollouts/r-ui?notice={code}")), "{action}");
        assert_eq!(rollout(&app, "r-ui").await["state"], state);
    }
    let page = rita.get("/ui/rollouts/r-ui?notice=aborted").await;
    assert!(page.body.contains("Rollout aborted") && page.body.contains(">Roll back</a>"), "{}", page.body);
    assert!(!page.body.contains("/ui/rollouts/r-ui/resume"));
    assert_eq!(rita.get("/ui/rollouts/r-ui/explode").await.status, 404);

    let audit = audit_actions(&app).await;
    for action in ["create", "start", "advance", "pause", "resume", "abort"] {
        let entry = ("user:rita".to_owned(), format!("rollout.{action}"), "rollout:r-ui".to_owned());
        assert!(audit.contains(&entry), "{entry:?} missing: {audit:?}");
    }
    // Each note is kept with its action, and the rollout's own history lists them.
    let paused: Value = app.get_json("/api/v1/audit?action=rollout.pause").await;
    assert_eq!(paused[0]["after"]["note"], "pause: ward 3 asked", "{paused}");
    let history = rita.get("/ui/audit?object=rollout%3Ar-ui").await;
    for action in ["pause", "resume", "abort"] {
        assert!(history.body.contains(&format!("{action}: ward 3 asked")), "{action}: {}", history.body);
    }
}

#[tokio::test]
async fn bad_input_is_shown_next_to_its_field_with_what_was_typed_and_creates_nothing() {
    let (app, _, _) = setup().await;
    api_rollout(&app, "r-taken", 0.05).await;
    let mut rita = Browser::signed_in(&app, "rita", Role::ReleaseManager).await;
    let bad = with(
        good_form("Bad Id"),
        &[
            ("product", ""),
            ("version", ""),
            ("stage1_percent", "150"),
            ("stage1_soak_minutes", "x"),
            ("stage2_cohort", ""),
            ("max_failure_rate", "abc"),
            ("min_reports", "-1"),
            ("stall_minutes", "0"),
        ],
    );
    let page = rita.submit("/ui/rollouts/new", "/ui/rollouts", &bad).await;
    assert_eq!(page.status, 400);
    for field in [
        "id",
        "product",
        "version",
        "stage1_percent",
        "stage1_soak_minutes",
        "stage2_cohort",
        "max_failure_rate",
        "min_reports",
        "stall_minutes",
    ] {
        assert!(!field_error(&page, field).is_empty(), "{field}");
        assert!(page.body.contains(&format!("aria-describedby=\"{field}-error")), "{field}");
    }
    for kept in ["value=\"Bad Id\"", "value=\"150\"", "value=\"x\"", "value=\"abc\"", "value=\"-1\"", "value=\"100\""] {
        assert!(page.body.contains(kept), "{kept} not kept");
    }
    assert!(page.body.contains("value=\"on\" checked"), "the ticked box stays ticked");

    // Well-formed but refused by the service: the message goes next to the field it is about.
    let unknown_release =
        rita.submit("/ui/rollouts/new", "/ui/rollouts", &with(good_form("r-a"), &[("version", "9.9.9")])).await;
    assert_eq!(unknown_release.status, 404);
    assert!(field_error(&unknown_release, "version").contains("has no release 9.9.9"));
    assert!(unknown_release.body.contains("value=\"9.9.9\"") && unknown_release.body.contains("value=\"r-a\""));
    let fields = with(good_form("r-b"), &[("stage2_cohort", "nowhere")]);
    let unknown_cohort = rita.submit("/ui/rollouts/new", "/ui/rollouts", &fields).await;
    assert!(field_error(&unknown_cohort, "stage2_cohort").contains("has no cohort nowhere"), "{}", unknown_cohort.body);
    let taken = rita.submit("/ui/rollouts/new", "/ui/rollouts", &good_form("r-taken")).await;
    assert_eq!(taken.status, 409);
    assert!(field_error(&taken, "id").contains("already exists"));
    let lowered = with(good_form("r-c"), &[("stage2_percent", "10")]);
    let plan = rita.submit("/ui/rollouts/new", "/ui/rollouts", &lowered).await;
    assert_eq!(plan.status, 400);
    assert!(plan.body.contains("notice notice-error") && plan.body.contains("lowers cohort eu"), "{}", plan.body);

    let all: Vec<Value> = app.get_json("/api/v1/rollouts").await;
    assert_eq!(all.len(), 1, "only the rollout made over the API: {all:?}");
    let audit = audit_actions(&app).await;
    assert!(
        audit.iter().all(|(actor, action, _)| !(actor == "user:rita" && action.starts_with("rollout."))),
        "{audit:?}"
    );
}

#[tokio::test]
async fn no_change_without_the_csrf_token_or_by_a_viewer() {
    let (app, _, _) = setup().await;
    api_rollout(&app, "r-x", 0.05).await;
    let mut rita = Browser::signed_in(&app, "rita", Role::ReleaseManager).await;
    assert_eq!(rita.post("/ui/rollouts", &good_form("r-new")).await.status, 403);
    assert_eq!(rita.post("/ui/rollouts/r-x/start", &[]).await.status, 403);
    assert_eq!(rita.post("/ui/rollouts/r-x/start", &[("csrf", "forged")]).await.status, 403);

    let mut vera = Browser::signed_in(&app, "vera", Role::Viewer).await;
    let csrf = vera.get("/ui/rollouts/r-x").await.csrf();
    assert_eq!(vera.post("/ui/rollouts/r-x/start", &[("csrf", &csrf)]).await.status, 403);
    let mut fields = good_form("r-new");
    fields.push(("csrf", &csrf));
    assert_eq!(vera.post("/ui/rollouts", &fields).await.status, 403);

    let mut anonymous = Browser::new(&app);
    let page = anonymous.post("/ui/rollouts/r-x/start", &[("csrf", &csrf)]).await;
    assert_eq!(page.status, 303);
    assert!(page.location.unwrap().starts_with("/ui/login"));

    assert_eq!(rollout(&app, "r-x").await["state"], "draft");
    let all: Vec<Value> = app.get_json("/api/v1/rollouts").await;
    assert_eq!(all.len(), 1);
    let audit = audit_actions(&app).await;
    assert!(
        audit.iter().all(|(actor, action, _)| !(action.starts_with("rollout.") && actor.starts_with("user:"))),
        "{audit:?}"
    );
}

/// A rollout whose devices all run something newer (a downgrade they are never assigned) is not
/// a healthy green rollout: its stage says nothing is assigned, and why that may be.
#[tokio::test]
async fn a_rollout_that_assigns_nothing_says_so_instead_of_looking_healthy() {
    let (app, old, new) = setup().await;
    let token = enrollment_token(&app, PRODUCT, &["region:eu"], 2).await;
    for i in 1..=2 {
        let mut d = Device::enroll(&app, &format!("pump-{i:04}"), PRODUCT, HW, &token).await;
        d.installed = Some(new.clone());
        d.report(&app, None).await;
    }
    let admin = |path: &str, body: Value| app.client.post(app.url(path)).bearer_auth(&app.admin).json(&body).send();
    let rollout = json!({"id": "r-down", "product": PRODUCT, "version": old.version,
        "stages": [{"cohort": "eu", "percent": 100, "soak_minutes": 60}],
        "gate": {"max_failure_rate": 0.1, "min_reports": 1, "stall_minutes": 1440}});
    assert_eq!(admin("/api/v1/rollouts", rollout).await.unwrap().status(), 201);
    assert_eq!(admin("/api/v1/rollouts/r-down/start", json!({})).await.unwrap().status(), 200);
    let mut viewer = Browser::signed_in(&app, "vic", Role::Viewer).await;
    let page = viewer.get("/ui/rollouts/r-down").await;
    assert_eq!(page.status, 200);
    let stages = &page.body[page.body.find("data-live=\"rollout-stages\"").unwrap()..];
    assert!(stages.contains("badge badge-warn\">nothing assigned yet</span>"), "{stages}");
    assert!(stages.contains("No device is assigned yet"), "{stages}");
    assert!(!page.body.contains("within gate"), "nothing to judge is not green:\n{}", page.body);
    let dashboard = viewer.get("/ui/").await;
    assert!(dashboard.body.contains("nothing assigned yet") && !dashboard.body.contains("within gate"));
}

/// The confirmation pages say what matters before a click: a rollback how many devices go back
/// and to which version, an action the state does not allow cannot be confirmed, and after an
/// advance the notice says whether the rollout completed.
#[tokio::test]
async fn confirmations_count_the_devices_a_rollback_sends_back_and_say_when_an_advance_completes() {
    let (app, old, new) = setup().await;
    let token = enrollment_token(&app, PRODUCT, &["region:eu"], 3).await;
    let mut devices = Vec::new();
    for i in 1..=3 {
        let mut d = Device::enroll(&app, &format!("pump-{i:04}"), PRODUCT, HW, &token).await;
        d.installed = Some(old.clone());
        devices.push(d);
    }
    api_rollout(&app, "r-conf", 0.5).await;
    api_act(&app, "r-conf", "start").await;
    for d in &mut devices {
        d.report(&app, None).await;
    }
    devices[0].report(&app, Some((&new, AttemptState::Installed))).await;
    devices[1].report(&app, Some((&new, AttemptState::Installing))).await;

    let mut admin = Browser::signed_in(&app, "ada", Role::Admin).await;
    let page = admin.get("/ui/rollouts/r-conf/rollback").await;
    assert!(
        page.body.contains("2 devices installed this release or are installing it. Going back: 2 to 1.0.0."),
        "{}",
        page.body
    );
    // Pausing a paused rollout: said, and the button is off.
    api_act(&app, "r-conf", "pause").await;
    let page = admin.get("/ui/rollouts/r-conf/pause").await;
    assert!(page.body.contains("This rollout is paused: it cannot pause now."), "{}", page.body);
    assert!(page.body.contains("disabled aria-describedby=\"not-now\">Confirm pause</button>"), "{}", page.body);
    let page = admin.get("/ui/rollouts/r-conf/resume").await;
    assert!(!page.body.contains(" disabled "), "{}", page.body);
    api_act(&app, "r-conf", "resume").await;
    // Advancing the last stage completes the rollout, and the notice says so.
    let done = admin.submit("/ui/rollouts/r-conf/advance", "/ui/rollouts/r-conf/advance", &[("force", "on")]).await;
    assert_eq!(done.location.as_deref(), Some("/ui/rollouts/r-conf?notice=completed_forced"), "{}", done.body);
    let page = admin.get("/ui/rollouts/r-conf?notice=completed_forced").await;
    assert!(page.body.contains("Rollout completed although its last stage"), "{}", page.body);
}
