//! The retention policy: a product's role lists its most recently listed releases and whatever a
//! device, a rollout or a rollback still needs; the rest are delisted (stored, not signed), which
//! is not a yank. Checked with real TUF clients at each step, on a server-signed product and on
//! a manufacturer-signed one across a yank, a root rotation and a product key rotation.

use std::collections::BTreeSet;

use jiff::Timestamp;
use migration::MigratorTrait;
use patchgate::tuf::keys::Signer;
use patchgate::tuf::metadata::product_targets;
use serde_json::{Value, json};

use crate::common::{firmware, spawn_app};
use crate::split_trust::{PRODUCT, Production, run_ok};

/// The versions the product's served role lists.
async fn role_versions(app: &crate::common::TestApp, product: &str) -> BTreeSet<String> {
    let role: Value = app.get_json(&format!("/api/v1/products/{product}/role")).await;
    role["signed"]["targets"]
        .as_object()
        .unwrap()
        .keys()
        .map(|name| name.split('/').nth(1).unwrap().to_owned())
        .collect()
}

fn set(versions: &[&str]) -> BTreeSet<String> {
    versions.iter().map(|v| (*v).to_owned()).collect()
}

async fn release(app: &crate::common::TestApp, product: &str, version: &str) -> Value {
    app.get_json(&format!("/api/v1/products/{product}/releases/{version}")).await
}

async fn patch_retention(app: &crate::common::TestApp, product: &str, body: Value) -> (u16, Value) {
    let res = app
        .client
        .patch(app.url(&format!("/api/v1/products/{product}")))
        .bearer_auth(&app.admin)
        .json(&body)
        .send()
        .await
        .unwrap();
    (res.status().as_u16(), res.json().await.unwrap())
}

async fn new_rollout(app: &crate::common::TestApp, product: &str, version: &str) -> (u16, Value) {
    let body = json!({"id": format!("r-{version}"), "product": product, "version": version,
        "stages": [{"cohort": "fleet", "percent": 100, "soak_minutes": 0}],
        "gate": {"max_failure_rate": 1.0, "min_reports": 1, "stall_minutes": 1440}});
    let res = app.client.post(app.url("/api/v1/rollouts")).bearer_auth(&app.admin).json(&body).send().await.unwrap();
    (res.status().as_u16(), res.json().await.unwrap())
}

#[tokio::test]
async fn a_server_signed_product_lists_what_its_retention_keeps_and_lists_a_release_again_when_republished() {
    let app = spawn_app().await;
    app.create_product("pump-s", &["hw"]).await;
    let products: Value = app.get_json("/api/v1/products").await;
    assert_eq!(products[0]["retain_newest"], 20, "the default");
    for bad in [json!({"retain_newest": 0}), json!({"retain_newest": 10_001})] {
        let (status, body) = patch_retention(&app, "pump-s", bad).await;
        assert_eq!((status, body["error"].as_str()), (400, Some("invalid_retain_newest")), "{body}");
    }
    let (status, body) = patch_retention(&app, "pump-s", json!({"retain_newest": "two"})).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = patch_retention(&app, "nope", json!({"retain_newest": 2})).await;
    assert_eq!((status, body["error"].as_str()), (404, Some("unknown_product")), "{body}");
    let (status, body) = patch_retention(&app, "pump-s", json!({"retain_newest": 2})).await;
    assert_eq!((status, body["retain_newest"].as_i64()), (200, Some(2)), "{body}");

    for (seed, version) in [(1, "1.0.0"), (2, "1.1.0"), (3, "1.2.0"), (4, "1.3.0")] {
        app.publish("pump-s", version, "fw.bin", firmware(seed, 1024)).await;
    }
    assert_eq!(role_versions(&app, "pump-s").await, set(&["1.2.0", "1.3.0"]));
    let old = release(&app, "pump-s", "1.0.0").await;
    assert_eq!((old["delisted"].as_bool(), old["yanked"].as_bool()), (Some(true), Some(false)), "{old}");
    assert!(old["delisted_at"].is_i64(), "{old}");
    let advice: Value = app.get_json("/api/v1/products/pump-s/retention").await;
    assert_eq!(advice["listed"], 2, "{advice}");
    assert_eq!(advice["delist_on_publish"], json!(["1.2.0"]), "one more publish lets the older of two go: {advice}");

    // A delisted release cannot be rolled out until it is listed again.
    app.post_json("/api/v1/cohorts", &json!({"name": "fleet", "product": "pump-s", "selector": {"tags": ["t"]}})).await;
    let (status, body) = new_rollout(&app, "pump-s", "1.0.0").await;
    assert_eq!((status, body["error"].as_str()), (409, Some("release_delisted")), "{body}");
    assert!(body["message"].as_str().unwrap().contains("publish the same file again"), "{body}");

    // The same file lists it again (200, not a new release); other content for it is refused.
    let res = app.publish_as(&app.admin, "pump-s", "1.0.0", "fw.bin", firmware(9, 1024)).await;
    assert_eq!(res.status(), 409);
    let res = app.publish_as(&app.admin, "pump-s", "1.0.0", "fw.bin", firmware(1, 1024)).await;
    assert_eq!(res.status(), 200);
    let again: Value = res.json().await.unwrap();
    assert_eq!(again["delisted"], false, "{again}");
    assert_eq!(role_versions(&app, "pump-s").await, set(&["1.0.0", "1.3.0"]), "1.2.0 is now the least recent");
    let (status, body) = new_rollout(&app, "pump-s", "1.0.0").await;
    assert_eq!(status, 201, "{body}");

    // A yank withdraws; a delisted release stays delisted, not yanked.
    app.post_json("/api/v1/products/pump-s/releases/1.3.0/yank", &json!({})).await;
    assert_eq!(role_versions(&app, "pump-s").await, set(&["1.0.0"]));
    let r12 = release(&app, "pump-s", "1.2.0").await;
    assert_eq!((r12["delisted"].as_bool(), r12["yanked"].as_bool()), (Some(true), Some(false)), "{r12}");

    // A TUF client sees exactly the listed releases.
    let store = tempfile::tempdir().unwrap();
    let repo = app.tough(&app.root_v1().await, store.path()).await.unwrap();
    let bytes = crate::common::tough_read(&repo, "pump-s/1.0.0/fw.bin").await.unwrap();
    assert_eq!(bytes, firmware(1, 1024));
    assert!(crate::common::tough_read(&repo, "pump-s/1.2.0/fw.bin").await.is_err());

    let audit: Value = app.get_json("/api/v1/audit?action=release.relist").await;
    assert!(audit.to_string().contains("pump-s/1.0.0/fw.bin"), "{audit}");
    let audit: Value = app.get_json("/api/v1/audit?action=product.retention").await;
    assert!(audit.to_string().contains("retain_newest"), "{audit}");
}

/// Publishes `image` as `version` with a role signed here by `key`: the current role's targets
/// minus `leave_out`, plus the new one; `delist` goes in the form as is.
async fn publish_hand_signed(
    p: &Production,
    key: &Signer,
    version: &str,
    image: &[u8],
    leave_out: &[&str],
    delist: &str,
) -> (u16, Value) {
    let current: Value = p.app.get_json(&format!("/api/v1/products/{PRODUCT}/role")).await;
    let mut signed = current["signed"].clone();
    let next = signed["version"].as_u64().unwrap() + 1;
    signed["version"] = json!(next);
    for v in leave_out {
        signed["targets"].as_object_mut().unwrap().remove(&format!("{PRODUCT}/{v}/fw.bin"));
    }
    let expires: Timestamp = signed["expires"].as_str().unwrap().parse().unwrap();
    let entry = crate::attacker::entry(version, image, "0.0.0");
    let built = serde_json::to_value(product_targets(1, expires, &[entry]).unwrap()).unwrap();
    let name = format!("{PRODUCT}/{version}/fw.bin");
    signed["targets"][&name] = built["targets"][&name].clone();
    let role = patchgate::tuf::sign::sign_role(PRODUCT, next, expires, signed, &[key]).await.unwrap();
    let form = reqwest::multipart::Form::new()
        .text("version", version.to_owned())
        .text("role", String::from_utf8(role.bytes).unwrap())
        .text("delist", delist.to_owned())
        .part("file", reqwest::multipart::Part::bytes(image.to_vec()).file_name("fw.bin"));
    let res = p
        .app
        .client
        .post(p.app.url(&format!("/api/v1/products/{PRODUCT}/releases")))
        .bearer_auth(&p.app.admin)
        .multipart(form)
        .send()
        .await
        .unwrap();
    (res.status().as_u16(), res.json().await.unwrap())
}

#[tokio::test]
async fn a_manufacturer_signed_role_stays_small_across_a_yank_a_root_rotation_and_a_product_key_rotation() {
    let mut p = Production::start().await;
    p.create_product().await;
    let (status, body) = patch_retention(&p.app, PRODUCT, json!({"retain_newest": 2})).await;
    assert_eq!(status, 200, "{body}");

    // 1.0.0 goes to the device; two more releases fill the newest two.
    let v1 = p.publish("1.0.0", 1, None).await;
    p.enroll().await;
    p.roll_out("1.0.0").await;
    p.installs("1.0.0", &v1).await;
    let v2 = p.publish("1.1.0", 2, None).await;
    let v3 = p.publish("1.2.0", 3, None).await;
    assert_eq!(role_versions(&p.app, PRODUCT).await, set(&["1.0.0", "1.1.0", "1.2.0"]));

    // Past the boundary: the CI's publish leaves out 1.1.0 (nothing needs it), keeps 1.0.0 (the
    // device runs it). Both TUF clients agree.
    let v4 = p.publish("1.3.0", 4, None).await;
    assert_eq!(role_versions(&p.app, PRODUCT).await, set(&["1.0.0", "1.2.0", "1.3.0"]));
    let r11 = release(&p.app, PRODUCT, "1.1.0").await;
    assert_eq!((r11["delisted"].as_bool(), r11["yanked"].as_bool()), (Some(true), Some(false)), "{r11}");
    p.tough(&[("1.0.0", &v1), ("1.3.0", &v4)], 1).await;
    p.ngclient(&[("1.0.0", &v1), ("1.2.0", &v3), ("1.3.0", &v4)], &["pump-x1/1.1.0/fw.bin"], 1).await;

    // The device moves to 1.3.0 through the agent (tough inside); 1.0.0 stays as the rollback.
    p.roll_out("1.3.0").await;
    p.installs("1.3.0", &v4).await;
    let advice: Value = p.app.get_json(&format!("/api/v1/products/{PRODUCT}/retention")).await;
    assert!(
        advice["kept"].as_array().unwrap().contains(&json!({"version": "1.0.0", "reason": "rollback_target"})),
        "{advice}"
    );

    // The server refuses a role that delists what something needs, or that still lists it.
    let key = Signer::load(&p.key("maker")).unwrap();
    let image = firmware(5, 4096);
    for (version, why) in [("1.0.0", "a rollback could send devices back to it"), ("1.3.0", "most recently listed")] {
        let (status, body) = publish_hand_signed(&p, &key, "1.4.0", &image, &[version], version).await;
        assert_eq!((status, body["error"].as_str()), (409, Some("release_retained")), "{body}");
        assert!(body["message"].as_str().unwrap().contains(why), "{body}");
    }
    let (status, body) = publish_hand_signed(&p, &key, "1.4.0", &image, &[], "1.2.0").await;
    assert_eq!((status, body["error"].as_str()), (400, Some("delist_listed")), "{body}");
    let (status, body) = publish_hand_signed(&p, &key, "1.4.0", &image, &[], "1.1.0").await;
    assert_eq!((status, body["error"].as_str()), (400, Some("delist_not_listed")), "{body}");
    let (status, body) = publish_hand_signed(&p, &key, "1.4.0", &image, &[], "one").await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_delist")), "{body}");
    assert_eq!(role_versions(&p.app, PRODUCT).await, set(&["1.0.0", "1.2.0", "1.3.0"]), "nothing changed");

    // A yank with the key: 1.2.0 withdrawn; 1.1.0 stays delisted, not yanked.
    let key_path = p.key("maker");
    p.cli(&["release", "yank", "--product", PRODUCT, "--version", "1.2.0", "--key", key_path.to_str().unwrap()]).await;
    assert_eq!(release(&p.app, PRODUCT, "1.2.0").await["yanked"], true);
    assert_eq!(release(&p.app, PRODUCT, "1.1.0").await["yanked"], false);

    // Rotate the root (holder 3 leaves, holder 4 joins), then publish past the boundary again.
    let h4 = p.holders.join("h4");
    std::fs::create_dir_all(&h4).unwrap();
    run_ok(&["keys", "new", "--out", h4.join("root.pem").to_str().unwrap()]).await;
    let h3_keyid = crate::ceremony::keyid(&p.key("h3")).await;
    let h4_key = p.key("h4");
    let flags = ["--add-root-key", h4_key.to_str().unwrap(), "--remove-root-key", &h3_keyid];
    let landed = p.root_ceremony("image", &flags, &["h1", "h2", "h4"]).await;
    assert!(!landed.contains("FAILED"), "{landed}");
    let v5 = p.publish("1.4.0", 5, None).await;
    let v6 = p.publish("1.5.0", 6, None).await;
    assert_eq!(role_versions(&p.app, PRODUCT).await, set(&["1.0.0", "1.3.0", "1.4.0", "1.5.0"]));
    p.ngclient(&[("1.0.0", &v1), ("1.4.0", &v5), ("1.5.0", &v6)], &["pump-x1/1.1.0/fw.bin"], 2).await;

    // Rotate the product key, publish with the new key, and list 1.1.0 again with it.
    p.rotate_product_key().await;
    let v7 = p.publish("1.6.0", 7, None).await;
    assert_eq!(role_versions(&p.app, PRODUCT).await, set(&["1.0.0", "1.3.0", "1.5.0", "1.6.0"]));
    let again = p.publish("1.1.0", 2, None).await;
    assert_eq!(again, v2);
    assert_eq!(release(&p.app, PRODUCT, "1.1.0").await["delisted"], false);
    assert_eq!(role_versions(&p.app, PRODUCT).await, set(&["1.0.0", "1.1.0", "1.3.0", "1.6.0"]));
    p.tough(&[("1.1.0", &v2), ("1.6.0", &v7)], 2).await;
    p.ngclient(&[("1.0.0", &v1), ("1.1.0", &v2), ("1.6.0", &v7)], &["pump-x1/1.5.0/fw.bin"], 2).await;
    p.roll_out("1.6.0").await;
    p.installs("1.6.0", &v7).await;
}

#[tokio::test]
async fn a_repository_made_before_retention_keeps_serving_its_devices_after_the_migration() {
    let app = spawn_app().await;
    app.create_product("pump-m", &["hw"]).await;
    for (seed, version) in [(1, "1.0.0"), (2, "1.1.0")] {
        app.publish("pump-m", version, "fw.bin", firmware(seed, 1024)).await;
    }
    let root_v1 = app.root_v1().await;
    // Back to the schema before retention (its columns go, the rows stay), then forward again,
    // as an upgrade from that release does.
    let db = &app.services.db;
    let migrations = migration::Migrator::migrations();
    let since_retention = migrations.iter().rev().position(|m| m.name().ends_with("_retention")).unwrap() + 1;
    migration::Migrator::down(db, Some(u32::try_from(since_retention).unwrap())).await.unwrap();
    migration::Migrator::up(db, None).await.unwrap();
    let products: Value = app.get_json("/api/v1/products").await;
    assert_eq!(products[0]["retain_newest"], 20, "{products}");
    assert_eq!(release(&app, "pump-m", "1.0.0").await["delisted"], false);
    assert_eq!(role_versions(&app, "pump-m").await, set(&["1.0.0", "1.1.0"]));
    app.publish("pump-m", "1.2.0", "fw.bin", firmware(3, 1024)).await;
    assert_eq!(role_versions(&app, "pump-m").await, set(&["1.0.0", "1.1.0", "1.2.0"]));
    let store = tempfile::tempdir().unwrap();
    let repo = app.tough(&root_v1, store.path()).await.unwrap();
    for (seed, version) in [(1, "1.0.0"), (3, "1.2.0")] {
        let bytes = crate::common::tough_read(&repo, &format!("pump-m/{version}/fw.bin")).await.unwrap();
        assert_eq!(bytes, firmware(seed, 1024));
    }
}
