//! Online keys in a PKCS#11 token: a real `patchgate serve` process whose image snapshot, image
//! timestamp and director keys were generated inside SoftHSM (`scripts/ensure-softhsm.sh`) by
//! `patchgate keys new --pkcs11`, and that signs through the token. python-tuf's ngclient and
//! the real agent accept what it signs; no private key or PIN is left anywhere the server
//! writes; a wrong PIN, a missing token, a key of another type and a key both in a file and in
//! the token each stop start-up with a message naming the role and the fix.
//!
//! Each test has its own SoftHSM configuration and token directory, handed to the processes it
//! starts through `SOFTHSM2_CONF` (SoftHSM reads it once per process).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use patchgate_agent::{Agent, EnrollOptions, InstallOptions, InstallOutcome};
use serde_json::{Value, json};

use crate::agents::fast;
use crate::common::firmware;
use crate::crash::{Answer, PRODUCT, create_product, publish};
use crate::process::{Deployment, Server};
use crate::split_trust::ngclient_at;

/// A PIN no file, log or environment of the server may ever show.
const PIN: &str = "hsm-pin-5c1e7a9d";
const TOKEN: &str = "patchgate-it";
const ROLES: [&str; 3] = ["image-snapshot", "image-timestamp", "director"];

/// SoftHSM's module, installed if missing.
fn module() -> PathBuf {
    static MODULE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    MODULE
        .get_or_init(|| {
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/ensure-softhsm.sh");
            let out = Command::new("bash").arg(script).output().unwrap();
            assert!(out.status.success(), "scripts/ensure-softhsm.sh:\n{}", String::from_utf8_lossy(&out.stderr));
            PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
        })
        .clone()
}

/// A SoftHSM token initialised in `dep`'s directory, with its PIN in a 0600 file, and the
/// deployment's commands pointed at it.
struct Token {
    conf: PathBuf,
    pin_file: PathBuf,
}

impl Token {
    fn new(dep: &mut Deployment) -> Self {
        let module = module();
        assert!(module.is_file());
        let dir = dep.dir.path().join("softhsm");
        std::fs::create_dir_all(dir.join("tokens")).unwrap();
        let conf = dir.join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                dir.join("tokens").display()
            ),
        )
        .unwrap();
        let out = Command::new("softhsm2-util")
            .args(["--init-token", "--free", "--label", TOKEN, "--pin", PIN, "--so-pin", "so-pin-1234"])
            .env("SOFTHSM2_CONF", &conf)
            .output()
            .unwrap();
        assert!(out.status.success(), "softhsm2-util: {}", String::from_utf8_lossy(&out.stderr));
        let pin_file = dir.join("pin");
        std::fs::write(&pin_file, format!("{PIN}\n")).unwrap();
        dep.vars.push(("SOFTHSM2_CONF", conf.display().to_string()));
        Self { conf, pin_file }
    }

    /// The URI of key `object` on this token, its PIN read from the PIN file.
    fn uri(&self, object: &str) -> String {
        format!(
            "pkcs11:token={TOKEN};object={object}?module-path={}&pin-source={}",
            module().display(),
            self.pin_file.display()
        )
    }

    /// `patchgate keys new --pkcs11` for `object`; returns its keyid.
    fn new_key(&self, dep: &Deployment, object: &str) -> String {
        self.new_key_with_public(dep, object).0
    }

    /// [`Token::new_key`], with the public key (hex) it printed.
    fn new_key_with_public(&self, dep: &Deployment, object: &str) -> (String, String) {
        let out = dep.command(&["keys", "new", "--pkcs11", &self.uri(object)]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "keys new --pkcs11: {text}");
        assert!(text.contains("sensitive and never extractable"), "{text}");
        let field = |name: &str| text.lines().find_map(|l| l.strip_prefix(name)).expect(name).trim().to_owned();
        let (keyid, public) = (field("keyid:"), field("public_key:"));
        assert_eq!((keyid.len(), public.len()), (64, 64), "{text}");
        (keyid, public)
    }

    /// Points the deployment's `pkcs11_keys` at `entries` (role → URI) through a config file.
    fn configure(&self, dep: &mut Deployment, entries: &[(&str, String)]) {
        self.configure_with_products(dep, entries, false);
    }

    /// [`Token::configure`], and with `products` the server-held product keys in the token too.
    fn configure_with_products(&self, dep: &mut Deployment, entries: &[(&str, String)], products: bool) {
        let mut toml = String::new();
        if products {
            let token = format!(
                "pkcs11:token={TOKEN}?module-path={}&pin-source={}",
                module().display(),
                self.pin_file.display()
            );
            toml.push_str(&format!("product_keys_pkcs11 = {token:?}\n"));
            // Fewer sessions than the default: signing still works through the ones there are.
            toml.push_str("pkcs11_sessions = 2\n");
        }
        toml.push_str("[pkcs11_keys]\n");
        for (role, uri) in entries {
            toml.push_str(&format!("{role} = {uri:?}\n"));
        }
        let path = dep.dir.path().join("patchgate-hsm.toml");
        std::fs::write(&path, toml).unwrap();
        dep.vars.retain(|(k, _)| *k != "PATCHGATE_CONFIG");
        dep.vars.push(("PATCHGATE_CONFIG", path.display().to_string()));
    }

    /// A NIST P-256 key `object` on the token (OpenSC's pkcs11-tool): not an Ed25519 key.
    fn p256_key(&self, object: &str) {
        let out = Command::new("pkcs11-tool")
            .arg("--module")
            .arg(module())
            .args(["--token-label", TOKEN, "--login", "--pin", PIN, "--keypairgen", "--key-type", "EC:prime256v1"])
            .args(["--label", object])
            .env("SOFTHSM2_CONF", &self.conf)
            .output()
            .unwrap();
        assert!(out.status.success(), "pkcs11-tool: {}", String::from_utf8_lossy(&out.stderr));
    }
}

fn keys_dir(dep: &Deployment) -> PathBuf {
    dep.dir.path().join("keys")
}

/// Moves the development key files of `roles` out of `online/` (the token holds them now).
fn remove_online_files(dep: &Deployment, roles: &[&str]) {
    for role in roles {
        std::fs::remove_file(keys_dir(dep).join("online").join(format!("{role}.pem"))).unwrap();
    }
}

async fn get_json(client: &reqwest::Client, url: &str) -> Value {
    let res = client.get(url).send().await.unwrap();
    assert_eq!(res.status(), 200, "{url}");
    res.json().await.unwrap()
}

async fn post(client: &reqwest::Client, url: &str, token: &str, body: Value) -> Value {
    let res = client.post(url).bearer_auth(token).json(&body).send().await.unwrap();
    let status = res.status();
    let text = res.text().await.unwrap();
    assert!(status.is_success(), "{url}: {status} {text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_keys_in_softhsm_sign_what_python_tuf_and_the_agent_accept() {
    let mut dep = Deployment::new().await;
    let token = Token::new(&mut dep);
    let keyids: Vec<String> = ROLES.iter().map(|role| token.new_key(&dep, role)).collect();
    remove_online_files(&dep, &ROLES);
    let entries: Vec<(&str, String)> = ROLES.iter().map(|role| (*role, token.uri(role))).collect();
    token.configure_with_products(&mut dep, &entries, true);

    let server = dep.start("hsm").await;
    let client = reqwest::Client::new();
    // The roots the server made on its first start list the token's keys for the online roles.
    let image_root = client.get(server.url("/repo/metadata/1.root.json")).send().await.unwrap().bytes().await.unwrap();
    let root: Value = serde_json::from_slice(&image_root).unwrap();
    assert_eq!(root["signed"]["roles"]["snapshot"]["keyids"], json!([keyids[0]]), "{root}");
    assert_eq!(root["signed"]["roles"]["timestamp"]["keyids"], json!([keyids[1]]), "{root}");
    let director_root =
        client.get(server.url("/director/metadata/1.root.json")).send().await.unwrap().bytes().await.unwrap();
    let droot: Value = serde_json::from_slice(&director_root).unwrap();
    for role in ["targets", "snapshot", "timestamp"] {
        assert_eq!(droot["signed"]["roles"][role]["keyids"], json!([keyids[2]]), "{droot}");
    }

    // Publishing signs the snapshot and timestamp in the token, and the product role with the
    // server-held product key the server made in the token when the product was created.
    let admin = dep.admin_token();
    create_product(&client, &server, &admin).await;
    let products = client.get(server.url("/api/v1/products")).bearer_auth(&admin).send().await.unwrap();
    let products: Value = products.json().await.unwrap();
    let out = dep.command(&["keys", "show", "--pkcs11", &token.uri(&format!("product-{PRODUCT}"))]).output().unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && shown.contains("sensitive and never extractable"), "{shown}");
    let product_keyid = products[0]["keyid"].as_str().expect("the product's keyid").to_owned();
    assert!(shown.contains(&format!("keyid:      {product_keyid}")), "{products}\n{shown}");
    let image = firmware(7, 4096);
    match publish(&client, &server.base, &admin, "1.0.0", image.clone()).await {
        Answer::Status(201, _) => {}
        other => panic!("publish: {other:?}\n{}", server.log_tail()),
    }
    let timestamp = get_json(&client, &server.url("/repo/metadata/timestamp.json")).await;
    assert_eq!(timestamp["signatures"][0]["keyid"], json!(keyids[1]));

    // python-tuf's ngclient, from root v1, verifies and downloads the release.
    let work = tempfile::tempdir().unwrap();
    ngclient_accepts(&server, &image_root, "1.0.0", &image, 1).await;

    // The agent verifies the director's metadata (the token's director key) and the image
    // repository's, then installs.
    let enroll = post(
        &client,
        &server.url("/api/v1/enrollment-tokens"),
        &admin,
        json!({"product": PRODUCT, "tags": ["hsm"], "max_uses": 5}),
    )
    .await;
    post(
        &client,
        &server.url("/api/v1/cohorts"),
        &admin,
        json!({"name": "fleet", "product": PRODUCT, "selector": {"tags": ["hsm"]}}),
    )
    .await;
    let opts = EnrollOptions {
        server: server.base.clone(),
        enrollment_token: enroll["token"].as_str().unwrap().to_owned(),
        device_id: "pump-hsm-1".to_owned(),
        product: PRODUCT.to_owned(),
        hardware_id: "hw".to_owned(),
        image_root: image_root.to_vec(),
        director_root: director_root.to_vec(),
        state_dir: work.path().join("agent"),
        ca_file: None,
        allow_dev_keys: true,
        running_sha256: None,
    };
    let mut agent = Agent::enroll(opts, None).await.unwrap();
    agent.set_tuning(fast());
    let rollout = json!({"id": "r-hsm", "product": PRODUCT, "version": "1.0.0",
        "stages": [{"cohort": "fleet", "percent": 100, "soak_minutes": 0}],
        "gate": {"max_failure_rate": 1.0, "min_reports": 1, "stall_minutes": 1440}});
    post(&client, &server.url("/api/v1/rollouts"), &admin, rollout).await;
    post(&client, &server.url("/api/v1/rollouts/r-hsm/start"), &admin, json!({})).await;
    let slot = work.path().join("slot.bin");
    let install = InstallOptions { slot: slot.clone(), hook: None, precondition: None, running_image: None };
    match agent.install(&install).await {
        Ok(InstallOutcome::Installed(t)) => assert_eq!(t.version, "1.0.0"),
        other => panic!("expected 1.0.0 to install, got {other:?}\n{}", server.log_tail()),
    }
    assert_eq!(std::fs::read(&slot).unwrap(), image);

    // Nothing the server wrote holds these keys or the PIN: no file in online/, nothing in the
    // data directory, database or log (its environment held neither: the PIN comes from a
    // file); the token says the keys cannot be read out (`keys show` prints the token's
    // CKA_SENSITIVE and CKA_EXTRACTABLE).
    let online: Vec<_> = std::fs::read_dir(keys_dir(&dep).join("online")).unwrap().map(|e| e.unwrap().path()).collect();
    assert!(online.is_empty(), "online/ holds key files: {online:?}");
    for role in ROLES {
        let out = dep.command(&["keys", "show", "--pkcs11", &token.uri(role)]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && text.contains("sensitive and never extractable"), "{role}: {text}");
    }
    drop(server);
    let softhsm = dep.dir.path().join("softhsm");
    let mut scanned = 0;
    let mut stack = vec![dep.dir.path().to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.starts_with(&softhsm) {
                continue; // the token's own store, and the PIN file the operator wrote
            }
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let bytes = std::fs::read(&path).unwrap();
            let text = String::from_utf8_lossy(&bytes);
            assert!(!text.contains(PIN), "{} holds the PIN", path.display());
            // The development offline keys are files by design (and never on a production server).
            let offline = path.starts_with(keys_dir(&dep).join("offline"));
            assert!(offline || !text.contains("PRIVATE KEY"), "{} holds a private key", path.display());
            scanned += 1;
        }
    }
    assert!(scanned > 3, "scanned only {scanned} files");
}

/// python-tuf's ngclient, bootstrapped from `root` in a fresh directory, ends on root
/// `root_version` and verifies and downloads release `version` (bytes `image`).
async fn ngclient_accepts(server: &Server, root: &[u8], version: &str, image: &[u8], root_version: u64) {
    ngclient_at(&server.base, root, &[(version, image)], &[], root_version).await;
}

/// Runs `patchgate serve`, which must exit with an error within 30 s; returns its output.
fn start_up_error(dep: &Deployment) -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = dep
        .command(&["serve"])
        .env("PATCHGATE_LISTEN", format!("127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
            assert!(!status.success(), "serve exited 0: {text}");
            return text;
        }
        if started.elapsed() > Duration::from_secs(30) {
            child.kill().unwrap();
            let out = child.wait_with_output().unwrap();
            panic!("serve still running after 30 s:\n{}", String::from_utf8_lossy(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test]
async fn start_up_refuses_a_wrong_pin_a_missing_token_another_key_type_and_a_key_in_both_places() {
    let mut dep = Deployment::new().await;
    let token = Token::new(&mut dep);
    token.new_key(&dep, "image-timestamp");
    token.p256_key("p256");
    let good = token.uri("image-timestamp");

    // The key also sits in online/ as a file.
    token.configure(&mut dep, &[("image-timestamp", good.clone())]);
    let text = start_up_error(&dep);
    assert!(text.contains("image-timestamp") && text.contains("remove the file"), "{text}");
    remove_online_files(&dep, &["image-timestamp"]);

    let wrong_pin_file = dep.dir.path().join("softhsm/wrong-pin");
    std::fs::write(&wrong_pin_file, "000000\n").unwrap();
    let wrong_pin = good.replace(&token.pin_file.display().to_string(), &wrong_pin_file.display().to_string());
    let pin_in_uri = good.replace(&format!("pin-source={}", token.pin_file.display()), "pin-value=000000");
    let missing_token = good.replace(&format!("token={TOKEN}"), "token=no-such-token");
    let p256 = good.replace("object=image-timestamp", "object=p256");
    let no_key = good.replace("object=image-timestamp", "object=never-made");
    let no_module = good.replace(&module().display().to_string(), "/nonexistent/libvendor-pkcs11.so");
    for (uri, says) in [
        (wrong_pin, "refused the PIN"),
        (pin_in_uri, "pin-value is refused"),
        (missing_token, "no token labelled \"no-such-token\""),
        (p256, "not an Ed25519 key"),
        (no_key, "patchgate keys new --pkcs11"),
        (no_module, "install the HSM vendor's PKCS#11 library or fix module-path"),
    ] {
        token.configure(&mut dep, &[("image-timestamp", uri.clone())]);
        let text = start_up_error(&dep);
        // Start-up names the entry (`pkcs11_keys.image-timestamp`; a URI the configuration
        // itself refuses: field `pkcs11_keys`, entry `image-timestamp`).
        assert!(
            text.contains("pkcs11_keys") && text.contains("image-timestamp") && text.contains(says),
            "{uri}:\n{text}"
        );
        assert!(!text.contains("000000"), "the PIN is in the message: {text}");
    }

    // A role that is not an online key is refused by the configuration itself.
    token.configure(&mut dep, &[("image-root", good)]);
    let text = start_up_error(&dep);
    assert!(text.contains("pkcs11_keys") && text.contains("not an online key"), "{text}");

    // A token key the stored roots do not trust stops start-up. (Development keys skip that
    // check: this takes a production key set, initialised, its offline half moved away.)
    token.configure(&mut dep, &[]);
    let prod = dep.dir.path().join("prod-keys");
    let prod_arg = prod.to_str().unwrap();
    let generate = ["keys", "generate", "--out", prod_arg, "--root-keys", "1", "--root-threshold", "1"];
    assert!(dep.command(&generate).output().unwrap().status.success());
    dep.vars.retain(|(k, _)| *k != "PATCHGATE_KEYS_DIR");
    dep.vars.push(("PATCHGATE_KEYS_DIR", prod.display().to_string()));
    let init = dep.command(&["repo", "init"]).output().unwrap();
    assert!(init.status.success(), "repo init: {}", String::from_utf8_lossy(&init.stderr));
    std::fs::rename(prod.join("offline"), dep.dir.path().join("offline-holders")).unwrap();
    let stray = token.new_key(&dep, "stray");
    token.configure(&mut dep, &[("image-timestamp", token.uri("stray"))]);
    std::fs::remove_file(prod.join("online/image-timestamp.pem")).unwrap();
    let text = start_up_error(&dep);
    let named = format!("pkcs11_keys.image-timestamp is key {stray}");
    assert!(text.contains("not the keys the stored roots trust") && text.contains(&named), "{text}");
}

/// `patchgate args… --server … --token …`, which must succeed; returns its output.
fn cli_ok(dep: &Deployment, base: &str, token: &str, args: &[&str]) -> String {
    let out = dep.command(args).args(["--server", base, "--token", token]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "patchgate {args:?}:\n{text}");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manufacturer_and_a_root_holder_sign_with_keys_in_a_token() {
    let mut dep = Deployment::new().await;
    let token = Token::new(&mut dep);
    let maker = token.uri("pump-x1-maker");
    let keyid = token.new_key(&dep, "pump-x1-maker");
    let holder = token.uri("root-holder-3");
    token.new_key(&dep, "root-holder-3");
    let server = dep.start("hsm-maker").await;
    let admin = dep.admin_token();

    // The product is created with the token key's public half (the development keys let the
    // server delegate at once), and the manufacturer publishes with the token doing the signing.
    let out = cli_ok(
        &dep,
        &server.base,
        &admin,
        &["product", "create", "--name", PRODUCT, "--hardware-id", "hw", "--key", &maker],
    );
    assert!(out.contains("manufacturer"), "{out}");
    let image = firmware(9, 4096);
    let fw = dep.dir.path().join("fw.bin");
    std::fs::write(&fw, &image).unwrap();
    let args =
        ["release", "publish", "--product", PRODUCT, "--version", "2.0.0", "--key", &maker, fw.to_str().unwrap()];
    cli_ok(&dep, &server.base, &admin, &args);

    // A root ceremony in which the third holder's key is in the token: root 2 trusts
    // image-root-1 and the token key (two of two), so it lands only with the token's signature.
    let file = dep.dir.path().join("root.json");
    let (root1, root2) =
        (keys_dir(&dep).join("offline/image-root-1.pem"), keys_dir(&dep).join("offline/image-root-2.pem"));
    let prepare = ["repo", "prepare", "root", "--add-root-key", &holder, "--remove-root-key", root2.to_str().unwrap()];
    cli_ok(&dep, &server.base, &admin, &[&prepare[..], &["--out", file.to_str().unwrap()]].concat());
    for key in [root1.to_str().unwrap(), root2.to_str().unwrap(), &holder] {
        let out = dep.command(&["repo", "sign", file.to_str().unwrap(), "--key", key, "--yes"]).output().unwrap();
        assert!(out.status.success(), "repo sign --key {key}: {}", String::from_utf8_lossy(&out.stderr));
    }
    cli_ok(&dep, &server.base, &admin, &["repo", "submit", file.to_str().unwrap()]);

    let client = reqwest::Client::new();
    let timestamp = get_json(&client, &server.url("/repo/metadata/timestamp.json")).await;
    let version = &timestamp["signed"]["meta"]["snapshot.json"]["version"];
    let snapshot = get_json(&client, &server.url(&format!("/repo/metadata/{version}.snapshot.json"))).await;
    let version = &snapshot["signed"]["meta"][format!("{PRODUCT}.json")]["version"];
    let role = get_json(&client, &server.url(&format!("/repo/metadata/{version}.{PRODUCT}.json"))).await;
    assert_eq!(role["signatures"][0]["keyid"], json!(keyid), "{role}");
    let root = client.get(server.url("/repo/metadata/1.root.json")).send().await.unwrap().bytes().await.unwrap();
    ngclient_accepts(&server, &root, "2.0.0", &image, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_timestamp_key_moves_into_a_token_by_a_root_rotation() {
    let mut dep = Deployment::new().await;
    let token = Token::new(&mut dep);
    let server = dep.start("files").await;
    let client = reqwest::Client::new();
    let admin = dep.admin_token();
    create_product(&client, &server, &admin).await;
    let image = firmware(3, 4096);
    assert!(matches!(publish(&client, &server.base, &admin, "1.0.0", image.clone()).await, Answer::Status(201, _)));
    let root_v1 = client.get(server.url("/repo/metadata/1.root.json")).send().await.unwrap().bytes().await.unwrap();
    drop(server);

    // The new key is made in the token and offered to the server under a further name; the
    // root that names it is signed by the two root holders and submitted.
    let uri = token.uri("image-timestamp-2");
    let (keyid, public) = token.new_key_with_public(&dep, "image-timestamp-2");
    token.configure(&mut dep, &[("image-timestamp-2", uri.clone())]);
    let server = dep.start("next-key").await;
    let file = dep.dir.path().join("root.json");
    cli_ok(
        &dep,
        &server.base,
        &admin,
        &["repo", "prepare", "root", "--timestamp-key", &public, "--out", file.to_str().unwrap()],
    );
    for n in [1, 2] {
        let key = keys_dir(&dep).join(format!("offline/image-root-{n}.pem"));
        let out = dep
            .command(&["repo", "sign", file.to_str().unwrap(), "--key", key.to_str().unwrap(), "--yes"])
            .output()
            .unwrap();
        assert!(out.status.success(), "repo sign: {}", String::from_utf8_lossy(&out.stderr));
    }
    cli_ok(&dep, &server.base, &admin, &["repo", "submit", file.to_str().unwrap()]);
    let timestamp = get_json(&client, &server.url("/repo/metadata/timestamp.json")).await;
    assert_eq!(timestamp["signatures"][0]["keyid"], json!(keyid), "{timestamp}");
    ngclient_accepts(&server, &root_v1, "1.0.0", &image, 2).await;
    drop(server);

    // Then the entry takes the role's name and the old key file goes. Product keys move to the
    // token too: the product made before keeps signing with its key file.
    token.configure_with_products(&mut dep, &[("image-timestamp", uri)], true);
    remove_online_files(&dep, &["image-timestamp"]);
    let server = dep.start("renamed").await;
    assert!(matches!(publish(&client, &server.base, &admin, "1.0.1", firmware(4, 4096)).await, Answer::Status(201, _)));
    let timestamp = get_json(&client, &server.url("/repo/metadata/timestamp.json")).await;
    assert_eq!(timestamp["signatures"][0]["keyid"], json!(keyid), "{timestamp}");
    drop(server);
}
