//! tough, as any device would use it, verifies the repository: downloads, tampering, expiry
//! and root rotation each handled as TUF requires.

use jiff::SignedDuration;
use patchgate::db::entities::metadata;
use patchgate::services::auth::Caller;
use patchgate::services::image_repo::{IMAGE, sign_image_root, store_role};
use patchgate::services::refresh::refresh_expiring;
use patchgate::services::root_rotation::rotate_image_root;
use patchgate::tuf::keydir;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};

use crate::common::{firmware, sha256_hex, spawn_app, tough_read};

#[tokio::test]
async fn tough_downloads_and_verifies_every_release_of_two_products() {
    let app = spawn_app().await;
    app.create_product("pump-x1", &["pump-x1-revA"]).await;
    app.create_product("monitor-m2", &["m2-rev1", "m2-rev2"]).await;
    let releases = [
        ("pump-x1", "1.0.0", "fw.bin", firmware(1, 70_000)),
        ("pump-x1", "1.1.0", "fw.bin", firmware(2, 80_001)),
        ("monitor-m2", "2.0.0", "image.img", firmware(3, 1_000)),
    ];
    for (product, version, file, content) in &releases {
        let body = app.publish(product, version, file, content.clone()).await;
        assert_eq!(body["target"]["name"], format!("{product}/{version}/{file}"));
        assert_eq!(body["target"]["hashes"]["sha256"], sha256_hex(content));
        assert_eq!(body["custom"]["version"], *version);
        assert_eq!(body["custom"]["rollback_floor"], "0.0.0");
    }
    let store = tempfile::tempdir().unwrap();
    let repo = app.tough(&app.root_v1().await, store.path()).await.expect("tough accepts the repository");
    for (product, version, file, content) in &releases {
        let got = tough_read(&repo, &format!("{product}/{version}/{file}")).await.unwrap();
        assert_eq!(&got, content, "{product} {version}");
    }
    // Delegations: each product's targets sit in its own role, signed by its own key.
    let delegations = repo.targets().signed.delegations.as_ref().unwrap();
    let mut roles: Vec<_> = delegations.roles.iter().map(|r| r.name.clone()).collect();
    roles.sort();
    assert_eq!(roles, ["monitor-m2", "pump-x1"]);
    let custom = &repo.delegated_role("monitor-m2").unwrap().targets.as_ref().unwrap().signed.targets;
    let target = custom.values().next().unwrap();
    assert_eq!(target.custom["hardware_ids"], serde_json::json!(["m2-rev1", "m2-rev2"]));
    assert_eq!(target.hashes._extra["sha512"].as_str().unwrap().len(), 128);
    // A name nobody published is not listed.
    assert!(tough_read(&repo, "pump-x1/9.9.9/fw.bin").await.is_err());
}

#[tokio::test]
async fn a_tampered_target_fails_verification() {
    let app = spawn_app().await;
    app.create_product("pump-x1", &["hw"]).await;
    let content = firmware(7, 50_000);
    app.publish("pump-x1", "1.0.0", "fw.bin", content.clone()).await;
    let blob = app.services.config.data_dir.join("objects/blobs/sha256").join(sha256_hex(&content));
    let mut evil = content.clone();
    evil[1234] ^= 0xff;
    std::fs::write(&blob, &evil).unwrap();
    let store = tempfile::tempdir().unwrap();
    let repo = app.tough(&app.root_v1().await, store.path()).await.unwrap();
    let err = tough_read(&repo, "pump-x1/1.0.0/fw.bin").await.unwrap_err();
    assert!(err.contains("hash") || err.contains("Hash"), "{err}");
}

#[tokio::test]
async fn tampered_metadata_is_refused() {
    let app = spawn_app().await;
    app.create_product("pump-x1", &["hw"]).await;
    app.publish("pump-x1", "1.0.0", "fw.bin", firmware(1, 1000)).await;
    // An attacker with the database rewrites the product role to list a bigger target.
    let row = metadata::Entity::find()
        .filter(metadata::Column::Repo.eq(IMAGE))
        .filter(metadata::Column::Role.eq("pump-x1"))
        .order_by_desc(metadata::Column::Version)
        .one(&app.services.db)
        .await
        .unwrap()
        .unwrap();
    let tampered = String::from_utf8(row.body.clone()).unwrap().replace("\"length\":1000", "\"length\":1001");
    assert_ne!(tampered.as_bytes(), row.body.as_slice());
    metadata::Entity::update_many()
        .col_expr(metadata::Column::Body, sea_orm::sea_query::Expr::value(tampered.into_bytes()))
        .filter(metadata::Column::Id.eq(row.id))
        .exec(&app.services.db)
        .await
        .unwrap();
    let store = tempfile::tempdir().unwrap();
    let err = app.tough(&app.root_v1().await, store.path()).await.expect_err("tampered role refused");
    let text = err.to_string();
    assert!(text.contains("pump-x1") || text.contains("signature"), "{text}");
}

#[tokio::test]
async fn an_expired_timestamp_is_refused_until_the_refresh_job_resigns_it() {
    let app = spawn_app().await;
    // Everything is signed "two days ago": the timestamp (one day lifetime) is now expired.
    app.clock.set_offset(SignedDuration::from_hours(-48));
    app.create_product("pump-x1", &["hw"]).await;
    app.publish("pump-x1", "1.0.0", "fw.bin", firmware(1, 1000)).await;
    app.clock.set_offset(SignedDuration::ZERO);
    let root = app.root_v1().await;
    let store = tempfile::tempdir().unwrap();
    let ts = app.metadata("timestamp.json").await.text().await.unwrap();
    let err = app.tough(&root, store.path()).await.err().unwrap_or_else(|| panic!("expired timestamp refused: {ts}"));
    assert!(err.to_string().to_lowercase().contains("expired"), "{err}");
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert!(body["problems"].to_string().contains("timestamp"), "{body}");

    let refreshed = refresh_expiring(&app.services).await.unwrap();
    // The snapshot signed two days ago still has five of its seven days: only the timestamp.
    assert_eq!(refreshed, ["timestamp"]);
    let repo = app.tough(&root, store.path()).await.expect("fresh metadata accepted");
    assert_eq!(tough_read(&repo, "pump-x1/1.0.0/fw.bin").await.unwrap(), firmware(1, 1000));
    assert_eq!(app.client.get(app.url("/readyz")).send().await.unwrap().status(), 200);
    // Nothing left to do: a second run signs nothing.
    assert!(refresh_expiring(&app.services).await.unwrap().is_empty());
}

#[tokio::test]
async fn the_refresh_job_resigns_only_what_is_inside_its_margin() {
    let app = spawn_app().await;
    app.create_product("pump-x1", &["hw"]).await;
    // 17 h later the timestamp (24 h, margin 8 h) is due, the snapshot (7 days) is not.
    app.clock.set_offset(SignedDuration::from_hours(17));
    assert_eq!(refresh_expiring(&app.services).await.unwrap(), ["timestamp"]);
    // 5 days later the snapshot is due too (margin 56 h), products (90 days) are not.
    app.clock.set_offset(SignedDuration::from_hours(24 * 5));
    assert_eq!(refresh_expiring(&app.services).await.unwrap(), ["snapshot", "timestamp"]);
    // 61 days later the product role is due.
    app.clock.set_offset(SignedDuration::from_hours(24 * 61));
    assert_eq!(refresh_expiring(&app.services).await.unwrap(), ["pump-x1", "snapshot", "timestamp"]);
}

#[tokio::test]
async fn clients_follow_a_root_rotation_and_refuse_an_improper_one() {
    let app = spawn_app().await;
    app.create_product("pump-x1", &["hw"]).await;
    app.publish("pump-x1", "1.0.0", "fw.bin", firmware(1, 1000)).await;
    let root_v1 = app.root_v1().await;
    let store = tempfile::tempdir().unwrap();
    app.tough(&root_v1, store.path()).await.unwrap();

    // Proper: new root keys (3, threshold 2), cross-signed by old and new.
    let keys_dir = &app.services.config.keys_dir;
    let old = app.services.keys.image_root.clone();
    let pending = keydir::stage_root_keys(keys_dir, 2, 3, 2).unwrap();
    let mut new_keys = (*app.services.keys).clone();
    new_keys.image_root = pending.keys.clone();
    new_keys.image_root_threshold = 2;

    // A rotation that only the new keys sign is refused before anything is stored.
    let err = rotate_image_root(&app.services, &Caller::operator(), &new_keys.image_root, &new_keys).await.unwrap_err();
    assert!(err.to_string().contains("would reject"), "{err}");
    assert_eq!(app.metadata("2.root.json").await.status(), 404);

    let v2 = rotate_image_root(&app.services, &Caller::operator(), &old, &new_keys).await.unwrap();
    assert_eq!(v2.version, 2);
    keydir::install_root_keys(keys_dir, &pending, 1).unwrap();
    let installed = keydir::load(keys_dir).unwrap();
    assert_eq!(installed.image_root.len(), 3);
    assert_eq!(std::fs::read_dir(keys_dir.join("offline/retired-v1")).unwrap().count(), 2, "old keys kept");
    app.publish("pump-x1", "1.1.0", "fw.bin", firmware(2, 1000)).await;
    let repo = app.tough(&root_v1, store.path()).await.expect("tough follows 1 → 2");
    assert_eq!(repo.root().signed.version.get(), 2);
    assert_eq!(tough_read(&repo, "pump-x1/1.1.0/fw.bin").await.unwrap(), firmware(2, 1000));

    // Improper: root 3 signed only by one new key (below the threshold of 2).
    let now = app.services.clock.now();
    let bad = sign_image_root(&new_keys, 3, now, &[&new_keys.image_root[0]]).await.unwrap();
    store_role(&app.services.db, IMAGE, &bad, now).await.unwrap();
    let fresh = tempfile::tempdir().unwrap();
    let err = app.tough(&root_v1, fresh.path()).await.expect_err("under-signed root refused");
    assert!(err.to_string().contains("root") || err.to_string().contains("signature"), "{err}");
}

#[tokio::test]
async fn a_product_whose_key_is_missing_does_not_stop_the_timestamp_refresh() {
    let app = spawn_app().await;
    app.create_product("pump-x1", &["hw"]).await;
    app.create_product("pump-x2", &["hw"]).await;
    std::fs::remove_file(app.services.config.product_keys_dir().join("pump-x1.pem")).unwrap();
    app.clock.set_offset(SignedDuration::from_hours(24 * 61));
    let refreshed = refresh_expiring(&app.services).await.unwrap();
    assert_eq!(refreshed, ["pump-x2", "snapshot", "timestamp"]);
}
