//! [`Agent`]: enrollment, signed reports and the verified check of what the director assigns.
//! Installing, confirming and the polling loop are in [`install`].
//!
//! Every poll follows docs/design.md §2: report (signed, counter persisted first), refresh both TUF
//! repositories from the newest root each datastore verified, cross-check them
//! ([`crate::verify::decide`]), and only then act. A refusal is recorded as a `rejected` attempt
//! and reported at once, naming the reason. Must not install anything itself (see [`install`]).

pub mod install;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use patchgate_protocol::{Attempt, AttemptState, DeviceReport, EnrollRequest, InstalledImage, ReportAnswer};
use serde::Serialize;

use crate::download::Retry;
use crate::error::AgentError;
use crate::net::{Net, ReportError, http_client};
use crate::state::{AttemptRecord, DeviceConfig, Repo, StateDir};
use crate::verify::{Assigned, Decision, Identity, decide};

pub use install::{ConfirmOutcome, InstallOptions, InstallOutcome};

/// Timing knobs; the defaults suit a real device, tests shorten them.
#[derive(Debug, Clone, Copy)]
pub struct Tuning {
    /// Download retries and backoff.
    pub retry: Retry,
    /// Refresh both repositories at least this often even when the server says nothing changed
    /// (a hostile network could hide changes; TUF expiry bounds how long, this makes it shorter).
    pub refresh_every: Duration,
    /// Used until the server suggests a poll interval.
    pub default_poll: Duration,
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            retry: Retry { retries: 6, backoff: Duration::from_secs(2), backoff_max: Duration::from_secs(300) },
            refresh_every: Duration::from_secs(3600),
            default_poll: Duration::from_secs(600),
        }
    }
}

/// Bounds on the poll interval a server may suggest: never hammer it, never go silent for days.
const MIN_POLL_SECONDS: u64 = 1;
const MAX_POLL_SECONDS: u64 = 24 * 3600;
/// Longest target name put in a report (the name of a refused target may come from
/// unverified metadata; the server refuses oversized reports).
const MAX_NAME_CHARS: usize = 256;

/// What `patchgate-agent enroll` needs.
#[derive(Debug, Clone)]
pub struct EnrollOptions {
    /// Server base URL.
    pub server: String,
    /// The enrollment token an admin issued.
    pub enrollment_token: String,
    /// This device's id.
    pub device_id: String,
    /// Its product.
    pub product: String,
    /// Its hardware id.
    pub hardware_id: String,
    /// The image repository root the device was provisioned with.
    pub image_root: Vec<u8>,
    /// The director root the device was provisioned with.
    pub director_root: Vec<u8>,
    /// Where the agent keeps its state.
    pub state_dir: PathBuf,
    /// CA certificates to trust (only these) for the server.
    pub ca_file: Option<PathBuf>,
    /// Accept roots that trust the public development keys.
    pub allow_dev_keys: bool,
    /// The sha256 of the image the device runs now, if it is one the image repository lists:
    /// then the version rules and its rollback floor apply from the first update on.
    pub running_sha256: Option<String>,
}

/// What a check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckOutcome {
    /// Nothing to install.
    Nothing,
    /// This verified target should be installed.
    Assigned(Assigned),
    /// An installed image waits for the reboot into it (`confirm`).
    AwaitingReboot(Assigned),
}

/// A device agent bound to one state directory.
#[derive(Debug)]
pub struct Agent {
    state: StateDir,
    config: DeviceConfig,
    key: SigningKey,
    token: String,
    net: Net,
    tuning: Tuning,
    poll: Duration,
    last_refresh: Option<Instant>,
    /// The deltas the image repository listed to the target last assigned (docs/design.md §2.6, "Deltas").
    delta_offers: Vec<crate::delta::DeltaOffer>,
}

/// `YYYY-MM-DDTHH:MM:SSZ`, now.
fn now_rfc3339() -> String {
    jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Refuses a root that trusts a public development key, unless allowed.
pub fn check_root_keys(repo: Repo, root: &[u8], allow_dev_keys: bool) -> Result<(), AgentError> {
    let value: serde_json::Value = serde_json::from_slice(root)
        .map_err(|e| AgentError::Usage(format!("the {} root is not JSON: {e}", repo.as_str())))?;
    let Some(keys) = value["signed"]["keys"].as_object().filter(|_| value["signed"]["_type"] == "root") else {
        return Err(AgentError::Usage(format!("the {} root is not a TUF root", repo.as_str())));
    };
    if allow_dev_keys {
        return Ok(());
    }
    let computed = |key: &serde_json::Value| {
        let public = key["keyval"]["public"].as_str().and_then(|h| hex::decode(h).ok())?;
        Some(patchgate_protocol::ed25519_keyid(&<[u8; 32]>::try_from(public).ok()?))
    };
    let dev = keys.iter().any(|(id, key)| {
        patchgate_protocol::keys::is_dev_key(id)
            || computed(key).is_some_and(|c| patchgate_protocol::keys::is_dev_key(&c))
    });
    if dev {
        return Err(AgentError::refused(
            "development_keys",
            format!(
                "the {} root trusts the public development keys from keys-example/; anyone can sign with them \
                 (pass --allow-dev-keys only for tests and demos)",
                repo.as_str()
            ),
        ));
    }
    Ok(())
}

impl Agent {
    /// Enrolls the device (key generated on first use, kept on re-enrollment) and saves the state.
    pub async fn enroll(opts: EnrollOptions, client: Option<reqwest::Client>) -> Result<Self, AgentError> {
        check_root_keys(Repo::Image, &opts.image_root, opts.allow_dev_keys)?;
        check_root_keys(Repo::Director, &opts.director_root, opts.allow_dev_keys)?;
        // Stored absolute: the agent may later run from another directory.
        let ca_file = match &opts.ca_file {
            Some(path) => Some(
                std::fs::canonicalize(path)
                    .map_err(|e| AgentError::Usage(format!("--ca-file {}: {e}", path.display())))?,
            ),
            None => None,
        };
        let client = match client {
            Some(c) => c,
            None => http_client(ca_file.as_deref())?,
        };
        let net = Net::new(&opts.server, client)?;
        let state = StateDir::create(&opts.state_dir)?;
        let key = state.key_or_generate()?;
        let request = EnrollRequest::new(
            &opts.device_id,
            &opts.product,
            &opts.hardware_id,
            &key.verifying_key(),
            &opts.enrollment_token,
            now_rfc3339(),
        );
        let envelope = patchgate_protocol::sign(request, &key)
            .map_err(|e| AgentError::Usage(format!("signing the enrollment: {e}")))?;
        let answer = net.enroll(&envelope).await?;
        if answer.device_id != opts.device_id {
            return Err(AgentError::Network(format!(
                "the server enrolled {:?}, not the requested {:?}",
                answer.device_id, opts.device_id
            )));
        }
        let config = DeviceConfig {
            server: opts.server,
            device_id: answer.device_id,
            product: opts.product,
            hardware_id: opts.hardware_id,
            ca_file,
            allow_dev_keys: opts.allow_dev_keys,
        };
        state.set_provisioned_root(Repo::Image, &opts.image_root)?;
        state.set_provisioned_root(Repo::Director, &opts.director_root)?;
        state.set_token(&answer.device_token)?;
        state.set_config(&config)?;
        let mut agent = Self::with(state, config, key, answer.device_token, net, Tuning::default());
        if let Some(sha256) = &opts.running_sha256 {
            agent.record_running(sha256).await?;
        }
        Ok(agent)
    }

    /// Records the image the device runs from the image repository's verified metadata (the
    /// product's role, by sha256), so the version rules and the rollback floor apply from the
    /// first update on.
    pub async fn record_running(&mut self, sha256: &str) -> Result<(), AgentError> {
        let sha256 = sha256.trim().to_ascii_lowercase();
        let image = self.load(Repo::Image).await?;
        let product = &self.config.product;
        let found = crate::verify::product_role(&image.targets().signed, product)
            .and_then(|r| r.targets.as_ref())
            .and_then(|t| t.signed.targets.iter().find(|(_, target)| hex::encode(&target.hashes.sha256) == sha256));
        let Some((name, target)) = found else {
            return Err(AgentError::Usage(format!(
                "--running-sha256 {sha256} is not an image of product {product} in the image repository"
            )));
        };
        let custom = crate::verify::target_custom(target)
            .map_err(|e| AgentError::refused("invalid_image_custom", format!("{}: {e}", name.raw())))?;
        let installed = crate::state::InstalledRecord {
            name: name.raw().to_owned(),
            sha256,
            version: custom.version,
            rollback_floor: custom.rollback_floor,
        };
        self.state.set_installed(Some(&installed))
    }

    /// Opens an enrolled state directory; `client` replaces the default HTTP client (the
    /// simulator shares one across devices).
    pub fn open(dir: &Path, client: Option<reqwest::Client>, tuning: Tuning) -> Result<Self, AgentError> {
        let state = StateDir::open(dir)?;
        let config = state.config()?;
        let client = match client {
            Some(c) => c,
            None => http_client(config.ca_file.as_deref())?,
        };
        let net = Net::new(&config.server, client)?;
        let (key, token) = (state.key()?, state.token()?);
        Ok(Self::with(state, config, key, token, net, tuning))
    }

    fn with(state: StateDir, config: DeviceConfig, key: SigningKey, token: String, net: Net, tuning: Tuning) -> Self {
        let poll = tuning.default_poll;
        Self { state, config, key, token, net, tuning, poll, last_refresh: None, delta_offers: Vec::new() }
    }

    /// Starts afresh from the state directory, as a new process would (what it remembers in
    /// memory, like the time of the last refresh, is forgotten).
    pub fn restart(&mut self) -> Result<(), AgentError> {
        self.state.release();
        *self = Self::open(self.state.path(), Some(self.net.client().clone()), self.tuning)?;
        Ok(())
    }

    /// Changes the timing knobs.
    pub fn set_tuning(&mut self, tuning: Tuning) {
        self.tuning = tuning;
    }

    /// The state directory.
    pub fn state(&self) -> &StateDir {
        &self.state
    }

    /// The device's configuration.
    pub fn config(&self) -> &DeviceConfig {
        &self.config
    }

    /// The poll interval the server last suggested.
    pub fn poll_interval(&self) -> Duration {
        self.poll
    }

    /// The director targets version last verified (0 before the first refresh).
    fn director_version(&self) -> u64 {
        std::fs::read(self.state.datastore(Repo::Director).join("targets.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v["signed"]["version"].as_u64())
            .unwrap_or(0)
    }

    /// Sends a signed version report with what the state says (installed image, attempt).
    pub async fn report(&mut self) -> Result<ReportAnswer, AgentError> {
        let installed =
            self.state.installed()?.map(|i| InstalledImage { name: i.name, sha256: i.sha256, version: i.version });
        let attempt = self.state.attempt()?.map(|a| Attempt { name: a.name, state: a.state, detail: a.detail });
        let dtv = self.director_version();
        // One retry: a stale counter means another copy of this state directory (a restored
        // backup) reported; move past what the server saw and sign again.
        for _ in 0..2 {
            let counter = self.state.take_counter()?;
            let report = DeviceReport::new(
                &self.config.device_id,
                counter,
                now_rfc3339(),
                installed.clone(),
                attempt.clone(),
                dtv,
            );
            let envelope = patchgate_protocol::sign(report, &self.key)
                .map_err(|e| AgentError::Local(format!("signing the report: {e}")))?;
            match self.net.report(&self.config.device_id, &self.token, &envelope).await {
                Ok(answer) => {
                    self.poll = Duration::from_secs(answer.poll_seconds.clamp(MIN_POLL_SECONDS, MAX_POLL_SECONDS));
                    return Ok(answer);
                }
                Err(ReportError::StaleCounter(last)) => {
                    let next = last
                        .checked_add(1)
                        .ok_or_else(|| AgentError::Network("the server's last counter is u64::MAX".into()))?;
                    self.state.raise_counter(next.max(counter + 1))?;
                }
                Err(ReportError::Agent(e)) => return Err(e),
            }
        }
        Err(AgentError::Network("the server refused the report counter twice".into()))
    }

    /// Records `record` as the current attempt and reports it (a report that cannot be sent now
    /// goes with the next poll: the attempt is in the state directory).
    pub(crate) async fn set_attempt(&mut self, record: AttemptRecord) -> Result<(), AgentError> {
        self.state.set_attempt(Some(&record))?;
        match self.report().await {
            Ok(_) | Err(AgentError::Network(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// `check`: report, refresh both repositories, cross-check, and say what to install.
    pub async fn check(&mut self) -> Result<CheckOutcome, AgentError> {
        self.poll_once(true).await
    }

    /// One poll: report, then refresh and decide (always with `force`, else only when the server
    /// says the director changed, an attempt is open, or the last refresh is old).
    pub(crate) async fn poll_once(&mut self, force: bool) -> Result<CheckOutcome, AgentError> {
        let answer = self.report().await?;
        let attempt = self.state.attempt()?;
        if let Some(a) = &attempt
            && a.state == AttemptState::AwaitingReboot
            && let Some(target) = &a.target
        {
            return Ok(CheckOutcome::AwaitingReboot(target.clone()));
        }
        let stale = self.last_refresh.is_none_or(|t| t.elapsed() >= self.tuning.refresh_every);
        let open = attempt.as_ref().is_some_and(|a| !a.state.is_final());
        if !(force || answer.changed || stale || open) {
            return Ok(CheckOutcome::Nothing);
        }
        match self.refresh_and_decide().await {
            Ok(Decision::Nothing) => {
                if open {
                    // What it was working on is no longer assigned (paused, withdrawn).
                    self.state.set_attempt(None)?;
                }
                Ok(CheckOutcome::Nothing)
            }
            Ok(Decision::Install(target)) => Ok(CheckOutcome::Assigned(target)),
            Err(AgentError::Refused(refusal)) => {
                let name = self.peek_director_target(answer.director_targets_version).await;
                self.reject(name, None, refusal.clone()).await?;
                Err(AgentError::Refused(refusal))
            }
            Err(e) => Err(e),
        }
    }

    /// Records and reports a refusal.
    pub(crate) async fn reject(
        &mut self,
        name: String,
        target: Option<Assigned>,
        refusal: crate::Refusal,
    ) -> Result<(), AgentError> {
        let detail: String = refusal.to_string().chars().take(patchgate_protocol::report::MAX_DETAIL_CHARS).collect();
        let name: String = name.chars().take(MAX_NAME_CHARS).collect();
        let record = AttemptRecord { name, state: AttemptState::Rejected, detail: Some(detail), target };
        if self.state.attempt()?.as_ref() == Some(&record) {
            return Ok(());
        }
        self.set_attempt(record).await
    }

    /// The target name the director's newest targets metadata mentions, read WITHOUT trusting
    /// it: only to label a rejection for the server's operators.
    async fn peek_director_target(&self, version: u64) -> String {
        let unknown = || "(unverified director metadata)".to_owned();
        let Ok(url) = self.net.url(&format!("director/{}/metadata/{version}.targets.json", self.config.device_id))
        else {
            return unknown();
        };
        let Ok(res) = self.net.client().get(url).bearer_auth(&self.token).send().await else { return unknown() };
        let Ok(bytes) = crate::net::read_limited(res, crate::net::MAX_ANSWER_BYTES).await else { return unknown() };
        let Ok(body) = serde_json::from_slice::<serde_json::Value>(&bytes) else { return unknown() };
        body["signed"]["targets"].as_object().and_then(|t| t.keys().next().cloned()).unwrap_or_else(unknown)
    }

    /// Refreshes `repo` and, for the image repository, loads this device's product role (the
    /// only delegated role a device reads).
    async fn load(&self, repo: Repo) -> Result<crate::tuf::TrustedRepo, AgentError> {
        use crate::tuf::Versioning;
        let (metadata, token, versioning) = match repo {
            Repo::Image => ("repo/metadata/".to_owned(), None, Versioning::Unique),
            Repo::Director => (
                format!("director/{}/metadata/", self.config.device_id),
                Some(self.token.clone()),
                Versioning::PerDevice,
            ),
        };
        let mut loaded = crate::tuf::refresh(
            &self.state.store(repo),
            repo.as_str(),
            self.net.url(&metadata)?,
            self.net.transport(token),
            versioning,
        )
        .await?;
        let root = serde_json::to_vec(loaded.root()).map_err(|e| AgentError::Local(e.to_string()))?;
        check_root_keys(repo, &root, self.config.allow_dev_keys)?;
        // A production root could still delegate a product to a development key.
        let delegated = loaded.targets().signed.delegations.iter().flat_map(|d| d.keys.keys());
        if !self.config.allow_dev_keys
            && let Some(id) =
                delegated.map(|id| hex::encode(id.as_ref())).find(|id| patchgate_protocol::keys::is_dev_key(id))
        {
            return Err(AgentError::refused(
                "development_keys",
                format!("the {} repository delegates to the public development key {id}", repo.as_str()),
            ));
        }
        if repo == Repo::Image {
            loaded.load_top_delegation(&self.config.product).await?;
        }
        Ok(loaded)
    }

    async fn refresh_and_decide(&mut self) -> Result<Decision, AgentError> {
        let director = self.load(Repo::Director).await?;
        let image = self.load(Repo::Image).await?;
        self.last_refresh = Some(Instant::now());
        let me = Identity {
            device_id: &self.config.device_id,
            product: &self.config.product,
            hardware_id: &self.config.hardware_id,
        };
        let installed = self.state.installed()?;
        let decision = decide(&director.targets().signed, &image.targets().signed, me, installed.as_ref())
            .map_err(AgentError::Refused)?;
        self.delta_offers = match &decision {
            Decision::Install(target) => crate::delta::offers(&image.targets().signed, &self.config.product, target),
            Decision::Nothing => Vec::new(),
        };
        Ok(decision)
    }
}

/// What `check` prints: the assigned target or `null`.
#[derive(Debug, Serialize)]
pub struct CheckJson<'a> {
    /// Target name.
    pub name: &'a str,
    /// Release version.
    pub version: &'a str,
    /// Length in bytes.
    pub length: u64,
    /// SHA-256.
    pub sha256: &'a str,
    /// `install` or `rollback`.
    pub action: &'a str,
    /// Whether it is installed and waits for the reboot.
    pub awaiting_reboot: bool,
}

impl<'a> CheckJson<'a> {
    /// The JSON view of `target`.
    pub fn of(target: &'a Assigned, awaiting_reboot: bool) -> Self {
        Self {
            name: &target.name,
            version: &target.version,
            length: target.length,
            sha256: &target.sha256,
            action: target.action.as_str(),
            awaiting_reboot,
        }
    }
}
