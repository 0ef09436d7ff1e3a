//! Refusal fixtures, part 2: a compromised director (docs/design.md §1-§2). The attacker holds the
//! director's online key, sometimes also the image repository's snapshot and timestamp keys,
//! and serves what it likes through a mirror; it never holds a product key. The director may
//! only choose among what the image repository signed, for this device, its hardware and
//! product, and never downgrade unless marked, never below the installed release's floor.
//!
//! Each test shows the real agent refusing ([`Fixture::refused`]) and, as the control, that the
//! same forgery machinery without the attack's one change is accepted and installs: the refusal
//! is due to that change, nothing else.

use serde_json::{Value, json};

use crate::common::{firmware, sha256_hex};
use crate::fleet::Device;
use crate::forge::{Draft, ImageChain, fetch_json, fresh_key, keyid, product_key, sha512_hex, tuf_key, version_entry};
use crate::refusals_common::{
    DEVICE, DirectorForger, Fixture, HW, PRODUCT, ROLLOUT, chain_after, director_entry, image_target, publish,
    target_name, targets_of,
};

/// The director entry for `PRODUCT`'s `version`, for this device, with `action`.
async fn entry(fx: &Fixture, version: &str, action: &str) -> (String, Value) {
    let name = target_name(PRODUCT, version);
    let image = image_target(&fx.app, &name).await;
    (name, director_entry(&image, DEVICE, action))
}

#[tokio::test]
async fn a_director_target_that_differs_from_the_image_repository_is_refused() {
    let mut fx = Fixture::assigned(&["1.0.0", "1.1.0"], "1.0.0").await;
    fx.agent.check().await.unwrap();
    let mut forger = DirectorForger::fetch(&fx).await;
    let (name, honest) = entry(&fx, "1.0.0", "install").await;
    assert_eq!(forger.targets(), targets_of(&[(&name, honest.clone())]), "the forger's entry is the director's");

    // Hashes of another image (same length): the director cannot pick the bytes.
    let mut other_bytes = honest.clone();
    other_bytes["hashes"] = image_target(&fx.app, &target_name(PRODUCT, "1.1.0")).await["hashes"].clone();
    forger.serve(&fx, targets_of(&[(&name, other_bytes)]));
    fx.refused("image_mismatch").await;

    // The image repository's custom changed by the director: another version, wider hardware.
    let mut other_version = honest.clone();
    other_version["custom"]["version"] = json!("1.1.0");
    forger.serve(&fx, targets_of(&[(&name, other_version)]));
    fx.refused("custom_mismatch").await;
    let mut wider = honest.clone();
    wider["custom"]["hardware_ids"].as_array_mut().unwrap().push(json!("pump-x1-revZ"));
    forger.serve(&fx, targets_of(&[(&name, wider)]));
    fx.refused("custom_mismatch").await;

    forger.serve(&fx, targets_of(&[(&name, honest)]));
    fx.installs("1.0.0").await;
}

/// Makes the mirror serve `other`'s real director metadata, byte for byte, as `DEVICE`'s.
async fn replay_director_of(fx: &Fixture, other: &Device) {
    let get = |file: String| async move {
        let url = fx.app.url(&format!("/director/{}/metadata/{file}", other.id));
        let res = fx.app.client.get(url).bearer_auth(&other.token).send().await.unwrap();
        assert_eq!(res.status(), 200);
        res.bytes().await.unwrap().to_vec()
    };
    let version = |bytes: &[u8], role: &str| {
        let doc: Value = serde_json::from_slice(bytes).unwrap();
        doc["signed"]["meta"][role]["version"].as_u64().unwrap()
    };
    let timestamp = get("timestamp.json".into()).await;
    let snapshot_version = version(&timestamp, "snapshot.json");
    let snapshot = get(format!("{snapshot_version}.snapshot.json")).await;
    let targets_version = version(&snapshot, "targets.json");
    let targets = get(format!("{targets_version}.targets.json")).await;
    let dir = format!("/director/{DEVICE}/metadata");
    fx.mirror.replace(&format!("{dir}/timestamp.json"), timestamp);
    fx.mirror.replace(&format!("{dir}/{snapshot_version}.snapshot.json"), snapshot);
    fx.mirror.replace(&format!("{dir}/{targets_version}.targets.json"), targets);
}

#[tokio::test]
async fn director_metadata_for_another_device_is_refused() {
    let mut fx = Fixture::assigned(&["1.0.0"], "1.0.0").await;
    // Another device of the fleet, assigned the same release.
    let mut other = Device::enroll(&fx.app, "pump-0002", PRODUCT, HW, &fx.enrollment).await;
    assert_eq!(other.report(&fx.app, None).await["changed"], true);

    // No key needed: its genuine metadata, replayed under this device's path.
    replay_director_of(&fx, &other).await;
    let refusal = fx.refused("wrong_device").await;
    assert!(refusal.message.contains("pump-0002"), "{refusal}");
    fx.mirror.clear();
    fx.installs("1.0.0").await;
    fx.agent.confirm(&sha256_hex(fx.image("1.0.0"))).await.unwrap();

    // With the director key: this device's metadata, the entry addressed to the other device.
    let mut forger = DirectorForger::fetch(&fx).await;
    let (name, mut forged) = entry(&fx, "1.0.0", "install").await;
    forged["custom"]["device_id"] = json!("pump-0002");
    forger.serve(&fx, targets_of(&[(&name, forged)]));
    fx.refused("wrong_device").await;
}

#[tokio::test]
async fn more_than_one_director_target_is_refused() {
    let mut fx = Fixture::assigned(&["1.0.0", "1.1.0"], "1.0.0").await;
    let mut forger = DirectorForger::fetch(&fx).await;
    let (old, old_entry) = entry(&fx, "1.0.0", "install").await;
    let (new, new_entry) = entry(&fx, "1.1.0", "install").await;
    forger.serve(&fx, targets_of(&[(&old, old_entry), (&new, new_entry.clone())]));
    fx.refused("director_target_count").await;
    forger.serve(&fx, targets_of(&[(&new, new_entry)]));
    fx.installs("1.1.0").await;
}

#[tokio::test]
async fn director_metadata_outside_the_protocol_is_refused() {
    let mut fx = Fixture::assigned(&["1.0.0"], "1.0.0").await;
    let mut forger = DirectorForger::fetch(&fx).await;
    let (name, honest) = entry(&fx, "1.0.0", "install").await;

    // Delegations: the director's targets must name the one target itself.
    let key = fresh_key();
    forger.serve_edited(&fx, targets_of(&[(&name, honest.clone())]), |signed| {
        signed["delegations"] = json!({"keys": {keyid(&key): tuf_key(&key)},
            "roles": [{"name": "elsewhere", "keyids": [keyid(&key)], "threshold": 1, "paths": ["*"], "terminating": true}]});
    });
    fx.refused("director_delegations").await;

    // An action the protocol does not know.
    let mut unknown = honest.clone();
    unknown["custom"]["action"] = json!("reinstall");
    forger.serve(&fx, targets_of(&[(&name, unknown)]));
    fx.refused("invalid_director_custom").await;

    forger.serve(&fx, targets_of(&[(&name, honest)]));
    fx.installs("1.0.0").await;
}

#[tokio::test]
async fn images_for_other_hardware_or_another_product_are_refused() {
    let mut fx = Fixture::assigned(&["1.0.0"], "1.0.0").await;
    // Another product's releases, signed by that product's key: one for other hardware, one for
    // this device's hardware. Neither is in this product's role, whatever its name says.
    fx.app.create_product("valve-x2", &["valve-x2-revA"]).await;
    publish(&fx.app, "valve-x2", "1.0.0", firmware(40, 4096), None).await;
    fx.app.create_product("pump-lite", &[HW]).await;
    publish(&fx.app, "pump-lite", "1.0.0", firmware(41, 4096), None).await;
    let mut forger = DirectorForger::fetch(&fx).await;
    for product in ["valve-x2", "pump-lite"] {
        let name = target_name(product, "1.0.0");
        let image = image_target(&fx.app, &name).await;
        forger.serve(&fx, targets_of(&[(&name, director_entry(&image, DEVICE, "install"))]));
        fx.refused("not_in_image_repository").await;
    }
    // A name that walks out of this product's paths into another product's role.
    let sneaky = format!("{PRODUCT}/../pump-lite/1.0.0/fw.bin");
    let image = image_target(&fx.app, &target_name("pump-lite", "1.0.0")).await;
    forger.serve(&fx, targets_of(&[(&sneaky, director_entry(&image, DEVICE, "install"))]));
    fx.refused("invalid_target_name").await;

    // This product's own key signs an image for other hardware (a manufacturer's mistake): the
    // image repository and the director agree, the hardware id does not.
    let other_hw = firmware(42, 4096);
    let name = target_name(PRODUCT, "2.0.0");
    fx.mirror.replace(&format!("/repo/targets/{PRODUCT}/2.0.0/{}.fw.bin", sha256_hex(&other_hw)), other_hw.clone());
    let mut target = image_target(&fx.app, &target_name(PRODUCT, "1.0.0")).await;
    target["length"] = json!(other_hw.len());
    target["hashes"] = json!({"sha256": sha256_hex(&other_hw), "sha512": sha512_hex(&other_hw)});
    target["custom"]["version"] = json!("2.0.0");
    target["custom"]["hardware_ids"] = json!(["pump-x1-revZ"]);
    fx.serve_product_role(PRODUCT, |role| role["targets"][&name] = target.clone()).await;
    forger.serve(&fx, targets_of(&[(&name, director_entry(&target, DEVICE, "install"))]));
    fx.refused("wrong_hardware").await;

    let (name, honest) = entry(&fx, "1.0.0", "install").await;
    forger.serve(&fx, targets_of(&[(&name, honest)]));
    fx.installs("1.0.0").await;
}

#[tokio::test]
async fn an_older_release_installs_only_when_marked_as_a_rollback() {
    let mut fx = Fixture::assigned(&["1.0.0", "1.1.0"], "1.1.0").await;
    fx.install_and_confirm("1.1.0").await;
    let mut forger = DirectorForger::fetch(&fx).await;

    let (name, downgrade) = entry(&fx, "1.0.0", "install").await;
    forger.serve(&fx, targets_of(&[(&name, downgrade)]));
    let refusal = fx.refused("unmarked_downgrade").await;
    assert!(refusal.message.contains("1.1.0"), "{refusal}");

    let (name, rollback) = entry(&fx, "1.0.0", "rollback").await;
    forger.serve(&fx, targets_of(&[(&name, rollback)]));
    fx.installs("1.0.0").await;
}

#[tokio::test]
async fn a_rollback_below_the_floor_a_release_set_is_refused() {
    let mut fx = Fixture::new(&["1.0.0", "1.1.0"]).await;
    fx.publish("1.2.0", Some("1.1.0")).await;
    fx.roll_out(ROLLOUT, "1.2.0").await;
    fx.install_and_confirm("1.2.0").await;
    let mut forger = DirectorForger::fetch(&fx).await;

    let (name, below) = entry(&fx, "1.0.0", "rollback").await;
    forger.serve(&fx, targets_of(&[(&name, below)]));
    let refusal = fx.refused("below_security_floor").await;
    assert!(refusal.message.contains("1.1.0"), "{refusal}");

    // The floor itself is allowed.
    let (name, at_floor) = entry(&fx, "1.1.0", "rollback").await;
    forger.serve(&fx, targets_of(&[(&name, at_floor)]));
    fx.installs("1.1.0").await;
}

#[tokio::test]
async fn a_director_with_the_online_image_keys_cannot_install_what_the_product_key_never_signed() {
    let mut fx = Fixture::assigned(&["1.0.0"], "1.0.0").await;
    let mut forger = DirectorForger::fetch(&fx).await;

    // The attacker's image, served where the agent will look for it.
    let evil = firmware(66, 8 * 1024);
    let evil_name = target_name(PRODUCT, "6.6.6");
    fx.mirror.replace(&format!("/repo/targets/{PRODUCT}/6.6.6/{}.fw.bin", sha256_hex(&evil)), evil.clone());
    let mut evil_target = image_target(&fx.app, &target_name(PRODUCT, "1.0.0")).await;
    evil_target["length"] = json!(evil.len());
    evil_target["hashes"] = json!({"sha256": sha256_hex(&evil), "sha512": sha512_hex(&evil)});
    evil_target["custom"]["version"] = json!("6.6.6");
    let assign_evil = targets_of(&[(&evil_name, director_entry(&evil_target, DEVICE, "install"))]);

    // The director alone (its metadata stays served below): the image repository does not list it.
    forger.serve(&fx, assign_evil);
    fx.refused("not_in_image_repository").await;

    // With the snapshot and timestamp keys too: a product role listing it, signed with a key the
    // top-level targets role does not delegate to, in a valid snapshot and timestamp.
    let chain = ImageChain::fetch(&fx.app.base, &fx.app.client).await;
    let role_version = chain.role_version(PRODUCT);
    let role_url = fx.app.url(&format!("/repo/metadata/{role_version}.{PRODUCT}.json"));
    let role = fetch_json(&fx.app.client, &role_url, None).await;
    let role_listing_evil = |version: u64, key: &ed25519_dalek::SigningKey| {
        let mut draft = Draft::next(&role).with_version(version);
        draft.signed["targets"][&evil_name] = evil_target.clone();
        (format!("/repo/metadata/{version}.{PRODUCT}.json"), draft.sign(&[key]))
    };
    let (path, forged_role) = role_listing_evil(role_version + 1, &fx.keys.image_snapshot);
    fx.mirror.replace(&path, forged_role);
    let mut draft = chain.draft();
    draft.meta_mut().insert(format!("{PRODUCT}.json"), version_entry(role_version + 1));
    let attack = draft.sign(&fx.keys.image_snapshot, &fx.keys.image_timestamp);
    attack.install(&fx.mirror);
    let refusal = fx.refused("bad_signature").await;
    assert!(refusal.message.starts_with("image repository"), "{refusal}");
    let fetched = format!("GET /repo/metadata/{}.{PRODUCT}.json", role_version + 1);
    assert!(fx.mirror.requests().contains(&fetched), "the refused role is the forged product role");

    // Control: the one thing the attacker lacked, the product key, and the same forgery installs.
    let (path, signed_role) = role_listing_evil(role_version + 2, &product_key(&fx.app, PRODUCT));
    fx.mirror.replace(&path, signed_role);
    let mut draft = chain_after(&attack).draft();
    draft.meta_mut().insert(format!("{PRODUCT}.json"), version_entry(role_version + 2));
    draft.sign(&fx.keys.image_snapshot, &fx.keys.image_timestamp).install(&fx.mirror);
    std::fs::write(&fx.opts.slot, b"old image").unwrap();
    let outcome = fx.agent.install(&fx.opts).await;
    assert!(
        matches!(outcome, Ok(patchgate_agent::InstallOutcome::Installed(ref t)) if t.name == evil_name),
        "{outcome:?}"
    );
    assert_eq!(std::fs::read(&fx.opts.slot).unwrap(), evil, "with the product key, anything installs");
}
