//! Simulated devices for tests: real ed25519 keys, signed enrollment and reports over real
//! HTTP, and a tough transport that fetches a device's director metadata with its token.

use ed25519_dalek::SigningKey;
use patchgate_protocol::report::{Attempt, AttemptState, DeviceReport, EnrollRequest, InstalledImage};
use serde_json::{Value, json};

use crate::common::TestApp;

/// The device time in reports (the server records it, it does not trust it).
pub const DEVICE_TIME: &str = "2026-11-24T10:00:00Z";

/// A device time later than any before it in this test process (enrollment requests must
/// carry increasing times).
pub fn next_time() -> String {
    use std::sync::atomic::{AtomicI64, Ordering};
    static SECONDS: AtomicI64 = AtomicI64::new(0);
    let n = SECONDS.fetch_add(1, Ordering::Relaxed);
    jiff::Timestamp::from_second(1_795_000_000 + n).unwrap().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// A firmware image as a device reports it.
#[derive(Debug, Clone)]
pub struct Image {
    /// Target name.
    pub name: String,
    /// Version.
    pub version: String,
    /// SHA-256 hex.
    pub sha256: String,
}

impl Image {
    /// From a publish answer.
    pub fn from_publish(answer: &Value) -> Self {
        Self {
            name: answer["target"]["name"].as_str().unwrap().to_owned(),
            version: answer["version"].as_str().unwrap().to_owned(),
            sha256: answer["target"]["hashes"]["sha256"].as_str().unwrap().to_owned(),
        }
    }
}

/// One simulated device.
pub struct Device {
    /// Its id.
    pub id: String,
    /// Its key.
    pub key: SigningKey,
    /// Its device token.
    pub token: String,
    /// The next counter to send.
    pub counter: u64,
    /// The director targets version it last heard of.
    pub director_version: u64,
    /// What it runs.
    pub installed: Option<Image>,
}

/// Creates an enrollment token for `product` with `tags` (admin); returns the secret.
pub async fn enrollment_token(app: &TestApp, product: &str, tags: &[&str], max_uses: i64) -> String {
    let res = app
        .client
        .post(app.url("/api/v1/enrollment-tokens"))
        .bearer_auth(&app.admin)
        .json(&json!({"product": product, "tags": tags, "max_uses": max_uses}))
        .send()
        .await
        .unwrap();
    let status = res.status();
    let body: Value = res.json().await.unwrap();
    assert_eq!(status, 201, "{body}");
    body["token"].as_str().unwrap().to_owned()
}

/// Posts a signed enrollment request for `id` with `key`; returns status and body.
pub async fn try_enroll(
    app: &TestApp,
    key: &SigningKey,
    id: &str,
    product: &str,
    hardware_id: &str,
    token: &str,
) -> (u16, Value) {
    let request = EnrollRequest::new(id, product, hardware_id, &key.verifying_key(), token, next_time());
    let envelope = patchgate_protocol::envelope::sign(request, key).unwrap();
    let res = app.client.post(app.url("/api/v1/devices/enroll")).json(&envelope).send().await.unwrap();
    (res.status().as_u16(), res.json().await.unwrap())
}

impl Device {
    /// Enrolls a new device with a fresh key (asserts 201).
    pub async fn enroll(app: &TestApp, id: &str, product: &str, hardware_id: &str, token: &str) -> Self {
        let key = SigningKey::generate(&mut rand_core::OsRng);
        let (status, body) = try_enroll(app, &key, id, product, hardware_id, token).await;
        assert_eq!(status, 201, "{body}");
        Self {
            id: id.to_owned(),
            key,
            token: body["device_token"].as_str().unwrap().to_owned(),
            counter: 1,
            director_version: 0,
            installed: None,
        }
    }

    /// A signed report body with the given counter, id and attempt.
    pub fn report_body(&self, id: &str, counter: u64, attempt: Option<(&Image, AttemptState)>) -> Value {
        self.report_body_saying(id, counter, attempt, None)
    }

    /// [`Device::report_body`] whose attempt carries the device's explanation `detail`.
    fn report_body_saying(
        &self,
        id: &str,
        counter: u64,
        attempt: Option<(&Image, AttemptState)>,
        detail: Option<&str>,
    ) -> Value {
        let installed = self.installed.as_ref().map(|i| InstalledImage {
            name: i.name.clone(),
            sha256: i.sha256.clone(),
            version: i.version.clone(),
        });
        let detail = detail.map(str::to_owned);
        let attempt = attempt.map(|(image, state)| Attempt { name: image.name.clone(), state, detail });
        let report = DeviceReport::new(id, counter, DEVICE_TIME, installed, attempt, self.director_version);
        serde_json::to_value(patchgate_protocol::envelope::sign(report, &self.key).unwrap()).unwrap()
    }

    /// Posts `body` as this device's report to `path_id` with `token`.
    pub async fn post_report(app: &TestApp, path_id: &str, token: &str, body: &Value) -> (u16, Value) {
        let res = app
            .client
            .post(app.url(&format!("/api/v1/devices/{path_id}/report")))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .unwrap();
        (res.status().as_u16(), res.json().await.unwrap())
    }

    /// Reports (asserts 200), remembering the director version; returns the answer.
    pub async fn report(&mut self, app: &TestApp, attempt: Option<(&Image, AttemptState)>) -> Value {
        self.report_saying(app, attempt, None).await
    }

    /// [`Device::report`] whose attempt carries the device's explanation `detail` (an error).
    pub async fn report_saying(
        &mut self,
        app: &TestApp,
        attempt: Option<(&Image, AttemptState)>,
        detail: Option<&str>,
    ) -> Value {
        // An agent reports `installed` only once it runs the image (after confirm).
        if let Some((image, AttemptState::Installed)) = attempt {
            self.installed = Some(image.clone());
        }
        let body = self.report_body_saying(&self.id, self.counter, attempt, detail);
        let (status, answer) = Self::post_report(app, &self.id, &self.token, &body).await;
        assert_eq!(status, 200, "{}: {answer}", self.id);
        self.counter += 1;
        self.director_version = answer["director_targets_version"].as_u64().unwrap();
        answer
    }

    /// The `targets` map of the director targets it was last told about (unverified view).
    pub async fn director_targets(&self, app: &TestApp) -> serde_json::Map<String, Value> {
        let res = app
            .client
            .get(app.url(&format!("/director/{}/metadata/{}.targets.json", self.id, self.director_version)))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let body: Value = res.json().await.unwrap();
        body["signed"]["targets"].as_object().unwrap().clone()
    }

    /// The target name and director `custom` it is assigned, if any.
    pub async fn assignment(&self, app: &TestApp) -> Option<(String, Value)> {
        let targets = self.director_targets(app).await;
        assert!(targets.len() <= 1, "the director lists at most one target");
        targets.into_iter().next().map(|(name, t)| (name, t["custom"].clone()))
    }
}

/// The agent's own tough transport (one shared client; with `token`, the device token tough's
/// `HttpTransport` cannot send) for the server at `base`.
pub fn agent_transport(base: &str, client: reqwest::Client, token: Option<&str>) -> patchgate_agent::net::TufTransport {
    patchgate_agent::net::Net::new(base, client).unwrap().transport(token.map(str::to_owned))
}

/// Loads the device's director repository with tough, from the director's root v1.
pub async fn tough_director(
    app: &TestApp,
    device: &Device,
    datastore: &std::path::Path,
) -> Result<tough::Repository, tough::error::Error> {
    let root = app.client.get(app.url("/director/metadata/1.root.json")).send().await.unwrap().bytes().await.unwrap();
    let metadata = url::Url::parse(&app.url(&format!("/director/{}/metadata/", device.id))).unwrap();
    // The director serves no targets: devices download from the image repository.
    let targets = url::Url::parse(&app.url("/repo/targets/")).unwrap();
    tough::RepositoryLoader::new(&root.to_vec(), metadata, targets)
        .transport(agent_transport(&app.base, app.client.clone(), Some(&device.token)))
        .datastore(datastore)
        .load()
        .await
}
