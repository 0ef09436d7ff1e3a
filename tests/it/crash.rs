//! Crash safety (docs/design.md §5): a real `patchgate serve` process killed with SIGKILL while
//! several publishes are uploading or committing restarts on a repository that tough accepts,
//! in which every release is either fully published (listed by the API, signed into the
//! product role, downloadable and verified) or absent, and no acknowledged publish is lost.
//!
//! This test runs the binary rather than the in-process `spawn_app()`: only a separate process
//! can be killed without unwinding, dropping or flushing anything.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::{firmware, sha256_hex, tough_read};
use crate::process::{Deployment, Server};

pub(crate) const PRODUCT: &str = "pump-x1";
/// Publishes fired at once per round.
const PUBLISHES_PER_ROUND: u8 = 6;
/// When each round kills the server, as a fraction of how long an uninterrupted batch takes on
/// this machine and database (measured first: SQLite and PostgreSQL, debug and release builds
/// differ severalfold). From "all still uploading" through "some committing" to "all
/// committed", so kills land in every phase of a publish.
const KILL_AT: [f64; 6] = [0.5, 0.05, 0.8, 0.25, 1.1, 0.65];
/// tough against a server reached at `base`, from `root` with a datastore in `datastore`.
pub(crate) async fn tough_at(
    base: &str,
    root: &[u8],
    datastore: &Path,
) -> Result<tough::Repository, tough::error::Error> {
    let metadata = url::Url::parse(&format!("{base}/repo/metadata/")).unwrap();
    let targets = url::Url::parse(&format!("{base}/repo/targets/")).unwrap();
    tough::RepositoryLoader::new(&root.to_vec(), metadata, targets).datastore(datastore).load().await
}

fn count_files(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, Iterator::count)
}

pub(crate) fn target_name(version: &str) -> String {
    format!("{PRODUCT}/{version}/fw.bin")
}

/// What one publish got back: an HTTP status, or the transport error (the server died).
#[derive(Debug)]
pub(crate) enum Answer {
    Status(u16, String),
    Failed(String),
}

pub(crate) async fn publish(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    version: &str,
    content: Vec<u8>,
) -> Answer {
    let part = reqwest::multipart::Part::bytes(content).file_name("fw.bin");
    let form = reqwest::multipart::Form::new().text("version", version.to_owned()).part("file", part);
    let sent = client
        .post(format!("{base}/api/v1/products/{PRODUCT}/releases"))
        .bearer_auth(token)
        .multipart(form)
        .send()
        .await;
    match sent {
        Ok(res) => {
            let status = res.status().as_u16();
            Answer::Status(status, res.text().await.unwrap_or_default())
        }
        Err(e) => Answer::Failed(format!("{e:?}")),
    }
}

/// Releases the product role keeps however old they are: more than these tests ever publish
/// (seven batches of [`PUBLISHES_PER_ROUND`]), so that every published release stays signed and
/// the API's list and the role can be compared one to one. With the default of 20, a run in
/// which more than 20 publishes survived the kills saw its oldest release leave the role (as
/// retention intends, tests/it/retention.rs) and failed the comparison.
const RETAIN_NEWEST: u32 = 1000;

/// Creates [`PRODUCT`] (server-signed, keeping [`RETAIN_NEWEST`] releases in its role) on
/// `server`; asserts 201.
pub(crate) async fn create_product(client: &reqwest::Client, server: &Server, token: &str) {
    let res = client
        .post(server.url("/api/v1/products"))
        .bearer_auth(token)
        .json(&serde_json::json!({"name": PRODUCT, "hardware_ids": ["hw"], "retain_newest": RETAIN_NEWEST}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
}

/// Checks (a)–(c) on a freshly restarted server and returns the versions it serves.
pub(crate) async fn present_versions(
    server: &Server,
    client: &reqwest::Client,
    token: &str,
    root: &[u8],
    sent: &BTreeMap<String, Vec<u8>>,
    device_store: &Path,
) -> BTreeSet<String> {
    // (a) tough, as a device provisioned with root v1, accepts the repository.
    let store = tempfile::tempdir().unwrap();
    let repo = tough_at(&server.base, root, store.path()).await.expect("tough loads the repository after the crash");
    // A device that kept its metadata from before the crash accepts it too: no version it has
    // seen was rolled back (tough refuses a timestamp or snapshot older than the cached one).
    tough_at(&server.base, root, device_store)
        .await
        .expect("a device that cached metadata before the crash accepts the repository after it");
    let role = repo.delegated_role(PRODUCT).expect("the product role is delegated");
    let signed = &role.targets.as_ref().expect("tough loaded the product role").signed.targets;
    // (b) every signed target downloads, verifies, and holds exactly what was sent.
    let mut in_role = BTreeSet::new();
    for (name, target) in signed {
        let version = target.custom["version"].as_str().unwrap().to_owned();
        assert_eq!(name.raw(), target_name(&version));
        let bytes = tough_read(&repo, name.raw()).await.unwrap_or_else(|e| panic!("{}: {e}", name.raw()));
        let expected =
            sent.get(&version).unwrap_or_else(|| panic!("the role lists {version}, which was never published"));
        assert!(&bytes == expected, "{} downloads other bytes than were published", name.raw());
        in_role.insert(version);
    }
    // (c) the API lists exactly the signed releases, with the same content.
    let res = client
        .get(server.url(&format!("/api/v1/products/{PRODUCT}/releases")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let listed: Vec<serde_json::Value> = res.json().await.unwrap();
    let mut in_api = BTreeSet::new();
    for release in &listed {
        let version = release["version"].as_str().unwrap().to_owned();
        let expected =
            sent.get(&version).unwrap_or_else(|| panic!("the API lists {version}, which was never published"));
        assert_eq!(release["target"]["hashes"]["sha256"], sha256_hex(expected), "{version}");
        in_api.insert(version);
    }
    assert_eq!(in_api, in_role, "the API's releases and the signed product role disagree");
    in_role
}

/// Versions `1.{round}.0..` with contents of 200 KiB to about 2 MiB: the small ones commit
/// first, the large ones are still uploading. Generated before the clock starts: generating
/// them is slow in a debug build and must not stagger the publishes or delay the kill.
fn batch(round: u8) -> Vec<(String, Vec<u8>)> {
    (0..PUBLISHES_PER_ROUND)
        .map(|i| {
            let content = firmware(round * PUBLISHES_PER_ROUND + i + 1, 200 * 1024 + usize::from(i) * 370 * 1024);
            (format!("1.{round}.{i}"), content)
        })
        .collect()
}

/// Starts every publish of `batch` at once; each task yields its answer and when it came.
fn fire(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    batch: Vec<(String, Vec<u8>)>,
) -> Vec<tokio::task::JoinHandle<(String, Answer, Instant)>> {
    batch
        .into_iter()
        .map(|(version, content)| {
            let (client, base, token) = (client.clone(), base.to_owned(), token.to_owned());
            tokio::spawn(async move {
                let answer = publish(&client, &base, &token, &version, content).await;
                (version, answer, Instant::now())
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_kill_9_during_publishes_leaves_a_valid_repository() {
    let deployment = Deployment::new().await;
    let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    let mut server = deployment.start("initial").await;
    let token = deployment.admin_token();
    create_product(&client, &server, &token).await;
    let root =
        client.get(server.url("/repo/metadata/1.root.json")).send().await.unwrap().bytes().await.unwrap().to_vec();

    let mut sent: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    // Calibration: one batch without a kill, which must publish completely.
    let calibration = batch(0);
    sent.extend(calibration.iter().cloned());
    let fired_at = Instant::now();
    let mut uninterrupted = Duration::ZERO;
    let mut finished = Vec::new();
    for task in fire(&client, &server.base, &token, calibration) {
        let (version, answer, at) = task.await.unwrap();
        assert!(matches!(answer, Answer::Status(201, _)), "{version}: {answer:?}");
        uninterrupted = uninterrupted.max(at - fired_at);
        finished.push(format!("{version} {:.1?}", at - fired_at));
    }
    eprintln!(
        "an uninterrupted batch of {PUBLISHES_PER_ROUND} publishes took {uninterrupted:.1?} ({})",
        finished.join(", ")
    );
    let device = tempfile::tempdir().unwrap();
    let mut present = present_versions(&server, &client, &token, &root, &sent, device.path()).await;

    let mut lost: Vec<String> = Vec::new();
    let mut unacknowledged_in_all: Vec<String> = Vec::new();
    for (round, fraction) in (1..).zip(KILL_AT) {
        let batch = batch(round);
        sent.extend(batch.iter().cloned());
        let kill_after = uninterrupted.mul_f64(fraction);
        let fired_at = Instant::now();
        let tasks = fire(&client, &server.base, &token, batch);
        tokio::time::sleep(kill_after).await;
        let killed_at = Instant::now();
        server.kill_9();
        let kill_offset = killed_at - fired_at;
        let mut created = BTreeSet::new();
        let mut created_before_kill = 0;
        let mut cut_off = Vec::new();
        let mut other = Vec::new();
        for task in tasks {
            let (version, answer, at) = task.await.unwrap();
            match answer {
                Answer::Status(201, _) => {
                    created_before_kill += usize::from(at <= killed_at);
                    created.insert(version);
                }
                Answer::Failed(error) => cut_off.push((version, error)),
                Answer::Status(status, body) => other.push(format!("{version}: {status} {body}")),
            }
        }
        assert!(other.is_empty(), "round {round}: publishes answered neither 201 nor a broken connection: {other:?}");

        server = deployment.start(&format!("round-{round}")).await;
        let now_present = present_versions(&server, &client, &token, &root, &sent, device.path()).await;
        // (d) an acknowledged publish survives the crash; earlier releases never vanish.
        let missing: Vec<_> = created.difference(&now_present).collect();
        assert!(missing.is_empty(), "round {round}: publishes answered 201 are gone after the restart: {missing:?}");
        let vanished: Vec<_> = present.difference(&now_present).collect();
        assert!(vanished.is_empty(), "round {round}: releases of earlier rounds vanished: {vanished:?}");
        let this_round: Vec<_> = now_present.difference(&present).cloned().collect();
        let unacknowledged: Vec<_> = cut_off.iter().map(|(v, _)| v).filter(|v| now_present.contains(*v)).collect();
        eprintln!(
            "round {round}: kill after {kill_offset:.1?} ({fraction} of the uninterrupted time); \
             {created_before_kill} publishes answered 201 before the kill ({} in all), {} cut off; \
             {} of {PUBLISHES_PER_ROUND} versions present after the restart {this_round:?} \
             (cut off yet committed: {unacknowledged:?}); {} releases in all; {} files left in objects/staging",
            created.len(),
            cut_off.len(),
            this_round.len(),
            now_present.len(),
            count_files(&deployment.dir.path().join("data/objects/staging")),
        );
        if let Some((version, error)) = cut_off.first() {
            eprintln!("  e.g. {version}: {error}");
        }
        unacknowledged_in_all.extend(unacknowledged.into_iter().cloned());
        lost.extend((0..PUBLISHES_PER_ROUND).map(|i| format!("1.{round}.{i}")).filter(|v| !now_present.contains(v)));
        present = now_present;
    }

    // A publish the crash cut off can simply be retried: the orphaned upload is no obstacle.
    if let Some(version) = lost.first() {
        let answer = publish(&client, &server.base, &token, version, sent[version].clone()).await;
        assert!(matches!(answer, Answer::Status(201, _)), "retrying {version} after the crash: {answer:?}");
        let store = tempfile::tempdir().unwrap();
        let repo = tough_at(&server.base, &root, store.path()).await.unwrap();
        assert_eq!(tough_read(&repo, &target_name(version)).await.unwrap(), sent[version]);
    }
    // A publish committed just before the crash, whose answer was lost, can be retried too:
    // the same content is acknowledged as already published.
    if let Some(version) = unacknowledged_in_all.first() {
        let answer = publish(&client, &server.base, &token, version, sent[version].clone()).await;
        assert!(matches!(answer, Answer::Status(200, _)), "retrying {version} after the crash: {answer:?}");
    }
    eprintln!("retried: cut off {:?}, committed but unacknowledged {:?}", lost.first(), unacknowledged_in_all.first());
    server.kill_9();
}

/// A signed, unchanged report of device `id`.
pub(crate) fn report_body(id: &str, key: &ed25519_dalek::SigningKey, counter: u64) -> serde_json::Value {
    let report = patchgate_protocol::report::DeviceReport::new(id, counter, crate::fleet::DEVICE_TIME, None, None, 0);
    serde_json::to_value(patchgate_protocol::envelope::sign(report, key).unwrap()).unwrap()
}

/// Enrolls device `id` of [`PRODUCT`] (hardware `hw`) at `base` with a fresh key; its key and
/// device token.
pub(crate) async fn enroll(
    client: &reqwest::Client,
    base: &str,
    enrollment: &str,
    id: &str,
) -> (ed25519_dalek::SigningKey, String) {
    let key = ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng);
    let request = patchgate_protocol::report::EnrollRequest::new(
        id,
        PRODUCT,
        "hw",
        &key.verifying_key(),
        enrollment,
        crate::fleet::next_time(),
    );
    let envelope = patchgate_protocol::envelope::sign(request, &key).unwrap();
    let res = client.post(format!("{base}/api/v1/devices/enroll")).json(&envelope).send().await.unwrap();
    assert_eq!(res.status(), 201);
    let token = res.json::<serde_json::Value>().await.unwrap()["device_token"].as_str().unwrap().to_owned();
    (key, token)
}

/// Posts a report; the status and body, or `None` when the connection broke (the kill).
pub(crate) async fn post_report(
    client: &reqwest::Client,
    base: &str,
    id: &str,
    token: &str,
    body: &serde_json::Value,
) -> Option<(u16, serde_json::Value)> {
    let res = client.post(format!("{base}/api/v1/devices/{id}/report")).bearer_auth(token).json(body).send().await;
    let res = res.ok()?;
    let status = res.status().as_u16();
    Some((status, res.json().await.ok()?))
}

/// Group commit keeps its promise (docs/design.md §5): devices polling as fast as they can while the
/// server is killed with SIGKILL lose no report that was answered 200 — after the restart each
/// device's stored counter is at least the last one answered, and that counter is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_kill_9_loses_no_answered_report() {
    const DEVICES: usize = 16;
    let deployment = Deployment::new().await;
    let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    let server = deployment.start("reports").await;
    let admin = deployment.admin_token();
    let post =
        |path: &str, body: serde_json::Value| client.post(server.url(path)).bearer_auth(&admin).json(&body).send();
    let res = post("/api/v1/products", serde_json::json!({"name": PRODUCT, "hardware_ids": ["hw"]})).await.unwrap();
    assert_eq!(res.status(), 201);
    let res = post("/api/v1/enrollment-tokens", serde_json::json!({"product": PRODUCT, "tags": [], "max_uses": 100}))
        .await
        .unwrap();
    let enrollment = res.json::<serde_json::Value>().await.unwrap()["token"].as_str().unwrap().to_owned();
    let mut devices = Vec::new();
    for i in 0..DEVICES {
        let id = format!("pump-{i:02}");
        let (key, token) = enroll(&client, &server.base, &enrollment, &id).await;
        devices.push((id, key, token));
    }
    // Every device polls back to back until its connection breaks; it remembers the last
    // counter answered 200.
    let base = server.base.clone();
    let pollers: Vec<_> = devices
        .iter()
        .cloned()
        .map(|(id, key, token)| {
            let (client, base) = (client.clone(), base.clone());
            tokio::spawn(async move {
                let mut answered = 0u64;
                for counter in 1.. {
                    match post_report(&client, &base, &id, &token, &report_body(&id, &key, counter)).await {
                        Some((200, _)) => answered = counter,
                        Some((status, body)) => panic!("{id}: report {counter} answered {status} {body}"),
                        None => break,
                    }
                }
                answered
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.kill_9();
    let mut answered = Vec::new();
    for poller in pollers {
        answered.push(poller.await.unwrap());
    }
    let server = deployment.start("reports-after").await;
    let total: u64 = answered.iter().sum();
    eprintln!("{total} reports answered 200 before the kill");
    assert!(answered.iter().all(|&n| n >= 2), "every device had reports answered: {answered:?}");
    for ((id, key, token), last) in devices.iter().zip(answered) {
        let (status, body) = post_report(&client, &server.base, id, token, &report_body(id, key, last)).await.unwrap();
        assert_eq!(status, 409, "{id}: its last answered report ({last}) must be on record: {body}");
        let stored = body["last_counter"].as_u64().unwrap();
        assert!(stored >= last, "{id}: answered {last}, stored {stored} after the crash");
        let (status, body) =
            post_report(&client, &server.base, id, token, &report_body(id, key, stored + 1)).await.unwrap();
        assert_eq!(status, 200, "{id}: {body}");
    }
    server.kill_9();
}
