//! The OpenAPI document is a contract: schemathesis (PyPI, pinned by
//! `scripts/ensure-venv.sh schemathesis`) generates requests for every operation from
//! `/api/openapi.json`, valid and invalid, with a fixed seed and a bounded budget, and checks each
//! answer against the document: no 5xx, only documented statuses, content types and headers, and
//! bodies that match their schemas. It runs as an admin, a viewer and, on the report and director
//! routes, the enrolled device itself (with its own id in the path), so those are reached beyond
//! authentication.
//!
//! The contract does not depend on the database: the test runs on the SQLite pass of the suite
//! and does nothing on the PostgreSQL pass. `PATCHGATE_CONTRACT_EXAMPLES` raises the budget.

use std::path::{Path, PathBuf};

use patchgate::services::auth::Role;

use crate::common::{firmware, spawn_app};
use crate::fleet::{Device, enrollment_token};

/// Generated cases per operation and phase unless `PATCHGATE_CONTRACT_EXAMPLES` says otherwise.
const DEFAULT_EXAMPLES: u32 = 50;

fn schemathesis() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let script = root.join("scripts/ensure-venv.sh");
    let out = std::process::Command::new("bash").arg(script).arg("schemathesis").output().unwrap();
    assert!(out.status.success(), "scripts/ensure-venv.sh schemathesis:\n{}", String::from_utf8_lossy(&out.stderr));
    root.join("target/schemathesis-venv/bin/st")
}

/// A `schemathesis.toml`: `token` for every operation but the device's own, which use the
/// device's token and id.
///
/// Some operations take bodies with what no schema can describe: ed25519 signatures over their
/// own content (enrollment, reports, product roles, ceremony metadata, a manufacturer's first
/// role), or rules across fields and what is stored (a root key to remove must be in the root;
/// a later stage may not lower a cohort's percent; a cohort may not be left without members or
/// selector). A schema-valid request to them may still be
/// refused with 400, so 400 is expected for generated valid data there, and only there; every
/// other check still applies to them (no 5xx, documented statuses, content types and bodies).
fn config(base: &str, token: &str, device: &Device, examples: u32) -> String {
    let semantic = r#"[operations.checks.positive_data_acceptance]
expected-statuses = ["2xx", "400", "401", "403", "404", "409"]"#;
    format!(
        r#"base-url = "{base}"
seed = 20261202
max-failures = 50
headers = {{ Authorization = "Bearer {token}" }}
[generation]
max-examples = {examples}
deterministic = true

[[operations]]
include-path = "/api/v1/devices/{{device_id}}/report"
headers = {{ Authorization = "Bearer {device_token}" }}
parameters = {{ device_id = "{device_id}" }}
{semantic}

[[operations]]
include-path = "/director/{{device_id}}/metadata/{{file}}"
headers = {{ Authorization = "Bearer {device_token}" }}
parameters = {{ device_id = "{device_id}" }}

[[operations]]
include-path-regex = "^/api/v1/(devices/enroll|products|products/\\{{product\\}}/(role|releases)|repo/(metadata|prepare)|rollouts|cohorts)$"
include-method = "POST"
{semantic}

[[operations]]
include-path = "/api/v1/cohorts/{{product}}/{{name}}"
include-method = "PUT"
{semantic}
"#,
        device_token = device.token,
        device_id = device.id,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_contract_violation() {
    if std::env::var("PATCHGATE_TEST_POSTGRES").is_ok_and(|v| !v.is_empty()) {
        eprintln!("the contract check runs on the SQLite pass only");
        return;
    }
    let st = schemathesis();
    let examples =
        std::env::var("PATCHGATE_CONTRACT_EXAMPLES").ok().and_then(|v| v.parse().ok()).unwrap_or(DEFAULT_EXAMPLES);
    let app = spawn_app().await;
    app.create_product("pump-x1", &["revA"]).await;
    app.publish("pump-x1", "1.0.0", "fw.bin", firmware(3, 4096)).await;
    let token = enrollment_token(&app, "pump-x1", &["lab"], 10).await;
    let device = Device::enroll(&app, "pump-st-1", "pump-x1", "revA", &token).await;
    let viewer = app.token(Role::Viewer, None).await;
    for (who, token) in [("admin", app.admin.clone()), ("viewer", viewer)] {
        let dir = app.dir.path().join(format!("contract-{who}"));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("schemathesis.toml");
        std::fs::write(&file, config(&app.base, &token, &device, examples)).unwrap();
        let out = tokio::process::Command::new(&st)
            .arg("--config-file")
            .arg(&file)
            .args(["run", &app.url("/api/openapi.json"), "--checks", "all", "--no-color"])
            .current_dir(&dir)
            .env("SCHEMATHESIS_HOOKS", "")
            .output()
            .await
            .unwrap();
        let report = String::from_utf8_lossy(&out.stdout);
        let tail: Vec<&str> = report.lines().rev().take(12).collect();
        eprintln!("schemathesis as {who}: {}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
        assert!(
            out.status.success(),
            "schemathesis as {who} found contract violations:\n{report}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
