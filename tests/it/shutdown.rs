//! Graceful shutdown of a real `patchgate serve` process: on SIGTERM `/readyz` turns unready
//! while requests are still served, then the server stops accepting, lets the requests in
//! flight finish, and exits 0.

use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::json;

use crate::process::Deployment;

const PRODUCT: &str = "pump-x1";

#[tokio::test]
async fn sigterm_turns_readiness_first_then_finishes_an_upload_in_flight_and_exits_0() {
    let mut deployment = Deployment::new().await;
    deployment.vars.push(("PATCHGATE_SHUTDOWN_DRAIN_SECONDS", "1".to_owned()));
    let mut server = deployment.start("a").await;
    let token = deployment.admin_token();
    let client = reqwest::Client::new();
    let res = client
        .post(server.url("/api/v1/products"))
        .bearer_auth(&token)
        .json(&json!({"name": PRODUCT, "hardware_ids": ["hw"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());

    // An upload that takes about two seconds: 24 chunks of 64 KiB, one every 80 ms.
    let chunks = futures_util::stream::unfold(0u8, |i| async move {
        if i == 24 {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(80)).await;
        Some((Ok::<_, std::io::Error>(Bytes::from(vec![i; 64 * 1024])), i + 1))
    });
    let part = reqwest::multipart::Part::stream(reqwest::Body::wrap_stream(chunks)).file_name("fw.bin");
    let form = reqwest::multipart::Form::new().text("version", "1.0.0").part("file", part);
    let upload = tokio::spawn(
        client
            .post(server.url(&format!("/api/v1/products/{PRODUCT}/releases")))
            .bearer_auth(&token)
            .multipart(form)
            .send(),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    rustix::process::kill_process(rustix::process::Pid::from_child(&server.child), rustix::process::Signal::TERM)
        .unwrap();

    // Draining: still serving, but no longer ready.
    let started = Instant::now();
    loop {
        let res = reqwest::get(server.url("/readyz")).await.unwrap();
        if res.status() == 503 {
            let body: serde_json::Value = res.json().await.unwrap();
            assert!(body["problems"][0].as_str().unwrap().contains("shutting down"), "{body}");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(1), "/readyz still ready after SIGTERM: {}", res.status());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // After the drain, new connections are refused while the upload goes on.
    let started = Instant::now();
    while reqwest::Client::new().get(server.url("/healthz")).send().await.is_ok() {
        assert!(started.elapsed() < Duration::from_secs(5), "still accepting 5 s after SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let res = upload.await.unwrap().unwrap();
    assert_eq!(res.status(), 201, "the upload in flight finished: {}", res.text().await.unwrap());

    let started = Instant::now();
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "still running 10 s after SIGTERM:\n{}",
            server.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "exit {status}:\n{}", server.log_tail());
    let log = std::fs::read_to_string(&server.log).unwrap();
    assert!(log.contains("SIGTERM") && log.contains("stopped"), "{log}");

    // What was acknowledged is there after a restart.
    let server = deployment.start("b").await;
    let res = client.get(server.url(&format!("/api/v1/products/{PRODUCT}/releases/1.0.0"))).bearer_auth(&token).send();
    assert_eq!(res.await.unwrap().status(), 200);
}
