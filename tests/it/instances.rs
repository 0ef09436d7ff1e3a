//! Several `patchgate serve` processes on one database and one S3 bucket (moto's server), as in
//! production behind a load balancer: publishes through both at once never fork the repository,
//! and what an admin does on one instance steers the devices that report to the other.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::firmware;
use crate::crash::{Answer, PRODUCT, enroll, post_report, present_versions, publish, report_body};
use crate::process::{Deployment, Server};
use crate::s3::S3;

/// The timestamp each server serves now.
async fn timestamp(client: &reqwest::Client, server: &Server) -> bytes::Bytes {
    client.get(server.url("/repo/metadata/timestamp.json")).send().await.unwrap().bytes().await.unwrap()
}

/// The director target names device `id` is told of, through `server`, at director version
/// `version`.
async fn director_targets(
    client: &reqwest::Client,
    server: &Server,
    id: &str,
    token: &str,
    version: u64,
) -> Vec<String> {
    let res = client
        .get(server.url(&format!("/director/{id}/metadata/{version}.targets.json")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: serde_json::Value = res.json().await.unwrap();
    body["signed"]["targets"].as_object().unwrap().keys().cloned().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_server_processes_publish_at_once_without_forking_and_steer_devices_as_one() {
    let s3 = S3::start();
    let mut deployment = Deployment::new().await;
    deployment.vars.push(("PATCHGATE_STORE_URL", s3.url()));
    deployment.vars.extend(s3.aws_env());
    let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    let (a, b) = (deployment.start("a").await, deployment.start("b").await);
    let token = deployment.admin_token();
    let admin = |server: &Server, path: &str, body: serde_json::Value| {
        client.post(server.url(path)).bearer_auth(&token).json(&body).send()
    };
    let res = admin(&a, "/api/v1/products", json!({"name": PRODUCT, "hardware_ids": ["hw"]})).await.unwrap();
    assert_eq!(res.status(), 201);
    let root = client.get(b.url("/repo/metadata/1.root.json")).send().await.unwrap().bytes().await.unwrap().to_vec();

    // Eight publishes at once, every other one through each server.
    let sent: BTreeMap<String, Vec<u8>> =
        (0..8u8).map(|i| (format!("2.0.{i}"), firmware(60 + i, 64 * 1024 + usize::from(i) * 16 * 1024))).collect();
    let tasks: Vec<_> = sent
        .iter()
        .enumerate()
        .map(|(i, (version, content))| {
            let base = if i % 2 == 0 { a.base.clone() } else { b.base.clone() };
            let (client, token, version, content) = (client.clone(), token.clone(), version.clone(), content.clone());
            tokio::spawn(async move { (version.clone(), publish(&client, &base, &token, &version, content).await) })
        })
        .collect();
    for task in tasks {
        let (version, answer) = task.await.unwrap();
        assert!(matches!(answer, Answer::Status(201, _)), "{version}: {answer:?}");
    }
    let blobs: BTreeSet<String> =
        sent.values().map(|c| patchgate::storage::blob_key(&crate::common::sha256_hex(c))).collect();
    assert_eq!(s3.keys().await, blobs, "both instances stored their files in the one bucket, and nothing else");
    // Within a second both serve the same timestamp, and through each, tough finds all eight
    // releases in one product role whose versions went 1 → 9 without a gap or a fork.
    let started = Instant::now();
    while timestamp(&client, &a).await != timestamp(&client, &b).await {
        assert!(started.elapsed() < Duration::from_secs(3), "the two servers still serve different timestamps");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let all: BTreeSet<String> = sent.keys().cloned().collect();
    for server in [&a, &b] {
        let device = tempfile::tempdir().unwrap();
        assert_eq!(present_versions(server, &client, &token, &root, &sent, device.path()).await, all);
        for (file, status) in [("9.pump-x1.json", 200), ("10.pump-x1.json", 404)] {
            let res = client.get(server.url(&format!("/repo/metadata/{file}"))).send().await.unwrap();
            assert_eq!(res.status().as_u16(), status, "{file} on {}", server.base);
        }
    }

    // A device reports to B only; the rollout is started on A: its next report through B is
    // assigned the release. Paused through B, its next report through A is withdrawn.
    let res = admin(&a, "/api/v1/enrollment-tokens", json!({"product": PRODUCT, "tags": [], "max_uses": 1})).await;
    let enrollment = res.unwrap().json::<serde_json::Value>().await.unwrap()["token"].as_str().unwrap().to_owned();
    let (key, device_token) = enroll(&client, &b.base, &enrollment, "pump-b1").await;
    let report = |server: &Server, counter: u64| {
        let (client, base, token, body) =
            (client.clone(), server.base.clone(), device_token.clone(), report_body("pump-b1", &key, counter));
        async move { post_report(&client, &base, "pump-b1", &token, &body).await }
    };
    assert_eq!(report(&b, 1).await.unwrap().0, 200);
    let res = admin(&a, "/api/v1/cohorts", json!({"name": "one", "product": PRODUCT, "devices": ["pump-b1"]})).await;
    assert_eq!(res.unwrap().status(), 201);
    let gate = json!({"max_failure_rate": 0.5, "min_reports": 1, "stall_minutes": 60});
    let rollout = json!({"id": "r-1", "product": PRODUCT, "version": "2.0.7",
        "stages": [{"cohort": "one", "percent": 100}], "gate": gate});
    assert_eq!(admin(&a, "/api/v1/rollouts", rollout).await.unwrap().status(), 201);
    assert_eq!(admin(&a, "/api/v1/rollouts/r-1/start", json!({})).await.unwrap().status(), 200);
    let (status, answer) = report(&b, 2).await.unwrap();
    assert_eq!(status, 200, "{answer}");
    let version = answer["director_targets_version"].as_u64().unwrap();
    assert_eq!(
        director_targets(&client, &b, "pump-b1", &device_token, version).await,
        vec![crate::crash::target_name("2.0.7")]
    );
    assert_eq!(admin(&b, "/api/v1/rollouts/r-1/pause", json!({})).await.unwrap().status(), 200);
    let (status, answer) = report(&a, 3).await.unwrap();
    assert_eq!(status, 200, "{answer}");
    let version = answer["director_targets_version"].as_u64().unwrap();
    assert!(director_targets(&client, &a, "pump-b1", &device_token, version).await.is_empty());
    // A counter used through one server is refused by the other.
    assert_eq!(report(&b, 3).await.unwrap().0, 409);
}
