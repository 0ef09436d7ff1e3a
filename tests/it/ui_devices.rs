//! Admin UI pages for the fleet and the record: the dashboard (fleet counts, rollouts under way
//! with their bars and gate verdicts, failures and rejections as security events, expiry
//! countdowns that warn and go red as the clock moves), the device list (search, filters,
//! paging, field messages), a device's page and its decommissioning (admins only, confirmed,
//! CSRF-checked, audited), and the audit log (filters, dates, paging, CSV export).

use futures_util::StreamExt;
use jiff::SignedDuration;
use patchgate::services::auth::Role;
use patchgate_protocol::report::AttemptState;
use serde_json::{Value, json};

use crate::common::{TestApp, firmware, spawn_app};
use crate::fleet::{Device, Image, enrollment_token};
use crate::ui_common::{Browser, PASSWORD, Page, audit_actions, has};

const PRODUCT: &str = "pump-x1";
const HW: &str = "pump-x1-revA";

/// The message shown next to `field`.
fn field_error(page: &Page, field: &str) -> String {
    let marker = format!("id=\"{field}-error\">");
    let at = page.body.find(&marker).unwrap_or_else(|| panic!("no message for {field}:\n{}", page.body));
    let rest = &page.body[at + marker.len()..];
    rest[..rest.find('<').unwrap()].to_owned()
}

/// Three `region:eu` devices running 1.0.0 and a rollout `r-dash` of 1.1.0 to them: pump-0001
/// installs it, pump-0002 fails, pump-0003 rejects it, which puts the stage over its 50 % gate.
async fn halted_fleet() -> (TestApp, Vec<Device>, Image) {
    let app = spawn_app().await;
    app.create_product(PRODUCT, &[HW]).await;
    let old = Image::from_publish(&app.publish(PRODUCT, "1.0.0", "fw.bin", firmware(1, 2048)).await);
    let new = Image::from_publish(&app.publish(PRODUCT, "1.1.0", "fw.bin", firmware(2, 2048)).await);
    let admin = |path: &str, body: Value| app.client.post(app.url(path)).bearer_auth(&app.admin).json(&body).send();
    let cohort = json!({"name": "eu", "product": PRODUCT, "selector": {"tags": ["region:eu"]}});
    assert_eq!(admin("/api/v1/cohorts", cohort).await.unwrap().status(), 201);
    let rollout = json!({"id": "r-dash", "product": PRODUCT, "version": "1.1.0",
        "stages": [{"cohort": "eu", "percent": 100, "soak_minutes": 60}],
        "gate": {"max_failure_rate": 0.5, "min_reports": 1, "stall_minutes": 1440}});
    assert_eq!(admin("/api/v1/rollouts", rollout).await.unwrap().status(), 201);
    assert_eq!(admin("/api/v1/rollouts/r-dash/start", json!({})).await.unwrap().status(), 200);
    let token = enrollment_token(&app, PRODUCT, &["region:eu"], 3).await;
    let mut devices = Vec::new();
    for i in 1..=3 {
        let mut d = Device::enroll(&app, &format!("pump-{i:04}"), PRODUCT, HW, &token).await;
        d.installed = Some(old.clone());
        d.report(&app, None).await;
        devices.push(d);
    }
    devices[0].report(&app, Some((&new, AttemptState::Installed))).await;
    devices[1].report_saying(&app, Some((&new, AttemptState::Failed)), Some("install hook exited with 3")).await;
    let rejected = Some("sha256 differs from the image repository");
    devices[2].report_saying(&app, Some((&new, AttemptState::Rejected)), rejected).await;
    (app, devices, new)
}

#[tokio::test]
async fn the_dashboard_shows_fleet_rollouts_security_events_and_expiry() {
    let (app, mut devices, new) = halted_fleet().await;
    let mut viewer = Browser::signed_in(&app, "vera", Role::Viewer).await;
    let page = viewer.get("/ui/").await;
    assert_eq!(page.status, 200);
    has(
        &page,
        &[
            "data-live=\"fleet\"",
            "href=\"/ui/devices?product=pump-x1\">pump-x1</a></th>\n      <td class=\"num\">3</td>",
            "<td>pump-x1</td><td>1.0.0</td><td class=\"num\">2</td>",
            "<td>pump-x1</td><td>1.1.0</td><td class=\"num\">1</td>",
            "href=\"/ui/rollouts/r-dash\"",
            "badge badge-bad\">halted</span>",
            "Halted: stage 1 (eu 100.00%): failure rate 66.66% (2 of 3 final reports) is over the gate of 50.00%",
            "<rect class=\"p-installed\"",
            "<rect class=\"p-failed\"",
            "<rect class=\"p-rejected\"",
            "1 of 3 installed, 0 installing, 1 failed, 1 rejected",
            "over gate</span>",
            "badge badge-security\">rejections</span>",
            // The newest problem first; a rejection is a security event.
            "notice notice-security",
            "href=\"/ui/devices/pump-0003\">pump-0003</a></th>\n      <td><span class=\"badge badge-security\">rejected</span>",
            "sha256 differs from the image repository",
            "href=\"/ui/devices/pump-0002\">pump-0002</a></th>\n      <td><span class=\"badge badge-bad\">failed</span>",
            "install hook exited with 3",
            "<td>image</td>\n      <th scope=\"row\">root</th>",
            "<th scope=\"row\">timestamp</th>",
            "<th scope=\"row\">pump-x1</th>",
            "<td>director</td>\n      <th scope=\"row\">root</th>",
            // The suite runs on keys-example/: every page says so.
            "notice notice-warn dev-keys",
        ],
    );
    let problems = &page.body[page.body.find("data-live=\"problems\"").unwrap()..];
    assert!(problems.find("pump-0003").unwrap() < problems.find("pump-0002").unwrap(), "newest first");
    assert!(!page.body.contains("expiry-warn") && !page.body.contains("expiry-bad"), "all fresh");
    assert!(!page.body.contains("method=\"post\" action=\"/ui/devices"), "no change for a viewer");

    // A device that keeps failing is one row with its count, not a page of the same message.
    // (A repeated report changes nothing and is not kept: each retry downloads, then fails.)
    for _ in 0..3 {
        devices[1].report(&app, Some((&new, AttemptState::Downloading))).await;
        devices[1].report_saying(&app, Some((&new, AttemptState::Failed)), Some("install hook exited with 3")).await;
    }
    let page = viewer.get("/ui/").await;
    let problems = &page.body[page.body.find("data-live=\"problems\"").unwrap()..];
    assert_eq!(problems.matches("href=\"/ui/devices/pump-0002\"").count(), 1, "{problems}");
    assert!(problems.contains("<td>4 since "), "{problems}");
    assert!(problems.find("pump-0002").unwrap() < problems.find("pump-0003").unwrap(), "newest first");

    // 20 hours on: the timestamp (1 day) is inside its re-sign margin; the rejection is recent.
    app.clock.set_offset(app.clock.offset() + SignedDuration::from_hours(20));
    assert_eq!(viewer.sign_in("vera", PASSWORD).await.status, 303);
    let page = viewer.get("/ui/").await;
    let timestamp = &page.body[page.body.find("<th scope=\"row\">timestamp</th>").unwrap()..];
    assert!(timestamp[..timestamp.find("</tr>").unwrap()].contains("class=\"expiry-warn\">soon: "), "{timestamp}");
    has(&page, &["notice notice-security"]);
    // ... and the top of the page says so, before the fleet, with a link down to the table.
    let alert =
        page.body.find("<p class=\"notice notice-warn\" role=\"alert\"><strong>Signed metadata\n  expires soon");
    let alert = alert.unwrap_or_else(|| panic!("no expiry alert at the top:\n{}", page.body));
    assert!(alert < page.body.find("<h2>Fleet</h2>").unwrap(), "the alert comes first");
    let text = &page.body[alert..alert + page.body[alert..].find("</p>").unwrap()];
    assert!(text.contains("image timestamp (soon: ") && text.contains("href=\"#expiry-heading\""), "{text}");
    // Two days on: the timestamp has expired, and the rejection is no longer news.
    app.clock.set_offset(app.clock.offset() + SignedDuration::from_hours(28));
    assert_eq!(viewer.sign_in("vera", PASSWORD).await.status, 303);
    let page = viewer.get("/ui/").await;
    has(&page, &["class=\"expiry-bad\">expired", "badge badge-security\">rejected</span>"]);
    has(&page, &["<p class=\"notice notice-error\" role=\"alert\"><strong>Signed metadata\n  has expired:</strong> "]);
    assert!(!page.body.contains("notice notice-security"), "the banner covers 24 hours:\n{}", page.body);
}

#[tokio::test]
async fn the_device_list_searches_filters_and_pages() {
    let app = spawn_app().await;
    app.create_product(PRODUCT, &[HW]).await;
    let cohort = json!({"name": "eu", "product": PRODUCT, "selector": {"tags": ["region:eu"]}});
    let res = app.client.post(app.url("/api/v1/cohorts")).bearer_auth(&app.admin).json(&cohort).send().await.unwrap();
    assert_eq!(res.status(), 201);
    let eu = enrollment_token(&app, PRODUCT, &["region:eu"], 50).await;
    let us = enrollment_token(&app, PRODUCT, &["region:us"], 51).await;
    let app_ref = &app;
    futures_util::stream::iter(0..101)
        .map(|i| {
            let token = if i < 50 { eu.clone() } else { us.clone() };
            async move { Device::enroll(app_ref, &format!("pump-{i:04}"), PRODUCT, HW, &token).await }
        })
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await;
    let mut viewer = Browser::signed_in(&app, "vic", Role::Viewer).await;

    let first = viewer.get("/ui/devices").await;
    assert_eq!(first.status, 200);
    has(&first, &["101 devices", "href=\"/ui/devices/pump-0099\"", "<label for=\"q\">", "region:eu", "not reported"]);
    assert!(!first.body.contains("pump-0100"), "100 a page");
    has(&first, &["<a href=\"/ui/devices?after=pump-0099\" rel=\"next\">Next page</a>"]);
    let second = viewer.get("/ui/devices?after=pump-0099").await;
    has(&second, &["href=\"/ui/devices/pump-0100\""]);
    assert!(!second.body.contains("pump-0099\"") && !second.body.contains("Next page"));

    let count = |page: &Page| page.body.matches("<th scope=\"row\"><a href=\"/ui/devices/").count();
    let one = viewer.get("/ui/devices?q=0042").await;
    assert_eq!((one.status, count(&one)), (200, 1));
    has(&one, &["1 device<", "value=\"0042\"", "href=\"/ui/devices/pump-0042\""]);
    let upper = viewer.get("/ui/devices?q=PUMP-004").await;
    assert_eq!(count(&upper), 10, "the search ignores case");
    let tagged = viewer.get("/ui/devices?q=010&tag=region%3Aus").await;
    assert_eq!(count(&tagged), 1);
    has(&tagged, &["href=\"/ui/devices/pump-0100\"", "value=\"region:us\""]);
    let cohort = viewer.get("/ui/devices?product=pump-x1&cohort=eu&q=004&status=active").await;
    assert_eq!(count(&cohort), 11, "pump-0004 and pump-0040 to 0049:\n{}", cohort.body);
    has(&cohort, &["<option value=\"pump-x1\" selected>", "<option value=\"active\" selected>", "value=\"eu\""]);
    let none = viewer.get("/ui/devices?status=decommissioned&version=1.0.0").await;
    has(&none, &["0 devices", "No device matches."]);

    // Bad filters: a message next to the field, what was typed kept.
    let bad = viewer.get("/ui/devices?q=pump%2F1").await;
    assert_eq!(bad.status, 400);
    assert!(field_error(&bad, "q").contains("part of a device id"));
    has(&bad, &["value=\"pump/1\"", "aria-invalid=\"true\" aria-describedby=\"q-error\""]);
    assert!(!bad.body.contains("0 devices") && !bad.body.contains("pump-0001"), "no results for a bad search");
    let bad = viewer.get("/ui/devices?status=broken").await;
    assert_eq!(bad.status, 400);
    assert!(field_error(&bad, "status").contains("not a device status"));
    has(&bad, &["<option value=\"broken\" selected>"]);
    let bad = viewer.get("/ui/devices?product=nope").await;
    assert_eq!(bad.status, 404);
    assert!(field_error(&bad, "product").contains("does not exist"));
    has(&bad, &["<option value=\"nope\" selected>"]);
    let bad = viewer.get("/ui/devices?cohort=nope").await;
    assert_eq!(bad.status, 404);
    assert!(field_error(&bad, "cohort").contains("no product has a cohort nope"));
    let bad = viewer.get("/ui/devices?product=pump-x1&cohort=nope").await;
    assert_eq!(bad.status, 404);
    assert!(field_error(&bad, "cohort").contains("no cohort nope"));
    let bad = viewer.get("/ui/devices?tag=Not%20A%20Tag").await;
    assert_eq!(bad.status, 400);
    field_error(&bad, "tag");

    assert_eq!(Browser::new(&app).get("/ui/devices").await.status, 303, "signed-out: to the sign-in page");
}

#[tokio::test]
async fn the_device_list_marks_offline_devices_filters_by_stage_and_last_seen_and_sorts() {
    let (app, mut devices, new) = halted_fleet().await;
    // An hour later only pump-0001 has reported again: the other two are offline (silent for
    // over three 10-minute poll intervals).
    app.clock.set_offset(SignedDuration::from_mins(60));
    devices[0].report(&app, Some((&new, AttemptState::Installed))).await;
    let mut viewer = Browser::signed_in(&app, "vera", Role::Viewer).await;
    let rows = |page: &Page| -> Vec<String> {
        page.body
            .split("<th scope=\"row\"><a href=\"/ui/devices/")
            .skip(1)
            .map(|rest| rest[..rest.find('"').unwrap()].to_owned())
            .collect()
    };

    let all = viewer.get("/ui/devices").await;
    assert_eq!(all.body.matches("<span class=\"badge badge-warn\">offline</span> ").count(), 2, "{}", all.body);
    has(
        &all,
        &["<label for=\"seen\">Last seen</label>", "online (reported in the last 30 min)", "(just now)", "(1 h ago)"],
    );
    let offline = viewer.get("/ui/devices?seen=offline").await;
    assert_eq!(rows(&offline), ["pump-0002", "pump-0003"]);
    has(&offline, &["<option value=\"offline\" selected>", "2 devices"]);
    assert_eq!(rows(&viewer.get("/ui/devices?seen=online").await), ["pump-0001"]);
    assert_eq!(rows(&viewer.get("/ui/devices?seen=1d").await), Vec::<String>::new());
    let recent = viewer.get("/ui/devices?sort=-last_seen").await;
    assert_eq!(rows(&recent)[0], "pump-0001");
    has(&recent, &["<option value=\"-last_seen\" selected>Most recently seen first</option>"]);
    let device = viewer.get("/ui/devices/pump-0003").await;
    has(&device, &["<dd><span class=\"badge badge-warn\">offline</span> "]);
    assert!(!viewer.get("/ui/devices/pump-0001").await.body.contains(">offline</span>"));

    // A rollout's stage, counted from 1 as its page shows it.
    let failed = viewer.get("/ui/devices?rollout=r-dash&stage=1&outcome=failed").await;
    assert_eq!(rows(&failed), ["pump-0002"]);
    has(
        &failed,
        &["in rollout <a href=\"/ui/rollouts/r-dash\">r-dash</a>, entered at stage 1", "install hook exited with 3"],
    );
    // Without a rollout: the stage at which devices entered any rollout.
    let anywhere = viewer.get("/ui/devices?stage=1&outcome=failed").await;
    assert_eq!(rows(&anywhere), ["pump-0002"]);
    has(&anywhere, &["1 device failed in a rollout, entered at stage 1"]);
    for (query, field, message) in [
        ("rollout=r-dash&stage=2", "stage", "The rollout has no such stage."),
        ("rollout=r-dash&stage=first", "stage", "A stage is a number: 1 is the first."),
        ("stage=33", "stage", "A rollout has at most 32 stages."),
        ("seen=sometimes", "seen", "\"sometimes\" is not a last-seen filter: online, offline or never"),
        ("sort=colour", "sort", "\"colour\" is not a sort order"),
    ] {
        let page = viewer.get(&format!("/ui/devices?{query}")).await;
        assert_eq!(page.status, 400, "{query}");
        let shown = field_error(&page, field).replace("&quot;", "\"").replace("&#34;", "\"");
        assert!(shown.starts_with(message), "{query}: {shown}");
        assert!(rows(&page).is_empty(), "no results for a bad search");
    }
    let stale = viewer.get("/ui/devices?sort=last_seen&after=soon:pump-0001").await;
    assert_eq!(stale.status, 400);
    has(&stale, &["The page link is malformed: start again from the first page."]);
    let gone = viewer.get("/ui/devices?sort=last_seen&after=pump-9999").await;
    assert_eq!(gone.status, 404);
    has(&gone, &["The page link is malformed: start again from the first page."]);
}

async fn device_status(app: &TestApp, id: &str) -> String {
    let body: Value = app.get_json(&format!("/api/v1/devices/{id}")).await;
    body["status"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_device_page_shows_its_history_and_only_an_admin_decommissions_it() {
    let (app, _devices, _) = halted_fleet().await;
    let mut viewer = Browser::signed_in(&app, "vera", Role::Viewer).await;
    let page = viewer.get("/ui/devices/pump-0003").await;
    assert_eq!(page.status, 200);
    has(
        &page,
        &[
            "<h1>Device pump-0003</h1>",
            "notice notice-security",
            "<dt>Tags</dt><dd>region:eu</dd>",
            "<dt>Installed</dt><dd>1.0.0 · <code>pump-x1/1.0.0/fw.bin</code>",
            "badge badge-security\">rejected</span> <code>pump-x1/1.1.0/fw.bin</code> — sha256 differs",
            "href=\"/ui/rollouts/r-dash\">r-dash</a></td>\n      <td class=\"num\">1</td>\n      <td>1.1.0</td>",
            "<th scope=\"col\" class=\"num\">Counter</th>",
            // When it last reported, and how long ago.
            " UTC (just now)</dd>",
        ],
    );
    assert!(page.body.find("<h2>Assignments</h2>").unwrap() < page.body.find("<h2>Reports</h2>").unwrap());
    let reports = &page.body[page.body.find("<h2>Reports</h2>").unwrap()..];
    assert!(
        reports.find("sha256 differs").unwrap() < reports.find("<td class=\"num\">1</td>").unwrap(),
        "newest first"
    );
    assert!(!page.body.contains("Decommission"), "not offered to a viewer");
    assert_eq!(viewer.get("/ui/devices/pump-0003/decommission").await.status, 403);
    assert_eq!(viewer.get("/ui/devices/nope").await.status, 404);
    // A viewer's hand-made POST with its valid CSRF token: refused, nothing changes.
    let refused = viewer.submit("/ui/devices/pump-0003", "/ui/devices/pump-0003/decommission", &[]).await;
    assert_eq!(refused.status, 403);
    assert_eq!(device_status(&app, "pump-0003").await, "active");

    let mut admin = Browser::signed_in(&app, "ada", Role::Admin).await;
    let page = admin.get("/ui/devices/pump-0003").await;
    has(&page, &["href=\"/ui/devices/pump-0003/decommission\">Decommission</a>"]);
    let confirm = admin.get("/ui/devices/pump-0003/decommission").await;
    assert_eq!(confirm.status, 200);
    has(
        &confirm,
        &[
            "<form id=\"confirm-form\" method=\"post\" action=\"/ui/devices/pump-0003/decommission\"",
            "Confirm decommission",
        ],
    );
    // No session token, or a wrong one: nothing changes.
    assert_eq!(admin.post("/ui/devices/pump-0003/decommission", &[]).await.status, 403);
    assert_eq!(admin.post("/ui/devices/pump-0003/decommission", &[("csrf", "forged")]).await.status, 403);
    assert_eq!(Browser::new(&app).post("/ui/devices/pump-0003/decommission", &[]).await.status, 303);
    assert_eq!(device_status(&app, "pump-0003").await, "active");

    let done = admin.submit("/ui/devices/pump-0003/decommission", "/ui/devices/pump-0003/decommission", &[]).await;
    assert_eq!((done.status, done.location.as_deref()), (303, Some("/ui/devices/pump-0003?notice=decommissioned")));
    assert_eq!(device_status(&app, "pump-0003").await, "decommissioned");
    let page = admin.get("/ui/devices/pump-0003?notice=decommissioned").await;
    has(&page, &["The device is decommissioned", "badge badge-muted\">decommissioned</span> since"]);
    assert!(!page.body.contains(">Decommission</a>"), "not offered twice");
    let audit = audit_actions(&app).await;
    let entry = ("user:ada".to_owned(), "device.decommission".to_owned(), "device:pump-0003".to_owned());
    assert_eq!(audit.iter().filter(|e| **e == entry).count(), 1, "{audit:?}");
    // Again: the service's refusal, on the confirmation page.
    let again = admin.submit("/ui/devices/pump-0003", "/ui/devices/pump-0003/decommission", &[]).await;
    assert_eq!(again.status, 409);
    has(&again, &["notice notice-error", "already decommissioned"]);
    let listed = admin.get("/ui/devices?status=decommissioned").await;
    has(&listed, &["1 device<", "href=\"/ui/devices/pump-0003\""]);
}

async fn device_tags(app: &TestApp, id: &str) -> Value {
    let device: Value = app.get_json(&format!("/api/v1/devices/{id}")).await;
    device["tags"].clone()
}

#[tokio::test]
async fn a_release_manager_edits_a_devices_tags_and_a_viewer_cannot() {
    let (app, _devices, _) = halted_fleet().await;
    let before = device_tags(&app, "pump-0003").await;
    assert_eq!(before, json!(["region:eu"]), "{before}");
    let mut viewer = Browser::signed_in(&app, "vera", Role::Viewer).await;
    let page = viewer.get("/ui/devices/pump-0003").await;
    assert!(!page.body.contains("tags-form"), "no tag editing for a viewer");
    let refused = viewer.submit("/ui/devices/pump-0003", "/ui/devices/pump-0003/tags", &[("tags", "ward-9")]).await;
    assert_eq!(refused.status, 403);

    let mut rita = Browser::signed_in(&app, "rita", Role::ReleaseManager).await;
    let page = rita.get("/ui/devices/pump-0003").await;
    has(
        &page,
        &["<form id=\"tags-form\" method=\"post\" action=\"/ui/devices/pump-0003/tags\"", "value=\"region:eu\""],
    );
    assert_eq!(rita.post("/ui/devices/pump-0003/tags", &[("tags", "ward-9")]).await.status, 403, "no CSRF token");
    // A bad tag: refused next to the field, what was typed kept, nothing stored.
    let bad = rita.submit("/ui/devices/pump-0003", "/ui/devices/pump-0003/tags", &[("tags", "region:eu Ward 9")]).await;
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert!(
        field_error(&bad, "tags").contains("tag &#34;Ward&#34; must be 1 to 64 characters"),
        "{}",
        field_error(&bad, "tags")
    );
    has(&bad, &["value=\"region:eu Ward 9\"", "aria-invalid=\"true\""]);
    assert_eq!(device_tags(&app, "pump-0003").await, before);
    // Spaces and commas both separate; the tags are stored sorted, and audited with before and after.
    let done =
        rita.submit("/ui/devices/pump-0003", "/ui/devices/pump-0003/tags", &[("tags", "ward-9, region:eu")]).await;
    assert_eq!((done.status, done.location.as_deref()), (303, Some("/ui/devices/pump-0003?notice=tags")));
    assert_eq!(device_tags(&app, "pump-0003").await, json!(["region:eu", "ward-9"]));
    let page = rita.get("/ui/devices/pump-0003?notice=tags").await;
    has(&page, &["The tags are saved", "<dt>Tags</dt><dd>region:eu, ward-9</dd>"]);
    let audit = audit_actions(&app).await;
    let entry = ("user:rita".to_owned(), "device.tags".to_owned(), "device:pump-0003".to_owned());
    assert_eq!(audit.iter().filter(|e| **e == entry).count(), 1, "{audit:?}");
}

#[tokio::test]
async fn the_audit_log_filters_by_who_what_and_when_pages_and_exports_csv() {
    let app = spawn_app().await;
    app.create_product(PRODUCT, &[HW]).await;
    for i in 0..105 {
        let body = json!({"name": format!("c-{i:03}"), "product": PRODUCT, "selector": {"tags": ["region:eu"]}});
        let res = app.client.post(app.url("/api/v1/cohorts")).bearer_auth(&app.admin).json(&body).send().await.unwrap();
        assert_eq!(res.status(), 201);
    }
    let mut viewer = Browser::signed_in(&app, "vera", Role::Viewer).await;
    let page = viewer.get("/ui/audit").await;
    assert_eq!(page.status, 200);
    has(
        &page,
        &[
            "<label for=\"actor\">",
            "<label for=\"from\">",
            "<td data-label=\"Actor\">user:vera</td>\n      <td data-label=\"Action\">user.login</td>",
            "<td data-label=\"Actor\">token:test-admin</td>\n      <td data-label=\"Action\">cohort.create</td>\n      \
             <td data-label=\"Object\"><a href=\"/ui/cohorts/pump-x1/c-104\">cohort:pump-x1/c-104</a></td>",
            // What a creation set, field by field.
            "<li><strong>product</strong>: <code>pump-x1</code></li>",
            "href=\"/ui/audit.csv?\"",
            "at most 100 000",
            "rel=\"next\">Next page</a>",
        ],
    );
    assert!(!page.body.contains("c-003<"), "the oldest are on a later page");
    let next = &page.body[..page.body.find("\" rel=\"next\"").unwrap()];
    let next = next[next.rfind("href=\"").unwrap() + 6..].replace("&#38;", "&");
    let older = viewer.get(&next).await;
    has(&older, &["cohort:pump-x1/c-003<", "product.create", "First page"]);

    let filtered =
        viewer.get("/ui/audit?actor=token%3Atest-admin&action=cohort.&object=cohort%3Apump-x1%2Fc-007").await;
    assert_eq!(filtered.body.matches("<td data-label=\"Action\">cohort.create</td>").count(), 1, "{}", filtered.body);
    has(
        &filtered,
        &[
            "value=\"token:test-admin\"",
            "value=\"cohort.\"",
            "href=\"/ui/audit.csv?actor=token%3Atest-admin&#38;action=cohort.",
        ],
    );

    let today = app.clock_today();
    let yesterday = today.yesterday().unwrap();
    let all = viewer.get(&format!("/ui/audit?action=cohort.&from={today}&to={today}")).await;
    assert_eq!(all.body.matches("<td data-label=\"Action\">cohort.create</td>").count(), 100, "a full page");
    let none = viewer.get(&format!("/ui/audit?to={yesterday}")).await;
    has(&none, &["No entry matches."]);
    let none = viewer.get(&format!("/ui/audit?from={}T23:59", today.tomorrow().unwrap())).await;
    has(&none, &["No entry matches."]);

    let bad = viewer.get("/ui/audit?from=24%2F11%2F2026&actor=user%3Avera").await;
    assert_eq!(bad.status, 400);
    assert!(field_error(&bad, "from").contains("YYYY-MM-DD"));
    has(&bad, &["value=\"24/11/2026\"", "value=\"user:vera\"", "aria-describedby=\"from-error\""]);
    let bad = viewer.get(&format!("/ui/audit?from={today}&to={yesterday}")).await;
    assert_eq!(bad.status, 400);
    assert_eq!(field_error(&bad, "to"), "The end is before the start.");

    let res = viewer
        .client
        .get(app.url("/ui/audit.csv?action=cohort.create"))
        .header("cookie", format!("pg_session={}", viewer.session.clone().unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/csv; charset=utf-8");
    assert_eq!(res.headers()["content-disposition"], "attachment; filename=\"patchgate-audit.csv\"");
    let text = res.text().await.unwrap();
    assert!(text.starts_with("at,actor,action,object,before,after\n"), "{text}");
    assert!(text.contains(",\"{\"\"devices\"\":[],\"\"product\"\":\"\"pump-x1\"\","), "JSON quoted as CSV: {text}");
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 105, "every match, not one page");
    assert_eq!(&rows[0][1], "token:test-admin");
    assert_eq!(&rows[0][3], "cohort:pump-x1/c-104", "newest first");
    let after: Value = serde_json::from_str(&rows[0][5]).unwrap();
    assert_eq!(after["product"], "pump-x1");
    assert_eq!(&rows[0][4], "", "no state before a creation");
    assert!(rows[0][0].ends_with('Z') && rows[0][0].starts_with(&today.to_string()), "{}", &rows[0][0]);
    assert_eq!(viewer.get("/ui/audit.csv?to=tomorrow").await.status, 400);
    assert_eq!(Browser::new(&app).get("/ui/audit.csv").await.status, 303, "signed-out: to the sign-in page");
}

trait ClockToday {
    fn clock_today(&self) -> jiff::civil::Date;
}

impl ClockToday for TestApp {
    /// Today in UTC by the server's clock.
    fn clock_today(&self) -> jiff::civil::Date {
        use patchgate::clock::Clock;
        self.clock.now().to_zoned(jiff::tz::TimeZone::UTC).date()
    }
}

/// The development-keys banner is on every page of a server that signs with keys-example/, and
/// on none of one that runs on its own keys (initialised with them, online keys only).
#[tokio::test]
async fn only_a_server_on_the_development_keys_says_so_on_every_page() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::common::test_config(dir.path()).await;
    let keys = dir.path().join("own-keys");
    let run = |args: &[&str]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_patchgate"));
        for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("PATCHGATE_")) {
            cmd.env_remove(key);
        }
        cmd.args(args).env("PATCHGATE_KEYS_DIR", &keys).env("PATCHGATE_DATA_DIR", &config.data_dir);
        if let Some(url) = &config.database_url {
            cmd.env("PATCHGATE_DATABASE_URL", url);
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    run(&["keys", "generate", "--out", keys.to_str().unwrap()]);
    run(&["repo", "init"]);
    // As in production: the offline keys leave the server.
    std::fs::remove_dir_all(keys.join("offline")).unwrap();
    config.keys_dir = keys;
    let app = crate::common::spawn_app_from(dir, config, SignedDuration::ZERO).await;
    assert!(!app.services.dev_keys);
    let mut viewer = Browser::signed_in(&app, "olaf", Role::Viewer).await;
    for path in ["/ui/", "/ui/devices", "/ui/rollouts", "/ui/audit"] {
        let page = viewer.get(path).await;
        assert_eq!(page.status, 200, "{path}");
        assert!(!page.body.contains("dev-keys"), "{path}: {}", page.body);
    }
    let (dev, _, _) = halted_fleet().await;
    let mut viewer = Browser::signed_in(&dev, "olaf", Role::Viewer).await;
    for path in ["/ui/", "/ui/devices", "/ui/rollouts", "/ui/audit"] {
        let page = viewer.get(path).await;
        assert!(page.body.contains("<strong>Development keys.</strong>"), "{path}: {}", page.body);
    }
}
