//! The fleet as admins see it: the device list and its filters and pages, one device's history,
//! tags, decommissioning and re-keying, per-stage rollout figures, the audit log's filters and
//! pages, the installed-version export (JSON and CSV), and `patchgate rollout …`.

use std::collections::BTreeSet;

use ed25519_dalek::SigningKey;
use patchgate::services::auth::Role;
use patchgate_protocol::report::{Attempt, AttemptState, DeviceReport, EnrollRequest, InstalledImage};
use serde_json::{Value, json};

use crate::common::{TestApp, firmware, spawn_app};

const PRODUCT: &str = "pump-x1";
const HW: &str = "hw-a";
const TIME: &str = "2026-11-24T10:00:00Z";

/// An enrolled test device.
struct Dev {
    id: String,
    key: SigningKey,
    token: String,
    counter: u64,
}

/// A firmware image as devices report it: (target name, version, sha256).
type Image = (String, String, String);

fn image_of(published: &Value) -> Image {
    let text = |v: &Value| v.as_str().unwrap().to_owned();
    (text(&published["target"]["name"]), text(&published["version"]), text(&published["target"]["hashes"]["sha256"]))
}

async fn send(app: &TestApp, method: reqwest::Method, path: &str, token: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = app.client.request(method, app.url(path)).bearer_auth(token);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let text = res.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or_else(|_| panic!("{path}: not JSON: {text}")))
}

async fn get(app: &TestApp, path: &str) -> (u16, Value) {
    send(app, reqwest::Method::GET, path, &app.admin, None).await
}

async fn post(app: &TestApp, path: &str, token: &str, body: Option<Value>) -> (u16, Value) {
    send(app, reqwest::Method::POST, path, token, body).await
}

/// An enrollment token of `product` giving `tags`.
async fn enrollment_token(app: &TestApp, product: &str, tags: &[&str]) -> String {
    let (status, body) =
        post(app, "/api/v1/enrollment-tokens", &app.admin, Some(json!({"product": product, "tags": tags}))).await;
    assert_eq!(status, 201, "{body}");
    body["token"].as_str().unwrap().to_owned()
}

async fn try_enroll(app: &TestApp, key: &SigningKey, id: &str, product: &str, hw: &str, token: &str) -> (u16, Value) {
    let request = EnrollRequest::new(id, product, hw, &key.verifying_key(), token, crate::fleet::next_time());
    let envelope = patchgate_protocol::envelope::sign(request, key).unwrap();
    let res = app.client.post(app.url("/api/v1/devices/enroll")).json(&envelope).send().await.unwrap();
    (res.status().as_u16(), res.json().await.unwrap())
}

async fn enroll(app: &TestApp, id: &str, product: &str, hw: &str, token: &str) -> Dev {
    let key = SigningKey::generate(&mut rand_core::OsRng);
    let (status, body) = try_enroll(app, &key, id, product, hw, token).await;
    assert_eq!(status, 201, "{body}");
    Dev { id: id.to_owned(), key, token: body["device_token"].as_str().unwrap().to_owned(), counter: 1 }
}

impl Dev {
    /// Sends the next signed report; returns status and answer.
    async fn report(
        &mut self,
        app: &TestApp,
        installed: Option<&Image>,
        attempt: Option<(&Image, AttemptState)>,
    ) -> (u16, Value) {
        let installed = installed.map(|(name, version, sha256)| InstalledImage {
            name: name.clone(),
            sha256: sha256.clone(),
            version: version.clone(),
        });
        let attempt =
            attempt.map(|((name, _, _), state)| Attempt { name: name.clone(), state, detail: Some("test".into()) });
        let report = DeviceReport::new(&self.id, self.counter, TIME, installed, attempt, 0);
        let envelope = patchgate_protocol::envelope::sign(report, &self.key).unwrap();
        self.counter += 1;
        let res = app
            .client
            .post(app.url(&format!("/api/v1/devices/{}/report", self.id)))
            .bearer_auth(&self.token)
            .json(&envelope)
            .send()
            .await
            .unwrap();
        (res.status().as_u16(), res.json().await.unwrap())
    }
}

fn ids(page: &Value) -> Vec<String> {
    page["devices"].as_array().unwrap().iter().map(|d| d["device_id"].as_str().unwrap().to_owned()).collect()
}

fn pumps(numbers: &[u32]) -> Vec<String> {
    numbers.iter().map(|n| format!("pump-{n:04}")).collect()
}

async fn create_cohort(app: &TestApp, body: Value) {
    let (status, answer) = post(app, "/api/v1/cohorts", &app.admin, Some(body)).await;
    assert_eq!(status, 201, "{answer}");
}

/// pump-x1 with 1.0.0 published; pump-0001..0004 tagged `region:eu`, pump-0005..0007 tagged
/// `region:us` and `ward:icu`; one device of another product.
async fn small_fleet() -> (TestApp, Vec<Dev>, Image) {
    let app = spawn_app().await;
    app.create_product(PRODUCT, &[HW]).await;
    app.create_product("other-y", &["hw-b"]).await;
    let v1 = image_of(&app.publish(PRODUCT, "1.0.0", "fw.bin", firmware(1, 2048)).await);
    let eu = enrollment_token(&app, PRODUCT, &["region:eu"]).await;
    let us = enrollment_token(&app, PRODUCT, &["ward:icu", "region:us"]).await;
    let mut devs = Vec::new();
    for n in 1..=7 {
        devs.push(enroll(&app, &format!("pump-{n:04}"), PRODUCT, HW, if n <= 4 { &eu } else { &us }).await);
    }
    let other = enrollment_token(&app, "other-y", &[]).await;
    enroll(&app, "other-0001", "other-y", "hw-b", &other).await;
    (app, devs, v1)
}

#[tokio::test]
async fn the_device_list_filters_and_pages_through_every_device_once() {
    let (app, mut devs, v1) = small_fleet().await;
    for i in [0, 1, 4] {
        assert_eq!(devs[i].report(&app, Some(&v1), None).await.0, 200);
    }
    assert_eq!(post(&app, "/api/v1/devices/pump-0007/decommission", &app.admin, None).await.0, 200);

    let list = |query: &str| {
        let app = &app;
        let path = format!("/api/v1/devices?{query}");
        async move {
            let (status, body) = get(app, &path).await;
            assert_eq!(status, 200, "{path}: {body}");
            body
        }
    };
    let all = list("").await;
    assert_eq!(all["total"], 8);
    assert_eq!(all["next_after"], Value::Null);
    let one = &all["devices"][0];
    assert_eq!(one["device_id"], "other-0001");
    let first = all["devices"].as_array().unwrap().iter().find(|d| d["device_id"] == "pump-0001").unwrap();
    assert_eq!(first["product"], PRODUCT);
    assert_eq!(first["hardware_id"], HW);
    assert_eq!(first["tags"], json!(["region:eu"]));
    assert_eq!(first["status"], "active");
    assert_eq!(first["last_counter"], 1);
    assert!(first["last_seen_at"].is_i64());
    assert_eq!(first["keyid"].as_str().unwrap().len(), 64);
    assert_eq!(first["installed"], json!({"name": v1.0, "version": "1.0.0", "sha256": v1.2}));
    assert_eq!(first["attempt"], Value::Null);
    assert_eq!(first["assignment"], Value::Null);

    // Each filter narrows the list to exactly the devices it names.
    let cases: [(&str, Vec<String>); 10] = [
        ("product=pump-x1", pumps(&[1, 2, 3, 4, 5, 6, 7])),
        ("tag=region:eu", pumps(&[1, 2, 3, 4])),
        ("tag=ward:icu", pumps(&[5, 6, 7])),
        // `_` is a LIKE wildcard, and `region:e` a prefix of a tag: neither matches.
        ("tag=region:e_", vec![]),
        ("tag=region:e", vec![]),
        ("status=decommissioned", pumps(&[7])),
        ("status=active&product=pump-x1", pumps(&[1, 2, 3, 4, 5, 6])),
        ("installed_version=1.0.0", pumps(&[1, 2, 5])),
        ("installed_version=1.0.0&tag=ward:icu", pumps(&[5])),
        ("product=other-y", vec!["other-0001".to_owned()]),
    ];
    for (query, want) in cases {
        let page = list(query).await;
        assert_eq!(ids(&page), want, "{query}");
        assert_eq!(page["total"], want.len(), "{query}");
    }

    // A cohort: explicit members (one not enrolled yet) and a selector.
    create_cohort(
        &app,
        json!({"name": "canary", "product": PRODUCT, "devices": ["pump-0005", "pump-9999"], "selector": {"tags": ["region:eu"]}}),
    )
    .await;
    assert_eq!(ids(&list("product=pump-x1&cohort=canary").await), pumps(&[1, 2, 3, 4, 5]));
    assert_eq!(ids(&list("product=pump-x1&cohort=canary&installed_version=1.0.0").await), pumps(&[1, 2, 5]));
    // Without a product, the cohort of that name in every product that has one (here one).
    assert_eq!(ids(&list("cohort=canary").await), pumps(&[1, 2, 3, 4, 5]));
    let mut seen = Vec::new();
    let mut after = String::new();
    loop {
        let page = list(&format!("product=pump-x1&cohort=canary&limit=2&after={after}")).await;
        assert_eq!(page["total"], 5);
        seen.extend(ids(&page));
        match page["next_after"].as_str() {
            Some(next) => after = next.to_owned(),
            None => break,
        }
    }
    assert_eq!(seen, pumps(&[1, 2, 3, 4, 5]));

    // Paging the whole fleet visits every device exactly once, in order.
    let mut seen = Vec::new();
    let mut pages = 0;
    let mut query = "limit=3".to_owned();
    loop {
        let page = list(&query).await;
        pages += 1;
        assert_eq!(page["total"], 8);
        assert!(page["devices"].as_array().unwrap().len() <= 3);
        seen.extend(ids(&page));
        match page["next_after"].as_str() {
            Some(next) => query = format!("limit=3&after={next}"),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, ids(&all));

    // Refusals are JSON with a code.
    for (query, status, code) in [
        ("product=nope", 404, "unknown_product"),
        ("product=pump-x1&cohort=nope", 404, "unknown_cohort"),
        ("cohort=nope", 404, "unknown_cohort"),
        ("cohort=Not%20A%20Cohort", 400, "invalid_cohort_name"),
        ("product=nope&cohort=Not%20A%20Cohort", 400, "invalid_cohort_name"),
        ("status=retired", 400, "invalid_status"),
        ("limit=0", 400, "invalid_limit"),
        ("limit=1001", 400, "invalid_limit"),
        ("colour=red", 400, "invalid_query"),
    ] {
        let (got, body) = get(&app, &format!("/api/v1/devices?{query}")).await;
        assert_eq!((got, body["error"].as_str().unwrap()), (status, code), "{query}: {body}");
    }
    // Reading needs a token, any role will do.
    let anonymous = app.client.get(app.url("/api/v1/devices")).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let viewer = app.token(Role::Viewer, None).await;
    assert_eq!(send(&app, reqwest::Method::GET, "/api/v1/devices", &viewer, None).await.0, 200);
}

/// Every device of `query`'s list, page by page (`limit=2`), and how many pages that took.
async fn all_pages(app: &TestApp, query: &str) -> (Vec<String>, usize) {
    let (mut out, mut pages, mut after) = (Vec::new(), 0, String::new());
    loop {
        let (status, page) = get(app, &format!("/api/v1/devices?{query}&limit=2&after={after}")).await;
        assert_eq!(status, 200, "{query}: {page}");
        pages += 1;
        out.extend(ids(&page));
        match page["next_after"].as_str() {
            Some(next) => after = url::form_urlencoded::byte_serialize(next.as_bytes()).collect(),
            None => return (out, pages),
        }
    }
}

#[tokio::test]
async fn the_device_list_finds_silent_devices_and_sorts_by_when_they_were_last_seen() {
    let (app, mut devs, v1) = small_fleet().await;
    // The server asks for a report every 600 s: silent for over 30 min is offline.
    assert_eq!(devs[0].report(&app, Some(&v1), None).await.0, 200);
    app.clock.set_offset(jiff::SignedDuration::from_mins(1));
    assert_eq!(devs[4].report(&app, Some(&v1), None).await.0, 200);
    app.clock.set_offset(jiff::SignedDuration::from_mins(120));
    assert_eq!(devs[1].report(&app, Some(&v1), None).await.0, 200);
    app.clock.set_offset(jiff::SignedDuration::from_mins(130));
    // Enrolled just now: never reported, and not silent for long.
    let token = enrollment_token(&app, PRODUCT, &["region:eu"]).await;
    enroll(&app, "pump-0008", PRODUCT, HW, &token).await;

    let list = |query: &'static str| {
        let app = &app;
        async move {
            let (status, body) = get(app, &format!("/api/v1/devices?{query}")).await;
            assert_eq!(status, 200, "{query}: {body}");
            assert_eq!(body["total"], body["devices"].as_array().unwrap().len(), "{query}");
            ids(&body)
        }
    };
    assert_eq!(list("seen=online").await, pumps(&[2]));
    assert_eq!(list("seen=offline").await, pumps(&[1, 5]));
    let never = ["other-0001", "pump-0003", "pump-0004", "pump-0006", "pump-0007", "pump-0008"].map(String::from);
    assert_eq!(list("seen=never").await, never);
    // Silent for an hour: the two offline, and those enrolled two hours ago that never reported.
    let silent: Vec<String> =
        ["other-0001", "pump-0001", "pump-0003", "pump-0004", "pump-0005", "pump-0006", "pump-0007"]
            .map(String::from)
            .into();
    assert_eq!(list("silent_for=3600").await, silent);
    assert_eq!(list("silent_for=3600&seen=offline&tag=ward:icu").await, pumps(&[5]));
    assert_eq!(list("silent_for=86400").await, Vec::<String>::new());

    // Longest silent first: never reported (by id), then the oldest report; and the reverse.
    let oldest_first: Vec<String> = never.iter().cloned().chain(pumps(&[1, 5, 2])).collect();
    assert_eq!(list("sort=last_seen").await, oldest_first);
    let newest_first: Vec<String> = pumps(&[2, 5, 1]).into_iter().chain(never.iter().cloned()).collect();
    assert_eq!(list("sort=-last_seen").await, newest_first);
    assert_eq!(list("sort=device_id&seen=offline").await, pumps(&[1, 5]));
    // Pages in either order visit every device once, in that order; so do a cohort's.
    assert_eq!(all_pages(&app, "sort=last_seen").await, (oldest_first, 5));
    assert_eq!(all_pages(&app, "sort=-last_seen").await, (newest_first, 5));
    create_cohort(&app, json!({"name": "eu", "product": PRODUCT, "selector": {"tags": ["region:eu"]}})).await;
    let eu = all_pages(&app, "product=pump-x1&cohort=eu&sort=-last_seen").await;
    assert_eq!(eu, (pumps(&[2, 1, 3, 4, 8]), 3));
    assert_eq!(all_pages(&app, "product=pump-x1&cohort=eu&sort=last_seen&seen=never").await, (pumps(&[3, 4, 8]), 2));

    for (query, code) in [
        ("seen=sometimes", "invalid_seen"),
        ("silent_for=0", "invalid_silent_for"),
        ("silent_for=999999999999", "invalid_silent_for"),
        ("silent_for=soon", "invalid_query"),
        ("sort=colour", "invalid_sort"),
        ("sort=last_seen&after=soon:pump-0001", "invalid_cursor"),
        ("sort=last_seen&after=1:pump/0001", "invalid_cursor"),
        ("sort=last_seen&after=%2B5:pump-0001", "invalid_cursor"),
    ] {
        let (status, body) = get(&app, &format!("/api/v1/devices?{query}")).await;
        assert_eq!((status, body["error"].as_str().unwrap()), (400, code), "{query}: {body}");
    }

    // A value that does not parse is refused with its parameter named.
    for (query, named) in [("silent_for=soon", "silent_for: "), ("stage=-1", "stage: "), ("limit=1e3", "limit: ")] {
        let (status, body) = get(&app, &format!("/api/v1/devices?{query}")).await;
        let message = body["message"].as_str().unwrap();
        assert!(status == 400 && message.starts_with(named), "{query}: {body}");
    }

    // A bare id as the cursor of a last-seen sort starts after that device as it sorts now; a
    // device that does not exist cannot be placed.
    let (status, body) = get(&app, "/api/v1/devices?sort=-last_seen&limit=2&after=pump-0005").await;
    assert_eq!((status, ids(&body)), (200, vec!["pump-0001".to_owned(), "other-0001".to_owned()]), "{body}");
    let (status, body) = get(&app, "/api/v1/devices?sort=-last_seen&after=pump-9999").await;
    assert_eq!((status, body["error"].as_str()), (404, Some("unknown_device")), "{body}");
    // By id, the key of a last-seen cursor is not needed: the id places the page.
    let (_, body) = get(&app, "/api/v1/devices?limit=2&after=-5:pump-0005").await;
    assert_eq!(ids(&body), pumps(&[6, 7]), "{body}");

    // As documented: by last seen, a device that reports while the pages are walked moves. The
    // first page is the two seen last; pump-0001, not yet listed, then reports and jumps ahead
    // of the cursor, so the next page passes over it.
    let (_, first) = get(&app, "/api/v1/devices?sort=-last_seen&limit=2").await;
    assert_eq!(ids(&first), pumps(&[2, 5]));
    assert_eq!(devs[0].report(&app, Some(&v1), None).await.0, 200);
    let next: String = url::form_urlencoded::byte_serialize(first["next_after"].as_str().unwrap().as_bytes()).collect();
    let (_, second) = get(&app, &format!("/api/v1/devices?sort=-last_seen&limit=2&after={next}")).await;
    assert_eq!(ids(&second), ["other-0001", "pump-0003"], "pump-0001 moved to the front: {second}");
}

#[tokio::test]
async fn a_device_shows_its_newest_reports_and_its_assignments() {
    let (app, mut devs, v1) = small_fleet().await;
    let v2 = image_of(&app.publish(PRODUCT, "1.1.0", "fw.bin", firmware(2, 2048)).await);
    let dev = &mut devs[0];
    for _ in 0..3 {
        assert_eq!(dev.report(&app, Some(&v1), None).await.0, 200);
    }
    create_cohort(&app, json!({"name": "eu", "product": PRODUCT, "selector": {"tags": ["region:eu"]}})).await;
    let rollout = json!({"id": "r-eu", "product": PRODUCT, "version": "1.1.0", "stages": [{"cohort": "eu", "percent": 100}],
        "gate": {"max_failure_rate": 0.5, "min_reports": 1, "stall_minutes": 60}});
    assert_eq!(post(&app, "/api/v1/rollouts", &app.admin, Some(rollout)).await.0, 201);
    assert_eq!(post(&app, "/api/v1/rollouts/r-eu/start", &app.admin, None).await.0, 200);
    let (status, answer) = dev.report(&app, Some(&v1), None).await;
    assert_eq!((status, answer["changed"].as_bool()), (200, Some(true)), "{answer}");
    for _ in 0..50 {
        assert_eq!(dev.report(&app, Some(&v1), Some((&v2, AttemptState::Downloading))).await.0, 200);
    }

    let (status, detail) = get(&app, "/api/v1/devices/pump-0001").await;
    assert_eq!(status, 200, "{detail}");
    assert_eq!(detail["device_id"], "pump-0001");
    assert_eq!(detail["last_counter"], 54);
    assert_eq!(detail["attempt"], json!({"name": v2.0, "state": "downloading", "detail": "test"}));
    assert_eq!(
        detail["assignment"],
        json!({"version": "1.1.0", "target": v2.0, "rollout_id": "r-eu", "action": "install"})
    );
    assert!(detail["director_targets_version"].as_i64().unwrap() >= 2);
    // The history keeps the reports whose content changed something, newest first: the first
    // `downloading` (5) and the very first (1). The repeated polls (2, 3 and the 49
    // `downloading` after the first) only moved the counter (54 above) and last-seen time; so
    // did the one answered with the assignment (4): it repeated what was stored and was
    // decided afresh under the new plan, and the decision itself is in `assignments` below.
    let reports = detail["reports"].as_array().unwrap();
    let counters: Vec<i64> = reports.iter().map(|r| r["counter"].as_i64().unwrap()).collect();
    assert_eq!(counters, vec![5, 1], "{reports:?}");
    assert_eq!(reports[0]["installed"]["version"], "1.0.0");
    assert_eq!(reports[0]["attempt"]["state"], "downloading");
    assert_eq!(reports[0]["reported_time"], TIME);
    assert!(reports[0]["received_at"].is_i64());
    let assignments = detail["assignments"].as_array().unwrap();
    assert_eq!(assignments.len(), 1);
    let a = &assignments[0];
    assert_eq!(
        (&a["rollout_id"], &a["stage"], &a["state"], &a["version"]),
        (&json!("r-eu"), &json!(0), &json!("downloading"), &json!("1.1.0"))
    );
    assert_eq!(a["final_at"], Value::Null);

    // Decommissioning withdraws its unfinished assignment: a retired device is not a stalled
    // (failed) one for the gate.
    let (_, before) = get(&app, "/api/v1/rollouts/r-eu").await;
    assert_eq!(before["stages"][0]["assigned"], 1);
    assert_eq!(post(&app, "/api/v1/devices/pump-0001/decommission", &app.admin, None).await.0, 200);
    let (_, retired) = get(&app, "/api/v1/devices/pump-0001").await;
    assert_eq!(retired["assignments"][0]["state"], "withdrawn");
    let (_, after) = get(&app, "/api/v1/rollouts/r-eu").await;
    assert_eq!((&after["stages"][0]["assigned"], &after["stages"][0]["eligible"]), (&json!(0), &json!(3)));

    // A device that never reported has empty histories; an unknown one is a JSON 404.
    let (_, quiet) = get(&app, "/api/v1/devices/pump-0006").await;
    assert_eq!((quiet["reports"].as_array().unwrap().len(), quiet["installed"].clone()), (0, Value::Null));
    let (status, missing) = get(&app, "/api/v1/devices/pump-4242").await;
    assert_eq!((status, missing["error"].as_str()), (404, Some("unknown_device")));
}

#[tokio::test]
async fn admin_edits_are_guarded_audited_and_take_effect() {
    let (app, mut devs, v1) = small_fleet().await;
    let viewer = app.token(Role::Viewer, None).await;
    let manager = app.try_token("mgr", Role::ReleaseManager, None).await.unwrap();
    let tags = |list: &[&str]| Some(json!({"tags": list}));
    let put_tags = |token: String, body: Option<Value>| {
        let app = &app;
        async move { send(app, reqwest::Method::PUT, "/api/v1/devices/pump-0001/tags", &token, body).await }
    };

    // Who may do what.
    assert_eq!(put_tags(viewer.clone(), tags(&["x"])).await.0, 403);
    for action in ["decommission", "allow-rekey"] {
        let path = format!("/api/v1/devices/pump-0001/{action}");
        assert_eq!(post(&app, &path, &viewer, None).await.0, 403, "{action}");
        assert_eq!(post(&app, &path, &manager, None).await.0, 403, "{action}");
        let (status, body) = post(&app, &format!("/api/v1/devices/pump-4242/{action}"), &app.admin, None).await;
        assert_eq!((status, body["error"].as_str()), (404, Some("unknown_device")), "{action}");
    }

    // Tags: validated, sorted, de-duplicated; the list filter sees them at once.
    let (status, body) = put_tags(manager.clone(), tags(&["Bad Tag"])).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = put_tags(manager.clone(), tags(&["ward:icu", "region:eu", "ward:icu"])).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["tags"], json!(["region:eu", "ward:icu"]));
    let (_, icu) = get(&app, "/api/v1/devices?tag=ward:icu").await;
    assert_eq!(ids(&icu), pumps(&[1, 5, 6, 7]));
    let (status, _) =
        send(&app, reqwest::Method::PUT, "/api/v1/devices/pump-4242/tags", &app.admin, tags(&["a"])).await;
    assert_eq!(status, 404);

    // A new key is refused until an admin allows it, and allowed once.
    let new_key = SigningKey::generate(&mut rand_core::OsRng);
    let token = enrollment_token(&app, PRODUCT, &["region:eu"]).await;
    let (status, body) = try_enroll(&app, &new_key, "pump-0001", PRODUCT, HW, &token).await;
    assert_eq!((status, body["error"].as_str()), (409, Some("device_key_conflict")), "{body}");
    let (status, body) = post(&app, "/api/v1/devices/pump-0001/allow-rekey", &app.admin, None).await;
    assert_eq!((status, &body["rekey_allowed"]), (200, &json!(true)), "{body}");
    let (status, body) = try_enroll(&app, &new_key, "pump-0001", PRODUCT, HW, &token).await;
    assert_eq!(status, 201, "{body}");
    let (_, rekeyed) = get(&app, "/api/v1/devices/pump-0001").await;
    assert_eq!(rekeyed["rekey_allowed"], false);
    assert_eq!(rekeyed["keyid"], patchgate_protocol::keys::ed25519_keyid(new_key.verifying_key().as_bytes()));

    // Decommissioning: the device's token stops working, once only.
    let dev = &mut devs[1];
    assert_eq!(dev.report(&app, Some(&v1), None).await.0, 200);
    let (status, body) = post(&app, "/api/v1/devices/pump-0002/decommission", &app.admin, None).await;
    assert_eq!((status, &body["status"]), (200, &json!("decommissioned")), "{body}");
    assert!(body["decommissioned_at"].is_i64());
    let (status, body) = dev.report(&app, Some(&v1), None).await;
    assert_eq!((status, body["error"].as_str()), (403, Some("forbidden")), "{body}");
    let (status, body) = post(&app, "/api/v1/devices/pump-0002/decommission", &app.admin, None).await;
    assert_eq!((status, body["error"].as_str()), (409, Some("already_decommissioned")));
    let (status, body) = post(&app, "/api/v1/devices/pump-0002/allow-rekey", &app.admin, None).await;
    assert_eq!((status, body["error"].as_str()), (409, Some("device_decommissioned")));

    // The audit log says who did what, before and after.
    let (_, log) = get(&app, "/api/v1/audit?object=device:pump-0001").await;
    let actions: Vec<&str> = log.as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["device.reenroll", "device.allow_rekey", "device.tags", "device.enroll"]);
    let tags_entry = &log[2];
    assert_eq!(tags_entry["actor"], "token:mgr");
    assert_eq!(tags_entry["before"], json!({"tags": ["region:eu"]}));
    assert_eq!(tags_entry["after"], json!({"tags": ["region:eu", "ward:icu"]}));
    let (_, log) = get(&app, "/api/v1/audit?action=device.decommission").await;
    assert_eq!(log.as_array().unwrap().len(), 1);
    assert_eq!((&log[0]["object"], &log[0]["actor"]), (&json!("device:pump-0002"), &json!("token:test-admin")));
    assert_eq!(log[0]["before"]["status"], "active");
    assert_eq!(log[0]["after"]["status"], "decommissioned");
}

#[tokio::test]
async fn a_rollout_shows_eligible_devices_progress_and_the_gate_per_stage() {
    let (app, mut devs, v1) = small_fleet().await;
    let v2 = image_of(&app.publish(PRODUCT, "1.1.0", "fw.bin", firmware(2, 2048)).await);
    create_cohort(&app, json!({"name": "canary", "product": PRODUCT, "devices": ["pump-0005"]})).await;
    create_cohort(&app, json!({"name": "eu", "product": PRODUCT, "selector": {"tags": ["region:eu"]}})).await;
    // pump-0006 is in neither cohort; a decommissioned device is never eligible.
    assert_eq!(post(&app, "/api/v1/devices/pump-0004/decommission", &app.admin, None).await.0, 200);
    let rollout = json!({"id": "r-1", "product": PRODUCT, "version": "1.1.0",
        "stages": [{"cohort": "canary", "percent": 100, "soak_minutes": 30}, {"cohort": "eu", "percent": 100}],
        "gate": {"max_failure_rate": 0.05, "min_reports": 1, "stall_minutes": 60}});
    assert_eq!(post(&app, "/api/v1/rollouts", &app.admin, Some(rollout)).await.0, 201);

    let (status, draft) = get(&app, "/api/v1/rollouts/r-1").await;
    assert_eq!(status, 200, "{draft}");
    assert_eq!(
        (&draft["product"], &draft["version"], &draft["state"]),
        (&json!(PRODUCT), &json!("1.1.0"), &json!("draft"))
    );
    let eligible: Vec<&Value> = draft["stages"].as_array().unwrap().iter().map(|s| &s["eligible"]).collect();
    assert_eq!(eligible, [&json!(1), &json!(3)]);
    assert_eq!(draft["stages"][0]["soak_minutes"], 30);
    assert_eq!(draft["stages"][0]["gate"]["over_gate"], false);

    // The canary installs... then a device rejects it: the gate halts the rollout and alerts.
    assert_eq!(post(&app, "/api/v1/rollouts/r-1/start", &app.admin, None).await.0, 200);
    let canary = &mut devs[4];
    assert_eq!(canary.report(&app, Some(&v1), None).await.1["changed"], true);
    assert_eq!(canary.report(&app, Some(&v1), Some((&v2, AttemptState::Installing))).await.0, 200);
    let (_, running) = get(&app, "/api/v1/rollouts/r-1").await;
    let stage = &running["stages"][0];
    assert_eq!((&stage["assigned"], &stage["installing"], &stage["installed"]), (&json!(1), &json!(1), &json!(0)));
    assert_eq!(stage["gate"]["final_reports"], 0);
    assert_eq!(stage["gate"]["enough_reports"], false);
    assert_eq!(canary.report(&app, Some(&v1), Some((&v2, AttemptState::Rejected))).await.0, 200);

    let (_, halted) = get(&app, "/api/v1/rollouts/r-1").await;
    assert_eq!(halted["state"], "halted", "{halted}");
    let stage = &halted["stages"][0];
    assert_eq!((&stage["assigned"], &stage["installing"], &stage["rejected"]), (&json!(1), &json!(0), &json!(1)));
    let gate = &stage["gate"];
    assert_eq!((&gate["final_reports"], &gate["failures"], &gate["failure_rate"]), (&json!(1), &json!(1), &json!(1.0)));
    assert_eq!(
        (&gate["over_gate"], &gate["alert"], &gate["enough_reports"]),
        (&json!(true), &json!(true), &json!(true))
    );
    assert!(gate["reason"].as_str().unwrap().contains("over the gate"), "{gate}");
    assert_eq!(halted["stages"][1]["assigned"], 0);
    assert_eq!(halted["stages"][1]["gate"]["reason"], Value::Null);
    let (status, body) = get(&app, "/api/v1/rollouts/r-nope").await;
    assert_eq!((status, body["error"].as_str()), (404, Some("unknown_rollout")));
}

#[tokio::test]
async fn the_audit_log_pages_by_id_and_filters_by_actor_action_and_object() {
    let app = spawn_app().await;
    app.create_product(PRODUCT, &[HW]).await;
    for _ in 0..3 {
        enrollment_token(&app, PRODUCT, &[]).await;
    }
    let manager = app.try_token("mgr", Role::ReleaseManager, None).await.unwrap();
    let cohort = json!({"name": "c", "product": PRODUCT, "devices": ["pump-0001"]});
    assert_eq!(post(&app, "/api/v1/cohorts", &manager, Some(cohort)).await.0, 201);

    let (_, everything) = get(&app, "/api/v1/audit?limit=1000").await;
    let every_id: Vec<i64> = everything.as_array().unwrap().iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert!(every_id.len() >= 5 && every_id.windows(2).all(|w| w[0] > w[1]), "{every_id:?}");
    // Pages of two, each before the last id seen, cover the log exactly once.
    let mut paged = Vec::new();
    let mut query = "limit=2".to_owned();
    loop {
        let (status, page) = get(&app, &format!("/api/v1/audit?{query}")).await;
        assert_eq!(status, 200, "{page}");
        let page = page.as_array().unwrap().clone();
        assert!(page.len() <= 2);
        let Some(last) = page.last() else { break };
        query = format!("limit=2&before={}", last["id"]);
        paged.extend(page.iter().map(|e| e["id"].as_i64().unwrap()));
    }
    assert_eq!(paged, every_id);

    let actions = |body: &Value| {
        body.as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap().to_owned()).collect::<Vec<_>>()
    };
    let (_, tokens) = get(&app, "/api/v1/audit?action=enrollment_token.").await;
    assert_eq!(actions(&tokens), ["enrollment_token.create"; 3]);
    // `_` in a prefix is a literal underscore, not a wildcard.
    let (_, none) = get(&app, "/api/v1/audit?action=enrollment_toke_").await;
    assert_eq!(none, json!([]));
    let (_, by_manager) = get(&app, "/api/v1/audit?actor=token:mgr").await;
    assert_eq!(actions(&by_manager), ["cohort.create"]);
    assert_eq!(by_manager[0]["object"], "cohort:pump-x1/c");
    let (_, product) = get(&app, "/api/v1/audit?object=product:pump-x1&action=product.").await;
    assert_eq!(actions(&product), ["product.create"]);
    let (_, newest_token) =
        get(&app, &format!("/api/v1/audit?action=enrollment_token.&limit=1&before={}", every_id[0])).await;
    assert_eq!(newest_token.as_array().unwrap().len(), 1);
    assert_eq!(newest_token[0]["id"], tokens[0]["id"]);
    let (status, _) = get(&app, "/api/v1/audit?limit=1001").await;
    assert_eq!(status, 400);

    // Every new route is in the OpenAPI document.
    let (_, doc) = get(&app, "/api/openapi.json").await;
    for (path, method) in [
        ("/api/v1/devices", "get"),
        ("/api/v1/devices/{device_id}", "get"),
        ("/api/v1/devices/{device_id}/tags", "put"),
        ("/api/v1/devices/{device_id}/decommission", "post"),
        ("/api/v1/devices/{device_id}/allow-rekey", "post"),
        ("/api/v1/products/{product}/installed", "get"),
    ] {
        assert!(doc["paths"][path][method].is_object(), "{method} {path} missing");
    }
}

/// Inserts `n` devices of `product_id` straight into the database (enrolling thousands over
/// HTTP would make the test slow without testing anything more).
async fn insert_devices(app: &TestApp, product_id: i64, prefix: &str, n: usize) {
    use sea_orm::TransactionTrait;
    let txn = app.services.db.begin().await.unwrap();
    for i in 0..n {
        let new = patchgate::db::devices::NewDevice {
            device_id: format!("{prefix}-{i:05}"),
            product_id,
            hardware_id: HW.to_owned(),
            public_key: "00".repeat(32),
            keyid: "00".repeat(32),
            tags: r#"["bulk","region:eu"]"#.to_owned(),
            token_prefix: "pgd_x".to_owned(),
            token_hash: format!("{prefix}-{i}"),
            enrollment_token_id: 0,
            enrolled_at: 1_800_000_000,
            enroll_time: TIME.to_owned(),
        };
        patchgate::db::devices::device_insert(&txn, new).await.unwrap();
    }
    txn.commit().await.unwrap();
}

#[tokio::test]
async fn installed_versions_export_every_device_as_json_or_csv() {
    let (app, mut devs, v1) = small_fleet().await;
    assert_eq!(devs[0].report(&app, Some(&v1), None).await.0, 200);
    assert_eq!(post(&app, "/api/v1/devices/pump-0007/decommission", &app.admin, None).await.0, 200);
    let product = patchgate::db::products::product_get_by_name(&app.services.db, PRODUCT).await.unwrap().unwrap();
    // More than two export chunks of 1 000.
    insert_devices(&app, product.id, "bulk", 2_100).await;
    // A device that reports an image name a spreadsheet would run as a formula.
    let mut evil = enroll(&app, "pump-0666", PRODUCT, HW, &enrollment_token(&app, PRODUCT, &[]).await).await;
    let formula = ("=HYPERLINK(\"http://x\")".to_owned(), "1.0.0".to_owned(), v1.2.clone());
    assert_eq!(evil.report(&app, Some(&formula), None).await.0, 200);
    let expected: usize = 7 + 2_100 + 1;

    let (status, rows) = get(&app, "/api/v1/products/pump-x1/installed").await;
    assert_eq!(status, 200);
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), expected);
    let unique: BTreeSet<&str> = rows.iter().map(|r| r["device_id"].as_str().unwrap()).collect();
    assert_eq!(unique.len(), expected);
    assert!(!unique.contains("other-0001"));
    let first = rows.iter().find(|r| r["device_id"] == "pump-0001").unwrap();
    assert_eq!(
        first,
        &json!({"device_id": "pump-0001", "hardware_id": HW, "status": "active", "installed_version": "1.0.0",
            "installed_name": v1.0, "installed_sha256": v1.2, "last_seen_at": first["last_seen_at"], "tags": ["region:eu"]})
    );
    assert!(first["last_seen_at"].is_i64());
    let retired = rows.iter().find(|r| r["device_id"] == "pump-0007").unwrap();
    assert_eq!((&retired["status"], &retired["installed_version"]), (&json!("decommissioned"), &Value::Null));

    // CSV, asked for by query or by Accept.
    let by_query = app.client.get(app.url("/api/v1/products/pump-x1/installed?format=csv")).bearer_auth(&app.admin);
    let by_accept = app
        .client
        .get(app.url("/api/v1/products/pump-x1/installed"))
        .bearer_auth(&app.admin)
        .header("Accept", "text/csv");
    for request in [by_query, by_accept] {
        let res = request.send().await.unwrap();
        assert_eq!(res.status(), 200);
        assert!(res.headers()["content-type"].to_str().unwrap().starts_with("text/csv"));
        assert_eq!(res.headers()["content-disposition"], "attachment; filename=\"pump-x1-installed.csv\"");
        let body = res.bytes().await.unwrap();
        let mut reader = csv::Reader::from_reader(body.as_ref());
        let header: Vec<String> = reader.headers().unwrap().iter().map(str::to_owned).collect();
        assert_eq!(
            header,
            [
                "device_id",
                "hardware_id",
                "status",
                "installed_version",
                "installed_name",
                "installed_sha256",
                "last_seen_at",
                "tags"
            ]
        );
        let records: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
        assert_eq!(records.len(), expected);
        let ids: BTreeSet<&str> = records.iter().map(|r| &r[0]).collect();
        assert_eq!(ids, unique);
        let pump1 = records.iter().find(|r| &r[0] == "pump-0001").unwrap();
        assert_eq!(
            (&pump1[1], &pump1[2], &pump1[3], &pump1[4], &pump1[5]),
            (HW, "active", "1.0.0", v1.0.as_str(), v1.2.as_str())
        );
        assert!(pump1[6].starts_with("20") && pump1[6].ends_with('Z'), "{}", &pump1[6]);
        assert_eq!(&pump1[7], "region:eu");
        let bulk = records.iter().find(|r| &r[0] == "bulk-01999").unwrap();
        assert_eq!((&bulk[3], &bulk[6], &bulk[7]), ("", "", "bulk region:eu"));
        let evil = records.iter().find(|r| &r[0] == "pump-0666").unwrap();
        assert_eq!(&evil[4], "'=HYPERLINK(\"http://x\")");
    }

    for (path, status, code) in [
        ("/api/v1/products/nope/installed", 404, "unknown_product"),
        ("/api/v1/products/pump-x1/installed?format=xml", 400, "invalid_format"),
    ] {
        let (got, body) = get(&app, path).await;
        assert_eq!((got, body["error"].as_str().unwrap()), (status, code), "{path}");
    }
}

fn patchgate_cli(app: &TestApp, token: &str) -> tokio::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_patchgate"));
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("PATCHGATE_")) {
        cmd.env_remove(key);
    }
    cmd.env("PATCHGATE_SERVER", &app.base).env("PATCHGATE_TOKEN", token);
    tokio::process::Command::from(cmd)
}

async fn run_cli(app: &TestApp, token: &str, args: &[&str]) -> (bool, String, String) {
    let out = patchgate_cli(app, token).args(args).output().await.unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_rollout_commands_create_start_and_show_a_rollout() {
    let (app, _devs, _) = small_fleet().await;
    app.publish(PRODUCT, "1.1.0", "fw.bin", firmware(2, 2048)).await;
    create_cohort(&app, json!({"name": "region:eu", "product": PRODUCT, "selector": {"tags": ["region:eu"]}})).await;
    let admin = app.admin.clone();

    // `--server`/`--token` on the command line; a cohort name with ':' in it.
    let create = [
        "rollout",
        "create",
        "--server",
        &app.base,
        "--token",
        &admin,
        "--product",
        PRODUCT,
        "--version",
        "1.1.0",
        "--stage",
        "region:eu:50:30",
        "--stage",
        "region:eu:100",
        "--max-failure-rate",
        "0.05",
        "--min-reports",
        "1",
        "--stall-minutes",
        "30",
        "--id",
        "r-cli",
    ];
    let out = patchgate_cli(&app, "ignored")
        .env_remove("PATCHGATE_SERVER")
        .env_remove("PATCHGATE_TOKEN")
        .args(create)
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("created rollout r-cli"));
    let (_, created) = get(&app, "/api/v1/rollouts/r-cli").await;
    assert_eq!(created["stages"][0]["cohort"], "region:eu");
    assert_eq!((&created["stages"][0]["percent"], &created["stages"][0]["soak_minutes"]), (&json!(50.0), &json!(30)));
    assert_eq!(created["stages"][1]["percent"], 100.0);

    // The server and token from the environment.
    let (ok, stdout, stderr) = run_cli(&app, &admin, &["rollout", "start", "r-cli"]).await;
    assert!(ok, "{stderr}");
    assert_eq!(stdout.trim(), "rollout r-cli: running (stage 1 of 2)");

    let (ok, table, stderr) = run_cli(&app, &admin, &["rollout", "show", "r-cli"]).await;
    assert!(ok, "{stderr}");
    assert!(table.contains("rollout r-cli: pump-x1 1.1.0, running, stage 1 of 2"), "{table}");
    assert!(table.contains("ELIGIBLE") && table.contains("FAIL RATE"), "{table}");
    // Eligible devices per stage follow each device's bucket, as assignment does.
    let in_first =
        (1..=4).filter(|n| patchgate_protocol::bucket::bucket("r-cli", &format!("pump-{n:04}")) < 5000).count();
    let stage_rows: Vec<&str> = table.lines().filter(|l| l.contains("region:eu")).collect();
    assert_eq!(stage_rows.len(), 2, "{table}");
    assert!(stage_rows[0].starts_with('>'), "{table}");
    // Cells: #, cohort, percent, soak, eligible, …
    let cells = |row: &str| row.split_whitespace().filter(|w| *w != ">").map(str::to_owned).collect::<Vec<_>>();
    assert_eq!(cells(stage_rows[0])[4], in_first.to_string(), "{table}");
    assert_eq!(cells(stage_rows[1])[4], (4 - in_first).to_string(), "{table}");

    let (ok, raw, _) = run_cli(&app, &admin, &["rollout", "show", "r-cli", "--json"]).await;
    assert!(ok);
    let raw: Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(raw["stages"][0]["eligible"], in_first);
    assert_eq!(raw["state"], "running");

    let (ok, list, _) = run_cli(&app, &admin, &["rollout", "list", "--product", PRODUCT]).await;
    assert!(ok && list.lines().nth(1).unwrap().starts_with("r-cli"), "{list}");

    // Refusals print the server's code and exit non-zero.
    let (ok, _, stderr) = run_cli(&app, &admin, &["rollout", "start", "r-cli"]).await;
    assert!(!ok && stderr.contains("invalid_transition"), "{stderr}");
    let (ok, _, stderr) = run_cli(&app, &admin, &["rollout", "advance", "r-cli"]).await;
    assert!(!ok && stderr.contains("stage_not_ready"), "{stderr}");
    let viewer = app.token(Role::Viewer, None).await;
    let (ok, _, stderr) = run_cli(&app, &viewer, &["rollout", "pause", "r-cli"]).await;
    assert!(!ok && stderr.contains("forbidden"), "{stderr}");
    let (ok, _, stderr) = run_cli(&app, &admin, &["rollout", "show", "r-nope"]).await;
    assert!(!ok && stderr.contains("unknown_rollout"), "{stderr}");
    let bad_stage = [
        "rollout",
        "create",
        "--product",
        PRODUCT,
        "--version",
        "1.1.0",
        "--stage",
        "nope:10",
        "--max-failure-rate",
        "0.05",
        "--min-reports",
        "1",
        "--stall-minutes",
        "30",
    ];
    let (ok, _, stderr) = run_cli(&app, &admin, &bad_stage).await;
    assert!(!ok && stderr.contains("unknown_cohort"), "{stderr}");
    let (ok, _, stderr) =
        run_cli(&app, &admin, &["rollout", "advance", "r-cli", "--force", "--note", &"x".repeat(501)]).await;
    assert!(!ok && stderr.contains("invalid_note") && stderr.contains("at most 500"), "{stderr}");
    let note = "ward 3 signed off the first stage";
    let (ok, _, _) = run_cli(&app, &admin, &["rollout", "advance", "r-cli", "--force", "--note", note]).await;
    assert!(ok);
    let (_, advanced) = get(&app, "/api/v1/rollouts/r-cli").await;
    assert_eq!(advanced["current_stage"], 1);
    // The note is kept with the action in the audit log.
    let (_, audit) = get(&app, "/api/v1/audit?action=rollout.advance").await;
    let after = &audit[0]["after"];
    assert_eq!((after["note"].as_str(), after["force"].as_bool()), (Some(note), Some(true)), "{audit}");
}

#[tokio::test]
async fn a_stage_that_takes_no_device_says_why() {
    let (app, _, _) = small_fleet().await;
    app.publish(PRODUCT, "1.1.0", "fw.bin", firmware(2, 2048)).await;
    // A device beyond the first 1 % of this rollout's order (the order is fixed by ids).
    let solo = (1..=7)
        .map(|n| format!("pump-{n:04}"))
        .find(|d| patchgate_protocol::bucket::bucket("r-solo", d) >= 100)
        .unwrap();
    create_cohort(&app, json!({"name": "solo", "product": PRODUCT, "devices": [solo]})).await;
    create_cohort(&app, json!({"name": "nobody", "product": PRODUCT, "selector": {"tags": ["ward:none"]}})).await;
    let rollout = json!({"id": "r-solo", "product": PRODUCT, "version": "1.1.0",
        "stages": [{"cohort": "solo", "percent": 1}, {"cohort": "solo", "percent": 100}, {"cohort": "nobody", "percent": 100}],
        "gate": {"max_failure_rate": 0.05, "min_reports": 1, "stall_minutes": 60}});
    assert_eq!(post(&app, "/api/v1/rollouts", &app.admin, Some(rollout)).await.0, 201);

    let (status, body) = get(&app, "/api/v1/rollouts/r-solo").await;
    assert_eq!(status, 200, "{body}");
    let stages = body["stages"].as_array().unwrap();
    let figures: Vec<(&Value, &Value)> = stages.iter().map(|s| (&s["eligible"], &s["in_cohort"])).collect();
    assert_eq!(figures, [(&json!(0), &json!(1)), (&json!(1), &json!(1)), (&json!(0), &json!(0))], "{body}");
    let note = stages[0]["note"].as_str().unwrap_or_default();
    assert!(note.contains("none of the 1 active device of cohort solo") && note.contains("first 1 %"), "{body}");
    assert!(stages[1].get("note").is_none(), "{body}");
    assert_eq!(stages[2]["note"], "cohort nobody has no active device of this product", "{body}");

    let (ok, table, stderr) = run_cli(&app, &app.admin, &["rollout", "show", "r-solo"]).await;
    assert!(ok, "{stderr}");
    assert!(table.contains("stage 1: none of the 1 active device of cohort solo"), "{table}");
    assert!(table.contains("stage 3: cohort nobody has no active device of this product"), "{table}");
}
