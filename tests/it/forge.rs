//! Forging TUF metadata as an attacker holding some of the keys would: straight from JSON
//! (`serde_json::Value`), signed over OLPC canonical JSON like the server signs, so refusal
//! tests can build any fixture (rolled-back snapshots, expired or lower-versioned timestamps,
//! a director listing what it likes, root rotations signed properly or not) and serve it
//! through a [`Mirror`].
//!
//! Deliberately independent of the server's `tuf` module: a forger that reused the server's
//! builders would repeat the server's mistakes instead of exposing them.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;

use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::DecodePrivateKey;
use patchgate_protocol::{Envelope, canonical_json, ed25519_keyid};
use serde_json::{Map, Value, json};

use crate::common::TestApp;
use crate::hostile::Mirror;

pub use crate::common::sha256_hex;

/// Reads a PKCS#8 PEM ed25519 private key.
pub fn load_key(path: &Path) -> SigningKey {
    let pem = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    SigningKey::from_pkcs8_pem(&pem).unwrap_or_else(|e| panic!("{} is not a PKCS#8 ed25519 key: {e}", path.display()))
}

/// A fresh random key (one nobody trusts).
pub fn fresh_key() -> SigningKey {
    SigningKey::generate(&mut rand_core::OsRng)
}

/// The TUF keyid of `key`.
pub fn keyid(key: &SigningKey) -> String {
    ed25519_keyid(key.verifying_key().as_bytes())
}

/// The TUF key object of `key`, as roots list keys.
pub fn tuf_key(key: &SigningKey) -> Value {
    json!({"keytype": "ed25519", "keyval": {"public": hex::encode(key.verifying_key().as_bytes())}, "scheme": "ed25519"})
}

/// Every key of a test server (its copy of `keys-example/`).
pub struct AppKeys {
    /// `offline/director-root.pem`.
    pub director_root: SigningKey,
    /// `offline/image-root-1.pem`.
    pub image_root_1: SigningKey,
    /// `offline/image-root-2.pem`.
    pub image_root_2: SigningKey,
    /// `offline/image-targets.pem`.
    pub image_targets: SigningKey,
    /// `online/director.pem`.
    pub director: SigningKey,
    /// `online/image-snapshot.pem`.
    pub image_snapshot: SigningKey,
    /// `online/image-timestamp.pem`.
    pub image_timestamp: SigningKey,
}

impl AppKeys {
    /// Loads the keys `app` runs with.
    pub fn load(app: &TestApp) -> Self {
        let dir = &app.services.config.keys_dir;
        let key = |sub: &str| load_key(&dir.join(sub));
        Self {
            director_root: key("offline/director-root.pem"),
            image_root_1: key("offline/image-root-1.pem"),
            image_root_2: key("offline/image-root-2.pem"),
            image_targets: key("offline/image-targets.pem"),
            director: key("online/director.pem"),
            image_snapshot: key("online/image-snapshot.pem"),
            image_timestamp: key("online/image-timestamp.pem"),
        }
    }
}

/// The key of `product`'s delegated role (held by the server in server-signed mode).
pub fn product_key(app: &TestApp, product: &str) -> SigningKey {
    load_key(&app.services.config.product_keys_dir().join(format!("{product}.pem")))
}

/// The envelope `{"signed": signed, "signatures": [...]}` as canonical JSON bytes, one
/// signature per entry of `keys` (a key given twice signs twice: threshold attacks need that).
pub fn sign_role(signed: &Value, keys: &[&SigningKey]) -> Vec<u8> {
    let signatures =
        keys.iter().map(|key| patchgate_protocol::envelope::sign(signed, key).unwrap().signatures.remove(0)).collect();
    canonical_json(&Envelope { signed, signatures }).unwrap()
}

/// `ts` as TUF writes expiries: `YYYY-MM-DDTHH:MM:SSZ`, whole seconds.
pub fn whole_seconds(ts: jiff::Timestamp) -> String {
    ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// `seconds` from now (wall clock, as TUF clients check), whole seconds; negative = expired.
pub fn expires_in(seconds: i64) -> String {
    whole_seconds(jiff::Timestamp::now() + jiff::SignedDuration::from_secs(seconds))
}

/// SHA-512, lowercase hex.
pub fn sha512_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha512::digest(bytes))
}

/// A `meta` entry as our server writes it in `timestamp.json` for the snapshot: version,
/// length and SHA-256 of the exact bytes (no SHA-512; see `src/tuf/metadata.rs`).
pub fn meta_entry(bytes: &[u8], version: u64) -> Value {
    json!({"length": bytes.len(), "hashes": {"sha256": sha256_hex(bytes)}, "version": version})
}

/// A `meta` entry as our server writes it in a snapshot for a targets role: the version only.
pub fn version_entry(version: u64) -> Value {
    json!({"version": version})
}

/// The `signed` part of `doc`, whether `doc` is an envelope or already its `signed` part.
pub fn signed_part(doc: &Value) -> &Value {
    doc.get("signed").unwrap_or(doc)
}

/// The `version` of a role (envelope or `signed` part).
pub fn version_of(doc: &Value) -> u64 {
    signed_part(doc)["version"].as_u64().unwrap()
}

/// GETs `url` (with `token` as bearer if given), asserts 200; the parsed envelope.
pub async fn fetch_json(client: &reqwest::Client, url: &str, token: Option<&str>) -> Value {
    let mut req = client.get(url);
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let res = req.send().await.unwrap();
    assert_eq!(res.status(), 200, "GET {url}");
    res.json().await.unwrap()
}

/// The director's root version 1 (what a device is provisioned with).
pub async fn director_root_v1(app: &TestApp) -> Vec<u8> {
    let res = app.client.get(app.url("/director/metadata/1.root.json")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    res.bytes().await.unwrap().to_vec()
}

/// One role's `signed` part being forged; edit `signed` freely, then [`Draft::sign`].
#[derive(Debug, Clone)]
pub struct Draft {
    /// The `signed` part.
    pub signed: Value,
}

impl Draft {
    /// The successor of `current` (envelope or `signed` part): the same fields, version + 1.
    pub fn next(current: &Value) -> Self {
        let signed = signed_part(current).clone();
        let version = version_of(&signed) + 1;
        Self { signed }.with_version(version)
    }

    /// Its version.
    pub fn version(&self) -> u64 {
        version_of(&self.signed)
    }

    /// Sets the version (lower than the current one for rollback fixtures).
    pub fn with_version(mut self, version: u64) -> Self {
        self.signed["version"] = json!(version);
        self
    }

    /// Sets `expires` (see [`expires_in`]).
    pub fn with_expires(mut self, expires: impl Into<String>) -> Self {
        self.signed["expires"] = json!(expires.into());
        self
    }

    /// The signed envelope's bytes.
    pub fn sign(&self, keys: &[&SigningKey]) -> Vec<u8> {
        sign_role(&self.signed, keys)
    }
}

/// A device's current director metadata (the `signed` parts), the starting point of a forgery.
#[derive(Debug, Clone)]
pub struct ForgedDirector {
    /// The device.
    pub device_id: String,
    /// `timestamp.json`.
    pub timestamp: Value,
    /// The snapshot the timestamp names.
    pub snapshot: Value,
    /// The targets the snapshot names.
    pub targets: Value,
}

impl ForgedDirector {
    /// Downloads the device's current director timestamp, snapshot and targets from `base`.
    pub async fn fetch(base: &str, client: &reqwest::Client, device_id: &str, device_token: &str) -> Self {
        let url = |file: String| format!("{base}/director/{device_id}/metadata/{file}");
        let get = |file: String| {
            let url = url(file);
            async move { fetch_json(client, &url, Some(device_token)).await }
        };
        let timestamp = signed_part(&get("timestamp.json".into()).await).clone();
        let snapshot_version = timestamp["meta"]["snapshot.json"]["version"].as_u64().unwrap();
        let snapshot = signed_part(&get(format!("{snapshot_version}.snapshot.json")).await).clone();
        let targets_version = snapshot["meta"]["targets.json"]["version"].as_u64().unwrap();
        let targets = signed_part(&get(format!("{targets_version}.targets.json")).await).clone();
        Self { device_id: device_id.to_owned(), timestamp, snapshot, targets }
    }

    /// The current `targets` map (the one target the director assigns, if any).
    pub fn current_targets(&self) -> Map<String, Value> {
        self.targets["targets"].as_object().cloned().unwrap_or_default()
    }

    /// Drafts of targets, snapshot and timestamp, each version + 1 with the same expiry,
    /// targets listing `targets`; change versions or expiries before signing.
    pub fn draft(&self, targets: Map<String, Value>) -> DirectorDraft {
        let mut targets_draft = Draft::next(&self.targets);
        targets_draft.signed["targets"] = Value::Object(targets);
        DirectorDraft {
            targets: targets_draft,
            snapshot: Draft::next(&self.snapshot),
            timestamp: Draft::next(&self.timestamp),
        }
    }

    /// [`Self::draft`] signed with `key`.
    pub fn forge(&self, targets: Map<String, Value>, key: &SigningKey) -> Forged {
        self.draft(targets).sign(key)
    }
}

/// The three director roles of a forgery, before signing.
#[derive(Debug, Clone)]
pub struct DirectorDraft {
    /// Targets.
    pub targets: Draft,
    /// Snapshot (its `meta` is set to name `targets` when signing).
    pub snapshot: Draft,
    /// Timestamp (its `meta` is set to name the signed snapshot when signing).
    pub timestamp: Draft,
}

impl DirectorDraft {
    /// Signs all three with `key`, chaining them as the server does: the snapshot lists
    /// `targets.json` at the targets' version, the timestamp the snapshot's version, length and
    /// SHA-256. (For a broken chain, sign [`Draft`]s one by one.)
    pub fn sign(&self, key: &SigningKey) -> Forged {
        let targets = self.targets.sign(&[key]);
        let mut snapshot = self.snapshot.clone();
        snapshot.signed["meta"] = json!({"targets.json": version_entry(self.targets.version())});
        let snapshot_bytes = snapshot.sign(&[key]);
        let mut timestamp = self.timestamp.clone();
        timestamp.signed["meta"] = json!({"snapshot.json": meta_entry(&snapshot_bytes, snapshot.version())});
        Forged {
            targets: (self.targets.version(), targets),
            snapshot: (snapshot.version(), snapshot_bytes),
            timestamp: timestamp.sign(&[key]),
        }
    }
}

/// Signed forged director metadata.
#[derive(Debug, Clone)]
pub struct Forged {
    /// Targets version and bytes.
    pub targets: (u64, Vec<u8>),
    /// Snapshot version and bytes.
    pub snapshot: (u64, Vec<u8>),
    /// `timestamp.json` bytes.
    pub timestamp: Vec<u8>,
}

impl Forged {
    /// Makes `mirror` serve this forgery as `device_id`'s director metadata.
    pub fn install(&self, mirror: &Mirror, device_id: &str) {
        let dir = format!("/director/{device_id}/metadata");
        mirror.replace(&format!("{dir}/{}.targets.json", self.targets.0), self.targets.1.clone());
        mirror.replace(&format!("{dir}/{}.snapshot.json", self.snapshot.0), self.snapshot.1.clone());
        mirror.replace(&format!("{dir}/timestamp.json"), self.timestamp.clone());
    }
}

/// The image repository's current timestamp and snapshot (`signed` parts): what an attacker
/// with the snapshot and timestamp keys re-signs.
#[derive(Debug, Clone)]
pub struct ImageChain {
    /// `timestamp.json`.
    pub timestamp: Value,
    /// The snapshot it names.
    pub snapshot: Value,
}

impl ImageChain {
    /// Downloads the current image timestamp and snapshot from `base`.
    pub async fn fetch(base: &str, client: &reqwest::Client) -> Self {
        let timestamp = fetch_json(client, &format!("{base}/repo/metadata/timestamp.json"), None).await;
        let timestamp = signed_part(&timestamp).clone();
        let n = timestamp["meta"]["snapshot.json"]["version"].as_u64().unwrap();
        let snapshot = fetch_json(client, &format!("{base}/repo/metadata/{n}.snapshot.json"), None).await;
        Self { timestamp, snapshot: signed_part(&snapshot).clone() }
    }

    /// The version the snapshot lists for `role` (`targets`, or a product).
    pub fn role_version(&self, role: &str) -> u64 {
        self.snapshot["meta"][format!("{role}.json")]["version"].as_u64().unwrap()
    }

    /// A new snapshot and timestamp, each version + 1 with the same expiry; edit
    /// `snapshot.signed["meta"]` (an old targets version, an extra role…) before signing.
    pub fn draft(&self) -> ChainDraft {
        ChainDraft { snapshot: Draft::next(&self.snapshot), timestamp: Draft::next(&self.timestamp) }
    }

    /// A new timestamp (version + 1, same expiry) over the current snapshot, unchanged.
    pub fn timestamp_draft(&self) -> Draft {
        Draft::next(&self.timestamp)
    }
}

/// An image snapshot and timestamp being forged.
#[derive(Debug, Clone)]
pub struct ChainDraft {
    /// The snapshot.
    pub snapshot: Draft,
    /// The timestamp (its `meta` is set to name the signed snapshot when signing).
    pub timestamp: Draft,
}

impl ChainDraft {
    /// The snapshot's `meta` map, to edit.
    pub fn meta_mut(&mut self) -> &mut Map<String, Value> {
        self.snapshot.signed["meta"].as_object_mut().unwrap()
    }

    /// Signs the snapshot with `snapshot_key` and a timestamp naming it (version, length,
    /// SHA-256) with `timestamp_key`.
    pub fn sign(&self, snapshot_key: &SigningKey, timestamp_key: &SigningKey) -> ForgedChain {
        let snapshot = self.snapshot.sign(&[snapshot_key]);
        let mut timestamp = self.timestamp.clone();
        timestamp.signed["meta"] = json!({"snapshot.json": meta_entry(&snapshot, self.snapshot.version())});
        ForgedChain { snapshot: (self.snapshot.version(), snapshot), timestamp: timestamp.sign(&[timestamp_key]) }
    }
}

/// A signed forged image snapshot and timestamp.
#[derive(Debug, Clone)]
pub struct ForgedChain {
    /// Snapshot version and bytes.
    pub snapshot: (u64, Vec<u8>),
    /// `timestamp.json` bytes.
    pub timestamp: Vec<u8>,
}

impl ForgedChain {
    /// Makes `mirror` serve them as the image repository's.
    pub fn install(&self, mirror: &Mirror) {
        mirror.replace(&format!("/repo/metadata/{}.snapshot.json", self.snapshot.0), self.snapshot.1.clone());
        mirror.replace("/repo/metadata/timestamp.json", self.timestamp.clone());
    }
}

/// A root N+1 being forged from root N: keys of some roles replaced by fresh ones.
pub struct RootRotation {
    /// The new root's `signed` part.
    pub draft: Draft,
    /// The fresh keys, by role.
    pub new_keys: BTreeMap<String, Vec<SigningKey>>,
}

impl RootRotation {
    /// Root N+1 (same keys, roles and expiry) from root N (envelope or `signed` part).
    pub fn next(current_root: &Value) -> Self {
        Self { draft: Draft::next(current_root), new_keys: BTreeMap::new() }
    }

    /// Replaces every key of `role` by `count` fresh keys with `threshold`. Keys no other role
    /// uses leave the root's `keys`.
    pub fn replace_keys(mut self, role: &str, count: usize, threshold: u64) -> Self {
        let signed = &mut self.draft.signed;
        let old: Vec<Value> = signed["roles"][role]["keyids"].as_array().cloned().unwrap_or_default();
        let fresh: Vec<SigningKey> = (0..count).map(|_| fresh_key()).collect();
        signed["roles"][role] = json!({"keyids": fresh.iter().map(keyid).collect::<Vec<_>>(), "threshold": threshold});
        for key in &fresh {
            signed["keys"][keyid(key)] = tuf_key(key);
        }
        let roles = signed["roles"].as_object().unwrap().clone();
        let keys = signed["keys"].as_object_mut().unwrap();
        for id in old.iter().filter_map(Value::as_str) {
            if !roles.values().any(|r| r["keyids"].as_array().is_some_and(|ids| ids.iter().any(|i| i == id))) {
                keys.remove(id);
            }
        }
        self.new_keys.insert(role.to_owned(), fresh);
        self
    }

    /// The fresh keys of `role` (empty if it kept its keys).
    pub fn keys_of(&self, role: &str) -> Vec<&SigningKey> {
        self.new_keys.get(role).map(|keys| keys.iter().collect()).unwrap_or_default()
    }

    /// Its version.
    pub fn version(&self) -> u64 {
        self.draft.version()
    }

    /// The signed root's bytes. A proper rotation is signed by a threshold of the old root
    /// keys and a threshold of the new ones.
    pub fn sign(&self, keys: &[&SigningKey]) -> Vec<u8> {
        self.draft.sign(keys)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::common::{firmware, spawn_app, tough_read};
    use crate::fleet::{Device, enrollment_token};

    const PRODUCT: &str = "pump-x1";
    const HW: &str = "pump-x1-revA";

    /// An app with release 1.0.0 and one device assigned it by a running 100% rollout.
    async fn assigned_device() -> (TestApp, Device) {
        let app = spawn_app().await;
        app.create_product(PRODUCT, &[HW]).await;
        app.publish(PRODUCT, "1.0.0", "fw.bin", firmware(4, 2048)).await;
        let token = enrollment_token(&app, PRODUCT, &[], 1).await;
        let mut device = Device::enroll(&app, "pump-f1", PRODUCT, HW, &token).await;
        for (path, body) in [
            ("/api/v1/cohorts", json!({"name": "lab", "product": PRODUCT, "devices": ["pump-f1"]})),
            (
                "/api/v1/rollouts",
                json!({"id": "r-f", "product": PRODUCT, "version": "1.0.0",
                    "stages": [{"cohort": "lab", "percent": 100}],
                    "gate": {"max_failure_rate": 0.1, "min_reports": 1, "stall_minutes": 60}}),
            ),
            ("/api/v1/rollouts/r-f/start", json!({})),
        ] {
            let res = app.client.post(app.url(path)).bearer_auth(&app.admin).json(&body).send().await.unwrap();
            assert!(res.status().is_success(), "{path}: {}", res.text().await.unwrap());
        }
        assert_eq!(device.report(&app, None).await["changed"], true);
        (app, device)
    }

    #[tokio::test]
    async fn a_director_forged_with_the_director_key_verifies_and_one_with_another_key_does_not() {
        let (app, device) = assigned_device().await;
        let keys = AppKeys::load(&app);
        let root = director_root_v1(&app).await;
        let current = ForgedDirector::fetch(&app.base, &app.client, &device.id, &device.token).await;
        let mut targets = current.current_targets();
        assert_eq!(targets.len(), 1, "the device is assigned one target");
        // The compromised director invents a custom field (the agent's cross-check must catch it).
        targets.values_mut().next().unwrap()["custom"]["action"] = json!("rollback");
        let mirror = Mirror::start(&app.base);

        mirror.clear();
        current.forge(targets.clone(), &keys.director).install(&mirror, &device.id);
        let store = tempfile::tempdir().unwrap();
        let repo = mirror.tough_director(&root, &device.id, &device.token, store.path()).await.unwrap();
        assert_eq!(repo.targets().signed.version.get(), version_of(&current.targets) + 1);
        assert_eq!(repo.timestamp().signed.version.get(), version_of(&current.timestamp) + 1);
        let (_, target) = repo.targets().signed.targets.iter().next().unwrap();
        assert_eq!(target.custom["action"], "rollback", "tough serves the forged metadata");
        assert!(mirror.requests().iter().any(|r| r.ends_with("/timestamp.json")));

        mirror.clear();
        current.forge(targets, &fresh_key()).install(&mirror, &device.id);
        let store = tempfile::tempdir().unwrap();
        let err = mirror.tough_director(&root, &device.id, &device.token, store.path()).await.unwrap_err();
        assert!(err.to_string().contains("signature"), "{err}");

        // Honest again: the real metadata still loads through the mirror.
        mirror.clear();
        let store = tempfile::tempdir().unwrap();
        let repo = mirror.tough_director(&root, &device.id, &device.token, store.path()).await.unwrap();
        assert_eq!(repo.targets().signed.version.get(), version_of(&current.targets));
    }

    #[tokio::test]
    async fn an_image_timestamp_re_signed_with_an_expiry_in_the_past_is_refused_as_expired() {
        let app = spawn_app().await;
        app.create_product(PRODUCT, &[HW]).await;
        app.publish(PRODUCT, "1.0.0", "fw.bin", firmware(5, 1000)).await;
        let keys = AppKeys::load(&app);
        let root = app.root_v1().await;
        let chain = ImageChain::fetch(&app.base, &app.client).await;
        let mirror = Mirror::start(&app.base);

        // Control: the same forgery, still valid, is accepted (the signature is right).
        let fresh = chain.timestamp_draft().with_expires(expires_in(3600)).sign(&[&keys.image_timestamp]);
        mirror.replace("/repo/metadata/timestamp.json", fresh);
        let store = tempfile::tempdir().unwrap();
        let repo = mirror.tough_image(&root, store.path()).await.unwrap();
        assert_eq!(repo.timestamp().signed.version.get(), version_of(&chain.timestamp) + 1);

        let expired = chain.timestamp_draft().with_expires(expires_in(-3600)).sign(&[&keys.image_timestamp]);
        mirror.replace("/repo/metadata/timestamp.json", expired);
        let store = tempfile::tempdir().unwrap();
        let err = mirror.tough_image(&root, store.path()).await.unwrap_err();
        assert!(err.to_string().to_lowercase().contains("expired"), "{err}");
    }

    #[tokio::test]
    async fn a_snapshot_rolled_back_with_the_online_keys_hides_a_release_from_a_new_client_only() {
        let app = spawn_app().await;
        app.create_product(PRODUCT, &[HW]).await;
        app.publish(PRODUCT, "1.0.0", "fw.bin", firmware(6, 1000)).await;
        app.publish(PRODUCT, "1.1.0", "fw.bin", firmware(7, 1000)).await;
        let keys = AppKeys::load(&app);
        let root = app.root_v1().await;
        let mirror = Mirror::start(&app.base);
        let known = tempfile::tempdir().unwrap();
        mirror.tough_image(&root, known.path()).await.unwrap();

        let chain = ImageChain::fetch(&app.base, &app.client).await;
        let current = chain.role_version(PRODUCT);
        let mut draft = chain.draft();
        draft.meta_mut().insert(format!("{PRODUCT}.json"), version_entry(current - 1));
        draft.sign(&keys.image_snapshot, &keys.image_timestamp).install(&mirror);

        // A client that never saw the newer product role accepts the chain: it lacks 1.1.0.
        let fresh = tempfile::tempdir().unwrap();
        let repo = mirror.tough_image(&root, fresh.path()).await.unwrap();
        assert_eq!(repo.snapshot().signed.version.get(), version_of(&chain.snapshot) + 1);
        assert!(tough_read(&repo, "pump-x1/1.0.0/fw.bin").await.is_ok());
        assert!(tough_read(&repo, "pump-x1/1.1.0/fw.bin").await.is_err(), "the older role lists no 1.1.0");
        // One that did refuses the rollback.
        let err = mirror.tough_image(&root, known.path()).await.unwrap_err();
        assert!(err.to_string().contains("is greater than version"), "{err}");
    }

    #[tokio::test]
    async fn a_cross_signed_root_rotation_is_followed_and_one_signed_by_new_keys_only_is_refused() {
        let app = spawn_app().await;
        app.create_product(PRODUCT, &[HW]).await;
        let keys = AppKeys::load(&app);
        let root = app.root_v1().await;
        let current: Value = serde_json::from_slice(&root).unwrap();
        let rotation = RootRotation::next(&current).replace_keys("root", 2, 2);
        assert_eq!(rotation.version(), 2);
        let new = rotation.keys_of("root");
        assert!(rotation.draft.signed["keys"].get(keyid(&keys.image_root_1)).is_none(), "old root key dropped");
        let mirror = Mirror::start(&app.base);

        mirror.replace("/repo/metadata/2.root.json", rotation.sign(&[new[0], new[1]]));
        let store = tempfile::tempdir().unwrap();
        let err = mirror.tough_image(&root, store.path()).await.unwrap_err();
        assert!(err.to_string().contains("root") || err.to_string().contains("signature"), "{err}");

        let proper = rotation.sign(&[&keys.image_root_1, &keys.image_root_2, new[0], new[1]]);
        mirror.replace("/repo/metadata/2.root.json", proper);
        let store = tempfile::tempdir().unwrap();
        let repo = mirror.tough_image(&root, store.path()).await.unwrap();
        assert_eq!(repo.root().signed.version.get(), 2);
        assert!(mirror.requests().contains(&"GET /repo/metadata/3.root.json".to_owned()), "asked upstream, 404");
    }
}
