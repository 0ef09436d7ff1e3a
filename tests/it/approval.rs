//! Two-person release approval and yanking on a (development, server-signed) server.

use patchgate::services::auth::Role;
use serde_json::{Value, json};

use crate::common::{firmware, spawn_app};
use crate::refusals_common::publish;

async fn post(app: &crate::common::TestApp, token: &str, path: &str, body: Value) -> (u16, Value) {
    let res = app.client.post(app.url(path)).bearer_auth(token).json(&body).send().await.unwrap();
    (res.status().as_u16(), res.json().await.unwrap_or_default())
}

fn rollout(id: &str, version: &str) -> Value {
    json!({"id": id, "product": "pump-x1", "version": version,
        "stages": [{"cohort": "all", "percent": 100, "soak_minutes": 0}],
        "gate": {"max_failure_rate": 0.1, "min_reports": 1, "stall_minutes": 60}})
}

#[tokio::test]
async fn a_release_needs_a_second_person_before_a_rollout_and_a_yanked_one_never_enters_one() {
    let app = spawn_app().await;
    let (status, product) = post(
        &app,
        &app.admin,
        "/api/v1/products",
        json!({"name": "pump-x1", "hardware_ids": ["hw"], "two_person_approval": true}),
    )
    .await;
    assert_eq!(status, 201, "{product}");
    assert_eq!(product["two_person_approval"], true);
    assert_eq!(product["signing_mode"], "server");
    assert!(
        product["signing_note"].as_str().unwrap().contains("weaker")
            || product["signing_note"].as_str().unwrap().contains("whoever takes the server")
    );
    post(
        &app,
        &app.admin,
        "/api/v1/cohorts",
        json!({"name": "all", "product": "pump-x1", "selector": {"tags": ["a"]}}),
    )
    .await;
    publish(&app, "pump-x1", "1.0.0", firmware(1, 1024), None).await;
    publish(&app, "pump-x1", "1.1.0", firmware(2, 1024), Some("1.0.0")).await;

    let (status, err) = post(&app, &app.admin, "/api/v1/rollouts", rollout("r-1", "1.0.0")).await;
    assert_eq!((status, err["error"].as_str()), (409, Some("release_not_approved")), "{err}");
    // The publisher (the admin token) cannot approve its own release.
    let (status, err) = post(&app, &app.admin, "/api/v1/products/pump-x1/releases/1.0.0/approve", json!({})).await;
    assert_eq!((status, err["error"].as_str()), (409, Some("same_person")), "{err}");
    // A viewer may not approve at all.
    let viewer = app.token(Role::Viewer, None).await;
    let (status, _) = post(&app, &viewer, "/api/v1/products/pump-x1/releases/1.0.0/approve", json!({})).await;
    assert_eq!(status, 403);
    let manager = app.token(Role::ReleaseManager, None).await;
    let (status, approved) = post(&app, &manager, "/api/v1/products/pump-x1/releases/1.0.0/approve", json!({})).await;
    assert_eq!(status, 200, "{approved}");
    assert!(approved["approved_by"].as_str().unwrap().starts_with("token:"), "{approved}");
    let (status, created) = post(&app, &app.admin, "/api/v1/rollouts", rollout("r-1", "1.0.0")).await;
    assert_eq!(status, 201, "{created}");
    let audit: Value = app.get_json("/api/v1/audit?action=release.").await;
    let text = audit.to_string();
    assert!(text.contains("release.approve") && text.contains("release.publish"), "{text}");

    // Yank 1.1.0 (server-signed: the server re-signs the role without it). A viewer may not; a
    // release manager may, as a publisher may.
    let (status, err) = post(&app, &viewer, "/api/v1/products/pump-x1/releases/1.1.0/yank", json!({})).await;
    assert_eq!((status, err["error"].as_str()), (403, Some("forbidden")), "{err}");
    let (status, yanked) = post(&app, &manager, "/api/v1/products/pump-x1/releases/1.1.0/yank", json!({})).await;
    assert_eq!(status, 200, "{yanked}");
    assert_eq!(yanked["yanked"], true);
    let audit: Value = app.get_json("/api/v1/audit?action=release.yank").await;
    assert!(audit[0]["actor"].as_str().unwrap().starts_with("token:"), "{audit}");
    let role: Value = app.get_json("/api/v1/products/pump-x1/role").await;
    let listed: Vec<&String> = role["signed"]["targets"].as_object().unwrap().keys().collect();
    assert_eq!(listed, ["pump-x1/1.0.0/fw.bin"], "{role}");
    let product: Value = app.get_json("/api/v1/products").await;
    assert_eq!(product[0]["security_floor"], "0.0.0", "the yanked release's floor no longer counts");
    let (status, _) = post(&app, &manager, "/api/v1/products/pump-x1/releases/1.1.0/approve", json!({})).await;
    assert_eq!(status, 409);
    let (status, err) = post(&app, &app.admin, "/api/v1/rollouts", rollout("r-2", "1.1.0")).await;
    assert_eq!((status, err["error"].as_str()), (409, Some("release_yanked")), "{err}");
    // A manufacturer-signed role cannot be posted for a server-signed product.
    let (status, err) = post(&app, &app.admin, "/api/v1/products/pump-x1/role", role).await;
    assert_eq!((status, err["error"].as_str()), (409, Some("server_signed")), "{err}");
}
