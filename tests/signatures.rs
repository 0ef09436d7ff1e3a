//! "A poll with no change signs nothing", asserted on `patchgate_signatures_total`. A test
//! binary of its own: the metrics recorder is process-wide, and the tests in `tests/it` sign
//! in parallel.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests fail loudly by design")]

#[path = "it/common.rs"]
mod common;
#[path = "it/fleet.rs"]
#[allow(dead_code)]
mod fleet;

use serde_json::json;

async fn signatures(app: &common::TestApp) -> std::collections::BTreeMap<String, u64> {
    let text = app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    text.lines()
        .filter(|l| l.starts_with("patchgate_signatures_total{"))
        .filter_map(|l| {
            let role = l.split("role=\"").nth(1)?.split('"').next()?.to_owned();
            let value = l.rsplit(' ').next()?.parse::<f64>().ok()?;
            Some((role, value as u64))
        })
        .collect()
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
