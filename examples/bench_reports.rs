//! Benchmark: report → assignment → answer latency with many enrolled devices (not run in CI).
//!
//! Starts an in-process server (release build) on a fresh database, seeds `DEVICES` enrolled
//! devices in bulk (rows written directly, as a fleet import would), starts a 100% rollout to
//! all of them, then sends `SAMPLES` signed reports one after another over loopback HTTP from
//! devices spread across the fleet and prints the median and p99 latency of
//!   - the first report after the rollout started (assignment + per-device signing), and
//!   - a second, unchanged poll (no signing).
//!
//! Run through `scripts/bench-reports.sh`, or directly:
//!   cargo run --release --example bench_reports
//! Environment: DEVICES (default 100000), SAMPLES (default 2000), BENCH_POSTGRES (an admin URL
//! such as postgres://postgres@127.0.0.1:5432/test: a fresh database is created and dropped).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a benchmark fails loudly")]

use std::sync::Arc;
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use patchgate::clock::SystemClock;
use patchgate::config::Config;
use patchgate::db::entities::device;
use patchgate::services::auth::{Caller, Role, create_token, token_hash};
use patchgate::startup::Application;
use patchgate_protocol::report::DeviceReport;
use sea_orm::{ActiveValue::Set, EntityTrait, TransactionTrait};
use serde_json::json;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn key_of(i: usize) -> SigningKey {
    use sha2::Digest;
    let seed: [u8; 32] = sha2::Sha256::digest(format!("bench-device-{i}")).into();
    SigningKey::from_bytes(&seed)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn summary(label: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{label:<34} n={:<6} median {:>7.3} ms   p99 {:>7.3} ms   max {:>7.3} ms",
        samples.len(),
        ms(percentile(&samples, 0.5)),
        ms(percentile(&samples, 0.99)),
        ms(*samples.last().unwrap())
    );
}

async fn fresh_postgres(admin: &str) -> (String, String) {
    let name = format!("patchgate_bench_{}", patchgate::storage::random_hex(4));
    let db = sea_orm::Database::connect(admin).await.unwrap();
    sea_orm::ConnectionTrait::execute_unprepared(&db, &format!("CREATE DATABASE {name}")).await.unwrap();
    let mut url = url::Url::parse(admin).unwrap();
    url.set_path(&format!("/{name}"));
    (url.to_string(), name)
}

#[tokio::main]
async fn main() {
    let devices = env_usize("DEVICES", 100_000);
    let samples = env_usize("SAMPLES", 2_000).min(devices);
    let postgres = std::env::var("BENCH_POSTGRES").ok().filter(|s| !s.is_empty());
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    copy_dir(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("keys-example"), &keys);
    let (database_url, pg_name) = match &postgres {
        Some(admin) => {
            let (url, name) = fresh_postgres(admin).await;
            (Some(url), Some(name))
        }
        None => (None, None),
    };
    let backend = if postgres.is_some() { "PostgreSQL" } else { "SQLite" };
    let config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().join("data"),
        keys_dir: keys,
        database_url,
        refresh_interval_seconds: 0,
        rollout_interval_seconds: 0,
        ..Config::default()
    };
    let app = Application::build(config, Arc::new(SystemClock)).await.unwrap();
    let base = format!("http://127.0.0.1:{}", app.port());
    let svc = app.services().clone();
    tokio::spawn(app.run_until_stopped());
    let admin = create_token(&svc, &Caller::operator(), "bench", Role::Admin, None).await.unwrap();
    let client = reqwest::Client::new();
    let post = |path: &str, body: serde_json::Value| {
        let req = client.post(format!("{base}{path}")).bearer_auth(&admin).json(&body);
        async move {
            let res = req.send().await.unwrap();
            assert!(res.status().is_success(), "{}", res.text().await.unwrap());
        }
    };
    post("/api/v1/products", json!({"name": "pump-x1", "hardware_ids": ["hw"]})).await;
    let form = reqwest::multipart::Form::new()
        .text("version", "1.0.0")
        .part("file", reqwest::multipart::Part::bytes(vec![7u8; 65536]).file_name("fw.bin"));
    let res = client
        .post(format!("{base}/api/v1/products/pump-x1/releases"))
        .bearer_auth(&admin)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let product_id = patchgate::db::products::product_get_by_name(&svc.db, "pump-x1").await.unwrap().unwrap().id;

    eprintln!("==> seeding {devices} devices on {backend}");
    let started = Instant::now();
    let mut public = Vec::with_capacity(devices);
    for i in 0..devices {
        public.push(key_of(i).verifying_key().to_bytes());
    }
    let now = svc.now_secs();
    for chunk in (0..devices).collect::<Vec<_>>().chunks(1000) {
        let txn = svc.db.begin().await.unwrap();
        let rows = chunk.iter().map(|&i| device::ActiveModel {
            device_id: Set(format!("bench-{i:06}")),
            product_id: Set(product_id),
            hardware_id: Set("hw".into()),
            public_key: Set(hex::encode(public[i])),
            keyid: Set(patchgate_protocol::ed25519_keyid(&public[i])),
            tags: Set(r#"["bench"]"#.into()),
            token_prefix: Set("pgd_bench".into()),
            token_hash: Set(token_hash(&format!("pgd_bench_{i}"))),
            status: Set("active".into()),
            rekey_allowed: Set(false),
            enrolled_at: Set(now),
            enroll_time: Set("2026-11-24T10:00:00Z".into()),
            director_targets_version: Set(0),
            ..Default::default()
        });
        device::Entity::insert_many(rows).exec(&txn).await.unwrap();
        txn.commit().await.unwrap();
    }
    eprintln!("==> seeded in {:.1} s", started.elapsed().as_secs_f64());
    post("/api/v1/cohorts", json!({"name": "all", "product": "pump-x1", "selector": {"tags": ["bench"]}})).await;
    post("/api/v1/rollouts", json!({"id": "r-bench", "product": "pump-x1", "version": "1.0.0",
        "stages": [{"cohort": "all", "percent": 100}], "gate": {"max_failure_rate": 0.05, "min_reports": 10, "stall_minutes": 60}}))
    .await;
    post("/api/v1/rollouts/r-bench/start", json!({})).await;

    let step = devices / samples;
    let chosen: Vec<usize> = (0..samples).map(|k| k * step).collect();
    let mut versions = vec![0u64; devices];
    for (round, label) in [(1u64, "first report (assign + sign)"), (2, "unchanged poll (no signing)")] {
        let mut latencies = Vec::with_capacity(samples);
        for &i in &chosen {
            let id = format!("bench-{i:06}");
            let report = DeviceReport::new(&id, round, "2026-11-24T10:00:00Z", None, None, versions[i]);
            let body = serde_json::to_vec(&patchgate_protocol::envelope::sign(report, &key_of(i)).unwrap()).unwrap();
            let t = Instant::now();
            let res = client
                .post(format!("{base}/api/v1/devices/{id}/report"))
                .bearer_auth(format!("pgd_bench_{i}"))
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            let status = res.status();
            let answer: serde_json::Value = res.json().await.unwrap();
            latencies.push(t.elapsed());
            assert_eq!(status, 200, "{answer}");
            let version = answer["director_targets_version"].as_u64().unwrap();
            assert_eq!(answer["changed"], round == 1, "{answer}");
            versions[i] = version;
        }
        summary(&format!("{backend}, {devices} devices: {label}"), latencies);
    }
    if let (Some(admin_url), Some(name)) = (&postgres, &pg_name) {
        svc.db.clone().close().await.ok();
        let db = sea_orm::Database::connect(admin_url).await.unwrap();
        let _ =
            sea_orm::ConnectionTrait::execute_unprepared(&db, &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .await;
    }
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}
