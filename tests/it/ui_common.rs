//! A browser stand-in for admin UI tests over plain HTTP: users made through the service, a
//! session cookie carried by hand, the CSRF token read from the page, forms posted as a
//! browser posts them.

#![allow(dead_code)]

use patchgate::services::auth::{Caller, Role};
use patchgate::services::users::create_user;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};

use crate::common::TestApp;

/// The password every test user gets.
pub const PASSWORD: &str = "correct horse battery staple";

/// A signed-in (or not) browser.
pub struct Browser {
    /// No redirects followed, so tests see them.
    pub client: reqwest::Client,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The session cookie, once signed in.
    pub session: Option<String>,
}

/// A page as a browser got it.
#[derive(Debug)]
pub struct Page {
    /// HTTP status.
    pub status: u16,
    /// Body (HTML).
    pub body: String,
    /// `Location` of a redirect.
    pub location: Option<String>,
}

/// Asserts that `page` holds each of `expected`.
pub fn has(page: &Page, expected: &[&str]) {
    for text in expected {
        assert!(page.body.contains(text), "{text:?} missing (status {}):\n{}", page.status, page.body);
    }
}

impl Page {
    /// The value of the first `<input … name="csrf" value="…">` on the page.
    pub fn csrf(&self) -> String {
        let at = self.body.find("name=\"csrf\" value=\"").expect("a CSRF field on the page");
        let rest = &self.body[at + "name=\"csrf\" value=\"".len()..];
        rest[..rest.find('"').unwrap()].to_owned()
    }
}

/// Creates a user with `role`.
pub async fn make_user(app: &TestApp, name: &str, role: Role) {
    create_user(&app.services, &Caller::operator(), name, role, PASSWORD).await.unwrap();
}

impl Browser {
    /// A browser with no session.
    pub fn new(app: &TestApp) -> Self {
        let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        Self { client, base: app.base.clone(), session: None }
    }

    /// A user with `role`, signed in.
    pub async fn signed_in(app: &TestApp, name: &str, role: Role) -> Self {
        make_user(app, name, role).await;
        let mut browser = Self::new(app);
        let page = browser.sign_in(name, PASSWORD).await;
        assert_eq!(page.status, 303, "{}", page.body);
        browser
    }

    /// Posts the sign-in form; keeps the session cookie it sets.
    pub async fn sign_in(&mut self, name: &str, password: &str) -> Page {
        self.post("/ui/login", &[("name", name), ("password", password), ("next", "/ui/")]).await
    }

    async fn send(&mut self, req: reqwest::RequestBuilder) -> Page {
        let req = match &self.session {
            Some(s) => req.header(COOKIE, format!("pg_session={s}")),
            None => req,
        };
        let res = req.send().await.unwrap();
        for value in res.headers().get_all(SET_COOKIE) {
            let value = value.to_str().unwrap();
            if let Some(rest) = value.strip_prefix("pg_session=") {
                let secret = rest.split(';').next().unwrap_or_default();
                self.session = (!secret.is_empty()).then(|| secret.to_owned());
            }
        }
        let status = res.status().as_u16();
        let location = res.headers().get(LOCATION).map(|v| v.to_str().unwrap().to_owned());
        Page { status, location, body: res.text().await.unwrap() }
    }

    /// GET `path`.
    pub async fn get(&mut self, path: &str) -> Page {
        let req = self.client.get(format!("{}{path}", self.base));
        self.send(req).await
    }

    /// POST `fields` as `application/x-www-form-urlencoded` to `path`.
    pub async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Page {
        let req = self.client.post(format!("{}{path}", self.base)).form(fields);
        self.send(req).await
    }

    /// GET `page_path` for its CSRF token, then POST `fields` plus that token to `path`.
    pub async fn submit(&mut self, page_path: &str, path: &str, fields: &[(&str, &str)]) -> Page {
        let csrf = self.get(page_path).await.csrf();
        let mut all: Vec<(&str, &str)> = fields.to_vec();
        all.push(("csrf", &csrf));
        self.post(path, &all).await
    }

    /// POST a multipart form (a file upload) as a browser sends it: the page's CSRF token first
    /// (it leads the form), then the fields `build` adds.
    pub async fn upload(
        &mut self,
        page_path: &str,
        path: &str,
        build: impl FnOnce(reqwest::multipart::Form) -> reqwest::multipart::Form,
    ) -> Page {
        let csrf = self.get(page_path).await.csrf();
        let form = build(reqwest::multipart::Form::new().text("csrf", csrf));
        let req = self.client.post(format!("{}{path}", self.base)).multipart(form);
        self.send(req).await
    }
}

/// Audit actions recorded so far, oldest first: `(actor, action, object)`.
pub async fn audit_actions(app: &TestApp) -> Vec<(String, String, String)> {
    let body: serde_json::Value = app.get_json("/api/v1/audit?limit=500").await;
    let entries = body["entries"].as_array().or_else(|| body.as_array()).cloned().unwrap_or_default();
    let mut out: Vec<(String, String, String)> = entries
        .iter()
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap_or_default().to_owned();
            (s("actor"), s("action"), s("object"))
        })
        .collect();
    out.reverse();
    out
}
