//! Operations routes and the OpenAPI document.

use crate::common::{firmware, spawn_app};

#[tokio::test]
async fn health_readiness_and_metrics() {
    let app = spawn_app().await;
    assert_eq!(app.client.get(app.url("/healthz")).send().await.unwrap().status(), 200);
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    app.create_product("pump-x1", &["hw"]).await;
    app.publish("pump-x1", "1.0.0", "fw.bin", firmware(1, 100)).await;
    let metrics = app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("patchgate_http_requests_total"), "{metrics}");
    assert!(metrics.contains(r#"route="/api/v1/products/{product}/releases""#), "{metrics}");
    assert!(metrics.contains(r#"patchgate_signatures_total{role="timestamp"}"#), "{metrics}");
    assert!(metrics.contains("patchgate_publish_commit_seconds"), "{metrics}");
    assert!(metrics.contains("patchgate_publish_duration_seconds"), "{metrics}");
    // The audit log says who published what.
    let audit: Vec<serde_json::Value> = app.get_json("/api/v1/audit?limit=5").await;
    assert_eq!(audit[0]["action"], "release.publish");
    assert_eq!(audit[0]["actor"], "token:test-admin");
    assert_eq!(audit[0]["object"], "release:pump-x1/1.0.0/fw.bin");
    let bad = app.client.get(app.url("/api/v1/audit?limit=0")).bearer_auth(&app.admin).send().await.unwrap();
    assert_eq!(bad.status(), 400);
}

#[tokio::test]
async fn the_openapi_document_covers_every_route_and_swagger_ui_is_served() {
    let app = spawn_app().await;
    let doc: serde_json::Value =
        app.client.get(app.url("/api/openapi.json")).send().await.unwrap().json().await.unwrap();
    let paths = doc["paths"].as_object().unwrap();
    for (path, method) in [
        ("/api/v1/products", "post"),
        ("/api/v1/products", "get"),
        ("/api/v1/products/{product}/releases", "post"),
        ("/api/v1/products/{product}/releases", "get"),
        ("/api/v1/products/{product}/releases/{version}", "get"),
        ("/api/v1/products/{product}/releases/{version}/deltas", "post"),
        ("/api/v1/products/{product}/releases/{version}/deltas", "get"),
        ("/api/v1/audit", "get"),
        ("/repo/metadata/{file}", "get"),
        ("/repo/targets/{path}", "get"),
        ("/director/metadata/{file}", "get"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
    ] {
        assert!(paths.get(path).and_then(|p| p.get(method)).is_some(), "{method} {path} missing");
    }
    let ui = app.client.get(app.url("/api/docs/")).send().await.unwrap();
    assert_eq!(ui.status(), 200);
    assert!(ui.text().await.unwrap().contains("swagger"));
}
