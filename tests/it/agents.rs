//! Device agents in tests: the real `patchgate-agent` library, enrolled against a test server
//! (or a hostile mirror in front of it), with short retry timings, plus readers for what the
//! server recorded about a device.

use std::path::Path;
use std::time::Duration;

use patchgate_agent::download::Retry;
use patchgate_agent::{Agent, EnrollOptions, Tuning};
use serde_json::Value;

use crate::common::TestApp;

/// Tuning for tests: retries in milliseconds, a refresh on every poll.
pub fn fast() -> Tuning {
    Tuning {
        retry: Retry { retries: 2, backoff: Duration::from_millis(20), backoff_max: Duration::from_millis(100) },
        refresh_every: Duration::ZERO,
        default_poll: Duration::from_secs(1),
    }
}

/// The roots a device is provisioned with: image root v1 and director root v1.
pub async fn provisioned_roots(app: &TestApp) -> (Vec<u8>, Vec<u8>) {
    let director = app.client.get(app.url("/director/metadata/1.root.json")).send().await.unwrap();
    assert_eq!(director.status(), 200);
    (app.root_v1().await, director.bytes().await.unwrap().to_vec())
}

/// Enrolls an agent for `id` talking to `server` (the app's base, or a mirror's).
pub async fn enroll_agent(
    app: &TestApp,
    server: &str,
    id: &str,
    product: &str,
    hw: &str,
    token: &str,
    dir: &Path,
) -> Agent {
    let (image_root, director_root) = provisioned_roots(app).await;
    let opts = EnrollOptions {
        server: server.to_owned(),
        enrollment_token: token.to_owned(),
        device_id: id.to_owned(),
        product: product.to_owned(),
        hardware_id: hw.to_owned(),
        image_root,
        director_root,
        state_dir: dir.to_path_buf(),
        ca_file: None,
        allow_dev_keys: true,
        running_sha256: None,
    };
    let mut agent = Agent::enroll(opts, None).await.unwrap();
    agent.set_tuning(fast());
    agent
}

/// The device as the server shows it (`GET /api/v1/devices/{id}`).
pub async fn device_detail(app: &TestApp, id: &str) -> Value {
    app.get_json(&format!("/api/v1/devices/{id}")).await
}

/// The attempts of the device's reports, newest first: `(name, state, detail)`.
pub async fn reported_attempts(app: &TestApp, id: &str) -> Vec<(String, String, String)> {
    let detail = device_detail(app, id).await;
    detail["reports"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| !r["attempt"].is_null())
        .map(|r| {
            let a = &r["attempt"];
            (
                a["name"].as_str().unwrap_or_default().to_owned(),
                a["state"].as_str().unwrap_or_default().to_owned(),
                a["detail"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// Runs the `patchgate-agent` command line in-process; returns the exit code and stdout.
pub async fn agent_cli(args: &[&str]) -> (u8, String) {
    let mut out = Vec::new();
    let mut argv = vec!["patchgate-agent"];
    argv.extend_from_slice(args);
    let code = patchgate_agent::cli::run(argv, &mut out).await;
    (code, String::from_utf8(out).unwrap())
}
