//! What the public repository routes answer: both target spellings, Range, HEAD, ETag,
//! caching headers, 404 and 405 as JSON.

use reqwest::header;

use crate::common::{firmware, sha256_hex, spawn_app};

#[tokio::test]
async fn targets_serve_both_spellings_with_range_head_and_etag() {
    let app = spawn_app().await;
    app.create_product("pump-x1", &["hw"]).await;
    let content = firmware(4, 10_000);
    let body = app.publish("pump-x1", "1.0.0", "fw.bin", content.clone()).await;
    let sha256 = sha256_hex(&content);
    let sha512 = body["target"]["hashes"]["sha512"].as_str().unwrap().to_owned();
    let spellings = [
        format!("/repo/targets/pump-x1/1.0.0/{sha256}.fw.bin"),
        format!("/repo/targets/{sha256}.pump-x1/1.0.0/fw.bin"),
        format!("/repo/targets/pump-x1/1.0.0/{sha512}.fw.bin"),
    ];
    for path in &spellings {
        let res = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(res.status(), 200, "{path}");
        assert_eq!(res.headers()[header::CONTENT_LENGTH], "10000");
        assert_eq!(res.headers()[header::ETAG], format!("\"{sha256}\"").as_str());
        assert!(res.headers()[header::CACHE_CONTROL].to_str().unwrap().contains("immutable"));
        assert!(res.bytes().await.unwrap() == content);
    }
    let url = app.url(&spellings[0]);
    // Not the plain name, not a wrong hash, not another version.
    for path in [
        "/repo/targets/pump-x1/1.0.0/fw.bin".to_owned(),
        format!("/repo/targets/pump-x1/1.0.0/{}.fw.bin", "0".repeat(64)),
        format!("/repo/targets/pump-x1/2.0.0/{sha256}.fw.bin"),
    ] {
        let res = app.client.get(app.url(&path)).send().await.unwrap();
        assert_eq!(res.status(), 404, "{path}");
        assert_eq!(res.headers()[header::CACHE_CONTROL], "no-store");
    }
    // Range.
    let res = app.client.get(&url).header(header::RANGE, "bytes=100-199").send().await.unwrap();
    assert_eq!(res.status(), 206);
    assert_eq!(res.headers()[header::CONTENT_RANGE], "bytes 100-199/10000");
    assert!(res.bytes().await.unwrap() == content[100..200]);
    let res = app.client.get(&url).header(header::RANGE, "bytes=9990-").send().await.unwrap();
    assert_eq!(res.status(), 206);
    assert!(res.bytes().await.unwrap() == content[9990..]);
    let res = app.client.get(&url).header(header::RANGE, "bytes=10000-").send().await.unwrap();
    assert_eq!(res.status(), 416);
    assert_eq!(res.headers()[header::CONTENT_RANGE], "bytes */10000");
    // HEAD: the headers, no body.
    let res = app.client.head(&url).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()[header::CONTENT_LENGTH], "10000");
    assert!(res.bytes().await.unwrap().is_empty());
    // Conditional GET.
    let res = app.client.get(&url).header(header::IF_NONE_MATCH, format!("\"{sha256}\"")).send().await.unwrap();
    assert_eq!(res.status(), 304);
}

/// Local targets leave by `sendfile`, past actix's write buffer (`http/sendfile.rs`): on one
/// keep-alive connection with requests pipelined behind a large download, each answer must
/// carry exactly its own bytes, whether the server sends the file in one go or waits for the
/// client to read (the client reads nothing until every request is sent).
#[tokio::test]
async fn pipelined_downloads_on_one_connection_keep_their_framing() {
    use std::io::{Read, Write};
    let app = spawn_app().await;
    app.create_product("pump-x1", &["hw"]).await;
    // Past one poll's budget (16 MiB) and many `sendfile` calls (2 MiB each).
    let content = firmware(7, 18 * 1024 * 1024 + 13);
    app.publish("pump-x1", "1.0.0", "fw.bin", content.clone()).await;
    let path = format!("/repo/targets/pump-x1/1.0.0/{}.fw.bin", sha256_hex(&content));
    let root = app.client.get(app.url("/repo/metadata/1.root.json")).send().await.unwrap().bytes().await.unwrap();
    let address = app.base.strip_prefix("http://").unwrap().to_owned();
    let got = tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(address).unwrap();
        stream.set_read_timeout(Some(std::time::Duration::from_secs(60))).unwrap();
        // No `Connection: close` on the last and no HEAD: actix takes both from the last request
        // it has read, for the answer it writes next.
        let requests = [
            format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n"),
            format!("GET {path} HTTP/1.1\r\nHost: t\r\nRange: bytes=5000000-5000099\r\n\r\n"),
            format!("GET {path} HTTP/1.1\r\nHost: t\r\nRange: bytes=-7\r\n\r\n"),
            "GET /repo/metadata/1.root.json HTTP/1.1\r\nHost: t\r\n\r\n".to_owned(),
        ];
        stream.write_all(requests.concat().as_bytes()).unwrap();
        let mut raw = Vec::new();
        let mut buf = vec![0; 1 << 20];
        loop {
            if let Some(answers) = split_answers(&raw, 4) {
                // Nothing more may follow: the server keeps the connection open, so a stray byte
                // would already be here or arrive at once.
                std::thread::sleep(std::time::Duration::from_millis(200));
                stream.set_nonblocking(true).unwrap();
                assert!(
                    matches!(stream.read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
                    "bytes after the last answer"
                );
                return answers;
            }
            let n = stream.read(&mut buf).unwrap();
            assert!(n > 0, "the server closed the connection after {} bytes", raw.len());
            raw.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .unwrap();
    assert_eq!(got[0].0, "http/1.1 200 ok");
    assert!(got[0].2 == content, "the whole file, byte for byte");
    assert_eq!(got[1].0, "http/1.1 206 partial content");
    assert!(got[1].2 == content[5_000_000..5_000_100]);
    assert!(got[2].2 == content[content.len() - 7..]);
    assert!(got[3].2 == root, "the metadata after the downloads");
}

#[tokio::test]
async fn metadata_is_served_by_version_with_cache_rules() {
    let app = spawn_app().await;
    let res = app.metadata("1.root.json").await;
    assert_eq!(res.status(), 200);
    assert!(res.headers()[header::CACHE_CONTROL].to_str().unwrap().contains("immutable"));
    let etag = res.headers()[header::ETAG].clone();
    let root: serde_json::Value = res.json().await.unwrap();
    assert_eq!(root["signed"]["_type"], "root");
    assert_eq!(root["signed"]["consistent_snapshot"], true);
    assert_eq!(root["signed"]["roles"]["root"]["threshold"], 2);
    assert_eq!(root["signatures"].as_array().unwrap().len(), 2);
    let expires = root["signed"]["expires"].as_str().unwrap();
    assert!(expires.ends_with('Z') && !expires.contains('.'), "whole seconds: {expires}");
    let res =
        app.client.get(app.url("/repo/metadata/1.root.json")).header(header::IF_NONE_MATCH, etag).send().await.unwrap();
    assert_eq!(res.status(), 304);

    let res = app.metadata("timestamp.json").await;
    assert_eq!(res.status(), 200);
    assert!(res.headers()[header::CACHE_CONTROL].to_str().unwrap().contains("max-age=10"));
    let ts: serde_json::Value = res.json().await.unwrap();
    let snapshot_meta = &ts["signed"]["meta"]["snapshot.json"];
    let version = snapshot_meta["version"].as_u64().unwrap();
    let snapshot = app.metadata(&format!("{version}.snapshot.json")).await.bytes().await.unwrap();
    assert_eq!(snapshot_meta["length"], snapshot.len());
    assert_eq!(snapshot_meta["hashes"]["sha256"], sha256_hex(&snapshot));

    for missing in [
        "2.root.json",
        "0.root.json",
        "01.root.json",
        "+1.root.json",
        "1.timestamp.json",
        "9.targets.json",
        "root.json",
        "1.nope.json",
        "x.root.json",
    ] {
        let res = app.metadata(missing).await;
        assert_eq!(res.status(), 404, "{missing}");
        let body: serde_json::Value = res.json().await.unwrap();
        assert_eq!(body["error"], "not_found");
    }
    let director = app.client.get(app.url("/director/metadata/1.root.json")).send().await.unwrap();
    assert_eq!(director.status(), 200);
    let director: serde_json::Value = director.json().await.unwrap();
    assert_eq!(director["signed"]["roles"]["timestamp"]["keyids"], director["signed"]["roles"]["targets"]["keyids"]);
}

#[tokio::test]
async fn the_director_serves_only_the_canonical_spellings() {
    let app = spawn_app().await;
    app.create_product("pump-x1", &["hw"]).await;
    let token = crate::fleet::enrollment_token(&app, "pump-x1", &[], 1).await;
    let device = crate::fleet::Device::enroll(&app, "pump-s1", "pump-x1", "hw", &token).await;
    let get = |path: String| {
        let req = app.client.get(app.url(&path)).bearer_auth(&device.token);
        async move { req.send().await.unwrap().status().as_u16() }
    };
    for file in ["1.root.json", "1.targets.json", "1.snapshot.json", "timestamp.json"] {
        assert_eq!(get(format!("/director/pump-s1/metadata/{file}")).await, 200, "{file}");
    }
    for file in
        ["01.targets.json", "+1.targets.json", "001.root.json", "01.snapshot.json", "1.timestamp.json", "0.root.json"]
    {
        assert_eq!(get(format!("/director/pump-s1/metadata/{file}")).await, 404, "{file}");
    }
    for file in ["01.root.json", "+1.root.json"] {
        assert_eq!(get(format!("/director/metadata/{file}")).await, 404, "{file}");
    }
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json() {
    let app = spawn_app().await;
    let res = app.client.get(app.url("/nothing/here")).send().await.unwrap();
    assert_eq!(res.status(), 404);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"], "not_found");
    // The answer names the methods the path takes (RFC 9110), the admin console's pages too.
    let trace = reqwest::Method::from_bytes(b"TRACE").unwrap();
    for (method, path, allow) in [
        (reqwest::Method::DELETE, "/repo/metadata/1.root.json", "GET, HEAD"),
        (reqwest::Method::DELETE, "/api/v1/products", "POST, GET"),
        (reqwest::Method::PUT, "/api/v1/products/pump-x1/releases", "POST, GET"),
        (trace.clone(), "/api/v1/rollouts/r-1/pause", "POST"),
        (reqwest::Method::POST, "/healthz", "GET"),
        (trace, "/ui/login", "GET, POST"),
    ] {
        let res = app.client.request(method.clone(), app.url(path)).send().await.unwrap();
        assert_eq!(res.status(), 405, "{method} {path}");
        assert_eq!(res.headers()["allow"], allow, "{method} {path}");
        let body: serde_json::Value = res.json().await.unwrap();
        assert_eq!(body["error"], "method_not_allowed");
    }
}

#[tokio::test]
async fn large_metadata_is_gzipped_for_clients_that_ask_and_decodes_to_the_signed_bytes() {
    use std::io::Read as _;
    let app = spawn_app().await;
    // A client that sees the wire: no decoding of its own.
    let raw = reqwest::Client::builder().no_gzip().build().unwrap();
    let get = |file: &str, accept: Option<&str>, etag: Option<&str>| {
        let mut req = raw.get(app.url(&format!("/repo/metadata/{file}")));
        if let Some(accept) = accept {
            req = req.header(header::ACCEPT_ENCODING, accept);
        }
        if let Some(etag) = etag {
            req = req.header(header::IF_NONE_MATCH, etag);
        }
        req.send()
    };
    let plain = get("1.root.json", None, None).await.unwrap();
    assert_eq!(plain.status(), 200);
    assert!(plain.headers().get(header::CONTENT_ENCODING).is_none());
    assert_eq!(plain.headers()[header::VARY], "accept-encoding");
    let plain_etag = plain.headers()[header::ETAG].to_str().unwrap().to_owned();
    let plain = plain.bytes().await.unwrap();
    assert!(plain.len() >= 1024, "the root is large enough to be gzipped: {} bytes", plain.len());

    for accept in ["gzip", "br, gzip;q=0.5", "*"] {
        let res = get("1.root.json", Some(accept), None).await.unwrap();
        assert_eq!(res.status(), 200, "{accept}");
        assert_eq!(res.headers()[header::CONTENT_ENCODING], "gzip", "{accept}");
        assert_eq!(res.headers()[header::VARY], "accept-encoding");
        let etag = res.headers()[header::ETAG].to_str().unwrap().to_owned();
        assert_ne!(etag, plain_etag, "each encoding has its own ETag");
        let wire = res.bytes().await.unwrap();
        assert!(wire.len() < plain.len(), "{} bytes gzipped, {} plain", wire.len(), plain.len());
        let mut decoded = Vec::new();
        flate2::read::GzDecoder::new(&wire[..]).read_to_end(&mut decoded).unwrap();
        assert_eq!(decoded, plain, "gzip decodes to the exact signed bytes");
        let res = get("1.root.json", Some(accept), Some(&etag)).await.unwrap();
        assert_eq!(res.status(), 304, "{accept}");
    }
    // Refused gzip, and small files, come as they are.
    for (file, accept) in [
        ("1.root.json", "gzip;q=0"),
        ("1.root.json", "gzip;q=0, *"),
        ("1.root.json", "identity"),
        ("timestamp.json", "gzip"),
    ] {
        let res = get(file, Some(accept), None).await.unwrap();
        assert_eq!(res.status(), 200, "{file} {accept}");
        assert!(res.headers().get(header::CONTENT_ENCODING).is_none(), "{file} {accept}");
    }
}

/// Splits `count` raw HTTP/1.1 answers into (status line, Content-Length, body), once all of
/// them are complete; nothing may follow them.
fn split_answers(raw: &[u8], count: usize) -> Option<Vec<(String, usize, Vec<u8>)>> {
    let mut rest = raw;
    let mut answers = Vec::new();
    for _ in 0..count {
        let end = rest.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
        let head = String::from_utf8_lossy(&rest[..end]).to_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no content-length in {head}"));
        let body = rest.get(end..end + length)?;
        answers.push((head.lines().next().unwrap().to_owned(), length, body.to_vec()));
        rest = &rest[end + length..];
    }
    assert!(rest.is_empty(), "{} bytes after the last answer", rest.len());
    Some(answers)
}
