//! Devices and their director: metadata verified by tough from the director root, bound to the
//! device and identical to the image repository's target; every refused report changes nothing.

use patchgate::db::devices::{device_find, device_reports_recent};
use serde_json::{Value, json};

use crate::common::{TestApp, firmware, spawn_app};
use crate::fleet::{Device, Image, enrollment_token, tough_director, try_enroll};

const PRODUCT: &str = "pump-x1";
const HW: &str = "pump-x1-revA";

/// Two enrolled devices, release 1.0.0 published, and a running 100% rollout to both.
async fn setup() -> (TestApp, Image, Device, Device) {
    let app = spawn_app().await;
    app.create_product(PRODUCT, &[HW]).await;
    let image = Image::from_publish(&app.publish(PRODUCT, "1.0.0", "fw.bin", firmware(3, 2048)).await);
    let token = enrollment_token(&app, PRODUCT, &["site:lab"], 10).await;
    let a = Device::enroll(&app, "pump-a", PRODUCT, HW, &token).await;
    let b = Device::enroll(&app, "pump-b", PRODUCT, HW, &token).await;
    let post = |path: &str, body: Value| {
        let req = app.client.post(app.url(path)).bearer_auth(&app.admin).json(&body);
        async move { req.send().await.unwrap() }
    };
    let res =
        post("/api/v1/cohorts", json!({"name": "lab", "product": PRODUCT, "devices": ["pump-a", "pump-b"]})).await;
    assert_eq!(res.status(), 201);
    let gate = json!({"max_failure_rate": 0.1, "min_reports": 1, "stall_minutes": 60});
    let res = post(
        "/api/v1/rollouts",
        json!({"id": "r-lab", "product": PRODUCT, "version": "1.0.0",
        "stages": [{"cohort": "lab", "percent": 100}], "gate": gate}),
    )
    .await;
    assert_eq!(res.status(), 201);
    assert_eq!(post("/api/v1/rollouts/r-lab/start", json!({})).await.status(), 200);
    (app, image, a, b)
}

#[tokio::test]
async fn director_metadata_verifies_with_tough_binds_the_device_and_matches_the_image_target() {
    let (app, image, mut a, b) = setup().await;
    let answer = a.report(&app, None).await;
    assert_eq!(answer["changed"], true);
    let datastore = tempfile::tempdir().unwrap();
    let director = tough_director(&app, &a, datastore.path()).await.unwrap();
    let targets = &director.targets().signed.targets;
    assert_eq!(targets.len(), 1, "exactly one target");
    let (name, target) = targets.iter().next().unwrap();
    assert_eq!(name.raw(), image.name);
    assert!(director.targets().signed.delegations.as_ref().is_none_or(|d| d.roles.is_empty()));

    // The same target, byte for byte, in the image repository.
    let image_store = tempfile::tempdir().unwrap();
    let repo = app.tough(&app.root_v1().await, image_store.path()).await.unwrap();
    let image_target = repo.all_targets().find(|(n, _)| n.raw() == image.name).map(|(_, t)| t.clone()).unwrap();
    assert_eq!(target.length, image_target.length);
    assert_eq!(target.hashes.sha256, image_target.hashes.sha256);
    assert_eq!(target.hashes._extra, image_target.hashes._extra, "sha512 too");
    let director_custom: serde_json::Map<String, Value> = target.custom.clone().into_iter().collect();
    let image_custom: serde_json::Map<String, Value> = image_target.custom.clone().into_iter().collect();
    let fields = patchgate_protocol::check_director_custom(&director_custom, &image_custom).unwrap();
    assert_eq!(fields.device_id, "pump-a");
    assert_eq!(fields.rollout_id, "r-lab");

    // Another device's token may not read it; no token is 401.
    let url = app.url(&format!("/director/pump-a/metadata/{}.targets.json", a.director_version));
    assert_eq!(app.client.get(&url).bearer_auth(&b.token).send().await.unwrap().status(), 403);
    assert_eq!(app.client.get(&url).send().await.unwrap().status(), 401);
    assert_eq!(app.client.get(&url).bearer_auth(&app.admin).send().await.unwrap().status(), 401);
    // A poll with nothing new keeps the version and signs nothing for the device.
    let rows_before = count_metadata(&app, "pump-a").await;
    let again = a.report(&app, None).await;
    assert_eq!(again["changed"], false);
    assert_eq!(again["director_targets_version"], answer["director_targets_version"]);
    assert_eq!(count_metadata(&app, "pump-a").await, rows_before);
}

async fn count_metadata(app: &TestApp, device: &str) -> u64 {
    use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
    let row = device_find(&app.services.db, device).await.unwrap().unwrap();
    patchgate::db::entities::device_metadata::Entity::find()
        .filter(patchgate::db::entities::device_metadata::Column::DeviceRowId.eq(row.id))
        .count(&app.services.db)
        .await
        .unwrap()
}

/// Everything a report can change: the device row (counter, installed, attempt, assignment,
/// director version), its report history and its assignment rows.
async fn footprint(app: &TestApp, device: &str) -> (String, usize, String) {
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    let row = device_find(&app.services.db, device).await.unwrap().unwrap();
    let reports = device_reports_recent(&app.services.db, row.id, 1000).await.unwrap().len();
    let assignments = patchgate::db::entities::assignment::Entity::find()
        .filter(patchgate::db::entities::assignment::Column::DeviceRowId.eq(row.id))
        .all(&app.services.db)
        .await
        .unwrap();
    (format!("{row:?}"), reports, format!("{assignments:?}"))
}

#[tokio::test]
async fn refused_reports_change_nothing() {
    let (app, image, mut a, b) = setup().await;
    a.report(&app, None).await;
    let before = footprint(&app, "pump-a").await;
    let attempt = Some((&image, patchgate_protocol::report::AttemptState::Failed));

    // A bad signature: signed by a key that is not the device's.
    let mut impostor = Device { key: ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng), ..clone_of(&a) };
    impostor.counter = a.counter;
    let (status, body) =
        Device::post_report(&app, "pump-a", &a.token, &impostor.report_body("pump-a", a.counter, attempt)).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_signature")), "{body}");
    // A replayed counter: 409 with the last accepted counter.
    let (status, body) =
        Device::post_report(&app, "pump-a", &a.token, &a.report_body("pump-a", a.counter - 1, attempt)).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"], "stale_counter");
    assert_eq!(body["last_counter"], a.counter - 1);
    // Another device's id inside a report, and another device's token on this path.
    let (status, _) = Device::post_report(&app, "pump-a", &a.token, &a.report_body("pump-b", a.counter, attempt)).await;
    assert_eq!(status, 403);
    let (status, _) = Device::post_report(&app, "pump-a", &b.token, &a.report_body("pump-a", a.counter, attempt)).await;
    assert_eq!(status, 403);
    let (status, _) = Device::post_report(&app, "pump-b", &a.token, &a.report_body("pump-a", a.counter, attempt)).await;
    assert_eq!(status, 403);
    // Tampered after signing.
    let mut tampered = a.report_body("pump-a", a.counter, attempt);
    tampered["signed"]["counter"] = json!(a.counter + 100);
    let (status, body) = Device::post_report(&app, "pump-a", &a.token, &tampered).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_signature")));
    // An oversized body is refused before it is read in full.
    let res = app
        .client
        .post(app.url("/api/v1/devices/pump-a/report"))
        .bearer_auth(&a.token)
        .header("content-type", "application/json")
        .body(vec![b' '; 64 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 413);
    assert_eq!(res.json::<Value>().await.unwrap()["error"], "body_too_large");
    assert_eq!(footprint(&app, "pump-a").await, before, "no refused report left a trace");

    // A decommissioned device gets no service at all.
    let res =
        app.client.post(app.url("/api/v1/devices/pump-a/decommission")).bearer_auth(&app.admin).send().await.unwrap();
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    let before = footprint(&app, "pump-a").await;
    let (status, _) = Device::post_report(&app, "pump-a", &a.token, &a.report_body("pump-a", a.counter, attempt)).await;
    assert_eq!(status, 403);
    let url = app.url(&format!("/director/pump-a/metadata/{}.targets.json", a.director_version));
    assert_eq!(app.client.get(&url).bearer_auth(&a.token).send().await.unwrap().status(), 403);
    assert_eq!(footprint(&app, "pump-a").await, before);
}

fn clone_of(d: &Device) -> Device {
    Device {
        id: d.id.clone(),
        key: d.key.clone(),
        token: d.token.clone(),
        counter: d.counter,
        director_version: d.director_version,
        installed: d.installed.clone(),
    }
}

#[tokio::test]
async fn enrollment_needs_a_valid_token_the_right_product_and_possession_of_the_key() {
    let app = spawn_app().await;
    app.create_product(PRODUCT, &[HW]).await;
    app.create_product("monitor-m2", &["m2"]).await;
    let token = enrollment_token(&app, PRODUCT, &["site:lab"], 2).await;
    let key = ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng);
    // Wrong token, wrong product, unknown hardware id.
    assert_eq!(try_enroll(&app, &key, "d-1", PRODUCT, HW, "pge_nope").await.0, 401);
    assert_eq!(try_enroll(&app, &key, "d-1", "monitor-m2", "m2", &token).await.0, 403);
    let (status, body) = try_enroll(&app, &key, "d-1", PRODUCT, "other-hw", &token).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("unknown_hardware_id")));
    // Signed by a key other than the one it names.
    let other = ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng);
    let request = patchgate_protocol::report::EnrollRequest::new(
        "d-1",
        PRODUCT,
        HW,
        &key.verifying_key(),
        &token,
        crate::fleet::next_time(),
    );
    let forged = patchgate_protocol::envelope::sign(request, &other).unwrap();
    let res = app.client.post(app.url("/api/v1/devices/enroll")).json(&forged).send().await.unwrap();
    assert_eq!(res.status(), 400);
    // Enrolls; the same key again re-enrolls (new token); another key is a conflict.
    let (status, first) = try_enroll(&app, &key, "d-1", PRODUCT, HW, &token).await;
    assert_eq!(status, 201, "{first}");
    let (status, body) = try_enroll(&app, &other, "d-1", PRODUCT, HW, &token).await;
    assert_eq!((status, body["error"].as_str()), (409, Some("device_key_conflict")));
    let (status, second) = try_enroll(&app, &key, "d-1", PRODUCT, HW, &token).await;
    assert_eq!(status, 201);
    assert_ne!(first["device_token"], second["device_token"]);
    // Two uses are spent: the token is exhausted.
    let key3 = ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng);
    assert_eq!(try_enroll(&app, &key3, "d-3", PRODUCT, HW, &token).await.0, 401);
    // Re-enrolling kept the director version history (never reset to 1).
    let row = device_find(&app.services.db, "d-1").await.unwrap().unwrap();
    assert_eq!(row.director_targets_version, 1);
    assert_eq!(row.tags, r#"["site:lab"]"#);
}

#[tokio::test]
async fn director_roles_are_refreshed_lazily_when_the_device_reports_inside_their_margin() {
    let (app, _image, mut a, _b) = setup().await;
    a.report(&app, None).await;
    let version = a.director_version;
    let timestamps = |app: &TestApp| {
        let db = app.services.db.clone();
        async move {
            let row = device_find(&db, "pump-a").await.unwrap().unwrap();
            patchgate::db::device_metadata::device_metadata_latest(&db, row.id, "timestamp")
                .await
                .unwrap()
                .unwrap()
                .version
        }
    };
    let first = timestamps(&app).await;
    // 10 h later the timestamp (1 day, re-signed with 8 h left) is still fresh: nothing signed.
    app.clock.set_offset(jiff::SignedDuration::from_hours(10));
    a.report(&app, None).await;
    assert_eq!(timestamps(&app).await, first);
    // 17 h later it is inside its margin: a new timestamp, same targets version.
    app.clock.set_offset(jiff::SignedDuration::from_hours(17));
    let answer = a.report(&app, None).await;
    assert_eq!(timestamps(&app).await, first + 1);
    assert_eq!(
        (answer["director_targets_version"].as_u64(), answer["changed"].as_bool()),
        (Some(version), Some(false))
    );
    // 21 days later the targets role (30 days, margin 10) is re-signed: a new version to fetch.
    app.clock.set_offset(jiff::SignedDuration::from_hours(21 * 24));
    let answer = a.report(&app, None).await;
    assert_eq!(
        (answer["director_targets_version"].as_u64(), answer["changed"].as_bool()),
        (Some(version + 1), Some(true))
    );
    let (name, _) = a.assignment(&app).await.unwrap();
    assert!(name.starts_with("pump-x1/1.0.0/"));
}
