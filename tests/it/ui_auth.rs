//! Admin UI accounts and sessions: sign-in and sign-out, cookie attributes, throttling of
//! failed sign-ins (audited), CSRF on every change, idle expiry, sessions ended by a role
//! change, and a session used on the API.

use jiff::SignedDuration;
use patchgate::services::auth::{Caller, Role};
use patchgate::services::users::set_user_role;
use serde_json::json;

use crate::common::spawn_app;
use crate::ui_common::{Browser, PASSWORD, audit_actions, make_user};

#[tokio::test]
async fn signing_in_and_out_with_server_side_sessions() {
    let app = spawn_app().await;
    let mut anon = Browser::new(&app);
    let page = anon.get("/ui/?view=all").await;
    assert_eq!(page.status, 303);
    assert_eq!(page.location.as_deref(), Some("/ui/login?next=%2Fui%2F%3Fview%3Dall"));
    let login = anon.get("/ui/login").await;
    assert_eq!(login.status, 200);
    assert!(login.body.contains("<label for=\"password\">"), "labelled fields");

    make_user(&app, "alice", Role::Admin).await;
    let mut browser = Browser::new(&app);
    let wrong = browser.sign_in("alice", "not the password at all").await;
    assert_eq!(wrong.status, 401);
    assert!(wrong.body.contains("Wrong user name or password."));
    assert!(wrong.body.contains("value=\"alice\""), "what the user typed is kept");
    assert!(browser.session.is_none());

    let res = browser
        .client
        .post(app.url("/ui/login"))
        .form(&[("name", "alice"), ("password", PASSWORD), ("next", "/ui/devices")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    assert_eq!(res.headers()["location"], "/ui/devices");
    let cookie = res.headers()["set-cookie"].to_str().unwrap().to_owned();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    assert!(!cookie.contains("Secure"), "plain HTTP on loopback: no Secure flag ({cookie})");
    browser.session = Some(cookie["pg_session=".len()..cookie.find(';').unwrap()].to_owned());
    let home = browser.get("/ui/").await;
    assert_eq!(home.status, 200);
    assert!(home.body.contains("alice") && home.body.contains("(admin)"), "{}", home.body);
    // The server's root sends a browser to the console.
    let root = browser.get("/").await;
    assert_eq!((root.status, root.location.as_deref()), (307, Some("/ui/")));

    // Signing out needs the CSRF token; without it nothing changes.
    let refused = browser.post("/ui/logout", &[("csrf", "forged")]).await;
    assert_eq!(refused.status, 403);
    assert_eq!(browser.get("/ui/").await.status, 200, "still signed in");
    let session = browser.session.clone();
    let out = browser.submit("/ui/", "/ui/logout", &[]).await;
    assert_eq!((out.status, out.location.as_deref()), (303, Some("/ui/login")));
    browser.session = session;
    assert_eq!(browser.get("/ui/").await.status, 303, "the old cookie is dead server-side");

    let actions: Vec<String> = audit_actions(&app).await.into_iter().map(|(_, a, _)| a).collect();
    for expected in ["user.create", "user.login_failed", "user.login", "user.logout"] {
        assert!(actions.contains(&expected.to_owned()), "{expected}: {actions:?}");
    }
}

#[tokio::test]
async fn repeated_failed_sign_ins_slow_down_and_are_audited() {
    let app = spawn_app().await;
    make_user(&app, "bob", Role::Viewer).await;
    let mut browser = Browser::new(&app);
    for _ in 0..5 {
        assert_eq!(browser.sign_in("bob", "wrong password here").await.status, 401);
    }
    let throttled = browser.sign_in("bob", PASSWORD).await;
    assert_eq!(throttled.status, 429, "even the right password waits");
    assert!(throttled.body.contains("Try again in"), "{}", throttled.body);
    let failures =
        audit_actions(&app).await.into_iter().filter(|(_, a, o)| a == "user.login_failed" && o == "user:bob");
    assert_eq!(failures.count(), 5);
    // After the wait, the right password works and clears the count.
    app.clock.set_offset(app.clock.offset() + SignedDuration::from_secs(31));
    assert_eq!(browser.sign_in("bob", PASSWORD).await.status, 303);
}

#[tokio::test]
async fn sessions_end_when_idle_and_when_the_role_changes() {
    let app = spawn_app().await;
    let mut browser = Browser::signed_in(&app, "carol", Role::ReleaseManager).await;
    assert_eq!(browser.get("/ui/").await.status, 200);
    app.clock.set_offset(app.clock.offset() + SignedDuration::from_mins(31));
    assert_eq!(browser.get("/ui/").await.status, 303, "idle for 31 minutes");

    assert_eq!(browser.sign_in("carol", PASSWORD).await.status, 303);
    assert_eq!(browser.get("/ui/").await.status, 200);
    set_user_role(&app.services, &Caller::operator(), "carol", Role::Viewer).await.unwrap();
    assert_eq!(browser.get("/ui/").await.status, 303, "a role change ends the session");
    assert_eq!(browser.sign_in("carol", PASSWORD).await.status, 303);
    assert!(browser.get("/ui/").await.body.contains("(viewer)"));
}

#[tokio::test]
async fn a_session_on_the_api_needs_the_csrf_header_to_change_anything() {
    let app = spawn_app().await;
    app.create_product("pump-x1", &["revA"]).await;
    let mut browser = Browser::signed_in(&app, "dave", Role::ReleaseManager).await;
    let csrf = browser.get("/ui/").await.csrf();
    let cookie = format!("pg_session={}", browser.session.clone().unwrap());
    let read = app.client.get(app.url("/api/v1/cohorts")).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(read.status(), 200, "reads need no CSRF header");
    let body = json!({"name": "eu", "product": "pump-x1", "selector": {"tags": ["region:eu"]}});
    let post = |csrf: Option<&str>| {
        let mut req = app.client.post(app.url("/api/v1/cohorts")).header("cookie", &cookie).json(&body);
        if let Some(csrf) = csrf {
            req = req.header("x-csrf-token", csrf);
        }
        req.send()
    };
    let refused = post(None).await.unwrap();
    assert_eq!(refused.status(), 403);
    assert_eq!(refused.json::<serde_json::Value>().await.unwrap()["error"], "csrf_token_required");
    assert_eq!(post(Some("wrong")).await.unwrap().status(), 403);
    assert_eq!(post(Some(&csrf)).await.unwrap().status(), 201);
    let audit = audit_actions(&app).await;
    assert!(audit.iter().any(|(actor, action, _)| actor == "user:dave" && action == "cohort.create"), "{audit:?}");
    // No cookie and no token: 401 as before.
    assert_eq!(app.client.get(app.url("/api/v1/cohorts")).send().await.unwrap().status(), 401);
}

#[tokio::test]
async fn the_user_command_creates_users_from_stdin() {
    let app = spawn_app().await;
    let (status, _) = crate::cli::patchgate_with_config(
        &app,
        &["user", "create", "--name", "erin", "--role", "publisher", "--password-stdin"],
        Some(&format!("{PASSWORD}\n")),
    )
    .await;
    assert!(status.success());
    let (status, stderr) = crate::cli::patchgate_with_config(
        &app,
        &["user", "create", "--name", "frank", "--role", "publisher", "--password-stdin"],
        Some("short\n"),
    )
    .await;
    assert!(!status.success());
    assert!(stderr.contains("at least") || stderr.contains("12 to 1024"), "{stderr}");
    let mut browser = Browser::new(&app);
    assert_eq!(browser.sign_in("erin", PASSWORD).await.status, 303);
    assert!(browser.get("/ui/").await.body.contains("(publisher)"));
}

#[tokio::test]
async fn a_page_refreshing_itself_does_not_keep_an_unattended_session_alive() {
    let app = spawn_app().await;
    let mut browser = Browser::signed_in(&app, "gina", Role::Viewer).await;
    let cookie = format!("pg_session={}", browser.session.clone().unwrap());
    // No redirects followed: a refresh of a dead session must show as the redirect to sign-in.
    let client = browser.client.clone();
    let refresh = || client.get(app.url("/ui/")).header("cookie", &cookie).header("x-live-refresh", "1").send();
    app.clock.set_offset(app.clock.offset() + SignedDuration::from_mins(20));
    assert_eq!(refresh().await.unwrap().status(), 200, "20 minutes idle: still signed in");
    app.clock.set_offset(app.clock.offset() + SignedDuration::from_mins(11));
    assert_eq!(refresh().await.unwrap().status(), 303, "31 minutes without a person: the refreshes did not count");
    assert_eq!(browser.get("/ui/").await.status, 303);
}

#[tokio::test]
async fn failed_sign_ins_record_only_names_that_exist_and_a_new_sign_in_ends_the_old_session() {
    let app = spawn_app().await;
    make_user(&app, "hank", Role::Viewer).await;
    make_user(&app, "ivy", Role::Admin).await;
    let mut browser = Browser::new(&app);
    // A password typed into the name field must not end up in the audit log.
    assert_eq!(browser.sign_in("correct-horse-battery", "x").await.status, 401);
    assert_eq!(browser.sign_in("Not A Name!", "x").await.status, 401);
    let failures: Vec<String> = audit_actions(&app)
        .await
        .into_iter()
        .filter(|(_, a, _)| a == "user.login_failed")
        .map(|(_, _, object)| object)
        .collect();
    assert_eq!(failures, ["user:(unknown)"], "an impossible name is not even recorded");

    assert_eq!(browser.sign_in("hank", PASSWORD).await.status, 303);
    let hanks = browser.session.clone().unwrap();
    assert_eq!(browser.sign_in("ivy", PASSWORD).await.status, 303);
    let mut old = Browser::new(&app);
    old.session = Some(hanks);
    assert_eq!(old.get("/ui/").await.status, 303, "signing in as someone else ended the previous session");
    let page = browser.get("/ui/").await;
    assert!(page.body.contains("(admin)"));
}
