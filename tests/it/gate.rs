//! The gate's finer rules: silent devices count as failed after the stall time, a failure
//! stays on record through a retry, a forced advance is audited, a rollout that takes a device
//! from another one withdraws the older assignment (so it cannot go stale there), and a
//! re-enrollment keeps the director's version history and cannot be replayed.

use jiff::SignedDuration;
use patchgate::jobs::rollouts::evaluate_all;
use patchgate_protocol::report::AttemptState;
use serde_json::{Value, json};

use crate::common::{TestApp, firmware, spawn_app};
use crate::fleet::{Device, Image, enrollment_token};

const PRODUCT: &str = "pump-x1";
const HW: &str = "hw";

async fn post(app: &TestApp, path: &str, body: Value) -> (u16, Value) {
    let res = app.client.post(app.url(path)).bearer_auth(&app.admin).json(&body).send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// A product with releases 1.0.0 and 1.1.0, `n` devices tagged `lab` running 1.0.0.
async fn lab(n: usize) -> (TestApp, Image, Vec<Device>) {
    let app = spawn_app().await;
    app.create_product(PRODUCT, &[HW]).await;
    let old = Image::from_publish(&app.publish(PRODUCT, "1.0.0", "fw.bin", firmware(1, 512)).await);
    let new = Image::from_publish(&app.publish(PRODUCT, "1.1.0", "fw.bin", firmware(2, 512)).await);
    let token = enrollment_token(&app, PRODUCT, &["lab"], 100).await;
    let mut devices = Vec::new();
    for i in 0..n {
        let mut d = Device::enroll(&app, &format!("lab-{i}"), PRODUCT, HW, &token).await;
        d.installed = Some(old.clone());
        devices.push(d);
    }
    assert_eq!(
        post(&app, "/api/v1/cohorts", json!({"name": "lab", "product": PRODUCT, "selector": {"tags": ["lab"]}}))
            .await
            .0,
        201
    );
    (app, new, devices)
}

async fn rollout(app: &TestApp, id: &str, cohort: &str, min_reports: u32, stall_minutes: i64) {
    let body = json!({"id": id, "product": PRODUCT, "version": "1.1.0", "stages": [{"cohort": cohort, "percent": 100, "soak_minutes": 10}],
        "gate": {"max_failure_rate": 0.25, "min_reports": min_reports, "stall_minutes": stall_minutes}});
    assert_eq!(post(app, "/api/v1/rollouts", body).await.0, 201);
    assert_eq!(post(app, &format!("/api/v1/rollouts/{id}/start"), json!({})).await.0, 200);
}

#[tokio::test]
async fn devices_silent_past_the_stall_time_count_as_failed() {
    let (app, new, mut devices) = lab(4).await;
    rollout(&app, "r-stall", "lab", 2, 30).await;
    for d in &mut devices {
        d.report(&app, None).await;
    }
    for d in &mut devices[..2] {
        d.report(&app, Some((&new, AttemptState::Installed))).await;
    }
    // Within the stall time nothing happens; past it, 2 of 4 silent devices are 50% > 25%.
    app.clock.set_offset(SignedDuration::from_mins(20));
    evaluate_all(&app.services).await.unwrap();
    assert_eq!(app.get_json::<Value>("/api/v1/rollouts/r-stall").await["state"], "running");
    app.clock.set_offset(SignedDuration::from_mins(31));
    evaluate_all(&app.services).await.unwrap();
    let r: Value = app.get_json("/api/v1/rollouts/r-stall").await;
    assert_eq!(r["state"], "halted", "{r}");
    assert_eq!(r["stages"][0]["stalled"], 2, "{r}");
}

#[tokio::test]
async fn a_failure_stays_on_record_through_a_retry_and_a_forced_advance_is_audited() {
    let (app, new, mut devices) = lab(8).await;
    rollout(&app, "r-retry", "lab", 8, 1440).await;
    for d in &mut devices {
        d.report(&app, None).await;
    }
    devices[0].report(&app, Some((&new, AttemptState::Failed))).await;
    devices[0].report(&app, Some((&new, AttemptState::Downloading))).await;
    let r: Value = app.get_json("/api/v1/rollouts/r-retry").await;
    assert_eq!(r["stages"][0]["failed"], 1, "a retry does not erase the failure: {r}");
    // Success after the retry replaces it.
    devices[0].report(&app, Some((&new, AttemptState::Installed))).await;
    let r: Value = app.get_json("/api/v1/rollouts/r-retry").await;
    assert_eq!((r["stages"][0]["failed"].as_u64(), r["stages"][0]["installed"].as_u64()), (Some(0), Some(1)), "{r}");
    // `installed` counts only when the device runs the assigned image.
    let mut liar = devices.remove(1);
    let body = liar.report_body(&liar.id.clone(), liar.counter, Some((&new, AttemptState::Installed)));
    let (status, _) = Device::post_report(&app, &liar.id.clone(), &liar.token.clone(), &body).await;
    assert_eq!(status, 200);
    liar.counter += 1;
    let r: Value = app.get_json("/api/v1/rollouts/r-retry").await;
    assert_eq!(r["stages"][0]["installed"], 1, "{r}");
    // Not ready (soak, min_reports): a forced advance completes it, audited with what it skipped.
    assert_eq!(post(&app, "/api/v1/rollouts/r-retry/advance", json!({})).await.0, 409);
    let (status, body) = post(&app, "/api/v1/rollouts/r-retry/advance?force=true", json!({})).await;
    assert_eq!((status, body["state"].as_str()), (200, Some("completed")), "{body}");
    let audit: Value = app.get_json("/api/v1/audit?action=rollout.advance").await;
    let entry = &audit.as_array().unwrap()[0];
    assert!(entry["after"].to_string().contains("force"), "{entry}");
}

#[tokio::test]
async fn a_rollout_taking_a_device_withdraws_its_assignment_elsewhere() {
    let (app, _new, mut devices) = lab(1).await;
    assert_eq!(
        post(&app, "/api/v1/cohorts", json!({"name": "bench", "product": PRODUCT, "devices": ["lab-0"]})).await.0,
        201
    );
    rollout(&app, "r-first", "lab", 1, 30).await;
    devices[0].report(&app, None).await;
    rollout(&app, "r-second", "bench", 1, 30).await;
    devices[0].report(&app, None).await;
    let (_, custom) = devices[0].assignment(&app).await.unwrap();
    assert_eq!(custom["rollout_id"], "r-second");
    let detail: Value = app.get_json("/api/v1/devices/lab-0").await;
    let states: Vec<(String, String)> = detail["assignments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["rollout_id"].as_str().unwrap().to_owned(), a["state"].as_str().unwrap().to_owned()))
        .collect();
    assert!(states.contains(&("r-first".into(), "withdrawn".into())), "{states:?}");
    // So the first rollout does not see a stalled device later.
    app.clock.set_offset(SignedDuration::from_mins(45));
    evaluate_all(&app.services).await.unwrap();
    assert_ne!(app.get_json::<Value>("/api/v1/rollouts/r-first").await["state"], "halted");
}

#[tokio::test]
async fn reenrollment_keeps_director_versions_and_a_captured_request_cannot_be_replayed() {
    let (app, _new, mut devices) = lab(1).await;
    rollout(&app, "r-keep", "lab", 1, 30).await;
    devices[0].report(&app, None).await;
    devices[0].report(&app, None).await;
    let version = devices[0].director_version;
    assert!(version >= 2, "assigned after the empty version 1");
    let token = enrollment_token(&app, PRODUCT, &["lab"], 5).await;
    // Replaying one captured request: the first use re-enrolls, the replay is refused.
    let request = patchgate_protocol::report::EnrollRequest::new(
        "lab-0",
        PRODUCT,
        HW,
        &devices[0].key.verifying_key(),
        &token,
        crate::fleet::next_time(),
    );
    let body = patchgate_protocol::envelope::sign(request, &devices[0].key).unwrap();
    let first = app.client.post(app.url("/api/v1/devices/enroll")).json(&body).send().await.unwrap();
    assert_eq!(first.status(), 201);
    devices[0].token = first.json::<Value>().await.unwrap()["device_token"].as_str().unwrap().to_owned();
    let replay = app.client.post(app.url("/api/v1/devices/enroll")).json(&body).send().await.unwrap();
    assert_eq!(replay.status(), 409);
    assert_eq!(replay.json::<Value>().await.unwrap()["error"], "stale_enrollment");
    // The director's history goes on: the same version, and the next change is higher.
    let answer = devices[0].report(&app, None).await;
    assert_eq!(answer["director_targets_version"], version);
    assert_eq!(post(&app, "/api/v1/rollouts/r-keep/pause", json!({})).await.0, 200);
    let answer = devices[0].report(&app, None).await;
    assert_eq!(answer["director_targets_version"], version + 1);
}

/// From a halted rollout to the devices that failed it, with what each said: the device list
/// filtered by rollout and outcome carries each device's assignment there; bad filters are
/// named.
#[tokio::test]
async fn a_halted_rollout_lists_its_failed_devices_with_their_errors() {
    let (app, new, mut devices) = lab(4).await;
    rollout(&app, "r-fails", "lab", 1, 1440).await;
    for d in &mut devices {
        d.report(&app, None).await;
    }
    devices[0].report(&app, Some((&new, AttemptState::Installed))).await;
    devices[1].report_saying(&app, Some((&new, AttemptState::Failed)), Some("flash write failed at block 7")).await;
    devices[2].report(&app, Some((&new, AttemptState::Installing))).await;
    assert_eq!(app.get_json::<Value>("/api/v1/rollouts/r-fails").await["state"], "halted");

    let (status, page) = get(&app, "/api/v1/devices?rollout=r-fails&outcome=failed").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["total"], 1, "{page}");
    let failed = &page["devices"][0];
    assert_eq!(failed["device_id"], "lab-1");
    assert_eq!(failed["in_rollout"]["state"], "failed");
    assert_eq!(failed["in_rollout"]["detail"], "flash write failed at block 7");
    assert_eq!(failed["in_rollout"]["stage"], 0);
    // Every device of the rollout, each with where it stands; a plain list carries nothing.
    let (_, all) = get(&app, "/api/v1/devices?rollout=r-fails").await;
    let states: Vec<(String, String)> = all["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["device_id"].as_str().unwrap().to_owned(), d["in_rollout"]["state"].as_str().unwrap().to_owned()))
        .collect();
    let expected = [("lab-0", "installed"), ("lab-1", "failed"), ("lab-2", "installing"), ("lab-3", "assigned")];
    assert_eq!(states, expected.map(|(d, s)| (d.to_owned(), s.to_owned())));
    // By the stage they entered at (0-based, as `in_rollout.stage`); the rollout has one.
    let (_, first) = get(&app, "/api/v1/devices?rollout=r-fails&stage=0&outcome=failed").await;
    assert_eq!((first["total"].as_u64(), first["devices"][0]["device_id"].as_str()), (Some(1), Some("lab-1")));
    let (status, beyond) = get(&app, "/api/v1/devices?rollout=r-fails&stage=1").await;
    assert_eq!((status, beyond["error"].as_str()), (400, Some("invalid_stage")), "{beyond}");
    assert!(beyond["message"].as_str().unwrap().contains("has 1 stage, numbered from 0"), "{beyond}");
    // Without a rollout, an outcome in any rollout.
    let (_, any) = get(&app, "/api/v1/devices?outcome=failed").await;
    assert_eq!((any["total"].as_u64(), any["devices"][0]["device_id"].as_str()), (Some(1), Some("lab-1")), "{any}");
    // ... and a stage in any rollout: all four entered this one at stage 0, none at stage 1.
    let (_, first_any) = get(&app, "/api/v1/devices?stage=0").await;
    assert_eq!(first_any["total"], 4, "{first_any}");
    let (_, failed_first) = get(&app, "/api/v1/devices?stage=0&outcome=failed").await;
    assert_eq!(failed_first["devices"][0]["device_id"], "lab-1", "{failed_first}");
    let (status, second_any) = get(&app, "/api/v1/devices?stage=1").await;
    assert_eq!((status, second_any["total"].as_u64()), (200, Some(0)), "{second_any}");
    let (status, beyond_any) = get(&app, "/api/v1/devices?stage=32").await;
    assert_eq!((status, beyond_any["error"].as_str()), (400, Some("invalid_stage")), "{beyond_any}");
    let (_, plain) = get(&app, "/api/v1/devices?product=pump-x1").await;
    assert!(plain["devices"][0].get("in_rollout").is_none(), "{plain}");

    for (query, status, code) in [
        ("rollout=r-fails&outcome=broken", 400, "invalid_outcome"),
        ("rollout=r-none", 404, "unknown_rollout"),
        ("rollout=Not%20An%20Id", 400, "invalid_rollout_id"),
    ] {
        let (got, body) = get(&app, &format!("/api/v1/devices?{query}")).await;
        assert_eq!((got, body["error"].as_str()), (status, Some(code)), "{query}: {body}");
    }
}

async fn get(app: &TestApp, path: &str) -> (u16, Value) {
    let res = app.client.get(app.url(path)).bearer_auth(&app.admin).send().await.unwrap();
    (res.status().as_u16(), res.json().await.unwrap_or(Value::Null))
}
