//! The background refresh job, running on its own inside the server.

use std::time::Duration;

use jiff::SignedDuration;
use patchgate::services::image_repo::IMAGE;

use crate::common::spawn_app_at;

#[tokio::test]
async fn the_refresh_job_resigns_a_timestamp_that_entered_its_margin() {
    // Initialised "17 h ago": once the clock is back to now, the timestamp has 7 h left,
    // inside its 8 h margin.
    let app = spawn_app_at(SignedDuration::from_hours(-17), |c| c.refresh_interval_seconds = 1).await;
    let before = patchgate::db::metadata::metadata_latest(&app.services.db, IMAGE, "timestamp").await.unwrap().unwrap();
    app.clock.set_offset(SignedDuration::ZERO);
    let mut after = before.clone();
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        after = patchgate::db::metadata::metadata_latest(&app.services.db, IMAGE, "timestamp").await.unwrap().unwrap();
        if after.version > before.version {
            break;
        }
    }
    assert_eq!(after.version, before.version + 1, "the job re-signed the timestamp within 10 s");
    assert!(after.expires_at > before.expires_at + 16 * 3600);
}

/// Stores `content` as a publish does before its commit.
async fn stored(app: &crate::common::TestApp, content: Vec<u8>) -> patchgate::services::publish_release::StoredBlob {
    let body = futures_util::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from(content))]);
    patchgate::services::publish_release::store_blob(&app.services, body, 1 << 20).await.unwrap()
}

#[tokio::test]
async fn the_blob_sweep_removes_only_old_files_no_release_refers_to() {
    use patchgate::domain::names::{FileName, FirmwareVersion, ProductName};
    use patchgate::jobs::blobs::{GRACE, sweep};
    use patchgate::services::publish_release::{NewRelease, commit_release};

    let app = crate::common::spawn_app().await;
    app.create_product("pump-x1", &["hw"]).await;
    let published = crate::common::firmware(21, 8192);
    app.publish("pump-x1", "1.0.0", "fw.bin", published.clone()).await;
    // A file stored by a publish that never committed (its validation failed, or it was cut off).
    let orphan = stored(&app, crate::common::firmware(22, 4096)).await;
    let store = &app.services.store;
    assert_eq!(sweep(&app.services, GRACE).await.unwrap(), 0, "a day's grace spares a fresh orphan");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(sweep(&app.services, Duration::ZERO).await.unwrap(), 1);
    assert_eq!(store.blob_size(&orphan.sha256).await.unwrap(), None, "the orphan is gone");
    let sha = crate::common::sha256_hex(&published);
    assert_eq!(store.blob_size(&sha).await.unwrap(), Some(8192), "the released file stays");
    let res = app.client.get(app.url(&format!("/repo/targets/pump-x1/1.0.0/{sha}.fw.bin"))).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.bytes().await.unwrap().to_vec(), published);
    assert_eq!(sweep(&app.services, Duration::ZERO).await.unwrap(), 0, "nothing else to remove");

    // A publish whose file the sweep removed before its commit is refused, and nothing is signed.
    let lost = stored(&app, crate::common::firmware(23, 4096)).await;
    store.delete_blob(&lost.sha256).await.unwrap();
    let new = NewRelease {
        product: ProductName::parse("pump-x1").unwrap(),
        version: FirmwareVersion::parse("1.1.0").unwrap(),
        file_name: FileName::parse("fw.bin").unwrap(),
        notes: None,
        rollback_floor: None,
        blob: lost,
        role: None,
        delist: Vec::new(),
    };
    let caller = patchgate::services::auth::Caller::operator();
    let err = commit_release(&app.services, &caller, new).await.unwrap_err();
    assert!(format!("{err:?}").contains("blob_missing"), "{err:?}");
    let releases: serde_json::Value = app.get_json("/api/v1/products/pump-x1/releases").await;
    assert_eq!(releases.as_array().map(Vec::len), Some(1), "{releases}");
}

/// Background jobs take a lease so that one instance of several runs each: on one database (as
/// several instances share it), a free lease goes to exactly one of two racing holders, a held
/// one only to its holder until it expires (an instance that died), and a released one at once
/// (an instance that stopped).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_lease_has_one_holder_at_a_time() {
    use patchgate::db::leases::{lease_release, lease_try_acquire};
    let app = crate::common::spawn_app().await;
    let db = &app.services.db;
    for round in 0..20 {
        let name = format!("race-{round}");
        let (a, b) =
            tokio::join!(lease_try_acquire(db, &name, "a", 100, 160), lease_try_acquire(db, &name, "b", 100, 160));
        assert!(a.unwrap() ^ b.unwrap(), "round {round}: exactly one of two racing holders takes a free lease");
    }
    assert!(lease_try_acquire(db, "job", "a", 100, 160).await.unwrap());
    assert!(!lease_try_acquire(db, "job", "b", 150, 210).await.unwrap(), "held by a until 160");
    assert!(lease_try_acquire(db, "job", "a", 150, 210).await.unwrap(), "a renews its own lease");
    assert!(!lease_try_acquire(db, "job", "b", 209, 269).await.unwrap(), "renewed until 210");
    assert!(lease_try_acquire(db, "job", "b", 211, 271).await.unwrap(), "expired: b takes it over");
    assert!(!lease_try_acquire(db, "job", "a", 212, 272).await.unwrap(), "and a no longer holds it");
    lease_release(db, "job", "b").await.unwrap();
    assert!(lease_try_acquire(db, "job", "a", 213, 273).await.unwrap(), "given up: taken at once");
}
