//! Fleet-scale benchmark helper: sets a running server up for `wrk` and measures what `wrk`
//! cannot (not run in CI).
//!
//! Talks to an already running `patchgate serve` ONLY over HTTP, with an admin API token. Two
//! subcommands, driven by `scripts/bench.sh`:
//!
//! - `setup`: creates the server-signed product `pump-x1` (hardware id `hw`), publishes release
//!   1.0.0 (a 64 KiB file) and an enrollment token (tag `bench`, `DEVICES` uses), enrolls
//!   `DEVICES` devices `bench-000000…` with `CONCURRENCY` requests in flight (each with the
//!   ed25519 key whose seed is sha256("bench-device-{i}")), sends every device's first report
//!   (counter 1), then writes two tab-separated data files for the wrk Lua scripts in
//!   `scripts/bench/`:
//!     - `reports.tsv`: `index, report path, device token, director targets version, first
//!       counter, ROUNDS pre-signed report bodies` (counters 2, 3, … ROUNDS + 1);
//!     - `director.tsv`: `index, /director/{id}/metadata/timestamp.json, device token, ETag`
//!       (each device's timestamp is fetched once to learn its ETag).
//! - `first-report`: creates cohort `all` (tag `bench`) and the rollout `r-bench` of 1.0.0 with
//!   one 100 % stage, starts it, then sends every device of `reports.tsv` one signed report
//!   (counter `COUNTER`, far above anything wrk used) with `CONCURRENCY` in flight; every answer
//!   must be 200 with `changed: true` (otherwise the run fails). Beside the rate and the
//!   latencies it prints the CPU spent while they were sent, its own and the whole machine's
//!   (`first_report_client_ticks`, `first_report_machine_busy_ticks`, in clock ticks).
//!
//! Results go to stdout as `key=value` lines (rates per second, latencies in ms); progress to
//! stderr. Run through `scripts/bench.sh`, or by hand against a server:
//!   cargo build --release --example bench_fleet
//!   BENCH_URL=http://127.0.0.1:8080 BENCH_TOKEN=pgt_… BENCH_OUT=/tmp/fleet DEVICES=2000 \
//!     target/release/examples/bench_fleet setup
//!   BENCH_URL=… BENCH_TOKEN=… BENCH_OUT=/tmp/fleet target/release/examples/bench_fleet first-report
//! Environment: BENCH_URL, BENCH_TOKEN (admin), BENCH_OUT (directory for the data files),
//! DEVICES (default 10000), ROUNDS (default 22), CONCURRENCY (default 64), COUNTER (default
//! 1000000, first-report only).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a benchmark fails loudly")]

use std::fmt::Write as _;
use std::io::{BufRead, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use futures_util::StreamExt;
use patchgate_protocol::report::{DeviceReport, EnrollAnswer, EnrollRequest, ReportAnswer};
use serde_json::json;

const PRODUCT: &str = "pump-x1";
const HARDWARE_ID: &str = "hw";
const VERSION: &str = "1.0.0";
const TAG: &str = "bench";
/// Counter of the report each device sends right after enrolling.
const FIRST_COUNTER: u64 = 1;

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v.parse().unwrap_or_else(|_| panic!("{name} must be a whole number, not {v:?}")),
        _ => default,
    }
}

fn env_required(name: &str) -> String {
    std::env::var(name).ok().filter(|v| !v.is_empty()).unwrap_or_else(|| panic!("{name} is required"))
}

fn key_of(i: usize) -> SigningKey {
    use sha2::Digest;
    let seed: [u8; 32] = sha2::Sha256::digest(format!("bench-device-{i}")).into();
    SigningKey::from_bytes(&seed)
}

fn device_id(i: usize) -> String {
    format!("bench-{i:06}")
}

fn report_path(id: &str) -> String {
    format!("/api/v1/devices/{id}/report")
}

fn now_rfc3339() -> String {
    jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// A signed report body: what a device running no known image sends.
fn report_body(i: usize, key: &SigningKey, counter: u64, time: &str, director_version: u64) -> String {
    let report = DeviceReport::new(device_id(i), counter, time, None, None, director_version);
    serde_json::to_string(&patchgate_protocol::envelope::sign(report, key).unwrap()).unwrap()
}

/// The server, the admin token and one HTTP client for every request.
struct Server {
    base: String,
    admin: String,
    client: reqwest::Client,
}

impl Server {
    fn from_env() -> Self {
        let client =
            reqwest::Client::builder().no_proxy().tcp_nodelay(true).timeout(Duration::from_secs(60)).build().unwrap();
        Self {
            base: env_required("BENCH_URL").trim_end_matches('/').to_owned(),
            admin: env_required("BENCH_TOKEN"),
            client,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// POSTs `body` as the admin; the answer must be 2xx.
    async fn admin_post(&self, path: &str, body: serde_json::Value) -> serde_json::Value {
        let res = self.client.post(self.url(path)).bearer_auth(&self.admin).json(&body).send().await.unwrap();
        let status = res.status();
        let text = res.text().await.unwrap();
        assert!(status.is_success(), "POST {path}: {status}: {text}");
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null)
    }
}

/// Per-request latencies and the wall time of a concurrent phase.
struct Timing {
    latencies: Vec<Duration>,
    elapsed: Duration,
}

impl Timing {
    fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn percentile_ms(&self, p: f64) -> f64 {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        if sorted.is_empty() {
            return 0.0;
        }
        let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
        sorted[idx.min(sorted.len() - 1)].as_secs_f64() * 1000.0
    }

    /// `{prefix}_per_sec`, `{prefix}_p50_ms`, `{prefix}_p99_ms` and `{prefix}_count` on stdout.
    fn print(&self, prefix: &str) {
        println!("{prefix}_count={}", self.latencies.len());
        println!("{prefix}_seconds={:.3}", self.elapsed.as_secs_f64());
        println!("{prefix}_per_sec={:.1}", self.rate());
        println!("{prefix}_p50_ms={:.2}", self.percentile_ms(0.5));
        println!("{prefix}_p99_ms={:.2}", self.percentile_ms(0.99));
    }
}

/// CPU time so far, in clock ticks: this process's (`/proc/self/stat`, user + system) and the
/// whole machine's busy time (`/proc/stat`, every state but idle and I/O wait, all cores).
/// Zero where `/proc` cannot be read (the figures are then left out by `scripts/bench.sh`).
#[derive(Clone, Copy, Default)]
struct CpuTicks {
    own: u64,
    machine_busy: u64,
}

impl CpuTicks {
    fn now() -> Self {
        let own = std::fs::read_to_string("/proc/self/stat").ok().and_then(|stat| {
            // After the command name (which may hold spaces): state is field 3, utime 14, stime 15.
            let rest = stat.rsplit_once(')')?.1;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
        });
        let machine_busy = std::fs::read_to_string("/proc/stat").ok().and_then(|stat| {
            // `cpu  user nice system idle iowait irq softirq steal guest guest_nice` (guest time
            // is already counted in user).
            let line = stat.lines().find(|l| l.starts_with("cpu "))?;
            let t: Vec<u64> = line.split_whitespace().skip(1).map_while(|v| v.parse().ok()).collect();
            Some([0, 1, 2, 5, 6, 7].iter().filter_map(|&i| t.get(i)).sum())
        });
        Self { own: own.unwrap_or(0), machine_busy: machine_busy.unwrap_or(0) }
    }

    /// `{prefix}_client_ticks` and `{prefix}_machine_busy_ticks` since `before`, on stdout.
    fn print_since(self, before: Self, prefix: &str) {
        if self.machine_busy == 0 {
            return;
        }
        println!("{prefix}_client_ticks={}", self.own.saturating_sub(before.own));
        println!("{prefix}_machine_busy_ticks={}", self.machine_busy.saturating_sub(before.machine_busy));
    }
}

/// Runs `op(i)` for every `i` in `0..n` with `concurrency` in flight; each returns its result
/// and how long its request took. Results come back in index order.
async fn concurrently<T, F, Fut>(n: usize, concurrency: usize, op: F) -> (Vec<T>, Timing)
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = (T, Duration)>,
{
    let started = Instant::now();
    let mut results: Vec<(usize, T, Duration)> = futures_util::stream::iter((0..n).map(|i| {
        let fut = op(i);
        async move {
            let (value, took) = fut.await;
            (i, value, took)
        }
    }))
    .buffer_unordered(concurrency.max(1))
    .collect()
    .await;
    let elapsed = started.elapsed();
    results.sort_by_key(|(i, _, _)| *i);
    let latencies = results.iter().map(|(_, _, d)| *d).collect();
    (results.into_iter().map(|(_, v, _)| v).collect(), Timing { latencies, elapsed })
}

fn write_file(path: &Path, contents: &str) {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    file.write_all(contents.as_bytes()).unwrap();
    file.flush().unwrap();
}

async fn setup() {
    let server = Server::from_env();
    let out = PathBuf::from(env_required("BENCH_OUT"));
    let devices = usize::try_from(env_u64("DEVICES", 10_000)).unwrap();
    let rounds = env_u64("ROUNDS", 22);
    let concurrency = usize::try_from(env_u64("CONCURRENCY", 64)).unwrap();
    assert!(devices > 0, "DEVICES must be at least 1");
    assert!(rounds > 0, "ROUNDS must be at least 1");
    std::fs::create_dir_all(&out).unwrap();

    // --- product, release, enrollment token -----------------------------------------------------
    eprintln!("==> creating product {PRODUCT}, release {VERSION} and an enrollment token for {devices} devices");
    server.admin_post("/api/v1/products", json!({"name": PRODUCT, "hardware_ids": [HARDWARE_ID]})).await;
    let form = reqwest::multipart::Form::new()
        .text("version", VERSION)
        .part("file", reqwest::multipart::Part::bytes(vec![7u8; 65_536]).file_name("fw.bin"));
    let res = server
        .client
        .post(server.url(&format!("/api/v1/products/{PRODUCT}/releases")))
        .bearer_auth(&server.admin)
        .multipart(form)
        .send()
        .await
        .unwrap();
    let status = res.status();
    assert_eq!(status, 201, "publishing {VERSION}: {}", res.text().await.unwrap());
    let answer = server
        .admin_post(
            "/api/v1/enrollment-tokens",
            json!({"product": PRODUCT, "name": "bench", "tags": [TAG], "max_uses": devices, "expires_in_seconds": 86_400}),
        )
        .await;
    let enrollment_token = answer["token"].as_str().expect("the enrollment token in the answer").to_owned();

    // --- keys (deterministic) -------------------------------------------------------------------
    let keys: Vec<SigningKey> = (0..devices).map(key_of).collect();

    // --- enrollment -----------------------------------------------------------------------------
    eprintln!("==> enrolling {devices} devices, {concurrency} at a time");
    let time = now_rfc3339();
    // Signed before the clock starts: the figure is the server's, not the signer's.
    let bodies: Vec<Vec<u8>> = (0..devices)
        .map(|i| {
            let request = EnrollRequest::new(
                device_id(i),
                PRODUCT,
                HARDWARE_ID,
                &keys[i].verifying_key(),
                &enrollment_token,
                time.as_str(),
            );
            serde_json::to_vec(&patchgate_protocol::envelope::sign(request, &keys[i]).unwrap()).unwrap()
        })
        .collect();
    let (tokens, enroll) = concurrently(devices, concurrency, |i| {
        let req = server
            .client
            .post(server.url("/api/v1/devices/enroll"))
            .header("content-type", "application/json")
            .body(bodies[i].clone());
        async move {
            let started = Instant::now();
            let res = req.send().await.unwrap_or_else(|e| panic!("enrolling device {i}: {e}"));
            let status = res.status();
            let text = res.text().await.unwrap();
            let took = started.elapsed();
            assert_eq!(status, 201, "enrolling device {i}: {text}");
            let answer: EnrollAnswer = serde_json::from_str(&text).unwrap();
            assert_eq!(answer.device_id, device_id(i));
            (answer.device_token, took)
        }
    })
    .await;
    eprintln!("==> enrolled {devices} devices in {:.1} s ({:.0}/s)", enroll.elapsed.as_secs_f64(), enroll.rate());
    enroll.print("enroll");

    // --- first report (counter 1) ---------------------------------------------------------------
    eprintln!("==> sending every device's first report (counter {FIRST_COUNTER})");
    let bodies: Vec<String> = (0..devices).map(|i| report_body(i, &keys[i], FIRST_COUNTER, &time, 0)).collect();
    let (versions, first) = concurrently(devices, concurrency, |i| {
        let req = server
            .client
            .post(server.url(&report_path(&device_id(i))))
            .bearer_auth(&tokens[i])
            .header("content-type", "application/json")
            .body(bodies[i].clone());
        async move {
            let started = Instant::now();
            let res = req.send().await.unwrap_or_else(|e| panic!("first report of device {i}: {e}"));
            let status = res.status();
            let text = res.text().await.unwrap();
            let took = started.elapsed();
            assert_eq!(status, 200, "first report of device {i}: {text}");
            let answer: ReportAnswer = serde_json::from_str(&text).unwrap();
            (answer.director_targets_version, took)
        }
    })
    .await;
    first.print("enroll_report");

    // --- pre-signed reports for wrk -------------------------------------------------------------
    let first_wrk_counter = FIRST_COUNTER + 1;
    eprintln!(
        "==> pre-signing {} reports (counters {first_wrk_counter}..={} for each device)",
        devices as u64 * rounds,
        first_wrk_counter + rounds - 1
    );
    let started = Instant::now();
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let chunk = devices.div_ceil(workers);
    let lines: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                let (keys, tokens, versions, time) = (&keys, &tokens, &versions, &time);
                scope.spawn(move || {
                    let mut lines = Vec::new();
                    for i in (w * chunk)..((w + 1) * chunk).min(devices) {
                        let mut line = format!(
                            "{i}\t{}\t{}\t{}\t{first_wrk_counter}",
                            report_path(&device_id(i)),
                            tokens[i],
                            versions[i]
                        );
                        for counter in first_wrk_counter..first_wrk_counter + rounds {
                            line.push('\t');
                            line.push_str(&report_body(i, &keys[i], counter, time, versions[i]));
                        }
                        line.push('\n');
                        lines.push(line);
                    }
                    lines
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let mut reports = String::with_capacity(lines.iter().map(String::len).sum::<usize>() + 256);
    writeln!(
        reports,
        "# patchgate bench_fleet reports: devices={devices} rounds={rounds} first_counter={first_wrk_counter}; \
         columns: index, path, device token, director targets version, first counter, one body per counter"
    )
    .unwrap();
    for line in &lines {
        reports.push_str(line);
    }
    drop(lines);
    write_file(&out.join("reports.tsv"), &reports);
    eprintln!(
        "==> wrote {} ({:.1} MiB) in {:.1} s",
        out.join("reports.tsv").display(),
        reports.len() as f64 / 1_048_576.0,
        started.elapsed().as_secs_f64()
    );
    drop(reports);

    // --- director ETags -------------------------------------------------------------------------
    eprintln!("==> fetching every device's director timestamp.json for its ETag");
    let (etags, _) = concurrently(devices, concurrency, |i| {
        let path = format!("/director/{}/metadata/timestamp.json", device_id(i));
        let req = server.client.get(server.url(&path)).bearer_auth(&tokens[i]);
        async move {
            let started = Instant::now();
            let res = req.send().await.unwrap_or_else(|e| panic!("director timestamp of device {i}: {e}"));
            let status = res.status();
            let etag = res.headers().get("etag").and_then(|v| v.to_str().ok()).map(str::to_owned);
            let text = res.text().await.unwrap();
            let took = started.elapsed();
            assert_eq!(status, 200, "director timestamp of device {i}: {text}");
            (etag.unwrap_or_else(|| panic!("no ETag on the director timestamp of device {i}")), took)
        }
    })
    .await;
    let mut director = String::new();
    writeln!(director, "# patchgate bench_fleet director: devices={devices}; columns: index, path, device token, ETag")
        .unwrap();
    for (i, etag) in etags.iter().enumerate() {
        writeln!(director, "{i}\t/director/{}/metadata/timestamp.json\t{}\t{etag}", device_id(i), tokens[i]).unwrap();
    }
    write_file(&out.join("director.tsv"), &director);
    println!("devices={devices}");
    println!("rounds={rounds}");
    println!("first_wrk_counter={first_wrk_counter}");
    println!("last_wrk_counter={}", first_wrk_counter + rounds - 1);
}

/// One device of `reports.tsv`: index, token and the director targets version it knows.
struct Known {
    index: usize,
    token: String,
    version: u64,
    first_counter: u64,
    rounds: u64,
}

fn read_reports(path: &Path) -> Vec<Known> {
    let file = std::io::BufReader::new(std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())));
    let mut known = Vec::new();
    for line in file.lines() {
        let line = line.unwrap();
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let mut fields = line.split('\t');
        let mut next = || fields.next().unwrap_or_else(|| panic!("{}: a short line", path.display()));
        let index = next().parse().unwrap();
        let _path = next();
        let token = next().to_owned();
        let version = next().parse().unwrap();
        let first_counter = next().parse().unwrap();
        let rounds = fields.count() as u64;
        known.push(Known { index, token, version, first_counter, rounds });
    }
    known
}

async fn first_report() {
    let server = Server::from_env();
    let out = PathBuf::from(env_required("BENCH_OUT"));
    let concurrency = usize::try_from(env_u64("CONCURRENCY", 64)).unwrap();
    let counter = env_u64("COUNTER", 1_000_000);
    let known = read_reports(&out.join("reports.tsv"));
    assert!(!known.is_empty(), "no devices in reports.tsv");
    let highest_used = known.iter().map(|k| k.first_counter + k.rounds).max().unwrap_or(0);
    assert!(counter > highest_used, "COUNTER {counter} must be above every counter wrk may have used ({highest_used})");

    eprintln!("==> cohort `all` (tag {TAG}), rollout r-bench of {VERSION} with one 100 % stage, started");
    server.admin_post("/api/v1/cohorts", json!({"name": "all", "product": PRODUCT, "selector": {"tags": [TAG]}})).await;
    server
        .admin_post(
            "/api/v1/rollouts",
            json!({"id": "r-bench", "product": PRODUCT, "version": VERSION,
                "stages": [{"cohort": "all", "percent": 100, "soak_minutes": 0}],
                "gate": {"max_failure_rate": 0.05, "min_reports": 10, "stall_minutes": 60}}),
        )
        .await;
    server.admin_post("/api/v1/rollouts/r-bench/start", json!({})).await;

    // Bodies signed before the clock starts: the figure is the server's, not the signer's.
    let time = now_rfc3339();
    let bodies: Vec<String> =
        known.iter().map(|k| report_body(k.index, &key_of(k.index), counter, &time, k.version)).collect();
    eprintln!("==> sending {} first reports after the stage opened, {concurrency} at a time", known.len());
    let cpu_before = CpuTicks::now();
    let (outcomes, timing) = concurrently(known.len(), concurrency, |n| {
        let k = &known[n];
        let req = server
            .client
            .post(server.url(&report_path(&device_id(k.index))))
            .bearer_auth(&k.token)
            .header("content-type", "application/json")
            .body(bodies[n].clone());
        let before = k.version;
        async move {
            let started = Instant::now();
            let outcome = match req.send().await {
                Ok(res) => {
                    let status = res.status();
                    let text = res.text().await.unwrap_or_default();
                    match serde_json::from_str::<ReportAnswer>(&text) {
                        Ok(a) if status == 200 && a.changed && a.director_targets_version > before => Ok(()),
                        _ => Err(format!("{status}: {text}")),
                    }
                }
                // The whole chain: "error sending request" alone does not say what broke.
                Err(e) => Err(format!("{e:?}")),
            };
            (outcome, started.elapsed())
        }
    })
    .await;
    let cpu_after = CpuTicks::now();
    let wrong: Vec<(usize, &String)> =
        outcomes.iter().enumerate().filter_map(|(n, o)| o.as_ref().err().map(|e| (known[n].index, e))).collect();
    timing.print("first_report");
    cpu_after.print_since(cpu_before, "first_report");
    println!("first_report_wrong={}", wrong.len());
    if let Some((index, error)) = wrong.first() {
        panic!(
            "{} of {} first reports after the stage opened were not 200 with changed: true; device {index}: {error}",
            wrong.len(),
            outcomes.len()
        );
    }
}

#[tokio::main]
async fn main() {
    match std::env::args().nth(1).as_deref() {
        Some("setup") => setup().await,
        Some("first-report") => first_report().await,
        other => {
            eprintln!("usage: bench_fleet setup|first-report (see the module documentation); got {other:?}");
            std::process::exit(2);
        }
    }
}
