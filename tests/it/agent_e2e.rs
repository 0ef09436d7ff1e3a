//! The device agent end to end against a real server: the command line enrolls, checks,
//! installs into a slot and confirms, and the server counts the device installed; then 200
//! simulated devices take a newer release at 50 %, and exactly the devices whose bucket is under
//! 5 000 install it.

use std::collections::BTreeMap;

use patchgate::jobs::rollouts::evaluate_all;
use patchgate_agent::simulate::{Fleet, SimOptions, Until};
use patchgate_protocol::bucket::bucket;
use serde_json::{Value, json};

use crate::agents::{agent_cli, device_detail, provisioned_roots};
use crate::common::{TestApp, firmware, sha256_hex, spawn_app};
use crate::fleet::enrollment_token;

const PRODUCT: &str = "pump-x1";
const HW: &str = "pump-x1-revA";

async fn post(app: &TestApp, path: &str, body: Value) -> Value {
    let res = app.client.post(app.url(path)).bearer_auth(&app.admin).json(&body).send().await.unwrap();
    let status = res.status();
    let body: Value = res.json().await.unwrap();
    assert!(status.is_success(), "{path}: {status} {body}");
    body
}

async fn start_rollout(app: &TestApp, id: &str, version: &str, percent: u32) {
    post(
        app,
        "/api/v1/rollouts",
        json!({"id": id, "product": PRODUCT, "version": version, "auto_advance": true,
        "stages": [{"cohort": "fleet", "percent": percent, "soak_minutes": 0}],
        "gate": {"max_failure_rate": 0.5, "min_reports": 1, "stall_minutes": 1440}}),
    )
    .await;
    post(app, &format!("/api/v1/rollouts/{id}/start"), json!({})).await;
}

#[tokio::test]
async fn publish_roll_out_install_confirm_then_half_a_simulated_fleet_takes_the_next_release() {
    let app = spawn_app().await;
    app.create_product(PRODUCT, &[HW]).await;
    let v1 = firmware(1, 64 * 1024);
    // 1.1.0 is 1.0.0 with a few bytes changed, as a patch release: the fleet takes it from a delta.
    let mut v2 = v1.clone();
    v2[100] ^= 0x01;
    v2[40_000] ^= 0x55;
    app.publish(PRODUCT, "1.0.0", "fw.bin", v1.clone()).await;
    let token = enrollment_token(&app, PRODUCT, &["fleet:sim"], 1000).await;
    post(&app, "/api/v1/cohorts", json!({"name": "fleet", "product": PRODUCT, "selector": {"tags": ["fleet:sim"]}}))
        .await;

    // One device through the command line, as a device maker would script it.
    let dir = app.dir.path().join("device");
    std::fs::create_dir_all(&dir).unwrap();
    let (image_root, director_root) = provisioned_roots(&app).await;
    std::fs::write(dir.join("image-root.json"), &image_root).unwrap();
    std::fs::write(dir.join("director-root.json"), &director_root).unwrap();
    let state = dir.join("state");
    let slot = dir.join("slot.bin");
    let p = |path: &std::path::Path| path.to_str().unwrap().to_owned();
    let (code, out) = agent_cli(&[
        "enroll",
        "--server",
        &app.base,
        "--enrollment-token",
        &token,
        "--device-id",
        "pump-0001",
        "--product",
        PRODUCT,
        "--hardware-id",
        HW,
        "--image-root",
        &p(&dir.join("image-root.json")),
        "--director-root",
        &p(&dir.join("director-root.json")),
        "--state-dir",
        &p(&state),
        "--allow-dev-keys",
    ])
    .await;
    assert_eq!(code, 0, "{out}");
    let (code, out) = agent_cli(&["check", "--state-dir", &p(&state)]).await;
    assert_eq!((code, out.trim()), (0, "null"), "no rollout yet: nothing to install");

    start_rollout(&app, "r-1", "1.0.0", 100).await;
    let (code, out) = agent_cli(&["check", "--state-dir", &p(&state)]).await;
    assert_eq!(code, 0, "{out}");
    let checked: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(checked["name"], "pump-x1/1.0.0/fw.bin");
    assert_eq!(checked["version"], "1.0.0");
    assert_eq!(checked["length"], v1.len());
    assert_eq!(checked["sha256"], sha256_hex(&v1));
    assert_eq!(checked["action"], "install");
    assert!(!slot.exists(), "check installs nothing");

    // Program arguments end at `;` (as a shell passes `\;`) or at the end of the line.
    let (code, out) = agent_cli(&[
        "install",
        "--state-dir",
        &p(&state),
        "--precondition",
        "test",
        "-d",
        "/",
        ";",
        "--slot",
        &p(&slot),
        "--hook",
        "true",
    ])
    .await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["outcome"], "awaiting_reboot");
    assert_eq!(std::fs::read(&slot).unwrap(), v1, "the slot holds exactly the signed image");
    let d = device_detail(&app, "pump-0001").await;
    assert_eq!(d["attempt"]["state"], "awaiting_reboot", "{d}");

    // After the "reboot", the running image is the slot's.
    let (code, out) = agent_cli(&["confirm", "--state-dir", &p(&state), "--running-sha256", &sha256_hex(&v1)]).await;
    assert_eq!(code, 0, "{out}");
    let d = device_detail(&app, "pump-0001").await;
    assert_eq!(d["installed"]["version"], "1.0.0", "{d}");
    assert_eq!(d["attempt"]["state"], "installed", "{d}");
    let r: Value = app.get_json("/api/v1/rollouts/r-1").await;
    assert_eq!(r["stages"][0]["installed"], 1, "the server counts the device installed: {r}");
    // Nothing more to do, and confirming again is a no-op.
    let (code, out) = agent_cli(&["install", "--state-dir", &p(&state), "--slot", &p(&slot)]).await;
    assert_eq!((code, serde_json::from_str::<Value>(&out).unwrap()["outcome"].clone()), (0, json!("nothing")));

    // 200 simulated devices install 1.0.0 at 100 %.
    let mut fleet = Fleet::enroll(
        SimOptions {
            server: app.base.clone(),
            enrollment_token: token.clone(),
            image_root,
            director_root,
            devices: 200,
            product: PRODUCT.into(),
            hardware_id: HW.into(),
            id_prefix: "sim".into(),
            fail_rate: 0.0,
            interval: std::time::Duration::ZERO,
            allow_dev_keys: true,
            state_root: Some(app.dir.path().join("fleet")),
            max_in_flight: 16,
        },
        |_| {},
    )
    .await
    .unwrap();
    let first = fleet.run(Until::Rounds(2), |_| {}).await;
    assert_eq!((first.installs, first.failures, first.rejections, first.errors), (200, 0, 0, 0), "{first:?}");
    assert!(first.running.iter().all(|(_, v)| v.as_deref() == Some("1.0.0")));

    // The 1.0.0 rollout completes (one stage, no soak), then 1.1.0 goes to 50 %.
    evaluate_all(&app.services).await.unwrap();
    let r: Value = app.get_json("/api/v1/rollouts/r-1").await;
    assert_eq!(r["state"], "completed", "{r}");
    app.publish(PRODUCT, "1.1.0", "fw.bin", v2.clone()).await;
    let res = app
        .client
        .post(app.url(&format!("/api/v1/products/{PRODUCT}/releases/1.1.0/deltas")))
        .bearer_auth(&app.admin)
        .json(&json!({"from": "1.0.0"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    start_rollout(&app, "r-2", "1.1.0", 50).await;
    let second = fleet.run(Until::Rounds(2), |_| {}).await;
    let expected: BTreeMap<String, &str> = second
        .running
        .iter()
        .map(|(id, _)| (id.clone(), if bucket("r-2", id) < 5000 { "1.1.0" } else { "1.0.0" }))
        .collect();
    let running: BTreeMap<String, &str> =
        second.running.iter().map(|(id, v)| (id.clone(), v.as_deref().unwrap_or("none"))).collect();
    assert_eq!(running, expected);
    let took = expected.values().filter(|v| **v == "1.1.0").count();
    assert!((70..=130).contains(&took), "about half: {took}");
    assert_eq!(second.installs as usize, took, "{second:?}");
    assert_eq!(second.from_deltas as usize, took, "every one built 1.1.0 from the delta: {second:?}");
    assert_eq!(first.from_deltas, 0, "nothing to build a first image from: {first:?}");
    assert_eq!((second.failures, second.rejections, second.errors), (0, 0, 0), "{second:?}");
    let r: Value = app.get_json("/api/v1/rollouts/r-2").await;
    assert_eq!(r["stages"][0]["installed"], took, "{r}");
}
