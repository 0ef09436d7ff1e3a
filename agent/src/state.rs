//! The agent's state directory, and atomic writes into it.
//!
//! Layout (documented in the README; every file is written to a temporary file in the same
//! directory, fsynced, renamed over the old one, and the directory fsynced, so a power cut leaves
//! either the old or the new content, never a torn file):
//!
//! ```text
//! device.json        server URL, device id, product, hardware id, CA file, allow_dev_keys
//! device.key         the device's ed25519 key, PKCS#8 PEM, mode 0600
//! token              the device token from enrollment, mode 0600
//! counter            the next report counter (persisted as counter + 1 before each send)
//! installed.json     the image the device runs: name, sha256, version, rollback_floor (or null)
//! attempt.json       the update in progress or last finished, with the verified target
//! image/             TUF datastore of the image repository: provisioned.root.json, the trusted
//!                    root.json, timestamp.json, snapshot.json, targets.json, the product's role
//!                    `{role}.json`, latest_known_time.json
//! director/          TUF datastore of the director repository
//! staging/           partial downloads, `<sha256>.part`
//! lock               held (flock) by the one agent process using the directory
//! ```
//!
//! The agent's TUF workflow ([`crate::tuf`]) writes its datastore with [`write_atomic`] too.
//! Older agents let tough write it, without fsync, and kept atomic copies in `kept/`: they are
//! put back once where tough's files are missing, torn or older, then retired
//! ([`Datastore::retire_kept`]).
//!
//! Must not import the network or tough: it only stores.

use std::io::Write;
use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use patchgate_protocol::AttemptState;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::AgentError;
use crate::verify::Assigned;

/// What the device was enrolled as, and where its server is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    /// Base URL of the patchgate server (`https://…`, or `http://` on loopback only).
    pub server: String,
    /// The device's id.
    pub device_id: String,
    /// The product it belongs to.
    pub product: String,
    /// Its hardware id; only images listing it are installed.
    pub hardware_id: String,
    /// A PEM file of CA certificates to trust for the server, besides the system's.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Whether roots that trust the public development keys are accepted (tests, demos).
    #[serde(default)]
    pub allow_dev_keys: bool,
}

/// The image the device runs, as the image repository named it when it was installed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstalledRecord {
    /// TUF target name.
    pub name: String,
    /// SHA-256, lowercase hex.
    pub sha256: String,
    /// Release version.
    pub version: String,
    /// The lowest version this device may ever go back to (the release's `rollback_floor`).
    pub rollback_floor: String,
}

/// The update in progress or last finished.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttemptRecord {
    /// The target name the attempt is about (as the director named it, when known).
    pub name: String,
    /// How far it got.
    pub state: AttemptState,
    /// Why it failed or was rejected.
    #[serde(default)]
    pub detail: Option<String>,
    /// The verified target, once it verified.
    #[serde(default)]
    pub target: Option<Assigned>,
}

/// Which TUF repository a datastore belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repo {
    /// The image repository (`/repo/`).
    Image,
    /// The device's director repository (`/director/{id}/`).
    Director,
}

impl Repo {
    /// `image` or `director`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Image => "image",
            Self::Director => "director",
        }
    }
}

/// An agent state directory, locked for this process while the value lives.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
    lock: Option<std::sync::Arc<std::fs::File>>,
}

/// The metadata files older agents kept for each repository, in the order TUF loads them.
const KEPT: [&str; 4] = ["root.json", "timestamp.json", "snapshot.json", "targets.json"];

const DEVICE: &str = "device.json";
const KEY: &str = "device.key";
const TOKEN: &str = "token";
const COUNTER: &str = "counter";
const INSTALLED: &str = "installed.json";
const ATTEMPT: &str = "attempt.json";
const PROVISIONED_ROOT: &str = "provisioned.root.json";

impl StateDir {
    /// Creates the directory layout (idempotent).
    pub fn create(root: &Path) -> Result<Self, AgentError> {
        for dir in [root.to_path_buf(), root.join("image"), root.join("director"), root.join("staging")] {
            std::fs::create_dir_all(&dir).map_err(|e| AgentError::local(format!("creating {}", dir.display()), e))?;
        }
        let path = root.join("lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| AgentError::local(format!("opening {}", path.display()), e))?;
        // Two agents on one directory would interleave datastore writes, reports and slot writes.
        lock.try_lock().map_err(|_| {
            AgentError::Usage(format!("another patchgate-agent is using {} (its lock is held)", root.display()))
        })?;
        Ok(Self { root: root.to_path_buf(), lock: Some(std::sync::Arc::new(lock)) })
    }

    /// Opens an enrolled state directory.
    pub fn open(root: &Path) -> Result<Self, AgentError> {
        if !root.join(DEVICE).is_file() || !root.join(TOKEN).is_file() || !root.join(KEY).is_file() {
            return Err(AgentError::Usage(format!(
                "{} is not an enrolled state directory (run `patchgate-agent enroll` first)",
                root.display()
            )));
        }
        Self::create(root)
    }

    /// Gives up the lock (before the directory is opened afresh).
    pub fn release(&mut self) {
        self.lock = None;
    }

    /// The directory itself.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// The tough datastore of `repo`.
    pub fn datastore(&self, repo: Repo) -> PathBuf {
        self.root.join(repo.as_str())
    }

    /// Where partial downloads live.
    pub fn staging(&self) -> PathBuf {
        self.root.join("staging")
    }

    /// Writes `bytes` to `name` atomically (temp file, fsync, rename, fsync of the directory),
    /// mode 0600.
    pub fn write(&self, name: &str, bytes: &[u8]) -> Result<(), AgentError> {
        write_atomic(&self.root.join(name), bytes)
    }

    fn read_json<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, AgentError> {
        let path = self.root.join(name);
        match std::fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|e| AgentError::local(format!("reading {}", path.display()), e))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(AgentError::local(format!("reading {}", path.display()), e)),
        }
    }

    fn write_json<T: Serialize>(&self, name: &str, value: &T) -> Result<(), AgentError> {
        let bytes = serde_json::to_vec_pretty(value).map_err(|e| AgentError::local(format!("encoding {name}"), e))?;
        self.write(name, &bytes)
    }

    /// The device configuration.
    pub fn config(&self) -> Result<DeviceConfig, AgentError> {
        self.read_json(DEVICE)?.ok_or_else(|| AgentError::Usage(format!("{} has no {DEVICE}", self.root.display())))
    }

    /// Saves the device configuration.
    pub fn set_config(&self, config: &DeviceConfig) -> Result<(), AgentError> {
        self.write_json(DEVICE, config)
    }

    /// The device key, generated on first use (never leaves the device).
    pub fn key_or_generate(&self) -> Result<SigningKey, AgentError> {
        if self.root.join(KEY).is_file() {
            return self.key();
        }
        let key = SigningKey::generate(&mut rand_core::OsRng);
        let pem = key.to_pkcs8_pem(Default::default()).map_err(|e| AgentError::local("encoding the device key", e))?;
        self.write(KEY, pem.as_bytes())?;
        Ok(key)
    }

    /// The device key.
    pub fn key(&self) -> Result<SigningKey, AgentError> {
        let path = self.root.join(KEY);
        let pem =
            std::fs::read_to_string(&path).map_err(|e| AgentError::local(format!("reading {}", path.display()), e))?;
        SigningKey::from_pkcs8_pem(&pem).map_err(|e| AgentError::local(format!("parsing {}", path.display()), e))
    }

    /// The device token.
    pub fn token(&self) -> Result<String, AgentError> {
        let path = self.root.join(TOKEN);
        let token =
            std::fs::read_to_string(&path).map_err(|e| AgentError::local(format!("reading {}", path.display()), e))?;
        Ok(token.trim().to_owned())
    }

    /// Saves the device token.
    pub fn set_token(&self, token: &str) -> Result<(), AgentError> {
        self.write(TOKEN, token.as_bytes())
    }

    /// Takes the next report counter, persisting counter + 1 first, so a crash after sending can
    /// never make the device reuse a counter (the server would refuse the replay).
    pub fn take_counter(&self) -> Result<u64, AgentError> {
        let path = self.root.join(COUNTER);
        let current = match std::fs::read_to_string(&path) {
            Ok(s) => {
                s.trim().parse::<u64>().map_err(|e| AgentError::local(format!("parsing {}", path.display()), e))?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 1,
            Err(e) => return Err(AgentError::local(format!("reading {}", path.display()), e)),
        };
        let next = current.checked_add(1).ok_or_else(|| AgentError::Local("report counter exhausted".into()))?;
        self.write(COUNTER, next.to_string().as_bytes())?;
        Ok(current)
    }

    /// Moves the counter forward to at least `next` (after the server said the last one it saw).
    pub fn raise_counter(&self, next: u64) -> Result<(), AgentError> {
        self.write(COUNTER, next.to_string().as_bytes())
    }

    /// The image the device runs, if known.
    pub fn installed(&self) -> Result<Option<InstalledRecord>, AgentError> {
        self.read_json(INSTALLED)
    }

    /// Records the image the device runs.
    pub fn set_installed(&self, installed: Option<&InstalledRecord>) -> Result<(), AgentError> {
        self.write_json(INSTALLED, &installed)
    }

    /// The current attempt, if any.
    pub fn attempt(&self) -> Result<Option<AttemptRecord>, AgentError> {
        self.read_json(ATTEMPT)
    }

    /// Records the current attempt.
    pub fn set_attempt(&self, attempt: Option<&AttemptRecord>) -> Result<(), AgentError> {
        self.write_json(ATTEMPT, &attempt)
    }

    /// The root this device was provisioned with for `repo`.
    pub fn set_provisioned_root(&self, repo: Repo, bytes: &[u8]) -> Result<(), AgentError> {
        write_atomic(&self.datastore(repo).join(PROVISIONED_ROOT), bytes)
    }

    /// The newest root verified for `repo` (see [`Datastore::trusted_root`]).
    pub fn trusted_root(&self, repo: Repo) -> Result<Vec<u8>, AgentError> {
        self.store(repo).trusted_root()
    }

    /// `repo`'s datastore.
    pub fn store(&self, repo: Repo) -> Datastore {
        Datastore::new(self.datastore(repo))
    }
}

/// One TUF repository's trusted metadata on disk (`root.json`, `timestamp.json`, … under their
/// plain names, byte for byte as served) and the root it started from (`provisioned.root.json`).
#[derive(Debug, Clone)]
pub struct Datastore {
    dir: PathBuf,
}

impl Datastore {
    /// The datastore in `dir` (created by the first refresh when missing).
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    /// The datastore's directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The newest root verified: `root.json` (after [`Self::retire_kept`]), else the
    /// provisioned one.
    pub fn trusted_root(&self) -> Result<Vec<u8>, AgentError> {
        if let Some(bytes) = read_version(&self.dir.join("root.json")).map(|(_, b)| b) {
            return Ok(bytes);
        }
        let path = self.dir.join(PROVISIONED_ROOT);
        std::fs::read(&path).map_err(|e| AgentError::local(format!("reading {}", path.display()), e))
    }

    /// Before a refresh: puts the copies older agents kept in `kept/` back wherever tough's
    /// files are missing, torn or older (a power cut during tough's unsynced writes), then
    /// removes them: from now on every write is atomic, and a stale copy must not come back
    /// over metadata verified later.
    pub fn retire_kept(&self) -> Result<(), AgentError> {
        let kept = self.dir.join("kept");
        if !kept.is_dir() {
            return Ok(());
        }
        for name in KEPT {
            let Some((kept_version, bytes)) = read_version(&kept.join(name)) else { continue };
            let current = read_version(&self.dir.join(name)).map(|(v, _)| v);
            if current.is_none_or(|v| v < kept_version) {
                write_atomic(&self.dir.join(name), &bytes)?;
            }
        }
        std::fs::remove_dir_all(&kept).map_err(|e| AgentError::local(format!("removing {}", kept.display()), e))
    }
}

/// A metadata file's `signed.version` and bytes, if it is readable JSON with a version.
fn read_version(path: &Path) -> Option<(u64, Vec<u8>)> {
    let bytes = std::fs::read(path).ok()?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    Some((value["signed"]["version"].as_u64()?, bytes))
}

/// Writes `bytes` to `path` atomically, mode 0600 (the temporary file's mode).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), AgentError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let fail = |e: &dyn std::fmt::Display| AgentError::local(format!("writing {}", path.display()), e);
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| fail(&e))?;
    tmp.write_all(bytes).map_err(|e| fail(&e))?;
    tmp.as_file().sync_all().map_err(|e| fail(&e))?;
    tmp.persist(path).map_err(|e| fail(&e.error))?;
    sync_dir(dir).map_err(|e| fail(&e))
}

/// fsyncs a directory so a rename in it survives a power cut.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn counter_is_persisted_ahead_of_use() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::create(dir.path()).unwrap();
        assert_eq!(state.take_counter().unwrap(), 1);
        assert_eq!(state.take_counter().unwrap(), 2);
        assert_eq!(std::fs::read_to_string(dir.path().join("counter")).unwrap(), "3");
        drop(state);
        let again = StateDir::create(dir.path()).unwrap();
        assert_eq!(again.take_counter().unwrap(), 3);
    }

    #[test]
    fn the_key_is_private_to_the_owner_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::create(dir.path()).unwrap();
        let key = state.key_or_generate().unwrap();
        assert_eq!(state.key_or_generate().unwrap().to_bytes(), key.to_bytes());
        let mode = std::fs::metadata(dir.path().join("device.key")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_torn_tough_root_is_restored_from_an_old_agents_kept_copy_once() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::create(dir.path()).unwrap();
        let root = |v: u64| format!("{{\"signed\":{{\"version\":{v}}},\"signatures\":[]}}").into_bytes();
        state.set_provisioned_root(Repo::Image, &root(1)).unwrap();
        assert_eq!(state.trusted_root(Repo::Image).unwrap(), root(1));
        let kept = |v: u64| {
            std::fs::create_dir_all(dir.path().join("image/kept")).unwrap();
            std::fs::write(dir.path().join("image/kept/root.json"), root(v)).unwrap();
        };
        // A power cut tore tough's copy: the kept one comes back, not version 1.
        kept(3);
        std::fs::write(dir.path().join("image/root.json"), b"{\"torn").unwrap();
        state.store(Repo::Image).retire_kept().unwrap();
        assert_eq!(state.trusted_root(Repo::Image).unwrap(), root(3));
        assert!(!dir.path().join("image/kept").exists(), "retired after use");
        // An older file is replaced as well; a newer one is kept.
        kept(3);
        std::fs::write(dir.path().join("image/root.json"), root(2)).unwrap();
        state.store(Repo::Image).retire_kept().unwrap();
        assert_eq!(state.trusted_root(Repo::Image).unwrap(), root(3));
        kept(3);
        std::fs::write(dir.path().join("image/root.json"), root(4)).unwrap();
        state.store(Repo::Image).retire_kept().unwrap();
        assert_eq!(state.trusted_root(Repo::Image).unwrap(), root(4));
    }

    #[test]
    fn one_process_at_a_time_uses_a_state_directory() {
        let dir = tempfile::tempdir().unwrap();
        let first = StateDir::create(dir.path()).unwrap();
        assert!(matches!(StateDir::create(dir.path()), Err(AgentError::Usage(m)) if m.contains("another")));
        drop(first);
        StateDir::create(dir.path()).unwrap();
    }

    #[test]
    fn open_refuses_a_directory_that_was_never_enrolled() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(StateDir::open(dir.path()), Err(AgentError::Usage(_))));
    }
}
