//! Refusal fixtures, part 1: attacks on the image repository and the network between the
//! device and the server (docs/design.md §1-§2). The attacker controls a mirror in front of the
//! server and, where a fixture says so, holds the image repository's online snapshot and
//! timestamp keys; never the root, top-level targets or product keys.
//!
//! Each test sets up an install that would succeed (a release rolled out to the device), shows
//! the real agent library refusing the attack with its stable code ([`Fixture::refused`]), then
//! that the same install succeeds once the mirror is honest again (or, where the attack left a
//! forged timestamp trusted, once the same forgery comes without its one bad change).

use serde_json::{Value, json};

use crate::common::{firmware, sha256_hex};
use crate::forge::{Draft, ImageChain, RootRotation, expires_in, sha512_hex, signed_part, version_entry, version_of};
use crate::refusals_common::{
    DEVICE, DirectorForger, Fixture, HW, PRODUCT, ROLLOUT, chain_after, director_entry, publish, target_name,
    targets_of,
};

/// `body` parsed, changed by `edit`, serialized again (not re-signed).
fn edited(body: &[u8], edit: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut doc: Value = serde_json::from_slice(body).unwrap();
    edit(&mut doc);
    serde_json::to_vec(&doc).unwrap()
}

/// The image repository's root version 1 (what the device was provisioned with), parsed.
async fn root_v1(fx: &Fixture) -> Value {
    serde_json::from_slice(&fx.app.root_v1().await).unwrap()
}

#[tokio::test]
async fn a_flipped_byte_in_the_image_is_refused_as_a_hash_mismatch() {
    let mut fx = Fixture::assigned(&["1.0.0"], "1.0.0").await;
    fx.mirror.transform("/repo/targets/", |_, mut body| {
        body[100] ^= 0x01;
        body
    });
    fx.refused("target_hash_mismatch").await;
    fx.mirror.clear();
    fx.installs("1.0.0").await;
}

#[tokio::test]
async fn metadata_changed_without_re_signing_is_refused() {
    let mut fx = Fixture::assigned(&["1.0.0"], "1.0.0").await;

    // The director's targets: a new rollout id, which no cross-check would notice.
    fx.mirror.transform(&format!("/director/{DEVICE}/metadata/"), |path, body| {
        if !path.ends_with(".targets.json") {
            return body;
        }
        edited(&body, |doc| {
            doc["signed"]["targets"][target_name(PRODUCT, "1.0.0")]["custom"]["rollout_id"] = json!("r-evil")
        })
    });
    let refusal = fx.refused("bad_signature").await;
    assert!(refusal.message.starts_with("director repository"), "{refusal}");

    // The image product role: one more target, which the director does not assign.
    fx.mirror.clear();
    fx.mirror.transform("/repo/metadata/", |path, body| {
        if !path.ends_with(&format!(".{PRODUCT}.json")) {
            return body;
        }
        edited(&body, |doc| {
            let listed = doc["signed"]["targets"][target_name(PRODUCT, "1.0.0")].clone();
            doc["signed"]["targets"][target_name(PRODUCT, "6.6.6")] = listed;
        })
    });
    let refusal = fx.refused("bad_signature").await;
    assert!(refusal.message.starts_with("image repository"), "{refusal}");

    // The image snapshot, same length (the expiry a year later): the timestamp's hash catches it.
    // The device keeps using the snapshot it trusts while the timestamp names it (TUF §5.5:
    // it is not fetched again); a new release makes it fetch the next one, which is tampered.
    fx.mirror.clear();
    fx.publish("1.0.1", None).await;
    fx.mirror.transform("/repo/metadata/", |path, body| {
        if !path.ends_with(".snapshot.json") {
            return body;
        }
        let text = String::from_utf8(body).unwrap();
        let at = text.find("\"expires\":\"").unwrap() + "\"expires\":\"".len();
        let year: u32 = text[at..at + 4].parse().unwrap();
        format!("{}{}{}", &text[..at], year + 1, &text[at + 4..]).into_bytes()
    });
    fx.refused("metadata_mismatch").await;

    fx.mirror.clear();
    fx.installs("1.0.0").await;
}

#[tokio::test]
async fn signatures_below_the_threshold_are_refused() {
    let mut fx = Fixture::assigned(&["1.0.0"], "1.0.0").await;
    let current = root_v1(&fx).await;
    assert_eq!(current["signed"]["roles"]["root"]["threshold"], 2);
    let rotation = RootRotation::next(&current).replace_keys("root", 2, 2);
    let new = rotation.keys_of("root");
    let old = &fx.keys.image_root_1.clone();

    // One of the two old root keys (and both new ones).
    fx.mirror.replace("/repo/metadata/2.root.json", rotation.sign(&[old, new[0], new[1]]));
    fx.refused("bad_signature").await;
    // The same old key twice does not make two.
    fx.mirror.replace("/repo/metadata/2.root.json", rotation.sign(&[old, old, new[0], new[1]]));
    fx.refused("bad_signature").await;

    // A timestamp with its signatures removed.
    fx.mirror.clear();
    fx.mirror.transform("/repo/metadata/timestamp.json", |_, body| edited(&body, |doc| doc["signatures"] = json!([])));
    fx.refused("bad_signature").await;

    fx.mirror.clear();
    fx.installs("1.0.0").await;
}

#[tokio::test]
async fn a_rolled_back_timestamp_is_refused() {
    let mut fx = Fixture::new(&["1.0.0"]).await;
    let old = fx.app.metadata("timestamp.json").await.bytes().await.unwrap().to_vec();
    fx.publish("1.1.0", None).await;
    fx.roll_out(ROLLOUT, "1.1.0").await;
    // The agent verifies the newer timestamp the second release brought.
    let checked = fx.agent.check().await.unwrap();
    assert!(matches!(checked, patchgate_agent::CheckOutcome::Assigned(ref t) if t.version == "1.1.0"), "{checked:?}");
    assert!(version_of(&serde_json::from_slice(&old).unwrap()) < trusted_version(&fx, "timestamp.json"));

    fx.mirror.replace("/repo/metadata/timestamp.json", old);
    fx.refused("rollback_attack").await;
    fx.mirror.clear();
    fx.installs("1.1.0").await;
}

/// The version of `file` in the agent's image datastore.
fn trusted_version(fx: &Fixture, file: &str) -> u64 {
    let bytes = std::fs::read(fx.state.join("image").join(file)).unwrap();
    version_of(&serde_json::from_slice(&bytes).unwrap())
}

#[tokio::test]
async fn a_timestamp_naming_an_older_snapshot_is_refused() {
    let mut fx = Fixture::assigned(&["1.0.0"], "1.0.0").await;
    fx.agent.check().await.unwrap();
    let chain = ImageChain::fetch(&fx.app.base, &fx.app.client).await;
    let trusted = version_of(&chain.snapshot);
    assert_eq!(trusted, trusted_version(&fx, "snapshot.json"));
    assert!(trusted > 1, "there is an older snapshot to roll back to");

    // Signed with the online keys: a newer timestamp, over a snapshot one version older.
    let mut draft = chain.draft();
    draft.snapshot = draft.snapshot.with_version(trusted - 1);
    draft.sign(&fx.keys.image_snapshot, &fx.keys.image_timestamp).install(&fx.mirror);
    fx.refused("rollback_attack").await;
    fx.mirror.clear();
    fx.installs("1.0.0").await;
}

#[tokio::test]
async fn a_snapshot_listing_an_older_product_role_is_refused() {
    let mut fx = Fixture::new(&["1.0.0", "1.1.0"]).await;
    fx.roll_out(ROLLOUT, "1.0.0").await;
    fx.agent.check().await.unwrap();
    let chain = ImageChain::fetch(&fx.app.base, &fx.app.client).await;
    let role = chain.role_version(PRODUCT);

    // A valid, newer snapshot (online keys) that lists the product role one version back.
    let mut draft = chain.draft();
    draft.meta_mut().insert(format!("{PRODUCT}.json"), version_entry(role - 1));
    let attack = draft.sign(&fx.keys.image_snapshot, &fx.keys.image_timestamp);
    attack.install(&fx.mirror);
    fx.refused("rollback_attack").await;

    // The agent now trusts the forged timestamp (it was valid): the honest server's is older. The
    // same forgery without the rollback, one version on, is accepted and installs.
    let mut honest = chain_after(&attack).draft();
    honest.meta_mut().insert(format!("{PRODUCT}.json"), version_entry(role));
    honest.sign(&fx.keys.image_snapshot, &fx.keys.image_timestamp).install(&fx.mirror);
    fx.installs("1.0.0").await;
}

#[tokio::test]
async fn an_expired_timestamp_is_refused() {
    let mut fx = Fixture::assigned(&["1.0.0"], "1.0.0").await;
    let chain = ImageChain::fetch(&fx.app.base, &fx.app.client).await;
    let expired = chain.timestamp_draft().with_expires(expires_in(-60)).sign(&[&fx.keys.image_timestamp]);
    fx.mirror.replace("/repo/metadata/timestamp.json", expired);
    fx.refused("expired_metadata").await;
    fx.mirror.clear();
    fx.installs("1.0.0").await;
}

#[tokio::test]
async fn more_data_than_signed_is_refused() {
    let mut fx = Fixture::assigned(&["1.0.0"], "1.0.0").await;

    // The image, with bytes appended.
    fx.mirror.transform("/repo/targets/", |_, mut body| {
        body.extend_from_slice(&[0u8; 4096]);
        body
    });
    fx.refused("endless_data").await;
    assert_eq!(std::fs::read_dir(fx.state.join("staging")).unwrap().count(), 0, "nothing staged");

    // The snapshot, padded (still valid JSON) past the length the timestamp signs. A new release
    // makes the device fetch a snapshot (it keeps the one it trusts while the timestamp names it).
    fx.mirror.clear();
    fx.publish("1.0.1", None).await;
    fx.mirror.transform("/repo/metadata/", |path, mut body| {
        if path.ends_with(".snapshot.json") {
            body.extend_from_slice(&[b' '; 64 * 1024]);
        }
        body
    });
    fx.refused("endless_data").await;

    fx.mirror.clear();
    fx.installs("1.0.0").await;
}

#[tokio::test]
async fn root_rotations_are_followed_only_when_cross_signed_and_stay_trusted_after_a_restart() {
    let mut fx = Fixture::assigned(&["1.0.0"], "1.0.0").await;
    let v1 = root_v1(&fx).await;
    let rotation = RootRotation::next(&v1).replace_keys("root", 2, 2);
    let new = rotation.keys_of("root");
    let (old_1, old_2) = (&fx.keys.image_root_1.clone(), &fx.keys.image_root_2.clone());

    // Signed by the new keys only: the trusted root never approved them.
    fx.mirror.replace("/repo/metadata/2.root.json", rotation.sign(&[new[0], new[1]]));
    fx.refused("bad_signature").await;

    // Cross-signed (a threshold of the old keys and of the new ones): followed, and persisted.
    fx.mirror.replace("/repo/metadata/2.root.json", rotation.sign(&[old_1, old_2, new[0], new[1]]));
    fx.installs("1.0.0").await;
    let persisted: Value = serde_json::from_slice(&std::fs::read(fx.state.join("image/root.json")).unwrap()).unwrap();
    assert_eq!(version_of(&persisted), 2);
    assert_eq!(signed_part(&persisted)["roles"]["root"], rotation.draft.signed["roles"]["root"]);
    fx.agent.confirm(&crate::common::sha256_hex(fx.image("1.0.0"))).await.unwrap();

    // Whoever kept the retired keys now serves roots 2 and 3 that trust them again. A device
    // that started over from its provisioned root 1 would follow them...
    let retired_2 = Draft::next(&v1);
    let retired_3 = Draft::next(&retired_2.signed);
    fx.mirror.replace("/repo/metadata/2.root.json", retired_2.sign(&[old_1, old_2]));
    fx.mirror.replace("/repo/metadata/3.root.json", retired_3.sign(&[old_1, old_2]));
    let forgetful = tempfile::tempdir().unwrap();
    let repo = fx.mirror.tough_image(&fx.app.root_v1().await, forgetful.path()).await.unwrap();
    assert_eq!(repo.root().signed.version.get(), 3, "from root 1, the retired keys still work");
    // ...but the agent, restarted, starts from root 2 and refuses root 3.
    fx.agent.restart().unwrap();
    fx.refused("bad_signature").await;
}

/// One product's role (signed by that product's own key) listing a name under ANOTHER
/// product's paths: the TUF walk never consults a role for names outside what it was delegated,
/// so the entry is ignored. A device of the other product still installs its update (tough
/// refused the whole repository here, stopping every product's devices), and never installs
/// the entry, even when a compromised director assigns it.
#[tokio::test]
async fn a_role_listing_a_name_outside_its_paths_stops_no_other_products_update_and_is_never_installed() {
    const OTHER: &str = "syringe-s2";
    let mut fx = Fixture::new(&["1.0.0"]).await;
    fx.app.create_product(OTHER, &["syringe-revA"]).await;
    publish(&fx.app, OTHER, "1.0.0", firmware(90, 4096), None).await;
    // The other product's key holder signs a role that also lists a pump image.
    let forged_image = firmware(91, 4096);
    let outside = json!({"length": forged_image.len(), "hashes": {"sha256": sha256_hex(&forged_image),
        "sha512": sha512_hex(&forged_image)}, "custom": {"version": "6.6.6", "hardware_ids": [HW],
        "rollback_floor": "6.6.6", "released_at": "2026-11-24T10:00:00Z"}});
    let outside_name = target_name(PRODUCT, "6.6.6");
    let role_version = fx.serve_product_role(OTHER, |role| role["targets"][&outside_name] = outside.clone()).await;

    fx.roll_out(ROLLOUT, "1.0.0").await;
    // Installed under a snapshot that names the role with the out-of-path entry, whose floor
    // (6.6.6) would also have refused 1.0.0 had the entry counted for pump-x1.
    fx.install_and_confirm("1.0.0").await;
    let snapshot: Value =
        serde_json::from_slice(&std::fs::read(fx.state.join("image/snapshot.json")).unwrap()).unwrap();
    assert_eq!(snapshot["signed"]["meta"][format!("{OTHER}.json")]["version"], json!(role_version));

    // A compromised director assigns the out-of-path entry, byte for byte as the role lists it.
    let mut director = DirectorForger::fetch(&fx).await;
    director.serve(&fx, targets_of(&[(&outside_name, director_entry(&outside, DEVICE, "install"))]));
    fx.refused("not_in_image_repository").await;
}
