//! hawkBit's device API (`http/ddi.rs`, `services/ddi.rs`), spoken as SWUpdate and
//! rauc-hawkbit-updater speak it: a DDI device polls, is assigned by the same rollout, downloads
//! its artifact, and its feedback moves the same gate; a paused rollout cancels an action not
//! started; refusals are hawkBit's.

use jiff::SignedDuration;
use patchgate_protocol::report::AttemptState;
use reqwest::header;
use serde_json::{Value, json};

use crate::common::{TestApp, firmware, sha256_hex, spawn_app};
use crate::fleet::{Device, enrollment_token};
use crate::ui_common::{Browser, has};
use patchgate::services::auth::Role;

const PRODUCT: &str = "pump-x1";

async fn post(app: &TestApp, path: &str, body: Value) -> (u16, Value) {
    let res = app.client.post(app.url(path)).bearer_auth(&app.admin).json(&body).send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// Registers a DDI device tagged `lab`; its token.
async fn register(app: &TestApp, id: &str) -> String {
    let (status, body) = post(
        app,
        "/api/v1/ddi-devices",
        json!({"device_id": id, "product": PRODUCT, "hardware_id": "hw", "tags": ["lab"]}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["poll_path"], format!("/DEFAULT/controller/v1/{id}"));
    body["token"].as_str().unwrap().to_owned()
}

/// A DDI request as SWUpdate sends it; status and body (`Null` when empty).
async fn ddi(app: &TestApp, method: reqwest::Method, url: &str, token: &str, body: Option<Value>) -> (u16, Value) {
    let url = if url.starts_with("http") { url.to_owned() } else { app.url(url) };
    let mut req = app.client.request(method, url).header(header::AUTHORIZATION, format!("TargetToken {token}"));
    if let Some(body) = body {
        req = req.json(&body);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let text = res.text().await.unwrap();
    (status, if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap() })
}

async fn poll(app: &TestApp, id: &str, token: &str) -> Value {
    let (status, body) = ddi(app, reqwest::Method::GET, &format!("/DEFAULT/controller/v1/{id}"), token, None).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// Feedback as SWUpdate words it (`id` a number, `time` local, fields hawkBit ignores).
fn feedback(action: &str, execution: &str, finished: &str, detail: &str) -> Value {
    json!({"id": action.parse::<i64>().unwrap(), "time": "20261207T044250",
        "status": {"result": {"progress": {"cnt": 0, "of": 1}, "finished": finished}, "execution": execution, "details": [detail]}})
}

/// A JSON value's shape: objects by their keys, arrays by their first element, scalars by type.
fn shape(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), shape(v))).collect()),
        Value::Array(a) => Value::Array(a.first().map(shape).into_iter().collect()),
        Value::String(_) => json!("string"),
        Value::Number(_) => json!("number"),
        Value::Bool(_) => json!("bool"),
        Value::Null => Value::Null,
    }
}

/// A product with 1.0.0 and 1.1.0 (the rollout's), a cohort `lab`, and a rollout of 1.1.0 to
/// all of it that halts when more than a quarter of two reports fail.
async fn lab() -> (TestApp, Vec<u8>) {
    let app = spawn_app().await;
    app.create_product(PRODUCT, &["hw"]).await;
    app.publish(PRODUCT, "1.0.0", "update.swu", firmware(1, 700)).await;
    let image = firmware(2, 300_000);
    app.publish(PRODUCT, "1.1.0", "update.swu", image.clone()).await;
    let cohort = json!({"name": "lab", "product": PRODUCT, "selector": {"tags": ["lab"]}});
    assert_eq!(post(&app, "/api/v1/cohorts", cohort).await.0, 201);
    (app, image)
}

async fn start_rollout(app: &TestApp) {
    let body = json!({"id": "r1", "product": PRODUCT, "version": "1.1.0",
        "stages": [{"cohort": "lab", "percent": 100, "soak_minutes": 10}],
        "gate": {"max_failure_rate": 0.25, "min_reports": 2, "stall_minutes": 600}});
    assert_eq!(post(app, "/api/v1/rollouts", body).await.0, 201);
    assert_eq!(post(app, "/api/v1/rollouts/r1/start", json!({})).await.0, 200);
}

#[tokio::test]
async fn a_ddi_device_installs_its_rollout_and_its_failure_halts_the_gate() {
    let (app, image) = lab().await;
    let (a, b) = (register(&app, "swu-a").await, register(&app, "swu-b").await);
    let devices = "/api/v1/ddi-devices";
    let again = json!({"device_id": "swu-a", "product": PRODUCT, "hardware_id": "hw"});
    assert_eq!(post(&app, devices, again).await.0, 409, "an id is registered once");
    let unknown = json!({"device_id": "swu-z", "product": "nope", "hardware_id": "hw"});
    assert_eq!(post(&app, devices, unknown).await.0, 404);
    let wrong_hw = json!({"device_id": "swu-z", "product": PRODUCT, "hardware_id": "other"});
    assert_eq!(post(&app, devices, wrong_hw).await.0, 400);

    // Before any rollout: the poll interval as HH:MM:SS, and a request for attributes.
    let first = poll(&app, "swu-a", &a).await;
    assert_eq!(first["config"]["polling"]["sleep"], "00:10:00", "{first}");
    let config_href = first["_links"]["configData"]["href"].as_str().unwrap().to_owned();
    assert_eq!(config_href, app.url("/DEFAULT/controller/v1/swu-a/configData"));
    assert!(first["_links"].get("deploymentBase").is_none(), "{first}");
    // SWUpdate's configData (no mode: merge; its extra fields ignored), after which the poll
    // stops asking: SWUpdate would send it forever otherwise.
    let config = json!({"id": "", "time": "20261207T044248", "status": {"result": {"finished": "success"}, "execution": "closed"},
        "data": {"swversion": "1.0.0", "board": "test"}});
    let (status, body) = ddi(&app, reqwest::Method::PUT, &config_href, &a, Some(config)).await;
    assert_eq!((status, body), (200, Value::Null));
    assert!(poll(&app, "swu-a", &a).await.get("_links").is_none(), "no links left");
    let device: Value = app.get_json("/api/v1/devices/swu-a").await;
    assert_eq!((device["protocol"].as_str(), device["attributes"]["board"].as_str()), (Some("ddi"), Some("test")));
    // The admin UI says what such a device is.
    let mut browser = Browser::signed_in(&app, "viewer", Role::Viewer).await;
    let page = browser.get("/ui/devices/swu-a").await;
    has(&page, &["hawkBit device API", "verifies no TUF metadata", "board=test, swversion=1.0.0"]);
    // A poll that changes nothing is an unchanged report: counted, seen, no history row.
    poll(&app, "swu-a", &a).await;
    let polled: Value = app.get_json("/api/v1/devices/swu-a").await;
    assert_eq!(polled["reports"].as_array().unwrap().len(), device["reports"].as_array().unwrap().len(), "{polled}");
    assert_eq!(polled["last_counter"].as_i64(), device["last_counter"].as_i64().map(|c| c + 1));

    // The rollout assigns both; the poll links the action.
    start_rollout(&app).await;
    let polled = poll(&app, "swu-a", &a).await;
    let hawkbit = json!({"config": {"polling": {"sleep": "00:05:00"}},
        "_links": {"deploymentBase": {"href": "https://host/TENANT/controller/v1/CID/deploymentBase/5?c=-2127183556"}}});
    assert_eq!(shape(&polled), shape(&hawkbit), "{polled}");
    let href = polled["_links"]["deploymentBase"]["href"].as_str().expect("an action").to_owned();
    assert!(href.starts_with(&app.url("/DEFAULT/controller/v1/swu-a/deploymentBase/")), "{href}");
    let (status, deployment) = ddi(&app, reqwest::Method::GET, &href, &a, None).await;
    assert_eq!(status, 200, "{deployment}");
    // The shape of hawkBit's documented example, less what patchgate has no use for
    // (maintenance windows, metadata, MD5SUM links, an https link on a plain-HTTP server).
    let hawkbit = json!({"id": "8", "deployment": {"download": "forced", "update": "forced", "chunks": [{
        "part": "os", "version": "1.0.79", "name": "one Firmware", "artifacts": [{"filename": "update.swu",
        "hashes": {"sha1": "574cd3", "md5": "a0637c", "sha256": "498014"}, "size": 13,
        "_links": {"download-http": {"href": "http://host/TENANT/controller/v1/CID/softwaremodules/24/artifacts/update.swu"}}}]}]}});
    assert_eq!(shape(&deployment), shape(&hawkbit), "{deployment}");
    let action = deployment["id"].as_str().unwrap().to_owned();
    assert!(href.ends_with(&format!("/deploymentBase/{action}?c={action}")), "{href}");
    let chunk = &deployment["deployment"]["chunks"][0];
    assert_eq!((chunk["version"].as_str(), chunk["name"].as_str()), (Some("1.1.0"), Some(PRODUCT)));
    let artifact = &chunk["artifacts"][0];
    assert_eq!(artifact["size"], image.len());
    assert_eq!(artifact["hashes"]["sha256"], sha256_hex(&image));
    {
        use sha1::Digest as _;
        assert_eq!(artifact["hashes"]["sha1"], hex::encode(sha1::Sha1::digest(&image)));
        assert_eq!(artifact["hashes"]["md5"], hex::encode(md5::Md5::digest(&image)));
    }
    // The artifact, with the token SWUpdate sends on downloads too.
    let download = artifact["_links"]["download-http"]["href"].as_str().unwrap();
    let res = app.client.get(download).header(header::AUTHORIZATION, format!("TargetToken {a}")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.bytes().await.unwrap() == image);

    // Feedback as SWUpdate sends it moves the attempt; answered 200 with no body.
    let url = format!("/DEFAULT/controller/v1/swu-a/deploymentBase/{action}/feedback");
    let (status, body) =
        ddi(&app, reqwest::Method::POST, &url, &a, Some(feedback(&action, "proceeding", "none", "Installing"))).await;
    assert_eq!((status, body), (200, Value::Null));
    let device: Value = app.get_json("/api/v1/devices/swu-a").await;
    assert_eq!(device["assignments"][0]["state"], AttemptState::Installing.as_str(), "{device}");
    let closed = feedback(&action, "closed", "success", "Update Installed.");
    assert_eq!(ddi(&app, reqwest::Method::POST, &url, &a, Some(closed.clone())).await.0, 200);
    let device: Value = app.get_json("/api/v1/devices/swu-a").await;
    assert_eq!(device["assignments"][0]["state"], "installed", "{device}");
    assert_eq!(device["installed"]["version"], "1.1.0", "{device}");
    assert!(poll(&app, "swu-a", &a).await.get("_links").is_none(), "nothing left to do");
    assert_eq!(ddi(&app, reqwest::Method::POST, &url, &a, Some(closed)).await, (410, Value::Null), "a finished action");

    // The second device fails: one of two reports is past the gate's quarter, which halts.
    let polled = poll(&app, "swu-b", &b).await;
    let (_, deployment) =
        ddi(&app, reqwest::Method::GET, polled["_links"]["deploymentBase"]["href"].as_str().unwrap(), &b, None).await;
    let action_b = deployment["id"].as_str().unwrap().to_owned();
    assert_ne!(action_b, action);
    let url = format!("/DEFAULT/controller/v1/swu-b/deploymentBase/{action_b}/feedback");
    let failed = feedback(&action_b, "closed", "failure", "HASH mismatch");
    assert_eq!(ddi(&app, reqwest::Method::POST, &url, &b, Some(failed)).await.0, 200);
    let rollout: Value = app.get_json("/api/v1/rollouts/r1").await;
    assert_eq!(rollout["state"], "halted", "{rollout}");
    // The rollout says that two of its devices' outcomes are their word.
    assert_eq!(rollout["ddi_devices"], 2, "{rollout}");
    let page = browser.get("/ui/rollouts/r1").await;
    has(&page, &["2 of its devices speak hawkBit&#39;s device API", "on their word, not a signed report"]);
    let device: Value = app.get_json("/api/v1/devices/swu-b").await;
    let assignment = &device["assignments"][0];
    assert_eq!((assignment["state"].as_str(), assignment["detail"].as_str()), (Some("failed"), Some("HASH mismatch")));
    // Another device's action is not this device's.
    let url = format!("/DEFAULT/controller/v1/swu-b/deploymentBase/{action}");
    let (status, body) = ddi(&app, reqwest::Method::GET, &url, &b, None).await;
    assert_eq!((status, body["errorCode"].as_str()), (404, Some("hawkbit.server.error.repo.entityNotFound")), "{body}");
}

#[tokio::test]
async fn a_paused_rollout_cancels_an_action_the_device_has_not_started() {
    let (app, _) = lab().await;
    let token = register(&app, "swu-c").await;
    start_rollout(&app).await;
    let polled = poll(&app, "swu-c", &token).await;
    assert!(polled["_links"]["deploymentBase"]["href"].is_string(), "{polled}");
    app.clock.set_offset(SignedDuration::from_secs(5));
    assert_eq!(post(&app, "/api/v1/rollouts/r1/pause", json!({})).await.0, 200);
    let polled = poll(&app, "swu-c", &token).await;
    let cancel = polled["_links"]["cancelAction"]["href"].as_str().expect("a cancellation").to_owned();
    assert!(!cancel.contains('?'), "SWUpdate appends /feedback to it: {cancel}");
    let (status, body) = ddi(&app, reqwest::Method::GET, &cancel, &token, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(shape(&body), shape(&json!({"id": "11", "cancelAction": {"stopId": "11"}})), "hawkBit's shape: {body}");
    let id = body["id"].as_str().unwrap().to_owned();
    assert_eq!(body["cancelAction"]["stopId"], id.as_str());
    // The deployment is no longer open.
    let url = format!("/DEFAULT/controller/v1/swu-c/deploymentBase/{id}");
    assert_eq!(ddi(&app, reqwest::Method::GET, &url, &token, None).await.0, 404);
    app.clock.set_offset(SignedDuration::from_secs(10));
    let ack = feedback(&id, "closed", "success", "cancellation acknowledged.");
    let (status, body) =
        ddi(&app, reqwest::Method::POST, &format!("{cancel}/feedback"), &token, Some(ack.clone())).await;
    assert_eq!((status, body), (200, Value::Null));
    let polled = poll(&app, "swu-c", &token).await;
    assert!(
        polled["_links"].get("cancelAction").is_none() && polled["_links"].get("deploymentBase").is_none(),
        "{polled}"
    );
    assert_eq!(ddi(&app, reqwest::Method::POST, &format!("{cancel}/feedback"), &token, Some(ack)).await.0, 410);
    // Resumed: the assignment is renewed, a new action to the device.
    app.clock.set_offset(SignedDuration::from_secs(15));
    assert_eq!(post(&app, "/api/v1/rollouts/r1/resume", json!({})).await.0, 200);
    let polled = poll(&app, "swu-c", &token).await;
    assert!(polled["_links"]["deploymentBase"]["href"].is_string(), "{polled}");
}

#[tokio::test]
async fn ddi_refusals_are_hawkbits_and_change_nothing() {
    let (app, _) = lab().await;
    let token = register(&app, "swu-d").await;
    let other = register(&app, "swu-e").await;
    let path = "/DEFAULT/controller/v1/swu-d";
    // No token, an admin's bearer token, another device's token: 401 with no body, as hawkBit.
    let res = app.client.get(app.url(path)).send().await.unwrap();
    assert_eq!(res.status(), 401);
    assert!(res.bytes().await.unwrap().is_empty());
    let res = app.client.get(app.url(path)).bearer_auth(&app.admin).send().await.unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(ddi(&app, reqwest::Method::GET, path, &other, None).await, (401, Value::Null));
    assert_eq!(ddi(&app, reqwest::Method::GET, path, "pgd_0000", None).await, (401, Value::Null));
    // The tenant is DEFAULT or the device's product.
    assert_eq!(ddi(&app, reqwest::Method::GET, &format!("/{PRODUCT}/controller/v1/swu-d"), &token, None).await.0, 200);
    let (status, body) = ddi(&app, reqwest::Method::GET, "/acme/controller/v1/swu-d", &token, None).await;
    assert_eq!((status, body["errorCode"].as_str()), (404, Some("hawkbit.server.error.repo.entityNotFound")), "{body}");
    // An agent's device speaks the agent's protocol, and a DDI device cannot post signed reports.
    let enroll = enrollment_token(&app, PRODUCT, &[], 1).await;
    let agent = Device::enroll(&app, "agent-1", PRODUCT, "hw", &enroll).await;
    let (status, body) = ddi(&app, reqwest::Method::GET, "/DEFAULT/controller/v1/agent-1", &agent.token, None).await;
    assert_eq!(
        (status, body["errorCode"].as_str()),
        (403, Some("hawkbit.server.error.insufficientpermission")),
        "{body}"
    );
    let report = agent.report_body("swu-d", 1, None);
    assert_eq!(Device::post_report(&app, "swu-d", &token, &report).await.0, 403);
    // Bad bodies: 400 with hawkBit's code, nothing stored.
    let config = format!("{path}/configData");
    let not_readable = Some("hawkbit.server.error.rest.body.notReadable");
    for bad in [json!({"data": {}}), json!({"mode": "bogus", "data": {"a": "b"}}), json!({"data": "x"}), json!([1])] {
        let (status, body) = ddi(&app, reqwest::Method::PUT, &config, &token, Some(bad.clone())).await;
        assert_eq!((status, body["errorCode"].as_str()), (400, not_readable), "{bad}: {body}");
    }
    let device: Value = app.get_json("/api/v1/devices/swu-d").await;
    assert!(device.get("attributes").is_none(), "{device}");
    let url = format!("{path}/deploymentBase/1/feedback");
    let (status, body) =
        ddi(&app, reqwest::Method::POST, &url, &token, Some(json!({"status": {"execution": "closed"}}))).await;
    assert_eq!((status, body["errorCode"].as_str()), (400, not_readable), "{body}");
    let (status, body) =
        ddi(&app, reqwest::Method::POST, &url, &token, Some(feedback("1", "exploded", "none", ""))).await;
    assert_eq!((status, body["errorCode"].as_str()), (400, not_readable), "{body}");
    // Unknown actions: 404 with hawkBit's code.
    for url in [
        format!("{path}/deploymentBase/999999"),
        format!("{path}/deploymentBase/x"),
        format!("{path}/cancelAction/999999"),
    ] {
        let (status, body) = ddi(&app, reqwest::Method::GET, &url, &token, None).await;
        assert_eq!(
            (status, body["errorCode"].as_str()),
            (404, Some("hawkbit.server.error.repo.entityNotFound")),
            "{url}: {body}"
        );
    }
    let (status, _) =
        ddi(&app, reqwest::Method::POST, &url, &token, Some(feedback("1", "closed", "success", ""))).await;
    assert_eq!(status, 404, "feedback on an action that is not the device's");
}

#[tokio::test]
async fn a_gateway_token_speaks_for_its_products_ddi_devices_only() {
    let (app, _) = lab().await;
    register(&app, "swu-g").await;
    let gateway = |token: &str| format!("GatewayToken {token}");
    let get = |path: &str, authorization: String| {
        app.client.get(app.url(path)).header(header::AUTHORIZATION, authorization).send()
    };
    let path = "/DEFAULT/controller/v1/swu-g";
    // Off until an admin creates one.
    assert_eq!(get(path, gateway("pgw_0000")).await.unwrap().status(), 401);
    let tokens = format!("/api/v1/products/{PRODUCT}/ddi-gateway-token");
    let (status, body) = post(&app, &tokens, json!({})).await;
    assert_eq!(status, 201, "{body}");
    let token = body["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("pgw_"), "{token}");
    assert_eq!(get(path, gateway(&token)).await.unwrap().status(), 200);
    // Only the product's registered DDI devices.
    let res = get("/DEFAULT/controller/v1/swu-nobody", gateway(&token)).await.unwrap();
    assert_eq!(res.status(), 404);
    assert_eq!(res.json::<Value>().await.unwrap()["errorCode"], "hawkbit.server.error.repo.entityNotFound");
    app.create_product("monitor-2", &["hw"]).await;
    let other = json!({"device_id": "mon-1", "product": "monitor-2", "hardware_id": "hw"});
    assert_eq!(post(&app, "/api/v1/ddi-devices", other).await.0, 201);
    assert_eq!(get("/DEFAULT/controller/v1/mon-1", gateway(&token)).await.unwrap().status(), 401);
    let enroll = enrollment_token(&app, PRODUCT, &[], 1).await;
    Device::enroll(&app, "agent-2", PRODUCT, "hw", &enroll).await;
    assert_eq!(get("/DEFAULT/controller/v1/agent-2", gateway(&token)).await.unwrap().status(), 403);
    // A new token replaces the old; a revoked one stops at once.
    let (_, body) = post(&app, &tokens, json!({})).await;
    let rotated = body["token"].as_str().unwrap().to_owned();
    assert_eq!(get(path, gateway(&token)).await.unwrap().status(), 401);
    assert_eq!(get(path, gateway(&rotated)).await.unwrap().status(), 200);
    let revoke = || app.client.delete(app.url(&tokens)).bearer_auth(&app.admin).send();
    assert_eq!(revoke().await.unwrap().status(), 204);
    assert_eq!(get(path, gateway(&rotated)).await.unwrap().status(), 401);
    assert_eq!(revoke().await.unwrap().status(), 404);
    let audit: Value = app.get_json("/api/v1/audit?action=ddi_gateway_token.create").await;
    assert_eq!(audit.as_array().map(Vec::len), Some(2), "{audit}");
}

#[tokio::test]
async fn cohort_selectors_see_a_ddi_devices_attributes() {
    let (app, _) = lab().await;
    let with = register(&app, "swu-rev-b").await;
    let without = register(&app, "swu-rev-a").await;
    let cohort = json!({"name": "rev-b", "product": PRODUCT, "selector": {"tags": ["board:rev-b"]}});
    assert_eq!(post(&app, "/api/v1/cohorts", cohort).await.0, 201);
    let body = json!({"id": "r-attr", "product": PRODUCT, "version": "1.1.0",
        "stages": [{"cohort": "rev-b", "percent": 100, "soak_minutes": 10}],
        "gate": {"max_failure_rate": 0.25, "min_reports": 2, "stall_minutes": 600}});
    assert_eq!(post(&app, "/api/v1/rollouts", body).await.0, 201);
    assert_eq!(post(&app, "/api/v1/rollouts/r-attr/start", json!({})).await.0, 200);
    let deploys = |polled: &Value| polled["_links"].get("deploymentBase").is_some();
    assert!(!deploys(&poll(&app, "swu-rev-b", &with).await), "no attributes yet: not in the cohort");
    // Attributes count as `name:value` tags, lowercased; the next poll decides again.
    for (id, token, board) in [("swu-rev-b", &with, "Rev-B"), ("swu-rev-a", &without, "rev-a")] {
        let config = json!({"data": {"board": board, "note": "not a tag: spaces"}});
        let url = format!("/DEFAULT/controller/v1/{id}/configData");
        assert_eq!(ddi(&app, reqwest::Method::PUT, &url, token, Some(config)).await.0, 200);
    }
    assert!(deploys(&poll(&app, "swu-rev-b", &with).await));
    assert!(!deploys(&poll(&app, "swu-rev-a", &without).await));
    let rollout: Value = app.get_json("/api/v1/rollouts/r-attr").await;
    assert_eq!(rollout["stages"][0]["eligible"], 1, "{rollout}");
}
