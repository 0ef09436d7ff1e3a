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
