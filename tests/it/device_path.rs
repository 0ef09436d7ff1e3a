//! The device path at scale (docs/design.md §5): unchanged reports are group-committed and answered
//! from what is stored, yet nothing is weaker than deciding every report afresh — a replayed
//! counter is refused inside one batch and across two instances on one database, and every
//! admin change (pause, abort, yank, security floor) is obeyed by the first report answered
//! after the admin's request returned.

use std::path::Path;
use std::time::{Duration, Instant};

use patchgate::db::devices::{device_find, device_reports_recent};
use patchgate::services::unchanged_reports::{FastOutcome, UnchangedReport, write_batch};
use patchgate_protocol::report::AttemptState;
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use serde_json::{Value, json};

use crate::common::{TestApp, firmware, spawn_app, spawn_app_from};
use crate::fleet::{Device, Image, enrollment_token, tough_director, try_enroll};

const PRODUCT: &str = "pump-x1";
const HW: &str = "pump-x1-revA";

/// A product with 1.0.0 published, one enrolled device, and a cohort `lab` holding it.
async fn setup(app: &TestApp) -> (Image, Device) {
    app.create_product(PRODUCT, &[HW]).await;
    let image = Image::from_publish(&app.publish(PRODUCT, "1.0.0", "fw.bin", firmware(5, 4096)).await);
    let token = enrollment_token(app, PRODUCT, &["site:lab"], 10).await;
    let device = Device::enroll(app, "pump-a", PRODUCT, HW, &token).await;
    app.post_json("/api/v1/cohorts", &json!({"name": "lab", "product": PRODUCT, "devices": ["pump-a"]})).await;
    (image, device)
}

async fn start_rollout(app: &TestApp, id: &str, version: &str) {
    let gate = json!({"max_failure_rate": 0.5, "min_reports": 1, "stall_minutes": 60});
    app.post_json(
        "/api/v1/rollouts",
        &json!({"id": id, "product": PRODUCT, "version": version, "stages": [{"cohort": "lab", "percent": 100}], "gate": gate}),
    )
    .await;
    app.post_json(&format!("/api/v1/rollouts/{id}/start"), &json!({})).await;
}

/// How many reports the server keeps in the device's history (only changed ones go there).
async fn history(app: &TestApp, device: &str) -> usize {
    let row = device_find(&app.services.db, device).await.unwrap().unwrap();
    device_reports_recent(&app.services.db, row.id, 10_000).await.unwrap().len()
}

async fn stored(app: &TestApp, device: &str) -> patchgate::db::entities::device::Model {
    device_find(&app.services.db, device).await.unwrap().unwrap()
}

#[tokio::test]
async fn unchanged_polls_are_group_committed_and_a_replay_in_the_same_batch_is_refused() {
    let app = spawn_app().await;
    let (_, mut device) = setup(&app).await;
    device.report(&app, None).await;
    let history_before = history(&app, "pump-a").await;

    // Unchanged polls: recorded (counter and last-seen move) without a history row.
    for _ in 0..3 {
        let answer = device.report(&app, None).await;
        assert_eq!(answer["changed"], false, "{answer}");
    }
    assert_eq!(history(&app, "pump-a").await, history_before, "unchanged polls went through the fast path");
    let row = stored(&app, "pump-a").await;
    assert_eq!(row.last_counter, Some(i64::try_from(device.counter).unwrap() - 1));

    // The writer itself: a replay beside its original, and an older counter after a newer one,
    // in one batch: only the first of each is written.
    let next = i64::try_from(device.counter).unwrap();
    let unchanged = |counter: i64| UnchangedReport {
        device_row: row.id,
        counter,
        seen_at: app.services.now_secs(),
        installed: None,
        attempt: None,
    };
    let batch = [unchanged(next), unchanged(next), unchanged(next + 2), unchanged(next + 1)];
    let refs: Vec<&UnchangedReport> = batch.iter().collect();
    let outcomes = write_batch(&app.services.db, &refs).await.unwrap();
    let version = row.director_targets_version;
    let recorded = FastOutcome::Recorded { director_targets_version: version };
    assert_eq!(outcomes, vec![recorded, FastOutcome::NotApplied, recorded, FastOutcome::NotApplied]);
    assert_eq!(stored(&app, "pump-a").await.last_counter, Some(next + 2));
    device.counter = u64::try_from(next + 3).unwrap();

    // Over HTTP: the same signed report sent 16 times at once is accepted exactly once.
    let body = device.report_body("pump-a", device.counter, None);
    let sends = (0..16).map(|_| Device::post_report(&app, "pump-a", &device.token, &body));
    let answers = futures_util::future::join_all(sends).await;
    let ok = answers.iter().filter(|(s, _)| *s == 200).count();
    let stale: Vec<&Value> = answers.iter().filter(|(s, _)| *s == 409).map(|(_, b)| b).collect();
    assert_eq!((ok, stale.len()), (1, 15), "{answers:?}");
    assert!(stale.iter().all(|b| b["error"] == "stale_counter" && b["last_counter"] == device.counter));
    assert_eq!(history(&app, "pump-a").await, history_before, "refused replays left no trace");
}

#[tokio::test]
async fn a_report_decided_again_stores_its_counter_and_its_replay_is_refused() {
    let app = spawn_app().await;
    let (image, mut device) = setup(&app).await;
    device.report(&app, None).await;
    device.report(&app, None).await;
    let before = stored(&app, "pump-a").await;

    // A stage opens: the next unchanged report is decided again under the new plan, set-wise
    // (`redecide`, in the group's writer), and its counter is stored with the decision. Sent 8
    // times at once, it is answered once; the copies in its group and in later groups are stale.
    start_rollout(&app, "r-1", "1.0.0").await;
    let body = device.report_body("pump-a", device.counter, None);
    let sends = (0..8).map(|_| Device::post_report(&app, "pump-a", &device.token, &body));
    let answers = futures_util::future::join_all(sends).await;
    let decided: Vec<&Value> = answers.iter().filter(|(s, _)| *s == 200).map(|(_, b)| b).collect();
    assert_eq!(decided.len(), 1, "{answers:?}");
    assert_eq!(decided[0]["changed"], true, "{answers:?}");
    let refused = answers.iter().filter(|(s, b)| *s == 409 && b["error"] == "stale_counter").count();
    assert_eq!(refused, 7, "{answers:?}");
    let row = stored(&app, "pump-a").await;
    assert_eq!(row.last_counter, Some(i64::try_from(device.counter).unwrap()));
    assert!(row.last_seen_at >= before.last_seen_at && row.last_seen_at.is_some(), "{row:?}");
    assert!(row.plan_epoch > before.plan_epoch, "decided under the new plan: {row:?}");
    device.director_version = decided[0]["director_targets_version"].as_u64().unwrap();
    assert_eq!(device.assignment(&app).await.map(|(n, _)| n), Some(image.name.clone()), "{answers:?}");

    // The same report once more, after the commit: stale.
    let (status, answer) = Device::post_report(&app, "pump-a", &device.token, &body).await;
    assert_eq!((status, answer["error"].as_str()), (409, Some("stale_counter")), "{answer}");
    assert_eq!(stored(&app, "pump-a").await.last_counter, row.last_counter, "the replay changed nothing");
    // The next poll repeats a decision made under the current plan.
    device.counter += 1;
    assert_eq!(device.report(&app, None).await["changed"], false);
}

/// `url` (a PostgreSQL on this machine, by TCP) in the form the README gives for its Unix
/// socket, `postgres://USER@localhost:PORT/DATABASE?host=DIR`; `None` when the server is not on
/// this machine, has no socket here, or does not let this user in through it.
async fn socket_form(url: &str) -> Option<String> {
    let mut url = url::Url::parse(url).unwrap();
    if !matches!(url.host_str(), Some("127.0.0.1" | "localhost" | "[::1]")) {
        return None;
    }
    let db = sea_orm::Database::connect(url.as_str()).await.unwrap();
    let dirs: String = db
        .query_one_raw(Statement::from_string(DbBackend::Postgres, "SHOW unix_socket_directories"))
        .await
        .unwrap()
        .unwrap()
        .try_get_by_index(0)
        .unwrap();
    db.close().await.unwrap();
    let port = url.port().unwrap_or(5432);
    let dir = dirs.split(',').map(str::trim).find(|d| Path::new(d).join(format!(".s.PGSQL.{port}")).exists())?;
    url.set_host(Some("localhost")).unwrap();
    url.query_pairs_mut().append_pair("host", dir);
    // Its rules for local connections may differ from those for TCP (`peer` on Debian by default).
    let over_socket = sea_orm::Database::connect(url.as_str()).await.ok()?;
    over_socket.close().await.unwrap();
    Some(url.to_string())
}

/// A PostgreSQL on the server's own machine, reached over its Unix socket with the URL form the
/// README gives: no TCP and no TLS between server and database (on loopback TLS only costs
/// CPU), and a device's first report after a stage opens is decided and signed as over TCP.
#[tokio::test]
async fn a_postgresql_on_this_machine_serves_the_device_path_over_its_socket() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::common::test_config(dir.path()).await;
    let Some(tcp) = config.database_url.clone() else {
        return; // SQLite: no socket to reach
    };
    let Some(socket) = socket_form(&tcp).await else {
        eprintln!("this PostgreSQL has no socket on this machine: nothing to check");
        return;
    };
    config.database_url = Some(socket);
    let app = spawn_app_from(dir, config, jiff::SignedDuration::ZERO).await;
    let how = "SELECT inet_server_addr() IS NULL, coalesce((SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()), false)";
    let row = app.services.db.query_one_raw(Statement::from_string(DbBackend::Postgres, how)).await.unwrap().unwrap();
    let (socket, tls): (bool, bool) = (row.try_get_by_index(0).unwrap(), row.try_get_by_index(1).unwrap());
    assert_eq!((socket, tls), (true, false), "connected over the socket, without TLS");

    let (image, mut device) = setup(&app).await;
    device.report(&app, None).await;
    assert_eq!(device.report(&app, None).await["changed"], false);
    start_rollout(&app, "r-1", "1.0.0").await;
    let answer = device.report(&app, None).await;
    assert_eq!(answer["changed"], true, "{answer}");
    assert_eq!(device.assignment(&app).await.map(|(n, _)| n), Some(image.name.clone()));
    assert_eq!(device.report(&app, None).await["changed"], false);
}

#[tokio::test]
async fn two_instances_on_one_database_share_the_counter_and_the_plan() {
    let a = spawn_app().await;
    let (image, mut device) = setup(&a).await;
    // A second instance on the same database, blob store and keys.
    let mut config = (*a.services.config).clone();
    config.listen = "127.0.0.1:0".parse().unwrap();
    let b = spawn_app_from(tempfile::tempdir().unwrap(), config, jiff::SignedDuration::ZERO).await;
    device.report(&a, None).await;
    device.report(&a, None).await;

    // A counter used on one instance is stale on the other, one after the other and at once.
    let body = device.report_body("pump-a", device.counter, None);
    assert_eq!(Device::post_report(&a, "pump-a", &device.token, &body).await.0, 200);
    let (status, answer) = Device::post_report(&b, "pump-a", &device.token, &body).await;
    assert_eq!((status, answer["error"].as_str()), (409, Some("stale_counter")), "{answer}");
    device.counter += 1;
    for _ in 0..10 {
        let body = device.report_body("pump-a", device.counter, None);
        let (on_a, on_b) = tokio::join!(
            Device::post_report(&a, "pump-a", &device.token, &body),
            Device::post_report(&b, "pump-a", &device.token, &body)
        );
        let mut statuses = [on_a.0, on_b.0];
        statuses.sort_unstable();
        assert_eq!(statuses, [200, 409], "{on_a:?} {on_b:?}");
        device.counter += 1;
    }

    // A rollout started on B assigns at the next report on A; a pause on A withdraws at the
    // next report on B (the device has not started installing).
    start_rollout(&b, "r-two", "1.0.0").await;
    let answer = device.report(&a, None).await;
    assert_eq!(answer["changed"], true, "{answer}");
    assert_eq!(device.assignment(&a).await.map(|(name, _)| name), Some(image.name.clone()));
    device.report(&b, Some((&image, AttemptState::Downloading))).await;
    device.report(&b, Some((&image, AttemptState::Downloading))).await;
    a.post_json("/api/v1/rollouts/r-two/pause", &json!({})).await;
    let answer = device.report(&b, Some((&image, AttemptState::Downloading))).await;
    assert_eq!(answer["changed"], true, "paused on A, withdrawn on B: {answer}");
    assert_eq!(device.assignment(&b).await, None);

    // Decommissioned on A: refused on B at once for reports, and within a second for reads.
    let res = a.client.post(a.url("/api/v1/devices/pump-a/decommission")).bearer_auth(&a.admin).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let (status, _) =
        Device::post_report(&b, "pump-a", &device.token, &device.report_body("pump-a", device.counter, None)).await;
    assert_eq!(status, 403);
    let url = b.url("/director/pump-a/metadata/timestamp.json");
    let started = Instant::now();
    loop {
        let status = b.client.get(&url).bearer_auth(&device.token).send().await.unwrap().status();
        if status == 403 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(3), "B still serves a decommissioned device: {status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Brings the device to an unchanged, assigned state: assigned, then `downloading` twice (the
/// second one takes the fast path).
async fn assigned_and_polling(app: &TestApp, device: &mut Device, image: &Image) {
    let answer = device.report(app, None).await;
    assert_eq!(answer["changed"], true, "{answer}");
    device.report(app, Some((image, AttemptState::Downloading))).await;
    let before = history(app, &device.id).await;
    let answer = device.report(app, Some((image, AttemptState::Downloading))).await;
    assert_eq!(answer["changed"], false, "{answer}");
    assert_eq!(history(app, &device.id).await, before, "the poll took the fast path");
}

#[tokio::test]
async fn pause_abort_yank_and_floor_are_obeyed_by_the_next_report() {
    let app = spawn_app().await;
    let (image, mut device) = setup(&app).await;
    start_rollout(&app, "r-1", "1.0.0").await;
    let downloading = Some((&image, AttemptState::Downloading));

    // Pause: withdrawn at once; resume: assigned again.
    assigned_and_polling(&app, &mut device, &image).await;
    app.post_json("/api/v1/rollouts/r-1/pause", &json!({})).await;
    assert_eq!(device.report(&app, downloading).await["changed"], true);
    assert_eq!(device.assignment(&app).await, None);
    app.post_json("/api/v1/rollouts/r-1/resume", &json!({})).await;
    assert_eq!(device.report(&app, None).await["changed"], true);
    assert_eq!(device.assignment(&app).await.map(|(n, _)| n), Some(image.name.clone()));

    // Abort: withdrawn at once.
    device.report(&app, downloading).await;
    device.report(&app, downloading).await;
    app.post_json("/api/v1/rollouts/r-1/abort", &json!({})).await;
    assert_eq!(device.report(&app, downloading).await["changed"], true);
    assert_eq!(device.assignment(&app).await, None);

    // Yank: a running rollout's release that is yanked is withdrawn at the next report.
    let second = Image::from_publish(&app.publish(PRODUCT, "1.1.0", "fw.bin", firmware(6, 4096)).await);
    start_rollout(&app, "r-2", "1.1.0").await;
    assigned_and_polling(&app, &mut device, &second).await;
    let res = app
        .client
        .post(app.url("/api/v1/products/pump-x1/releases/1.1.0/yank"))
        .bearer_auth(&app.admin)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    assert_eq!(device.report(&app, Some((&second, AttemptState::Downloading))).await["changed"], true);
    assert_eq!(device.assignment(&app).await, None);
    app.post_json("/api/v1/rollouts/r-2/abort", &json!({})).await;

    // Security floor: 1.2.0 rolls out; 1.3.0 is published with rollback_floor 1.3.0, so the
    // product's floor passes 1.2.0 and its assignment is withdrawn at the next report.
    let third = Image::from_publish(&app.publish(PRODUCT, "1.2.0", "fw.bin", firmware(7, 4096)).await);
    start_rollout(&app, "r-3", "1.2.0").await;
    assigned_and_polling(&app, &mut device, &third).await;
    let part = reqwest::multipart::Part::bytes(firmware(8, 4096)).file_name("fw.bin");
    let form =
        reqwest::multipart::Form::new().text("version", "1.3.0").text("rollback_floor", "1.3.0").part("file", part);
    let res = app
        .client
        .post(app.url("/api/v1/products/pump-x1/releases"))
        .bearer_auth(&app.admin)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    assert_eq!(device.report(&app, Some((&third, AttemptState::Downloading))).await["changed"], true);
    assert_eq!(device.assignment(&app).await, None);
}

#[tokio::test]
async fn a_revoked_or_replaced_device_token_is_refused_at_once() {
    let app = spawn_app().await;
    let (_, mut device) = setup(&app).await;
    device.report(&app, None).await;
    device.report(&app, None).await;
    let timestamp = app.url("/director/pump-a/metadata/timestamp.json");
    assert_eq!(app.client.get(&timestamp).bearer_auth(&device.token).send().await.unwrap().status(), 200);

    // A new key after an admin allowed it: the old token stops working with the answer.
    let res =
        app.client.post(app.url("/api/v1/devices/pump-a/allow-rekey")).bearer_auth(&app.admin).send().await.unwrap();
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    let token = enrollment_token(&app, PRODUCT, &[], 1).await;
    let renewed = Device::enroll(&app, "pump-a", PRODUCT, HW, &token).await;
    assert_eq!(app.client.get(&timestamp).bearer_auth(&device.token).send().await.unwrap().status(), 401);
    let (status, _) =
        Device::post_report(&app, "pump-a", &device.token, &device.report_body("pump-a", device.counter, None)).await;
    assert_eq!(status, 401);
    assert_eq!(app.client.get(&timestamp).bearer_auth(&renewed.token).send().await.unwrap().status(), 200);
}

/// Enrollment tokens are remembered after their first use; a revocation must still be obeyed
/// by the next enrollment, on the instance that revoked it and on one that remembers the token.
#[tokio::test]
async fn a_revoked_enrollment_token_is_refused_at_once_on_every_instance() {
    let a = spawn_app().await;
    a.create_product(PRODUCT, &[HW]).await;
    let mut config = (*a.services.config).clone();
    config.listen = "127.0.0.1:0".parse().unwrap();
    let b = spawn_app_from(tempfile::tempdir().unwrap(), config, jiff::SignedDuration::ZERO).await;
    let token = enrollment_token(&a, PRODUCT, &[], 10).await;
    // Both instances have used (and remember) the token.
    Device::enroll(&a, "pump-a", PRODUCT, HW, &token).await;
    Device::enroll(&b, "pump-b", PRODUCT, HW, &token).await;

    let tokens: Value = b.get_json("/api/v1/enrollment-tokens").await;
    let id = tokens[0]["id"].as_i64().unwrap();
    let res = b
        .client
        .post(b.url(&format!("/api/v1/enrollment-tokens/{id}/revoke")))
        .bearer_auth(&b.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204, "{}", res.text().await.unwrap());
    for (app, device) in [(&a, "pump-c"), (&b, "pump-d")] {
        let key = ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng);
        let (status, body) = try_enroll(app, &key, device, PRODUCT, HW, &token).await;
        assert_eq!(status, 401, "{body}");
        assert!(body["message"].as_str().unwrap().contains("revoked"), "{body}");
    }
    let tokens: Value = a.get_json("/api/v1/enrollment-tokens").await;
    assert_eq!(tokens[0]["uses"], 2, "refused enrollments took no use: {tokens}");
    let devices: Value = a.get_json("/api/v1/devices").await;
    assert!(!devices.to_string().contains("pump-c") && !devices.to_string().contains("pump-d"), "{devices}");
}

/// How many director roles the server has signed and stored for all devices (the metrics
/// counter is shared by every test in the process; the table is this server's own).
async fn director_roles(app: &TestApp) -> u64 {
    use sea_orm::{EntityTrait, PaginatorTrait};
    patchgate::db::entities::device_metadata::Entity::find().count(&app.services.db).await.unwrap()
}

#[tokio::test]
async fn enrollments_and_decisions_at_once_are_stored_together_and_exactly() {
    let app = spawn_app().await;
    app.create_product(PRODUCT, &[HW]).await;
    let image = Image::from_publish(&app.publish(PRODUCT, "1.0.0", "fw.bin", firmware(6, 4096)).await);

    // 24 devices enroll at once with a token of 20 uses: exactly 20 get in, each with its own
    // director repository, one audit entry each; the others are told why.
    let token = enrollment_token(&app, PRODUCT, &["site:ward"], 20).await;
    let keys: Vec<ed25519_dalek::SigningKey> =
        (0..24).map(|_| ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng)).collect();
    let tries = keys.iter().enumerate().map(|(i, key)| {
        let id = format!("ward-{i:02}");
        let (app, token) = (&app, &token);
        async move { (id.clone(), key.clone(), try_enroll(app, key, &id, PRODUCT, HW, token).await) }
    });
    let results = futures_util::future::join_all(tries).await;
    let enrolled: Vec<_> = results.iter().filter(|(_, _, (status, _))| *status == 201).collect();
    let refused: Vec<_> = results.iter().filter(|(_, _, (status, _))| *status != 201).collect();
    assert_eq!((enrolled.len(), refused.len()), (20, 4), "{results:?}");
    for (_, _, (status, body)) in &refused {
        assert_eq!(*status, 401, "{body}");
        assert!(body["message"].as_str().unwrap().contains("no uses left"), "{body}");
    }
    let audit: Value = app.get_json("/api/v1/audit?action=device.enroll&limit=100").await;
    assert_eq!(audit.as_array().map(Vec::len), Some(20), "{audit}");
    let tokens: Value = app.get_json("/api/v1/enrollment-tokens").await;
    assert_eq!(tokens[0]["uses"], 20, "{tokens}");

    let mut devices = Vec::new();
    for (id, key, (_, body)) in enrolled {
        let token = body["device_token"].as_str().unwrap().to_owned();
        devices.push(Device {
            id: id.clone(),
            key: key.clone(),
            token,
            counter: 1,
            director_version: 0,
            installed: None,
        });
    }
    // Every new device's director repository verifies (empty targets, version 1).
    let datastore = tempfile::tempdir().unwrap();
    let repo = tough_director(&app, &devices[0], datastore.path()).await.unwrap();
    assert_eq!(repo.targets().signed.version.get(), 1);
    assert!(repo.targets().signed.targets.is_empty());
    for d in devices.iter_mut() {
        d.report(&app, None).await;
    }

    // A 100 % stage opens; every device reports at once: each is assigned and signed for exactly
    // once (targets, snapshot and timestamp), and its director names the image.
    app.post_json("/api/v1/cohorts", &json!({"name": "ward", "product": PRODUCT, "selector": {"tags": ["site:ward"]}}))
        .await;
    let gate = json!({"max_failure_rate": 0.5, "min_reports": 1, "stall_minutes": 60});
    app.post_json(
        "/api/v1/rollouts",
        &json!({"id": "r-ward", "product": PRODUCT, "version": "1.0.0", "stages": [{"cohort": "ward", "percent": 100}], "gate": gate}),
    )
    .await;
    app.post_json("/api/v1/rollouts/r-ward/start", &json!({})).await;
    let before = director_roles(&app).await;
    assert_eq!(before, 3 * 20, "enrollment signed targets, snapshot and timestamp v1 for each device");
    let answers = futures_util::future::join_all(devices.iter_mut().map(|d| {
        let app = &app;
        async move { d.report(app, None).await }
    }))
    .await;
    assert!(answers.iter().all(|a| a["changed"] == true && a["director_targets_version"] == 2), "{answers:?}");
    assert_eq!(director_roles(&app).await - before, 3 * 20, "one signing of three roles per device");
    // Decided together by the writer, not one by one on the full path (which keeps history):
    // these reports repeated what was stored, so none is history.
    for d in &devices {
        assert_eq!(history(&app, &d.id).await, 0, "{}", d.id);
    }
    for d in &devices {
        assert_eq!(d.assignment(&app).await.map(|(name, _)| name), Some(image.name.clone()), "{}", d.id);
    }
    let datastore = tempfile::tempdir().unwrap();
    let repo = tough_director(&app, &devices[7], datastore.path()).await.unwrap();
    assert!(repo.targets().signed.targets.keys().any(|name| name.raw() == image.name));

    // Polled again at once: nothing changes, nothing is signed.
    let before = director_roles(&app).await;
    let answers = futures_util::future::join_all(devices.iter_mut().map(|d| {
        let app = &app;
        async move { d.report(app, None).await }
    }))
    .await;
    assert!(answers.iter().all(|a| a["changed"] == false), "{answers:?}");
    assert_eq!(director_roles(&app).await, before);
}

/// Reports arriving together have their signatures checked together (`signature_batch`): a
/// tampered report among them is refused, and only it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_reports_among_many_at_once_are_refused_and_only_they() {
    let app = spawn_app().await;
    app.create_product("pump-x1", &["revA"]).await;
    let token = enrollment_token(&app, "pump-x1", &[], 100).await;
    let mut devices = Vec::new();
    for n in 0..48 {
        devices.push(Device::enroll(&app, &format!("pump-b{n:02}"), "pump-x1", "revA", &token).await);
    }
    let sends = devices.iter().enumerate().map(|(n, device)| {
        let mut body = device.report_body(&device.id, device.counter, None);
        let tampered = n % 6 == 5;
        if tampered {
            body["signed"]["counter"] = json!(device.counter + 1000);
        }
        let app = &app;
        async move { (n, tampered, Device::post_report(app, &device.id, &device.token, &body).await) }
    });
    for (n, tampered, (status, body)) in futures_util::future::join_all(sends).await {
        if tampered {
            assert_eq!((status, body["error"].as_str()), (400, Some("invalid_signature")), "device {n}: {body}");
        } else {
            assert_eq!(status, 200, "device {n}: {body}");
        }
    }
    // A refused report recorded nothing: its device's counter is still unused.
    let refused = &devices[5];
    assert_eq!(stored(&app, &refused.id).await.last_counter, None);
    // Some of them were checked as a batch that held (the metrics are this test binary's).
    let metrics = app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("patchgate_signature_batches_total{outcome=\"held\"}"), "{metrics}");
}
