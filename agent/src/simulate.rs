//! The fleet simulator: N virtual devices in one process, each a real [`Agent`] with its own
//! key, state directory, signed reports and TUF datastores, installing into a slot file in a
//! temporary directory and confirming after a simulated reboot (or failing to, at `fail_rate`).
//!
//! Must not bypass any verification: a simulated device runs the same code as a real one.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use crate::agent::install::jitter;
use crate::agent::{Agent, EnrollOptions, InstallOptions, InstallOutcome, Tuning};
use crate::error::AgentError;

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Server base URL.
    pub server: String,
    /// Enrollment token (one use per device).
    pub enrollment_token: String,
    /// Provisioned image root.
    pub image_root: Vec<u8>,
    /// Provisioned director root.
    pub director_root: Vec<u8>,
    /// Number of devices.
    pub devices: usize,
    /// Product.
    pub product: String,
    /// Hardware id of every device.
    pub hardware_id: String,
    /// Device ids are `{id_prefix}-{n:05}`.
    pub id_prefix: String,
    /// Probability that a device comes back from the reboot running the wrong image.
    pub fail_rate: f64,
    /// Seconds between a device's polls (±10 % jitter); the server's suggestion is ignored.
    pub interval: Duration,
    /// Accept roots that trust the development keys.
    pub allow_dev_keys: bool,
    /// Where devices keep their state (a temporary directory when `None`).
    pub state_root: Option<PathBuf>,
    /// Most polls in flight at once (a fleet that polls in lockstep would otherwise measure the
    /// server's queue, not its throughput).
    pub max_in_flight: usize,
}

/// When a run ends.
#[derive(Debug, Clone, Copy)]
pub enum Until {
    /// After this long.
    Elapsed(Duration),
    /// After every device has polled this many times.
    Rounds(u32),
}

/// Counters of a run.
#[derive(Debug, Default)]
struct Counters {
    polls: AtomicU64,
    installs: AtomicU64,
    from_deltas: AtomicU64,
    failures: AtomicU64,
    rejections: AtomicU64,
    errors: AtomicU64,
}

/// The outcome of a run.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Devices simulated.
    pub devices: usize,
    /// Polls made.
    pub polls: u64,
    /// Installs confirmed.
    pub installs: u64,
    /// Installs whose image was built from a delta (the device's slot held the delta's source).
    pub from_deltas: u64,
    /// Installs that failed (hook, or the wrong image after the reboot).
    pub failures: u64,
    /// Updates refused for security.
    pub rejections: u64,
    /// Network or server errors.
    pub errors: u64,
    /// Median poll latency (report, refresh and verification; not the download).
    pub p50: Duration,
    /// 99th percentile poll latency.
    pub p99: Duration,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Each device's id and the version it runs (if any).
    pub running: Vec<(String, Option<String>)>,
}

impl Summary {
    /// Sustained polls per second.
    pub fn polls_per_second(&self) -> f64 {
        self.polls as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The final table.
    pub fn table(&self) -> String {
        let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1000.0);
        format!(
            "{:>8} {:>8} {:>9} {:>9} {:>11} {:>7} {:>10} {:>10} {:>8} {:>11}\n{:>8} {:>8} {:>9} {:>9} {:>11} {:>7} {:>10} {:>10} {:>8.1} {:>11}\n",
            "devices",
            "polls",
            "installs",
            "failures",
            "rejections",
            "errors",
            "p50 poll",
            "p99 poll",
            "polls/s",
            "from deltas",
            self.devices,
            self.polls,
            self.installs,
            self.failures,
            self.rejections,
            self.errors,
            ms(self.p50),
            ms(self.p99),
            self.polls_per_second(),
            self.from_deltas
        )
    }
}

struct SimDevice {
    agent: Agent,
    slot: PathBuf,
}

/// A simulated fleet, enrolled and ready to run.
pub struct Fleet {
    devices: Vec<SimDevice>,
    opts: SimOptions,
    _tmp: Option<tempfile::TempDir>,
}

/// How many enrollments run at once.
const ENROLL_CONCURRENCY: usize = 16;

impl Fleet {
    /// Enrolls `opts.devices` devices, `on_progress(done)` after each.
    pub async fn enroll(opts: SimOptions, mut on_progress: impl FnMut(usize)) -> Result<Self, AgentError> {
        let (tmp, root) = match &opts.state_root {
            Some(root) => (None, root.clone()),
            None => {
                let tmp = tempfile::tempdir().map_err(|e| AgentError::local("creating a temporary directory", e))?;
                let root = tmp.path().to_path_buf();
                (Some(tmp), root)
            }
        };
        let client = crate::net::http_client(None)?;
        let mut devices = Vec::with_capacity(opts.devices);
        let ids: Vec<usize> = (0..opts.devices).collect();
        for chunk in ids.chunks(ENROLL_CONCURRENCY) {
            let batch = chunk.iter().map(|&n| {
                let id = format!("{}-{n:05}", opts.id_prefix);
                let dir = root.join(&id);
                let enroll = EnrollOptions {
                    server: opts.server.clone(),
                    enrollment_token: opts.enrollment_token.clone(),
                    device_id: id,
                    product: opts.product.clone(),
                    hardware_id: opts.hardware_id.clone(),
                    image_root: opts.image_root.clone(),
                    director_root: opts.director_root.clone(),
                    state_dir: dir.join("state"),
                    ca_file: None,
                    allow_dev_keys: opts.allow_dev_keys,
                    running_sha256: None,
                };
                let client = client.clone();
                async move {
                    let mut agent = Agent::enroll(enroll, Some(client)).await?;
                    agent.set_tuning(sim_tuning());
                    Ok::<_, AgentError>(SimDevice { agent, slot: dir.join("slot.bin") })
                }
            });
            for device in futures_util::future::join_all(batch).await {
                devices.push(device?);
                on_progress(devices.len());
            }
        }
        Ok(Self { devices, opts, _tmp: tmp })
    }

    /// Runs every device until `until`, calling `on_tick(&summary_so_far)` about once a second.
    pub async fn run(&mut self, until: Until, mut on_tick: impl FnMut(&Summary)) -> Summary {
        let run = Arc::new(Run {
            until,
            interval: self.opts.interval,
            fail_rate: self.opts.fail_rate,
            started: Instant::now(),
            counters: Counters::default(),
            latencies: Mutex::new(Vec::new()),
            gate: tokio::sync::Semaphore::new(self.opts.max_in_flight.max(1)),
        });
        let mut tasks = tokio::task::JoinSet::new();
        for (index, device) in std::mem::take(&mut self.devices).into_iter().enumerate() {
            let run = run.clone();
            tasks.spawn(async move { (index, simulate_device(device, &run).await) });
        }
        let mut back = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        // After a stall (a busy machine), one line, not a burst of the ticks it missed.
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        tick.tick().await;
        loop {
            tokio::select! {
                joined = tasks.join_next() => match joined {
                    Some(Ok(device)) => back.push(device),
                    Some(Err(e)) => eprintln!("patchgate-agent: a simulated device task died: {e}"),
                    None => break,
                },
                _ = tick.tick() => on_tick(&self.summary(&run).await),
            }
        }
        back.sort_by_key(|(i, _)| *i);
        self.devices = back.into_iter().map(|(_, d)| d).collect();
        self.summary(&run).await
    }

    async fn summary(&self, run: &Run) -> Summary {
        let counters = &run.counters;
        let mut sorted = run.latencies.lock().await.clone();
        sorted.sort();
        let pct = |p: f64| {
            let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
            sorted.get(i).copied().unwrap_or_default()
        };
        Summary {
            devices: self.opts.devices,
            polls: counters.polls.load(Ordering::Relaxed),
            installs: counters.installs.load(Ordering::Relaxed),
            from_deltas: counters.from_deltas.load(Ordering::Relaxed),
            failures: counters.failures.load(Ordering::Relaxed),
            rejections: counters.rejections.load(Ordering::Relaxed),
            errors: counters.errors.load(Ordering::Relaxed),
            p50: pct(0.5),
            p99: pct(0.99),
            elapsed: run.started.elapsed(),
            running: self
                .devices
                .iter()
                .map(|d| {
                    let version = d.agent.state().installed().ok().flatten().map(|i| i.version);
                    (d.agent.config().device_id.clone(), version)
                })
                .collect(),
        }
    }
}

/// The hardware id of `product`'s newest release in the image repository, read with full TUF
/// verification from `image_root` (so `simulate` needs no `--hardware-id` once a release exists).
pub async fn discover_hardware_id(server: &str, image_root: &[u8], product: &str) -> Result<String, AgentError> {
    let net = crate::net::Net::new(server, crate::net::http_client(None)?)?;
    let tmp = tempfile::tempdir().map_err(|e| AgentError::local("creating a temporary directory", e))?;
    let store = crate::state::Datastore::new(tmp.path().to_path_buf());
    crate::state::write_atomic(&tmp.path().join("provisioned.root.json"), image_root)?;
    // The agent's own workflow, so what simulate trusts is what a device would.
    let mut repo = crate::tuf::refresh(
        &store,
        "image",
        net.url("repo/metadata/")?,
        net.transport(None),
        crate::tuf::Versioning::Unique,
    )
    .await?;
    repo.load_top_delegation(product).await?;
    // Only what the product's own key signed, as the agent would trust it.
    let role = crate::verify::product_role(&repo.targets().signed, product).and_then(|r| r.targets.as_ref());
    let newest = role
        .into_iter()
        .flat_map(|t| t.signed.targets.values())
        .filter_map(|t| {
            let custom = crate::verify::target_custom(t).ok()?;
            Some((semver::Version::parse(&custom.version).ok()?, custom.hardware_ids.into_iter().next()?))
        })
        .max_by(|a, b| a.0.cmp(&b.0));
    newest.map(|(_, hw)| hw).ok_or_else(|| {
        AgentError::Usage(format!("product {product} has no release in the image repository yet: pass --hardware-id"))
    })
}

/// Simulated devices retry quickly: a run is minutes, not months.
fn sim_tuning() -> Tuning {
    let mut tuning = Tuning::default();
    tuning.retry.retries = 2;
    tuning.retry.backoff = Duration::from_millis(200);
    tuning.retry.backoff_max = Duration::from_secs(2);
    tuning
}

/// What every simulated device of one run shares.
struct Run {
    until: Until,
    interval: Duration,
    fail_rate: f64,
    started: Instant,
    counters: Counters,
    latencies: Mutex<Vec<Duration>>,
    gate: tokio::sync::Semaphore,
}

async fn simulate_device(mut device: SimDevice, run: &Run) -> SimDevice {
    let Run { until, interval, fail_rate, started, ref counters, ref latencies, ref gate } = *run;
    // With a duration, no wait runs past its end and no poll starts after it (a poll under way
    // then finishes: the run may overshoot by one poll, not by a whole interval).
    let deadline = match until {
        Until::Elapsed(d) => started.checked_add(d).map(tokio::time::Instant::from_std),
        Until::Rounds(_) => None,
    };
    let nap = |wait: Duration| async move {
        match (tokio::time::Instant::now().checked_add(wait), deadline) {
            (Some(end), Some(d)) => tokio::time::sleep_until(end.min(d)).await,
            (None, Some(d)) => tokio::time::sleep_until(d).await,
            (Some(end), None) => tokio::time::sleep_until(end).await,
            (None, None) => tokio::time::sleep(wait).await,
        }
    };
    // Spread the first polls over one interval, as a fleet that booted at different times.
    if matches!(until, Until::Elapsed(_)) {
        nap(jitter(interval).mul_f64(0.5)).await;
    }
    let mut opts = InstallOptions { slot: device.slot.clone(), hook: None, precondition: None, running_image: None };
    let mut rounds = 0u32;
    loop {
        match until {
            Until::Elapsed(d) if started.elapsed() >= d => break,
            Until::Rounds(n) if rounds >= n => break,
            _ => {}
        }
        rounds += 1;
        let permit = match deadline {
            Some(end) => tokio::select! {
                permit = gate.acquire() => permit,
                () = tokio::time::sleep_until(end) => break,
            },
            None => gate.acquire().await,
        };
        let Ok(permit) = permit else { break };
        // The device runs what its slot holds (once it holds anything): a delta from it applies.
        opts.running_image = device.slot.exists().then(|| device.slot.clone());
        let t0 = Instant::now();
        let polled = device.agent.poll_once(false).await;
        latencies.lock().await.push(t0.elapsed());
        counters.polls.fetch_add(1, Ordering::Relaxed);
        let result = match polled {
            Ok(outcome) => device.agent.install_checked(outcome, &opts, false).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(InstallOutcome::Installed(target)) => {
                let detail = device.agent.state().attempt().ok().flatten().and_then(|a| a.detail);
                if detail.is_some_and(|d| d.starts_with("from the delta")) {
                    counters.from_deltas.fetch_add(1, Ordering::Relaxed);
                }
                // The simulated reboot: the device comes back running the slot, or (at
                // `fail_rate`) the old image.
                let fails = rand_unit() < fail_rate;
                let running = if fails { "0".repeat(64) } else { target.sha256.clone() };
                match device.agent.confirm(&running).await {
                    Ok(_) => counters.installs.fetch_add(1, Ordering::Relaxed),
                    Err(_) => counters.failures.fetch_add(1, Ordering::Relaxed),
                };
            }
            Ok(_) => {}
            Err(AgentError::Refused(_)) => drop(counters.rejections.fetch_add(1, Ordering::Relaxed)),
            Err(AgentError::Install(_)) => drop(counters.failures.fetch_add(1, Ordering::Relaxed)),
            Err(_) => drop(counters.errors.fetch_add(1, Ordering::Relaxed)),
        }
        drop(permit);
        if matches!(until, Until::Elapsed(_)) || interval > Duration::ZERO {
            nap(jitter(interval)).await;
        }
    }
    device
}

fn rand_unit() -> f64 {
    use rand_core::RngCore;
    f64::from(rand_core::OsRng.next_u32()) / (f64::from(u32::MAX) + 1.0)
}
