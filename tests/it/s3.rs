//! The blob store on a real S3 API: moto's server (`tests/python/s3_server.py`, in the venv
//! `scripts/ensure-venv.sh moto` makes on first use), one per test on a free loopback port, with
//! signatures and permissions checked as AWS, MinIO or Ceph check them. The store's own
//! operations, a publish → download → Range → resume round trip through the server, the
//! start-up check that refuses a missing bucket or wrong credentials, and a server process
//! killed and restarted on the same bucket.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use futures_util::TryStreamExt;
use patchgate::storage::{BlobStore, blob_key};
use reqwest::header;

use crate::common::{firmware, sha256_hex, spawn_app_with, test_config, tough_read};
use crate::crash::{Answer, create_product, present_versions, publish};
use crate::process::Deployment;

/// S3's smallest part but the last: a blob above it is uploaded in several parts.
const PART: usize = 5 * 1024 * 1024;

/// A running S3 server with one bucket and one access key; dropping it stops the server.
pub(crate) struct S3 {
    child: Child,
    stdin: Option<ChildStdin>,
    endpoint: String,
    region: String,
    bucket: String,
    access_key_id: String,
    secret_access_key: String,
}

impl S3 {
    /// Starts a server (and makes its venv if needed).
    pub(crate) fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts a server that checks no signature: moto answers a presigned URL with 500 once
    /// checks are on (it looks for signatures in the Authorization header only).
    fn start_without_checks() -> Self {
        Self::start_with(&["--no-auth"])
    }

    fn start_with(args: &[&str]) -> Self {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let venv = Command::new("bash").arg(root.join("scripts/ensure-venv.sh")).arg("moto").output().unwrap();
        assert!(venv.status.success(), "scripts/ensure-venv.sh moto:\n{}", String::from_utf8_lossy(&venv.stderr));
        let mut child = Command::new(root.join("target/moto-venv/bin/python"))
            .arg(root.join("tests/python/s3_server.py"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting tests/python/s3_server.py");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let info: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("s3_server.py printed {line:?}: {e}"));
        let field = |name: &str| info[name].as_str().unwrap().to_owned();
        Self {
            stdin: child.stdin.take(),
            child,
            endpoint: field("endpoint"),
            region: field("region"),
            bucket: field("bucket"),
            access_key_id: field("access_key_id"),
            secret_access_key: field("secret_access_key"),
        }
    }

    /// The `store_url` of its bucket.
    pub(crate) fn url(&self) -> String {
        format!("s3://{}", self.bucket)
    }

    /// `store_options` that reach it with `secret` as the secret access key.
    fn options_with_secret(&self, secret: &str) -> BTreeMap<String, String> {
        [
            ("aws_endpoint", self.endpoint.as_str()),
            ("aws_region", &self.region),
            ("aws_allow_http", "true"),
            ("aws_access_key_id", &self.access_key_id),
            ("aws_secret_access_key", secret),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    /// `store_options` that reach it.
    pub(crate) fn options(&self) -> BTreeMap<String, String> {
        self.options_with_secret(&self.secret_access_key)
    }

    /// The same settings as the `AWS_*` variables a server process reads.
    pub(crate) fn aws_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT", self.endpoint.clone()),
            ("AWS_REGION", self.region.clone()),
            ("AWS_ALLOW_HTTP", "true".to_owned()),
            ("AWS_ACCESS_KEY_ID", self.access_key_id.clone()),
            ("AWS_SECRET_ACCESS_KEY", self.secret_access_key.clone()),
        ]
    }

    /// Every object key in the bucket, read straight from S3 (not through patchgate).
    pub(crate) async fn keys(&self) -> BTreeSet<String> {
        let url = url::Url::parse(&self.url()).unwrap();
        let (store, _) = object_store::parse_url_opts(&url, self.options()).unwrap();
        let listed: Vec<object_store::ObjectMeta> = store.list(None).try_collect().await.unwrap();
        listed.into_iter().map(|m| m.location.to_string()).collect()
    }
}

impl Drop for S3 {
    fn drop(&mut self) {
        // The server stops when its standard input closes; kill it if that takes long.
        drop(self.stdin.take());
        for _ in 0..50 {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn blobs_on_s3_go_up_in_parts_read_back_by_range_and_leave_no_staging_object() {
    let s3 = S3::start();
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(Some(&s3.url()), &s3.options(), dir.path()).unwrap();
    store.check().await.expect("the bucket is there and the key may use it");

    // Three parts: two of 5 MiB and the rest, written in uneven chunks.
    let content = firmware(7, 2 * PART + 300_000);
    let sha256 = sha256_hex(&content);
    let mut upload = store.begin_upload().await.unwrap();
    for chunk in content.chunks(700_001) {
        upload.write(chunk).await.unwrap();
    }
    upload.finish(&sha256).await.unwrap();
    assert_eq!(s3.keys().await, BTreeSet::from([blob_key(&sha256)]), "only the blob, at its content address");
    assert_eq!(store.blob_size(&sha256).await.unwrap(), Some(content.len() as u64));
    assert!(store.blob_written_at(&sha256).await.unwrap().is_some());
    assert_eq!(
        store.list_blobs().await.unwrap().into_iter().map(|(sha, _)| sha).collect::<Vec<_>>(),
        [sha256.as_str()]
    );

    let len = content.len() as u64;
    let part = PART as u64;
    for range in [0..100, part - 10..part + 10, 2 * part - 1..2 * part + 1, len - 17..len, 0..len] {
        let chunks: Vec<bytes::Bytes> =
            store.read(&sha256, Some(range.clone())).await.unwrap().try_collect().await.unwrap();
        let read: Vec<u8> = chunks.concat();
        let (start, end) = (usize::try_from(range.start).unwrap(), usize::try_from(range.end).unwrap());
        assert!(read == content[start..end], "range {range:?}");
    }

    // An abandoned upload leaves nothing, not even its parts' object.
    let mut abandoned = store.begin_upload().await.unwrap();
    abandoned.write(&firmware(8, PART + 1)).await.unwrap();
    abandoned.abort().await;
    assert_eq!(s3.keys().await, BTreeSet::from([blob_key(&sha256)]));

    store.delete_blob(&sha256).await.unwrap();
    assert_eq!(store.blob_size(&sha256).await.unwrap(), None);
    assert!(s3.keys().await.is_empty());
    // Deleting what is not there is not an error.
    store.delete_blob(&sha256).await.unwrap();
}

#[tokio::test]
async fn a_release_on_s3_downloads_whole_by_range_and_resumed_and_verifies() {
    let s3 = S3::start();
    let app = spawn_app_with(|c| {
        c.store_url = Some(s3.url());
        c.store_options = s3.options();
    })
    .await;
    app.create_product("pump-x1", &["hw"]).await;
    let content = firmware(3, 2 * PART + 12_345);
    let body = app.publish("pump-x1", "1.0.0", "fw.bin", content.clone()).await;
    let sha256 = sha256_hex(&content);
    assert_eq!(body["target"]["hashes"]["sha256"], sha256.as_str());
    assert_eq!(s3.keys().await, BTreeSet::from([blob_key(&sha256)]), "the server stored the file in the bucket");

    // A TUF client verifies it against the signed metadata.
    let root = app.root_v1().await;
    let datastore = tempfile::tempdir().unwrap();
    let repo = app.tough(&root, datastore.path()).await.unwrap();
    assert!(tough_read(&repo, "pump-x1/1.0.0/fw.bin").await.unwrap() == content);

    let url = app.url(&format!("/repo/targets/pump-x1/1.0.0/{sha256}.fw.bin"));
    let head = app.client.head(&url).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()[header::CONTENT_LENGTH], content.len().to_string().as_str());
    // A range across the first part boundary.
    let res =
        app.client.get(&url).header(header::RANGE, format!("bytes={}-{}", PART - 5, PART + 4)).send().await.unwrap();
    assert_eq!(res.status(), 206);
    assert_eq!(
        res.headers()[header::CONTENT_RANGE],
        format!("bytes {}-{}/{}", PART - 5, PART + 4, content.len()).as_str()
    );
    assert!(res.bytes().await.unwrap() == content[PART - 5..PART + 5]);
    // A download cut off after 3 MiB, resumed from there.
    let cut = 3 * 1024 * 1024;
    let first = app.client.get(&url).header(header::RANGE, format!("bytes=0-{}", cut - 1)).send().await.unwrap();
    assert_eq!(first.status(), 206);
    let mut resumed = first.bytes().await.unwrap().to_vec();
    let rest = app.client.get(&url).header(header::RANGE, format!("bytes={cut}-")).send().await.unwrap();
    assert_eq!(rest.status(), 206);
    resumed.extend_from_slice(&rest.bytes().await.unwrap());
    assert!(resumed == content, "the resumed download is the file");
    let res = app.client.get(&url).header(header::RANGE, format!("bytes={}-", content.len())).send().await.unwrap();
    assert_eq!(res.status(), 416);

    // A publish refused after its upload (same version, other bytes) leaves its file behind
    // until the sweep, which removes it and nothing a release refers to.
    let other = firmware(4, 40_000);
    let res = app.publish_as(&app.admin, "pump-x1", "1.0.0", "fw.bin", other.clone()).await;
    assert_eq!(res.status(), 409);
    assert_eq!(s3.keys().await, BTreeSet::from([blob_key(&sha256), blob_key(&sha256_hex(&other))]));
    // The sweep's grace is in whole seconds of the store's clock: let one pass.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(patchgate::jobs::blobs::sweep(&app.services, Duration::ZERO).await.unwrap(), 1);
    assert_eq!(s3.keys().await, BTreeSet::from([blob_key(&sha256)]));
    assert!(app.client.get(&url).send().await.unwrap().bytes().await.unwrap() == content);
}

#[tokio::test]
async fn a_server_refuses_to_start_on_a_missing_bucket_or_credentials_s3_refuses() {
    let s3 = S3::start();
    let dir = tempfile::tempdir().unwrap();
    let build = |store_url: String, options: BTreeMap<String, String>| {
        let dir = dir.path().to_owned();
        async move {
            let mut config = test_config(&dir).await;
            config.store_url = Some(store_url);
            config.store_options = options;
            let clock = std::sync::Arc::new(patchgate::clock::OffsetClock::new(jiff::SignedDuration::ZERO));
            match patchgate::startup::Application::build(config, clock).await {
                Ok(_) => panic!("the server started"),
                Err(e) => format!("{e:#}"),
            }
        }
    };
    let missing = build("s3://no-such-bucket".to_owned(), s3.options()).await;
    assert!(
        missing.contains("s3://no-such-bucket cannot be used") && missing.contains("the bucket does not exist"),
        "{missing}"
    );
    let refused = build(s3.url(), s3.options_with_secret("not-the-secret")).await;
    assert!(refused.contains("access denied: check the credentials"), "{refused}");
    assert!(!refused.contains("not-the-secret"), "the message must not show the secret: {refused}");
}

#[tokio::test]
async fn a_server_process_on_s3_killed_and_restarted_serves_every_release_it_acknowledged() {
    let s3 = S3::start();
    let mut deployment = Deployment::new().await;
    deployment.vars.push(("PATCHGATE_STORE_URL", s3.url()));
    deployment.vars.extend(s3.aws_env());
    let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    let server = deployment.start("s3").await;
    let token = deployment.admin_token();
    create_product(&client, &server, &token).await;
    let root = client.get(server.url("/repo/metadata/1.root.json")).send().await.unwrap().bytes().await.unwrap();
    let mut sent = BTreeMap::new();
    for (n, version) in ["1.0.0", "1.1.0"].into_iter().enumerate() {
        let content = firmware(20 + u8::try_from(n).unwrap(), PART + 1_000 * n);
        let answer = publish(&client, &server.base, &token, version, content.clone()).await;
        assert!(matches!(answer, Answer::Status(201, _)), "{version}: {answer:?}");
        sent.insert(version.to_owned(), content);
    }
    let blobs: BTreeSet<String> = sent.values().map(|c| blob_key(&sha256_hex(c))).collect();
    assert_eq!(s3.keys().await, blobs, "the process stored both files in the bucket");
    server.kill_9();

    let server = deployment.start("s3-restarted").await;
    let device = tempfile::tempdir().unwrap();
    let present = present_versions(&server, &client, &token, &root, &sent, device.path()).await;
    assert_eq!(present, sent.keys().cloned().collect::<BTreeSet<_>>());
    drop(server);

    // The same process with a secret S3 refuses does not start, and says why.
    let mut wrong = deployment.command(&["serve"]);
    wrong.env("AWS_SECRET_ACCESS_KEY", "not-the-secret").env("PATCHGATE_LISTEN", "127.0.0.1:0");
    let out = wrong.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("access denied: check the credentials"), "{stderr}");
}

#[tokio::test]
async fn presigned_downloads_redirect_to_the_store_and_the_agent_and_tough_follow_them() {
    use patchgate_agent::download::{Retry, SignedFile, Source, fetch_verified};
    // That the store refuses a tampered or expired URL is S3's part, and moto cannot show it.
    let s3 = S3::start_without_checks();
    let app = spawn_app_with(|c| {
        c.store_url = Some(s3.url());
        c.store_options = s3.options();
        c.presigned_download_seconds = 300;
    })
    .await;
    app.create_product("pump-x1", &["hw"]).await;
    let content = firmware(9, PART + 4_321);
    let body = app.publish("pump-x1", "1.0.0", "fw.bin", content.clone()).await;
    let sha256 = sha256_hex(&content);
    let url = app.url(&format!("/repo/targets/pump-x1/1.0.0/{sha256}.fw.bin"));

    let plain = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let res = plain.get(&url).send().await.unwrap();
    assert_eq!(res.status(), 307);
    assert_eq!(res.headers()[header::CACHE_CONTROL], "no-store");
    let location = res.headers()[header::LOCATION].to_str().unwrap().to_owned();
    assert!(location.starts_with(&format!("{}/{}/{}", s3.endpoint, s3.bucket, blob_key(&sha256))), "{location}");
    assert!(location.contains("X-Amz-Signature="), "{location}");
    // HEAD, 304 and unknown targets are still the server's own answers.
    let head = plain.head(&url).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()[header::CONTENT_LENGTH], content.len().to_string().as_str());
    let res = plain.get(&url).header(header::IF_NONE_MATCH, format!("\"{sha256}\"")).send().await.unwrap();
    assert_eq!(res.status(), 304);
    let res = plain.get(app.url(&format!("/repo/targets/pump-x1/9.9.9/{sha256}.fw.bin"))).send().await.unwrap();
    assert_eq!(res.status(), 404);

    assert!(location.contains("X-Amz-Expires=300"), "valid for presigned_download_seconds: {location}");
    // The URL needs no credentials, and takes a Range.
    let res = plain.get(&location).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.bytes().await.unwrap() == content);
    let res = plain.get(&location).header(header::RANGE, "bytes=10-19").send().await.unwrap();
    assert_eq!(res.status(), 206);
    assert!(res.bytes().await.unwrap() == content[10..20]);

    // The agent follows the redirect and resumes a partial download through it.
    let staging = tempfile::tempdir().unwrap();
    std::fs::write(staging.path().join(format!("{sha256}.part")), &content[..100_000]).unwrap();
    let signed = SignedFile {
        name: "pump-x1/1.0.0/fw.bin".to_owned(),
        length: content.len() as u64,
        sha256: sha256.clone(),
        sha512: body["target"]["hashes"]["sha512"].as_str().map(str::to_owned),
    };
    let client = patchgate_agent::net::http_client(None).unwrap();
    let retry = Retry { retries: 0, backoff: Duration::from_millis(10), backoff_max: Duration::from_millis(10) };
    // With a token the server does not know: the repository is public, so the download is
    // served all the same (counted toward no rollout), and the token never goes to the store.
    let parsed = url::Url::parse(&url).unwrap();
    let from = Source { url: &parsed, token: Some("pgd_not-a-device-token") };
    let path = fetch_verified(&client, from, &signed, staging.path(), retry).await.unwrap();
    assert!(std::fs::read(path).unwrap() == content, "the agent's verified file is the release");

    // tough, a TUF client we did not write, follows it too.
    let root = app.root_v1().await;
    let datastore = tempfile::tempdir().unwrap();
    let repo = app.tough(&root, datastore.path()).await.unwrap();
    assert!(tough_read(&repo, "pump-x1/1.0.0/fw.bin").await.unwrap() == content);
}
