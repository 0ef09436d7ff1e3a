//! `spawn_app()`: a real patchgate server on a loopback port with a fresh database (a temp
//! SQLite file, or a fresh PostgreSQL database when `PATCHGATE_TEST_POSTGRES` names a server),
//! its own copy of the development keys, and an admin token.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use jiff::SignedDuration;
use patchgate::clock::OffsetClock;
use patchgate::config::Config;
use patchgate::services::Services;
use patchgate::services::auth::{Caller, Role, create_token};
use patchgate::startup::Application;
use tempfile::TempDir;

/// A running server for one test.
pub struct TestApp {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The server's services (database, keys, clock).
    pub services: Services,
    /// The server's clock; tests move it.
    pub clock: Arc<OffsetClock>,
    /// An admin API token.
    pub admin: String,
    /// HTTP client.
    pub client: reqwest::Client,
    /// Data, keys and scratch space; removed when the test ends.
    pub dir: TempDir,
}

/// A server with default test configuration.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Copies a directory tree.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// The repository's `keys-example/`.
pub fn dev_keys_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("keys-example")
}

/// A fresh database URL: PostgreSQL if `PATCHGATE_TEST_POSTGRES` is set, else `None` (SQLite
/// in the data directory).
pub async fn fresh_database_url() -> Option<String> {
    let admin_url = std::env::var("PATCHGATE_TEST_POSTGRES").ok().filter(|u| !u.is_empty())?;
    let name = format!("patchgate_t_{}", patchgate::storage::random_hex(6));
    let db = sea_orm::Database::connect(&admin_url).await.expect("connecting to PATCHGATE_TEST_POSTGRES");
    sea_orm::ConnectionTrait::execute_unprepared(&db, &format!("CREATE DATABASE {name}")).await.unwrap();
    db.close().await.unwrap();
    let mut url = url::Url::parse(&admin_url).unwrap();
    url.set_path(&format!("/{name}"));
    Some(url.to_string())
}

/// A test configuration in `dir` (keys copied from `keys-example/`).
pub async fn test_config(dir: &Path) -> Config {
    let keys = dir.join("keys");
    if !keys.exists() {
        copy_dir(&dev_keys_dir(), &keys);
    }
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.join("data"),
        keys_dir: keys,
        database_url: fresh_database_url().await,
        // Tests move the clock and run the refresh themselves; `jobs.rs` tests the job.
        refresh_interval_seconds: 0,
        rollout_interval_seconds: 0,
        blob_sweep_interval_seconds: 0,
        delta_interval_seconds: 0,
        ..Config::default()
    }
}

/// A server whose configuration `tweak` may change first.
pub async fn spawn_app_with(tweak: impl FnOnce(&mut Config)) -> TestApp {
    spawn_app_at(SignedDuration::ZERO, tweak).await
}

/// A server whose clock starts `offset` from the wall clock.
pub async fn spawn_app_at(offset: SignedDuration, tweak: impl FnOnce(&mut Config)) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path()).await;
    tweak(&mut config);
    spawn_app_from(dir, config, offset).await
}

/// A server on `config`, whose files live in `dir`.
pub async fn spawn_app_from(dir: TempDir, config: Config, offset: SignedDuration) -> TestApp {
    let clock = Arc::new(OffsetClock::new(offset));
    let app = Application::build(config, clock.clone()).await.expect("building the app");
    let base = format!("http://127.0.0.1:{}", app.port());
    let services = app.services().clone();
    tokio::spawn(app.run_until_stopped());
    let admin = create_token(&services, &Caller::operator(), "test-admin", Role::Admin, None).await.unwrap();
    TestApp { base, services, clock, admin, client: reqwest::Client::new(), dir }
}

impl TestApp {
    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// A token with `role`, optionally for one product.
    pub async fn token(&self, role: Role, product: Option<&str>) -> String {
        self.try_token(&format!("t-{}", patchgate::storage::random_hex(3)), role, product).await.unwrap()
    }

    /// Creates a token named `name`, or says why not.
    pub async fn try_token(
        &self,
        name: &str,
        role: Role,
        product: Option<&str>,
    ) -> Result<String, patchgate::services::ServiceError> {
        let product = product.map(|p| patchgate::domain::names::ProductName::parse(p).unwrap());
        create_token(&self.services, &Caller::operator(), name, role, product.as_ref()).await
    }

    /// Creates a product (asserts 201).
    pub async fn create_product(&self, name: &str, hardware_ids: &[&str]) {
        let res = self
            .client
            .post(self.url("/api/v1/products"))
            .bearer_auth(&self.admin)
            .json(&serde_json::json!({"name": name, "hardware_ids": hardware_ids}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    }

    /// Publishes `content` as `file_name` (returns the response; asserts nothing).
    pub async fn publish_as(
        &self,
        token: &str,
        product: &str,
        version: &str,
        file_name: &str,
        content: Vec<u8>,
    ) -> reqwest::Response {
        let part = reqwest::multipart::Part::bytes(content).file_name(file_name.to_owned());
        let form = reqwest::multipart::Form::new().text("version", version.to_owned()).part("file", part);
        self.client
            .post(self.url(&format!("/api/v1/products/{product}/releases")))
            .bearer_auth(token)
            .multipart(form)
            .send()
            .await
            .unwrap()
    }

    /// Publishes with the admin token and asserts 201; returns the JSON answer.
    pub async fn publish(&self, product: &str, version: &str, file_name: &str, content: Vec<u8>) -> serde_json::Value {
        let res = self.publish_as(&self.admin, product, version, file_name, content).await;
        let status = res.status();
        let body: serde_json::Value = res.json().await.unwrap();
        assert_eq!(status, 201, "{body}");
        body
    }

    /// GET `path` with the admin token; the answer as JSON.
    pub async fn post_json(&self, path: &str, body: &serde_json::Value) -> serde_json::Value {
        let res = self.client.post(self.url(path)).bearer_auth(&self.admin).json(body).send().await.unwrap();
        let status = res.status();
        let answer: serde_json::Value = res.json().await.unwrap_or_default();
        assert!(status.is_success(), "POST {path}: {status} {answer}");
        answer
    }

    /// GET `path` as admin, as JSON.
    pub async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> T {
        self.client.get(self.url(path)).bearer_auth(&self.admin).send().await.unwrap().json().await.unwrap()
    }

    /// Image metadata file `name` as served.
    pub async fn metadata(&self, name: &str) -> reqwest::Response {
        self.client.get(self.url(&format!("/repo/metadata/{name}"))).send().await.unwrap()
    }

    /// Image root version 1, as a device would be provisioned with.
    pub async fn root_v1(&self) -> Vec<u8> {
        let res = self.metadata("1.root.json").await;
        assert_eq!(res.status(), 200);
        res.bytes().await.unwrap().to_vec()
    }

    /// A tough client loaded from `root` with a datastore in `datastore`.
    pub async fn tough(&self, root: &[u8], datastore: &Path) -> Result<tough::Repository, tough::error::Error> {
        let metadata = url::Url::parse(&self.url("/repo/metadata/")).unwrap();
        let targets = url::Url::parse(&self.url("/repo/targets/")).unwrap();
        tough::RepositoryLoader::new(&root.to_vec(), metadata, targets).datastore(datastore).load().await
    }
}

/// Reads a whole target through tough (hash and length checked by tough as it streams).
pub async fn tough_read(repo: &tough::Repository, name: &str) -> Result<Vec<u8>, String> {
    use futures_util::StreamExt;
    let name = tough::TargetName::new(name).map_err(|e| e.to_string())?;
    let mut stream = repo.read_target(&name).await.map_err(|e| e.to_string())?.ok_or("target not listed")?;
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk.map_err(|e| e.to_string())?);
    }
    Ok(out)
}

/// `n` pseudo-random bytes (distinct per `seed`).
pub fn firmware(seed: u8, n: usize) -> Vec<u8> {
    let mut state = u64::from(seed).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

/// SHA-256 hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}
