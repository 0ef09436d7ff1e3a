//! Fuzz targets of the agent's metadata handling (see `patchgate_protocol::fuzzing`): the
//! cross-check of a director assignment against the image repository, fed with mutated
//! director targets, image targets and product roles, and the development-key check of a root
//! as fetched. Corpora: `fuzz/corpus/{agent_decision,agent_root}/`; `agent_decision` is written
//! by `cargo test -p patchgate-agent --test fuzz -- --ignored write_corpus`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests fail loudly by design")]

use patchgate_agent::agent::check_root_keys;
use patchgate_agent::state::{InstalledRecord, Repo};
use patchgate_agent::verify::{Decision, Identity, decide, product_role, target_custom};
use patchgate_protocol::fuzzing::{self, Mutated};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tough::schema::{Signed, Targets};

/// One corpus input: what the agent holds once tough has loaded both repositories.
#[derive(Debug, Serialize, Deserialize)]
struct Loaded {
    director: Targets,
    /// Top-level targets of the image repository, delegating to the product's role.
    image: Targets,
    /// The product's delegated role, as tough attaches it to the delegation once loaded.
    product_role: Targets,
    installed: Option<InstalledRecord>,
}

const ME: Identity<'static> = Identity { device_id: "pump-0001", product: "pump-x1", hardware_id: "revA" };

/// What an `Install` decision must have checked, whatever the input.
fn check_install(loaded: &Loaded, image: &Targets) -> Result<(), String> {
    let Ok(Decision::Install(assigned)) = decide(&loaded.director, image, ME, loaded.installed.as_ref()) else {
        return Ok(());
    };
    if loaded.director.targets.len() != 1 {
        return Err(format!("installs from a director listing {} targets", loaded.director.targets.len()));
    }
    let role = product_role(image, ME.product).ok_or("installs without the product's role")?;
    let listed = role.targets.as_ref().ok_or("installs from an unloaded role")?;
    let (_, target) = listed
        .signed
        .targets
        .iter()
        .find(|(name, _)| name.raw() == assigned.name)
        .ok_or_else(|| format!("installs {} which the image repository does not list", assigned.name))?;
    if target.length != assigned.length || hex::encode(&target.hashes.sha256) != assigned.sha256 {
        return Err(format!("installs {} with a length or hash the image repository does not have", assigned.name));
    }
    let custom = target_custom(target).map_err(|e| format!("installs a target whose custom is invalid: {e}"))?;
    if custom.version != assigned.version || !custom.hardware_ids.iter().any(|h| h == ME.hardware_id) {
        return Err(format!("installs {} for the wrong version or hardware", assigned.name));
    }
    Ok(())
}

#[test]
fn agent_decision() {
    fuzzing::run(
        "agent_decision",
        fuzzing::cases(),
        fuzzing::mutated(fuzzing::corpus("agent_decision")),
        |m: &Mutated| {
            let Ok(loaded) = serde_json::from_slice::<Loaded>(&m.bytes) else { return Ok(()) };
            let mut image = loaded.image.clone();
            if let Some(role) = image.delegations.as_mut().and_then(|d| d.roles.first_mut()) {
                role.targets = Some(Signed { signed: loaded.product_role.clone(), signatures: vec![] });
            }
            check_install(&loaded, &image)
        },
    );
}

#[test]
fn agent_root() {
    fuzzing::run("agent_root", fuzzing::cases(), fuzzing::mutated(fuzzing::corpus("agent_root")), |m: &Mutated| {
        let _ = check_root_keys(Repo::Image, &m.bytes, true);
        let strict = check_root_keys(Repo::Director, &m.bytes, false);
        // The corpus roots trust development keys: accepted only if none is left in `keys`,
        // by id or by public key.
        if strict.is_ok() {
            let value: Value = serde_json::from_slice(&m.bytes).map_err(|e| format!("accepted, yet not JSON: {e}"))?;
            let keys = value["signed"]["keys"].as_object().ok_or("accepted without signed.keys")?;
            for (id, key) in keys {
                let public = key["keyval"]["public"].as_str().and_then(|h| hex::decode(h).ok());
                let computed =
                    public.and_then(|p| <[u8; 32]>::try_from(p).ok()).map(|p| patchgate_protocol::ed25519_keyid(&p));
                if patchgate_protocol::keys::is_dev_key(id)
                    || computed.is_some_and(|c| patchgate_protocol::keys::is_dev_key(&c))
                {
                    return Err(format!("a root trusting development key {id} was accepted"));
                }
            }
        }
        Ok(())
    });
}

/// Writes `fuzz/corpus/agent_decision/` (run after changing the metadata shapes).
#[test]
#[ignore = "writes fuzz/corpus; run by hand"]
fn write_corpus() {
    let custom = |v: &str, floor: &str| json!({"version": v, "hardware_ids": ["revA", "revB"], "rollback_floor": floor, "released_at": "2026-11-24T10:00:00Z"});
    let target = |custom: Value, fill: &str| json!({"length": 1024, "hashes": {"sha256": fill.repeat(32), "sha512": fill.repeat(64)}, "custom": custom});
    let targets = |version: u64, map: Value| json!({"_type": "targets", "spec_version": "1.0.31", "version": version, "expires": "2030-01-01T00:00:00Z", "targets": map});
    let image = || {
        let mut top = targets(1, json!({}));
        top["delegations"] = json!({"keys": {}, "roles": [{"name": "pump-x1", "keyids": [], "threshold": 1,
            "paths": ["pump-x1/*"], "terminating": true}]});
        top
    };
    let director = |version: &str, action: &str, fill: &str| {
        let mut c = custom(version, "1.0.0");
        c["device_id"] = json!("pump-0001");
        c["rollout_id"] = json!("r-1");
        c["action"] = json!(action);
        targets(5, json!({ format!("pump-x1/{version}/fw.bin"): target(c, fill) }))
    };
    let role = targets(
        3,
        json!({
            "pump-x1/1.0.0/fw.bin": target(custom("1.0.0", "0.0.0"), "aa"),
            "pump-x1/1.1.0/fw.bin": target(custom("1.1.0", "1.0.0"), "bb"),
        }),
    );
    let installed = json!({"name": "pump-x1/1.0.0/fw.bin", "sha256": "aa".repeat(32), "version": "1.0.0", "rollback_floor": "0.0.0"});
    let inputs = [
        json!({"director": director("1.1.0", "install", "bb"), "image": image(), "product_role": role, "installed": installed}),
        json!({"director": director("1.0.0", "rollback", "aa"), "image": image(), "product_role": role,
            "installed": {"name": "pump-x1/1.1.0/fw.bin", "sha256": "bb".repeat(32), "version": "1.1.0", "rollback_floor": "1.0.0"}}),
        json!({"director": targets(4, json!({})), "image": image(), "product_role": role, "installed": null}),
        json!({"director": director("1.1.0", "install", "cc"), "image": image(), "product_role": role, "installed": null}),
    ];
    let dir = fuzzing::fuzz_dir().join("corpus").join("agent_decision");
    std::fs::create_dir_all(&dir).unwrap();
    for (i, input) in inputs.iter().enumerate() {
        let loaded: Loaded = serde_json::from_value(input.clone()).expect("a corpus input fits");
        std::fs::write(dir.join(format!("{i:02}.json")), serde_json::to_vec_pretty(&loaded).unwrap()).unwrap();
    }
}
