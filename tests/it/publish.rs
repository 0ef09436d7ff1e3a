//! Publishing through the API: what CI sees on success, retries and every kind of bad input.

use patchgate::services::auth::Role;

use crate::common::{firmware, sha256_hex, spawn_app, spawn_app_with, tough_read};

/// POSTs a hand-made publish form to pump-x1 with the admin token.
async fn post_form(app: &crate::common::TestApp, form: reqwest::multipart::Form) -> reqwest::Response {
    app.client
        .post(app.url("/api/v1/products/pump-x1/releases"))
        .bearer_auth(&app.admin)
        .multipart(form)
        .send()
        .await
        .unwrap()
}

async fn error_of(res: reqwest::Response) -> (u16, String) {
    let status = res.status().as_u16();
    let body: serde_json::Value = res.json().await.unwrap();
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    (status, body["error"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn a_retry_with_the_same_content_is_200_and_other_content_is_409() {
    let app = spawn_app().await;
    app.create_product("pump-x1", &["hw"]).await;
    let first = app.publish("pump-x1", "1.0.0", "fw.bin", firmware(1, 5000)).await;
    let again = app.publish_as(&app.admin, "pump-x1", "1.0.0", "fw.bin", firmware(1, 5000)).await;
    assert_eq!(again.status(), 200);
    let again: serde_json::Value = again.json().await.unwrap();
    assert_eq!(again["target"], first["target"]);
    let other = app.publish_as(&app.admin, "pump-x1", "1.0.0", "fw.bin", firmware(2, 5000)).await;
    assert_eq!(error_of(other).await, (409, "version_exists".to_owned()));
    let list: Vec<serde_json::Value> = app.get_json("/api/v1/products/pump-x1/releases").await;
    assert_eq!(list.len(), 1);
}

#[tokio::test]
async fn bad_input_gets_a_json_error_and_changes_nothing() {
    let app = spawn_app().await;
    app.create_product("pump-x1", &["hw"]).await;
    let ts_before = app.metadata("timestamp.json").await.bytes().await.unwrap();
    let cases = [
        ("pump-x1", "1.0", "fw.bin", firmware(1, 10), 400, "invalid_version"),
        ("pump-x1", "1.0.0", "fw bin", firmware(1, 10), 400, "invalid_file_name"),
        ("pump-x1", "1.0.0", "fw.bin", Vec::new(), 400, "empty_file"),
        ("nope", "1.0.0", "fw.bin", firmware(1, 10), 404, "unknown_product"),
        ("Bad_Name", "1.0.0", "fw.bin", firmware(1, 10), 400, "invalid_product_name"),
    ];
    for (product, version, file, content, status, code) in cases {
        let res = app.publish_as(&app.admin, product, version, file, content).await;
        assert_eq!(error_of(res).await, (status, code.to_owned()), "{product} {version} {file}");
    }
    // Missing fields.
    let no_file = reqwest::multipart::Form::new().text("version", "1.0.0");
    let res = post_form(&app, no_file).await;
    assert_eq!(error_of(res).await, (400, "missing_file".to_owned()));
    let no_version =
        reqwest::multipart::Form::new().part("file", reqwest::multipart::Part::bytes(vec![1, 2]).file_name("fw.bin"));
    let res = post_form(&app, no_version).await;
    assert_eq!(error_of(res).await, (400, "missing_version".to_owned()));
    // A repeated field.
    let twice = reqwest::multipart::Form::new()
        .text("version", "1.1.0")
        .text("version", "1.2.0")
        .part("file", reqwest::multipart::Part::bytes(vec![1, 2]).file_name("fw.bin"));
    let res = post_form(&app, twice).await;
    assert_eq!(error_of(res).await, (400, "duplicate_field".to_owned()));
    // Build metadata would make two releases of one version.
    let res = app.publish_as(&app.admin, "pump-x1", "1.3.0+build.1", "fw.bin", firmware(1, 10)).await;
    assert_eq!(error_of(res).await, (400, "invalid_version".to_owned()));
    // Not multipart at all.
    let res = app
        .client
        .post(app.url("/api/v1/products/pump-x1/releases"))
        .bearer_auth(&app.admin)
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(res).await, (400, "invalid_multipart".to_owned()));
    // Nothing was signed.
    assert_eq!(app.metadata("timestamp.json").await.bytes().await.unwrap(), ts_before);
}

#[tokio::test]
async fn fields_may_come_in_any_order_with_notes_and_a_rollback_floor() {
    let app = spawn_app().await;
    app.create_product("pump-x1", &["hw"]).await;
    let form = reqwest::multipart::Form::new()
        .part("file", reqwest::multipart::Part::bytes(firmware(1, 100)).file_name("fw.bin"))
        .text("notes", "fixes CVE-2026-0001")
        .text("rollback_floor", "1.1.0")
        .text("version", "1.2.0");
    let res = post_form(&app, form).await;
    assert_eq!(res.status(), 201);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["notes"], "fixes CVE-2026-0001");
    assert_eq!(body["custom"]["rollback_floor"], "1.1.0");
    assert!(body["custom"]["released_at"].as_str().unwrap().ends_with('Z'));
    // A floor above the version is refused.
    let form = reqwest::multipart::Form::new()
        .text("version", "1.3.0")
        .text("rollback_floor", "2.0.0")
        .part("file", reqwest::multipart::Part::bytes(firmware(2, 100)).file_name("fw.bin"));
    let res = post_form(&app, form).await;
    assert_eq!(error_of(res).await, (400, "invalid_rollback_floor".to_owned()));
}

#[tokio::test]
async fn an_upload_over_the_cap_is_413_and_stores_nothing() {
    let app = spawn_app_with(|c| c.max_upload_bytes = 64 * 1024).await;
    app.create_product("pump-x1", &["hw"]).await;
    let res = app.publish_as(&app.admin, "pump-x1", "1.0.0", "fw.bin", firmware(1, 64 * 1024 + 1)).await;
    assert_eq!(error_of(res).await, (413, "file_too_large".to_owned()));
    let blobs = app.services.config.data_dir.join("objects/blobs");
    assert!(!blobs.exists() || std::fs::read_dir(blobs.join("sha256")).map(|d| d.count()).unwrap_or(0) == 0);
    let staging = app.services.config.data_dir.join("objects/staging");
    assert!(!staging.exists() || std::fs::read_dir(&staging).unwrap().count() == 0, "staging cleaned up");
    app.publish("pump-x1", "1.0.0", "fw.bin", firmware(1, 64 * 1024)).await;
}

#[tokio::test]
async fn a_32_mib_file_streams_through_publish_and_download() {
    let app = spawn_app().await;
    app.create_product("pump-x1", &["hw"]).await;
    let content = firmware(9, 32 * 1024 * 1024);
    let body = app.publish("pump-x1", "3.0.0", "big.img", content.clone()).await;
    assert_eq!(body["target"]["length"], 32 * 1024 * 1024);
    assert_eq!(body["target"]["hashes"]["sha256"], sha256_hex(&content));
    let store = tempfile::tempdir().unwrap();
    let repo = app.tough(&app.root_v1().await, store.path()).await.unwrap();
    assert!(tough_read(&repo, "pump-x1/3.0.0/big.img").await.unwrap() == content);
}

#[tokio::test]
async fn eight_concurrent_publishes_give_eight_releases_and_distinct_versions() {
    let app = spawn_app().await;
    app.create_product("pump-x1", &["hw"]).await;
    let tasks: Vec<_> = (0..8u8)
        .map(|i| {
            let client = app.client.clone();
            let url = app.url("/api/v1/products/pump-x1/releases");
            let token = app.admin.clone();
            tokio::spawn(async move {
                let form = reqwest::multipart::Form::new().text("version", format!("1.{i}.0")).part(
                    "file",
                    reqwest::multipart::Part::bytes(firmware(i, 100_000 + usize::from(i))).file_name("fw.bin"),
                );
                client.post(url).bearer_auth(token).multipart(form).send().await.unwrap().status().as_u16()
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), 201);
    }
    let list: Vec<serde_json::Value> = app.get_json("/api/v1/products/pump-x1/releases").await;
    assert_eq!(list.len(), 8);
    // Role versions 1 (creation) then 2..=9, one per publish; each version exists exactly once.
    for version in 1..=9 {
        let res = app.metadata(&format!("{version}.pump-x1.json")).await;
        assert_eq!(res.status(), 200, "pump-x1 v{version}");
        let role: serde_json::Value = res.json().await.unwrap();
        assert_eq!(role["signed"]["version"], version);
        assert_eq!(role["signed"]["targets"].as_object().unwrap().len(), version - 1);
    }
    assert_eq!(app.metadata("10.pump-x1.json").await.status(), 404);
    let ts: serde_json::Value = app.metadata("timestamp.json").await.json().await.unwrap();
    // init (1) + product creation (2) + 8 publishes.
    assert_eq!(ts["signed"]["version"], 10);
    let store = tempfile::tempdir().unwrap();
    let repo = app.tough(&app.root_v1().await, store.path()).await.unwrap();
    for i in 0..8u8 {
        assert!(
            tough_read(&repo, &format!("pump-x1/1.{i}.0/fw.bin")).await.unwrap()
                == firmware(i, 100_000 + usize::from(i))
        );
    }
}

#[tokio::test]
async fn tokens_and_roles_are_enforced() {
    let app = spawn_app().await;
    app.create_product("pump-x1", &["hw"]).await;
    app.create_product("pump-x2", &["hw"]).await;
    // No token, a garbage token.
    let res = app.client.get(app.url("/api/v1/products")).send().await.unwrap();
    assert_eq!(error_of(res).await, (401, "unauthenticated".to_owned()));
    let res = app.client.get(app.url("/api/v1/products")).bearer_auth("pgt_nonsense").send().await.unwrap();
    assert_eq!(error_of(res).await, (401, "unauthenticated".to_owned()));
    // A viewer reads but may not publish or create products.
    let viewer = app.token(Role::Viewer, None).await;
    assert_eq!(app.client.get(app.url("/api/v1/products")).bearer_auth(&viewer).send().await.unwrap().status(), 200);
    let res = app.publish_as(&viewer, "pump-x1", "1.0.0", "fw.bin", firmware(1, 10)).await;
    assert_eq!(error_of(res).await, (403, "forbidden".to_owned()));
    let res = app
        .client
        .post(app.url("/api/v1/products"))
        .bearer_auth(&viewer)
        .json(&serde_json::json!({"name": "x", "hardware_ids": ["h"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(res).await, (403, "forbidden".to_owned()));
    // A publisher scoped to pump-x1 publishes there only.
    let publisher = app.token(Role::Publisher, Some("pump-x1")).await;
    assert_eq!(app.publish_as(&publisher, "pump-x1", "1.0.0", "fw.bin", firmware(1, 10)).await.status(), 201);
    let res = app.publish_as(&publisher, "pump-x2", "1.0.0", "fw.bin", firmware(1, 10)).await;
    assert_eq!(error_of(res).await, (403, "forbidden".to_owned()));
    // A release manager does not publish.
    let manager = app.token(Role::ReleaseManager, None).await;
    let res = app.publish_as(&manager, "pump-x1", "1.1.0", "fw.bin", firmware(1, 10)).await;
    assert_eq!(error_of(res).await, (403, "forbidden".to_owned()));
    // Only publisher tokens are scoped by product, and only to products that exist.
    assert!(app.try_token("x", Role::Admin, Some("pump-x1")).await.is_err());
    assert!(app.try_token("y", Role::Publisher, Some("nope")).await.is_err());
    // A revoked token stops working at once.
    let name = "to-revoke";
    let token = app.try_token(name, Role::Viewer, None).await.unwrap();
    assert_eq!(app.client.get(app.url("/api/v1/products")).bearer_auth(&token).send().await.unwrap().status(), 200);
    patchgate::services::auth::revoke_token(&app.services, &patchgate::services::auth::Caller::operator(), name)
        .await
        .unwrap();
    let res = app.client.get(app.url("/api/v1/products")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(error_of(res).await, (401, "unauthenticated".to_owned()));
}

#[tokio::test]
async fn products_are_validated_and_listed_with_their_signing_mode() {
    let app = spawn_app().await;
    let post = |body: serde_json::Value| {
        app.client.post(app.url("/api/v1/products")).bearer_auth(&app.admin).json(&body).send()
    };
    for (body, code) in [
        (serde_json::json!({"name": "Pump", "hardware_ids": ["h"]}), "invalid_product_name"),
        (serde_json::json!({"name": "targets", "hardware_ids": ["h"]}), "invalid_product_name"),
        (serde_json::json!({"name": "pump", "hardware_ids": []}), "missing_hardware_ids"),
        (serde_json::json!({"name": "pump", "hardware_ids": ["a b"]}), "invalid_hardware_id"),
        (serde_json::json!({"name": "pump"}), "invalid_json"),
        (serde_json::json!({"name": "pump", "hardware_ids": ["h"], "extra": 1}), "invalid_json"),
    ] {
        assert_eq!(error_of(post(body.clone()).await.unwrap()).await, (400, code.to_owned()), "{body}");
    }
    app.create_product("pump", &["h"]).await;
    let dup = post(serde_json::json!({"name": "pump", "hardware_ids": ["h"]})).await.unwrap();
    assert_eq!(error_of(dup).await, (409, "product_exists".to_owned()));
    let list: Vec<serde_json::Value> = app.get_json("/api/v1/products").await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["signing_mode"], "server");
    assert!(
        list[0]["signing_note"].as_str().unwrap().contains("weaker")
            || list[0]["signing_note"].as_str().unwrap().contains("server holds")
    );
    // The audit log has the creation.
    let audit = patchgate::db::audit::audit_list_recent(&app.services.db, 10).await.unwrap();
    assert!(audit.iter().any(|a| a.action == "product.create" && a.object == "product:pump"));
}
