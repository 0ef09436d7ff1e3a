//! The admin UI in a real browser: headless Chromium driven through ChromeDriver (WebDriver,
//! with fantoccini), against a real server on a loopback port. An admin runs a release through
//! a two-stage rollout entirely in the browser; a viewer sees every page and cannot change
//! anything, not even with a hand-made POST carrying a valid CSRF token. Screenshots of every
//! page go to `target/ui-screenshots/` (`scripts/ensure-chromium.sh` installs the browser;
//! `scripts/test.sh` runs it first).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests fail loudly by design")]

#[path = "it/common.rs"]
mod common;
#[path = "it/fleet.rs"]
#[allow(dead_code, reason = "the simulated devices' helpers that this file does not use")]
mod fleet;
#[path = "it/ui_common.rs"]
mod ui_common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use patchgate::services::auth::Role;
use serde_json::{Value, json};

use common::{TestApp, firmware, spawn_app};
use ui_common::{PASSWORD, make_user};

/// A ChromeDriver process, killed on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        drop(self.child.kill());
        drop(self.child.wait());
    }
}

async fn driver() -> Driver {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver is not installed: run scripts/ensure-chromium.sh (scripts/test.sh does)");
    // Killed and reaped on drop, whether it starts or not.
    let driver = Driver { child, url: format!("http://127.0.0.1:{port}") };
    for _ in 0..100 {
        if reqwest::get(format!("{}/status", driver.url)).await.is_ok() {
            return driver;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("chromedriver did not start on port {port}");
}

/// A browser session against one app, saving numbered screenshots.
struct Ui {
    c: Client,
    base: String,
    shots: PathBuf,
    prefix: &'static str,
    n: usize,
    _driver: Driver,
}

impl Ui {
    async fn open(app: &TestApp, prefix: &'static str, width: u32, height: u32) -> Self {
        let driver = driver().await;
        let mut caps = serde_json::Map::new();
        let mut options = json!({"binary": "/usr/bin/chromium",
               "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                        format!("--window-size={width},{height}")]});
        // Chromium's window is never narrower than about 500 px: a phone's width is emulated.
        if width < 500 {
            options["mobileEmulation"] =
                json!({"deviceMetrics": {"width": width, "height": height, "pixelRatio": 1.0}});
        }
        caps.insert("goog:chromeOptions".into(), options);
        let c = ClientBuilder::rustls().unwrap().capabilities(caps).connect(&driver.url).await.unwrap();
        let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/ui-screenshots");
        std::fs::create_dir_all(&shots).unwrap();
        Self { c, base: app.base.clone(), shots, prefix, n: 0, _driver: driver }
    }

    async fn goto(&self, path: &str) {
        self.c.goto(&format!("{}{path}", self.base)).await.unwrap();
    }

    async fn path(&self) -> String {
        let url = self.c.current_url().await.unwrap();
        match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        }
    }

    async fn wait_path(&self, prefix: &str) {
        for _ in 0..100 {
            if self.path().await.starts_with(prefix) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("never reached {prefix}; at {}: {}", self.path().await, self.source().await);
    }

    async fn source(&self) -> String {
        self.c.source().await.unwrap()
    }

    async fn fill(&self, css: &str, value: &str) {
        let el = self.c.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("{css}: {e}"));
        el.clear().await.unwrap();
        el.send_keys(value).await.unwrap();
    }

    async fn select(&self, css: &str, value: &str) {
        self.c.find(Locator::Css(css)).await.unwrap().select_by_value(value).await.unwrap();
    }

    async fn click(&self, css: &str) {
        self.c.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("{css}: {e}")).click().await.unwrap();
    }

    /// Clicks the link or button whose text is `text`.
    async fn click_text(&self, text: &str) {
        let xpath = format!("//a[normalize-space()='{text}'] | //button[normalize-space()='{text}']");
        self.c.find(Locator::XPath(&xpath)).await.unwrap_or_else(|e| panic!("{text}: {e}")).click().await.unwrap();
    }

    /// Waits (up to 10 s: a click may still be loading the next page) for `text` in the page.
    async fn expect(&self, text: &str) {
        self.wait_for(text, 10).await;
    }

    /// Waits up to `seconds` for `text` in the page, and returns the page's source then.
    async fn wait_for(&self, text: &str, seconds: u32) -> String {
        for _ in 0..seconds * 10 {
            let source = self.source().await;
            if source.contains(text) {
                return source;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let source = self.source().await;
        panic!("expected {text:?} within {seconds} s on {}:\n{source}", self.path().await);
    }

    async fn shot(&mut self, name: &str) {
        self.n += 1;
        let png = self.c.screenshot().await.unwrap();
        std::fs::write(self.shots.join(format!("{}-{:02}-{name}.png", self.prefix, self.n)), png).unwrap();
    }

    /// Screenshots of the whole page, one per window height from the top (at most six), so
    /// that what lies below the first screen is seen too.
    async fn shot_all(&mut self, name: &str) {
        let heights = self
            .c
            .execute("return [document.documentElement.scrollHeight, window.innerHeight];", vec![])
            .await
            .unwrap();
        let (total, window) = (heights[0].as_u64().unwrap(), heights[1].as_u64().unwrap().max(1));
        let screens = total.div_ceil(window).clamp(1, 6);
        for screen in 0..screens {
            let top = screen * window;
            self.c.execute(&format!("window.scrollTo(0, {top});"), vec![]).await.unwrap();
            self.shot(&format!("{name}-{}", screen + 1)).await;
        }
        self.c.execute("window.scrollTo(0, 0);", vec![]).await.unwrap();
    }

    async fn sign_in(&mut self, name: &str) {
        self.goto("/ui/").await;
        self.wait_path("/ui/login").await;
        self.fill("input[name=name]", name).await;
        self.fill("input[name=password]", PASSWORD).await;
        self.click("form button[type=submit]").await;
        self.wait_path("/ui/").await;
        self.expect(name).await;
    }
}

async fn audit(app: &TestApp) -> Vec<(String, String)> {
    let entries: Vec<Value> = app.get_json("/api/v1/audit?limit=200").await;
    entries
        .iter()
        .map(|e| (e["actor"].as_str().unwrap().to_owned(), e["action"].as_str().unwrap().to_owned()))
        .collect()
}

#[tokio::test]
async fn an_admin_runs_a_release_through_a_staged_rollout_in_the_browser() {
    let app = spawn_app().await;
    app.create_product("pump-x1", &["pump-x1-revA"]).await;
    make_user(&app, "alice", Role::Admin).await;
    let mut ui = Ui::open(&app, "admin", 1280, 900).await;

    ui.goto("/ui/").await;
    ui.wait_path("/ui/login").await;
    ui.shot("sign-in").await;
    ui.fill("input[name=name]", "alice").await;
    ui.fill("input[name=password]", "wrong password!!").await;
    ui.click("form button[type=submit]").await;
    ui.expect("Wrong user name or password.").await;
    ui.sign_in("alice").await;
    ui.shot("dashboard").await;

    // Upload a release through the form: bad input first, then the real thing.
    let file = app.dir.path().join("fw.bin");
    std::fs::write(&file, firmware(3, 256 * 1024)).unwrap();
    ui.goto("/ui/products").await;
    ui.shot("products").await;
    ui.goto("/ui/products/pump-x1").await;
    ui.fill("#upload-form input[name=version]", "one-point-oh").await;
    ui.c.find(Locator::Css("#upload-form input[name=file]"))
        .await
        .unwrap()
        .send_keys(file.to_str().unwrap())
        .await
        .unwrap();
    ui.click_text("Upload").await;
    ui.expect("field-error").await;
    ui.expect("value=\"one-point-oh\"").await;
    ui.shot("upload-bad-version").await;
    ui.fill("#upload-form input[name=version]", "1.0.0").await;
    ui.c.find(Locator::Css("#upload-form input[name=file]"))
        .await
        .unwrap()
        .send_keys(file.to_str().unwrap())
        .await
        .unwrap();
    ui.click_text("Upload").await;
    ui.wait_path("/ui/products/pump-x1/releases/1.0.0").await;
    ui.expect(&common::sha256_hex(&firmware(3, 256 * 1024))).await;
    ui.shot("release").await;

    // A cohort and an enrollment token.
    ui.goto("/ui/cohorts").await;
    ui.select("#cohort-form select[name=product]", "pump-x1").await;
    ui.fill("#cohort-form input[name=name]", "eu").await;
    ui.fill("#cohort-form input[name=tags]", "region:eu").await;
    ui.click_text("Create cohort").await;
    ui.wait_path("/ui/cohorts/pump-x1/eu").await;
    ui.shot("cohort").await;
    ui.goto("/ui/enrollment-tokens").await;
    ui.select("#token-form select[name=product]", "pump-x1").await;
    ui.fill("#token-form input[name=tags]", "region:eu").await;
    ui.fill("#token-form input[name=max_uses]", "10").await;
    ui.click_text("Create token").await;
    let token = ui.c.wait().for_element(Locator::Css("#new-token")).await.unwrap().text().await.unwrap();
    assert!(token.starts_with("pge_"), "{token}");
    ui.shot("enrollment-token").await;

    // Two devices enroll with it (the real agent library).
    for id in ["pump-0001", "pump-0002"] {
        let dir = app.dir.path().join(id);
        let (image_root, director_root) = (app.root_v1().await, director_root(&app).await);
        patchgate_agent::Agent::enroll(
            patchgate_agent::EnrollOptions {
                server: app.base.clone(),
                enrollment_token: token.clone(),
                device_id: id.into(),
                product: "pump-x1".into(),
                hardware_id: "pump-x1-revA".into(),
                image_root,
                director_root,
                state_dir: dir,
                ca_file: None,
                allow_dev_keys: true,
                running_sha256: None,
            },
            None,
        )
        .await
        .unwrap();
    }

    // A two-stage rollout: create, start, pause, resume.
    ui.goto("/ui/rollouts/new").await;
    ui.fill("#rollout-form input[name=id]", "r-ui").await;
    ui.select("#rollout-form select[name=product]", "pump-x1").await;
    ui.fill("#rollout-form input[name=version]", "1.0.0").await;
    for (i, percent) in [(1, "50"), (2, "100")] {
        ui.fill(&format!("#rollout-form input[name=stage{i}_cohort]"), "eu").await;
        ui.fill(&format!("#rollout-form input[name=stage{i}_percent]"), percent).await;
        ui.fill(&format!("#rollout-form input[name=stage{i}_soak_minutes]"), "60").await;
    }
    ui.fill("#rollout-form input[name=max_failure_rate]", "5").await;
    ui.fill("#rollout-form input[name=min_reports]", "1").await;
    ui.fill("#rollout-form input[name=stall_minutes]", "1440").await;
    ui.shot("rollout-new").await;
    ui.click_text("Create rollout").await;
    ui.wait_path("/ui/rollouts/r-ui").await;
    ui.expect("draft").await;
    for (button, confirm, state) in [
        ("Start", "Confirm start", "running"),
        ("Pause", "Confirm pause", "paused"),
        ("Resume", "Confirm resume", "running"),
    ] {
        ui.click_text(button).await;
        ui.wait_path(&format!("/ui/rollouts/r-ui/{}", button.to_lowercase())).await;
        if button == "Pause" {
            ui.shot("rollout-confirm").await;
        }
        ui.click_text(confirm).await;
        ui.wait_path("/ui/rollouts/r-ui?").await;
        ui.expect(state).await;
    }
    ui.shot("rollout").await;
    ui.goto("/ui/rollouts").await;
    ui.shot("rollouts").await;
    ui.goto("/ui/devices").await;
    ui.expect("pump-0002").await;
    ui.shot("devices").await;
    ui.goto("/ui/devices/pump-0001").await;
    ui.shot("device").await;

    // The audit log shows every change, by the user's name.
    ui.goto("/ui/audit").await;
    for action in [
        "release.publish",
        "cohort.create",
        "enrollment_token.create",
        "rollout.create",
        "rollout.start",
        "rollout.pause",
        "rollout.resume",
    ] {
        ui.expect(action).await;
    }
    ui.shot("audit").await;
    let entries = audit(&app).await;
    for action in ["release.publish", "cohort.create", "enrollment_token.create", "rollout.create", "rollout.pause"] {
        assert!(entries.contains(&("user:alice".to_owned(), action.to_owned())), "{action}: {entries:?}");
    }
    ui.goto("/ui/").await;
    ui.shot("dashboard-after").await;

    // Sign out: back to the sign-in page, and the pages need signing in again.
    ui.click_text("Sign out").await;
    ui.wait_path("/ui/login").await;
    ui.goto("/ui/rollouts").await;
    ui.wait_path("/ui/login").await;
    ui.c.clone().close().await.unwrap();
}

async fn director_root(app: &TestApp) -> Vec<u8> {
    app.client.get(app.url("/director/metadata/1.root.json")).send().await.unwrap().bytes().await.unwrap().to_vec()
}

#[tokio::test]
async fn a_viewer_sees_every_page_at_tablet_width_and_changes_nothing() {
    let app = spawn_app().await;
    app.create_product("pump-x1", &["pump-x1-revA"]).await;
    app.publish("pump-x1", "1.0.0", "fw.bin", firmware(4, 4096)).await;
    let res = app
        .client
        .post(app.url("/api/v1/cohorts"))
        .bearer_auth(&app.admin)
        .json(&json!({"name": "eu", "product": "pump-x1", "selector": {"tags": ["region:eu"]}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    make_user(&app, "val", Role::Viewer).await;
    let mut ui = Ui::open(&app, "viewer", 800, 1100).await;
    ui.sign_in("val").await;
    ui.expect("(viewer)").await;
    for (path, name, change) in [
        ("/ui/", "dashboard", "Sign out"),
        ("/ui/products/pump-x1", "product", "upload-form"),
        ("/ui/products/pump-x1/releases/1.0.0", "release", "upload-form"),
        ("/ui/cohorts", "cohorts", "cohort-form"),
        ("/ui/enrollment-tokens", "tokens", "token-form"),
        ("/ui/rollouts", "rollouts", "/ui/rollouts/new"),
        ("/ui/devices", "devices", "confirm-form"),
        ("/ui/audit", "audit", "confirm-form"),
    ] {
        ui.goto(path).await;
        ui.wait_path(path).await;
        let source = ui.source().await;
        if change != "Sign out" {
            assert!(!source.contains(change), "a viewer is offered {change} on {path}");
        }
        ui.shot(name).await;
    }
    // A hand-made POST with the viewer's valid CSRF token: refused, nothing created.
    let status =
        ui.c.execute_async(
            r#"const done = arguments[arguments.length - 1];
               const csrf = document.querySelector('input[name=csrf]').value;
               fetch('/ui/cohorts', {method: 'POST', credentials: 'same-origin',
                     body: new URLSearchParams({csrf, product: 'pump-x1', name: 'sneaky', tags: 'region:us'})})
                 .then(r => done(r.status));"#,
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(status, json!(403));
    let res = app.client.get(app.url("/api/v1/cohorts/pump-x1/sneaky")).bearer_auth(&app.admin).send().await.unwrap();
    assert_eq!(res.status(), 404, "the viewer's POST created nothing");
    ui.goto("/ui/rollouts/new").await;
    ui.expect("403").await;
    ui.c.clone().close().await.unwrap();
}

/// Three devices `lab-0..2` of pump-x1 on 1.0.0 and rollout `id` of 1.1.0 to all of them in one
/// stage (gate `max_failure_rate`, one report enough), started; none has reported since.
async fn lab_rollout(id: &str, max_failure_rate: f64) -> (TestApp, Vec<fleet::Device>, fleet::Image) {
    use fleet::{Device, Image, enrollment_token};
    let app = spawn_app().await;
    app.create_product("pump-x1", &["hw"]).await;
    let old = Image::from_publish(&app.publish("pump-x1", "1.0.0", "fw.bin", firmware(1, 512)).await);
    let new = Image::from_publish(&app.publish("pump-x1", "1.1.0", "fw.bin", firmware(2, 512)).await);
    let token = enrollment_token(&app, "pump-x1", &["lab"], 10).await;
    let mut devices = Vec::new();
    for i in 0..3 {
        let mut d = Device::enroll(&app, &format!("lab-{i}"), "pump-x1", "hw", &token).await;
        d.installed = Some(old.clone());
        devices.push(d);
    }
    app.post_json("/api/v1/cohorts", &json!({"name": "lab", "product": "pump-x1", "selector": {"tags": ["lab"]}}))
        .await;
    app.post_json(
        "/api/v1/rollouts",
        &json!({"id": id, "product": "pump-x1", "version": "1.1.0",
        "stages": [{"cohort": "lab", "percent": 100, "soak_minutes": 60}],
        "gate": {"max_failure_rate": max_failure_rate, "min_reports": 1, "stall_minutes": 1440}}),
    )
    .await;
    app.post_json(&format!("/api/v1/rollouts/{id}/start"), &json!({})).await;
    (app, devices, new)
}

/// An operator's first question about a halted rollout, answered in two clicks: the halt
/// notice links to the devices that failed, listed with what each said, and a click on one
/// shows the device with its error.
#[tokio::test]
async fn a_halted_rollout_leads_to_a_failing_device_and_its_error_in_two_clicks() {
    use patchgate_protocol::report::AttemptState;
    let (app, mut devices, new) = lab_rollout("r-halt", 0.25).await;
    for d in &mut devices {
        d.report(&app, None).await;
    }
    devices[0].report(&app, Some((&new, AttemptState::Installed))).await;
    devices[1].report_saying(&app, Some((&new, AttemptState::Failed)), Some("flash write failed at block 7")).await;
    assert_eq!(app.get_json::<Value>("/api/v1/rollouts/r-halt").await["state"], "halted");

    make_user(&app, "olga", Role::Viewer).await;
    for (prefix, width, height) in [("halted", 1280, 900), ("halted-phone", 390, 844)] {
        let mut ui = Ui::open(&app, prefix, width, height).await;
        ui.sign_in("olga").await;
        ui.goto("/ui/rollouts/r-halt").await;
        ui.expect("Why it halted").await;
        ui.shot("rollout").await;
        ui.click_text("See the failed devices and their errors").await;
        ui.wait_path("/ui/devices?rollout=r-halt&outcome=failed").await;
        ui.expect("flash write failed at block 7").await;
        let listed = ui.source().await;
        assert!(listed.contains("1 device failed in rollout"), "{listed}");
        assert!(!listed.contains("lab-0") && !listed.contains("lab-2"), "only the failed device is listed");
        // The filters fold away once set, so the failed device comes first on a phone too.
        let (folded, top, height) = serde_json::from_value::<(bool, f64, f64)>(
            ui.c.execute(
                "return [!document.querySelector('details.filter-box').open, \
                         document.querySelector('a[href=\"/ui/devices/lab-1\"]').getBoundingClientRect().top, \
                         window.innerHeight];",
                vec![],
            )
            .await
            .unwrap(),
        )
        .unwrap();
        assert!(folded, "{prefix}: the filters are set, so they are folded");
        assert!(top < height, "{prefix}: the failed device is at {top} px, below the first screen ({height} px)");
        ui.shot("failed-devices").await;
        ui.click_text("lab-1").await;
        ui.wait_path("/ui/devices/lab-1").await;
        ui.expect("flash write failed at block 7").await;
        ui.shot("device").await;
        ui.c.clone().close().await.unwrap();
    }
}

/// On a release's page: clicks `button`, checks and shows its confirmation page, confirms, and
/// waits for the release page to say `done`.
async fn review(ui: &mut Ui, version: &str, (button, action): (&str, &str), done: &str) {
    ui.click_text(button).await;
    ui.wait_path(&format!("/ui/products/pump-x1/releases/{version}/{action}")).await;
    ui.expect("What will happen").await;
    ui.shot(&format!("{action}-confirm")).await;
    ui.click_text(&format!("Confirm {action}")).await;
    let notice = if action == "approve" { "approved" } else { "yanked" };
    ui.wait_path(&format!("/ui/products/pump-x1/releases/{version}?notice={notice}")).await;
    ui.expect(done).await;
    ui.shot(notice).await;
}

/// A release manager approves one release and yanks another, at desktop and at phone width, by
/// clicking through the release page and its confirmation; a viewer is shown neither button,
/// sees an approval made elsewhere within one refresh, and the confirmation page refuses them.
#[tokio::test]
async fn a_release_manager_approves_and_yanks_in_the_browser_and_a_viewer_cannot() {
    let app = spawn_app().await;
    app.post_json("/api/v1/products", &json!({"name": "pump-x1", "hardware_ids": ["hw"], "two_person_approval": true}))
        .await;
    for (i, version) in ["1.0.0", "1.1.0", "1.2.0", "1.3.0"].into_iter().enumerate() {
        app.publish("pump-x1", version, "fw.bin", firmware(i as u8 + 1, 512)).await;
    }
    make_user(&app, "rita", Role::ReleaseManager).await;
    make_user(&app, "olga", Role::Viewer).await;
    for (prefix, width, height, approve, yank) in
        [("review", 1280, 900, "1.0.0", "1.1.0"), ("review-phone", 390, 844, "1.2.0", "1.3.0")]
    {
        let mut ui = Ui::open(&app, prefix, width, height).await;
        ui.sign_in("rita").await;
        ui.goto(&format!("/ui/products/pump-x1/releases/{approve}")).await;
        ui.expect("awaiting approval").await;
        ui.shot("release").await;
        review(&mut ui, approve, ("Approve", "approve"), "approved by user:rita").await;
        // Now it can be rolled out: the link opens the form with the release chosen.
        ui.click_text("Roll out this release").await;
        ui.wait_path(&format!("/ui/rollouts/new?product=pump-x1&version={approve}")).await;
        ui.shot("rollout-new").await;
        ui.goto(&format!("/ui/products/pump-x1/releases/{yank}")).await;
        review(&mut ui, yank, ("Yank", "yank"), "Yanked by user:rita").await;
        ui.c.clone().close().await.unwrap();

        let approved: Value = app.get_json(&format!("/api/v1/products/pump-x1/releases/{approve}")).await;
        assert_eq!(approved["approved_by"], "user:rita", "{approved}");
        let yanked: Value = app.get_json(&format!("/api/v1/products/pump-x1/releases/{yank}")).await;
        assert_eq!(yanked["yanked"], true, "{yanked}");
    }
    let listed: Value = app.get_json("/api/v1/products/pump-x1/role").await;
    let listed: Vec<&String> = listed["signed"]["targets"].as_object().unwrap().keys().collect();
    assert_eq!(listed, ["pump-x1/1.0.0/fw.bin", "pump-x1/1.2.0/fw.bin"]);

    // A viewer, on a release awaiting approval: no button, and the confirmation page refuses.
    app.publish("pump-x1", "1.4.0", "fw.bin", firmware(9, 512)).await;
    let mut ui = Ui::open(&app, "review-viewer", 390, 844).await;
    ui.sign_in("olga").await;
    ui.goto("/ui/products/pump-x1/releases/1.4.0").await;
    ui.expect("awaiting approval").await;
    let page = ui.source().await;
    assert!(!page.contains("/1.4.0/approve") && !page.contains("/1.4.0/yank"), "{page}");
    assert!(!page.contains("Roll out this release"), "{page}");
    ui.shot("release").await;
    // The open page follows an approval made elsewhere within one refresh (15 s).
    let manager = app.token(Role::ReleaseManager, None).await;
    let res = app.client.post(app.url("/api/v1/products/pump-x1/releases/1.4.0/approve")).bearer_auth(&manager);
    assert_eq!(res.send().await.unwrap().status(), 200);
    for _ in 0..200 {
        if ui.source().await.contains("approved by token:") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ui.expect("approved by token:").await;
    ui.goto("/ui/products/pump-x1/releases/1.4.0/yank").await;
    ui.expect("The viewer role may not do this.").await;
    ui.shot("refused").await;
    ui.c.clone().close().await.unwrap();
    let untouched: Value = app.get_json("/api/v1/products/pump-x1/releases/1.4.0").await;
    assert_eq!(untouched["yanked"], false, "{untouched}");
    let actions = audit(&app).await;
    assert!(!actions.iter().any(|(who, what)| who == "user:olga" && what != "user.login"), "{actions:?}");
}

/// At phone width (390 px), and at 1280 px, no page scrolls sideways: wide tables scroll inside
/// their own box or become one card per row, long ids and hashes wrap. Measured on every page
/// with its content, as an admin (who sees every control), and each page is shot whole at both
/// widths (`phone-*`, `desk-*`).
#[tokio::test]
async fn no_page_scrolls_sideways_at_phone_width() {
    use fleet::{Device, Image, enrollment_token};
    let app = spawn_app().await;
    app.create_product("pump-x1", &["pump-x1-revA"]).await;
    let old = Image::from_publish(&app.publish("pump-x1", "1.0.0", "fw.bin", firmware(1, 512)).await);
    app.publish("pump-x1", "1.1.0", "fw.bin", firmware(2, 512)).await;
    let token = enrollment_token(&app, "pump-x1", &["region:eu"], 10).await;
    let mut device =
        Device::enroll(&app, "pump-x1-ward-7-bed-12-serial-0123456789abcdef", "pump-x1", "pump-x1-revA", &token).await;
    device.installed = Some(old);
    app.post_json("/api/v1/cohorts", &json!({"name": "eu", "product": "pump-x1", "selector": {"tags": ["region:eu"]}}))
        .await;
    app.post_json("/api/v1/rollouts", &json!({"id": "r-phone", "product": "pump-x1", "version": "1.1.0",
        "stages": [{"cohort": "eu", "percent": 10, "soak_minutes": 60}, {"cohort": "eu", "percent": 100, "soak_minutes": 60}],
        "gate": {"max_failure_rate": 0.05, "min_reports": 1, "stall_minutes": 1440}}))
        .await;
    app.post_json("/api/v1/rollouts/r-phone/start", &json!({})).await;
    device.report(&app, None).await;

    make_user(&app, "pia", Role::Admin).await;
    for (prefix, width, height) in [("desk", 1280, 900), ("phone", 390, 844)] {
        let mut ui = Ui::open(&app, prefix, width, height).await;
        ui.sign_in("pia").await;
        let too_wide = every_page(&mut ui).await;
        assert!(too_wide.is_empty(), "pages that scroll sideways at {width} px: {too_wide:#?}");
        if width < 500 {
            // The stage table is stacked: each stage a card, its progress and gate above its cohort.
            ui.goto("/ui/rollouts/r-phone").await;
            ui.wait_path("/ui/rollouts/r-phone").await;
            let stacked =
                ui.c.execute(
                    "var tr = document.querySelector('table.stacked tbody tr'); \
                     var top = function (css) { return tr.querySelector(css).getBoundingClientRect().top; }; \
                     return [getComputedStyle(tr).display, \
                             top('td[data-label=Progress]') < top('td[data-label=Cohort]'), \
                             top('td[data-label=Gate]') < top('td[data-label=Cohort]')];",
                    vec![],
                )
                .await
                .unwrap();
            assert_eq!(stacked, json!(["flex", true, true]), "the stage table at phone width");
        }
        ui.c.clone().close().await.unwrap();
    }
}

/// Visits every page (of the fleet `no_page_scrolls_sideways_at_phone_width` sets up), shoots
/// each whole, and returns those wider than the window.
async fn every_page(ui: &mut Ui) -> Vec<String> {
    let mut too_wide = Vec::new();
    for (path, name) in [
        ("/ui/", "dashboard"),
        ("/ui/products", "products"),
        ("/ui/products/pump-x1", "product"),
        ("/ui/products/pump-x1/releases/1.0.0", "release"),
        ("/ui/products/pump-x1/releases/1.1.0/yank", "release-yank-confirm"),
        ("/ui/products/pump-x1/releases/1.1.0/approve", "release-approve-confirm"),
        ("/ui/cohorts", "cohorts"),
        ("/ui/cohorts/pump-x1/eu", "cohort"),
        ("/ui/enrollment-tokens", "tokens"),
        ("/ui/rollouts", "rollouts"),
        ("/ui/rollouts/new", "rollout-new"),
        ("/ui/rollouts/r-phone", "rollout"),
        ("/ui/rollouts/r-phone/pause", "rollout-confirm"),
        ("/ui/devices", "devices"),
        ("/ui/devices/pump-x1-ward-7-bed-12-serial-0123456789abcdef", "device"),
        ("/ui/devices/pump-x1-ward-7-bed-12-serial-0123456789abcdef/decommission", "device-decommission"),
        ("/ui/audit", "audit"),
    ] {
        ui.goto(path).await;
        ui.wait_path(path).await;
        let widths = ui
            .c
            .execute("return [document.documentElement.scrollWidth, document.documentElement.clientWidth];", vec![])
            .await
            .unwrap();
        let (scroll, client) = (widths[0].as_u64().unwrap(), widths[1].as_u64().unwrap());
        if scroll > client {
            too_wide.push(format!("{path}: {scroll} px wide in a {client} px window"));
        }
        ui.shot_all(name).await;
    }
    too_wide
}

/// What changes elsewhere shows on an open page within one refresh: a rollout paused through
/// the API turns the open rollout page's badge to "paused" and its buttons to Resume, resumed
/// back to "running" and Pause, and the stamp says when the page was brought up to date.
#[tokio::test]
async fn an_open_rollout_page_follows_a_pause_and_a_resume_made_elsewhere_within_one_refresh() {
    let app = spawn_app().await;
    app.create_product("pump-x1", &["pump-x1-revA"]).await;
    app.publish("pump-x1", "1.0.0", "fw.bin", firmware(5, 512)).await;
    app.post_json("/api/v1/cohorts", &json!({"name": "eu", "product": "pump-x1", "selector": {"tags": ["region:eu"]}}))
        .await;
    app.post_json(
        "/api/v1/rollouts",
        &json!({"id": "r-live", "product": "pump-x1", "version": "1.0.0",
        "stages": [{"cohort": "eu", "percent": 100, "soak_minutes": 60}],
        "gate": {"max_failure_rate": 0.05, "min_reports": 1, "stall_minutes": 1440}}),
    )
    .await;
    app.post_json("/api/v1/rollouts/r-live/start", &json!({})).await;
    make_user(&app, "lena", Role::Admin).await;
    let mut ui = Ui::open(&app, "live", 1280, 900).await;
    ui.sign_in("lena").await;
    ui.goto("/ui/rollouts/r-live").await;
    ui.expect("Updated at ").await;
    let before = ui.source().await;
    assert!(before.contains("badge-ok\">running</span>") && before.contains(">Pause</a>"), "{before}");

    app.post_json("/api/v1/rollouts/r-live/pause", &json!({})).await;
    // One refresh period is 15 s; allow one more.
    let source = ui.wait_for(">paused</span>", 30).await;
    assert!(
        source.contains(">Resume</a>") && !source.contains(">Pause</a>"),
        "the buttons follow the state:\n{source}"
    );
    ui.shot("rollout-paused-elsewhere").await;

    // Resumed elsewhere (as from the CLI): "running" with Pause again, within one refresh.
    app.post_json("/api/v1/rollouts/r-live/resume", &json!({})).await;
    let source = ui.wait_for("badge-ok\">running</span>", 30).await;
    assert!(
        source.contains(">Pause</a>") && !source.contains(">Resume</a>"),
        "the buttons follow the state:\n{source}"
    );
    ui.shot("rollout-resumed-elsewhere").await;
    ui.c.clone().close().await.unwrap();
}

/// An operator's day in the browser, one numbered point of the console review each: a started
/// rollout whose devices have not reported yet warns instead of looking healthy (6); a device
/// that keeps failing is one row on the dashboard with its count (2); the rollback
/// confirmation counts the devices it sends back and to which version and takes a reason, and
/// an action the state no longer allows cannot be confirmed (5); the audit log shows the change
/// as before → after with the reason, linked to the rollout (8).
#[tokio::test]
async fn an_operator_sees_a_stuck_rollout_a_failing_device_once_and_rolls_back_with_a_reason() {
    use patchgate_protocol::report::AttemptState;
    let (app, mut devices, new) = lab_rollout("r-ops", 0.9).await;
    make_user(&app, "otto", Role::Admin).await;
    let mut ui = Ui::open(&app, "operator", 1280, 900).await;
    ui.sign_in("otto").await;

    // (6) Started, three devices eligible, none has reported since: a warning, not green.
    ui.goto("/ui/rollouts/r-ops").await;
    ui.expect("badge badge-warn\">nothing assigned yet</span>").await;
    ui.expect("No device is assigned yet").await;
    assert!(!ui.source().await.contains("within gate"), "nothing to judge is not green");
    ui.shot("nothing-assigned").await;

    // (2) lab-0 installs; lab-1 fails three times over, the same message each time.
    for d in &mut devices {
        d.report(&app, None).await;
    }
    devices[0].report(&app, Some((&new, AttemptState::Installed))).await;
    for _ in 0..3 {
        devices[1].report(&app, Some((&new, AttemptState::Downloading))).await;
        devices[1].report_saying(&app, Some((&new, AttemptState::Failed)), Some("install hook exited with 3")).await;
    }
    ui.goto("/ui/").await;
    ui.expect("install hook exited with 3").await;
    let rows =
        ui.c.execute(
            "return Array.from(document.querySelectorAll('[data-live=problems] tbody tr')) \
               .map(function (tr) { return tr.innerText.replace(/\\s+/g, ' ').trim(); });",
            vec![],
        )
        .await
        .unwrap();
    let rows: Vec<String> = serde_json::from_value(rows).unwrap();
    assert_eq!(rows.len(), 1, "one row per failing device: {rows:?}");
    assert!(rows[0].starts_with("lab-1 failed") && rows[0].contains(" 3 since "), "{rows:?}");
    ui.shot("failures-by-device").await;

    // (5) Roll back: how many devices go back, to which version; a reason, kept.
    ui.goto("/ui/rollouts/r-ops").await;
    ui.click_text("Roll back").await;
    ui.wait_path("/ui/rollouts/r-ops/rollback").await;
    ui.expect("1 device installed this release or is installing it. Going back: 1 to 1.0.0.").await;
    ui.fill("#note", "lab-1 fails its install hook: INC-4711").await;
    ui.shot("rollback-confirm").await;
    ui.click("#confirm-form button[type=submit]").await;
    ui.wait_path("/ui/rollouts/r-ops?notice=rolled_back").await;
    let state = app.get_json::<Value>("/api/v1/rollouts/r-ops").await["state"].clone();
    assert_ne!(state, "running", "the rollback took effect");
    // Pausing is no longer possible: said, and the button cannot be pressed.
    ui.goto("/ui/rollouts/r-ops/pause").await;
    ui.expect("it cannot pause now").await;
    let button = ui.c.find(Locator::Css("#confirm-form button[type=submit]")).await.unwrap();
    assert!(!button.is_enabled().await.unwrap(), "Confirm pause is off on a {state} rollout");

    // (8) The audit log: the state's before → after, the reason, a link to the rollout.
    ui.goto("/ui/audit?action=rollout.rollback").await;
    ui.expect("INC-4711").await;
    let entry =
        ui.c.execute(
            "var tr = document.querySelector('table tbody tr'); \
             return [tr.innerText.replace(/\\s+/g, ' '), !!tr.querySelector('a[href=\"/ui/rollouts/r-ops\"]')];",
            vec![],
        )
        .await
        .unwrap();
    let text = entry[0].as_str().unwrap();
    assert!(text.contains("state: running → "), "{text}");
    assert!(text.contains("lab-1 fails its install hook: INC-4711"), "{text}");
    assert_eq!(entry[1], json!(true), "the entry links to the rollout: {text}");
    ui.shot("audit-rollback").await;
    ui.c.clone().close().await.unwrap();
}
