//! The attacker holds everything the server holds: its database, its online keys (snapshot,
//! timestamp, director) and a publisher token — but not the manufacturer's product key, the
//! top-level targets key or the root keys. They try to (a) publish into a manufacturer-signed
//! product, (b) get a device to install an image the product key never signed, (c) assign a
//! yanked release, (d) roll a device below its security floor, (e) serve a device the pre-yank
//! role again after it has seen the yank. The agent refuses each, installs
//! nothing and reports `rejected`; python-tuf's ngclient never lists a forged target.

use jiff::Timestamp;
use patchgate::db::entities::release;
use patchgate::services::auth::Role;
use patchgate::services::image_repo::commit_with_snapshot;
use patchgate::tuf::keys::Signer;
use patchgate::tuf::metadata::{TargetEntry, product_targets};
use patchgate::tuf::sign::sign_role;
use sea_orm::ConnectionTrait;
use serde_json::{Value, json};

use crate::common::{firmware, sha256_hex};
use crate::forge::sha512_hex;
use crate::split_trust::{HW, PRODUCT, Production};

async fn sql(p: &Production, statement: &str) {
    p.app.services.db.execute_unprepared(statement).await.unwrap();
}

/// A target entry for `version` of the test product (hardware `HW`), as a product role lists it.
pub fn entry(version: &str, image: &[u8], floor: &str) -> TargetEntry {
    TargetEntry {
        name: format!("{PRODUCT}/{version}/fw.bin"),
        length: image.len() as u64,
        sha256: sha256_hex(image),
        sha512: sha512_hex(image),
        custom: patchgate_protocol::TargetCustom {
            version: version.into(),
            hardware_ids: vec![HW.into()],
            rollback_floor: floor.into(),
            released_at: "2026-11-24T10:00:00Z".into(),
        }
        .into(),
    }
}

/// A product role listing `entries` at `version`, signed by `key` (the attacker's own).
async fn forged_role(key: &Signer, version: u64, entries: &[TargetEntry]) -> patchgate::tuf::sign::SignedMetadata {
    let expires = Timestamp::now() + jiff::SignedDuration::from_hours(24 * 30);
    let expires = Timestamp::from_second(expires.as_second()).unwrap();
    let body = product_targets(version, expires, entries).unwrap();
    sign_role(PRODUCT, version, expires, body, &[key]).await.unwrap()
}

/// A release row written straight into the database (the attacker owns it).
async fn insert_release(p: &Production, version: &str, image: &[u8]) {
    let product: Value = p.app.get_json("/api/v1/products").await;
    assert_eq!(product[0]["name"], PRODUCT);
    let product_id =
        patchgate::db::products::product_get_by_name(&p.app.services.db, PRODUCT).await.unwrap().unwrap().id;
    let e = entry(version, image, "0.0.0");
    let row = release::Model {
        id: 0,
        product_id,
        version: version.into(),
        target_name: e.name.clone(),
        filename: "fw.bin".into(),
        length: image.len() as i64,
        sha256: e.sha256.clone(),
        sha512: e.sha512.clone(),
        notes: None,
        custom: serde_json::to_string(&e.custom).unwrap(),
        published_by: "token:ci".into(),
        created_at: 0,
        yanked_at: None,
        yanked_by: None,
        approved_by: None,
        approved_at: None,
        delisted_at: None,
        listed_in_role: 0,
    };
    patchgate::db::releases::release_insert(&p.app.services.db, row).await.unwrap();
}

/// Waits until the server serves the newest image `timestamp.json` in the database.
async fn served_soon(p: &Production) {
    let newest = patchgate::db::metadata::metadata_latest(&p.app.services.db, "image", "timestamp")
        .await
        .unwrap()
        .unwrap()
        .sha256;
    let started = std::time::Instant::now();
    loop {
        let served = p.app.metadata("timestamp.json").await.bytes().await.unwrap();
        if crate::common::sha256_hex(&served) == newest {
            return;
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(3), "the new timestamp was not served within 3 s");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

async fn rollout_refused(p: &Production, version: &str, code: &str) {
    let body = json!({"id": format!("honest-{version}"), "product": PRODUCT, "version": version,
        "stages": [{"cohort": "fleet", "percent": 100, "soak_minutes": 0}],
        "gate": {"max_failure_rate": 1.0, "min_reports": 1, "stall_minutes": 1440}});
    let res =
        p.app.client.post(p.app.url("/api/v1/rollouts")).bearer_auth(&p.app.admin).json(&body).send().await.unwrap();
    let status = res.status();
    let answer: Value = res.json().await.unwrap();
    assert_eq!((status.as_u16(), answer["error"].as_str()), (409, Some(code)), "{answer}");
}

#[tokio::test]
async fn with_every_key_and_credential_the_server_has_an_attacker_cannot_make_a_device_install_anything() {
    let mut p = Production::start().await;
    p.create_product().await;
    let v100 = p.publish("1.0.0", 1, None).await;
    let v105 = p.publish("1.0.5", 2, None).await;
    p.enroll().await;
    p.roll_out("1.0.0").await;
    p.installs("1.0.0", &v100).await;
    let publisher = p.app.token(Role::Publisher, Some(PRODUCT)).await;
    let attacker_key = Signer::generate();

    // (a) through the API with a publisher token: no role, or a role the attacker signed.
    let evil = firmware(66, 4096);
    for role in [
        None,
        Some(
            forged_role(
                &attacker_key,
                4,
                &[entry("1.0.0", &v100, "0.0.0"), entry("1.0.5", &v105, "0.0.0"), entry("6.6.6", &evil, "0.0.0")],
            )
            .await,
        ),
    ] {
        let part = reqwest::multipart::Part::bytes(evil.clone()).file_name("fw.bin");
        let mut form = reqwest::multipart::Form::new().text("version", "6.6.6").part("file", part);
        if let Some(role) = &role {
            form = form.text("role", String::from_utf8(role.bytes.clone()).unwrap());
        }
        let url = p.app.url(&format!("/api/v1/products/{PRODUCT}/releases"));
        let res = p.app.client.post(url).bearer_auth(&publisher).multipart(form).send().await.unwrap();
        assert_eq!(res.status(), 400);
        let answer: Value = res.json().await.unwrap();
        let want = if role.is_some() { "bad_role_signature" } else { "missing_role" };
        assert_eq!(answer["error"], want, "{answer}");
    }
    let releases: Value = p.app.get_json(&format!("/api/v1/products/{PRODUCT}/releases")).await;
    assert_eq!(releases.as_array().unwrap().len(), 2, "nothing was published: {releases}");

    // (b) an image the product key never signed: a release row written into the database and
    // rolled out; the director (whose key the attacker holds) names it.
    insert_release(&p, "6.6.6", &evil).await;
    p.roll_out("6.6.6").await;
    p.refused("not_in_image_repository").await;
    p.ngclient(&[("1.0.0", &v100)], &[&format!("{PRODUCT}/6.6.6/fw.bin")], 1).await;

    // (c) a yanked release: the manufacturer yanks 1.1.0 with its key; the honest server will
    // not roll it out; the attacker un-yanks it in the database and rolls it out anyway.
    let v110 = p.publish("1.1.0", 3, None).await;
    p.cli(&["release", "yank", "--product", PRODUCT, "--version", "1.1.0", "--key", p.key("maker").to_str().unwrap()])
        .await;
    let yanked: Value = p.app.get_json(&format!("/api/v1/products/{PRODUCT}/releases/1.1.0")).await;
    assert_eq!(yanked["yanked"], true, "{yanked}");
    rollout_refused(&p, "1.1.0", "release_yanked").await;
    sql(&p, "UPDATE releases SET yanked_at = NULL, yanked_by = NULL WHERE version = '1.1.0'").await;
    p.roll_out("1.1.0").await;
    p.refused("not_in_image_repository").await;
    p.ngclient(&[("1.0.0", &v100)], &[&format!("{PRODUCT}/1.1.0/fw.bin")], 1).await;
    assert_ne!(sha256_hex(&v110), sha256_hex(&v100));

    // (e) the yank against the online keys: the device has refreshed since the yank, so the
    // pre-yank role (manufacturer-signed, listing 1.1.0) is no longer good for it, even served
    // by someone holding the snapshot and timestamp keys. The attacker removes the yank's role
    // version from the database and signs a snapshot that names the pre-yank one again.
    let svc = p.app.services.clone();
    let yank_role = patchgate::db::metadata::metadata_latest(&svc.db, "image", PRODUCT).await.unwrap().unwrap();
    sql(&p, &format!("DELETE FROM metadata WHERE id = {}", yank_role.id)).await;
    let txn = patchgate::db::begin_signing(&svc.db).await.unwrap();
    commit_with_snapshot(&txn, &svc, svc.clock.now(), &[]).await.unwrap();
    txn.commit().await.unwrap();
    served_soon(&p).await;
    p.refused("rollback_attack").await;
    // Put the yank back (as the honest server had it) for the next attack.
    sea_orm::ActiveModelTrait::insert(sea_orm::IntoActiveModel::into_active_model(yank_role), &svc.db).await.unwrap();
    let txn = patchgate::db::begin_signing(&svc.db).await.unwrap();
    commit_with_snapshot(&txn, &svc, svc.clock.now(), &[]).await.unwrap();
    txn.commit().await.unwrap();
    served_soon(&p).await;
    p.refused("not_in_image_repository").await;

    // (d) below the security floor: the manufacturer publishes 1.2.0 with rollback_floor 1.1.0,
    // so 1.0.5 (signed, never installed here) is below it. The honest director refuses it; the
    // attacker lowers the floor in the database and rolls 1.0.5 out.
    p.publish("1.2.0", 4, Some("1.1.0")).await;
    let product: Value = p.app.get_json("/api/v1/products").await;
    assert_eq!(product[0]["security_floor"], "1.1.0", "{product}");
    rollout_refused(&p, "1.0.5", "below_security_floor").await;
    sql(&p, "UPDATE products SET security_floor = '0.0.0'").await;
    p.roll_out("1.0.5").await;
    p.refused("below_security_floor").await;

    // (a) again, with the database and the online keys: a product role signed by the
    // attacker's key, committed with a snapshot and timestamp signed by the server's own keys.
    let forged_image = firmware(67, 4096);
    insert_release(&p, "6.6.7", &forged_image).await;
    let svc = p.app.services.clone();
    let version = 1 + patchgate::services::image_repo::next_version(&svc.db, "image", PRODUCT).await.unwrap() - 1;
    let role = forged_role(&attacker_key, version, &[entry("6.6.7", &forged_image, "0.0.0")]).await;
    let txn = patchgate::db::begin_signing(&svc.db).await.unwrap();
    commit_with_snapshot(&txn, &svc, svc.clock.now(), &[role]).await.unwrap();
    txn.commit().await.unwrap();
    // Written behind the server's back, like another instance's publish: it serves the new
    // timestamp within a second.
    served_soon(&p).await;
    p.roll_out("6.6.7").await;
    p.refused("bad_signature").await;
    p.ngclient(&[], &[&format!("{PRODUCT}/6.6.7/fw.bin")], 1).await;

    // Through all of it the device ran what the manufacturer signed, and only that.
    let slot = std::fs::read(&p.opts.as_ref().unwrap().slot).unwrap();
    assert_eq!(slot, v100);
}
