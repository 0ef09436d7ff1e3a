//! Database queries at sizes the API tests do not reach.

use patchgate::db::metadata::{NewMetadata, metadata_insert, metadata_latest_versions};

use crate::common::spawn_app;

#[tokio::test]
async fn the_latest_version_query_copes_with_thousands_of_roles() {
    let app = spawn_app().await;
    let db = &app.services.db;
    for i in 0..1500u64 {
        for version in 1..=(1 + i % 3) {
            let new = NewMetadata {
                repo: "bulk",
                role: &format!("p{i}"),
                version,
                expires_at: i64::try_from(version * 100 + i).unwrap(),
                body: Vec::new(),
                sha256: String::new(),
                created_at: 0,
            };
            metadata_insert(db, new).await.unwrap();
        }
    }
    let latest = metadata_latest_versions(db, "bulk").await.unwrap();
    assert_eq!(latest.len(), 1500);
    for (role, version, expires) in latest {
        let i: u64 = role[1..].parse().unwrap();
        assert_eq!(version, i64::try_from(1 + i % 3).unwrap(), "{role}");
        assert_eq!(expires, i64::try_from((1 + i % 3) * 100 + i).unwrap(), "{role}");
    }
}
