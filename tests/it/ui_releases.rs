//! Admin UI: products and releases (upload form), cohorts, enrollment tokens. Pages render for
//! a viewer without change buttons; changes work for the right role and are audited as
//! `user:NAME`; bad input is answered next to its field with what was typed kept; a POST
//! without the CSRF token, or a viewer's with it, changes nothing.

use patchgate::services::auth::Role;
use reqwest::header::COOKIE;
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};

use crate::common::{TestApp, firmware, sha256_hex, spawn_app, spawn_app_with};
use crate::fleet::{Device, enrollment_token};
use crate::ui_common::{Browser, Page, audit_actions, has};

const PRODUCT: &str = "pump-x1";
const HW: &str = "pump-x1-rev-a";

async fn app_with_product() -> TestApp {
    let app = spawn_app().await;
    app.create_product(PRODUCT, &[HW]).await;
    app
}

/// The upload form's fields after whatever `form` holds already (the CSRF token, in a browser).
fn upload_form(version: &str, notes: &str, file_name: &str, content: Vec<u8>) -> impl FnOnce(Form) -> Form + use<> {
    let part = Part::bytes(content).file_name(file_name.to_owned());
    let (version, notes) = (version.to_owned(), notes.to_owned());
    move |form: Form| form.text("version", version).text("notes", notes).part("file", part)
}

/// Posts a multipart form with the browser's session but no CSRF token added.
async fn upload_raw(browser: &Browser, path: &str, form: Form) -> u16 {
    let cookie = format!("pg_session={}", browser.session.as_deref().unwrap());
    let res = browser.client.post(format!("{}{path}", browser.base)).header(COOKIE, cookie).multipart(form);
    res.send().await.unwrap().status().as_u16()
}

async fn releases(app: &TestApp) -> Vec<String> {
    let list: Vec<Value> = app.get_json(&format!("/api/v1/products/{PRODUCT}/releases")).await;
    list.iter().map(|r| r["version"].as_str().unwrap().to_owned()).collect()
}

async fn audited(app: &TestApp, action: &str) -> Vec<(String, String)> {
    audit_actions(app).await.into_iter().filter(|(_, a, _)| a == action).map(|(who, _, what)| (who, what)).collect()
}

fn assert_field_error(page: &Page, field: &str, text: &str) {
    let marker = format!("<p class=\"field-error\" id=\"{field}-error\">");
    let at = page.body.find(&marker).unwrap_or_else(|| panic!("no error for {field}: {}", page.body));
    let rest = &page.body[at..];
    assert!(rest[..rest.find("</p>").unwrap()].contains(text), "{field}: {}", &rest[..rest.find("</p>").unwrap()]);
    assert!(page.body.contains(&format!("aria-describedby=\"{field}-error")), "{field} error is announced");
}

#[tokio::test]
async fn ui_products_and_releases_render_for_a_viewer_without_change_buttons() {
    let app = app_with_product().await;
    let first = app.publish(PRODUCT, "1.9.0", "fw.bin", firmware(1, 2048)).await;
    app.publish(PRODUCT, "1.10.0", "fw.bin", firmware(2, 3000)).await;
    let cohort = json!({"name": "eu", "product": PRODUCT, "selector": {"tags": ["region:eu"]}});
    let res = app.client.post(app.url("/api/v1/cohorts")).bearer_auth(&app.admin).json(&cohort).send().await.unwrap();
    assert_eq!(res.status(), 201);
    let rollout = json!({"id": "r-ui-1", "product": PRODUCT, "version": "1.10.0",
        "stages": [{"cohort": "eu", "percent": 10, "soak_minutes": 0}],
        "gate": {"max_failure_rate": 0.5, "min_reports": 1, "stall_minutes": 60}});
    let res = app.client.post(app.url("/api/v1/rollouts")).bearer_auth(&app.admin).json(&rollout).send().await.unwrap();
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());

    let mut viewer = Browser::signed_in(&app, "vera", Role::Viewer).await;
    let list = viewer.get("/ui/products").await;
    assert_eq!(list.status, 200);
    for expected in
        ["href=\"/ui/products/pump-x1\"", HW, "server-signed (weaker)", "<td class=\"num\">2</td>", "1.10.0"]
    {
        assert!(list.body.contains(expected), "{expected}: {}", list.body);
    }
    let product = viewer.get("/ui/products/pump-x1").await;
    assert_eq!(product.status, 200);
    assert!(product.body.contains("href=\"/ui/products/pump-x1/releases/1.9.0\""), "{}", product.body);
    assert!(
        product.body.contains("pump-x1/1.10.0/fw.bin")
            && product.body.contains("<td class=\"num\" data-label=\"Length (bytes)\">3000</td>")
    );
    assert!(!product.body.contains("upload-form") && !product.body.contains(">Upload<"), "no upload for a viewer");

    let release = viewer.get("/ui/products/pump-x1/releases/1.10.0").await;
    assert_eq!(release.status, 200);
    let sha512 = app.get_json::<Value>("/api/v1/products/pump-x1/releases/1.10.0").await["target"]["hashes"]["sha512"]
        .as_str()
        .unwrap()
        .to_owned();
    let products: Vec<Value> = app.get_json("/api/v1/products").await;
    let keyid = products[0]["keyid"].as_str().unwrap().to_owned();
    for expected in [
        format!("<code>{}</code>", sha256_hex(&firmware(2, 3000))),
        format!("<code>{sha512}</code>"),
        "server-signed (weaker)".to_owned(),
        "href=\"/ui/rollouts/r-ui-1\"".to_owned(),
        "<span class=\"badge badge-muted\">draft</span>".to_owned(),
        format!("<code>{keyid}</code>"),
    ] {
        assert!(release.body.contains(&expected), "{expected}: {}", release.body);
    }
    let older = viewer.get("/ui/products/pump-x1/releases/1.9.0").await;
    assert!(older.body.contains(first["target"]["hashes"]["sha256"].as_str().unwrap()));
    assert!(older.body.contains("not part of any rollout"), "{}", older.body);
    assert_eq!(viewer.get("/ui/products/nope").await.status, 404);
    assert_eq!(viewer.get("/ui/products/pump-x1/releases/9.9.9").await.status, 404);
}

#[tokio::test]
async fn ui_publishing_through_the_upload_form_is_signed_and_audited() {
    let app = app_with_product().await;
    let mut publisher = Browser::signed_in(&app, "pat", Role::Publisher).await;
    let page = publisher.get("/ui/products/pump-x1").await;
    for expected in [
        "<form id=\"upload-form\" method=\"post\" action=\"/ui/products/pump-x1/releases\" enctype=\"multipart/form-data\" data-upload",
        "<label for=\"version\">",
        "<label for=\"rollback_floor\">",
        "<label for=\"notes\">",
        "<label for=\"file\">",
        "<progress hidden",
        "data-upload-status aria-live=\"polite\"",
        ">Upload</button>",
    ] {
        assert!(page.body.contains(expected), "{expected}: {}", page.body);
    }
    let fields = upload_form("1.2.0", "Fixes the flow sensor.", "fw-1.2.0.bin", firmware(3, 5000));
    let form = move |f: Form| fields(f.text("rollback_floor", "1.1.0"));
    let done = publisher.upload("/ui/products/pump-x1", "/ui/products/pump-x1/releases", form).await;
    assert_eq!(done.status, 303, "{}", done.body);
    assert_eq!(done.location.as_deref(), Some("/ui/products/pump-x1/releases/1.2.0?notice=published"));
    let shown = publisher.get(done.location.as_deref().unwrap()).await;
    assert!(shown.body.contains("The release is published"), "{}", shown.body);
    assert!(shown.body.contains("Fixes the flow sensor.") && shown.body.contains("<dd>1.1.0</dd>"));
    assert!(shown.body.contains(&sha256_hex(&firmware(3, 5000))));
    assert!(shown.body.contains("user:pat"), "published by the user");
    assert_eq!(releases(&app).await, ["1.2.0"]);
    assert_eq!(
        audited(&app, "release.publish").await,
        [("user:pat".into(), "release:pump-x1/1.2.0/fw-1.2.0.bin".into())]
    );
    // The signed metadata lists it.
    let role: Value = app.metadata("2.pump-x1.json").await.json().await.unwrap();
    assert!(role["signed"]["targets"]["pump-x1/1.2.0/fw-1.2.0.bin"].is_object(), "{role}");
    // A notice code that is not in the map is not echoed.
    let odd = publisher.get("/ui/products/pump-x1/releases/1.2.0?notice=%3Cb%3Ehi").await;
    assert!(!odd.body.contains("&lt;b&gt;hi") && !odd.body.contains("<b>hi"));
}

#[tokio::test]
async fn ui_upload_refuses_bad_input_next_to_the_field_and_keeps_it() {
    let app = spawn_app_with(|c| c.max_upload_bytes = 10_000).await;
    app.create_product(PRODUCT, &[HW]).await;
    app.publish(PRODUCT, "1.0.0", "fw.bin", firmware(1, 1000)).await;
    let mut publisher = Browser::signed_in(&app, "pat", Role::Publisher).await;
    let path = "/ui/products/pump-x1/releases";

    let bad = publisher
        .upload("/ui/products/pump-x1", path, upload_form("1.2", "my notes", "fw.bin", firmware(4, 100)))
        .await;
    assert_eq!(bad.status, 400);
    assert_field_error(&bad, "version", "not a semantic version");
    assert!(bad.body.contains("value=\"1.2\"") && bad.body.contains(">my notes</textarea>"), "typed values kept");

    let no_file =
        |f: Form| f.text("version", "1.3.0").text("notes", "").part("file", Part::bytes(Vec::new()).file_name(""));
    let page = publisher.upload("/ui/products/pump-x1", path, no_file).await;
    assert_eq!(page.status, 400);
    assert_field_error(&page, "file", "Choose the firmware file");
    assert!(page.body.contains("value=\"1.3.0\""));

    let floor_fields = upload_form("1.3.0", "", "fw.bin", firmware(5, 100));
    let floor = move |f: Form| floor_fields(f.text("rollback_floor", "2.0.0"));
    let page = publisher.upload("/ui/products/pump-x1", path, floor).await;
    assert_eq!(page.status, 400);
    assert_field_error(&page, "rollback_floor", "above the release version");
    assert!(page.body.contains("value=\"2.0.0\""));

    let other =
        publisher.upload("/ui/products/pump-x1", path, upload_form("1.0.0", "again", "fw.bin", firmware(6, 100))).await;
    assert_eq!(other.status, 409);
    assert_field_error(&other, "version", "already published with different content");
    assert!(other.body.contains("notice notice-error") && other.body.contains(">again</textarea>"));

    let huge =
        publisher.upload("/ui/products/pump-x1", path, upload_form("1.4.0", "", "fw.bin", firmware(7, 20_000))).await;
    assert_eq!(huge.status, 413);
    assert_field_error(&huge, "file", "larger than the limit of 10000 bytes");

    let name =
        publisher.upload("/ui/products/pump-x1", path, upload_form("1.4.0", "", "my fw.bin", firmware(7, 10))).await;
    assert_eq!(name.status, 400);
    assert_field_error(&name, "file", "Rename the file");

    assert_eq!(releases(&app).await, ["1.0.0"], "nothing was published");
    assert!(audited(&app, "release.publish").await.iter().all(|(who, _)| !who.starts_with("user:")));
}

#[tokio::test]
async fn ui_upload_without_csrf_or_by_a_viewer_changes_nothing() {
    let app = app_with_product().await;
    let mut publisher = Browser::signed_in(&app, "pat", Role::Publisher).await;
    let path = "/ui/products/pump-x1/releases";
    assert_eq!(
        upload_raw(&publisher, path, upload_form("1.0.0", "", "fw.bin", firmware(1, 100))(Form::new())).await,
        403
    );
    let forged = upload_form("1.0.0", "", "fw.bin", firmware(1, 100))(Form::new().text("csrf", "forged"));
    assert_eq!(upload_raw(&publisher, path, forged).await, 403);
    // Even the publisher's own valid token, if it comes after the file: nothing is stored.
    let csrf = publisher.get("/ui/products/pump-x1").await.csrf();
    let late = upload_form("1.0.0", "", "fw.bin", firmware(1, 100))(Form::new()).text("csrf", csrf);
    assert_eq!(upload_raw(&publisher, path, late).await, 403);
    // A viewer with its own valid token: refused too.
    let mut viewer = Browser::signed_in(&app, "vera", Role::Viewer).await;
    let refused =
        viewer.upload("/ui/products/pump-x1", path, upload_form("1.0.0", "", "fw.bin", firmware(1, 100))).await;
    assert_eq!(refused.status, 403);
    // Not signed in: to the sign-in page.
    let anon = Browser::new(&app);
    let res =
        anon.client.post(app.url(path)).multipart(upload_form("1.0.0", "", "fw.bin", firmware(1, 100))(Form::new()));
    assert_eq!(res.send().await.unwrap().status(), 303);
    assert!(releases(&app).await.is_empty());
    assert!(audited(&app, "release.publish").await.is_empty());
    // The same publisher with the token succeeds (the refusals above were about the token).
    let ok = publisher.upload("/ui/products/pump-x1", path, upload_form("1.0.0", "", "fw.bin", firmware(1, 100))).await;
    assert_eq!(ok.status, 303);
}

async fn enroll_tagged(app: &TestApp, tag: &str, ids: &[&str]) {
    let token = enrollment_token(app, PRODUCT, &[tag], 10).await;
    for id in ids {
        Device::enroll(app, id, PRODUCT, HW, &token).await;
    }
}

#[tokio::test]
async fn ui_cohorts_are_created_edited_counted_and_audited() {
    let app = app_with_product().await;
    enroll_tagged(&app, "region:eu", &["pump-eu-1", "pump-eu-2"]).await;
    enroll_tagged(&app, "region:us", &["pump-us-1"]).await;
    let mut manager = Browser::signed_in(&app, "mia", Role::ReleaseManager).await;
    let page = manager.get("/ui/cohorts").await;
    for expected in [
        "<form id=\"cohort-form\" method=\"post\" action=\"/ui/cohorts\"",
        "<label for=\"product\">",
        "<option value=\"pump-x1\"",
        "<label for=\"name\">",
        "<label for=\"tags\">",
        "<label for=\"members\">",
        ">Create cohort</button>",
    ] {
        assert!(page.body.contains(expected), "{expected}: {}", page.body);
    }
    let fields =
        [("product", PRODUCT), ("name", "eu-pilot"), ("tags", "region:eu"), ("members", "pump-us-1, pump-later")];
    let done = manager.submit("/ui/cohorts", "/ui/cohorts", &fields).await;
    assert_eq!((done.status, done.location.as_deref()), (303, Some("/ui/cohorts/pump-x1/eu-pilot?notice=created")));
    let detail = manager.get("/ui/cohorts/pump-x1/eu-pilot?notice=created").await;
    for expected in [
        "The cohort is created.",
        "<code>region:eu</code>",
        "<span data-live=\"cohort-count\">3</span>",
        "href=\"/ui/devices?cohort=eu-pilot&#38;product=pump-x1\"",
        "pump-later",
        "<form id=\"cohort-edit-form\" method=\"post\" action=\"/ui/cohorts/pump-x1/eu-pilot\"",
        ">Save cohort</button>",
    ] {
        assert!(detail.body.contains(expected), "{expected}: {}", detail.body);
    }
    let list = manager.get("/ui/cohorts").await;
    assert!(list.body.contains("data-live=\"cohort-counts\""));
    assert!(
        list.body.contains("<td class=\"num\">2</td>\n      <td class=\"num\">3</td>"),
        "2 listed, 3 match: {}",
        list.body
    );

    // Editing replaces the selector and the members; no tags removes the selector.
    let edit = [("tags", ""), ("members", "pump-eu-1\npump-eu-2")];
    let saved = manager.submit("/ui/cohorts/pump-x1/eu-pilot", "/ui/cohorts/pump-x1/eu-pilot", &edit).await;
    assert_eq!((saved.status, saved.location.as_deref()), (303, Some("/ui/cohorts/pump-x1/eu-pilot?notice=saved")));
    let cohort: Value = app.get_json("/api/v1/cohorts/pump-x1/eu-pilot").await;
    assert_eq!(cohort["devices"], json!(["pump-eu-1", "pump-eu-2"]));
    assert_eq!(cohort["selector_tags"], json!([]));
    let detail = manager.get("/ui/cohorts/pump-x1/eu-pilot").await;
    assert!(detail.body.contains("no selector") && detail.body.contains("<span data-live=\"cohort-count\">2</span>"));

    let object = "cohort:pump-x1/eu-pilot".to_owned();
    assert_eq!(audited(&app, "cohort.create").await, [("user:mia".to_owned(), object.clone())]);
    assert_eq!(audited(&app, "cohort.update").await, [("user:mia".to_owned(), object)]);
}

#[tokio::test]
async fn ui_cohort_forms_refuse_bad_input_and_keep_it() {
    let app = app_with_product().await;
    let mut manager = Browser::signed_in(&app, "mia", Role::ReleaseManager).await;
    let bad = [("product", PRODUCT), ("name", "EU Pilot"), ("tags", "region:eu Site"), ("members", "ok-1 bad/id")];
    let page = manager.submit("/ui/cohorts", "/ui/cohorts", &bad).await;
    assert_eq!(page.status, 400);
    assert_field_error(&page, "name", "cohort name");
    assert_field_error(&page, "tags", "Site&#34;");
    assert_field_error(&page, "members", "bad/id");
    for kept in [
        "value=\"EU Pilot\"",
        "value=\"region:eu Site\"",
        ">ok-1 bad/id</textarea>",
        "<option value=\"pump-x1\" selected>",
    ] {
        assert!(page.body.contains(kept), "{kept}: {}", page.body);
    }
    let empty = manager.submit("/ui/cohorts", "/ui/cohorts", &[("product", ""), ("name", "x"), ("tags", " , ")]).await;
    assert_eq!(empty.status, 400);
    assert_field_error(&empty, "product", "Choose a product");
    assert_field_error(&empty, "tags", "selector tags, explicit members, or both");

    let good = [("product", PRODUCT), ("name", "eu"), ("tags", "region:eu"), ("members", "")];
    assert_eq!(manager.submit("/ui/cohorts", "/ui/cohorts", &good).await.status, 303);
    let again = manager
        .submit("/ui/cohorts", "/ui/cohorts", &[("product", PRODUCT), ("name", "eu"), ("tags", "region:us")])
        .await;
    assert_eq!(again.status, 409);
    assert!(again.body.contains("notice notice-error") && again.body.contains("value=\"region:us\""), "{}", again.body);
    assert_field_error(&again, "name", "already has a cohort");

    let edit =
        manager.submit("/ui/cohorts/pump-x1/eu", "/ui/cohorts/pump-x1/eu", &[("tags", "Nope"), ("members", "")]).await;
    assert_eq!(edit.status, 400);
    assert_field_error(&edit, "tags", "Nope&#34;");
    assert!(edit.body.contains("value=\"Nope\""));
    let cohort: Value = app.get_json("/api/v1/cohorts/pump-x1/eu").await;
    assert_eq!(cohort["selector_tags"], json!(["region:eu"]), "unchanged");
    assert_eq!(manager.get("/ui/cohorts/pump-x1/none").await.status, 404);
}

#[tokio::test]
async fn ui_cohort_changes_need_the_csrf_token_and_the_role() {
    let app = app_with_product().await;
    let mut manager = Browser::signed_in(&app, "mia", Role::ReleaseManager).await;
    assert_eq!(
        manager
            .submit("/ui/cohorts", "/ui/cohorts", &[("product", PRODUCT), ("name", "eu"), ("tags", "region:eu")])
            .await
            .status,
        303
    );
    let fields = [("product", PRODUCT), ("name", "us"), ("tags", "region:us")];
    assert_eq!(manager.post("/ui/cohorts", &fields).await.status, 403, "no CSRF token");
    assert_eq!(manager.post("/ui/cohorts/pump-x1/eu", &[("tags", "region:us")]).await.status, 403);

    let mut viewer = Browser::signed_in(&app, "vera", Role::Viewer).await;
    let list = viewer.get("/ui/cohorts").await;
    assert_eq!(list.status, 200);
    assert!(list.body.contains("href=\"/ui/cohorts/pump-x1/eu\"") && !list.body.contains("cohort-form"));
    let detail = viewer.get("/ui/cohorts/pump-x1/eu").await;
    assert!(detail.body.contains("region:eu") && !detail.body.contains("cohort-edit-form"));
    assert_eq!(viewer.submit("/ui/cohorts", "/ui/cohorts", &fields).await.status, 403);
    let edit = [("tags", "region:us"), ("members", "")];
    assert_eq!(viewer.submit("/ui/cohorts/pump-x1/eu", "/ui/cohorts/pump-x1/eu", &edit).await.status, 403);

    let cohorts: Vec<Value> = app.get_json("/api/v1/cohorts").await;
    assert_eq!(cohorts.len(), 1);
    assert_eq!(cohorts[0]["selector_tags"], json!(["region:eu"]));
    assert_eq!(audited(&app, "cohort.create").await.len(), 1);
    assert!(audited(&app, "cohort.update").await.is_empty());
}

fn new_token(page: &Page) -> String {
    let at = page.body.find("<code id=\"new-token\">").expect("the new token") + "<code id=\"new-token\">".len();
    page.body[at..at + page.body[at..].find('<').unwrap()].to_owned()
}

#[tokio::test]
async fn ui_enrollment_tokens_are_shown_once_work_and_can_be_revoked() {
    let app = app_with_product().await;
    let mut manager = Browser::signed_in(&app, "mia", Role::ReleaseManager).await;
    let page = manager.get("/ui/enrollment-tokens").await;
    for expected in [
        "<form id=\"token-form\" method=\"post\" action=\"/ui/enrollment-tokens\"",
        "<label for=\"product\">",
        "<label for=\"name\">",
        "<label for=\"tags\">",
        "name=\"max_uses\" type=\"number\" min=\"1\" max=\"10000000\" value=\"1000\"",
        "name=\"expires_hours\" type=\"number\" min=\"1\" max=\"8784\" value=\"24\"",
        ">Create token</button>",
    ] {
        assert!(page.body.contains(expected), "{expected}: {}", page.body);
    }
    let fields = [
        ("product", PRODUCT),
        ("name", "batch-7"),
        ("tags", "region:eu, site:ward-3"),
        ("max_uses", "5"),
        ("expires_hours", "48"),
    ];
    let created = manager.submit("/ui/enrollment-tokens", "/ui/enrollment-tokens", &fields).await;
    assert_eq!(created.status, 200, "{}", created.body);
    assert!(created.body.contains("will not be shown again"));
    let secret = new_token(&created);
    assert!(secret.starts_with("pge_"), "{secret}");
    let list = manager.get("/ui/enrollment-tokens").await;
    assert!(!list.body.contains(&secret) && !list.body.contains("new-token"), "never shown again");
    for expected in ["batch-7", "<code>region:eu site:ward-3</code>", "0 / 5", "badge-ok\">active</span>"] {
        assert!(list.body.contains(expected), "{expected}: {}", list.body);
    }
    assert!(list.body.contains("(in 2 days)") || list.body.contains("(in 47 h)"), "{}", list.body);
    // The secret works, and gives its tags.
    Device::enroll(&app, "pump-0001", PRODUCT, HW, &secret).await;
    let device: Value = app.get_json("/api/v1/devices/pump-0001").await;
    assert!(device.to_string().contains("site:ward-3"), "{device}");

    let tokens: Vec<Value> = app.get_json("/api/v1/enrollment-tokens").await;
    let id = tokens[0]["id"].as_i64().unwrap();
    let revoke_path = format!("/ui/enrollment-tokens/{id}/revoke");
    assert!(manager.get("/ui/enrollment-tokens").await.body.contains(&format!("href=\"{revoke_path}\"")));
    let confirm = manager.get(&revoke_path).await;
    assert!(confirm.body.contains(&format!("<form id=\"confirm-form\" method=\"post\" action=\"{revoke_path}\"")));
    assert!(confirm.body.contains(">Confirm revoke</button>"));
    let done = manager.submit(&revoke_path, &revoke_path, &[]).await;
    assert_eq!((done.status, done.location.as_deref()), (303, Some("/ui/enrollment-tokens?notice=revoked")));
    let list = manager.get("/ui/enrollment-tokens?notice=revoked").await;
    assert!(list.body.contains("The enrollment token is revoked") && list.body.contains("badge-bad\">revoked</span>"));
    assert!(!list.body.contains(&format!("href=\"{revoke_path}\"")), "no revoke link for a revoked token");
    let again = manager.submit(&revoke_path, &revoke_path, &[]).await;
    assert_eq!(again.status, 409);

    let object = format!("enrollment_token:{id}");
    assert_eq!(audited(&app, "enrollment_token.create").await, [("user:mia".to_owned(), object.clone())]);
    assert_eq!(audited(&app, "enrollment_token.revoke").await, [("user:mia".to_owned(), object)]);
}

#[tokio::test]
async fn ui_enrollment_token_form_refuses_bad_input_and_keeps_it() {
    let app = app_with_product().await;
    let mut manager = Browser::signed_in(&app, "mia", Role::ReleaseManager).await;
    let bad = [("product", ""), ("name", "batch"), ("tags", "Region"), ("max_uses", "lots"), ("expires_hours", "0")];
    let page = manager.submit("/ui/enrollment-tokens", "/ui/enrollment-tokens", &bad).await;
    assert_eq!(page.status, 400);
    assert_field_error(&page, "product", "Choose the product");
    assert_field_error(&page, "tags", "Region&#34;");
    assert_field_error(&page, "max_uses", "whole number from 1 to 10000000");
    assert_field_error(&page, "expires_hours", "from 1 to 8784");
    for kept in ["value=\"batch\"", "value=\"Region\"", "value=\"lots\"", "value=\"0\""] {
        assert!(page.body.contains(kept), "{kept}");
    }
    assert!(!page.body.contains("new-token"));
    let unknown = [("product", "nope"), ("max_uses", "1"), ("expires_hours", "1")];
    let page = manager.submit("/ui/enrollment-tokens", "/ui/enrollment-tokens", &unknown).await;
    assert_eq!(page.status, 400);
    assert_field_error(&page, "product", "Choose one of the products");
    let tokens: Vec<Value> = app.get_json("/api/v1/enrollment-tokens").await;
    assert!(tokens.is_empty());
}

#[tokio::test]
async fn ui_enrollment_token_changes_need_the_csrf_token_and_the_role() {
    let app = app_with_product().await;
    enrollment_token(&app, PRODUCT, &[], 3).await;
    let tokens: Vec<Value> = app.get_json("/api/v1/enrollment-tokens").await;
    let revoke_path = format!("/ui/enrollment-tokens/{}/revoke", tokens[0]["id"]);
    let fields = [("product", PRODUCT), ("max_uses", "1"), ("expires_hours", "1")];

    let mut manager = Browser::signed_in(&app, "mia", Role::ReleaseManager).await;
    assert_eq!(manager.post("/ui/enrollment-tokens", &fields).await.status, 403, "no CSRF token");
    assert_eq!(manager.post(&revoke_path, &[]).await.status, 403);

    let mut viewer = Browser::signed_in(&app, "vera", Role::Viewer).await;
    let list = viewer.get("/ui/enrollment-tokens").await;
    assert_eq!(list.status, 200);
    assert!(list.body.contains("pump-x1-enrollment") && list.body.contains("0 / 3"));
    assert!(!list.body.contains("token-form") && !list.body.contains(">Revoke"), "no change controls: {}", list.body);
    assert_eq!(viewer.get(&revoke_path).await.status, 403);
    assert_eq!(viewer.submit("/ui/enrollment-tokens", "/ui/enrollment-tokens", &fields).await.status, 403);
    assert_eq!(viewer.submit("/ui/enrollment-tokens", &revoke_path, &[]).await.status, 403);

    let tokens: Vec<Value> = app.get_json("/api/v1/enrollment-tokens").await;
    assert_eq!(tokens.len(), 1);
    assert!(tokens[0]["revoked_at"].is_null());
    assert!(audited(&app, "enrollment_token.revoke").await.is_empty());
    assert_eq!(audited(&app, "enrollment_token.create").await.len(), 1, "only the API's");
}

/// The release page's link to `action` (`approve`, `yank`) for `version`.
fn review_link(version: &str, action: &str) -> String {
    format!("href=\"/ui/products/{PRODUCT}/releases/{version}/{action}\"")
}

#[tokio::test]
async fn ui_a_release_manager_approves_and_yanks_a_release_and_a_viewer_cannot() {
    let app = spawn_app().await;
    app.post_json("/api/v1/products", &json!({"name": PRODUCT, "hardware_ids": [HW], "two_person_approval": true}))
        .await;
    app.publish(PRODUCT, "1.0.0", "fw.bin", firmware(1, 1024)).await;
    app.publish(PRODUCT, "1.1.0", "fw.bin", firmware(2, 1024)).await;
    let release = |v: &str| format!("/ui/products/{PRODUCT}/releases/{v}");

    // A viewer sees the state and no action; the confirmation pages and their POSTs are refused.
    let mut viewer = Browser::signed_in(&app, "vera", Role::Viewer).await;
    let page = viewer.get(&release("1.0.0")).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("badge badge-warn\">awaiting approval</span>"), "{}", page.body);
    for absent in [review_link("1.0.0", "approve"), review_link("1.0.0", "yank"), "Roll out this release".into()] {
        assert!(!page.body.contains(&absent), "{absent} for a viewer:\n{}", page.body);
    }
    let csrf = viewer.get("/ui/products").await.csrf();
    for action in ["approve", "yank"] {
        assert_eq!(viewer.get(&format!("{}/{action}", release("1.0.0"))).await.status, 403, "{action}");
        let page = viewer.post(&format!("{}/{action}", release("1.0.0")), &[("csrf", &csrf)]).await;
        assert_eq!(page.status, 403, "{action}: {}", page.body);
    }
    let product = viewer.get(&format!("/ui/products/{PRODUCT}")).await;
    has(
        &product,
        &[
            "badge badge-warn\">awaiting approval</span>",
            "a second person approves each release before a rollout",
            "href=\"/api/v1/products/pump-x1/installed?format=csv\"",
        ],
    );
    // The recall export link works with the session alone.
    let cookie = format!("pg_session={}", viewer.session.as_deref().unwrap());
    let csv = app.client.get(app.url("/api/v1/products/pump-x1/installed?format=csv")).header(COOKIE, cookie);
    let csv = csv.send().await.unwrap();
    assert_eq!(csv.status(), 200);
    assert!(csv.text().await.unwrap().starts_with("device_id,"), "a CSV with its header");

    // A release manager: rolling out waits for the approval; approving takes a confirmation
    // with the CSRF token.
    let mut rita = Browser::signed_in(&app, "rita", Role::ReleaseManager).await;
    let page = rita.get(&release("1.0.0")).await;
    assert!(page.body.contains(&review_link("1.0.0", "approve")), "{}", page.body);
    let why = "<strong>Roll out this release:</strong> pump-x1/1.0.0/fw.bin needs a second person&#39;s approval before a \
               rollout (a release manager other than token:test-admin).";
    assert!(page.body.contains(why), "{}", page.body);
    let confirm = rita.get(&format!("{}/approve", release("1.0.0"))).await;
    assert_eq!(confirm.status, 200);
    assert!(confirm.body.contains("Rollouts of pump-x1/1.0.0/fw.bin may be created from then on."), "{}", confirm.body);
    assert!(!confirm.body.contains(" disabled"), "{}", confirm.body);
    let refused = rita.post(&format!("{}/approve", release("1.0.0")), &[]).await;
    assert_eq!(refused.status, 403, "no CSRF token");
    let done =
        rita.submit(&format!("{}/approve", release("1.0.0")), &format!("{}/approve", release("1.0.0")), &[]).await;
    assert_eq!((done.status, done.location.as_deref()), (303, Some(&*format!("{}?notice=approved", release("1.0.0")))));
    let approved: Value = app.get_json(&format!("/api/v1/products/{PRODUCT}/releases/1.0.0")).await;
    assert_eq!(approved["approved_by"], "user:rita", "{approved}");
    let page = rita.get(&format!("{}?notice=approved", release("1.0.0"))).await;
    has(
        &page,
        &[
            "The release is approved: rollouts of it may be created.",
            "approved by user:rita on ",
            "href=\"/ui/rollouts/new?product=pump-x1&#38;version=1.0.0\">Roll out this release</a>",
            "href=\"/ui/audit?object=release%3Apump-x1%2F1.0.0%2Ffw.bin\"",
        ],
    );
    assert!(!page.body.contains(&review_link("1.0.0", "approve")), "approved once");
    let history = rita.get("/ui/audit?object=release%3Apump-x1%2F1.0.0%2Ffw.bin").await;
    assert!(history.body.contains("release.approve") && history.body.contains("release.publish"), "{}", history.body);

    // Yanking 1.1.0: the confirmation says what happens; then the role no longer lists it.
    let confirm = rita.get(&format!("{}/yank", release("1.1.0"))).await;
    has(&confirm, &["The pump-x1 role is signed again without pump-x1/1.1.0/fw.bin", "A yank cannot be undone."]);
    let done = rita.submit(&format!("{}/yank", release("1.1.0")), &format!("{}/yank", release("1.1.0")), &[]).await;
    assert_eq!((done.status, done.location.as_deref()), (303, Some(&*format!("{}?notice=yanked", release("1.1.0")))));
    let role: Value = app.get_json(&format!("/api/v1/products/{PRODUCT}/role")).await;
    let listed: Vec<&String> = role["signed"]["targets"].as_object().unwrap().keys().collect();
    assert_eq!(listed, ["pump-x1/1.0.0/fw.bin"], "{role}");
    let page = rita.get(&release("1.1.0")).await;
    has(&page, &["badge badge-bad\">yanked</span>", "Yanked by user:rita on "]);
    for absent in [review_link("1.1.0", "approve"), review_link("1.1.0", "yank"), "Roll out this release".into()] {
        assert!(!page.body.contains(&absent), "{absent} on a yanked release:\n{}", page.body);
    }
    // Approving a yanked release is refused, and says why.
    let confirm = rita.get(&format!("{}/approve", release("1.1.0"))).await;
    assert!(confirm.body.contains("was yanked by user:rita") && confirm.body.contains(" disabled"), "{}", confirm.body);
    let csrf = confirm.csrf();
    let refused = rita.post(&format!("{}/approve", release("1.1.0")), &[("csrf", &csrf)]).await;
    assert_eq!(refused.status, 409, "{}", refused.body);
    assert!(refused.body.contains("<strong>Refused:</strong> pump-x1/1.1.0/fw.bin is yanked"), "{}", refused.body);
    assert_eq!(
        audited(&app, "release.yank").await,
        [("user:rita".to_owned(), "release:pump-x1/1.1.0/fw.bin".to_owned())]
    );

    // Whoever published a release cannot approve it: the page says so instead of a button.
    let mut ada = Browser::signed_in(&app, "ada", Role::Admin).await;
    let form = upload_form("1.2.0", "", "fw.bin", firmware(3, 1024));
    let page = ada.upload(&format!("/ui/products/{PRODUCT}"), &format!("/ui/products/{PRODUCT}/releases"), form).await;
    assert_eq!(page.status, 303, "{}", page.body);
    let page = ada.get(&release("1.2.0")).await;
    assert!(page.body.contains("<strong>Approve:</strong> You published this release"), "{}", page.body);
    let csrf = page.csrf();
    let refused = ada.post(&format!("{}/approve", release("1.2.0")), &[("csrf", &csrf)]).await;
    assert_eq!(refused.status, 409, "{}", refused.body);
    let unapproved: Value = app.get_json(&format!("/api/v1/products/{PRODUCT}/releases/1.2.0")).await;
    assert_eq!(unapproved["approved_by"], Value::Null);
}

#[tokio::test]
async fn ui_a_products_releases_come_fifty_to_a_page_newest_first() {
    let app = app_with_product().await;
    for i in 0..53_u8 {
        app.publish(PRODUCT, &format!("1.0.{i}"), "fw.bin", firmware(i, 64)).await;
    }
    let mut viewer = Browser::signed_in(&app, "vera", Role::Viewer).await;
    let rows =
        |page: &Page| page.body.matches("<td data-label=\"Version\"><a href=\"/ui/products/pump-x1/releases/").count();
    let first = viewer.get(&format!("/ui/products/{PRODUCT}")).await;
    assert_eq!(rows(&first), 50, "{}", first.body);
    assert!(
        first.body.find("releases/1.0.52\"").unwrap() < first.body.find("releases/1.0.3\"").unwrap(),
        "newest first"
    );
    assert!(!first.body.contains("releases/1.0.2\""), "the oldest are on the next page");
    let at = first.body.find("\" rel=\"next\">Older releases</a>").expect("a link to the older page");
    let next = &first.body[first.body[..at].rfind("href=\"").unwrap() + 6..at];
    let older = viewer.get(next).await;
    assert_eq!(rows(&older), 3, "{}", older.body);
    has(&older, &["Releases (older page)", "releases/1.0.0\"", ">Newest releases</a>"]);
    assert!(!older.body.contains("rel=\"next\""), "no page after the last");
    let bad = viewer.get(&format!("/ui/products/{PRODUCT}?before=yesterday")).await;
    assert_eq!(bad.status, 400);
    assert!(bad.body.contains("before=&#34;yesterday&#34; is not a release id"), "{}", bad.body);
}
