//! Delta targets (docs/design.md §1 "Delta targets", §2.6 "Deltas"): the server computes and signs a
//! delta from one release to another; a device running the source downloads only the delta and
//! installs exactly the signed image; tough and python-tuf accept the repository; and every bad
//! delta ends in a refusal or in the full image, never in a wrong image in the slot.

use serde_json::{Value, json};

use crate::agents::reported_attempts;
use crate::common::sha256_hex;
use crate::forge::{ImageChain, fetch_json, sha512_hex};
use crate::refusals_common::{
    DEVICE, DirectorForger, Fixture, PRODUCT, ROLLOUT, director_entry, image_target, target_name, targets_of,
};

const DELTA: &str = "pump-x1/1.1.0/fw.bin~from-1.0.0";

/// `image` with a few bytes changed: a patch release.
fn patched(image: &[u8], salt: u8) -> Vec<u8> {
    let mut out = image.to_vec();
    for i in (100..out.len()).step_by(1500) {
        out[i] ^= salt;
    }
    out
}

async fn post_delta(fx: &Fixture, from: &str, to: &str) -> reqwest::Response {
    fx.app
        .client
        .post(fx.app.url(&format!("/api/v1/products/{PRODUCT}/releases/{to}/deltas")))
        .bearer_auth(&fx.app.admin)
        .json(&json!({"from": from}))
        .send()
        .await
        .unwrap()
}

/// 1.0.0 and a patched 1.1.0 published, the delta between them signed, 1.1.0 rolled out, and
/// the agent told that it runs 1.0.0 (a copy of its image in `running.bin`).
async fn delta_fixture() -> Fixture {
    let mut fx = Fixture::new(&["1.0.0"]).await;
    let v2 = patched(fx.image("1.0.0"), 0x5a);
    fx.publish_image("1.1.0", v2).await;
    let res = post_delta(&fx, "1.0.0", "1.1.0").await;
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    let running = fx.app.dir.path().join("running.bin");
    std::fs::write(&running, fx.image("1.0.0")).unwrap();
    fx.opts.running_image = Some(running);
    fx.roll_out(ROLLOUT, "1.1.0").await;
    fx
}

/// The requests the agent made for targets (full images and deltas).
fn target_requests(fx: &Fixture) -> Vec<String> {
    fx.mirror.requests().into_iter().filter(|r| r.contains("/repo/targets/")).collect()
}

/// `GET …/releases/{to}/deltas`: the deltas that produce `to`.
async fn deltas_to(fx: &Fixture, to: &str) -> Value {
    let url = fx.app.url(&format!("/api/v1/products/{PRODUCT}/releases/{to}/deltas"));
    fetch_json(&fx.app.client, &url, Some(&fx.app.admin)).await
}

/// The rollout's traffic as the API reports it: (delta bytes, delta requests, image bytes,
/// image requests).
async fn traffic(fx: &Fixture, rollout: &str) -> (u64, u64, u64, u64) {
    let status: Value =
        fetch_json(&fx.app.client, &fx.app.url(&format!("/api/v1/rollouts/{rollout}")), Some(&fx.app.admin)).await;
    let t = &status["traffic"];
    let n = |k: &str| t[k].as_u64().unwrap_or_else(|| panic!("traffic.{k} in {status}"));
    (n("delta_bytes"), n("delta_requests"), n("image_bytes"), n("image_requests"))
}

/// The detail of the device's newest reported attempt.
async fn newest_detail(fx: &Fixture) -> String {
    reported_attempts(&fx.app, DEVICE).await.remove(0).2
}

#[tokio::test]
async fn a_device_running_the_source_downloads_only_the_delta_and_installs_the_signed_image() {
    let mut fx = delta_fixture().await;
    // The API: the delta as computed, the same answer (200) when asked again, listed.
    let again = post_delta(&fx, "1.0.0", "1.1.0").await;
    assert_eq!(again.status(), 200);
    let view: Value = again.json().await.unwrap();
    assert_eq!(view["target_name"], DELTA);
    assert_eq!(view["from_version"], "1.0.0");
    let algorithm = view["algorithm"].as_str().unwrap().to_owned();
    assert!(["bsdiff-zstd", "zstd-patch"].contains(&algorithm.as_str()), "{view}");
    let length = view["length"].as_u64().unwrap();
    assert!(length < 1024 && view["image_length"] == 8192, "{view}");
    let listed = deltas_to(&fx, "1.1.0").await;
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");

    // The signed entry: same role as the images, custom naming both ends.
    let entry = image_target(&fx.app, DELTA).await;
    assert_eq!(entry["length"].as_u64(), Some(length));
    assert_eq!(
        entry["custom"],
        json!({"delta": {"algorithm": algorithm,
            "source": {"name": target_name(PRODUCT, "1.0.0"), "length": 8192, "sha256": sha256_hex(fx.image("1.0.0"))},
            "target": {"name": target_name(PRODUCT, "1.1.0"), "length": 8192, "sha256": sha256_hex(fx.image("1.1.0"))}}})
    );

    fx.installs("1.1.0").await;
    let requests = target_requests(&fx);
    assert_eq!(requests.len(), 1, "only the delta was downloaded: {requests:?}");
    assert!(requests[0].contains("fw.bin~from-1.0.0"), "{requests:?}");
    let detail = newest_detail(&fx).await;
    assert!(detail.starts_with(&format!("from the delta {DELTA} (")), "{detail}");
    assert!(fx.app.dir.path().join("running.bin").exists(), "the running image is only read");
    let staging: Vec<_> = std::fs::read_dir(fx.state.join("staging")).unwrap().collect();
    assert!(staging.is_empty(), "nothing is left in staging: {staging:?}");
    // /metrics tells bytes served as deltas from bytes served as images (this test binary's).
    let metrics = fx.app.client.get(fx.app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let served = metrics
        .lines()
        .find_map(|l| l.strip_prefix("patchgate_target_bytes_served_total{kind=\"delta\"} "))
        .and_then(|n| n.trim().parse::<u64>().ok());
    assert!(served.is_some_and(|n| n >= length), "{metrics}");
    // And per rollout: the agent sends its device token, so the bytes count toward its rollout.
    assert_eq!(traffic(&fx, ROLLOUT).await, (length, 1, 0, 0));
    let per_rollout = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(&format!("patchgate_rollout_target_bytes_total{{rollout=\"{ROLLOUT}\",kind=\"delta\"}} "))
        })
        .and_then(|n| n.trim().parse::<u64>().ok());
    assert!(per_rollout.is_some_and(|n| n >= length), "{metrics}");
    let mut browser =
        crate::ui_common::Browser::signed_in(&fx.app, "ada", patchgate::services::auth::Role::Viewer).await;
    let page = browser.get(&format!("/ui/rollouts/{ROLLOUT}")).await;
    crate::ui_common::has(
        &page,
        &["<dt>Downloaded</dt>", &format!("{length} B as deltas (1 request), 0 B as full images (0 requests)")],
    );

    // Plain TUF clients accept the repository with its delta target and read it byte for byte.
    let root = fx.app.root_v1().await;
    let delta_bytes = {
        let store = tempfile::tempdir().unwrap();
        let repo = fx.app.tough(&root, store.path()).await.expect("tough loads the repository");
        crate::common::tough_read(&repo, DELTA).await.unwrap()
    };
    assert_eq!(delta_bytes.len() as u64, length);
    crate::split_trust::ngclient_at(
        &fx.app.base,
        &root,
        &[("1.0.0", fx.image("1.0.0")), ("1.1.0", fx.image("1.1.0")), (DELTA, &delta_bytes)],
        &[],
        1,
    )
    .await;
}

#[tokio::test]
async fn a_delta_refused_for_bad_input_changes_nothing() {
    let mut fx = Fixture::new(&["1.0.0"]).await;
    let v2 = patched(fx.image("1.0.0"), 0x11);
    fx.publish_image("1.1.0", v2).await;
    let role_before = ImageChain::fetch(&fx.app.base, &fx.app.client).await.role_version(PRODUCT);
    for (from, to, status, code) in [
        ("1.0.0", "1.0.0", 400, "same_release"),
        ("0.9.0", "1.1.0", 404, "unknown_release"),
        ("1.0.0", "2.0.0", 404, "unknown_release"),
    ] {
        let res = post_delta(&fx, from, to).await;
        assert_eq!(res.status(), status, "{from}->{to}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"], code, "{body}");
    }
    // Two unrelated images: the delta would save nothing worth a second path on the device.
    fx.publish("2.0.0", None).await;
    let res = post_delta(&fx, "1.0.0", "2.0.0").await;
    assert_eq!(res.status(), 409);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"], "delta_not_worthwhile", "{body}");
    let res = fx
        .app
        .client
        .post(fx.app.url(&format!("/api/v1/products/{PRODUCT}/releases/1.1.0/deltas")))
        .bearer_auth(&fx.app.admin)
        .json(&json!({"form": "1.0.0"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400, "an unknown field is refused");
    // Only the publish of 2.0.0 signed a new role.
    let role_after = ImageChain::fetch(&fx.app.base, &fx.app.client).await.role_version(PRODUCT);
    assert_eq!(role_after, role_before + 1);
}

#[tokio::test]
async fn a_delta_whose_bytes_were_changed_ends_in_the_full_image() {
    let mut fx = delta_fixture().await;
    fx.mirror.transform("/repo/targets/", |path, mut body| {
        if path.contains("~from-") {
            body[10] ^= 1;
        }
        body
    });
    fx.installs("1.1.0").await;
    let detail = newest_detail(&fx).await;
    assert!(detail.starts_with("from the full image (the delta"), "{detail}");
    assert!(detail.contains("target_hash_mismatch"), "{detail}");
    // Both downloads count: the delta the server sent (whatever the mirror made of it), then
    // the image.
    let (delta_bytes, delta_requests, image_bytes, image_requests) = traffic(&fx, ROLLOUT).await;
    assert!(delta_bytes > 0 && delta_bytes < 8192 && delta_requests == 1, "{delta_bytes} {delta_requests}");
    assert_eq!((image_bytes, image_requests), (8192, 1));
    // A download without a device token, or with someone else's, is served and counted nowhere.
    let url = fx.app.url(&format!("/repo/targets/{PRODUCT}/1.1.0/{}.fw.bin", sha256_hex(fx.image("1.1.0"))));
    for token in [None, Some("pgd_not-a-device-token"), Some("pgt_an-api-token")] {
        let mut req = fx.app.client.get(&url);
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), 200, "{token:?}");
        assert_eq!(res.bytes().await.unwrap().len(), 8192);
    }
    assert_eq!(traffic(&fx, ROLLOUT).await, (delta_bytes, 1, 8192, 1));
}

#[tokio::test]
async fn an_oversized_delta_ends_in_the_full_image() {
    let mut fx = delta_fixture().await;
    fx.mirror.transform("/repo/targets/", |path, mut body| {
        if path.contains("~from-") {
            body.extend_from_slice(&[0u8; 4096]);
        }
        body
    });
    fx.installs("1.1.0").await;
    let detail = newest_detail(&fx).await;
    assert!(detail.starts_with("from the full image (the delta"), "{detail}");
    assert!(detail.contains("endless_data"), "{detail}");
}

#[tokio::test]
async fn a_device_running_another_image_never_fetches_the_delta() {
    let mut fx = delta_fixture().await;
    let running = fx.opts.running_image.clone().unwrap();
    std::fs::write(&running, patched(fx.image("1.0.0"), 0x77)).unwrap();
    // What an earlier pass left of the delta (cut off before the running image changed).
    let delta_sha256 = image_target(&fx.app, DELTA).await["hashes"]["sha256"].as_str().unwrap().to_owned();
    let staging = fx.state.join("staging");
    std::fs::create_dir_all(&staging).unwrap();
    std::fs::write(staging.join(format!("{delta_sha256}.part")), b"partial").unwrap();
    fx.installs("1.1.0").await;
    let left: Vec<_> = std::fs::read_dir(&staging).unwrap().collect();
    assert!(left.is_empty(), "an install leaves nothing in staging: {left:?}");
    let requests = target_requests(&fx);
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert!(!requests[0].contains("~from-"), "the delta for another source was not fetched: {requests:?}");
    assert_eq!(newest_detail(&fx).await, "from the full image");
    assert_eq!(traffic(&fx, ROLLOUT).await, (0, 0, 8192, 1), "the full image counts toward the rollout");
}

#[tokio::test]
async fn a_signed_delta_that_builds_other_bytes_ends_in_the_full_image() {
    let mut fx = delta_fixture().await;
    // The product key signs a delta that claims to build 1.1.0 but builds something else: a
    // manufacturer's mistake, or a server-signed product's key in an attacker's hands.
    let other = patched(fx.image("1.0.0"), 0x33);
    let bad = patchgate::domain::delta::encode_bsdiff_zstd(fx.image("1.0.0"), &other).unwrap();
    let (length, hashes) = (json!(bad.len()), json!({"sha256": sha256_hex(&bad), "sha512": sha512_hex(&bad)}));
    fx.mirror.replace(&format!("/repo/targets/{PRODUCT}/1.1.0/{}.fw.bin~from-1.0.0", sha256_hex(&bad)), bad);
    fx.serve_product_role(PRODUCT, |role| {
        let entry = &mut role["targets"][DELTA];
        entry["custom"]["delta"]["algorithm"] = json!("bsdiff-zstd");
        entry["length"] = length;
        entry["hashes"] = hashes;
    })
    .await;

    fx.installs("1.1.0").await;
    let requests = target_requests(&fx);
    assert_eq!(requests.len(), 2, "the delta, then the full image: {requests:?}");
    let detail = newest_detail(&fx).await;
    assert!(detail.starts_with("from the full image (the delta"), "{detail}");
    assert!(detail.contains("did not build the signed image"), "{detail}");
}

#[tokio::test]
async fn a_delta_named_by_the_director_but_not_by_the_image_repository_is_refused() {
    let mut fx = delta_fixture().await;
    // The director names a delta target (for a source the image repository has no delta from)
    // as the image to install: nothing signed by the product key lists it.
    let mut forger = DirectorForger::fetch(&fx).await;
    let name = "pump-x1/1.1.0/fw.bin~from-0.9.0";
    let image = image_target(&fx.app, &target_name(PRODUCT, "1.1.0")).await;
    forger.serve(&fx, targets_of(&[(name, director_entry(&image, DEVICE, "install"))]));
    fx.refused("not_in_image_repository").await;
    // The delta that is listed, named by the director as the image with its own length and
    // hashes: the image repository's custom for it is a delta's, not the release's.
    let delta = image_target(&fx.app, DELTA).await;
    let mut entry = director_entry(&image, DEVICE, "install");
    entry["length"] = delta["length"].clone();
    entry["hashes"] = delta["hashes"].clone();
    forger.serve(&fx, targets_of(&[(DELTA, entry)]));
    fx.refused("custom_mismatch").await;
}

#[tokio::test]
async fn a_running_image_at_the_start_of_a_larger_partition_still_takes_the_delta() {
    let mut fx = delta_fixture().await;
    // A partition is larger than the image it holds: the rest is whatever was there before.
    let mut partition = fx.image("1.0.0").to_vec();
    partition.extend_from_slice(&[0xff; 65_536]);
    std::fs::write(fx.opts.running_image.as_ref().unwrap(), partition).unwrap();
    fx.installs("1.1.0").await;
    let detail = newest_detail(&fx).await;
    assert!(detail.starts_with(&format!("from the delta {DELTA} (")), "{detail}");
}

#[tokio::test]
async fn an_image_built_from_a_delta_waits_for_the_precondition_without_being_built_again() {
    let mut fx = delta_fixture().await;
    fx.opts.precondition = Some(vec!["false".into()]);
    let outcome = fx.agent.install(&fx.opts).await.unwrap();
    assert!(matches!(outcome, patchgate_agent::InstallOutcome::Waiting(_)), "{outcome:?}");
    let staged: Vec<String> = std::fs::read_dir(fx.state.join("staging"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(staged, [format!("{}.part", sha256_hex(fx.image("1.1.0")))], "the built image waits in staging");
    fx.opts.precondition = Some(vec!["true".into()]);
    fx.installs("1.1.0").await;
    let requests = target_requests(&fx);
    assert_eq!(requests.len(), 1, "the delta was downloaded once, nothing else: {requests:?}");
    assert_eq!(newest_detail(&fx).await, "from the image staged by an earlier pass");
}

#[tokio::test]
async fn the_delta_job_makes_the_deltas_devices_will_want_once() {
    use patchgate::jobs::deltas::{PassReport, pass};
    // The device runs 1.0.0 and says so.
    let mut fx = Fixture::assigned(&["1.0.0"], "1.0.0").await;
    fx.install_and_confirm("1.0.0").await;
    // 1.1.0, a patch of it, is rolled out; 2.0.0, unrelated bytes, is the newest release.
    let v2 = patched(fx.image("1.0.0"), 0x42);
    fx.publish_image("1.1.0", v2).await;
    fx.publish("2.0.0", None).await;
    let res = fx
        .app
        .client
        .post(fx.app.url(&format!("/api/v1/rollouts/{ROLLOUT}/abort")))
        .bearer_auth(&fx.app.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "the cohort is free for the next rollout");
    fx.roll_out("r-2", "1.1.0").await;
    let none = PassReport::default();

    let report = pass(&fx.app.services, None).await.unwrap();
    assert_eq!(report, PassReport { created: 1, not_worthwhile: 1, failed: 0 }, "to 1.1.0 made, to 2.0.0 refused");
    let listed = deltas_to(&fx, "1.1.0").await;
    assert_eq!(listed[0]["target_name"], DELTA, "{listed}");
    assert_eq!(listed[0]["listed"], true, "{listed}");
    image_target(&fx.app, DELTA).await;
    // Settled pairs are never computed again, made or refused; the API answers the refusal
    // from memory.
    assert_eq!(pass(&fx.app.services, None).await.unwrap(), none);
    let res = post_delta(&fx, "1.0.0", "2.0.0").await;
    assert_eq!(res.status(), 409);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"], "delta_not_worthwhile", "{body}");
    assert_eq!(pass(&fx.app.services, None).await.unwrap(), none);

    // A release no device runs is never a source (the cap and the order: domain::delta_policy).
    let mut capped = Fixture::assigned(&["1.0.0"], "1.0.0").await;
    capped.install_and_confirm("1.0.0").await;
    let v2 = patched(capped.image("1.0.0"), 0x24);
    capped.publish_image("1.0.1", v2).await;
    capped.publish_image("1.0.2", patched(capped.image("1.0.0"), 0x25)).await;
    let report = pass(&capped.app.services, None).await.unwrap();
    assert_eq!(report, PassReport { created: 1, not_worthwhile: 0, failed: 0 }, "1.0.0 → 1.0.2 only");
    let to_newest = deltas_to(&capped, "1.0.2").await;
    assert_eq!(to_newest.as_array().map(Vec::len), Some(1), "{to_newest}");
    assert_eq!(to_newest[0]["from_version"], "1.0.0", "{to_newest}");
}

#[tokio::test]
async fn a_manufacturer_signs_its_deltas_in_its_ci_and_the_server_signs_none() {
    use crate::split_trust::{PRODUCT as MAKER_PRODUCT, Production};
    let mut p = Production::start().await;
    p.create_product().await;
    let v1 = crate::common::firmware(7, 64_000);
    let v2 = patched(&v1, 0x3c);
    p.publish_image("1.0.0", v1.clone(), None).await;
    p.publish_image("1.1.0", v2.clone(), None).await;
    let key = p.key("maker");
    let key = key.to_str().unwrap();
    let delta = |from: &'static str| ["release", "delta", "--product", MAKER_PRODUCT, "--from", from, "--to", "1.1.0"];

    // The server may not sign this product's role, so it computes nothing for it.
    let res = p
        .app
        .client
        .post(p.app.url(&format!("/api/v1/products/{MAKER_PRODUCT}/releases/1.1.0/deltas")))
        .bearer_auth(&p.app.admin)
        .json(&json!({"from": "1.0.0"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 409);
    assert_eq!(res.json::<Value>().await.unwrap()["error"], "manufacturer_signed");

    // Another tool's delta that saves too little (here: the image's own bytes), signed into the
    // role with the product key, is refused as the server refuses its own.
    let role_before = ImageChain::fetch(&p.app.base, &p.app.client).await.role_version(MAKER_PRODUCT);
    let current =
        fetch_json(&p.app.client, &format!("{}/repo/metadata/{role_before}.{MAKER_PRODUCT}.json", p.app.base), None)
            .await;
    let mut draft = crate::forge::Draft::next(&current);
    let end = |version: &str, image: &[u8]| json!({"name": target_name(MAKER_PRODUCT, version), "length": image.len(), "sha256": sha256_hex(image)});
    draft.signed["targets"][DELTA] = json!({"length": v2.len(), "hashes": {"sha256": sha256_hex(&v2), "sha512": sha512_hex(&v2)},
        "custom": {"delta": {"algorithm": "bsdiff-zstd", "source": end("1.0.0", &v1), "target": end("1.1.0", &v2)}}});
    let form = reqwest::multipart::Form::new()
        .text("from", "1.0.0")
        .text("role", String::from_utf8(draft.sign(&[&crate::forge::load_key(&p.key("maker"))])).unwrap())
        .part("file", reqwest::multipart::Part::bytes(v2.clone()).file_name("delta"));
    let res = p
        .app
        .client
        .post(p.app.url(&format!("/api/v1/products/{MAKER_PRODUCT}/releases/1.1.0/deltas/signed")))
        .bearer_auth(&p.app.admin)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 409);
    assert_eq!(res.json::<Value>().await.unwrap()["error"], "delta_not_worthwhile");
    assert_eq!(ImageChain::fetch(&p.app.base, &p.app.client).await.role_version(MAKER_PRODUCT), role_before);

    // The manufacturer's CI computes it from the two listed images and signs it into the role.
    let mut args = delta("1.0.0").to_vec();
    args.extend(["--key", key]);
    let out = p.cli(&args).await;
    assert!(out.starts_with(&format!("{DELTA} (")), "{out}");
    let chain = ImageChain::fetch(&p.app.base, &p.app.client).await;
    assert_eq!(chain.role_version(MAKER_PRODUCT), role_before + 1);
    let entry = image_target(&p.app, DELTA).await;
    assert_eq!(entry["custom"]["delta"]["source"]["sha256"], sha256_hex(&v1), "{entry}");
    assert_eq!(entry["custom"]["delta"]["target"]["sha256"], sha256_hex(&v2), "{entry}");
    // Asked again: already listed, nothing signed.
    let again = p.cli(&args).await;
    assert!(again.starts_with(&format!("{DELTA} (")), "{again}");
    assert_eq!(ImageChain::fetch(&p.app.base, &p.app.client).await.role_version(MAKER_PRODUCT), role_before + 1);
    // Without the key the CLI says what to do.
    let out = crate::split_trust::run(
        &[&delta("1.0.0")[..], &p.remote().iter().map(String::as_str).collect::<Vec<_>>()].concat(),
    )
    .await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--key"), "{}", String::from_utf8_lossy(&out.stderr));

    // A device running 1.0.0 downloads only the delta and installs exactly 1.1.0.
    p.enroll().await;
    let running = p.app.dir.path().join("running.bin");
    std::fs::write(&running, &v1).unwrap();
    p.opts.as_mut().unwrap().running_image = Some(running);
    p.roll_out("1.1.0").await;
    p.installs("1.1.0", &v2).await;
    let attempts = reported_attempts(&p.app, "pump-0001").await;
    let written = attempts.iter().find(|a| a.1 == "awaiting_reboot").expect("the install was reported");
    assert!(written.2.starts_with(&format!("from the delta {DELTA} (")), "{attempts:?}");

    // Clients we did not write accept the role with its delta.
    let delta_bytes = {
        let store = tempfile::tempdir().unwrap();
        let repo = p.app.tough(&p.image_root_v1, store.path()).await.expect("tough loads the repository");
        crate::common::tough_read(&repo, DELTA).await.unwrap()
    };
    p.ngclient(&[("1.0.0", &v1), ("1.1.0", &v2), (DELTA, &delta_bytes)], &[], 1).await;

    // Roles with bad delta entries, signed with the product key, are refused and change nothing.
    let maker = crate::forge::load_key(&p.key("maker"));
    let n = ImageChain::fetch(&p.app.base, &p.app.client).await.role_version(MAKER_PRODUCT);
    let current =
        fetch_json(&p.app.client, &format!("{}/repo/metadata/{n}.{MAKER_PRODUCT}.json", p.app.base), None).await;
    let listed = current["signed"]["targets"][DELTA].clone();
    let other_bytes = |mut e: Value| {
        e["length"] = json!(100);
        e["hashes"] = json!({"sha256": "ab".repeat(32), "sha512": "cd".repeat(64)});
        (DELTA.to_owned(), e)
    };
    let unlisted_source = |mut e: Value| {
        e["custom"]["delta"]["source"]["name"] = json!(target_name(MAKER_PRODUCT, "0.9.0"));
        (format!("{}~from-0.9.0", target_name(MAKER_PRODUCT, "1.1.0")), e)
    };
    let extra_field = |mut e: Value| {
        e["custom"]["delta"]["note"] = json!("hi");
        (DELTA.to_owned(), e)
    };
    let misnamed = |e: Value| (format!("{}~from-1.0.1", target_name(MAKER_PRODUCT, "1.1.0")), e);
    for (forge, status, code) in [
        (&other_bytes as &dyn Fn(Value) -> (String, Value), 409, "role_target_mismatch"),
        (&unlisted_source, 400, "delta_end_not_listed"),
        (&extra_field, 400, "invalid_role_target"),
        (&misnamed, 400, "invalid_role_target"),
    ] {
        let mut draft = crate::forge::Draft::next(&current);
        let (name, entry) = forge(listed.clone());
        draft.signed["targets"].as_object_mut().unwrap().remove(DELTA);
        draft.signed["targets"][name] = entry;
        let res = p
            .app
            .client
            .post(p.app.url(&format!("/api/v1/products/{MAKER_PRODUCT}/role")))
            .bearer_auth(&p.app.admin)
            .header("content-type", "application/json")
            .body(draft.sign(&[&maker]))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), status, "{code}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"], code, "{body}");
    }
    assert_eq!(ImageChain::fetch(&p.app.base, &p.app.client).await.role_version(MAKER_PRODUCT), n);

    // The product key's rotation ceremony re-signs the role with its delta; clients follow it.
    p.rotate_product_key().await;
    p.ngclient(&[("1.0.0", &v1), ("1.1.0", &v2), (DELTA, &delta_bytes)], &[], 1).await;

    // A yank of the source drops the delta from the role the CLI signs; the server accepts it.
    p.cli(&["release", "yank", "--product", MAKER_PRODUCT, "--version", "1.0.0", "--key", key]).await;
    let n = ImageChain::fetch(&p.app.base, &p.app.client).await.role_version(MAKER_PRODUCT);
    let role = fetch_json(&p.app.client, &format!("{}/repo/metadata/{n}.{MAKER_PRODUCT}.json", p.app.base), None).await;
    let names: Vec<&String> = role["signed"]["targets"].as_object().unwrap().keys().collect();
    assert_eq!(names, [&target_name(MAKER_PRODUCT, "1.1.0")], "{role}");
}
