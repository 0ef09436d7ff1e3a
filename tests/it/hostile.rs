//! A hostile mirror for refusal tests: an HTTP server on a loopback port that relays every
//! request to an upstream patchgate server, unless a rule the test set says to serve other
//! bytes (a replaced file, or the upstream body transformed by a function). Tests point an
//! agent or a tough client at `Mirror::base` and play the attacker between it and the server.
//!
//! Test code only, and it uses nothing of the server crate: what it relays to is just HTTP.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderName};
use actix_web::{App, HttpRequest, HttpResponse, HttpResponseBuilder, HttpServer, web};

use crate::fleet::agent_transport;

/// A transform: (request path, full upstream body) → the body to serve instead.
pub type TransformFn = dyn Fn(&str, Vec<u8>) -> Vec<u8> + Send + Sync;

/// Request headers relayed upstream; others (Host, Accept-Encoding…) are the relay's own.
const FORWARDED_REQUEST: [&str; 4] = ["authorization", "range", "content-type", "if-none-match"];
/// Response headers relayed back. `Content-Length` is set from the body actually served.
const FORWARDED_RESPONSE: [&str; 5] = ["content-type", "content-range", "etag", "accept-ranges", "cache-control"];
/// Request bodies the mirror accepts (actix's default is 256 KiB).
const MAX_REQUEST_BODY: usize = 64 << 20;

#[derive(Clone)]
enum Rule {
    /// Serve `body` with 200 for exactly this path.
    Replace { path: String, body: bytes::Bytes },
    /// Serve `f(path, upstream body)` with 200 for paths starting with `prefix`.
    Transform { prefix: String, f: Arc<TransformFn> },
    /// Once: announce the whole upstream body, send `after` bytes of it, then break the connection.
    CutOnce { prefix: String, after: usize, used: Arc<std::sync::atomic::AtomicBool> },
}

impl Rule {
    fn matches(&self, path: &str) -> bool {
        match self {
            Rule::Replace { path: p, .. } => p == path,
            Rule::Transform { prefix, .. } => path.starts_with(prefix.as_str()),
            Rule::CutOnce { prefix, used, .. } => {
                path.starts_with(prefix.as_str()) && !used.load(std::sync::atomic::Ordering::SeqCst)
            }
        }
    }
}

#[derive(Default)]
struct State {
    /// In the order added; the last match wins.
    rules: Vec<Rule>,
    /// `METHOD /path` of every request received.
    log: Vec<String>,
}

/// What each worker's handler needs.
struct Relay {
    upstream: String,
    client: reqwest::Client,
    state: Arc<Mutex<State>>,
}

/// A running hostile mirror; stops when dropped.
pub struct Mirror {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    state: Arc<Mutex<State>>,
    handle: actix_web::dev::ServerHandle,
}

impl Mirror {
    /// Starts a mirror relaying to `upstream_base` (`http://host:port`, no trailing slash).
    pub fn start(upstream_base: &str) -> Mirror {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(State::default()));
        let upstream = upstream_base.trim_end_matches('/').to_owned();
        let shared = state.clone();
        let server = HttpServer::new(move || {
            // One client per worker: its connections live on that worker's runtime.
            let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
            let relay = Relay { upstream: upstream.clone(), client, state: shared.clone() };
            App::new()
                .app_data(web::Data::new(relay))
                .app_data(web::PayloadConfig::new(MAX_REQUEST_BODY))
                .default_service(web::to(relay_request))
        })
        .workers(1)
        .disable_signals()
        .shutdown_timeout(1)
        .listen(listener)
        .unwrap()
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        Mirror { base: format!("http://127.0.0.1:{port}"), state, handle }
    }

    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Serves `body` with 200 for exactly `path` (no query), whatever the method (HEAD: the
    /// headers only) and ignoring Range.
    pub fn replace(&self, path: &str, body: impl Into<Vec<u8>>) {
        let rule = Rule::Replace { path: path.to_owned(), body: bytes::Bytes::from(body.into()) };
        self.state.lock().unwrap().rules.push(rule);
    }

    /// For paths starting with `path_prefix`: fetches the whole upstream body (without Range)
    /// and, when upstream answers 2xx, serves `f(path, body)` with 200. Other upstream answers
    /// (404 for a root that does not exist yet…) pass through unchanged.
    pub fn transform(&self, path_prefix: &str, f: impl Fn(&str, Vec<u8>) -> Vec<u8> + Send + Sync + 'static) {
        let rule = Rule::Transform { prefix: path_prefix.to_owned(), f: Arc::new(f) };
        self.state.lock().unwrap().rules.push(rule);
    }

    /// The next request for a path starting with `path_prefix` gets the whole upstream body
    /// announced (200, its Content-Length) but only `after` bytes of it before the connection
    /// breaks; later requests pass through (with their Range header).
    pub fn cut_once(&self, path_prefix: &str, after: usize) {
        let rule = Rule::CutOnce { prefix: path_prefix.to_owned(), after, used: Arc::default() };
        self.state.lock().unwrap().rules.push(rule);
    }

    /// Removes every rule: an honest mirror again.
    pub fn clear(&self) {
        self.state.lock().unwrap().rules.clear();
    }

    /// `METHOD /path` of every request so far, oldest first (` range=bytes=N-` appended when the
    /// request had a Range header).
    pub fn requests(&self) -> Vec<String> {
        self.state.lock().unwrap().log.clone()
    }

    /// A tough client of the image repository through this mirror, trusting `root`.
    pub async fn tough_image(&self, root: &[u8], datastore: &Path) -> Result<tough::Repository, tough::error::Error> {
        let metadata = url::Url::parse(&self.url("/repo/metadata/")).unwrap();
        let targets = url::Url::parse(&self.url("/repo/targets/")).unwrap();
        // tough's own `HttpTransport` costs ~0.1 s per file here (a new HTTP client each time);
        // one shared client keeps refusal tests fast and fetches the same URLs.
        tough::RepositoryLoader::new(&root.to_vec(), metadata, targets)
            .transport(agent_transport(&self.base, reqwest::Client::new(), None))
            .datastore(datastore)
            .load()
            .await
    }

    /// A tough client of `device_id`'s director repository through this mirror, trusting the
    /// director `root` and sending `token`.
    pub async fn tough_director(
        &self,
        root: &[u8],
        device_id: &str,
        token: &str,
        datastore: &Path,
    ) -> Result<tough::Repository, tough::error::Error> {
        let metadata = url::Url::parse(&self.url(&format!("/director/{device_id}/metadata/"))).unwrap();
        let targets = url::Url::parse(&self.url("/repo/targets/")).unwrap();
        let transport = agent_transport(&self.base, reqwest::Client::new(), Some(token));
        tough::RepositoryLoader::new(&root.to_vec(), metadata, targets)
            .transport(transport)
            .datastore(datastore)
            .load()
            .await
    }
}

impl Drop for Mirror {
    fn drop(&mut self) {
        // `stop` sends the command at once; its future only waits for completion.
        drop(self.handle.stop(false));
    }
}

async fn relay_request(req: HttpRequest, body: web::Bytes, relay: web::Data<Relay>) -> HttpResponse {
    let path = req.path().to_owned();
    let rule = {
        let mut state = relay.state.lock().unwrap();
        let range = req.headers().get("range").and_then(|v| v.to_str().ok()).map(|r| format!(" range={r}"));
        state.log.push(format!("{} {path}{}", req.method(), range.unwrap_or_default()));
        let rule = state.rules.iter().rev().find(|r| r.matches(&path)).cloned();
        if let Some(Rule::CutOnce { used, .. }) = &rule {
            used.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        rule
    };
    let head = req.method() == actix_web::http::Method::HEAD;
    match rule {
        Some(Rule::Replace { body: replaced, .. }) => {
            let mut res = HttpResponse::Ok();
            res.insert_header((header::CONTENT_TYPE, content_type_for(&path)));
            respond(res, replaced, head)
        }
        Some(Rule::Transform { f, .. }) => match fetch(&relay, &req, reqwest::Method::GET, None, false).await {
            Ok(up) if up.status.is_success() => {
                let mut res = HttpResponse::Ok();
                if let Some(ct) = up.header("content-type") {
                    res.insert_header((header::CONTENT_TYPE, ct));
                }
                respond(res, bytes::Bytes::from(f(&path, up.body.to_vec())), head)
            }
            Ok(up) => up.into_response(head),
            Err(e) => bad_gateway(&e),
        },
        Some(Rule::CutOnce { after, .. }) => match fetch(&relay, &req, reqwest::Method::GET, None, false).await {
            Ok(up) if up.status.is_success() => {
                let full = up.body.len() as u64;
                let head = up.body.slice(..after.min(up.body.len()));
                let chunks: Vec<Result<bytes::Bytes, std::io::Error>> =
                    vec![Ok(head), Err(std::io::Error::other("the hostile mirror cut the connection"))];
                HttpResponse::Ok().no_chunking(full).streaming(futures_util::stream::iter(chunks))
            }
            Ok(up) => up.into_response(head),
            Err(e) => bad_gateway(&e),
        },
        None => {
            let Ok(method) = reqwest::Method::from_bytes(req.method().as_str().as_bytes()) else {
                return bad_gateway("method not relayable");
            };
            match fetch(&relay, &req, method, Some(body), true).await {
                Ok(up) => up.into_response(head),
                Err(e) => bad_gateway(&e),
            }
        }
    }
}

/// An upstream answer, read whole.
struct Upstream {
    status: StatusCode,
    headers: Vec<(String, String)>,
    body: bytes::Bytes,
}

impl Upstream {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    fn into_response(self, head: bool) -> HttpResponse {
        let mut res = HttpResponse::build(self.status);
        for (name, value) in &self.headers {
            if name == "content-length" {
                continue;
            }
            if let Ok(name) = HeaderName::from_bytes(name.as_bytes()) {
                res.insert_header((name, value.as_str()));
            }
        }
        if head {
            // Upstream sent no body: relay the length it announced.
            let length = self.header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
            return res
                .no_chunking(length)
                .streaming(futures_util::stream::empty::<Result<bytes::Bytes, std::io::Error>>());
        }
        res.body(self.body)
    }
}

/// Sends `req` upstream with `method`; `with_range` relays the Range header.
async fn fetch(
    relay: &Relay,
    req: &HttpRequest,
    method: reqwest::Method,
    body: Option<web::Bytes>,
    with_range: bool,
) -> Result<Upstream, String> {
    let path_and_query = req.uri().path_and_query().map_or_else(|| req.path().to_owned(), |pq| pq.as_str().to_owned());
    let mut out = relay.client.request(method, format!("{}{path_and_query}", relay.upstream));
    for name in FORWARDED_REQUEST {
        if name == "range" && !with_range {
            continue;
        }
        if let Some(value) = req.headers().get(name) {
            out = out.header(name, value.as_bytes());
        }
    }
    if let Some(body) = body {
        out = out.body(body.to_vec());
    }
    let res = out.send().await.map_err(|e| format!("upstream request failed: {e}"))?;
    let status = StatusCode::from_u16(res.status().as_u16()).map_err(|e| e.to_string())?;
    let mut headers: Vec<(String, String)> = FORWARDED_RESPONSE
        .iter()
        .filter_map(|name| {
            res.headers().get(*name).and_then(|v| v.to_str().ok()).map(|v| ((*name).to_owned(), v.to_owned()))
        })
        .collect();
    if let Some(length) = res.headers().get("content-length").and_then(|v| v.to_str().ok()) {
        headers.push(("content-length".to_owned(), length.to_owned()));
    }
    // Kept for HEAD only (see `into_response`); actix sets it from the body otherwise.
    let body = res.bytes().await.map_err(|e| format!("upstream body failed: {e}"))?;
    Ok(Upstream { status, headers, body })
}

/// `res` with `body`, or for HEAD only the headers with the body's length.
fn respond(mut res: HttpResponseBuilder, body: bytes::Bytes, head: bool) -> HttpResponse {
    if head {
        return res
            .no_chunking(body.len() as u64)
            .streaming(futures_util::stream::empty::<Result<bytes::Bytes, std::io::Error>>());
    }
    res.body(body)
}

fn content_type_for(path: &str) -> &'static str {
    if path.ends_with(".json") { "application/json" } else { "application/octet-stream" }
}

fn bad_gateway(message: &str) -> HttpResponse {
    HttpResponse::BadGateway().json(serde_json::json!({"error": "bad_gateway", "message": message}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::{firmware, sha256_hex, spawn_app, tough_read};

    const TARGET: &str = "pump-x1/1.0.0/fw.bin";

    #[tokio::test]
    async fn tough_loads_through_the_mirror_and_a_flipped_byte_in_a_target_fails_verification() {
        let app = spawn_app().await;
        app.create_product("pump-x1", &["hw"]).await;
        let content = firmware(9, 20_000);
        app.publish("pump-x1", "1.0.0", "fw.bin", content.clone()).await;
        let root = app.root_v1().await;
        let mirror = Mirror::start(&app.base);

        let store = tempfile::tempdir().unwrap();
        let repo = mirror.tough_image(&root, store.path()).await.unwrap();
        assert_eq!(tough_read(&repo, TARGET).await.unwrap(), content);
        let log = mirror.requests();
        assert!(log.contains(&"GET /repo/metadata/timestamp.json".to_owned()), "{log:?}");
        assert!(log.iter().any(|r| r.starts_with("GET /repo/targets/")), "{log:?}");

        mirror.transform("/repo/targets/", |_, mut body| {
            body[1234] ^= 0x01;
            body
        });
        let err = tough_read(&repo, TARGET).await.unwrap_err();
        assert!(err.to_lowercase().contains("hash"), "{err}");
        mirror.clear();
        assert_eq!(tough_read(&repo, TARGET).await.unwrap(), content, "honest again");
    }

    #[tokio::test]
    async fn the_mirror_relays_range_and_headers_and_rules_apply_latest_first() {
        let app = spawn_app().await;
        app.create_product("pump-x1", &["hw"]).await;
        let content = firmware(8, 5000);
        app.publish("pump-x1", "1.0.0", "fw.bin", content.clone()).await;
        let mirror = Mirror::start(&app.base);
        let client = reqwest::Client::new();
        let path = format!("/repo/targets/pump-x1/1.0.0/{}.fw.bin", sha256_hex(&content));

        // Honest: a Range request relayed as is, with its headers.
        let res = client.get(mirror.url(&path)).header("Range", "bytes=10-19").send().await.unwrap();
        assert_eq!(res.status(), 206);
        assert_eq!(res.headers()["content-range"], "bytes 10-19/5000");
        assert_eq!(res.headers()["etag"], format!("\"{}\"", sha256_hex(&content)));
        assert_eq!(res.headers()["accept-ranges"], "bytes");
        assert_eq!(res.bytes().await.unwrap(), content[10..20]);
        let res = client.head(mirror.url(&path)).send().await.unwrap();
        assert_eq!(res.headers()["content-length"], "5000");
        // Method, JSON body, Content-Type and Authorization reach upstream; so does the query.
        let res = client
            .post(mirror.url("/api/v1/products"))
            .bearer_auth(&app.admin)
            .json(&serde_json::json!({"name": "pump-x2", "hardware_ids": ["hw"]}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
        let res = client.get(mirror.url("/api/v1/audit?limit=1")).bearer_auth(&app.admin).send().await.unwrap();
        assert_eq!(res.json::<Vec<serde_json::Value>>().await.unwrap().len(), 1);
        let res = client.get(mirror.url("/api/v1/audit")).send().await.unwrap();
        assert_eq!(res.status(), 401, "no token, relayed as is");
        assert_eq!(res.json::<serde_json::Value>().await.unwrap()["error"], "unauthenticated");

        // Transform: the whole body, Range dropped, 200 with the new length.
        mirror.transform("/repo/targets/", |_, mut body| {
            body.extend(std::iter::repeat_n(0u8, 1000));
            body
        });
        let res = client.get(mirror.url(&path)).header("Range", "bytes=10-19").send().await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["content-length"], "6000");
        assert_eq!(res.bytes().await.unwrap()[..5000], content[..]);
        // A later replace wins over the transform, for that exact path only, HEAD included.
        mirror.replace(&path, b"evil".to_vec());
        let res = client.get(mirror.url(&format!("{path}?x=1"))).header("Range", "bytes=0-0").send().await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.bytes().await.unwrap(), &b"evil"[..]);
        let res = client.head(mirror.url(&path)).send().await.unwrap();
        assert_eq!((res.status().as_u16(), res.headers()["content-length"].to_str().unwrap()), (200, "4"));
        assert!(res.bytes().await.unwrap().is_empty());
        // Other paths are not replaced; a transform passes upstream errors through.
        let res = client.get(mirror.url("/repo/targets/nothing-here")).send().await.unwrap();
        assert_eq!(res.status(), 404);
        let log = mirror.requests();
        assert_eq!(log.first().unwrap(), &format!("GET {path} range=bytes=10-19"));
        assert!(log.contains(&format!("HEAD {path}")), "{log:?}");
    }

    #[tokio::test]
    async fn an_unreachable_upstream_is_a_502_with_a_json_body() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let mirror = Mirror::start(&format!("http://127.0.0.1:{port}"));
        let res = reqwest::Client::new().get(mirror.url("/repo/metadata/timestamp.json")).send().await.unwrap();
        assert_eq!(res.status(), 502);
        let body: serde_json::Value = res.json().await.unwrap();
        assert_eq!(body["error"], "bad_gateway");
    }
}
