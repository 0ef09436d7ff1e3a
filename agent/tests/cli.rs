//! The `patchgate-agent` binary's contract that needs no server: usage errors exit 2, a state
//! directory that was never enrolled is a usage error, and `run` stops cleanly on SIGTERM even
//! while its server is unreachable (backing off).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests fail loudly by design")]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn agent() -> Command {
    Command::new(env!("CARGO_BIN_EXE_patchgate-agent"))
}

#[test]
fn usage_errors_exit_2_with_a_message() {
    let out = agent().args(["install", "--state-dir", "/nonexistent"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "missing --slot");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--slot"));
    let out = agent().arg("frobnicate").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let dir = tempfile::tempdir().unwrap();
    let out = agent().args(["check", "--state-dir"]).arg(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "never enrolled");
    assert!(String::from_utf8_lossy(&out.stderr).contains("not an enrolled state directory"));
    let out = agent().arg("--help").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("Exit codes:") && help.contains("4  network or server error"), "{help}");
    assert!(help.contains("6  denied by the server for good"), "{help}");
}

#[test]
fn enroll_refuses_plain_http_to_another_host_and_development_roots() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root.json");
    // A root trusting a development key (keyid from keys-example/).
    let dev = patchgate_protocol::keys::DEV_KEYIDS[0];
    std::fs::write(&root, format!(r#"{{"signed":{{"_type":"root","keys":{{"{dev}":{{}}}}}},"signatures":[]}}"#))
        .unwrap();
    let enroll = |server: &str, extra: &[&str]| {
        let mut cmd = agent();
        cmd.args(["enroll", "--server", server, "--enrollment-token", "pge_x", "--device-id", "d1", "--product", "p"])
            .args(["--hardware-id", "h", "--image-root"])
            .arg(&root)
            .arg("--director-root")
            .arg(&root)
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .args(extra);
        cmd.output().unwrap()
    };
    let out = enroll("http://127.0.0.1:9", &[]);
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("development_keys"));
    let out = enroll("http://updates.example.com", &["--allow-dev-keys"]);
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("insecure_url"));
    // Loopback with nothing listening: a network error, after the checks passed.
    let out = enroll("http://127.0.0.1:9", &["--allow-dev-keys"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    // The cause, not only reqwest's "error sending request".
    assert!(stderr.to_lowercase().contains("connection refused"), "{stderr}");
}

#[test]
fn run_stops_cleanly_on_sigterm_while_backing_off() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path();
    let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    let pem = ed25519_dalek::pkcs8::EncodePrivateKey::to_pkcs8_pem(&key, Default::default()).unwrap();
    std::fs::write(state.join("device.key"), pem.as_bytes()).unwrap();
    std::fs::write(state.join("token"), "pgd_test").unwrap();
    std::fs::write(
        state.join("device.json"),
        r#"{"server":"http://127.0.0.1:9","device_id":"d1","product":"p","hardware_id":"h"}"#,
    )
    .unwrap();
    let mut child = agent()
        .args(["run", "--state-dir"])
        .arg(state)
        .arg("--slot")
        .arg(state.join("slot"))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(child.try_wait().unwrap().is_none(), "still polling (backing off)");
    let started = Instant::now();
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(started.elapsed() < Duration::from_secs(5), "stopped promptly");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("network or server error") && stderr.contains("stopped"), "{stderr}");
    // Each attempt took a counter (persisted before sending), none was reused.
    let counter: u64 = std::fs::read_to_string(state.join("counter")).unwrap().trim().parse().unwrap();
    assert!(counter >= 2, "{counter}");
}
