#![allow(clippy::unwrap_used, reason = "tests")]

use serde_json::{Value, json};

use super::*;

const NAME: &str = "pump-x1/1.1.0/fw.bin";
const SHA256: &str = "aa00000000000000000000000000000000000000000000000000000000000000";
const SHA512: &str = "bb";

fn image_custom(version: &str, floor: &str) -> Value {
    json!({"version": version, "hardware_ids": ["revA"], "rollback_floor": floor, "released_at": "2026-11-24T10:00:00Z"})
}

fn target(custom: Value) -> Value {
    json!({"length": 1024, "hashes": {"sha256": SHA256, "sha512": SHA512}, "custom": custom})
}

fn director_custom(image: &Value, device: &str, action: &str) -> Value {
    let mut c = image.clone();
    c["device_id"] = json!(device);
    c["rollout_id"] = json!("r-1");
    c["action"] = json!(action);
    c
}

fn targets(map: Value) -> Targets {
    serde_json::from_value(json!({
        "_type": "targets", "spec_version": "1.0.31", "version": 1,
        "expires": "2030-01-01T00:00:00Z", "targets": map
    }))
    .unwrap()
}

/// The image repository's top-level targets delegating `pump-x1/*/*` to the role `pump-x1`, which
/// lists `map` (as tough holds it once the delegated role is loaded).
fn repo(map: Value) -> Targets {
    repo_for("pump-x1", map)
}

fn repo_for(product: &str, map: Value) -> Targets {
    let mut top: Targets = serde_json::from_value(json!({
        "_type": "targets", "spec_version": "1.0.31", "version": 1,
        "expires": "2030-01-01T00:00:00Z", "targets": {},
        "delegations": {"keys": {}, "roles": [{"name": product, "keyids": [], "threshold": 1,
            "paths": [format!("{product}/*/*")], "terminating": true}]}
    }))
    .unwrap();
    let role = &mut top.delegations.as_mut().unwrap().roles[0];
    role.targets = Some(tough::schema::Signed { signed: targets(map), signatures: vec![] });
    top
}

fn me() -> Identity<'static> {
    Identity { device_id: "pump-0001", product: "pump-x1", hardware_id: "revA" }
}

fn installed(version: &str, floor: &str) -> InstalledRecord {
    InstalledRecord {
        name: format!("pump-x1/{version}/fw.bin"),
        sha256: "cc".repeat(32),
        version: version.into(),
        rollback_floor: floor.into(),
    }
}

fn assigned(version: &str, action: &str) -> (Targets, Targets) {
    let image = image_custom(version, "1.0.0");
    let name = format!("pump-x1/{version}/fw.bin");
    let director = targets(json!({ &name: target(director_custom(&image, "pump-0001", action)) }));
    (director, repo(json!({ &name: target(image) })))
}

fn refusal(director: &Targets, image: &Targets, installed: Option<&InstalledRecord>) -> &'static str {
    decide(director, image, me(), installed).unwrap_err().code
}

#[test]
fn an_agreeing_assignment_is_installed() {
    let (director, image) = assigned("1.1.0", "install");
    let Decision::Install(a) = decide(&director, &image, me(), Some(&installed("1.0.0", "0.0.0"))).unwrap() else {
        panic!("expected an install");
    };
    assert_eq!((a.name.as_str(), a.version.as_str(), a.length), (NAME, "1.1.0", 1024));
    assert_eq!((a.sha256.as_str(), a.sha512.as_deref()), (SHA256, Some(SHA512)));
    assert_eq!((a.action, a.rollout_id.as_str(), a.rollback_floor.as_str()), (DirectorAction::Install, "r-1", "1.0.0"));
}

#[test]
fn nothing_assigned_or_already_running_is_nothing() {
    let image = assigned("1.1.0", "install").1;
    assert_eq!(decide(&targets(json!({})), &image, me(), None).unwrap(), Decision::Nothing);
    let (director, image) = assigned("1.1.0", "install");
    let mut running = installed("1.1.0", "0.0.0");
    running.sha256 = SHA256.into();
    assert_eq!(decide(&director, &image, me(), Some(&running)).unwrap(), Decision::Nothing);
}

#[test]
fn the_director_may_not_say_more_than_one_thing() {
    let (_, image) = assigned("1.1.0", "install");
    let one = director_custom(&image_custom("1.1.0", "1.0.0"), "pump-0001", "install");
    let two = targets(json!({NAME: target(one.clone()), "pump-x1/1.2.0/fw.bin": target(one)}));
    assert_eq!(refusal(&two, &image, None), "director_target_count");
    let (mut director, _) = assigned("1.1.0", "install");
    director.delegations = Some(
        serde_json::from_value(json!({"keys": {}, "roles": [{
        "name": "x", "keyids": [], "threshold": 1, "paths": ["*"], "terminating": true}]}))
        .unwrap(),
    );
    assert_eq!(refusal(&director, &image, None), "director_delegations");
}

#[test]
fn another_devices_assignment_is_refused() {
    let image = image_custom("1.1.0", "1.0.0");
    let director = targets(json!({NAME: target(director_custom(&image, "pump-0002", "install"))}));
    assert_eq!(refusal(&director, &repo(json!({NAME: target(image)})), None), "wrong_device");
}

#[test]
fn the_image_repository_must_list_the_same_bytes_and_custom() {
    let (director, _) = assigned("1.1.0", "install");
    assert_eq!(refusal(&director, &repo(json!({})), None), "not_in_image_repository");
    // Listed at the top level (not signed by the product's key) is not enough.
    assert_eq!(
        refusal(&director, &targets(json!({NAME: target(image_custom("1.1.0", "1.0.0"))})), None),
        "not_in_image_repository"
    );
    let cases: [fn(&mut Value); 4] = [
        |t| t["length"] = json!(1025),
        |t| t["hashes"]["sha256"] = json!("ab".repeat(32)),
        |t| t["hashes"]["sha512"] = json!("cd"),
        |t| t["custom"]["hardware_ids"] = json!(["revA", "revB"]),
    ];
    for (i, change) in cases.into_iter().enumerate() {
        let mut t = target(image_custom("1.1.0", "1.0.0"));
        change(&mut t);
        let code = refusal(&director, &repo(json!({NAME: t})), None);
        let expected = if i == 3 { "custom_mismatch" } else { "image_mismatch" };
        assert_eq!(code, expected, "case {i}");
    }
}

#[test]
fn product_and_hardware_must_be_this_devices() {
    let mut image = image_custom("1.1.0", "1.0.0");
    image["hardware_ids"] = json!(["revB"]);
    let director = targets(json!({NAME: target(director_custom(&image, "pump-0001", "install"))}));
    assert_eq!(refusal(&director, &repo(json!({NAME: target(image.clone())})), None), "wrong_hardware");
    // Another product's image for the same hardware.
    let other = "syringe-s2/1.1.0/fw.bin";
    let image = image_custom("1.1.0", "1.0.0");
    let director = targets(json!({other: target(director_custom(&image, "pump-0001", "install"))}));
    assert_eq!(
        refusal(&director, &repo_for("syringe-s2", json!({other: target(image.clone())})), None),
        "not_in_image_repository"
    );
    // A name that leaves the product's paths, even if a role lists it.
    let sneaky = "pump-x1/../syringe-s2/1.1.0/fw.bin";
    let director = targets(json!({sneaky: target(director_custom(&image, "pump-0001", "install"))}));
    assert_eq!(refusal(&director, &repo(json!({sneaky: target(image)})), None), "invalid_target_name");
}

#[test]
fn version_rules_forbid_unmarked_downgrades_and_going_below_the_floor() {
    let (director, image) = assigned("1.1.0", "install");
    assert_eq!(refusal(&director, &image, Some(&installed("1.2.0", "1.0.0"))), "unmarked_downgrade");
    let (director, image) = assigned("1.1.0", "rollback");
    assert!(matches!(decide(&director, &image, me(), Some(&installed("1.2.0", "1.0.0"))), Ok(Decision::Install(_))));
    assert_eq!(refusal(&director, &image, Some(&installed("1.2.0", "1.2.0"))), "below_rollback_floor");
    let (director, image) = assigned("1.1.0", "install");
    assert_eq!(refusal(&director, &image, Some(&installed("1.3.0", "1.2.0"))), "below_rollback_floor");
}

/// The director assigning `pump-x1/{version}/fw.bin` (own floor 1.0.0) as `action`, and the image
/// repository's `pump-x1` role listing it next to `others`.
fn assigned_among(version: &str, action: &str, others: Value) -> (Targets, Targets) {
    let (director, _) = assigned(version, action);
    let mut map = others;
    map[format!("pump-x1/{version}/fw.bin")] = target(image_custom(version, "1.0.0"));
    (director, repo(map))
}

#[test]
fn a_release_with_a_higher_floor_refuses_anything_below_it_even_as_a_rollback() {
    let raised = json!({"pump-x1/1.2.0/fw.bin": target(image_custom("1.2.0", "1.1.0"))});
    let (director, image) = assigned_among("1.0.0", "rollback", raised.clone());
    // The installed release's own floor would allow the rollback; the product's does not.
    let err = decide(&director, &image, me(), Some(&installed("1.1.0", "0.0.0"))).unwrap_err();
    assert_eq!(err.code, "below_security_floor");
    assert_eq!(err.message, "1.0.0 is below the security floor 1.1.0 set by pump-x1/1.2.0/fw.bin");
    assert_eq!(refusal(&director, &image, None), "below_security_floor");
    let (director, image) = assigned_among("1.0.0", "install", raised);
    assert_eq!(refusal(&director, &image, None), "below_security_floor");
    assert_eq!(refusal(&director, &image, Some(&installed("0.9.0", "0.0.0"))), "below_security_floor");
}

#[test]
fn the_security_floor_names_the_highest_floor_and_the_first_release_that_set_it() {
    let others = json!({
        "pump-x1/1.2.0/fw.bin": target(image_custom("1.2.0", "1.1.0")),
        "pump-x1/1.10.0/fw.bin": target(image_custom("1.10.0", "1.1.0")),
        "pump-x1/1.3.0/fw.bin": target(image_custom("1.3.0", "1.0.5")),
    });
    let (director, image) = assigned_among("1.0.0", "install", others);
    let err = decide(&director, &image, me(), None).unwrap_err();
    assert_eq!(err.message, "1.0.0 is below the security floor 1.1.0 set by pump-x1/1.2.0/fw.bin");
}

#[test]
fn a_target_at_the_security_floor_installs() {
    let raised = json!({"pump-x1/1.2.0/fw.bin": target(image_custom("1.2.0", "1.1.0"))});
    let (director, image) = assigned_among("1.1.0", "install", raised.clone());
    assert!(matches!(decide(&director, &image, me(), None), Ok(Decision::Install(_))));
    let (director, image) = assigned_among("1.1.0", "rollback", raised);
    let Decision::Install(a) = decide(&director, &image, me(), Some(&installed("1.2.0", "1.1.0"))).unwrap() else {
        panic!("expected an install");
    };
    assert_eq!((a.version.as_str(), a.action), ("1.1.0", DirectorAction::Rollback));
}

#[test]
fn a_floor_outside_the_products_delegated_paths_is_ignored() {
    // Listed in pump-x1's role but not under `pump-x1/*/*`, or under it only after resolving `..`.
    let outside = json!({
        "syringe-s2/9.0.0/fw.bin": target(image_custom("9.0.0", "9.0.0")),
        "pump-x1/../syringe-s2/9.1.0/fw.bin": target(image_custom("9.1.0", "9.1.0")),
    });
    let (director, image) = assigned_among("1.1.0", "install", outside);
    assert!(matches!(decide(&director, &image, me(), None), Ok(Decision::Install(_))));
    // Another product's role does not set this product's floor.
    let (director, mut image) = assigned("1.1.0", "install");
    let other = repo_for("syringe-s2", json!({"syringe-s2/9.0.0/fw.bin": target(image_custom("9.0.0", "9.0.0"))}));
    image.delegations.as_mut().unwrap().roles.extend(other.delegations.unwrap().roles);
    assert!(matches!(decide(&director, &image, me(), None), Ok(Decision::Install(_))));
}

#[test]
fn entries_whose_custom_or_floor_does_not_parse_set_no_floor() {
    let mut no_floor = image_custom("1.4.0", "1.0.0");
    no_floor.as_object_mut().unwrap().remove("rollback_floor");
    let others = json!({
        "pump-x1/1.2.0/fw.bin": target(image_custom("1.2.0", "not-a-version")),
        "pump-x1/1.3.0/fw.bin": target(json!({"note": "no release fields"})),
        "pump-x1/1.4.0/fw.bin": target(no_floor),
    });
    let (director, image) = assigned_among("1.1.0", "install", others);
    assert!(matches!(decide(&director, &image, me(), None), Ok(Decision::Install(_))));
}

#[test]
fn a_forged_target_is_refused_by_the_cross_checks_before_the_security_floor() {
    let raised = json!({"pump-x1/1.2.0/fw.bin": target(image_custom("1.2.0", "1.1.0"))});
    let (director, _) = assigned("1.0.0", "rollback");
    assert_eq!(refusal(&director, &repo(raised.clone()), None), "not_in_image_repository");
    let (director, mut image) = assigned_among("1.0.0", "rollback", raised);
    image.delegations.as_mut().unwrap().roles[0]
        .targets
        .as_mut()
        .unwrap()
        .signed
        .targets
        .values_mut()
        .for_each(|t| t.length += 1);
    assert_eq!(refusal(&director, &image, None), "image_mismatch");
}
