//! A server set up as in production: the image root keys (3, threshold 2), the top-level targets
//! key and the director root key live with their holders in separate directories, the server
//! holds only online keys; products are manufacturer-signed. Everything goes through the real
//! `patchgate` binary (ceremonies, publishing) and the real agent, with python-tuf's ngclient
//! and tough checking what clients see.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;

use jiff::SignedDuration;
use patchgate::services::auth::Caller;
use patchgate::tuf::keydir;
use patchgate_agent::{Agent, AgentError, InstallOptions, InstallOutcome};
use serde_json::{Value, json};

use crate::agents::{enroll_agent, reported_attempts};
use crate::common::{TestApp, firmware, sha256_hex, spawn_app_from, test_config};
use crate::fleet::enrollment_token;

pub const PRODUCT: &str = "pump-x1";
pub const HW: &str = "pump-x1-revA";
const TAG: &str = "fleet:all";

/// A production-shaped server and the key holders' directories.
pub struct Production {
    pub app: TestApp,
    /// `holders/h1/root.pem` … `h3`, `holders/targets/targets.pem`, `holders/director/root.pem`,
    /// `holders/maker/product.pem` (the manufacturer's CI).
    pub holders: PathBuf,
    /// The roots a device is provisioned with (v1).
    pub image_root_v1: Vec<u8>,
    rollouts: u32,
    pub agent: Option<Agent>,
    pub opts: Option<InstallOptions>,
}

/// The `patchgate` binary with no stray configuration from the environment.
pub fn patchgate() -> tokio::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_patchgate"));
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("PATCHGATE_")) {
        cmd.env_remove(key);
    }
    tokio::process::Command::from(cmd)
}

/// Runs `patchgate ARGS` and asserts success; returns stdout.
pub async fn run_ok(args: &[&str]) -> String {
    let out = run(args).await;
    assert!(
        out.status.success(),
        "patchgate {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `patchgate ARGS`.
pub async fn run(args: &[&str]) -> Output {
    patchgate().args(args).output().await.unwrap()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

impl Production {
    /// Generates the key set, initialises both repositories "on the offline machine", hands the
    /// offline keys to their holders, and starts the server on the online keys alone.
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys");
        keydir::generate(&keys, 3, 2).unwrap();
        let config = test_config(dir.path()).await;
        let svc =
            patchgate::startup::build_services(config.clone(), Arc::new(patchgate::clock::SystemClock)).await.unwrap();
        patchgate::services::init_repo::init_repositories(&svc, &Caller::operator()).await.unwrap();
        drop(svc);
        let holders = dir.path().join("holders");
        for i in 1..=3 {
            let to = holders.join(format!("h{i}"));
            std::fs::create_dir_all(&to).unwrap();
            std::fs::rename(keys.join(format!("offline/image-root-{i}.pem")), to.join("root.pem")).unwrap();
        }
        for (from, to) in [("image-targets.pem", "targets"), ("director-root.pem", "director")] {
            std::fs::create_dir_all(holders.join(to)).unwrap();
            let name = if to == "targets" { "targets.pem" } else { "root.pem" };
            std::fs::rename(keys.join("offline").join(from), holders.join(to).join(name)).unwrap();
        }
        std::fs::remove_dir(keys.join("offline")).unwrap();
        std::fs::create_dir_all(holders.join("maker")).unwrap();
        let app = spawn_app_from(dir, config, SignedDuration::ZERO).await;
        assert!(!app.services.dev_keys);
        let image_root_v1 = app.root_v1().await;
        Self { app, holders, image_root_v1, rollouts: 0, agent: None, opts: None }
    }

    /// The key file of holder `who` (`h1`, `targets`, `director`, `maker`, …).
    pub fn key(&self, who: &str) -> PathBuf {
        let name = match who {
            "targets" => "targets.pem",
            "maker" => "product.pem",
            _ => "root.pem",
        };
        self.holders.join(who).join(name)
    }

    /// `--server URL --token ADMIN` for the CLI.
    pub fn remote(&self) -> [String; 4] {
        ["--server".into(), self.app.base.clone(), "--token".into(), self.app.admin.clone()]
    }

    /// `patchgate ARGS --server … --token …`, asserting success.
    pub async fn cli(&self, args: &[&str]) -> String {
        let remote = self.remote();
        let mut all: Vec<&str> = args.to_vec();
        all.extend(remote.iter().map(String::as_str));
        run_ok(&all).await
    }

    /// A delegations ceremony: prepare (with `extra` flags), the targets key holder signs,
    /// submit (with product roles `PRODUCT=FILE` in `roles`).
    pub async fn delegations_ceremony(&self, extra: &[&str], roles: &[String]) {
        let file = self.holders.join(format!("targets-{}.json", patchgate::storage::random_hex(3)));
        let mut prepare = vec!["repo", "prepare", "delegations", "--out", path(&file)];
        prepare.extend_from_slice(extra);
        self.cli(&prepare).await;
        run_ok(&["repo", "sign", path(&file), "--key", path(&self.key("targets")), "--yes"]).await;
        let mut submit = vec!["repo", "submit", path(&file)];
        submit.extend(roles.iter().map(String::as_str));
        self.cli(&submit).await;
    }

    /// A root ceremony on `repo`: prepare with `flags`, signed in turn by each of `signers`
    /// (holder names), submitted.
    pub async fn root_ceremony(&self, repo: &str, flags: &[&str], signers: &[&str]) -> String {
        let file = self.holders.join(format!("root-{}.json", patchgate::storage::random_hex(3)));
        let mut prepare = vec!["repo", "prepare", "root", "--repo", repo, "--out", path(&file)];
        prepare.extend_from_slice(flags);
        self.cli(&prepare).await;
        for who in signers {
            run_ok(&["repo", "sign", path(&file), "--key", path(&self.key(who)), "--yes"]).await;
        }
        let remote = self.remote();
        let mut submit = vec!["repo", "submit", "--repo", repo, path(&file)];
        submit.extend(remote.iter().map(String::as_str));
        let out = run(&submit).await;
        String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr)
            + if out.status.success() { "" } else { "\nFAILED" }
    }

    /// Creates the manufacturer-signed product (key generated in `holders/maker`) and lands its
    /// delegation.
    pub async fn create_product(&self) {
        run_ok(&["keys", "generate", "--product", PRODUCT, "--out", path(&self.key("maker"))]).await;
        let out = self
            .cli(&["product", "create", "--name", PRODUCT, "--hardware-id", HW, "--key", path(&self.key("maker"))])
            .await;
        assert!(out.contains("pending_delegation"), "{out}");
        let products: Value = self.app.get_json("/api/v1/products").await;
        assert_eq!(products[0]["status"], "pending_delegation");
        self.delegations_ceremony(&[], &[]).await;
        let products: Value = self.app.get_json("/api/v1/products").await;
        assert_eq!(products[0]["status"], "active", "{products}");
        assert_eq!(products[0]["signing_mode"], "manufacturer");
    }

    /// Rotates the product key: a new key in `holders/maker/product.pem` (the old one kept as
    /// `old.pem`), the current role re-signed with it, and the new delegation landed with it.
    pub async fn rotate_product_key(&self) {
        let new = self.key("maker");
        let old = self.holders.join("maker/old.pem");
        std::fs::rename(&new, &old).unwrap();
        run_ok(&["keys", "generate", "--product", PRODUCT, "--out", path(&new)]).await;
        let role = self.holders.join("maker/role.json");
        let sign = ["product", "sign-role", "--product", PRODUCT, "--key", path(&new), "--current-key", path(&old)];
        let mut args = sign.to_vec();
        args.extend(["--out", path(&role)]);
        self.cli(&args).await;
        let product_key = format!("{PRODUCT}={}", path(&new));
        self.delegations_ceremony(&["--product-key", &product_key], &[format!("{PRODUCT}={}", path(&role))]).await;
    }

    /// Publishes `version` (image `firmware(seed)`) with the manufacturer's key through the CLI.
    pub async fn publish(&self, version: &str, seed: u8, floor: Option<&str>) -> Vec<u8> {
        self.publish_image(version, firmware(seed, 4096), floor).await
    }

    /// Publishes `version` with exactly `image` (deltas need images that resemble each other).
    pub async fn publish_image(&self, version: &str, image: Vec<u8>, floor: Option<&str>) -> Vec<u8> {
        let file = self.holders.join("maker").join("fw.bin");
        std::fs::write(&file, &image).unwrap();
        let mut args = vec!["release", "publish", "--product", PRODUCT, "--version", version, "--key"];
        let key = self.key("maker");
        args.push(path(&key));
        if let Some(floor) = floor {
            args.extend(["--rollback-floor", floor]);
        }
        args.push(path(&file));
        self.cli(&args).await;
        image
    }

    /// Enrolls the one agent and makes the `fleet` cohort.
    pub async fn enroll(&mut self) {
        let token = enrollment_token(&self.app, PRODUCT, &[TAG], 100).await;
        self.app
            .post_json("/api/v1/cohorts", &json!({"name": "fleet", "product": PRODUCT, "selector": {"tags": [TAG]}}))
            .await;
        let state = self.app.dir.path().join("agent");
        let agent = enroll_agent(&self.app, &self.app.base, "pump-0001", PRODUCT, HW, &token, &state).await;
        let slot = self.app.dir.path().join("slot");
        std::fs::create_dir_all(&slot).unwrap();
        self.opts =
            Some(InstallOptions { slot: slot.join("slot.bin"), hook: None, precondition: None, running_image: None });
        self.agent = Some(agent);
    }

    /// Aborts the previous rollout and rolls `version` out to the whole cohort.
    pub async fn roll_out(&mut self, version: &str) {
        if self.rollouts > 0 {
            let id = format!("r-{}", self.rollouts);
            self.app.post_json(&format!("/api/v1/rollouts/{id}/abort"), &json!({})).await;
        }
        self.rollouts += 1;
        let id = format!("r-{}", self.rollouts);
        let body = json!({"id": id, "product": PRODUCT, "version": version,
            "stages": [{"cohort": "fleet", "percent": 100, "soak_minutes": 0}],
            "gate": {"max_failure_rate": 1.0, "min_reports": 1, "stall_minutes": 1440}});
        self.app.post_json("/api/v1/rollouts", &body).await;
        self.app.post_json(&format!("/api/v1/rollouts/{id}/start"), &json!({})).await;
    }

    /// The agent installs `version` (slot = `image`) and confirms it.
    pub async fn installs(&mut self, version: &str, image: &[u8]) {
        let (agent, opts) = (self.agent.as_mut().unwrap(), self.opts.as_ref().unwrap());
        match agent.install(opts).await {
            Ok(InstallOutcome::Installed(t)) => assert_eq!(t.version, version),
            other => panic!("expected {version} to install, got {other:?}"),
        }
        assert_eq!(std::fs::read(&opts.slot).unwrap(), image);
        agent.confirm(&sha256_hex(image)).await.unwrap();
    }

    /// The agent refuses with `code`, the slot keeps its bytes, and the server got `rejected`.
    pub async fn refused(&mut self, code: &str) {
        let (agent, opts) = (self.agent.as_mut().unwrap(), self.opts.as_ref().unwrap());
        let before = std::fs::read(&opts.slot).unwrap_or_default();
        match agent.install(opts).await {
            Err(AgentError::Refused(r)) => assert_eq!(r.code, code, "{r}"),
            other => panic!("expected refusal {code}, got {other:?}"),
        }
        assert_eq!(std::fs::read(&opts.slot).unwrap_or_default(), before, "the slot is untouched");
        let attempts = reported_attempts(&self.app, "pump-0001").await;
        assert_eq!(attempts[0].1, "rejected", "{attempts:?}");
        assert!(attempts[0].2.starts_with(&format!("{code}: ")), "{attempts:?}");
    }

    /// python-tuf's ngclient, bootstrapped from image root v1 in a fresh directory: every
    /// `expect` (version, image) verifies and downloads, every `absent` name is not listed (or
    /// its lookup fails verification). Returns the checker's output.
    pub async fn ngclient(&self, expect: &[(&str, &[u8])], absent: &[&str], root_version: u64) -> String {
        ngclient_at(&self.app.base, &self.image_root_v1, expect, absent, root_version).await
    }

    /// tough (as a plain TUF client, fresh datastore from root v1) loads the repository and
    /// trusts root `root_version`; `expect` targets read back byte for byte.
    pub async fn tough(&self, expect: &[(&str, &[u8])], root_version: u64) {
        let store = tempfile::tempdir().unwrap();
        let repo = self.app.tough(&self.image_root_v1, store.path()).await.expect("tough loads the repository");
        assert_eq!(repo.root().signed.version.get(), root_version);
        for (version, image) in expect {
            let bytes = crate::common::tough_read(&repo, &format!("{PRODUCT}/{version}/fw.bin")).await.unwrap();
            assert_eq!(&bytes, image);
        }
    }
}

/// python-tuf's ngclient against the server at `base`, bootstrapped from `root` in a fresh
/// directory: it ends on root `root_version`, every `expect` (version of [`PRODUCT`] or whole
/// target name, image)
/// verifies and downloads, every `absent` name is not listed (or its lookup fails
/// verification). Returns the checker's output.
pub async fn ngclient_at(
    base: &str,
    root: &[u8],
    expect: &[(&str, &[u8])],
    absent: &[&str],
    root_version: u64,
) -> String {
    let work = tempfile::tempdir().unwrap();
    let root_file = work.path().join("root.json");
    std::fs::write(&root_file, root).unwrap();
    let mut cmd = tokio::process::Command::new(python_tuf());
    cmd.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/ngclient_check.py"))
        .args(["--metadata-url", &format!("{base}/repo/metadata/"), "--targets-url", &format!("{base}/repo/targets/")])
        .arg("--root")
        .arg(&root_file)
        .arg("--metadata-dir")
        .arg(work.path().join("meta"))
        .arg("--download-dir")
        .arg(work.path().join("dl"))
        .args(["--expect-root-version", &root_version.to_string()]);
    for (version, image) in expect {
        // A version of PRODUCT's `fw.bin`, or a whole target name (a delta's).
        let name = if version.contains('/') { (*version).to_owned() } else { format!("{PRODUCT}/{version}/fw.bin") };
        cmd.args(["--expect", &format!("{name}={}", sha256_hex(image))]);
    }
    for name in absent {
        cmd.args(["--not-listed", name]);
    }
    let out = cmd.output().await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && !text.contains("FAIL"), "python-tuf:\n{text}");
    text
}

/// The python interpreter of the venv `scripts/ensure-venv.sh pytuf` makes (created on first use).
pub fn python_tuf() -> PathBuf {
    static READY: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    READY
        .get_or_init(|| {
            let root = Path::new(env!("CARGO_MANIFEST_DIR"));
            let python = root.join("target/pytuf-venv/bin/python");
            let out = std::process::Command::new("bash")
                .arg(root.join("scripts/ensure-venv.sh"))
                .arg("pytuf")
                .output()
                .unwrap();
            assert!(out.status.success(), "scripts/ensure-venv.sh pytuf:\n{}", String::from_utf8_lossy(&out.stderr));
            python
        })
        .clone()
}
