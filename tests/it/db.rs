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

/// Processes that start together on a fresh database (servers and CLI commands) migrate it once,
/// under a lock, and all go on: before the lock, one of them failed with "table … already exists"
/// (SQLite) or a duplicate `pg_type` key (PostgreSQL).
#[tokio::test]
async fn servers_and_cli_commands_starting_together_on_a_fresh_database_all_succeed() {
    for round in 0..2 {
        let deployment = crate::process::Deployment::new().await;
        let cli = async {
            let children: Vec<_> = (0..3)
                .map(|i| {
                    deployment
                        .command(&["token", "create", "--role", "admin", "--name", &format!("ci-{i}")])
                        .stdout(std::process::Stdio::piped())
                        .stderr(std::process::Stdio::piped())
                        .spawn()
                        .unwrap()
                })
                .collect();
            tokio::task::spawn_blocking(move || {
                children.into_iter().map(|c| c.wait_with_output().unwrap()).collect::<Vec<_>>()
            })
            .await
            .unwrap()
        };
        let (a, b, outputs) = tokio::join!(deployment.start("a"), deployment.start("b"), cli);
        for (i, out) in outputs.iter().enumerate() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "round {round}, token create {i}: {}\n{stderr}", out.status);
            assert!(String::from_utf8_lossy(&out.stdout).contains("pgt_"), "round {round}, token create {i}: {stderr}");
        }
        // Both servers serve the one repository the first of them initialised.
        let root = |server: &crate::process::Server| reqwest::get(server.url("/repo/metadata/1.root.json"));
        let (root_a, root_b) = (root(&a).await.unwrap(), root(&b).await.unwrap());
        assert_eq!((root_a.status().as_u16(), root_b.status().as_u16()), (200, 200));
        assert_eq!(root_a.bytes().await.unwrap(), root_b.bytes().await.unwrap());
    }
}
