//! Refreshing one TUF repository: the TUF 1.0 client workflow (spec §5.3–§5.6) that devices run
//! for the image repository and the director, and that the conformance client
//! (`src/bin/tuf-conformance-client.rs`) runs for the TUF community's conformance suite.
//!
//! The workflow is ours, written after python-tuf's `ngclient` (the behaviour the suite checks):
//! the root chain, then the timestamp, snapshot and top-level targets, each reused from the
//! datastore when it is still what the newer metadata names, and delegated roles loaded LAZILY,
//! only along the delegation graph's preorder walk toward one target path (§5.6.7). So a role
//! that lists names outside its delegated paths is never consulted for them, and cannot stop
//! another product's devices from updating, as it did under tough's eager load.
//!
//! tough's parts: the schema types and their parsing (which checks `_type`) and signature
//! thresholds (`Root::verify_role`, `Delegations::verify_role`). Path patterns are matched here
//! ([`delegates`]), segment by segment as python-tuf does: tough's glob lets `*` cross `/`.
//! Every file is written atomically and fsynced, byte for byte as served. Must not decide what to install (that is [`crate::verify`]).

mod fetch;
mod walk;

use jiff::{SignedDuration, Timestamp as Time};
use serde::de::DeserializeOwned;
use tough::schema::{Delegations, Metafile, Role, Root, Signed, Snapshot, Targets, Timestamp};
use url::Url;

use crate::error::AgentError;
use crate::net::TufTransport;
use crate::state::{Datastore, write_atomic};

pub use walk::{delegates, encode_role};

/// At most this many root updates in one refresh: a hostile mirror could serve an endless chain.
const MAX_ROOT_UPDATES: u64 = 32;
/// Size caps where no referencing metadata gives a length (python-tuf's defaults, or above
/// them): far above what patchgate serves, far below what would hurt a small device.
const ROOT_CAP: u64 = 512 * 1024;
const TIMESTAMP_CAP: u64 = 64 * 1024;
const SNAPSHOT_CAP: u64 = 2 * 1024 * 1024;
const TARGETS_CAP: u64 = 5 * 1024 * 1024;
/// Where the latest time this device saw is kept (tough's name, so existing devices keep it).
const LATEST_KNOWN_TIME: &str = "latest_known_time.json";

/// Whether a role's version number alone identifies its content in a repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Versioning {
    /// A TUF repository (the image repository; the conformance suite's): one content per
    /// version, so metadata the datastore holds at the version the newer metadata names is
    /// used without fetching, and a timestamp re-signed at the trusted version is ignored.
    Unique,
    /// The director: every device's metadata is signed by the same key and counts its versions
    /// from 1, so another device's metadata replayed under this device's path carries the very
    /// same versions. A version says nothing about content here: snapshot and targets are
    /// always fetched and checked, and a timestamp at the trusted version with other content
    /// replaces it (never one with a lower version). Otherwise a replay refused once
    /// (`wrong_device`) would stay trusted until the director's versions moved past it.
    PerDevice,
}

/// Where a repository is and how to reach it, and the fixed start time of this update.
#[derive(Debug, Clone)]
struct Source {
    store: Datastore,
    label: String,
    metadata_url: Url,
    transport: TufTransport,
    now: Time,
    versioning: Versioning,
}

/// The metadata of one repository that verified in this refresh: the top-level roles and the
/// delegated roles loaded so far (keyed by role name).
#[derive(Debug)]
pub struct TrustedRepo {
    source: Source,
    root: Signed<Root>,
    timestamp: Signed<Timestamp>,
    snapshot: Signed<Snapshot>,
    targets: Signed<Targets>,
    delegated: std::collections::HashMap<String, Signed<Targets>>,
}

/// Refreshes the repository whose metadata is at `metadata_url` into `store`; `label` names it
/// in errors (`image`, `director`).
pub async fn refresh(
    store: &Datastore,
    label: &str,
    metadata_url: Url,
    transport: TufTransport,
    versioning: Versioning,
) -> Result<TrustedRepo, AgentError> {
    // Older agents kept copies in `kept/` because tough wrote without fsync; put back once
    // where tough's files were torn. Every write here is atomic and fsynced.
    store.retire_kept()?;
    let now = checked_now(store)?;
    let source = Source { store: store.clone(), label: label.to_owned(), metadata_url, transport, now, versioning };
    let root = source.update_root().await?;
    let timestamp = source.update_timestamp(&root).await?;
    let snapshot = source.update_snapshot(&root, &timestamp).await?;
    let meta = snapshot
        .signed
        .meta
        .get("targets.json")
        .ok_or_else(|| source.mismatch("snapshot", "it does not list targets.json"))?;
    let consistent = root.signed.consistent_snapshot;
    let targets = source.load_targets("targets", meta, &Verifier::Root(&root.signed), consistent).await?;
    Ok(TrustedRepo { source, root, timestamp, snapshot, targets, delegated: Default::default() })
}

impl TrustedRepo {
    /// The trusted root.
    pub fn root(&self) -> &Signed<Root> {
        &self.root
    }

    /// The trusted timestamp.
    pub fn timestamp(&self) -> &Signed<Timestamp> {
        &self.timestamp
    }

    /// The top-level targets (with `DelegatedRole::targets` filled for roles loaded through
    /// [`Self::load_top_delegation`]).
    pub fn targets(&self) -> &Signed<Targets> {
        &self.targets
    }

    /// The delegated roles loaded so far, by name.
    pub fn delegated(&self) -> &std::collections::HashMap<String, Signed<Targets>> {
        &self.delegated
    }
}

/// How far behind the latest time this device saw the clock may be and still not be refused:
/// then the latest time stands in for the clock, so expiry is judged at the later of the two and
/// a step back gains nothing. A clock that jitters backward (an NTP step, or faketime, which
/// starts its clock afresh for every process of the TUF conformance suite: one slow run can
/// store a second the next run has not reached) is not an error; a clock set back further is.
const CLOCK_STEP_BACK_TOLERATED: SignedDuration = SignedDuration::from_secs(60);

/// The time this update runs at: the clock, refused if it went back further than
/// [`CLOCK_STEP_BACK_TOLERATED`] behind the latest time this datastore saw (an attacker who sets
/// the clock back could make expired metadata look valid), and never earlier than that time.
fn checked_now(store: &Datastore) -> Result<Time, AgentError> {
    update_time(store, Time::now())
}

/// [`checked_now`] with the clock read by the caller; stores the clock when it moved on.
fn update_time(store: &Datastore, clock: Time) -> Result<Time, AgentError> {
    let path = store.path().join(LATEST_KNOWN_TIME);
    let latest = std::fs::read(&path).ok().and_then(|b| serde_json::from_slice::<Time>(&b).ok());
    if let Some(latest) = latest
        && clock < latest
    {
        if latest.duration_since(clock) > CLOCK_STEP_BACK_TOLERATED {
            return Err(AgentError::Local(format!(
                "the system clock ({clock}) is earlier than the latest time this device saw ({latest}); fix the \
                 clock (or, if a wrong clock ran ahead, remove {LATEST_KNOWN_TIME} from the state directory's \
                 image/ and director/)"
            )));
        }
        return Ok(latest);
    }
    std::fs::create_dir_all(store.path())
        .map_err(|e| AgentError::local(format!("creating {}", store.path().display()), e))?;
    // Stored exactly (older agents kept the whole second below, which reads the same): a later
    // run within the tolerance is judged at this very instant, never a fraction before it.
    let bytes = serde_json::to_vec(&clock).map_err(|e| AgentError::local("encoding the time", e))?;
    write_atomic(&path, &bytes)?;
    Ok(clock)
}

/// §5.4.4 and the like: metadata is valid only while its expiry is later than the update's
/// start time (python-tuf's `now >= expires` is expired too).
fn is_expired(expires: Time, now: Time) -> bool {
    expires <= now
}

/// Who signs a targets role: the root (top-level targets) or the delegating role.
enum Verifier<'a> {
    Root(&'a Root),
    Delegations(&'a Delegations),
}

impl Source {
    fn refused(&self, code: &'static str, role: &str, what: impl std::fmt::Display) -> AgentError {
        AgentError::refused(code, format!("{} repository: {role}: {what}", self.label))
    }

    fn mismatch(&self, role: &str, what: impl std::fmt::Display) -> AgentError {
        self.refused("metadata_mismatch", role, what)
    }

    /// Parses signed metadata; `_type` is checked by tough's types.
    fn parse<T: DeserializeOwned>(&self, role: &str, bytes: &[u8]) -> Result<Signed<T>, AgentError> {
        serde_json::from_slice(bytes).map_err(|e| self.refused("invalid_metadata", role, format!("unreadable: {e}")))
    }

    fn check_expiry<T: Role>(&self, role: &str, signed: &T) -> Result<(), AgentError> {
        if is_expired(signed.expires(), self.now) {
            return Err(self.refused("expired_metadata", role, format!("expired at {}", signed.expires())));
        }
        Ok(())
    }

    /// Reads `name` from the datastore; absent or unreadable is `None` (it is re-fetched).
    fn stored(&self, name: &str) -> Option<Vec<u8>> {
        std::fs::read(self.store.path().join(name)).ok()
    }

    fn persist(&self, name: &str, bytes: &[u8]) -> Result<(), AgentError> {
        write_atomic(&self.store.path().join(name), bytes)
    }

    /// §5.3: the datastore's newest root, self-signed, then each next version the repository
    /// has, signed by the old root's keys and its own; the final one must not be expired.
    async fn update_root(&self) -> Result<Signed<Root>, AgentError> {
        let bytes = self.store.trusted_root()?;
        let mut root: Signed<Root> = self.parse("trusted root", &bytes)?;
        root.signed
            .verify_role(&root)
            .map_err(|e| self.refused("bad_signature", "trusted root", format!("not signed by its own keys: {e}")))?;
        for _ in 0..MAX_ROOT_UPDATES {
            let next = root.signed.version.get() + 1;
            let name = format!("{next}.root.json");
            let Some(bytes) = self.fetch(&name, ROOT_CAP).await? else { break };
            root = self.accept_root(&root, next, &bytes)?;
            self.persist("root.json", &bytes)?;
        }
        self.check_expiry("root", &root.signed)?;
        Ok(root)
    }

    fn accept_root(&self, trusted: &Signed<Root>, next: u64, bytes: &[u8]) -> Result<Signed<Root>, AgentError> {
        let role = format!("root version {next}");
        let new: Signed<Root> = self.parse(&role, bytes)?;
        trusted
            .signed
            .verify_role(&new)
            .map_err(|e| self.refused("bad_signature", &role, format!("not signed by the trusted root's keys: {e}")))?;
        if new.signed.version.get() != next {
            return Err(self.mismatch(&role, format!("it says version {}", new.signed.version)));
        }
        new.signed
            .verify_role(&new)
            .map_err(|e| self.refused("bad_signature", &role, format!("not signed by its own keys: {e}")))?;
        Ok(new)
    }

    /// §5.4: a new timestamp, unless it has the trusted one's version (then the trusted one is
    /// kept, python-tuf's rule: a re-signed equal version must not replace it).
    async fn update_timestamp(&self, root: &Signed<Root>) -> Result<Signed<Timestamp>, AgentError> {
        // The stored one counts only if it verifies under the current root (keys may rotate).
        let trusted = self.stored("timestamp.json").and_then(|b| self.parse::<Timestamp>("timestamp", &b).ok());
        let trusted = trusted.filter(|t| root.signed.verify_role(t).is_ok());
        let bytes =
            self.fetch("timestamp.json", TIMESTAMP_CAP).await?.ok_or_else(|| self.network_missing("timestamp.json"))?;
        let new: Signed<Timestamp> = self.parse("timestamp", &bytes)?;
        root.signed.verify_role(&new).map_err(|e| self.refused("bad_signature", "timestamp", e))?;
        let new_meta = self.snapshot_meta(&new)?;
        let keep = match &trusted {
            Some(old) => self.timestamp_rollback(old, &new, new_meta)?,
            None => false,
        };
        let (in_use, is_new) = match trusted {
            Some(old) if keep => (old, false),
            _ => (new, true),
        };
        // An expired stored timestamp is only a floor for the new one's versions, never used.
        self.check_expiry("timestamp", &in_use.signed)?;
        if is_new {
            self.persist("timestamp.json", &bytes)?;
        }
        Ok(in_use)
    }

    /// Refuses an older timestamp or snapshot version; `true` when the trusted timestamp is to be
    /// kept (the same version, where versions are [`Versioning::Unique`]).
    fn timestamp_rollback(
        &self,
        old: &Signed<Timestamp>,
        new: &Signed<Timestamp>,
        new_meta: &Metafile,
    ) -> Result<bool, AgentError> {
        let (old_v, new_v) = (old.signed.version, new.signed.version);
        if new_v < old_v {
            return Err(self.refused("rollback_attack", "timestamp", format!("version {new_v} is older than {old_v}")));
        }
        if new_v == old_v && self.versioning == Versioning::Unique {
            return Ok(true);
        }
        if let Ok(old_meta) = self.snapshot_meta(old)
            && new_meta.version < old_meta.version
        {
            return Err(self.refused(
                "rollback_attack",
                "timestamp",
                format!("it names snapshot version {}, older than {}", new_meta.version, old_meta.version),
            ));
        }
        Ok(false)
    }

    fn snapshot_meta<'a>(&self, timestamp: &'a Signed<Timestamp>) -> Result<&'a Metafile, AgentError> {
        timestamp
            .signed
            .meta
            .get("snapshot.json")
            .ok_or_else(|| self.refused("invalid_metadata", "timestamp", "it does not name snapshot.json"))
    }

    fn network_missing(&self, name: &str) -> AgentError {
        AgentError::Network(format!("{} repository: {name} is not on the server", self.label))
    }

    /// §5.5: the stored snapshot if it is the version the timestamp names, else a new one that
    /// lists every role the previous one did, at no older version.
    async fn update_snapshot(
        &self,
        root: &Signed<Root>,
        timestamp: &Signed<Timestamp>,
    ) -> Result<Signed<Snapshot>, AgentError> {
        let meta = self.snapshot_meta(timestamp)?;
        let previous = self.stored("snapshot.json").and_then(|b| self.parse::<Snapshot>("snapshot", &b).ok());
        let previous = previous.filter(|s| root.signed.verify_role(s).is_ok());
        if let Some(s) = &previous
            && self.versioning == Versioning::Unique
            && s.signed.version == meta.version
            && self.check_expiry("snapshot", &s.signed).is_ok()
        {
            return Ok(s.clone());
        }
        let name = if root.signed.consistent_snapshot {
            format!("{}.snapshot.json", meta.version)
        } else {
            "snapshot.json".to_owned()
        };
        let bytes = self.fetch_listed(&name, meta, SNAPSHOT_CAP).await?;
        self.check_listed("snapshot", meta, &bytes)?;
        let new: Signed<Snapshot> = self.parse("snapshot", &bytes)?;
        root.signed.verify_role(&new).map_err(|e| self.refused("bad_signature", "snapshot", e))?;
        if let Some(previous) = &previous {
            self.snapshot_rollback(previous, &new)?;
        }
        if new.signed.version != meta.version {
            return Err(self.mismatch(
                "snapshot",
                format!("version {} is not the {} the timestamp names", new.signed.version, meta.version),
            ));
        }
        self.check_expiry("snapshot", &new.signed)?;
        self.persist("snapshot.json", &bytes)?;
        Ok(new)
    }

    fn snapshot_rollback(&self, old: &Signed<Snapshot>, new: &Signed<Snapshot>) -> Result<(), AgentError> {
        for (role, old_meta) in &old.signed.meta {
            match new.signed.meta.get(role) {
                None => return Err(self.refused("rollback_attack", "snapshot", format!("it no longer lists {role}"))),
                Some(m) if m.version < old_meta.version => {
                    return Err(self.refused(
                        "rollback_attack",
                        "snapshot",
                        format!("it lists {role} at version {}, older than {}", m.version, old_meta.version),
                    ));
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// §5.6: a targets role (`targets` or a delegated one): the stored copy if it verifies and
    /// is the version the snapshot lists, else a fetched one checked against the snapshot.
    async fn load_targets(
        &self,
        role: &str,
        meta: &Metafile,
        verifier: &Verifier<'_>,
        consistent_snapshot: bool,
    ) -> Result<Signed<Targets>, AgentError> {
        let file = format!("{}.json", encode_role(role));
        let reuse = self.versioning == Versioning::Unique;
        let stored = self.stored(&file).filter(|b| reuse && self.check_listed(role, meta, b).is_ok());
        let stored = stored.and_then(|b| self.parse::<Targets>(role, &b).ok());
        if let Some(t) = stored.filter(|t| {
            t.signed.version == meta.version
                && self.verify_targets(role, t, verifier).is_ok()
                && self.check_expiry(role, &t.signed).is_ok()
        }) {
            return Ok(t);
        }
        let name = if consistent_snapshot { format!("{}.{file}", meta.version) } else { file.clone() };
        let bytes = self.fetch_listed(&name, meta, TARGETS_CAP).await?;
        self.check_listed(role, meta, &bytes)?;
        let new: Signed<Targets> = self.parse(role, &bytes)?;
        self.verify_targets(role, &new, verifier)?;
        if new.signed.version != meta.version {
            return Err(self.mismatch(
                role,
                format!("version {} is not the {} the snapshot lists", new.signed.version, meta.version),
            ));
        }
        self.check_expiry(role, &new.signed)?;
        self.persist(&file, &bytes)?;
        Ok(new)
    }

    pub(super) fn verify_targets(
        &self,
        role: &str,
        targets: &Signed<Targets>,
        verifier: &Verifier<'_>,
    ) -> Result<(), AgentError> {
        let verified = match verifier {
            Verifier::Root(root) => root.verify_role(targets),
            Verifier::Delegations(delegations) => delegations.verify_role(targets, role),
        };
        verified.map_err(|e| self.refused("bad_signature", role, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(second: i64) -> Time {
        Time::from_second(second).unwrap()
    }

    /// A datastore (kept alive by the directory) that last saw `second`.
    fn seen_at(second: i64) -> (tempfile::TempDir, Datastore) {
        let dir = tempfile::tempdir().unwrap();
        let store = Datastore::new(dir.path().to_owned());
        update_time(&store, at(second)).unwrap();
        (dir, store)
    }

    fn stored(store: &Datastore) -> Time {
        serde_json::from_slice(&std::fs::read(store.path().join(LATEST_KNOWN_TIME)).unwrap()).unwrap()
    }

    #[test]
    fn the_clock_is_stored_as_it_moves_on() {
        let dir = tempfile::tempdir().unwrap();
        let store = Datastore::new(dir.path().join("image"));
        let first = at(1_800_000_000).checked_add(SignedDuration::from_millis(700)).unwrap();
        assert_eq!(update_time(&store, first).unwrap(), first);
        assert_eq!(stored(&store), first);
        assert_eq!(update_time(&store, at(1_800_000_005)).unwrap(), at(1_800_000_005));
        assert_eq!(stored(&store), at(1_800_000_005));
    }

    #[test]
    fn a_step_back_within_the_second_judges_nothing_earlier() {
        // A run at S + 0.9 s refused metadata that expired at S; a run at S - 0.2 s must too.
        let dir = tempfile::tempdir().unwrap();
        let store = Datastore::new(dir.path().to_owned());
        let later = at(1_800_000_000).checked_add(SignedDuration::from_millis(900)).unwrap();
        assert!(is_expired(at(1_800_000_000), update_time(&store, later).unwrap()));
        let back = at(1_800_000_000).checked_sub(SignedDuration::from_millis(200)).unwrap();
        let now = update_time(&store, back).unwrap();
        assert_eq!(now, later);
        assert!(is_expired(at(1_800_000_000), now));
    }

    #[test]
    fn metadata_is_valid_only_before_its_expiry() {
        assert!(!is_expired(at(1_800_000_001), at(1_800_000_000)));
        assert!(is_expired(at(1_800_000_000), at(1_800_000_000)));
        assert!(is_expired(at(1_800_000_000), at(1_800_000_001)));
    }

    #[test]
    fn a_small_step_back_runs_at_the_latest_time_seen() {
        let (_dir, store) = seen_at(1_800_000_060);
        // A clock a minute behind is judged at the later time, so nothing expired looks valid.
        assert_eq!(update_time(&store, at(1_800_000_000)).unwrap(), at(1_800_000_060));
        assert_eq!(stored(&store), at(1_800_000_060));
    }

    #[test]
    fn a_clock_set_back_further_is_refused_and_nothing_is_stored() {
        let (_dir, store) = seen_at(1_800_000_061);
        let err = update_time(&store, at(1_800_000_000)).unwrap_err().to_string();
        assert!(err.contains("earlier than the latest time this device saw"), "{err}");
        assert_eq!(stored(&store), at(1_800_000_061));
    }
}
