//! Limits no client can hold a connection open past (`http/limits.rs`): stalled and trickled
//! bodies are cut, impossible lengths refused before a byte is read, and a crowd of stalled
//! connections at the open-file limit does not keep `/healthz` from answering.
//!
//! These tests speak raw HTTP/1.1 over TCP: an HTTP client library sends whole bodies.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::common::{spawn_app, spawn_app_with};
use crate::process::Deployment;

/// Connects to `base` (`http://127.0.0.1:PORT`) and sends `head` and `body` as they are.
fn send_raw(base: &str, head: &str, body: &[u8]) -> TcpStream {
    let address = base.strip_prefix("http://").unwrap();
    let mut stream = TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    stream
}

/// Reads until the server closes the connection; the text and how long it took.
fn read_until_closed(mut stream: TcpStream) -> (String, Duration) {
    let started = Instant::now();
    let mut answer = Vec::new();
    // A reset after the answer (the server closed with unread bytes) ends the read too.
    let _ = stream.read_to_end(&mut answer);
    (String::from_utf8_lossy(&answer).into_owned(), started.elapsed())
}

fn status_of(answer: &str) -> u16 {
    answer.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

#[tokio::test]
async fn a_stalled_body_is_cut_within_the_deadline_and_the_connection_closed() {
    let app = spawn_app_with(|c| c.body_timeout_seconds = 1).await;
    let base = app.base.clone();
    let stalled = [
        // A declared length, one byte sent.
        (
            "POST /api/v1/devices/enroll HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 16000\r\n\r\n",
            "{",
            408,
        ),
        // A chunked body that never ends: actix would drain it for as long as the client trickles.
        (
            "POST /api/v1/devices/enroll HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
            "1\r\n{\r\n",
            408,
        ),
        // A route that refuses before reading the body (no credential) answers and closes.
        ("POST /api/v1/rollouts/r-1/pause HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n", "{", 401),
        (
            "POST /api/v1/rollouts/r-1/pause HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n",
            "1\r\n{\r\n",
            401,
        ),
    ];
    for (head, body, expected) in stalled {
        let base = base.clone();
        let (answer, took) =
            tokio::task::spawn_blocking(move || read_until_closed(send_raw(&base, head, body.as_bytes())))
                .await
                .unwrap();
        assert_eq!(status_of(&answer), expected, "{head}: {answer}");
        assert!(took < Duration::from_secs(5), "{head}: open for {took:?}: {answer}");
        if expected == 408 {
            assert!(answer.contains("\"error\":\"body_timeout\""), "{answer}");
            assert!(answer.to_ascii_lowercase().contains("connection: close"), "{answer}");
        }
    }
}

#[tokio::test]
async fn a_trickled_upload_is_cut_and_keeps_nothing() {
    let app = spawn_app_with(|c| {
        c.upload_min_bytes_per_second = 1024;
        c.upload_rate_window_seconds = 1;
    })
    .await;
    app.create_product("pump-x1", &["hw"]).await;
    let head = format!(
        "POST /api/v1/products/pump-x1/releases HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {}\r\n\
         Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 1000000\r\n\r\n",
        app.admin
    );
    let base = app.base.clone();
    let (answer, took) = tokio::task::spawn_blocking(move || {
        let mut stream = send_raw(
            &base,
            &head,
            b"--b\r\nContent-Disposition: form-data; name=\"version\"\r\n\r\n1.0.0\r\n--b\r\n\
              Content-Disposition: form-data; name=\"file\"; filename=\"fw.bin\"\r\n\r\n",
        );
        // 10 bytes every 200 ms: 50 bytes a second, far below 1 KiB/s.
        for _ in 0..40 {
            if stream.write_all(&[7u8; 10]).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
            if stream.peek(&mut [0u8; 1]).is_ok_and(|n| n > 0) {
                break;
            }
        }
        read_until_closed(stream)
    })
    .await
    .unwrap();
    assert_eq!(status_of(&answer), 408, "{answer}");
    assert!(answer.contains("\"error\":\"upload_too_slow\""), "{answer}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    let staging = app.services.config.data_dir.join("objects").join("staging");
    let left = std::fs::read_dir(&staging).map_or(0, Iterator::count);
    assert_eq!(left, 0, "the cut upload's staged file is removed");
    let releases: Vec<serde_json::Value> = app.get_json("/api/v1/products/pump-x1/releases").await;
    assert!(releases.is_empty(), "{releases:?}");
}

#[tokio::test]
async fn a_declared_length_above_the_cap_is_413_before_any_byte_is_read() {
    let app = spawn_app().await;
    for (head, code) in [
        // 10 GB against the 2 GiB upload cap, without any credential.
        (
            "POST /api/v1/products/pump-x1/releases HTTP/1.1\r\nHost: t\r\n\
             Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 10000000000\r\n\r\n",
            "body_too_large",
        ),
        // 1 GB to a JSON route.
        (
            "POST /api/v1/devices/enroll HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 1000000000\r\n\r\n",
            "body_too_large",
        ),
    ] {
        let base = app.base.clone();
        let (answer, took) =
            tokio::task::spawn_blocking(move || read_until_closed(send_raw(&base, head, b""))).await.unwrap();
        assert_eq!(status_of(&answer), 413, "{answer}");
        assert!(answer.contains(&format!("\"error\":\"{code}\"")), "{answer}");
        // Answered at once, not after any body deadline (30 s by default).
        assert!(took < Duration::from_secs(5), "{took:?}");
    }
}

#[tokio::test]
async fn stalled_connections_at_the_open_file_limit_do_not_stop_healthz() {
    const STALLED: usize = 1_100;
    let mut deployment = Deployment::new().await;
    // Long enough that, on a loaded machine, the first stalled connections are still held when
    // the last arrive (with 3 s the first were cut before the count reached the cap); short
    // enough that /healthz does not wait long behind them.
    const BODY_TIMEOUT_SECONDS: u64 = 6;
    deployment.vars.push(("PATCHGATE_BODY_TIMEOUT_SECONDS", BODY_TIMEOUT_SECONDS.to_string()));
    let server = deployment.start_limited("fd-limit", Some(1024)).await;
    let base = server.base.clone();
    let crowd = tokio::task::spawn_blocking(move || {
        let address = base.strip_prefix("http://").unwrap().to_owned();
        (0..STALLED)
            .map(|_| {
                let mut stream = TcpStream::connect(&address).unwrap();
                let head = "POST /api/v1/devices/enroll HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 16000\r\n\r\n{";
                stream.write_all(head.as_bytes()).unwrap();
                stream
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    assert_eq!(crowd.len(), STALLED);
    // The server counts connections as it accepts them: wait (within the body deadline) for the
    // count to reach the cap, which it logs.
    let cap_logged = || std::fs::read_to_string(&server.log).unwrap().contains("connection cap reached");
    let waiting = Instant::now();
    while !cap_logged() && waiting.elapsed() < Duration::from_secs(BODY_TIMEOUT_SECONDS) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(cap_logged(), "the cap is logged:\n{}", server.log_tail());
    let log = std::fs::read_to_string(&server.log).unwrap();
    assert!(!log.contains('\u{1b}'), "a log written to a file has no terminal colour codes:\n{log}");
    let started = Instant::now();
    let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    let health = client.get(server.url("/healthz")).send().await.map(|r| r.status().as_u16());
    let took = started.elapsed();
    assert_eq!(health.ok(), Some(200), "/healthz after {took:?}:\n{}", server.log_tail());
    // Queued behind the stalled connections at most until the body deadline cut them.
    assert!(took < Duration::from_secs(BODY_TIMEOUT_SECONDS + 9), "/healthz took {took:?}");
    let log = std::fs::read_to_string(&server.log).unwrap();
    assert!(
        log.contains("max_connections") && log.contains("768"),
        "1024 open files leave 768 connections:\n{}",
        server.log_tail()
    );
    drop(crowd);
}
