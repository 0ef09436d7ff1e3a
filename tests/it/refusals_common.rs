//! Shared setup of the refusal fixtures (`refusals_image`, `refusals_director`): a server with
//! releases rolled out to one real agent that talks to it only through a hostile [`Mirror`], the
//! one assertion every fixture makes ([`Fixture::refused`]: refused with the expected code, the
//! slot untouched, the refusal reported), and forgers that keep their versions climbing so an
//! honest control can follow an attack.

use std::collections::BTreeMap;
use std::path::PathBuf;

use patchgate_agent::{Agent, AgentError, Assigned, InstallOptions, InstallOutcome, Refusal};
use serde_json::{Map, Value, json};

use crate::agents::{device_detail, enroll_agent, reported_attempts};
use crate::common::{TestApp, firmware, sha256_hex, spawn_app};
use crate::fleet::enrollment_token;
use crate::forge::{AppKeys, Draft, ForgedChain, ForgedDirector, ImageChain, fetch_json, signed_part, version_entry};
use crate::hostile::Mirror;

pub const PRODUCT: &str = "pump-x1";
pub const HW: &str = "pump-x1-revA";
pub const DEVICE: &str = "pump-0001";
/// The rollout the fixtures start; forged director entries name it too.
pub const ROLLOUT: &str = "r-1";
const TAG: &str = "fleet:all";
/// What the slot holds before an attack: a refused update must leave exactly this.
const OLD_SLOT: &[u8] = b"old image";
/// Small images keep the fixtures fast; size plays no part in the checks.
const IMAGE_SIZE: usize = 8 * 1024;

/// POSTs `body` to `path` as admin and asserts success.
pub async fn post(app: &TestApp, path: &str, body: Value) -> Value {
    let res = app.client.post(app.url(path)).bearer_auth(&app.admin).json(&body).send().await.unwrap();
    let status = res.status();
    let answer: Value = res.json().await.unwrap_or_default();
    assert!(status.is_success(), "{path}: {status} {answer}");
    answer
}

/// Publishes `content` as `product`'s `version` (`fw.bin`) with an optional `rollback_floor`.
pub async fn publish(app: &TestApp, product: &str, version: &str, content: Vec<u8>, floor: Option<&str>) {
    let part = reqwest::multipart::Part::bytes(content).file_name("fw.bin");
    let mut form = reqwest::multipart::Form::new().text("version", version.to_owned()).part("file", part);
    if let Some(floor) = floor {
        form = form.text("rollback_floor", floor.to_owned());
    }
    let url = app.url(&format!("/api/v1/products/{product}/releases"));
    let res = app.client.post(url).bearer_auth(&app.admin).multipart(form).send().await.unwrap();
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
}

/// The target name of `product`'s `version`.
pub fn target_name(product: &str, version: &str) -> String {
    format!("{product}/{version}/fw.bin")
}

/// One real agent (`DEVICE`) behind a hostile mirror, and the server it talks to.
pub struct Fixture {
    pub app: TestApp,
    pub mirror: Mirror,
    pub agent: Agent,
    pub keys: AppKeys,
    /// The agent's state directory.
    pub state: PathBuf,
    pub opts: InstallOptions,
    /// The enrollment token (tags the device into the `fleet` cohort).
    pub enrollment: String,
    images: BTreeMap<String, Vec<u8>>,
}

impl Fixture {
    /// `versions` of `PRODUCT` published, the `fleet` cohort, and `DEVICE` enrolled through an
    /// (for now honest) mirror. Nothing rolled out yet.
    pub async fn new(versions: &[&str]) -> Self {
        let app = spawn_app().await;
        app.create_product(PRODUCT, &[HW]).await;
        let mut images = BTreeMap::new();
        for (seed, version) in (1u8..).zip(versions) {
            let image = firmware(seed, IMAGE_SIZE);
            publish(&app, PRODUCT, version, image.clone(), None).await;
            images.insert((*version).to_owned(), image);
        }
        let enrollment = enrollment_token(&app, PRODUCT, &[TAG], 100).await;
        post(&app, "/api/v1/cohorts", json!({"name": "fleet", "product": PRODUCT, "selector": {"tags": [TAG]}})).await;
        let mirror = Mirror::start(&app.base);
        let state = app.dir.path().join("state");
        let agent = enroll_agent(&app, &mirror.base, DEVICE, PRODUCT, HW, &enrollment, &state).await;
        let slot_dir = app.dir.path().join("slot");
        std::fs::create_dir_all(&slot_dir).unwrap();
        let opts =
            InstallOptions { slot: slot_dir.join("slot.bin"), hook: None, precondition: None, running_image: None };
        let keys = AppKeys::load(&app);
        Self { app, mirror, agent, keys, state, opts, enrollment, images }
    }

    /// [`Self::new`] with `version` rolled out to 100 % of the cohort as `ROLLOUT`: without an
    /// attack, `install` installs it.
    pub async fn assigned(versions: &[&str], version: &str) -> Self {
        let fx = Self::new(versions).await;
        fx.roll_out(ROLLOUT, version).await;
        fx
    }

    /// Starts rollout `id` of `version` to 100 % of the cohort. Its gate tolerates every
    /// failure: a real gate halts the rollout at the device's first rejection (rollouts.rs and
    /// gate.rs test that), and the honest control after an attack would find nothing assigned.
    pub async fn roll_out(&self, id: &str, version: &str) {
        let body = json!({"id": id, "product": PRODUCT, "version": version,
            "stages": [{"cohort": "fleet", "percent": 100, "soak_minutes": 0}],
            "gate": {"max_failure_rate": 1.0, "min_reports": 1, "stall_minutes": 1440}});
        post(&self.app, "/api/v1/rollouts", body).await;
        post(&self.app, &format!("/api/v1/rollouts/{id}/start"), json!({})).await;
    }

    /// Publishes `version` with `floor` as its rollback floor.
    pub async fn publish(&mut self, version: &str, floor: Option<&str>) {
        let image = firmware(100 + u8::try_from(self.images.len()).unwrap(), IMAGE_SIZE);
        publish(&self.app, PRODUCT, version, image.clone(), floor).await;
        self.images.insert(version.to_owned(), image);
    }

    /// Publishes `version` with exactly `image` (deltas need images that resemble each other).
    pub async fn publish_image(&mut self, version: &str, image: Vec<u8>) {
        publish(&self.app, PRODUCT, version, image.clone(), None).await;
        self.images.insert(version.to_owned(), image);
    }

    /// The image published as `version`.
    pub fn image(&self, version: &str) -> &[u8] {
        &self.images[version]
    }

    /// The fixture's assertion. With known bytes in the slot, `install` must be refused with
    /// `code`; the slot must still hold those bytes, with nothing written beside it; and the
    /// server must have received a new report whose attempt is `rejected` with a detail that
    /// starts with `code`.
    pub async fn refused(&mut self, code: &str) -> Refusal {
        std::fs::write(&self.opts.slot, OLD_SLOT).unwrap();
        let counter_before = self.newest_report_counter().await;
        let refusal = match self.agent.install(&self.opts).await {
            Err(AgentError::Refused(refusal)) => refusal,
            other => panic!("expected a refusal `{code}`, got {other:?}"),
        };
        assert_eq!(refusal.code, code, "{refusal}");
        assert_eq!(std::fs::read(&self.opts.slot).unwrap(), OLD_SLOT, "the slot is untouched");
        let beside: Vec<_> = std::fs::read_dir(self.opts.slot.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(beside, ["slot.bin"], "nothing was written beside the slot");
        assert!(self.newest_report_counter().await > counter_before, "the agent reported");
        let attempts = reported_attempts(&self.app, DEVICE).await;
        let (_, state, detail) = &attempts[0];
        assert_eq!(state, "rejected", "{attempts:?}");
        assert!(detail.starts_with(&format!("{code}: ")), "{detail}");
        refusal
    }

    /// The counter of the newest report the server accepted from `DEVICE` (0: none yet). Not
    /// the history's newest: a report repeating the stored attempt (the same refusal twice)
    /// moves only the device's counter.
    async fn newest_report_counter(&self) -> i64 {
        device_detail(&self.app, DEVICE).await["last_counter"].as_i64().unwrap_or(0)
    }

    /// `install` succeeds and the slot holds exactly the image of `version`.
    pub async fn installs(&mut self, version: &str) -> Assigned {
        let outcome = self.agent.install(&self.opts).await;
        let Ok(InstallOutcome::Installed(target)) = outcome else {
            panic!("expected {version} to install, got {outcome:?}");
        };
        assert_eq!(target.version, version);
        assert_eq!(std::fs::read(&self.opts.slot).unwrap(), self.image(version), "the slot holds {version}");
        target
    }

    /// Installs `version` for real and confirms it after the "reboot".
    pub async fn install_and_confirm(&mut self, version: &str) {
        self.installs(version).await;
        let sha256 = sha256_hex(self.image(version));
        self.agent.confirm(&sha256).await.unwrap();
    }

    /// The mirror serves, in a valid snapshot and timestamp (online keys), the next version of
    /// `product`'s role, changed by `edit` (its `signed` part) and signed with the product's own
    /// key: what a product key in the wrong hands, or a manufacturer's mistake, can do. Returns
    /// the forged role's version.
    pub async fn serve_product_role(&self, product: &str, edit: impl FnOnce(&mut Value)) -> u64 {
        let chain = ImageChain::fetch(&self.app.base, &self.app.client).await;
        let current = chain.role_version(product);
        let role_url = self.app.url(&format!("/repo/metadata/{current}.{product}.json"));
        let mut role = Draft::next(&fetch_json(&self.app.client, &role_url, None).await);
        edit(&mut role.signed);
        let version = role.version();
        let key = crate::forge::product_key(&self.app, product);
        self.mirror.replace(&format!("/repo/metadata/{version}.{product}.json"), role.sign(&[&key]));
        let mut draft = chain.draft();
        draft.meta_mut().insert(format!("{product}.json"), version_entry(version));
        draft.sign(&self.keys.image_snapshot, &self.keys.image_timestamp).install(&self.mirror);
        version
    }

    /// The agent's device token.
    pub fn device_token(&self) -> String {
        self.agent.state().token().unwrap()
    }
}

/// The image repository's entry for target `name` (length, hashes, custom), as its product's
/// role signs it.
pub async fn image_target(app: &TestApp, name: &str) -> Value {
    let product = name.split('/').next().unwrap();
    let chain = ImageChain::fetch(&app.base, &app.client).await;
    let version = chain.role_version(product);
    let role = fetch_json(&app.client, &app.url(&format!("/repo/metadata/{version}.{product}.json")), None).await;
    let target = signed_part(&role)["targets"][name].clone();
    assert!(target.is_object(), "{name} is in the image repository");
    target
}

/// A director entry assigning `image_target` (as [`image_target`] returns it) to `device`: the
/// image's length, hashes and custom exactly, plus the director's own three fields.
pub fn director_entry(image_target: &Value, device: &str, action: &str) -> Value {
    let mut entry = image_target.clone();
    let custom = entry["custom"].as_object_mut().unwrap();
    custom.insert("device_id".into(), json!(device));
    custom.insert("rollout_id".into(), json!(ROLLOUT));
    custom.insert("action".into(), json!(action));
    entry
}

/// A director `targets` map of the given entries.
pub fn targets_of(entries: &[(&str, Value)]) -> Map<String, Value> {
    entries.iter().map(|(name, entry)| ((*name).to_owned(), entry.clone())).collect()
}

/// A director compromised (its online key held by the attacker) for one device: every forgery
/// it serves is one version above the last one, so the agent accepts each as new metadata.
pub struct DirectorForger {
    last: ForgedDirector,
    /// The server's targets role (`signed`): each forgery starts from it, not from the last one.
    template: Value,
}

impl DirectorForger {
    /// Starts from the device's current director metadata on the server.
    pub async fn fetch(fx: &Fixture) -> Self {
        let last = ForgedDirector::fetch(&fx.app.base, &fx.app.client, DEVICE, &fx.device_token()).await;
        Self { template: last.targets.clone(), last }
    }

    /// What the director assigned when fetched, or the last forgery served.
    pub fn targets(&self) -> Map<String, Value> {
        self.last.current_targets()
    }

    /// Makes `fx`'s mirror serve director metadata listing `targets`, signed with the director
    /// key.
    pub fn serve(&mut self, fx: &Fixture, targets: Map<String, Value>) {
        self.serve_edited(fx, targets, |_| {});
    }

    /// [`Self::serve`], with `edit` applied to the targets role's `signed` part before signing.
    pub fn serve_edited(&mut self, fx: &Fixture, targets: Map<String, Value>, edit: impl FnOnce(&mut Value)) {
        let mut draft = self.last.draft(Map::new());
        let version = draft.targets.version();
        draft.targets.signed = self.template.clone();
        draft.targets.signed["version"] = json!(version);
        draft.targets.signed["targets"] = Value::Object(targets);
        edit(&mut draft.targets.signed);
        let forged = draft.sign(&fx.keys.director);
        forged.install(&fx.mirror, DEVICE);
        let parse = |bytes: &[u8]| signed_part(&serde_json::from_slice::<Value>(bytes).unwrap()).clone();
        self.last = ForgedDirector {
            device_id: DEVICE.to_owned(),
            timestamp: parse(&forged.timestamp),
            snapshot: parse(&forged.snapshot.1),
            targets: parse(&forged.targets.1),
        };
    }
}

/// The image chain after `forged` was served: what the next forgery must build on so its
/// versions stay above what the agent may have trusted.
pub fn chain_after(forged: &ForgedChain) -> ImageChain {
    let parse = |bytes: &[u8]| signed_part(&serde_json::from_slice::<Value>(bytes).unwrap()).clone();
    ImageChain { timestamp: parse(&forged.timestamp), snapshot: parse(&forged.snapshot.1) }
}
