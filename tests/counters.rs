//! Promises asserted on process-wide counters: "a poll with no change signs nothing"
//! (`patchgate_signatures_total`) and "a burst of wrong passwords gets only the allowed number
//! of password checks" (`patchgate_password_checks_total`). A test binary of its own: the
//! metrics recorder is process-wide, and the tests in `tests/it` sign and sign in in parallel.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests fail loudly by design")]

#[path = "it/common.rs"]
mod common;
#[path = "it/fleet.rs"]
#[allow(dead_code)]
mod fleet;

use serde_json::json;

/// The values of counter `name` by the value of its label `label`.
async fn counters(app: &common::TestApp, name: &str, label: &str) -> std::collections::BTreeMap<String, u64> {
    let text = app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let prefix = format!("{name}{{");
    text.lines()
        .filter(|l| l.starts_with(&prefix) || l.starts_with(&format!("{name} ")))
        .filter_map(|l| {
            let key = l.split(&format!("{label}=\"")).nth(1).and_then(|r| r.split('"').next()).unwrap_or_default();
            let value = l.rsplit(' ').next()?.parse::<f64>().ok()?;
            Some((key.to_owned(), value as u64))
        })
        .collect()
}

async fn signatures(app: &common::TestApp) -> std::collections::BTreeMap<String, u64> {
    counters(app, "patchgate_signatures_total", "role").await
}

#[tokio::test]
async fn polls_without_change_sign_nothing_and_a_change_signs_once() {
    let app = common::spawn_app().await;
    app.create_product("pump-x1", &["hw"]).await;
    app.publish("pump-x1", "1.0.0", "fw.bin", common::firmware(9, 1024)).await;
    let token = fleet::enrollment_token(&app, "pump-x1", &["lab"], 5).await;
    let mut device = fleet::Device::enroll(&app, "pump-m", "pump-x1", "hw", &token).await;
    let post = |path: &str, body: serde_json::Value| {
        let req = app.client.post(app.url(path)).bearer_auth(&app.admin).json(&body);
        async move { assert!(req.send().await.unwrap().status().is_success()) }
    };
    post("/api/v1/cohorts", json!({"name": "lab", "product": "pump-x1", "selector": {"tags": ["lab"]}})).await;
    post("/api/v1/rollouts", json!({"id": "r-m", "product": "pump-x1", "version": "1.0.0",
        "stages": [{"cohort": "lab", "percent": 100}], "gate": {"max_failure_rate": 0.1, "min_reports": 1, "stall_minutes": 60}}))
    .await;
    post("/api/v1/rollouts/r-m/start", json!({})).await;
    assert_eq!(device.report(&app, None).await["changed"], true);

    let before = signatures(&app).await;
    assert!(before.get("director_targets").copied().unwrap_or(0) >= 2, "{before:?}");
    for _ in 0..20 {
        assert_eq!(device.report(&app, None).await["changed"], false);
    }
    assert_eq!(signatures(&app).await, before, "20 unchanged polls signed nothing");

    // A pause withdraws the (not started) assignment: one new targets, snapshot and timestamp.
    post("/api/v1/rollouts/r-m/pause", json!({})).await;
    assert_eq!(device.report(&app, None).await["changed"], true);
    let after = signatures(&app).await;
    for role in ["director_targets", "director_snapshot", "director_timestamp"] {
        assert_eq!(after[role], before[role] + 1, "{role}");
    }
}

#[tokio::test]
async fn a_burst_of_wrong_passwords_gets_only_the_allowed_password_checks() {
    use patchgate::services::auth::{Caller, Role};
    let app = common::spawn_app().await;
    let password = "correct horse battery staple";
    patchgate::services::users::create_user(&app.services, &Caller::operator(), "bob", Role::Admin, password)
        .await
        .unwrap();
    let checks = || async { counters(&app, "patchgate_password_checks_total", "").await.get("").copied().unwrap_or(0) };
    let before = checks().await;
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let attempts = (0..100).map(|i| {
        let req = client.post(app.url("/ui/login")).form(&[
            ("name", "bob"),
            ("password", &format!("wrong password {i:03}")),
            ("next", "/ui/"),
        ]);
        async move { req.send().await.unwrap().status().as_u16() }
    });
    let statuses = futures_util::future::join_all(attempts).await;
    let checked = checks().await - before;
    // Five free failures in the window, then a wait: at most five checks, whatever the width.
    assert!(checked <= 5, "{checked} password checks for 100 parallel attempts");
    assert_eq!(statuses.iter().filter(|s| **s == 401).count() as u64, checked, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 429).count() as u64, 100 - checked, "{statuses:?}");
    // The real user waits too, but only for the bounded delay after the last counted failure.
    let right = [("name", "bob"), ("password", password), ("next", "/ui/")];
    assert_eq!(client.post(app.url("/ui/login")).form(&right).send().await.unwrap().status(), 429);
    app.clock.set_offset(app.clock.offset() + jiff::SignedDuration::from_secs(31));
    assert_eq!(client.post(app.url("/ui/login")).form(&right).send().await.unwrap().status(), 303);
}
