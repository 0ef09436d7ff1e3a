//! How the agent installs: downloads resume with Range after a cut connection and after a
//! restart, a precondition can make it wait, a failing hook or the wrong image after the reboot
//! is a reported failure, and a restored state directory recovers its report counter.

use patchgate_agent::{AgentError, InstallOptions, InstallOutcome};
use serde_json::{Value, json};

use crate::agents::{agent_cli, device_detail, enroll_agent, fast, reported_attempts};
use crate::common::{TestApp, firmware, spawn_app};
use crate::fleet::enrollment_token;
use crate::hostile::Mirror;

const PRODUCT: &str = "pump-x1";
const HW: &str = "pump-x1-revA";
const SIZE: usize = 2 * 1024 * 1024;

/// A server with 1.0.0 published and rolled out to 100 % of the `fleet` cohort; the image.
async fn assigned_server() -> (TestApp, Vec<u8>, String) {
    let app = spawn_app().await;
    app.create_product(PRODUCT, &[HW]).await;
    let image = firmware(7, SIZE);
    app.publish(PRODUCT, "1.0.0", "fw.bin", image.clone()).await;
    let token = enrollment_token(&app, PRODUCT, &["fleet:all"], 100).await;
    for (path, body) in [
        ("/api/v1/cohorts", json!({"name": "fleet", "product": PRODUCT, "selector": {"tags": ["fleet:all"]}})),
        (
            "/api/v1/rollouts",
            json!({"id": "r-1", "product": PRODUCT, "version": "1.0.0",
            // A gate that never halts and a soak that does not end: these tests look at one device.
            "stages": [{"cohort": "fleet", "percent": 100, "soak_minutes": 60}],
            "gate": {"max_failure_rate": 1.0, "min_reports": 1, "stall_minutes": 1440}}),
        ),
        ("/api/v1/rollouts/r-1/start", json!({})),
    ] {
        let res = app.client.post(app.url(path)).bearer_auth(&app.admin).json(&body).send().await.unwrap();
        assert!(res.status().is_success(), "{path}: {}", res.text().await.unwrap());
    }
    (app, image, token)
}

#[tokio::test]
async fn a_decommissioned_device_is_denied_for_good_and_run_stops_with_the_reason() {
    let (app, _, token) = assigned_server().await;
    let state = app.dir.path().join("state");
    let mut agent = enroll_agent(&app, &app.base, "pump-0001", PRODUCT, HW, &token, &state).await;
    let res = app
        .client
        .post(app.url("/api/v1/devices/pump-0001/decommission"))
        .bearer_auth(&app.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    let err = agent.check().await.unwrap_err();
    assert!(matches!(&err, AgentError::Denied(m) if m.contains("403") && m.contains("decommissioned")), "{err}");
    assert_eq!(err.exit_code(), 6, "not 4: waiting will not help");
    // `run` does not poll a server that denies the device forever: it stops with the denial.
    let opts = slot_opts(&app);
    let run = agent.run(&opts, std::future::pending(), |_| {});
    let err = tokio::time::timeout(std::time::Duration::from_secs(30), run)
        .await
        .expect("run stopped on its own")
        .unwrap_err();
    assert!(matches!(err, AgentError::Denied(_)), "{err}");
    assert!(!app.dir.path().join("slot.bin").exists());
}

fn slot_opts(app: &TestApp) -> InstallOptions {
    InstallOptions { slot: app.dir.path().join("slot.bin"), hook: None, precondition: None, running_image: None }
}

fn ranged(mirror: &Mirror) -> Vec<String> {
    mirror.requests().into_iter().filter(|r| r.contains("/repo/targets/") && r.contains(" range=bytes=")).collect()
}

#[tokio::test]
async fn a_cut_download_resumes_with_range_in_the_same_run() {
    let (app, image, token) = assigned_server().await;
    let mirror = Mirror::start(&app.base);
    let state = app.dir.path().join("state");
    let mut agent = enroll_agent(&app, &mirror.base, "pump-0001", PRODUCT, HW, &token, &state).await;
    mirror.cut_once("/repo/targets/", SIZE / 2);
    let outcome = agent.install(&slot_opts(&app)).await.unwrap();
    assert!(matches!(outcome, InstallOutcome::Installed(_)), "{outcome:?}");
    assert_eq!(std::fs::read(app.dir.path().join("slot.bin")).unwrap(), image);
    let ranged = ranged(&mirror);
    assert_eq!(ranged.len(), 1, "one resumed request: {:?}", mirror.requests());
    assert!(ranged[0].ends_with(&format!("range=bytes={}-", SIZE / 2)), "{ranged:?}");
    assert_eq!(std::fs::read_dir(state.join("staging")).unwrap().count(), 0, "the staging file is gone");
}

#[tokio::test]
async fn a_download_cut_before_a_restart_resumes_where_it_stopped() {
    let (app, image, token) = assigned_server().await;
    let mirror = Mirror::start(&app.base);
    let state = app.dir.path().join("state");
    let mut agent = enroll_agent(&app, &mirror.base, "pump-0001", PRODUCT, HW, &token, &state).await;
    let mut no_retry = fast();
    no_retry.retry.retries = 0;
    agent.set_tuning(no_retry);
    mirror.cut_once("/repo/targets/", SIZE / 4);
    let err = agent.install(&slot_opts(&app)).await.unwrap_err();
    assert!(matches!(err, AgentError::Network(_)), "{err}");
    assert_eq!(err.exit_code(), 4);
    assert!(!app.dir.path().join("slot.bin").exists(), "nothing reached the slot");
    let parts: Vec<_> = std::fs::read_dir(state.join("staging")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(parts.len(), 1);
    assert_eq!(std::fs::metadata(&parts[0]).unwrap().len(), (SIZE / 4) as u64, "what arrived was kept");
    // A network error is not a failure: the device reported `downloading`, nothing final.
    assert_eq!(device_detail(&app, "pump-0001").await["attempt"]["state"], "downloading");

    // "Restart": a new agent process on the same state directory.
    drop(agent);
    let mut agent = patchgate_agent::Agent::open(&state, None, fast()).unwrap();
    let outcome = agent.install(&slot_opts(&app)).await.unwrap();
    assert!(matches!(outcome, InstallOutcome::Installed(_)), "{outcome:?}");
    assert_eq!(std::fs::read(app.dir.path().join("slot.bin")).unwrap(), image);
    let ranged = ranged(&mirror);
    assert_eq!(ranged.len(), 1, "{:?}", mirror.requests());
    assert!(ranged[0].ends_with(&format!("range=bytes={}-", SIZE / 4)), "{ranged:?}");
}

#[tokio::test]
async fn a_precondition_that_says_not_now_makes_the_agent_wait_and_report_it() {
    let (app, image, token) = assigned_server().await;
    let state = app.dir.path().join("state");
    let mut agent = enroll_agent(&app, &app.base, "pump-0001", PRODUCT, HW, &token, &state).await;
    let mut opts = slot_opts(&app);
    opts.precondition = Some(vec!["false".into()]);
    let outcome = agent.install(&opts).await.unwrap();
    assert!(matches!(outcome, InstallOutcome::Waiting(_)), "{outcome:?}");
    assert!(!opts.slot.exists(), "the slot is not touched while the pump says no");
    let (name, state_name, detail) = reported_attempts(&app, "pump-0001").await.remove(0);
    assert_eq!((name.as_str(), state_name.as_str()), ("pump-x1/1.0.0/fw.bin", "downloading"));
    assert!(detail.contains("waiting"), "{detail}");
    opts.precondition = Some(vec!["true".into()]);
    assert!(matches!(agent.install(&opts).await.unwrap(), InstallOutcome::Installed(_)));
    assert_eq!(std::fs::read(&opts.slot).unwrap(), image);
}

#[tokio::test]
async fn the_hook_runs_on_the_written_slot_and_its_failure_is_reported() {
    let (app, image, token) = assigned_server().await;
    let state = app.dir.path().join("state");
    let mut agent = enroll_agent(&app, &app.base, "pump-0001", PRODUCT, HW, &token, &state).await;
    let mut opts = slot_opts(&app);
    // The hook gets the slot as its last argument and the target in its environment.
    let copy = app.dir.path().join("flashed.bin");
    let script = format!("test \"$PATCHGATE_TARGET_VERSION\" = 1.0.0 && cp \"$1\" {} && exit 3", copy.display());
    opts.hook = Some(vec!["sh".into(), "-c".into(), script, "hook".into()]);
    let err = agent.install(&opts).await.unwrap_err();
    assert!(matches!(err, AgentError::Install(_)), "{err}");
    assert_eq!(err.exit_code(), 5);
    assert_eq!(std::fs::read(&copy).unwrap(), image, "the hook saw the verified image");
    let (_, state_name, detail) = reported_attempts(&app, "pump-0001").await.remove(0);
    assert_eq!(state_name, "failed");
    assert!(detail.contains("exit status: 3"), "{detail}");
}

#[tokio::test]
async fn confirming_the_wrong_running_image_is_a_failure_and_a_restored_counter_recovers() {
    let (app, _, token) = assigned_server().await;
    let state = app.dir.path().join("state");
    let mut agent = enroll_agent(&app, &app.base, "pump-0001", PRODUCT, HW, &token, &state).await;
    let backup = app.dir.path().join("backup");
    crate::common::copy_dir(&state, &backup);
    assert!(matches!(agent.install(&slot_opts(&app)).await.unwrap(), InstallOutcome::Installed(_)));
    drop(agent);
    let p = state.to_str().unwrap();
    let (code, _) = agent_cli(&["confirm", "--state-dir", p, "--running-sha256", &"ab".repeat(32)]).await;
    assert_eq!(code, 5, "the device came back running another image");
    let d = device_detail(&app, "pump-0001").await;
    assert_eq!(d["attempt"]["state"], "failed", "{d}");
    assert!(d["installed"].is_null(), "{d}");
    let r: Value = app.get_json("/api/v1/rollouts/r-1").await;
    assert_eq!(r["stages"][0]["failed"], 1, "{r}");
    // The polling loop does not re-flash an image that failed; an explicit install would.
    let mut polling = patchgate_agent::Agent::open(&state, None, fast()).unwrap();
    let mut events = Vec::new();
    let stop = tokio::time::sleep(std::time::Duration::from_millis(1500));
    polling.run(&slot_opts(&app), stop, |e| events.push(format!("{e:?}"))).await.unwrap();
    assert!(!events.is_empty() && events.iter().all(|e| e.starts_with("Ok(FailedBefore(")), "{events:?}");
    assert_eq!(device_detail(&app, "pump-0001").await["attempt"]["state"], "failed");

    // A state directory restored from before those reports: its counter is behind the server's.
    // The agent moves past what the server saw instead of failing forever.
    let last_seen = device_detail(&app, "pump-0001").await["last_counter"].as_u64().unwrap();
    let mut restored = patchgate_agent::Agent::open(&backup, None, fast()).unwrap();
    restored.report().await.unwrap();
    let after = device_detail(&app, "pump-0001").await["last_counter"].as_u64().unwrap();
    assert_eq!(after, last_seen + 1);
}

/// Runs `patchgate-agent simulate` against `app` with the roots it serves, for
/// `--devices devices` named `prefix-NNNNN`, plus `extra` arguments; the exit code and stdout.
async fn simulate(app: &TestApp, token: &str, devices: &str, prefix: &str, extra: &[&str]) -> (u8, String) {
    let (image_root, director_root) = crate::agents::provisioned_roots(app).await;
    let dir = app.dir.path();
    std::fs::write(dir.join("image-root.json"), image_root).unwrap();
    std::fs::write(dir.join("director-root.json"), director_root).unwrap();
    let path = |name: &str| dir.join(name).to_str().unwrap().to_owned();
    let (image, director) = (path("image-root.json"), path("director-root.json"));
    let mut args = vec!["simulate", "--server", &app.base, "--enrollment-token", token, "--image-root", &image];
    args.extend(["--director-root", &director, "--devices", devices, "--product", PRODUCT, "--id-prefix", prefix]);
    args.push("--allow-dev-keys");
    args.extend(extra);
    agent_cli(&args).await
}

#[tokio::test]
async fn the_simulate_command_runs_a_small_fleet_and_prints_its_table() {
    let (app, _, token) = assigned_server().await;
    // No --hardware-id: the simulator reads it from the product's newest release (verified).
    let (code, out) = simulate(&app, &token, "5", "cli", &["--interval", "0.2", "--duration", "2"]).await;
    assert_eq!(code, 0, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(&header[..6], ["devices", "polls", "installs", "failures", "rejections", "errors"], "{out}");
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!((row[0], row[2], row[3], row[4], row[5]), ("5", "5", "0", "0", "0"), "{out}");
    assert!(row[1].parse::<u32>().unwrap() >= 10, "several polls each: {out}");
    for n in 0..5 {
        assert_eq!(device_detail(&app, &format!("cli-{n:05}")).await["installed"]["version"], "1.0.0");
    }
}

#[tokio::test]
async fn the_simulator_stops_at_its_duration_even_with_a_longer_interval() {
    let (app, _, token) = assigned_server().await;
    let started = std::time::Instant::now();
    // Devices wait up to half an interval (here 15 s) before their first poll and a whole one
    // between polls: neither may carry the run past its 2 s.
    let extra = ["--hardware-id", HW, "--interval", "30", "--duration", "2"];
    let (code, out) = simulate(&app, &token, "3", "short", &extra).await;
    assert_eq!(code, 0, "{out}");
    let took = started.elapsed();
    // Enrollment plus two seconds, plus at most one poll (a first install of 2 MiB) in flight.
    assert!(took < std::time::Duration::from_secs(12), "the 2 s run took {took:?}: {out}");
}

#[tokio::test]
async fn enrolling_with_the_running_image_records_it_so_it_guards_the_first_update() {
    let (app, image, token) = assigned_server().await;
    let (image_root, director_root) = crate::agents::provisioned_roots(&app).await;
    let dir = app.dir.path();
    std::fs::write(dir.join("image-root.json"), image_root).unwrap();
    std::fs::write(dir.join("director-root.json"), director_root).unwrap();
    let path = |name: &str| dir.join(name).to_str().unwrap().to_owned();
    let enroll = |id: &'static str, sha: String| {
        let (token, base, image_root, director_root, state) =
            (token.clone(), app.base.clone(), path("image-root.json"), path("director-root.json"), path(id));
        async move {
            agent_cli(&[
                "enroll",
                "--server",
                &base,
                "--enrollment-token",
                &token,
                "--device-id",
                id,
                "--product",
                PRODUCT,
                "--hardware-id",
                HW,
                "--image-root",
                &image_root,
                "--director-root",
                &director_root,
                "--state-dir",
                &state,
                "--allow-dev-keys",
                "--running-sha256",
                &sha,
            ])
            .await
        }
    };
    let (code, out) = enroll("pump-0001", crate::common::sha256_hex(&image)).await;
    assert_eq!(code, 0, "{out}");
    let installed: Value =
        serde_json::from_slice(&std::fs::read(dir.join("pump-0001/installed.json")).unwrap()).unwrap();
    assert_eq!(installed["version"], "1.0.0");
    assert_eq!(installed["name"], "pump-x1/1.0.0/fw.bin");
    // It runs the assigned image already: nothing to install.
    let (code, out) = agent_cli(&["install", "--state-dir", &path("pump-0001"), "--slot", &path("slot")]).await;
    assert_eq!((code, serde_json::from_str::<Value>(&out).unwrap()["outcome"].clone()), (0, json!("nothing")));
    // An image the repository does not list is a usage error, not a guess.
    let (code, _) = enroll("pump-0002", "ab".repeat(32)).await;
    assert_eq!(code, 2);
}
