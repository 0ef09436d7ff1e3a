//! The real client: Debian's SWUpdate (suricatta, hawkBit mode), installed by
//! `scripts/ensure-swupdate.sh`, against a server on a loopback port, with a signed `.swu`
//! built here whose script handler writes a file. One device installs and reports success (on
//! its restart, as SWUpdate does), one fails (its hardware is not the bundle's) and the gate
//! halts the rollout, and one whose rollout was paused before it started gets the cancellation
//! and acknowledges it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{TestApp, firmware, sha256_hex, spawn_app_with};

const PRODUCT: &str = "pump-x1";

fn run(cmd: &mut std::process::Command) {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A `.swu` signed with a fresh certificate (Debian's swupdate requires signed images): its
/// script handler appends to `$SWU_TEST_OUT/installed`. Returns the bundle and the certificate.
fn build_swu(dir: &Path) -> (Vec<u8>, PathBuf) {
    let cert = dir.join("signing.cert.pem");
    let key = dir.join("signing.key.pem");
    run(std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "30",
            "-subj",
            "/O=patchgate-test/CN=swu-signer",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert));
    let script = "#!/bin/sh\necho \"update.sh $*\" >> \"$SWU_TEST_OUT/installed\"\nexit 0\n";
    std::fs::write(dir.join("update.sh"), script).unwrap();
    let description = format!(
        "software =\n{{\n\tversion = \"1.1.0\";\n\thardware-compatibility: [ \"1.0\" ];\n\tscripts: (\n\t\t{{\n\t\t\t\
         filename = \"update.sh\";\n\t\t\ttype = \"shellscript\";\n\t\t\tsha256 = \"{}\";\n\t\t}}\n\t);\n}}\n",
        sha256_hex(script.as_bytes())
    );
    std::fs::write(dir.join("sw-description"), description).unwrap();
    run(std::process::Command::new("openssl")
        .current_dir(dir)
        .args(["cms", "-sign", "-in", "sw-description", "-out", "sw-description.sig", "-outform", "DER"])
        .args(["-nosmimecap", "-binary", "-signer"])
        .arg(&cert)
        .arg("-inkey")
        .arg(&key));
    // sw-description first, its signature second (cpio's "crc" format, as SWUpdate reads it).
    let mut cpio = std::process::Command::new("cpio")
        .current_dir(dir)
        .args(["-o", "-H", "crc", "--quiet"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(cpio.stdin.as_mut().unwrap(), b"sw-description\nsw-description.sig\nupdate.sh\n")
        .unwrap();
    let out = cpio.wait_with_output().unwrap();
    assert!(out.status.success(), "cpio failed");
    (out.stdout, cert)
}

/// Registers a DDI device tagged `lab`; its token.
async fn register(app: &TestApp, id: &str) -> String {
    let body = json!({"device_id": id, "product": PRODUCT, "hardware_id": "hw", "tags": ["lab"]});
    let res = app.client.post(app.url("/api/v1/ddi-devices")).bearer_auth(&app.admin).json(&body).send().await.unwrap();
    assert_eq!(res.status(), 201);
    res.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_owned()
}

/// One device's SWUpdate: its configuration, scratch directory and output.
struct Client {
    id: String,
    token: String,
    dir: PathBuf,
}

impl Client {
    fn new(root: &Path, id: &str, token: String) -> Self {
        let dir = root.join(id);
        std::fs::create_dir_all(dir.join("tmp")).unwrap();
        std::fs::create_dir_all(dir.join("out")).unwrap();
        Self { id: id.to_owned(), token, dir }
    }

    /// Starts `swupdate` as a hawkBit client of `app`, claiming hardware `board:revision`, with
    /// suricatta's extra arguments `state` (e.g. `-c 2`: "the update was installed").
    fn start(&self, app: &TestApp, cert: &Path, revision: &str, state: &str, identify: bool) -> tokio::process::Child {
        let identify = if identify { "identify : ( { name = \"board\"; value = \"test\"; } );\n" } else { "" };
        let config = format!(
            "globals : {{ verbose = true; loglevel = 6; }};\nsuricatta : {{ tenant = \"DEFAULT\"; id = \"{}\"; url = \"{}\"; \
             polldelay = 1; targettoken = \"{}\"; retry = 2; retrywait = 1; }};\n{identify}",
            self.id, app.base, self.token
        );
        let file = self.dir.join(format!("swupdate-{}.cfg", revision.replace(':', "-")));
        std::fs::write(&file, config).unwrap();
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("swupdate.log")).unwrap();
        tokio::process::Command::new("swupdate")
            .arg("-f")
            .arg(&file)
            .arg("-k")
            .arg(cert)
            .args(["-H", revision, "-u", state])
            .env("TMPDIR", self.dir.join("tmp"))
            .env("SWU_TEST_OUT", self.dir.join("out"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("running swupdate (scripts/ensure-swupdate.sh installs it)")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("swupdate.log")).unwrap_or_default()
    }

    fn installed(&self) -> String {
        std::fs::read_to_string(self.dir.join("out/installed")).unwrap_or_default()
    }
}

/// Waits (at most a minute) until `done` holds for the device as the admin API shows it.
async fn wait_for(app: &TestApp, client: &Client, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let started = Instant::now();
    loop {
        let device: Value = app.get_json(&format!("/api/v1/devices/{}", client.id)).await;
        if done(&device) {
            return device;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{}: {what} never happened: {device}\n{}",
            client.id,
            client.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn state(device: &Value) -> Option<&str> {
    device["assignments"][0]["state"].as_str()
}

async fn admin_post(app: &TestApp, path: &str, body: Value) -> u16 {
    app.client.post(app.url(path)).bearer_auth(&app.admin).json(&body).send().await.unwrap().status().as_u16()
}

/// A device's own poll, as a DDI client (to be assigned before its SWUpdate first runs).
async fn ddi_poll(app: &TestApp, client: &Client) -> Value {
    let url = app.url(&format!("/DEFAULT/controller/v1/{}", client.id));
    let res =
        app.client.get(url).header("Authorization", format!("TargetToken {}", client.token)).send().await.unwrap();
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swupdate_installs_fails_into_the_gate_and_acknowledges_a_cancellation() {
    let status = std::process::Command::new("bash").arg("scripts/ensure-swupdate.sh").status().unwrap();
    assert!(status.success(), "scripts/ensure-swupdate.sh failed");
    let work = tempfile::tempdir().unwrap();
    let (bundle, cert) = build_swu(work.path());
    // The shortest poll interval there is: SWUpdate sleeps as long as the server says.
    let app = spawn_app_with(|c| c.device_poll_seconds = 10).await;
    app.create_product(PRODUCT, &["hw"]).await;
    app.publish(PRODUCT, "1.0.0", "update.swu", firmware(1, 512)).await;
    app.publish(PRODUCT, "1.1.0", "update.swu", bundle).await;
    let cohort = json!({"name": "lab", "product": PRODUCT, "selector": {"tags": ["lab"]}});
    assert_eq!(admin_post(&app, "/api/v1/cohorts", cohort).await, 201);
    let ok = Client::new(work.path(), "swu-ok", register(&app, "swu-ok").await);
    let bad = Client::new(work.path(), "swu-bad", register(&app, "swu-bad").await);
    let late = Client::new(work.path(), "swu-late", register(&app, "swu-late").await);
    let rollout = json!({"id": "r1", "product": PRODUCT, "version": "1.1.0",
        "stages": [{"cohort": "lab", "percent": 100, "soak_minutes": 10}],
        "gate": {"max_failure_rate": 0.25, "min_reports": 2, "stall_minutes": 600}});
    assert_eq!(admin_post(&app, "/api/v1/rollouts", rollout).await, 201);
    assert_eq!(admin_post(&app, "/api/v1/rollouts/r1/start", json!({})).await, 200);

    // Assigned, then the rollout pauses before the device started: SWUpdate is told to cancel
    // and acknowledges; nothing is installed.
    assert!(ddi_poll(&app, &late).await["_links"]["deploymentBase"].is_object());
    app.clock.set_offset(jiff::SignedDuration::from_secs(5));
    assert_eq!(admin_post(&app, "/api/v1/rollouts/r1/pause", json!({})).await, 200);
    let mut swupdate = late.start(&app, &cert, "test:1.0", "", false);
    let started = Instant::now();
    loop {
        let links = ddi_poll(&app, &late).await;
        if links.get("_links").is_none_or(|l| l.get("cancelAction").is_none()) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "no acknowledgement: {links}\n{}", late.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    swupdate.kill().await.unwrap();
    assert!(late.log().contains("cancelAction"), "{}", late.log());
    assert_eq!(late.installed(), "", "a canceled action installs nothing");
    let device: Value = app.get_json("/api/v1/devices/swu-late").await;
    assert_eq!(state(&device), Some("withdrawn"), "{device}");
    app.clock.set_offset(jiff::SignedDuration::from_secs(10));
    assert_eq!(admin_post(&app, "/api/v1/rollouts/r1/resume", json!({})).await, 200);

    // Installs: attributes first (the poll asks for them), then, a poll interval later, the
    // bundle, whose script runs.
    // SWUpdate reports "All Chunks Installed." and leaves the action open until it restarts
    // into the new version (`-c 2`), which closes it with success.
    let mut swupdate = ok.start(&app, &cert, "test:1.0", "", true);
    wait_for(&app, &ok, "the install", |d| {
        d["attempt"]["detail"].as_str().is_some_and(|s| s.contains("All Chunks Installed"))
    })
    .await;
    swupdate.kill().await.unwrap();
    assert!(ok.installed().contains("postinst"), "the bundle's script ran: {:?}\n{}", ok.installed(), ok.log());
    let device: Value = app.get_json("/api/v1/devices/swu-ok").await;
    assert_eq!(device["attributes"]["board"], "test", "{device}");
    assert_eq!(state(&device), Some("installing"), "{device}");
    let mut swupdate = ok.start(&app, &cert, "test:1.0", "-c 2", false);
    let device = wait_for(&app, &ok, "success", |d| state(d) == Some("installed")).await;
    swupdate.kill().await.unwrap();
    assert_eq!(device["installed"]["version"], "1.1.0", "{device}");

    // Fails: its hardware is not the bundle's. One failure in two reports halts the rollout.
    let mut swupdate = bad.start(&app, &cert, "other:2.0", "", false);
    let device = wait_for(&app, &bad, "the failure", |d| state(d) == Some("failed")).await;
    swupdate.kill().await.unwrap();
    assert_eq!(bad.installed(), "", "{device}");
    let rollout: Value = app.get_json("/api/v1/rollouts/r1").await;
    assert_eq!(rollout["state"], "halted", "{rollout}");
}
